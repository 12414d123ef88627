"""Handoffs as text: reading a draft's task line, the stored file with its front matter,
the plugin's ``session-handoff.md`` format, and plain notification text.

Everything here is a pure function of its inputs: no files, no git, no clock.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

CONVOSYNC_DIR = ".convosync"
DRAFT_NAME = "session-handoff-draft.md"
MATERIALIZED_NAME = "session-handoff.md"
DEVICE_ID_NAME = "device-id"
HANDOFFS_DIR = "handoffs"
PLUGIN_TITLE = "# ConvoSync Session Handoffs"

TASK_LIMIT = 120
"""Characters of the task line kept in front matter, commit messages and notifications."""

DEVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_FILENAME_RE = re.compile(
    r"^(?P<stamp>\d{8}T\d{6})\.(?P<millis>\d{3})Z-(?P<digest>[0-9a-f]{12})(?:~[0-9a-f]{8})?\.md$"
)
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


def content_digest(data: bytes) -> str:
    """The short content hash that names a handoff and makes publishing idempotent."""
    return hashlib.sha256(data).hexdigest()[:12]


def handoff_filename(created: datetime, digest: str) -> str:
    """``20261123T224535.123Z-3f2a9c1d0e4b.md``: sorts by time, names the content."""
    moment = created.astimezone(timezone.utc)
    return f"{moment:%Y%m%dT%H%M%S}.{moment.microsecond // 1000:03d}Z-{digest}.md"


def parse_filename(name: str) -> tuple[datetime, str] | None:
    """The creation time and content digest in a handoff file name, or None."""
    match = _FILENAME_RE.match(name)
    if match is None:
        return None
    try:
        moment = datetime.strptime(match["stamp"], "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return moment + timedelta(milliseconds=int(match["millis"])), match["digest"]


def digest_of_filename(name: str) -> str | None:
    """Just the content digest of a handoff file name."""
    parsed = parse_filename(name)
    return parsed[1] if parsed else None


def is_device_name(name: str) -> bool:
    """True for names a device folder may have (nothing that could climb out of it)."""
    return bool(DEVICE_RE.match(name))


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
    """Read a stored handoff; ``device`` and ``name`` come from its path on the branch.

    The path is authoritative: front matter cannot claim another device. Values are
    reduced to plain text, so a hostile file cannot smuggle markup or escapes into a
    notification or into ``session-handoff.md``'s metadata lines.
    """
    if not is_device_name(device):
        raise HandoffFormatError(f"invalid device folder name {device!r}")
    text = data.decode("utf-8", "replace").replace("\x00", "")
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
    from_name = parse_filename(name)
    created = parse_time(meta.get("created", "")) or (from_name[0] if from_name else None)
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


def render_plugin(handoffs: Iterable[Handoff]) -> str:
    """``session-handoff.md`` in the format the plugin's ``/convosync:resume`` parses.

    The plugin splits the file on lines that are exactly ``---``; such a line inside a
    body would cut the handoff in two, so it is written as ``- - -`` (the same
    horizontal rule in Markdown).
    """
    parts = [PLUGIN_TITLE, ""]
    for handoff in newest_first(handoffs):
        body = "\n".join(
            "- - -" if _PLUGIN_SEPARATOR_RE.match(line) else line
            for line in handoff.body.strip("\n").split("\n")
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


def newest_per_device(
    names_by_device: Mapping[str, Sequence[str]], own_device: str
) -> dict[str, str]:
    """Of the newly arrived handoff files, the newest of each *other* device."""
    chosen: dict[str, str] = {}
    for device, names in names_by_device.items():
        if device == own_device or not is_device_name(device):
            continue
        valid = [name for name in names if parse_filename(name) is not None]
        if valid:
            chosen[device] = max(valid)
    return chosen
