"""Pushing: the local sync branch goes to the remote, never forced.

A push the remote rejects because another device pushed first is followed by a fetch
and a merge, then tried again after a short random pause that grows with each try, so
that devices racing for the remote stop colliding in step. In mode inline the handoff
commit on the person's branch follows, when that is safe (:mod:`convosyncd.inline`).
"""

from __future__ import annotations

import logging
import random
import time

from convosyncd import state as states
from convosyncd.errors import ConvosyncError, GitError
from convosyncd.gitcmd import mask_credentials
from convosyncd.inline import Pushed
from convosyncd.sync.merge import Merger
from convosyncd.sync.repo import SyncedRepo, now_text

log = logging.getLogger(__name__)

PUSH_ATTEMPTS = 12
"""Pushes tried (fetching and merging in between) before a cycle leaves it to the next."""


class Pusher:
    """Pushes one repo's sync branch (and, in mode inline, its handoff commit)."""

    def __init__(self, repo: SyncedRepo, merger: Merger) -> None:
        self.repo = repo
        self.merger = merger

    def push(self) -> bool:
        """Push the local sync branch if the remote lacks some of it; True if pushed."""
        repo, branch = self.repo, self.repo.branch
        with repo.net:
            for attempt in range(PUSH_ATTEMPTS):
                if attempt:
                    time.sleep(random.uniform(0.0, 0.1 * attempt))  # noqa: S311 - jitter
                local = branch.tip()
                known = branch.remote_known_tip()
                if local is None or local == known:
                    repo.set_pending(0)
                    return False
                outcome = branch.push(local)
                if outcome.accepted:
                    repo.state.remote_tip = local
                    repo.state.last_push = states.Event(now_text(), f"pushed {local[:12]}")
                    repo.set_pending(0)
                    log.info("%s: pushed the sync branch to %s", repo.repo.path, repo.repo.remote)
                    return True
                if not outcome.rejected:
                    repo.update_pending()
                    raise GitError(f"push to {repo.repo.remote} failed: {outcome.message}")
                log.info("%s: push rejected (another device pushed first); merging", repo.repo.path)
                branch.fetch()
                remote = branch.remote_known_tip()
                if remote is not None:
                    with repo.local():
                        self.merger.integrate(remote)
            repo.update_pending()
            raise ConvosyncError(
                f"the remote kept moving during {PUSH_ATTEMPTS} pushes; will retry"
            )

    def push_inline(self) -> bool:
        """Push the handoff commit on the person's branch, if that is safe; True if pushed."""
        repo = self.repo
        branch = repo.state.inline_unpushed
        if repo.inline is None or branch is None:
            return False
        with repo.net:
            try:
                outcome = repo.inline.push(branch)
            except ConvosyncError as error:
                outcome = Pushed("held", f"not pushed: {mask_credentials(str(error))}")
        with repo.lock:
            repo.inline_fresh = False
            if outcome.status == "held":
                repo.inline_problem(outcome.message)
                return False
            if repo.state.inline_unpushed == branch:
                repo.state.inline_unpushed = None
            if outcome.status == "pushed":
                log.info("%s: %s (mode inline)", repo.repo.path, outcome.message)
                repo.state.last_inline = states.Event(now_text(), outcome.message)
            repo.clear_inline_problem("not pushed")
            repo.save()
        return outcome.status == "pushed"
