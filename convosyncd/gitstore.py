"""The sync branch, written with plumbing only.

Blobs, trees and commits are written as objects and the branch moves with
``update-ref NEW OLD``, which fails instead of overwriting a value someone else wrote
in between. Nothing here reads or writes the work tree, the index, HEAD or any branch
but the sync branch; the remote's last known tip lives under ``refs/convosync/``.

Tree listings are cached by object id: a tree never changes, so a cached listing can
never be stale, and publishing into a folder of ten thousand handoffs lists it once.
New trees are computed in memory (:mod:`convosyncd.trees`) and written together by one
``git hash-object -t tree``, which checks each one and must give the id expected.

The sync branch's tip is asked of git, then remembered for as long as its loose ref
file stays the very same file (same inode, size and modification time): every update
of a loose ref replaces the file, so an idle poll needs no ``rev-parse`` at all. A remote
that is a repository on a local disk is asked by reading its ref file
(:mod:`convosyncd.localremote`), so an idle poll of it starts no git at all either.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, TypeVar

from convosyncd import localremote, union
from convosyncd.errors import GitError
from convosyncd.gitcmd import (
    FileIdentity,
    Git,
    describe_command,
    error_summary,
    file_identity,
    identity_of,
)
from convosyncd.layout import (
    FORGOTTEN_DIR,
    HANDOFFS_DIR,
    Location,
    is_device_name,
    is_month,
    name_kind,
)
from convosyncd.trees import TREE_MODE, Entry, Tree, algorithm_of

log = logging.getLogger(__name__)

T = TypeVar("T")

STALE_LOCK_AGE = 10.0
"""Seconds after which a lock on one of the daemon's own refs is taken to be abandoned."""
_LOCK_RE = re.compile(r"Unable to create '(?P<path>[^']+\.lock)': File exists")

BLOB_MODE = "100644"
FILE_MODES = ("100644", "100755")
_CACHE_SIZE = 64
_LISTED_TREES = 1_024
"""Tree listings kept: every folder a refresh reads (a device folder and its month
folders, for each device) must fit, or each refresh lists them all again."""
_LISTED_ENTRIES = 50_000
"""Entries kept in cached tree listings, all trees together (a few versions of a big folder)."""
FETCH_ATTEMPTS = 3
"""Fetches tried when another process holds the remote-tracking ref's lock."""
LOCAL_RETRY = 600.0
"""Seconds before a remote that could not be read directly is located again."""
_LS_TREE_RE = re.compile(
    r"^(?P<mode>\d{6}) (?P<kind>\w+) (?P<oid>[0-9a-f]{40,64})\t(?P<name>.+)$", re.S
)
TREE_LIMIT = 16 * 1_048_576
"""Bytes a tree object from a remote may have before it is refused (about 200,000 entries)."""
MAX_MERGED_DEVICES = 256
"""Device folders a merge keeps; a remote with more is hostile, and the rest are dropped."""
_CLEAN_LIMIT = 200_000

Level = Literal["root", "handoffs", "device", "month", "forgotten"]
"""The fixed levels of the sync branch's tree (see docs/format.md)."""
_BELOW: dict[Level, Level | None] = {
    "root": "handoffs",
    "handoffs": "device",
    "device": None,  # a month folder or the forgotten folder: told by the name
    "month": None,
    "forgotten": None,
}


def keeps(level: Level, entry: Entry) -> bool:
    """Whether a merge keeps ``entry`` of a tree at ``level``: only the shapes of
    docs/format.md, nothing else (no links, no submodules, no stray folders or files)."""
    is_file = entry.kind == "blob" and entry.mode in FILE_MODES
    if level == "root":
        return entry.is_tree and entry.name == HANDOFFS_DIR
    if level == "handoffs":
        return entry.is_tree and is_device_name(entry.name)
    if level == "device":
        if entry.is_tree:
            return is_month(entry.name) or entry.name == FORGOTTEN_DIR
        return is_file and name_kind(entry.name) == "plain"
    if level == "month":
        return is_file and name_kind(entry.name) == "sealed"
    return is_file and name_kind(entry.name) == "forget"


