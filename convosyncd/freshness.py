"""Fresh at session start: the remote is checked before a handoff is handed over.

The moment that matters is a person sitting down at the other machine: a handoff pushed
there a moment ago must be in the session that starts now, not a poll later. So the
session-start hook (and ``convosyncd resume``) first asks the running daemon, through
its control socket (:mod:`convosyncd.control`), to check that repo's remote now, with
its shared ssh connection, and waits at most ``fresh_timeout`` seconds for the answer.
With no daemon running it checks by itself within the same time: the remote's tip
first (``ls-remote``, or a read of the ref file for a remote on the local disk), a
fetch and a merge only if it moved, with the same stage code and the same repo lock as
the daemon (:meth:`convosyncd.sync.RepoSync.check`), every git call limited to what is
left of the time.

A remote that is offline, slow or failing never spoils a session start: the caller
gets a note saying the remote could not be checked, and hands over what this machine
has. ``fresh_timeout = 0`` turns the check off.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any

from convosyncd import control
from convosyncd.config import Config, RepoConfig
from convosyncd.control import ControlError
from convosyncd.errors import ConvosyncError

REPLY_MARGIN = 0.1
"""Seconds of the budget kept for the daemon's answer to travel back."""


def freshen(config: Config, repo: RepoConfig, budget: float) -> str | None:
    """Check ``repo``'s remote for newer handoffs within ``budget`` seconds.

    None when the local sync branch is now as new as the remote's; otherwise one line
    for the person saying that the remote could not be checked, and why.
    """
    if budget <= 0:
        return None
    deadline = time.monotonic() + budget
    request = {"op": "check", "repo": str(repo.path), "wait": max(0.0, budget - REPLY_MARGIN)}
    try:
        reply = control.ask(config.state_dir, request, timeout=budget)
    except ControlError as error:
        return f"the remote could not be checked ({error})"
    if reply is not None and reply.get("code") != "unknown-repo":
        return _note(reply, budget)
    # No daemon, or one that does not watch this repo (yet): check here.
    return check_here(config, repo, deadline - time.monotonic())


def _note(reply: dict[str, Any], budget: float) -> str | None:
    """The note for the daemon's answer to a check."""
    if not reply.get("ok"):
        return f"the remote could not be checked (the daemon said: {reply.get('error')})"
    if not reply.get("done"):
        return (
            f"the remote could not be checked within {budget:g} s; the daemon goes on "
            "checking, and the next session has what arrives"
        )
    if reply.get("checked"):
        return None
    result = reply.get("result")
    error = result.get("error") if isinstance(result, dict) else None
    return f"the remote could not be checked ({error or 'no answer'})"


def check_here(config: Config, repo: RepoConfig, budget: float) -> str | None:
    """Check the remote in this process, within ``budget`` seconds; a note, or None.

    The work runs in a thread that is left behind (and ends with the process) when
    the time is up; every git call it makes is limited to the budget too, and what it
    writes (refs, the state file) is written atomically, so stopping midway is safe.
    """
    if budget <= 0:
        return f"the remote could not be checked in time (fresh_timeout {config.fresh_timeout:g} s)"
    # Imported here: only a session start without a daemon pays for the sync engine.
    from convosyncd.notify import Notifier
    from convosyncd.sync import RepoSync

    _quiet_logs()
    outcome: list[str | None] = []

    def work() -> None:
        try:
            timeout = max(0.05, min(config.network_timeout, budget))
            limited = dataclasses.replace(config, network_timeout=timeout)
            # No notification: the handoff that arrives goes straight into the session.
            sync = RepoSync(limited, repo, Notifier(enabled=False, timeout=0.1))
            sync.synced.lock_wait = budget
            sync.check()
        except ConvosyncError as error:
            outcome.append(str(error))
        except Exception as error:
            outcome.append(f"unexpected {type(error).__name__}: {error}")
        else:
            outcome.append(None)

    thread = threading.Thread(target=work, name="freshen", daemon=True)
    thread.start()
    thread.join(budget)
    if not outcome:
        return f"the remote could not be checked within {config.fresh_timeout:g} s"
    problem = outcome[0]
    if problem is None:
        return None
    from convosyncd.gitcmd import mask_credentials

    return f"the remote could not be checked ({mask_credentials(problem)})"


def _quiet_logs() -> None:
    """Keep the sync engine's log lines off a hook's standard error: without a handler
    of its own, Python prints warnings there, and the caller reports in one line."""
    root = logging.getLogger()
    if not root.handlers:
        logging.getLogger("convosyncd").addHandler(logging.NullHandler())
