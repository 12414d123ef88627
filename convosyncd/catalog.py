"""Reading handoffs off the sync branch: the newest of each device, and what is new.

Everything that comes from a remote is treated as untrusted: only folders with a valid
device name and files with a valid handoff name count, oversized files are skipped
with a log line, and what is read is reduced to plain metadata by
:func:`convosyncd.handoff.parse_stored`.
"""

from __future__ import annotations

import logging

from convosyncd.gitstore import FILE_MODES, SyncBranch
from convosyncd.handoff import (
    Handoff,
    HandoffFormatError,
    is_device_name,
    parse_filename,
    parse_stored,
)

log = logging.getLogger(__name__)

FRONT_MATTER_ALLOWANCE = 4096
_CACHE_LIMIT = 256


class Catalog:
    """The handoffs on one repo's sync branch."""

    def __init__(self, branch: SyncBranch, *, max_bytes: int) -> None:
        self.branch = branch
        self.max_bytes = max_bytes
        self._parsed: dict[str, Handoff | None] = {}

    def names(self, commit: str | None, device: str) -> list[str]:
        """The valid handoff file names of ``device`` at ``commit``, oldest first."""
        folder = self.branch.device_folders(commit).get(device)
        return sorted(
            entry.name
            for entry in self.branch.device_files(folder)
            if parse_filename(entry.name) is not None
        )

    def latest(self, commit: str | None) -> list[Handoff]:
        """The newest readable handoff of every device at ``commit``."""
        found = []
        for device, folder in sorted(self.branch.device_folders(commit).items()):
            if not is_device_name(device):
                log.warning("ignoring a sync-branch folder with an invalid device name")
                continue
            # Valid names sort by time, and a folder lists them in that order: walk it
            # from the end instead of parsing every name of a long history.
            for entry in reversed(self.branch.entries(folder)):
                if entry.mode not in FILE_MODES or parse_filename(entry.name) is None:
                    continue
                handoff = self._parse(entry.oid, device, entry.name)
                if handoff is not None:
                    found.append(handoff)
                    break
        return found

    def arrivals(self, before: str | None, after: str, own_device: str) -> dict[str, list[str]]:
        """``{device: [new file names]}`` at ``after`` that ``before`` lacked (others only)."""
        old = self.branch.device_folders(before) if before is not None else {}
        arrived: dict[str, list[str]] = {}
        for device, folder in self.branch.device_folders(after).items():
            if device == own_device or old.get(device) == folder or not is_device_name(device):
                continue
            known = {entry.name for entry in self.branch.device_files(old.get(device))}
            new = [
                entry.name
                for entry in self.branch.device_files(folder)
                if entry.name not in known and parse_filename(entry.name) is not None
            ]
            if new:
                arrived[device] = sorted(new)
        return arrived

    def read(self, commit: str | None, device: str, name: str) -> Handoff | None:
        """One handoff, parsed; None (and a log line) if it is too big or unreadable."""
        folder = self.branch.device_folders(commit).get(device)
        entry = self.branch.child(folder, name)
        if entry is None or entry.kind != "blob":
            return None
        return self._parse(entry.oid, device, name)

    def _parse(self, oid: str, device: str, name: str) -> Handoff | None:
        if oid in self._parsed:
            return self._parsed[oid]
        handoff: Handoff | None = None
        limit = self.max_bytes + FRONT_MATTER_ALLOWANCE
        size = self.branch.blob_size(oid)
        if size > limit:
            log.warning(
                "skipping handoff %s/%s: %d bytes, over the %d-byte limit",
                device,
                name,
                size,
                limit,
            )
        else:
            try:
                handoff = parse_stored(self.branch.read_blob(oid), device=device, name=name)
            except HandoffFormatError as error:
                log.warning("skipping an unreadable handoff: %s", error)
        self._keep(oid, handoff)
        return handoff

    def _keep(self, oid: str, handoff: Handoff | None) -> None:
        if len(self._parsed) >= _CACHE_LIMIT:
            self._parsed.clear()
        self._parsed[oid] = handoff

    def remember(self, oid: str, device: str, name: str, data: bytes) -> None:
        """Take in a handoff this device has just written, so it is not read back from git."""
        if len(data) > self.max_bytes + FRONT_MATTER_ALLOWANCE:
            return
        try:
            self._keep(oid, parse_stored(data, device=device, name=name))
        except HandoffFormatError:
            return
