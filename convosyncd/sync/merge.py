"""Merging: make the local sync branch contain the remote's.

The remote's tip is adopted when there is no local branch yet, fast-forwarded to when
the local branch is behind, and otherwise merged: a commit with both tips as parents
whose tree is the union of their files (:func:`convosyncd.gitstore.SyncBranch.union_tree`,
decided by :mod:`convosyncd.union`), so two devices' histories never conflict.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from convosyncd.errors import ConvosyncError
from convosyncd.sync.repo import ATTEMPTS, SyncedRepo

log = logging.getLogger(__name__)


class Merger:
    """Integrates a remote tip into one repo's local sync branch."""

    def __init__(self, repo: SyncedRepo) -> None:
        self.repo = repo

    def integrate(self, remote: str) -> str | None:
        """Make the local branch contain ``remote``: adopt, fast-forward or merge.

        Call with the repo's local lock held. Returns the new local tip.
        """
        repo, branch, name = self.repo, self.repo.branch, self.repo.repo.remote
        for _attempt in range(ATTEMPTS):
            local = branch.tip()
            if local == remote:
                break
            if local is None:
                if branch.move(remote, None, f"first sync from {name}"):
                    break
                continue
            if branch.is_ancestor(remote, local):
                break
            if branch.is_ancestor(local, remote):
                if branch.move(remote, local, f"fast-forward from {name}"):
                    break
                continue
            tree = branch.union_tree(branch.root_tree(local), branch.root_tree(remote))
            merged = branch.commit(
                tree,
                [local, remote],
                f"merge({repo.device}): handoffs from {name}",
                repo.identity(),
                datetime.now(timezone.utc),
            )
            if branch.move(merged, local, f"merge {name}"):
                log.info("%s: merged the remote's handoffs with this device's", repo.repo.path)
                break
        else:
            raise ConvosyncError("the sync branch kept changing while merging; will retry")
        tip = branch.tip()
        repo.state.local_tip = tip
        return tip
