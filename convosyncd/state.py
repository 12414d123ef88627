"""What the daemon remembers between runs, one small JSON file per repo, and the state
folder that holds it.

``<state dir>/repos/<name>-<hash>.json`` holds the last publish, push, poll and error
(for ``status``), and ``notified_through``: the sync-branch commit whose handoffs have
all been considered for a notification, so that none is ever raised twice, even after
a restart. The file is replaced atomically; a corrupt or truncated one is set aside
(``.corrupt``), logged, and replaced by a fresh state that notifies nothing already
on the local branch.

The state folder tells what the person worked on (repo paths, handoff tasks in the
log), so it is theirs alone: folders 0700, files 0600, created so and put right by
:func:`make_private`. Everything in it that belongs to one repo (:func:`repo_files`)
goes when the repo is removed (:func:`forget_repo`, :func:`forget_unregistered`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convosyncd.atomic import write_atomically

log = logging.getLogger(__name__)

VERSION = 1

FOLDER_MODE = 0o700
"""The state folder and its subfolders: the owner's alone."""
FILE_MODE = 0o600
"""Every file in the state folder."""
REPOS_DIR = "repos"
LOADED_DIR = "loaded"


@dataclass
class Event:
    """Something that happened, when, and a few words about it."""

    time: str
    message: str


@dataclass
class RepoState:
    """The remembered facts about one repo."""

    path: str = ""
    device: str = ""
    remote: str = ""
    branch: str = ""
    last_publish: Event | None = None
    last_push: Event | None = None
    last_poll: Event | None = None
    last_pull: Event | None = None
    last_error: Event | None = None
    draft_problem: Event | None = None
    pending: int = 0
    local_tip: str | None = None
    remote_tip: str | None = None
    notified_through: str | None = None
    initialized: bool = False
    notified_problems: list[str] = field(default_factory=list)
    # mode = "inline": the last handoff commit on the person's branch, why the last one
    # was not made or not pushed, and the branch whose handoff commit awaits a push.
    last_inline: Event | None = None
    inline_problem: Event | None = None
    inline_unpushed: str | None = None
    # What the remote holds that is not the person's: {device: {verdict: count,
    # "key_ids": [...]}} (see catalog.Survey); devices seen with verified handoffs (read
    # first when a remote holds too many folders); when a handoff dated in the future was
    # first seen ({device/name: ISO time}, ordering it instead of its date).
    untrusted: dict[str, dict[str, Any]] = field(default_factory=dict)
    known_devices: list[str] = field(default_factory=list)
    first_seen: dict[str, str] = field(default_factory=dict)
    # keep_days: when handoffs were last forgotten for their age, and how many (retention
    # runs at most once a UTC day per repo).
    last_retention: Event | None = None

    def to_json(self) -> dict[str, Any]:
        # By hand, not dataclasses.asdict: an idle poll saves the state of every repo,
        # and asdict's deep copies were most of what such a poll cost.
        data: dict[str, Any] = {}
        for name in _FIELD_NAMES:
            value = getattr(self, name)
            if isinstance(value, Event):
                value = {"time": value.time, "message": value.message}
            elif isinstance(value, (list, dict)):
                value = value.copy()
            data[name] = value
        data["version"] = VERSION
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RepoState:
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise ValueError("not a convosyncd repo state of this version")
        values: dict[str, Any] = {}
        for item in dataclasses.fields(cls):
            if item.name not in data:
                continue
            value = data[item.name]
            if item.name in _EVENT_FIELDS and value is not None:
                value = Event(time=str(value["time"]), message=str(value["message"]))
            values[item.name] = value
        state = cls(**values)
        if not isinstance(state.pending, int) or not isinstance(state.notified_problems, list):
            raise ValueError("wrong field types")
        if not isinstance(state.untrusted, dict) or not isinstance(state.first_seen, dict):
            raise ValueError("wrong field types")
        if not isinstance(state.known_devices, list):
            raise ValueError("wrong field types")
        return state


_FIELD_NAMES = tuple(item.name for item in dataclasses.fields(RepoState))

_EVENT_FIELDS = {
    "last_publish",
    "last_push",
    "last_poll",
    "last_pull",
    "last_error",
    "draft_problem",
    "last_inline",
    "inline_problem",
    "last_retention",
}


