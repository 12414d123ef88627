"""Handoffs as text: a draft's task line, the content sealed on the branch (front matter
and the draft), the plugin's ``session-handoff.md`` format, and clean text.

Text that came from a remote is cleaned once, where it is parsed (:func:`parse_stored`):
terminal escapes, control characters, bidirectional overrides, zero-width and tag
characters go, so nothing downstream (the hook, ``session-handoff.md``, ``resume``,
``log``, notifications) can be made to show one thing and mean another.

Everything here is a pure function of its inputs: no files, no git, no clock.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from convosyncd.layout import is_device_name, parse_name

CONVOSYNC_DIR = ".convosync"
DRAFT_NAME = "session-handoff-draft.md"
MATERIALIZED_NAME = "session-handoff.md"
DEVICE_ID_NAME = "device-id"
PLUGIN_TITLE = "# ConvoSync Session Handoffs"

TASK_LIMIT = 120
"""Characters of the task line kept in front matter, commit messages and notifications."""

_TASK_HEADING_RE = re.compile(r"^\s{0,3}#{1,6}\s*current\s+task\s*:?\s*#*\s*$", re.IGNORECASE)
_HEADING_RE = re.compile(r"^\s{0,3}#{1,6}\s")
_ANSI_RE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_TAG_RE = re.compile(r"</?[A-Za-z][^<>]{0,200}>")
_PLUGIN_SEPARATOR_RE = re.compile(r"^---\s*$")
_FRONT_MATTER_KEYS = ("device", "created", "repo_commit", "repo_branch", "task")


class HandoffFormatError(ValueError):
    """A stored handoff file that cannot be read as one."""


@dataclass(frozen=True)
class Handoff:
    """One published handoff: its metadata and the draft's text as written."""

    device: str
    created: datetime
    repo_commit: str
    repo_branch: str
    task: str
    body: str
    name: str = ""

    @property
    def created_text(self) -> str:
        """``2026-11-23T22:45:35Z``."""
        return format_time(self.created)


def format_time(moment: datetime) -> str:
    """An aware datetime as ISO 8601 UTC with a ``Z``, to the second."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime | None:
    """The inverse of :func:`format_time`, lenient about fractions and offsets."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def clean_text(text: str) -> str:
    """``text`` as it may be shown: lines and tabs kept, nothing invisible or active.

    Terminal escape sequences (colours, titles, OSC 52's clipboard writes) go whole;
    then every control character but newline and tab, every format character (the
    bidirectional overrides and isolates, zero-width spaces and joiners, the byte order
    mark, Unicode's tag characters), surrogates, private-use and unassigned characters.
    Line ends become ``\\n``.
    """
    text = _ANSI_RE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    # Printable ASCII, newline and tab are always kept; only runs of anything else are
    # looked at character by character (a fifth of the cost for a typical handoff,
    # which every receiving device cleans once per file).
    return _SUSPECT_RE.sub(_visible, text)


_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
_SUSPECT_RE = re.compile(r"[^\n\t\x20-\x7e]+")


def _visible(match: re.Match[str]) -> str:
    return "".join(
        char for char in match[0] if unicodedata.category(char) not in _INVISIBLE_CATEGORIES
    )


def plain_text(text: str, limit: int) -> str:
    """One line of plain text, safe for a notification, a log or front matter.

    Terminal escapes, control and bidirectional-override characters and markup tags
    go; ``<``, ``>`` and ``&`` become look-alikes a notification server will not
    interpret; whitespace collapses; a leading ``-`` (an option to ``notify-send``)
    goes; the result is cut to ``limit`` characters with an ellipsis.
    """
    text = _ANSI_RE.sub("", text)
    text = _TAG_RE.sub("", text)
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if char in "\t\n\r\v\f" or category.startswith("Z"):
            kept.append(" ")
        elif category in ("Cc", "Cf", "Cs", "Co", "Cn"):
            continue
        else:
            kept.append(char)
    text = "".join(kept).replace("<", "‹").replace(">", "›").replace("&", "＆")
    text = " ".join(text.split()).lstrip("-– ").strip()
    if len(text) > limit:
        text = text[: max(0, limit - 1)].rstrip() + "…"
    return text


def task_line(text: str) -> str:
    """The first line under ``### Current Task`` (else the first line of text), plain."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if _TASK_HEADING_RE.match(line):
            for following in lines[index + 1 :]:
                if _HEADING_RE.match(following):
                    break
                candidate = _strip_markdown_line(following)
                if candidate:
                    return plain_text(candidate, TASK_LIMIT) or "(untitled handoff)"
            break
    for line in lines:
        candidate = _strip_markdown_line(line.lstrip("#"))
        if candidate:
            return plain_text(candidate, TASK_LIMIT) or "(untitled handoff)"
    return "(untitled handoff)"


def _strip_markdown_line(line: str) -> str:
    stripped = line.strip()
    stripped = re.sub(r"^(?:[-*+]\s+|\d+[.)]\s+|>\s*)", "", stripped)
    return stripped.strip()


@dataclass(frozen=True)
class Provenance:
    """Where a handoff was written: the device and the work tree's HEAD at the time."""

    device: str
    created: datetime
    repo_commit: str
    repo_branch: str


def render_stored(provenance: Provenance, text: str) -> bytes:
    """The file stored on the sync branch: front matter, then the draft's text."""
    values = {
        "device": provenance.device,
        "created": format_time(provenance.created),
        "repo_commit": plain_text(provenance.repo_commit, 80) or "unknown",
        "repo_branch": plain_text(provenance.repo_branch, 200) or "unknown",
        "task": task_line(text),
    }
    header = "".join(f"{key}: {values[key]}\n" for key in _FRONT_MATTER_KEYS)
    body = text if text.endswith("\n") else text + "\n"
    return f"---\n{header}---\n{body}".encode()


