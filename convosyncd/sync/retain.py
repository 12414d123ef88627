"""Retention: ``keep_days`` forgets handoffs older than that, on every device.

At most once a UTC day per repo, after the cycle's pull (so that what other devices
published is seen) and before its push (so that the record leaves in the same cycle),
every handoff published more than ``keep_days`` days ago that opens under the person's
key is forgotten, whichever device wrote it (:mod:`convosyncd.sync.forget`; no purge:
the history still holds them, ``convosyncd forget --purge`` rewrites it). Format 1
files are never forgotten for their age: they do not open, so nothing proves they are
the person's; ``convosyncd forget`` takes them by name or by device.

When more old handoffs wait than one run may open, the rest go on the next cycle. A
run that fails is logged and not tried again before the next day.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from convosyncd import state as states
from convosyncd.errors import ConvosyncError
from convosyncd.sync.forget import Forgetter, older_than
from convosyncd.sync.repo import SyncedRepo, now_text

log = logging.getLogger(__name__)


class Retainer:
    """Forgets one repo's handoffs once they are older than ``keep_days``."""

    def __init__(self, repo: SyncedRepo, forgetter: Forgetter) -> None:
        self.repo = repo
        self.forgetter = forgetter

    def due(self, now: datetime) -> bool:
        """Whether retention is on and has not run yet on this UTC day."""
        if self.repo.config.keep_days <= 0:
            return False
        last = self.repo.state.last_retention
        return last is None or last.time[:10] != f"{now.astimezone(timezone.utc):%Y-%m-%d}"

    def retain(self) -> int:
        """Forget what is older than ``keep_days`` if it is time to; how many were
        forgotten. Never pushes, never raises for a problem of the repo (it is logged)."""
        repo = self.repo
        now = datetime.now(timezone.utc)
        if not self.due(now):
            return 0
        days = repo.config.keep_days
        try:
            with repo.local():
                files = repo.catalog.files(repo.branch.tip())
                candidates = older_than(files, now - timedelta(days=days), plain=False)
                chosen = self.forgetter.choose(candidates, plain=False)
                if chosen.records:
                    self.forgetter.forget(chosen.paths, why=f"older than {days} days")
                if chosen.complete:
                    message = f"forgot {len(chosen.records)} handoff(s) older than {days} days"
                    repo.state.last_retention = states.Event(now_text(), message)
                repo.save()
                return len(chosen.records)
        except (ConvosyncError, OSError) as problem:
            log.warning(
                "%s: could not forget handoffs older than %d days (keep_days): %s; trying "
                "again tomorrow",
                repo.repo.path,
                days,
                problem,
            )
            repo.state.last_retention = states.Event(now_text(), f"failed: {problem}")
            return 0
