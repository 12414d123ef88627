"""What the daemon remembers between runs, one small JSON file per repo.

``<state dir>/repos/<name>-<hash>.json`` holds the last publish, push, poll and error
(for ``status``), and ``notified_through``: the sync-branch commit whose handoffs have
all been considered for a notification, so that none is ever raised twice, even after
a restart. The file is replaced atomically; a corrupt or truncated one is set aside
(``.corrupt``), logged, and replaced by a fresh state that notifies nothing already
on the local branch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convosyncd.atomic import write_atomically

log = logging.getLogger(__name__)

VERSION = 1


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
}


def state_file(state_dir: Path, repo_path: Path) -> Path:
    """Where the state of the repo at ``repo_path`` lives."""
    digest = hashlib.sha256(str(repo_path).encode("utf-8", "surrogateescape")).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", repo_path.name)[:40] or "repo"
    return state_dir / "repos" / f"{name}-{digest}.json"


def lock_file(state_dir: Path, repo_path: Path) -> Path:
    """The lock that keeps two processes from changing one repo's sync branch at once."""
    return state_file(state_dir, repo_path).with_suffix(".lock")


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
    write_atomically(
        polls_file(state_dir),
        json.dumps(data, sort_keys=True).encode("utf-8") + b"\n",
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
    """Store ``state`` at ``path`` atomically (flushed to disk if ``durable``);
    ``encoded`` is ``encode(state)`` when the caller has it already."""
    write_atomically(path, encoded if encoded is not None else encode(state), durable=durable)
