"""One repo's sync, a module per stage of its cycle.

:mod:`~convosyncd.sync.repo` holds what the stages share; :mod:`~convosyncd.sync.publish`,
:mod:`~convosyncd.sync.poll`, :mod:`~convosyncd.sync.merge`, :mod:`~convosyncd.sync.push`
and :mod:`~convosyncd.sync.deliver` are the stages; :mod:`~convosyncd.sync.cycle` runs
them in order.
"""

from __future__ import annotations

from convosyncd.sync.cycle import CycleResult, RepoSync
from convosyncd.sync.publish import PublishResult
from convosyncd.sync.repo import is_offline_error

__all__ = ["CycleResult", "PublishResult", "RepoSync", "is_offline_error"]
