"""The sync branch, written with plumbing only.

Blobs, trees and commits are written as objects and the branch moves with
``update-ref NEW OLD``, which fails instead of overwriting a value someone else wrote
in between. Nothing here reads or writes the work tree, the index, HEAD or any branch
but the sync branch; the remote's last known tip lives under ``refs/convosync/``.

Tree listings are cached by object id: a tree never changes, so a cached listing can
never be stale, and publishing into a folder of ten thousand handoffs lists it once.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from convosyncd import merge
from convosyncd.errors import GitError
from convosyncd.gitcmd import Git
from convosyncd.handoff import HANDOFFS_DIR
from convosyncd.merge import TREE_MODE, Entry

log = logging.getLogger(__name__)

T = TypeVar("T")

STALE_LOCK_AGE = 10.0
"""Seconds after which a lock on one of the daemon's own refs is taken to be abandoned."""
_LOCK_RE = re.compile(r"Unable to create '(?P<path>[^']+\.lock)': File exists")

BLOB_MODE = "100644"
FILE_MODES = ("100644", "100755")
_CACHE_SIZE = 64
_LS_TREE_RE = re.compile(
    r"^(?P<mode>\d{6}) (?P<kind>\w+) (?P<oid>[0-9a-f]{40,64})\t(?P<name>.+)$", re.S
)


@dataclass(frozen=True)
class Identity:
    """Who the sync branch's commits are by."""

    name: str
    email: str


@dataclass(frozen=True)
class PushOutcome:
    """What became of a push: accepted, rejected because the remote moved, or failed."""

    accepted: bool
    rejected: bool = False
    message: str = ""


