"""What the daemon does to keep its footprint small over years: its state folder private
and free of repos no longer registered (at start, :func:`tidy_state`), and its own git
objects packed now and then, without touching the person's gc (:func:`pack_repo`).

Every git call of the daemon runs with automatic gc off (:mod:`convosyncd.gitcmd`): a
daemon must not start a repack of someone's whole repository, or expire their reflogs,
at a moment of its own choosing. But each publish writes a few loose objects (a blob,
the trees above it, a commit) and each small fetch unpacks a few more, so over months
of handoffs thousands of loose files would pile up in ``.git/objects``.

So once a day (and soon after the daemon starts) each repo's loose objects are counted,
and when there are more than :data:`LOOSE_LIMIT`, they, and only they, are packed:
``git maintenance run --task=loose-objects`` writes them into one new pack (its cost is
that of the loose objects, whatever the size of the repository; it never walks history),
then ``git prune-packed`` deletes the loose copies. Nothing is deleted that is not in a
pack, nothing is repacked, nothing in the person's config changes: both commands run
through :func:`convosyncd.gitcmd.run_git` with the options every daemon call has, on one
thread (``pack.threads=1``), within :data:`PACK_TIMEOUT`. The person's own ``git gc``
takes precedence: while it runs (``gc.pid``) the daemon waits for the next day.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from convosyncd import state as states
from convosyncd.errors import ConvosyncError
from convosyncd.gitcmd import Git, run_git

log = logging.getLogger(__name__)

LOOSE_LIMIT = 1000
"""Loose objects a repo may hold before the daemon packs them: about two hundred
handoffs' worth, a few megabytes of small files (git's own default is 6,700)."""
PACK_INTERVAL = 24 * 3600.0
"""Seconds between two checks of a repo's loose objects."""
PACK_TIMEOUT = 120.0
"""Seconds each packing command may take; a first pack of a long-neglected repo is the
slowest (git packs at most 50,000 loose objects a run; the rest follow the next day)."""
GC_STALE = 12 * 3600.0
"""A ``gc.pid`` older than this is left over from a gc that died (git's own rule)."""

PackStatus = Literal["few", "busy", "packed"]


@dataclass(frozen=True)
class Packed:
    """What a check of one repo's loose objects did."""

    status: PackStatus
    """``few``: under the limit; ``busy``: the person's gc runs; ``packed``."""
    before: int
    after: int


def loose_objects(git: Git) -> int:
    """How many loose objects the repository holds (``git count-objects -v``)."""
    for line in git.out("count-objects", "-v").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "count" and value.strip().isdigit():
            return int(value)
    raise ConvosyncError(
        f"git count-objects -v in {git.worktree} printed no count; check the repository "
        "with `git fsck`"
    )


def gc_running(git: Git) -> bool:
    """Whether the person's ``git gc`` runs in the repository now (its ``gc.pid``)."""
    where = Path(git.out("rev-parse", "--git-path", "gc.pid"))
    if not where.is_absolute():
        where = git.worktree / where
    try:
        age = time.time() - where.stat().st_mtime
    except FileNotFoundError:
        return False
    return age < GC_STALE


def pack_loose_objects(
    git: Git, *, limit: int = LOOSE_LIMIT, timeout: float = PACK_TIMEOUT
) -> Packed:
    """Pack the repository's loose objects if there are more than ``limit``.

    Raises :class:`ConvosyncError` when git fails or runs out of time (nothing is lost
    then: a pack half written is a temporary file git ignores and its gc removes).
    """
    before = loose_objects(git)
    if before <= limit:
        return Packed("few", before, before)
    if gc_running(git):
        return Packed("busy", before, before)
    for command in (
        ("-c", "pack.threads=1", "maintenance", "run", "--task=loose-objects", "--quiet"),
        ("prune-packed", "--quiet"),
    ):
        run_git(command, cwd=git.worktree, timeout=timeout)
    return Packed("packed", before, loose_objects(git))


def pack_repo(git: Git, *, limit: int = LOOSE_LIMIT) -> Packed | None:
    """:func:`pack_loose_objects` for the daemon: one log line, never an exception (a
    repo whose objects cannot be packed today still syncs; its trouble is shown by the
    cycle's own git calls if it is real)."""
    try:
        packed = pack_loose_objects(git, limit=limit)
    except (ConvosyncError, OSError) as error:
        log.warning("%s: could not pack the loose git objects: %s", git.worktree, error)
        return None
    if packed.status == "packed":
        log.info(
            "%s: packed %d loose git objects (%d left loose)",
            git.worktree,
            packed.before,
            packed.after,
        )
    elif packed.status == "busy":
        log.info(
            "%s: %d loose git objects, packed another day: a git gc is running there",
            git.worktree,
            packed.before,
        )
    return packed


def tidy_state(state_dir: Path, registered: Iterable[Path]) -> None:
    """Make the state folder its owner's alone (0700, files 0600) and delete what it holds
    for repos no longer registered: one log line each, never an exception."""
    try:
        fixed = states.make_private(state_dir)
        removed = states.forget_unregistered(state_dir, registered)
    except OSError as error:
        log.warning("cannot tidy the state folder %s: %s", state_dir, error)
        return
    if fixed:
        log.info(
            "made %d file(s) and folder(s) in %s readable by you alone (0600, folders 0700)",
            len(fixed),
            state_dir,
        )
    if removed:
        log.info(
            "deleted %d file(s) in %s kept for repos no longer registered: %s",
            len(removed),
            state_dir,
            ", ".join(str(path.relative_to(state_dir)) for path in removed),
        )
