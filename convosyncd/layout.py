"""Where things are on the sync branch: paths and file names, parsed and made (pure).

Format 2 (``docs/format.md``)::

    handoffs/<device>/<YYYY-MM>/<YYYYMMDDTHHMMSS.mmmZ>-<digest>.sealed
    handoffs/<device>/forgotten/<YYYYMMDDTHHMMSS.mmmZ>-<random>.forget

and format 1, plain text from convosyncd 0.1, read but never verified::

    handoffs/<device>/<YYYYMMDDTHHMMSS.mmmZ>-<12 hex>.md

Every name that comes from a remote is checked here before anything is built from it:
nothing that could climb out of its folder, nothing of another shape.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

HANDOFFS_DIR = "handoffs"
FORGOTTEN_DIR = "forgotten"
SEALED_SUFFIX = ".sealed"
FORGET_SUFFIX = ".forget"

DEVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MONTH_RE = re.compile(r"^(?P<year>\d{4})-(?P<month>0[1-9]|1[0-2])$")
_STAMP = r"(?P<stamp>\d{8}T\d{6})\.(?P<millis>\d{3})Z"
_TWIN = r"(?:~[0-9a-f]{8})?"  # a second file that claimed the same name (see union.py)
_SEALED_RE = re.compile(rf"^{_STAMP}-(?P<digest>[0-9a-f]{{16}}){_TWIN}\.sealed$")
_FORGET_RE = re.compile(rf"^{_STAMP}-(?P<digest>[0-9a-f]{{16}}){_TWIN}\.forget$")
_PLAIN_RE = re.compile(rf"^{_STAMP}-(?P<digest>[0-9a-f]{{12}}){_TWIN}\.md$")

Kind = Literal["sealed", "forget", "plain"]


def is_device_name(name: str) -> bool:
    """True for names a device folder may have (nothing that could climb out of it)."""
    return bool(DEVICE_RE.match(name))


def is_month(name: str) -> bool:
    return bool(MONTH_RE.match(name))


def month_of(moment: datetime) -> str:
    """``2026-11``: the month folder of a handoff published at ``moment``."""
    return f"{moment.astimezone(timezone.utc):%Y-%m}"


def stamp(moment: datetime) -> str:
    """``20261123T224535.123Z``: a UTC time to the millisecond, sorting as it reads."""
    moment = moment.astimezone(timezone.utc)
    return f"{moment:%Y%m%dT%H%M%S}.{moment.microsecond // 1000:03d}Z"


def sealed_name(moment: datetime, digest: str) -> str:
    return f"{stamp(moment)}-{digest}{SEALED_SUFFIX}"


def forget_name(moment: datetime, token: str) -> str:
    return f"{stamp(moment)}-{token}{FORGET_SUFFIX}"


@dataclass(frozen=True)
class Name:
    """A valid file name on the branch: its kind, time and digest."""

    kind: Kind
    created: datetime
    digest: str


def parse_name(name: str) -> Name | None:
    """The kind, time and digest of a file name of either format; None for anything else."""
    for kind, pattern in (("sealed", _SEALED_RE), ("forget", _FORGET_RE), ("plain", _PLAIN_RE)):
        match = pattern.match(name)
        if match is None:
            continue
        digits = match["stamp"]
        # Built from the fixed-width digits rather than by strptime, which costs three
        # times as much: every name of every listed folder is parsed (ten thousand per
        # pass over a long history). Both refuse a date or time that does not exist.
        try:
            created = datetime(
                int(digits[0:4]),
                int(digits[4:6]),
                int(digits[6:8]),
                int(digits[9:11]),
                int(digits[11:13]),
                int(digits[13:15]),
                int(match["millis"]) * 1000,
                tzinfo=timezone.utc,
            )
        except ValueError:
            return None
        return Name(kind, created, match["digest"])  # type: ignore[arg-type]
    return None


@functools.lru_cache(maxsize=8192)
def name_kind(name: str) -> Kind | None:
    """The kind of a file name (None if it is no valid name). Remembered: every listing
    of a month folder asks it of hundreds of names, nearly all asked before."""
    parsed = parse_name(name)
    return parsed.kind if parsed else None


@dataclass(frozen=True, order=True)
class Location:
    """One file's place on the branch. ``folder`` is a month, ``forgotten``, or ``""``
    for a format 1 file directly in the device folder."""

    device: str
    folder: str
    name: str

    @property
    def path(self) -> str:
        parts = [HANDOFFS_DIR, self.device, self.folder, self.name]
        return "/".join(part for part in parts if part)

    @property
    def key(self) -> str:
        """``device/name``: how a person names one handoff (names are unique per device)."""
        return f"{self.device}/{self.name}"


def handoff_location(device: str, created: datetime, digest: str) -> Location:
    return Location(device, month_of(created), sealed_name(created, digest))


def parse_path(path: str) -> Location | None:
    """The location a path on the branch names, if it is one of the valid shapes."""
    parts = path.split("/")
    if len(parts) not in (3, 4) or parts[0] != HANDOFFS_DIR or not is_device_name(parts[1]):
        return None
    device, name = parts[1], parts[-1]
    kind = name_kind(name)
    if len(parts) == 3:
        return Location(device, "", name) if kind == "plain" else None
    folder = parts[2]
    if kind == "sealed" and is_month(folder):
        return Location(device, folder, name)
    if kind == "forget" and folder == FORGOTTEN_DIR:
        return Location(device, folder, name)
    return None
