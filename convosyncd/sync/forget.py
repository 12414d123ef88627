"""Forgetting: taking handoffs back off the sync branch, on every device.

Deleting a file is not enough: the next union merge with a device that still has it
would bring it back. So the forgetting device writes a forget record
(``handoffs/<device>/forgotten/<time>-<random>.forget``, see docs/format.md) naming the
paths it takes back, sealed with the person's key, and removes those files in the same
commit, ``forget(<device>)``. Every device's merge drops what a record of the person's
names (:meth:`convosyncd.catalog.Catalog.forgotten`), so a forgotten handoff never comes
back, whichever device still had it. Records are kept for good.

What may be forgotten is what is the person's: a handoff that opens under the keyring,
and a format 1 file (plain text from convosyncd 0.1, never verified, but most likely the
person's own, and exactly what one wants off the remote) when the person chooses it, by
name or by its device. Retention (:mod:`convosyncd.sync.retain`) chooses by age alone,
so it takes verified handoffs only. Nothing that does not open is ever taken: it is not
the person's to take, and another person's devices would not respect the record anyway.

A purge (:meth:`Forgetter.purge`) also rewrites the branch: one commit with no parent,
``purge(<device>)``, holding the current tree less what is forgotten, with a record
flagged ``purge``, pushed with a lease on the remote tip it was built from. The local
branch moves to it only once the remote has it, so a purge that fails changes nothing;
when another device pushed in between, the lease fails and the purge is built again on
what that device pushed. Other devices continue on the purged history by themselves
(:mod:`convosyncd.sync.merge`).
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from convosyncd import state as states
from convosyncd.catalog import FILE_BUDGET, Budget, Record
from convosyncd.errors import ConvosyncError, GitError
from convosyncd.layout import FORGOTTEN_DIR, Location, forget_name, parse_name
from convosyncd.seal import seal_forget
from convosyncd.sync.merge import Merger
from convosyncd.sync.poll import Poller
from convosyncd.sync.repo import ATTEMPTS, SyncedRepo, now_text

log = logging.getLogger(__name__)

PURGE_ATTEMPTS = 5
"""Leased pushes tried (fetching and building the purge again in between) before giving up."""
SELECT_BUDGET = FILE_BUDGET * 16
"""Files opened to choose what to forget: a person's whole history for years; a remote
flooded with more is hostile, and the rest waits for the next run."""

File = tuple[Location, str]
"""A file on the branch: its location and blob id."""


@dataclass(frozen=True)
class Chosen:
    """What a selection found: the files that may be forgotten, those that may not (they
    do not open under the person's key), and whether every candidate was opened."""

    records: tuple[Record, ...]
    refused: tuple[Record, ...]
    complete: bool

    @property
    def paths(self) -> list[str]:
        return [record.location.path for record in self.records]


def may_forget(record: Record, *, plain: bool) -> bool:
    """Whether ``record`` is the person's to forget (format 1 files only with ``plain``)."""
    return record.verdict == "verified" or (plain and record.verdict == "unverified")


def older_than(
    files: Iterable[File], cutoff: datetime, *, device: str | None = None, plain: bool = True
) -> list[File]:
    """The files published before ``cutoff`` (by the time in their name), of ``device``
    only if given, format 1 files only with ``plain``."""
    found = []
    for location, oid in files:
        if device is not None and location.device != device:
            continue
        if location.folder == "" and not plain:
            continue
        name = parse_name(location.name)
        if name is not None and name.kind != "forget" and name.created < cutoff:
            found.append((location, oid))
    return found


class Forgetter:
    """Takes handoffs back off one repo's sync branch."""

    def __init__(self, repo: SyncedRepo, merger: Merger, poller: Poller) -> None:
        self.repo = repo
        self.merger = merger
        self.poller = poller

    # -- choosing ---------------------------------------------------------------------

    def choose(self, files: Sequence[File], *, plain: bool) -> Chosen:
        """Open ``files`` and split them into what may be forgotten and what may not."""
        budget = Budget(SELECT_BUDGET, "choosing handoffs to forget")
        records = self.repo.catalog.classify(files, budget)
        allowed = tuple(record for record in records if may_forget(record, plain=plain))
        refused = tuple(record for record in records if not may_forget(record, plain=plain))
        return Chosen(allowed, refused, complete=len(records) == len(files))

    # -- forgetting -------------------------------------------------------------------

    def forget(self, paths: Collection[str], *, why: str = "") -> str:
        """Commit a forget record for ``paths`` and their removal on the local branch, as
        one commit; returns it. Never pushes. Call with the repo's local lock held."""
        repo, branch = self.repo, self.repo.branch
        record, blob = self._record(paths, purge=False)
        for _attempt in range(ATTEMPTS):
            tip = branch.tip()
            root = branch.edit(tip, add={record: blob}, remove=paths)
            commit = branch.commit(
                root,
                [tip] if tip else [],
                f"forget({repo.device})",
                repo.branch_identity(),
                datetime.now(timezone.utc),
            )
            if branch.move(commit, tip, f"forget {len(paths)} handoff(s)"):
                break
        else:
            raise ConvosyncError(
                "the sync branch kept changing while forgetting; nothing was forgotten: try again"
            )
        log.info(
            "%s: forgot %d handoff(s)%s: %s",
            repo.repo.path,
            len(paths),
            f" ({why})" if why else "",
            ", ".join(sorted(paths)[:5]) + (", …" if len(paths) > 5 else ""),
        )
        repo.state.local_tip = commit
        repo.set_pending(repo.state.pending + 1)
        return commit

    def purge(self, paths: Collection[str]) -> str:
        """Forget ``paths`` and rewrite the remote's branch so that no commit reachable
        from it holds them, nor anything forgotten before; returns the purge commit.

        Takes the repo's locks itself (the network lock must not be held by the caller).
        Nothing changes, here or on the remote, unless the leased push goes through.
        """
        repo, branch = self.repo, self.repo.branch
        record: tuple[str, str] | None = None
        for attempt in range(PURGE_ATTEMPTS):
            if attempt:
                time.sleep(random.uniform(0.0, 0.2 * attempt))  # noqa: S311 - jitter
            with repo.net:
                remote = self.poller.poll()
            with repo.local():
                if remote is not None:
                    self.merger.integrate(remote)
                local = branch.tip()
                if record is None:
                    record = self._record(paths, purge=True)
                root = branch.edit(local, add={record[0]: record[1]}, remove=paths)
                commit = branch.commit(
                    root,
                    [],
                    f"purge({repo.device})",
                    repo.branch_identity(),
                    datetime.now(timezone.utc),
                )
            with repo.net:
                outcome = branch.push_leased(commit, remote)
            if outcome.accepted:
                self._adopt(commit)
                return commit
            if not outcome.rejected:
                raise GitError(
                    f"the purge could not be pushed to {repo.repo.remote}: {outcome.message}; "
                    "nothing was changed, here or on the remote: try again once it answers"
                )
            log.info(
                "%s: another device pushed while purging; building the purge again",
                repo.repo.path,
            )
        raise ConvosyncError(
            f"the remote kept moving during {PURGE_ATTEMPTS} attempts to purge; nothing was "
            "purged: try again"
        )

    def _adopt(self, commit: str) -> None:
        """The remote holds the purge: continue on it here too."""
        repo = self.repo
        with repo.local():
            self.merger.integrate(commit)
            repo.state.remote_tip = commit
            repo.state.last_push = states.Event(now_text(), f"purged: pushed {commit[:12]}")
            repo.update_pending()
            # The old history stays in this repo's object store until git's own clean-up;
            # the sync ref's log would keep it reachable for months, so it goes.
            repo.git.run(
                "reflog",
                "expire",
                "--expire=now",
                "--expire-unreachable=now",
                repo.branch.ref,
                check=False,
            )
            repo.save()
        log.info(
            "%s: purged: the sync branch on %s was rewritten as %s, without what was forgotten",
            repo.repo.path,
            repo.repo.remote,
            commit[:12],
        )

    def _record(self, paths: Collection[str], *, purge: bool) -> tuple[str, str]:
        """A new forget record for ``paths`` in this device's folder: its path and blob."""
        repo = self.repo
        key = repo.keys.require().current
        name = forget_name(datetime.now(timezone.utc), os.urandom(8).hex())
        path = Location(repo.device, FORGOTTEN_DIR, name).path
        blob = repo.branch.write_blob(seal_forget(key, path, list(paths), purge=purge))
        return path, blob