def _child_level(level: Level, name: str) -> Level:
    below = _BELOW[level]
    if below is not None:
        return below
    return "forgotten" if name == FORGOTTEN_DIR else "month"


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
        self._listings: OrderedDict[str, Tree] = OrderedDict()
        self._listed = 0
        self._root_of: OrderedDict[str, str] = OrderedDict()
        self._zero: str | None = None
        self._remote_known: tuple[str | None] | None = None
        """The remote's tip as last known, in a tuple (None: not read yet)."""
        self._common_dir: Path | None = None
        self._ref_file: Path | None = None
        self._tip: tuple[FileIdentity, str] | None = None
        self._local: localremote.LocalRemote | None = None
        self._local_for: tuple[FileIdentity | None, ...] | None = None
        self._local_retry_at = 0.0
        self._clean: set[tuple[Level, str]] = set()
        # Listings and ids are immutable, but the caches holding them are shared by the
        # daemon's threads (a publish, a poll, the refresh): one lock for all of them.
        self._cache_lock = threading.RLock()

    # -- reading --------------------------------------------------------------------

    def tip(self) -> str | None:
        """The sync branch's commit, or None if it does not exist yet."""
        # The very file the commit was read from: the same commit (one stat, no read).
        # The cache is one value, read once: another thread may replace it meanwhile.
        cached = self._tip
        if (
            cached is not None
            and self._ref_file is not None
            and file_identity(str(self._ref_file)) == cached[0]
        ):
            return cached[1]
        loose = self._loose_ref()
        if loose is not None and cached is not None and cached[0] == loose[0]:
            return cached[1]
        result = self.git.run("rev-parse", "-q", "--verify", f"{self.ref}^{{commit}}", check=False)
        value = result.text or None if result.returncode == 0 else None
        self._remember_tip(value, loose)
        return value

    def _remember_tip(self, value: str | None, loose: tuple[FileIdentity, str] | None) -> None:
        # Only a loose ref that holds exactly this commit, and did not change while git
        # was asked, may stand for it (a packed, symbolic or peeled ref is always asked).
        if (
            value is not None
            and loose is not None
            and loose[1] == value
            and self._loose_ref() == loose
        ):
            self._tip = (loose[0], value)
        else:
            self._tip = None

    def _loose_ref(self) -> tuple[FileIdentity, str] | None:
        """The loose ref file's identity and content, or None if there is no such file."""
        if self._ref_file is None:
            self._ref_file = self._git_dir() / self.ref
        try:
            with self._ref_file.open("rb") as handle:
                status = os.fstat(handle.fileno())
                content = handle.read(256)
        except OSError:
            return None
        return identity_of(status), content.decode("ascii", "replace").strip()

    def remote_known_tip(self) -> str | None:
        """The remote's tip as of the last fetch or push, or None.

        Only convosyncd writes this ref, and it always goes through this object or
        checks the remote itself (``ls_remote``) first, so the value is read once.
        """
        known = self._remote_known
        if known is None:
            result = self.git.run(
                "rev-parse", "-q", "--verify", f"{self.remote_ref}^{{commit}}", check=False
            )
            known = (result.text or None if result.returncode == 0 else None,)
            self._remote_known = known
        return known[0]

    def forget_remote_tip(self) -> None:
        """The remote has no sync branch (any more): forget what we knew of it."""
        self.git.run("update-ref", "-d", self.remote_ref)
        self._remote_known = (None,)

    def has_commit(self, oid: str) -> bool:
        """Whether the commit ``oid`` is in the local object store."""
        return self.git.run("cat-file", "-e", f"{oid}^{{commit}}", check=False).returncode == 0

    def root_tree(self, commit: str) -> str:
        """The tree of ``commit``."""
        with self._cache_lock:
            cached = self._root_of.get(commit)
        if cached is None:
            cached = self.git.out("rev-parse", f"{commit}^{{tree}}")
            with self._cache_lock:
                _remember(self._root_of, commit, cached)
        return cached

    def entries(self, tree: str) -> tuple[Entry, ...]:
        """The entries of the tree object ``tree`` (a tree id, not a path)."""
        return self.listing(tree).entries

    def listing(self, tree: str) -> Tree:
        """The tree object ``tree``, listed once and then kept."""
        with self._cache_lock:
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
        result = Tree.of(listing)
        self._keep_listing(tree, result)
        return result

    def listings(self, trees: Iterable[str]) -> None:
        """List every tree of ``trees`` not listed yet, all with two git calls."""
        with self._cache_lock:
            wanted = [oid for oid in dict.fromkeys(trees) if oid not in self._listings]
        if not wanted:
            return
        found = self.read_objects(wanted, kind="tree", limit=TREE_LIMIT)
        for oid in wanted:
            body = found.get(oid)
            if body is None:
                raise GitError(
                    f"the sync branch in {self.git.worktree} holds a tree {oid[:12]} that is "
                    f"missing or larger than {TREE_LIMIT} bytes; the remote is damaged or "
                    "hostile (convosyncd doctor)"
                )
            try:
                self._keep_listing(oid, Tree.parse(body, len(oid) // 2))
            except ValueError as error:
                raise GitError(
                    f"tree {oid[:12]} in {self.git.worktree} is damaged: {error}"
                ) from None

    def _keep_listing(self, oid: str, tree: Tree) -> None:
        with self._cache_lock:
            previous = self._listings.pop(oid, None)
            if previous is not None:
                self._listed -= len(previous)
            self._listings[oid] = tree
            self._listed += len(tree)
            while len(self._listings) > 1 and (
                len(self._listings) > _LISTED_TREES or self._listed > _LISTED_ENTRIES
            ):
                _oid, dropped = self._listings.popitem(last=False)
                self._listed -= len(dropped)

    def child(self, tree: str | None, name: str) -> Entry | None:
        """The entry called ``name`` in ``tree`` (None if either is missing)."""
        if tree is None:
            return None
        return self.listing(tree).find(name)

    def kept(self, level: Level, tree: str | None) -> list[Entry]:
        """The entries of ``tree`` (at ``level`` of the branch) that a merge keeps."""
        if tree is None:
            return []
        return [entry for entry in self.entries(tree) if keeps(level, entry)]

    def device_folders(self, commit: str | None) -> dict[str, str]:
        """``{device: tree id}`` for every valid device folder under ``handoffs/``."""
        if commit is None:
            return {}
        handoffs = self.child(self.root_tree(commit), HANDOFFS_DIR)
        if handoffs is None or not handoffs.is_tree:
            return {}
        return {entry.name: entry.oid for entry in self.kept("handoffs", handoffs.oid)}

    def folder_files(self, device: str, folder: str | None) -> list[tuple[Location, str]]:
        """Every valid file in one device folder (by its tree id), as ``(location, blob
        id)``, newest first: months newest first, then format 1 files."""
        found: list[tuple[Location, str]] = []
        for month in self.folder_parts(folder):
            found += self.part_files(device, month)
        return found

    def folder_parts(self, folder: str | None, *, list_months: bool = True) -> list[Entry]:
        """The month folders of one device folder, newest first, then one entry standing
        for its format 1 files (the folder itself, named ``""``) if it has any. With
        ``list_months``, every month folder is listed now, all with one git call."""
        entries = self.kept("device", folder)
        months = sorted(
            (e for e in entries if e.is_tree and e.name != FORGOTTEN_DIR),
            key=lambda e: e.name,
            reverse=True,
        )
        if list_months:
            self.listings(entry.oid for entry in months)
        if folder is not None and any(not e.is_tree for e in entries):
            months.append(Entry(TREE_MODE, "tree", folder, ""))
        return months

    def part_files(self, device: str, part: Entry) -> list[tuple[Location, str]]:
        """The files of one entry of :meth:`folder_parts`, newest first."""
        if part.name == "":
            files = [e for e in self.kept("device", part.oid) if not e.is_tree]
        else:
            files = self.kept("month", part.oid)
        return [(Location(device, part.name, f.name), f.oid) for f in reversed(files)]

    def forget_files(self, root: str | None) -> list[tuple[Location, str]]:
        """Every forget record under ``root`` (a root tree id): ``(location, blob id)``."""
        if root is None:
            return []
        handoffs = self.child(root, HANDOFFS_DIR)
        if handoffs is None or not handoffs.is_tree:
            return []
        found: list[tuple[Location, str]] = []
        for device in self.kept("handoffs", handoffs.oid)[:MAX_MERGED_DEVICES]:
            folder = self.child(device.oid, FORGOTTEN_DIR)
            if folder is not None and folder.is_tree:
                for entry in self.kept("forgotten", folder.oid):
                    found.append((Location(device.name, FORGOTTEN_DIR, entry.name), entry.oid))
        return found

    def file_at(self, root: str | None, location: Location) -> str | None:
        """The blob id at ``location`` under ``root`` (a root tree id), or None."""
        tree: str | None = root
        for part in location.path.split("/")[:-1]:
            entry = self.child(tree, part)
            tree = entry.oid if entry is not None and entry.is_tree else None
        entry = self.child(tree, location.name)
        return entry.oid if entry is not None and entry.kind == "blob" else None

    def blob_size(self, oid: str) -> int:
        return int(self.git.out("cat-file", "-s", oid))

    def read_blob(self, oid: str) -> bytes:
        return self.git.run("cat-file", "blob", oid).stdout

    def read_objects(self, oids: Iterable[str], *, kind: str, limit: int) -> dict[str, bytes]:
        """The content of every object of ``oids`` that is a ``kind`` of at most ``limit``
        bytes (the others are left out), read with two git calls however many there are:
        the sizes first, so that nothing larger than ``limit`` is ever read."""
        wanted = list(dict.fromkeys(oids))
        if not wanted:
            return {}
        request = ("\n".join(wanted) + "\n").encode("ascii")
        sizes = self.git.run("cat-file", "--batch-check", input=request).text
        small = []
        for line in sizes.splitlines():
            parts = line.split(" ")
            valid = len(parts) == 3 and parts[1] == kind and parts[2].isdigit()
            if valid and int(parts[2]) <= limit:
                small.append(parts[0])
        if not small:
            return {}
        data = self.git.run(
            "cat-file", "--batch", input=("\n".join(small) + "\n").encode("ascii")
        ).stdout
        found: dict[str, bytes] = {}
        position = 0
        while position < len(data):
            end = data.index(b"\n", position)
            oid, found_kind, size = data[position:end].decode("ascii").split(" ")
            start = end + 1
            found[oid] = data[start : start + int(size)]
            position = start + int(size) + 1
            if found_kind != kind:  # the ids named something else after all
                del found[oid]
        return found

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        result = self.git.run("merge-base", "--is-ancestor", ancestor, descendant, check=False)
        if result.returncode not in (0, 1):
            raise GitError(f"cannot compare {ancestor[:12]} and {descendant[:12]}: {result.stderr}")
        return result.returncode == 0

    def related(self, first: str, second: str) -> bool:
        """Whether two commits share any history (a purge gives the remote a new root)."""
        result = self.git.run("merge-base", first, second, check=False)
        if result.returncode not in (0, 1):
            raise GitError(f"cannot compare {first[:12]} and {second[:12]}: {result.stderr}")
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
        tree = Tree.of(entries)
        oid = tree.oid(self._algorithm(tree.entries[0].oid if tree.entries else None))
        self._write_trees([(oid, tree)])
        return oid

    def _algorithm(self, example: str | None) -> str:
        """The repository's hash algorithm, told by the length of ``example``'s id if given."""
        example = example or self.tip()
        if example:
            return algorithm_of(example)
        result = self.git.run("rev-parse", "--show-object-format", check=False)
        return result.text if result.returncode == 0 and result.text == "sha256" else "sha1"

    def _write_trees(self, trees: Sequence[tuple[str, Tree]]) -> None:
        """Write ``(expected id, tree)`` pairs with one git call, children first."""
        with tempfile.TemporaryDirectory(prefix="convosyncd-trees-") as folder:
            paths = []
            for index, (_oid, tree) in enumerate(trees):
                path = Path(folder) / str(index)
                path.write_bytes(tree.body())
                paths.append(str(path))
            written = self.git.out(
                "hash-object", "-w", "-t", "tree", "--no-filters", "--", *paths
            ).split()
        expected = [oid for oid, _tree in trees]
        if written != expected:
            raise GitError(
                f"git stored trees under other ids than computed in {self.git.worktree} "
                f"({written} instead of {expected}); please report this"
            )
        for oid, tree in trees:
            self._keep_listing(oid, tree)

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
        with self._cache_lock:
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
            self._remember_tip(new, self._loose_ref())
            return True
        self._tip = None
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
        return self.edit(tip, add={"/".join([*folder, name]): blob})

    def edit(
        self,
        tip: str | None,
        *,
        add: Mapping[str, str] | None = None,
        remove: Collection[str] = (),
    ) -> str:
        """The root tree of ``tip`` with files added (``{path: blob id}``) and removed.

        Every folder on the way is rewritten (a file or folder of the same name as one
        added is replaced; a folder left empty goes), and all of them are written by one
        git call.
        """
        changes: dict[tuple[str, ...], dict[str, str | None]] = {}
        for path, blob in (add or {}).items():
            *folder, name = path.split("/")
            changes.setdefault(tuple(folder), {})[name] = blob
        for path in remove:
            *folder, name = path.split("/")
            changes.setdefault(tuple(folder), {}).setdefault(name, None)
        root = self.root_tree(tip) if tip is not None else None
        algorithm = self._algorithm(next(iter((add or {}).values()), None) or root)
        written: list[tuple[str, Tree]] = []
        oid = self._edit(root, (), changes, algorithm, written)
        if oid is None:
            oid = self._empty_tree(algorithm, written)
        self._write_trees(written)
        return oid

    def _edit(
        self,
        tree: str | None,
        where: tuple[str, ...],
        changes: Mapping[tuple[str, ...], Mapping[str, str | None]],
        algorithm: str,
        written: list[tuple[str, Tree]],
    ) -> str | None:
        base = self.listing(tree) if tree is not None else Tree.of(())
        result = base
        below = {
            path[len(where)]
            for path in changes
            if len(path) > len(where) and path[: len(where)] == where
        }
        for name in sorted(below):
            entry = base.find(name)
            current = entry.oid if entry is not None and entry.is_tree else None
            inner = self._edit(current, (*where, name), changes, algorithm, written)
            result = result.without(name)
            if inner is not None:
                result = result.with_entry(Entry(TREE_MODE, "tree", inner, name))
        for name, blob in changes.get(where, {}).items():
            result = result.without(name)
            if blob is not None:
                result = result.with_entry(Entry(BLOB_MODE, "blob", blob, name))
        if not result.entries:
            return None
        if result is base and tree is not None:
            return tree
        oid = result.oid(algorithm)
        written.append((oid, result))
        return oid

    def _empty_tree(self, algorithm: str, written: list[tuple[str, Tree]]) -> str:
        empty = Tree.of(())
        oid = empty.oid(algorithm)
        written.append((oid, empty))
        return oid

    def merge_trees(
        self,
        ours: str | None,
        theirs: str | None,
        *,
        drop: Collection[str] = (),
        devices_first: Sequence[str] = (),
    ) -> str:
        """The root tree holding every handoff file of both root trees, less ``drop``.

        Only the shapes of docs/format.md are read and kept, level by level: the root
        holds ``handoffs`` alone, which holds device folders, which hold month folders,
        ``forgotten`` and format 1 files. The depth is fixed, whatever the trees hold.
        Two files that claim one path are both kept (:func:`convosyncd.union.union`).
        At most :data:`MAX_MERGED_DEVICES` device folders are kept, ``devices_first``
        before the others.
        """
        example = ours or theirs
        algorithm = algorithm_of(example) if example else self._algorithm(None)
        written: list[tuple[str, Tree]] = []
        dropped = frozenset(drop)
        root = self._merge("root", ours, theirs, "", dropped, devices_first, algorithm, written)
        if root is None:
            root = self._empty_tree(algorithm, written)
        self._write_trees(written)
        return root

    def _merge(
        self,
        level: Level,
        ours: str | None,
        theirs: str | None,
        prefix: str,
        drop: frozenset[str],
        first: Sequence[str],
        algorithm: str,
        written: list[tuple[str, Tree]],
    ) -> str | None:
        sides = [oid for oid in dict.fromkeys((ours, theirs)) if oid is not None]
        if not sides:
            return None
        touched = any(path.startswith(prefix) for path in drop)
        with self._cache_lock:
            if len(sides) == 1 and (level, sides[0]) in self._clean and not touched:
                return sides[0]
        self.listings(sides)
        mine = self.kept(level, ours)
        other = self.kept(level, theirs)
        if level == "handoffs":
            mine, other = _first_devices(mine, other, first)
        # Folders of both sides that differ are merged in turn: list them all at once.
        self.listings(entry.oid for entry in (*mine, *other) if entry.is_tree)
        merged: list[Entry] = []
        for step in union.union(mine, other):
            if isinstance(step, union.Recurse) or step.is_tree:
                name = step.name
                below = _child_level(level, name)
                if isinstance(step, union.Recurse):
                    left, right = step.ours, step.theirs
                else:
                    left, right = step.oid, None
                inner = self._merge(
                    below, left, right, f"{prefix}{name}/", drop, first, algorithm, written
                )
                if inner is not None:
                    merged.append(Entry(TREE_MODE, "tree", inner, name))
            elif f"{prefix}{step.name}" not in drop:
                merged.append(Entry(BLOB_MODE, "blob", step.oid, step.name))
        if not merged:
            return None
        tree = Tree.of(merged)
        oid = tree.oid(algorithm)
        if oid not in sides:
            written.append((oid, tree))
        with self._cache_lock:
            if len(self._clean) > _CLEAN_LIMIT:
                self._clean.clear()
            self._clean.add((level, oid))
        return oid

    # -- the remote -----------------------------------------------------------------

    def ls_remote(self) -> str | None:
        """The remote's sync branch tip, asked cheaply (no objects), or None if absent."""
        local = self._local_remote()
        if local is not None:
            try:
                return local.read(self.ref)
            except localremote.Unreadable as why:
                log.info("%s: asking git for the remote's tip: %s", self.git.worktree, why)
                self._local = None
                self._local_retry_at = time.monotonic() + LOCAL_RETRY
        output = self.git.run("ls-remote", self.remote, self.ref, network=True).text
        for line in output.splitlines():
            oid, _, name = line.partition("\t")
            if name == self.ref:
                return oid
        return None

    def reads_remote_directly(self) -> bool:
        """Whether :meth:`ls_remote` reads the remote's ref file (no git, no network)."""
        return self._local_remote() is not None

    def _local_remote(self) -> localremote.LocalRemote | None:
        """The remote as a folder to read, located again whenever a git config file
        changes (the remote's URL or an ``insteadOf`` may have), or None."""
        key = self.git.config_stamp()
        if key != self._local_for or (
            self._local is None and time.monotonic() >= self._local_retry_at
        ):
            self._local = self._locate_local()
            self._local_for = key
            self._local_retry_at = time.monotonic() + LOCAL_RETRY
        return self._local

    def _locate_local(self) -> localremote.LocalRemote | None:
        url = self.git.run("ls-remote", "--get-url", self.remote, check=False)
        if url.returncode != 0 or not url.text:
            return None
        # A remote with its own upload-pack program or a remote helper is git's to run.
        pattern = rf"^remote\.{re.escape(self.remote)}\.(uploadpack|vcs)$"
        own = self.git.run("config", "--get-regexp", pattern, check=False)
        if own.returncode == 0 and own.text:
            return None
        found = localremote.locate(url.text, self.git.worktree)
        if found is not None:
            log.debug("%s: %s is read directly (%s)", self.git.worktree, url.text, found.git_dir)
        return found

    def fetch(self) -> None:
        """Fetch the remote's sync branch into ``refs/convosync/remotes/...``.

        Another convosyncd process (the daemon, while ``convosyncd forget`` or ``sync``
        runs) may be updating that ref at the same moment, or the remote-tracking ref
        git also updates from the clone's own refspec (``refs/remotes/<remote>/...``):
        git then refuses to lock it, and the fetch is simply made again.

        Every object received is checked by git (``fetch.fsckObjects``, set for every
        git call): a remote that serves malformed objects (a ``..`` in a tree, duplicate
        entries) is refused before anything of it is stored.
        """
        for attempt in range(FETCH_ATTEMPTS):
            result = self.git.run(
                "fetch",
                "--quiet",
                "--no-tags",
                "--no-write-fetch-head",
                self.remote,
                f"+{self.ref}:{self.remote_ref}",
                network=True,
                check=False,
            )
            self._remote_known = None
            if result.returncode == 0:
                return
            problem = error_summary(result.stderr) or f"exit {result.returncode}"
            if "fsck" in result.stderr or "object check failed" in result.stderr:
                raise GitError(
                    f"the remote {self.remote}'s {self.branch} branch holds objects git "
                    f"refuses ({problem}): it is damaged or was written by hand; nothing of "
                    "it was taken in. Ask whoever can push there to restore it "
                    "(`convosyncd doctor`)",
                    returncode=result.returncode,
                    stderr=result.stderr,
                )
            if "cannot lock ref" not in result.stderr or attempt == FETCH_ATTEMPTS - 1:
                raise GitError(
                    f"{describe_command(result.args)} failed in {self.git.worktree} "
                    f"(exit {result.returncode}): {problem}",
                    returncode=result.returncode,
                    stderr=result.stderr,
                )
            log.info("%s: another process was fetching too; fetching again", self.git.worktree)
            self._clear_stale_lock(result.stderr)
            time.sleep(random.uniform(0.05, 0.3))  # noqa: S311 - jitter

    def push(self, commit: str) -> PushOutcome:
        """Push ``commit`` as the remote's sync branch, never forcing."""
        return self._push(commit)

    def push_leased(self, commit: str, expected: str | None) -> PushOutcome:
        """Push ``commit`` as the remote's sync branch in place of whatever it holds, but
        only while it still is ``expected`` (None: while the remote has no such branch).

        This is how a purge replaces the branch's history: ``--force-with-lease`` with
        the value the new commit was built from, so a push another device made in
        between is never overwritten (the outcome is then ``rejected``).
        """
        return self._push(commit, f"--force-with-lease={self.ref}:{expected or ''}")

    def _push(self, commit: str, *options: str) -> PushOutcome:
        result = self.git.run(
            "push",
            "--porcelain",
            "--no-verify",
            *options,
            self.remote,
            f"{commit}:{self.ref}",
            network=True,
            check=False,
        )
        status = _push_status(result.text, self.ref)
        if result.returncode == 0 and status in ("ok", None):
            self.record_remote_tip(commit)
            return PushOutcome(accepted=True)
        if status == "rejected" or (status == "error" and _lost_race(result.stderr)):
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
        self._remote_known = (commit,)

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
            return "rejected" if any(reason in rest for reason in _MOVED_ON) else "error"
    return None


_MOVED_ON = (
    "non-fast-forward",
    "fetch first",
    "stale info",
    "already exists",
    # Another device's push held the remote's ref lock at that very moment (two devices
    # creating the branch at once): the ref has moved or is moving; fetch and try again.
    "failed to update ref",
    "failed to lock",
)


def _lost_race(stderr: str) -> bool:
    """Whether the remote refused the update because its ref moved after it told us its
    value (another device's push won the race): a rejection like any other, to be
    fetched, merged and pushed again, not a failure."""
    return "cannot lock ref" in stderr and (
        "but expected" in stderr or "reference already exists" in stderr
    )


def _first_devices(
    mine: list[Entry], other: list[Entry], first: Sequence[str]
) -> tuple[list[Entry], list[Entry]]:
    """Both sides' device folders cut to :data:`MAX_MERGED_DEVICES` names together,
    the names in ``first`` kept before the others (logged when the cap bites)."""
    names = {entry.name for entry in (*mine, *other)}
    if len(names) <= MAX_MERGED_DEVICES:
        return mine, other
    order = [name for name in first if name in names]
    order += sorted(names - set(order))
    kept = set(order[:MAX_MERGED_DEVICES])
    log.warning(
        "the sync branch holds %d device folders; a merge keeps %d and drops the rest "
        "(a remote with that many is damaged or hostile)",
        len(names),
        MAX_MERGED_DEVICES,
    )
    return [e for e in mine if e.name in kept], [e for e in other if e.name in kept]


def _remember(cache: OrderedDict[str, T], key: str, value: T) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)
