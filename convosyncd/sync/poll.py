"""Polling: ask the remote for its sync branch's tip, fetch only when it moved.

An idle poll is one ``ls-remote`` (or one read of a ref file, for a remote on the local
disk: see :mod:`convosyncd.localremote`) and nothing else. Objects are fetched into
``refs/convosync/remotes/...`` only when the remote's tip is a commit this repo lacks;
integrating it is :mod:`convosyncd.sync.merge`'s.
"""

from __future__ import annotations

from convosyncd import state as states
from convosyncd.errors import GitError
from convosyncd.sync.repo import SyncedRepo, now_text


class Poller:
    """Keeps one repo's knowledge of its remote's tip current."""

    def __init__(self, repo: SyncedRepo) -> None:
        self.repo = repo

    def poll(self) -> str | None:
        """The remote's tip, with its objects here; None if the remote has no sync branch.

        Call with the repo's network lock held.
        """
        repo, branch = self.repo, self.repo.branch
        remote_tip = branch.ls_remote()
        repo.state.last_poll = states.Event(now_text(), "checked the remote")
        repo.state.remote_tip = remote_tip
        if remote_tip is None:
            if branch.remote_known_tip() is not None:
                branch.forget_remote_tip()
            return None
        if remote_tip == repo.state.local_tip == branch.tip():
            return remote_tip
        if not branch.has_commit(remote_tip):
            branch.fetch()
        elif branch.remote_known_tip() != remote_tip:
            branch.record_remote_tip(remote_tip)
        if not branch.has_commit(remote_tip):
            raise GitError(
                f"fetched {repo.repo.remote} but its {repo.repo.branch} "
                f"commit {remote_tip[:12]} is still missing; run `git -C {repo.repo.path} "
                f"fetch {repo.repo.remote}` to see why"
            )
        return remote_tip