def state_file(state_dir: Path, repo_path: Path) -> Path:
    """Where the state of the repo at ``repo_path`` lives."""
    digest = hashlib.sha256(str(repo_path).encode("utf-8", "surrogateescape")).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", repo_path.name)[:40] or "repo"
    return state_dir / REPOS_DIR / f"{name}-{digest}.json"


def lock_file(state_dir: Path, repo_path: Path) -> Path:
    """The lock that keeps two processes from changing one repo's sync branch at once."""
    return state_file(state_dir, repo_path).with_suffix(".lock")


def loaded_file(state_dir: Path, repo_path: Path) -> Path:
    """Where the session-start hook remembers which handoffs it handed over for the repo."""
    return state_dir / LOADED_DIR / state_file(state_dir, repo_path).name


def load(path: Path, *, repair: bool = True) -> tuple[RepoState, bool]:
    """The state stored at ``path``, and whether it is a fresh one for a new repo.

    A missing file gives a fresh state (``True``); an unreadable one gives an empty
    state that is *not* fresh (``False``), so nothing already on the local branch is
    notified again. ``repair`` sets an unreadable file aside; readers such as
    ``status`` pass False and leave it to the daemon.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return RepoState(), True
    except OSError as error:
        log.warning("cannot read state %s (%s); starting afresh", path, error.strerror)
        return RepoState(), False
    try:
        return RepoState.from_json(json.loads(raw.decode("utf-8"))), False
    except (ValueError, TypeError, KeyError, UnicodeDecodeError, AttributeError) as error:
        if not repair:
            return RepoState(
                last_error=Event("", f"state file {path} is unreadable: {error}")
            ), False
        aside = path.with_name(path.name + ".corrupt")
        try:
            os.replace(path, aside)
        except OSError:
            aside = path
        log.warning(
            "state file %s was unreadable (%s); kept as %s and started afresh "
            "(handoffs already on this machine will not be notified again)",
            path,
            error,
            aside,
        )
        return RepoState(), False


POLLS_NAME = "polls.json"
"""The daemon's record of when it last polled each repo (see :func:`save_polls`)."""


def polls_file(state_dir: Path) -> Path:
    return state_dir / POLLS_NAME


def save_polls(state_dir: Path, polls: Mapping[str, Event]) -> None:
    """Record ``{repo path: last poll}`` for every repo in one file.

    A poll that finds nothing new changes nothing in a repo's state but the time of the
    poll; the daemon writes those times here, once per poll round, instead of rewriting
    every repo's state file at every poll. Readers take the later of the two.
    """
    data = {
        "version": VERSION,
        "polls": {
            path: {"time": event.time, "message": event.message} for path, event in polls.items()
        },
    }
    write_private(
        polls_file(state_dir),
        json.dumps(data, sort_keys=True).encode("utf-8") + b"\n",
        state_dir=state_dir,
        durable=False,
    )


def load_polls(state_dir: Path) -> dict[str, Event]:
    """What :func:`save_polls` recorded; empty if nothing (readable) was."""
    try:
        data = json.loads(polls_file(state_dir).read_bytes().decode("utf-8"))
        if data.get("version") != VERSION:
            return {}
        return {
            str(path): Event(time=str(value["time"]), message=str(value["message"]))
            for path, value in data["polls"].items()
        }
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def latest_poll(state: RepoState, polls: Mapping[str, Event], path: Path) -> Event | None:
    """The later of the state file's last poll and the polls file's, for ``path``."""
    recorded = polls.get(str(path))
    if state.last_poll is None or (recorded is not None and recorded.time > state.last_poll.time):
        return recorded
    return state.last_poll


def encode(state: RepoState) -> bytes:
    """The file's bytes for ``state``: one line of JSON (without ``indent``, the json
    module encodes in C, several times faster)."""
    return json.dumps(state.to_json(), sort_keys=True).encode("utf-8") + b"\n"


def save(
    path: Path, state: RepoState, *, durable: bool = True, encoded: bytes | None = None
) -> None:
    """Store ``state`` at ``path`` (``<state dir>/repos/<file>``) atomically, flushed to
    disk if ``durable``; ``encoded`` is ``encode(state)`` when the caller has it already."""
    data = encoded if encoded is not None else encode(state)
    write_private(path, data, state_dir=path.parent.parent, durable=durable)


# -- the state folder ------------------------------------------------------------------


def make_folders(state_dir: Path, folder: Path | None = None) -> None:
    """Create the state folder and ``folder`` inside it, if missing, owner-only.

    Only the state folder and what is below it: the folders above it (``~/.local/state``)
    are the platform's, created with the usual permissions when missing.
    """
    state_dir.parent.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(mode=FOLDER_MODE, exist_ok=True)
    if folder is not None and folder != state_dir:
        folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)