class SyncBranch:
    """One repository's sync branch and its remote counterpart."""

    def __init__(self, git: Git, *, remote: str, branch: str) -> None:
        self.git = git
        self.remote = remote
        self.branch = branch
        self.ref = f"refs/heads/{branch}"
        self.remote_ref = f"refs/convosync/remotes/{remote}/{branch}"
        self._listings: OrderedDict[str, tuple[Entry, ...]] = OrderedDict()
        self._root_of: OrderedDict[str, str] = OrderedDict()
        self._zero: str | None = None
        self._remote_known: str | None = None
        self._remote_known_read = False
        self._common_dir: Path | None = None

    # -- reading --------------------------------------------------------------------

    def tip(self) -> str | None:
        """The sync branch's commit, or None if it does not exist yet."""
        result = self.git.run("rev-parse", "-q", "--verify", f"{self.ref}^{{commit}}", check=False)
        return result.text or None if result.returncode == 0 else None

    def remote_known_tip(self) -> str | None:
        """The remote's tip as of the last fetch or push, or None.

        Only convosyncd writes this ref, and it always goes through this object or
        checks the remote itself (``ls_remote``) first, so the value is read once.
        """
        if not self._remote_known_read:
            result = self.git.run(
                "rev-parse", "-q", "--verify", f"{self.remote_ref}^{{commit}}", check=False
            )
            self._remote_known = result.text or None if result.returncode == 0 else None
            self._remote_known_read = True
        return self._remote_known

    def forget_remote_tip(self) -> None:
        """The remote has no sync branch (any more): forget what we knew of it."""
        self.git.run("update-ref", "-d", self.remote_ref)
        self._remote_known, self._remote_known_read = None, True

    def has_commit(self, oid: str) -> bool:
        """Whether the commit ``oid`` is in the local object store."""
        return self.git.run("cat-file", "-e", f"{oid}^{{commit}}", check=False).returncode == 0

    def root_tree(self, commit: str) -> str:
        """The tree of ``commit``."""
        cached = self._root_of.get(commit)
        if cached is None:
            cached = self.git.out("rev-parse", f"{commit}^{{tree}}")
            _remember(self._root_of, commit, cached)
        return cached

    def entries(self, tree: str) -> tuple[Entry, ...]:
        """The entries of the tree object ``tree`` (a tree id, not a path)."""
        cached = self._listings.get(tree)
        if cached is not None:
            self._listings.move_to_end(tree)
            return cached
        output = self.git.run("ls-tree", "-z", tree).stdout.decode("utf-8", "surrogateescape")
        listing = []
        for record in output.split("\0"):
            if not record:
                continue
            match = _LS_TREE_RE.match(record)
            if match is None:
                raise GitError(f"unexpected ls-tree output in {self.git.worktree}: {record!r}")
            listing.append(Entry(match["mode"], match["kind"], match["oid"], match["name"]))
        result = tuple(listing)
        _remember(self._listings, tree, result)
        return result

    def child(self, tree: str | None, name: str) -> Entry | None:
        """The entry called ``name`` in ``tree`` (None if either is missing)."""
        if tree is None:
            return None
        return next((entry for entry in self.entries(tree) if entry.name == name), None)

    def device_folders(self, commit: str | None) -> dict[str, str]:
        """``{device: tree id}`` for every folder under ``handoffs/`` at ``commit``."""
        if commit is None:
            return {}
        handoffs = self.child(self.root_tree(commit), HANDOFFS_DIR)
        if handoffs is None or not handoffs.is_tree:
            return {}
        return {entry.name: entry.oid for entry in self.entries(handoffs.oid) if entry.is_tree}

    def device_files(self, folder: str | None) -> tuple[Entry, ...]:
        """The files of one device folder (by its tree id)."""
        if folder is None:
            return ()
        # Regular files only: a symbolic link or a submodule named like a handoff is not one.
        return tuple(entry for entry in self.entries(folder) if entry.mode in FILE_MODES)

    def blob_size(self, oid: str) -> int:
        return int(self.git.out("cat-file", "-s", oid))

    def read_blob(self, oid: str) -> bytes:
        return self.git.run("cat-file", "blob", oid).stdout

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        result = self.git.run("merge-base", "--is-ancestor", ancestor, descendant, check=False)
        if result.returncode not in (0, 1):
            raise GitError(f"cannot compare {ancestor[:12]} and {descendant[:12]}: {result.stderr}")
        return result.returncode == 0

    def count_unpushed(self, local: str | None, remote: str | None) -> int:
        """Handoff commits on the local branch that the remote does not have."""
        if local is None:
            return 0
        spec = [local] if remote is None else [f"{remote}..{local}"]
        return int(self.git.out("rev-list", "--count", "--no-merges", *spec))

    # -- writing --------------------------------------------------------------------

    def write_blob(self, data: bytes) -> str:
        return self.git.run("hash-object", "-w", "--stdin", input=data).text

    def write_tree(self, entries: Iterable[Entry]) -> str:
        listing = tuple(sorted(entries, key=_git_sort_key))
        payload = b"".join(
            f"{entry.mode} {entry.kind} {entry.oid}\t".encode() + _encode(entry.name) + b"\0"
            for entry in listing
        )
        oid = self.git.run("mktree", "-z", input=payload).text
        _remember(self._listings, oid, listing)
        return oid

    def commit(
        self,
        tree: str,
        parents: Sequence[str],
        message: str,
        identity: Identity,
        when: datetime,
    ) -> str:
        stamp = f"{int(when.timestamp())} +0000"
        environment = {
            "GIT_AUTHOR_NAME": identity.name,
            "GIT_AUTHOR_EMAIL": identity.email,
            "GIT_AUTHOR_DATE": stamp,
            "GIT_COMMITTER_NAME": identity.name,
            "GIT_COMMITTER_EMAIL": identity.email,
            "GIT_COMMITTER_DATE": stamp,
        }
        parent_args = [arg for parent in parents for arg in ("-p", parent)]
        oid = self.git.run(
            "commit-tree",
            tree,
            *parent_args,
            "-F",
            "-",
            input=message.encode(),
            extra_env=environment,
        ).text
        _remember(self._root_of, oid, tree)
        return oid

    def move(self, new: str, expected: str | None, reason: str) -> bool:
        """Point the sync branch at ``new`` if it still is at ``expected``; False if not."""
        old = expected if expected is not None else self._zero_oid(new)
        args = ("update-ref", "-m", f"convosyncd: {reason}", self.ref, new, old)
        result = self.git.run(*args, check=False)
        if result.returncode != 0 and self._clear_stale_lock(result.stderr):
            result = self.git.run(*args, check=False)
        if result.returncode == 0:
            return True
        if self.tip() != expected:
            log.info("sync branch moved under us in %s; retrying", self.git.worktree)
            return False
        raise GitError(
            f"cannot update {self.ref} in {self.git.worktree}: {result.stderr.strip()}",
            returncode=result.returncode,
            stderr=result.stderr,
        )

    def _zero_oid(self, example: str) -> str:
        if self._zero is None:
            self._zero = "0" * len(example)
        return self._zero

    def add_file(self, tip: str | None, folder: Sequence[str], name: str, blob: str) -> str:
        """The root tree of ``tip`` with one more file at ``folder/name``."""
        root = self.root_tree(tip) if tip is not None else None
        return self._insert(root, list(folder), Entry(BLOB_MODE, "blob", blob, name))

    def _insert(self, tree: str | None, folder: list[str], entry: Entry) -> str:
        current = list(self.entries(tree)) if tree is not None else []
        if not folder:
            current = [existing for existing in current if existing.name != entry.name]
            current.append(entry)
            return self.write_tree(current)
        head, rest = folder[0], folder[1:]
        existing = next((item for item in current if item.name == head), None)
        subtree = existing.oid if existing is not None and existing.is_tree else None
        new_subtree = self._insert(subtree, rest, entry)
        current = [item for item in current if item.name != head]
        current.append(Entry(TREE_MODE, "tree", new_subtree, head))
        return self.write_tree(current)

    def union_tree(self, ours: str, theirs: str) -> str:
        """The tree holding every file of both trees (see :mod:`convosyncd.merge`)."""
        if ours == theirs:
            return ours
        merged: list[Entry] = []
        for step in merge.union(self.entries(ours), self.entries(theirs)):
            if isinstance(step, merge.Recurse):
                merged.append(
                    Entry(TREE_MODE, "tree", self.union_tree(step.ours, step.theirs), step.name)
                )
            else:
                merged.append(step)
        return self.write_tree(merged)

    # -- the remote -----------------------------------------------------------------

    def ls_remote(self) -> str | None:
        """The remote's sync branch tip, asked cheaply (no objects), or None if absent."""
        output = self.git.run("ls-remote", self.remote, self.ref, network=True).text
        for line in output.splitlines():
            oid, _, name = line.partition("\t")
            if name == self.ref:
                return oid
        return None

    def fetch(self) -> None:
        """Fetch the remote's sync branch into ``refs/convosync/remotes/...``."""
        self.git.run(
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            self.remote,
            f"+{self.ref}:{self.remote_ref}",
            network=True,
        )
        self._remote_known_read = False

    def push(self, commit: str) -> PushOutcome:
        """Push ``commit`` as the remote's sync branch, never forcing."""
        result = self.git.run(
            "push",
            "--porcelain",
            "--no-verify",
            self.remote,
            f"{commit}:{self.ref}",
            network=True,
            check=False,
        )
        status = _push_status(result.text, self.ref)
        if result.returncode == 0 and status in ("ok", None):
            self.record_remote_tip(commit)
            return PushOutcome(accepted=True)
        if status == "rejected":
            return PushOutcome(accepted=False, rejected=True, message="the remote has moved on")
        detail = " / ".join(
            line.strip()
            for line in (result.stderr + "\n" + result.text).splitlines()
            if line.strip()
        )
        return PushOutcome(accepted=False, message=detail[-600:] or f"exit {result.returncode}")

    def record_remote_tip(self, commit: str) -> None:
        """Remember ``commit`` as the remote's tip (after a fetch or a push)."""
        result = self.git.run("update-ref", self.remote_ref, commit, check=False)
        if result.returncode != 0 and self._clear_stale_lock(result.stderr):
            result = self.git.run("update-ref", self.remote_ref, commit, check=False)
        if result.returncode != 0:
            raise GitError(
                f"cannot update {self.remote_ref} in {self.git.worktree}: {result.stderr.strip()}"
            )
        self._remote_known, self._remote_known_read = commit, True

    def _clear_stale_lock(self, stderr: str) -> bool:
        """Remove a lock git left on one of convosyncd's own refs; True if it did.

        git leaves ``<ref>.lock`` behind when it dies while updating a ref (killed at
        its time limit, or the machine lost power). Only locks on the daemon's own refs
        are touched, only when older than :data:`STALE_LOCK_AGE`, and only while the
        caller holds the repo's convosyncd lock, so no convosyncd process can be the
        one holding it; the person's own locks are reported, never removed.
        """
        match = _LOCK_RE.search(stderr)
        if match is None:
            return False
        lock = Path(match["path"])
        try:
            relative = lock.resolve().relative_to(self._git_dir())
            age = time.time() - lock.stat().st_mtime
        except (ValueError, OSError):
            return False
        ours = str(relative) == f"{self.ref}.lock" or str(relative).startswith("refs/convosync/")
        if not ours or age < STALE_LOCK_AGE:
            return False
        log.warning("removing a stale lock %s (%.0f s old) left by a git that died", lock, age)
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        return True

    def _git_dir(self) -> Path:
        if self._common_dir is None:
            common = Path(self.git.out("rev-parse", "--git-common-dir"))
            self._common_dir = (self.git.worktree / common).resolve()
        return self._common_dir


def _push_status(porcelain: str, ref: str) -> str | None:
    for line in porcelain.splitlines():
        flag, _, rest = line.partition("\t")
        if ref not in rest:
            continue
        if flag in (" ", "*", "=", "+"):
            return "ok"
        if flag == "!":
            if any(
                reason in rest
                for reason in ("non-fast-forward", "fetch first", "stale info", "already exists")
            ):
                return "rejected"
            return "error"
    return None


def _git_sort_key(entry: Entry) -> bytes:
    # git sorts tree entries by name, comparing folders as if they ended with '/'.
    return _encode(entry.name) + (b"/" if entry.is_tree else b"")


def _encode(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def _remember(cache: OrderedDict[str, T], key: str, value: T) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)
