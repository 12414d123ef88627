"""Merging: make the local sync branch contain the remote's.

Whatever the two sides are (the remote ahead, behind, diverged, or on a history of its
own after a purge), the merged tree is the same: every handoff file of both sides, in
the shapes of ``docs/format.md`` only (:meth:`convosyncd.gitstore.SyncBranch.merge_trees`),
less what a forget record of the person's (or another person's, for their own files)
takes back. Then:

* the remote's commit is adopted (fast-forward) when its tree is exactly that;
* otherwise a merge commit holds it, with both tips as parents; but when the remote was
  purged (a history of its own, with a purge record) with the remote's alone: a purged
  history is never pushed again, and nothing this device had not pushed yet is lost,
  since its files are in the tree.

A remote that dropped files without a forget record gets them back; one whose tree holds
anything else gets a commit without it.
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
        """Make the local branch contain ``remote``. Call with the repo's local lock
        held. Returns the new local tip."""
        repo, branch, name = self.repo, self.repo.branch, self.repo.repo.remote
        for _attempt in range(ATTEMPTS):
            local = branch.tip()
            if local == remote:
                break
            if local is not None and branch.is_ancestor(remote, local):
                break
            ours = branch.root_tree(local) if local is not None else None
            theirs = branch.root_tree(remote)
            forgotten = repo.catalog.forgotten([ours, theirs])
            tree = branch.merge_trees(
                ours,
                theirs,
                drop=forgotten.paths,
                devices_first=(repo.device, *repo.state.known_devices),
            )
            related = local is not None and branch.related(local, remote)
            # After a purge the remote starts a history of its own, and ours still holds
            # what it purged: continue on the remote's alone, or the next push would
            # carry the purged files back.
            restart = local is not None and not related and 1 in forgotten.purged
            if tree == theirs and (local is None or restart or branch.is_ancestor(local, remote)):
                if branch.move(remote, local, f"fast-forward from {name}"):
                    break
                continue
            parents = [remote] if local is None or restart else [local, remote]
            merged = branch.commit(
                tree,
                parents,
                f"merge({repo.device})",
                repo.branch_identity(),
                datetime.now(timezone.utc),
            )
            if branch.move(merged, local, f"merge {name}"):
                if restart:
                    log.warning(
                        "%s: the remote's sync branch was purged (rewritten without some "
                        "handoffs): continued on it, keeping every handoff not forgotten",
                        repo.repo.path,
                    )
                else:
                    log.info("%s: merged the remote's handoffs with this device's", repo.repo.path)
                break
        else:
            raise ConvosyncError("the sync branch kept changing while merging; will retry")
        tip = branch.tip()
        repo.state.local_tip = tip
        return tip