def parse_stored(data: bytes, *, device: str, name: str) -> Handoff:
    """Read a handoff's content; ``device`` and ``name`` come from its path on the branch.

    The path is authoritative (it is sealed with the content): front matter that names
    another device is refused. Every value and the body are cleaned
    (:func:`clean_text`), metadata reduced to one plain line each.
    """
    if not is_device_name(device):
        raise HandoffFormatError(f"invalid device folder name {device!r}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise HandoffFormatError(f"{device}/{name}: not UTF-8 text") from None
    text = clean_text(text)
    meta: dict[str, str] = {}
    body = text
    lines = text.split("\n")
    if lines and lines[0].strip() == "---":
        for index, line in enumerate(lines[1:60], start=1):
            if line.strip() == "---":
                body = "\n".join(lines[index + 1 :])
                break
            key, sep, value = line.partition(":")
            if sep and key.strip() in _FRONT_MATTER_KEYS:
                meta[key.strip()] = value.strip()
        else:
            raise HandoffFormatError(f"{device}/{name}: front matter is not closed by '---'")
    if meta.get("device", device) != device:
        raise HandoffFormatError(
            f"{device}/{name}: its front matter names the device {plain_text(meta['device'], 64)!r}"
        )
    from_name = parse_name(name)
    created = parse_time(meta.get("created", "")) or (from_name.created if from_name else None)
    if created is None:
        raise HandoffFormatError(f"{device}/{name}: no creation time in front matter or name")
    task = plain_text(meta.get("task", ""), TASK_LIMIT) or task_line(body)
    return Handoff(
        device=device,
        created=created,
        repo_commit=plain_text(meta.get("repo_commit", ""), 80) or "unknown",
        repo_branch=plain_text(meta.get("repo_branch", ""), 200) or "unknown",
        task=task,
        body=body.rstrip("\n"),
        name=name,
    )


def newest_first(handoffs: Iterable[Handoff]) -> list[Handoff]:
    """Handoffs ordered by creation time, newest first (device name breaks ties)."""
    return sorted(handoffs, key=lambda handoff: (handoff.created, handoff.device), reverse=True)


PLUGIN_HANDOFF_BYTES = 64 * 1024
"""Bytes of one handoff's body written to ``session-handoff.md`` (the rest: ``show``)."""
PLUGIN_FILE_BYTES = 256 * 1024
"""Bytes of all bodies together in ``session-handoff.md``."""


def clip(text: str, limit: int) -> tuple[str, bool]:
    """``text`` cut to at most ``limit`` UTF-8 bytes (on a character boundary)."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text, False
    return data[: max(0, limit)].decode("utf-8", "ignore"), True


def render_plugin(
    handoffs: Iterable[Handoff],
    *,
    per_handoff: int = PLUGIN_HANDOFF_BYTES,
    total: int = PLUGIN_FILE_BYTES,
) -> str:
    """``session-handoff.md`` in the format the plugin's ``/convosync:resume`` parses.

    The plugin splits the file on lines that are exactly ``---``; such a line inside a
    body would cut the handoff in two, so it is written as ``- - -`` (the same
    horizontal rule in Markdown). Each body is cut at ``per_handoff`` bytes and all of
    them together at ``total``, with a line saying how to read the rest.
    """
    parts = [PLUGIN_TITLE, ""]
    room = total
    for handoff in newest_first(handoffs):
        body, cut = clip(handoff.body.strip("\n"), min(per_handoff, room))
        room -= len(body.encode("utf-8"))
        body = "\n".join(
            "- - -" if _PLUGIN_SEPARATOR_RE.match(line) else line for line in body.split("\n")
        )
        if cut:
            body += (
                f"\n\n(cut here; `convosyncd show {handoff.device}/{handoff.name}` prints "
                "the whole handoff)"
            )
        parts += [
            "---",
            f"## Handoff from {handoff.device}",
            f"**Timestamp:** {handoff.created_text}",
            f"**Commit:** {handoff.repo_commit}",
            f"**Branch:** {handoff.repo_branch}",
            "",
            body,
            "",
        ]
    return "\n".join(parts)


def describe_age(then: datetime, now: datetime) -> str:
    """``just now``, ``5 minutes ago``, ``3 hours ago``, ``2 days ago``."""
    seconds = (now - then).total_seconds()
    if seconds < 0:
        return "in the future (clocks differ)"
    if seconds < 60:
        return "just now"
    for size, unit in ((86_400, "day"), (3_600, "hour"), (60, "minute")):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'' if count == 1 else 's'} ago"
    return "just now"  # pragma: no cover - unreachable


@dataclass(frozen=True)
class Notification:
    """A desktop notification, already plain text and bounded."""

    title: str
    message: str


def notification_for(handoff: Handoff, repo_name: str) -> Notification:
    """ "Handoff from desktop" / "app: Implementing OAuth refresh tokens"."""
    title = plain_text(f"Handoff from {handoff.device}", 80)
    message = plain_text(f"{plain_text(repo_name, 60)}: {handoff.task}", 200)
    return Notification(title=title, message=message)


def summary_notification(arrived: int, devices: Iterable[str], repo_name: str) -> Notification:
    """One notification for a burst: "5 handoffs from 3 devices" / "app: laptop, phone, …"."""
    names = sorted(set(devices))
    listed = ", ".join(names[:4]) + (", …" if len(names) > 4 else "")
    title = plain_text(f"{arrived} handoffs from {len(names)} devices", 80)
    message = plain_text(f"{plain_text(repo_name, 60)}: {listed}", 200)
    return Notification(title=title, message=message)