def write_private(path: Path, data: bytes, *, state_dir: Path, durable: bool = True) -> None:
    """Replace ``path``, a file in ``state_dir``, atomically: always 0600, in folders
    created 0700 (the daemon also puts older files right at start, :func:`make_private`)."""
    try:
        write_atomically(
            path, data, mode=FILE_MODE, durable=durable, make_parents=False, keep_mode=False
        )
    except FileNotFoundError:
        # Only the first write into a fresh state folder gets here: no extra system call
        # on the path every idle poll takes.
        make_folders(state_dir, path.parent)
        write_atomically(
            path, data, mode=FILE_MODE, durable=durable, make_parents=False, keep_mode=False
        )


def make_private(state_dir: Path) -> list[Path]:
    """Make everything in ``state_dir`` its owner's alone: folders 0700, files 0600.

    For a state folder made before convosyncd kept it private, or by hand. Symbolic links
    are neither followed nor changed. Returns what was changed; what cannot be changed
    (a file someone else owns) is logged and left.
    """
    changed: list[Path] = []
    make_folders(state_dir)
    for folder, _folders, files in os.walk(state_dir):
        base = Path(folder)
        for path, wanted in [(base, FOLDER_MODE)] + [(base / name, FILE_MODE) for name in files]:
            try:
                status = os.lstat(path)
                if stat.S_ISLNK(status.st_mode) or stat.S_IMODE(status.st_mode) == wanted:
                    continue
                if not (stat.S_ISDIR(status.st_mode) or stat.S_ISREG(status.st_mode)):
                    continue  # a socket or a FIFO: its mode is its creator's business
                os.chmod(path, wanted)
            except FileNotFoundError:
                continue
            except OSError as error:
                log.warning(
                    "cannot make %s private (%s); `chmod %o %s` would",
                    path,
                    error.strerror,
                    wanted,
                    path,
                )
                continue
            changed.append(path)
    return changed


def repo_files(state_dir: Path, repo_path: Path) -> list[Path]:
    """Every file the state folder may hold for the repo at ``repo_path``."""
    state = state_file(state_dir, repo_path)
    return [
        state,
        state.with_name(state.name + ".corrupt"),
        lock_file(state_dir, repo_path),
        loaded_file(state_dir, repo_path),
    ]


_OWNER = re.compile(r"(?P<owner>.+-[0-9a-f]{12})(?:\.json|\.json\.corrupt|\.lock)")


def _owner(name: str) -> str:
    """The ``<name>-<hash>`` a file of ``repos/`` or ``loaded/`` belongs to ('' for a
    file convosyncd did not name): a repo's state, lock, set-aside and temporary files
    all share it."""
    if name.startswith(".") and name.endswith(".tmp"):
        name = name[1:].rsplit(".", 2)[0]  # .<file>.<pid>-<thread>.tmp (atomic.py)
    match = _OWNER.fullmatch(name)
    return match["owner"] if match else ""


def forget_repo(state_dir: Path, repo_path: Path) -> list[Path]:
    """Delete what the state folder holds for the repo at ``repo_path``; returns the
    files deleted (``polls.json`` when the repo's entry was taken out of it)."""
    removed = _remove_owned(state_dir, {state_file(state_dir, repo_path).stem}, keep=False)
    polls = load_polls(state_dir)
    if polls.pop(str(repo_path), None) is not None:
        save_polls(state_dir, polls)
        removed.append(polls_file(state_dir))
    return removed


def forget_unregistered(state_dir: Path, registered: Iterable[Path]) -> list[Path]:
    """Delete the files of every repo not in ``registered``; returns those deleted."""
    owners = {state_file(state_dir, path).stem for path in registered}
    return _remove_owned(state_dir, owners, keep=True)


def _remove_owned(state_dir: Path, owners: set[str], *, keep: bool) -> list[Path]:
    """Delete the files of ``repos/`` and ``loaded/`` whose owner is in ``owners``
    (``keep=False``) or is not (``keep=True``)."""
    removed = []
    for folder in (state_dir / REPOS_DIR, state_dir / LOADED_DIR):
        try:
            names = sorted(os.listdir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            owner = _owner(name)
            if not owner or (owner in owners) == keep:
                continue
            path = folder / name
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed
