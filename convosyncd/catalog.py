"""Reading handoffs off the sync branch, trusting nothing the remote says.

Every file is classified once (and remembered by device, name and blob id): verified
when it opens under the person's keyring, else foreign, forged, damaged or unverified
(format 1); see ``docs/format.md``. Only verified handoffs are ever returned as
:class:`~convosyncd.handoff.Handoff`; the others are counted, per device folder, so that
``status`` can say what they probably are.

What a hostile remote can make this read is bounded: at most :data:`MAX_DEVICES` device
folders (this device's and those seen verified before come first), at most
``file_budget`` files opened per call, each at most ``max_bytes`` plus a small allowance.
Each bound is logged when it bites. A handoff dated more than :data:`FUTURE_SLACK` ahead
of this machine's clock is ordered by when this device first saw it instead.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from convosyncd.gitstore import SyncBranch
from convosyncd.handoff import Handoff, HandoffFormatError, parse_stored
from convosyncd.keys import Keyring
from convosyncd.layout import Location, parse_name, parse_path
from convosyncd.seal import open_forget, open_handoff, parse_header

log = logging.getLogger(__name__)

FRONT_MATTER_ALLOWANCE = 4096
SEAL_OVERHEAD = 256
MAX_DEVICES = 64
"""Device folders read for handoffs: a person has a handful; a remote with thousands is
hostile, and this device's own folder and those seen verified before are read first."""
FILE_BUDGET = 256
"""Files opened per call (a cycle makes a few calls): enough for every device's newest
handoff and a burst of arrivals, too few for a flood to cost much."""
FUTURE_SLACK = timedelta(minutes=5)
"""How far ahead of this machine's clock a handoff's time may be and still order it."""
_CACHE_LIMIT = 20_000
"""Files whose verdict is remembered (a few hundred bytes each)."""
_TEXT_LIMIT = 512
"""Verified handoffs whose text is remembered: every device's newest, a burst of arrivals."""
_SURVEY_LIMIT = 4_096

Verdict = Literal["verified", "foreign", "forged", "damaged", "unverified"]
OrderKey = tuple[datetime, int, str, str]
"""How handoffs sort by age (:meth:`Catalog.order_key`)."""
UNTRUSTED: tuple[Verdict, ...] = ("foreign", "forged", "damaged", "unverified")
MEANING: dict[Verdict, str] = {
    "foreign": (
        "sealed with a key this device lacks: another person using convosyncd on this repo, "
        "or one of your devices whose key was never imported here (`convosyncd key show` "
        "there, `convosyncd key import` here)"
    ),
    "forged": "names your key but does not open: damaged, or forged by someone who can push",
    "damaged": "not a handoff file convosyncd can read",
    "unverified": "plain text (convosyncd 0.1, or written by hand): never verified",
}
"""What a file that does not open under the person's key probably is, by its verdict."""


@dataclass(frozen=True)
class Record:
    """One file on the branch, classified."""

    location: Location
    oid: str
    verdict: Verdict
    key_id: str | None = None
    handoff: Handoff | None = None


@dataclass
class Budget:
    """How many more files one call may open; logs once when it runs out."""

    left: int
    what: str
    bitten: bool = False
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = self.left

    def take(self) -> bool:
        if self.left > 0:
            self.left -= 1
            return True
        if not self.bitten:
            self.bitten = True
            log.info(
                "%s: opened %d files, the most one step may; the rest wait for the next "
                "(a device that has just started, or a remote flooded with files)",
                self.what,
                self.size,
            )
        return False


@dataclass
class Survey:
    """What one device folder holds that is not the person's: counts by verdict."""

    verified: int = 0
    foreign: int = 0
    forged: int = 0
    damaged: int = 0
    unverified: int = 0
    key_ids: set[str] = field(default_factory=set)
    """The key ids of the foreign files: a key this device lacks."""
    partial: bool = False

    def add(self, record: Record) -> None:
        setattr(self, record.verdict, getattr(self, record.verdict) + 1)
        if record.verdict == "foreign" and record.key_id:
            self.key_ids.add(record.key_id)

    def merge(self, other: Survey) -> None:
        for verdict in ("verified", *UNTRUSTED):
            setattr(self, verdict, getattr(self, verdict) + getattr(other, verdict))
        self.key_ids |= other.key_ids
        self.partial = self.partial or other.partial

    def as_json(self) -> dict[str, Any]:
        """What ``status`` shows of it."""
        data: dict[str, Any] = {verdict: getattr(self, verdict) for verdict in UNTRUSTED}
        data["key_ids"] = sorted(self.key_ids)
        data["partial"] = self.partial
        return data

    @property
    def untrusted(self) -> int:
        return self.foreign + self.forged + self.damaged + self.unverified


@dataclass(frozen=True)
class Forgotten:
    """What forget records take back: the paths to drop, and which of the roots read
    (by their index) hold a record of a purge."""

    paths: frozenset[str]
    purged: frozenset[int]


class Catalog:
    """The handoffs on one repo's sync branch, as the person's keyring sees them."""

    def __init__(
        self,
        branch: SyncBranch,
        keyring: Callable[[], Keyring | None],
        *,
        max_bytes: int,
        first_seen: MutableMapping[str, str] | None = None,
        known_devices: Callable[[], Sequence[str]] = tuple,
    ) -> None:
        self.branch = branch
        self.keyring = keyring
        self.max_bytes = max_bytes
        self.first_seen: MutableMapping[str, str] = first_seen if first_seen is not None else {}
        """``{device/name: ISO time}`` when a handoff dated in the future was first seen."""
        self.known_devices = known_devices
        self._records: OrderedDict[tuple[str, str, str], Record] = OrderedDict()
        self._handoffs: OrderedDict[tuple[str, str, str], Handoff] = OrderedDict()
        self._surveys: OrderedDict[tuple[str, str, str], Survey] = OrderedDict()
        self._lock = threading.Lock()

    # -- classifying ----------------------------------------------------------------

    def classify(
        self, items: Iterable[tuple[Location, str]], budget: Budget, *, texts: bool = True
    ) -> list[Record]:
        """The records of ``items`` (``(location, blob id)``), opening what is not known
        yet (as far as ``budget`` allows: the rest is left out). With ``texts`` False only
        the verdicts are wanted: a verified record may then come without its handoff."""
        wanted = list(items)
        keyring = self.keyring()
        records: dict[tuple[str, str, str], Record] = {}
        missing: list[tuple[Location, str]] = []
        with self._lock:
            for location, oid in wanted:
                cache_key = (location.device, location.name, oid)
                known = self._records.get(cache_key)
                full = self._handoffs.get(cache_key)
                if known is None or not _still_valid(known, keyring):
                    missing.append((location, oid))
                elif texts and known.verdict == "verified" and full is None:
                    missing.append((location, oid))  # its text left the small cache
                else:
                    self._records.move_to_end(cache_key)
                    if full is not None:
                        self._handoffs.move_to_end(cache_key)
                        known = dataclasses.replace(known, handoff=full)
                    records[cache_key] = known
        opened = [item for item in missing if budget.take()]
        limit = self.max_bytes + FRONT_MATTER_ALLOWANCE + SEAL_OVERHEAD
        contents = self.branch.read_objects((oid for _l, oid in opened), kind="blob", limit=limit)
        for location, oid in opened:
            record = self._classify(location, oid, contents.get(oid), keyring)
            records[(location.device, location.name, oid)] = record
            self._keep(record)
        return [
            records[key]
            for key in ((loc.device, loc.name, oid) for loc, oid in wanted)
            if key in records
        ]

    def _classify(
        self, location: Location, oid: str, data: bytes | None, keyring: Keyring | None
    ) -> Record:
        if data is None:
            log.warning(
                "ignoring %s: larger than %d bytes, or not a file",
                location.path,
                self.max_bytes + FRONT_MATTER_ALLOWANCE,
            )
            return Record(location, oid, "damaged")
        name = parse_name(location.name)
        if name is None or name.kind == "forget":
            return Record(location, oid, "damaged")
        if name.kind == "plain":
            return Record(location, oid, "unverified")
        opened = open_handoff(keyring, location.path, data)
        if opened.verdict != "verified" or opened.content is None:
            return Record(location, oid, opened.verdict, opened.key_id)
        try:
            handoff = parse_stored(opened.content, device=location.device, name=location.name)
        except HandoffFormatError as error:
            log.warning("ignoring %s: %s", location.path, error)
            return Record(location, oid, "damaged", opened.key_id)
        return Record(location, oid, "verified", opened.key_id, handoff)

    def _keep(self, record: Record) -> None:
        """Remember a file's verdict (many, small) and a verified handoff's text (a few:
        counting a long history must not keep ten thousand handoffs in memory)."""
        with self._lock:
            key = (record.location.device, record.location.name, record.oid)
            self._records[key] = dataclasses.replace(record, handoff=None)
            self._records.move_to_end(key)
            while len(self._records) > _CACHE_LIMIT:
                self._records.popitem(last=False)
            if record.handoff is not None:
                self._handoffs[key] = record.handoff
                self._handoffs.move_to_end(key)
                while len(self._handoffs) > _TEXT_LIMIT:
                    self._handoffs.popitem(last=False)

    def remember(self, location: Location, oid: str, content: bytes, key_id: str) -> None:
        """Take in a handoff this device has just sealed, so it is not read back from git."""
        try:
            handoff = parse_stored(content, device=location.device, name=location.name)
        except HandoffFormatError:
            return
        self._keep(Record(location, oid, "verified", key_id, handoff))

    # -- reading ----------------------------------------------------------------------

    def folders(self, commit: str | None) -> list[tuple[str, str]]:
        """``(device, tree id)`` of the device folders read at ``commit``, at most
        :data:`MAX_DEVICES`, the devices seen verified before first."""
        found = self.branch.device_folders(commit)
        if len(found) <= MAX_DEVICES:
            return sorted(found.items())
        first = [device for device in self.known_devices() if device in found]
        order = list(dict.fromkeys([*first, *sorted(found)]))[:MAX_DEVICES]
        log.warning(
            "the sync branch holds %d device folders; reading %d (a remote with that many is "
            "damaged or hostile)",
            len(found),
            MAX_DEVICES,
        )
        return sorted((device, found[device]) for device in order)

    def latest(self, commit: str | None, *, now: datetime | None = None) -> list[Handoff]:
        """The newest verified handoff of every device at ``commit``."""
        now = now or datetime.now(timezone.utc)
        budget = Budget(FILE_BUDGET, "reading the newest handoffs")
        found = []
        for device, folder in self.folders(commit):
            newest = self._newest(self._newest_first(device, folder), budget, now)
            if newest is not None:
                found.append(newest)
        return found

    def _newest_first(self, device: str, folder: str) -> Iterator[tuple[Location, str]]:
        """One device folder's files, newest first, a month at a time: the newest
        handoff is nearly always in the newest month, so the older months' names (ten
        thousand in a long history) are not even parsed."""
        for part in self.branch.folder_parts(folder, list_months=False):
            if part.name:  # format 1 files are never verified, so never the newest
                yield from self.branch.part_files(device, part)

    def _newest(
        self, files: Iterable[tuple[Location, str]], budget: Budget, now: datetime
    ) -> Handoff | None:
        """The newest verified handoff of one folder (files newest first by name).

        One dated in the future counts from when it was first seen, so the walk goes on
        past it to the first one with an honest date; the newest of those seen wins.
        """
        candidates: list[Handoff] = []
        for location, oid in files:
            record = next(iter(self.classify([(location, oid)], budget)), None)
            if record is None:
                break  # the budget ran out
            if record.handoff is None:
                continue
            candidates.append(record.handoff)
            if record.handoff.created <= now + FUTURE_SLACK:
                break
        if not candidates:
            return None
        return max(candidates, key=lambda handoff: self.order_key(handoff, now))

    def order_key(self, handoff: Handoff, now: datetime) -> OrderKey:
        """What "newest" means: the handoff's time, or for one dated more than
        :data:`FUTURE_SLACK` ahead, the time this device first saw it.

        Times count to the second, as a handoff's own is written; within one second a
        handoff with an honest date is newer than one ordered by when it was seen.
        """
        created = handoff.created
        honest = 1
        if created > now + FUTURE_SLACK:
            key = f"{handoff.device}/{handoff.name}"
            seen = self.first_seen.get(key)
            if seen is None:
                seen = now.replace(microsecond=0).isoformat()
                self.first_seen[key] = seen
                log.warning(
                    "the handoff %s is dated %s, ahead of this machine's clock: ordered by "
                    "when it was first seen instead",
                    key,
                    handoff.created_text,
                )
            created, honest = datetime.fromisoformat(seen).replace(microsecond=0), 0
        return created, honest, handoff.device, handoff.name

    def read(self, commit: str | None, location: Location) -> Handoff | None:
        """The verified handoff at ``location``, or None."""
        if commit is None:
            return None
        oid = self.branch.file_at(self.branch.root_tree(commit), location)
        if oid is None:
            return None
        records = self.classify([(location, oid)], Budget(1, f"reading {location.key}"))
        return records[0].handoff if records else None

    def arrivals(
        self, before: str | None, after: str, own_device: str
    ) -> tuple[dict[str, list[Handoff]], dict[str, Survey]]:
        """The verified handoffs of other devices at ``after`` that ``before`` lacked,
        ``{device: [handoffs, oldest first]}``, and what else arrived, per device."""
        old = dict(self.folders(before)) if before is not None else {}
        budget = Budget(FILE_BUDGET, "reading new handoffs")
        arrived: dict[str, list[Handoff]] = {}
        others: dict[str, Survey] = {}
        for device, folder in self.folders(after):
            if device == own_device or old.get(device) == folder:
                continue
            known = {loc.name for loc, _oid in self.branch.folder_files(device, old.get(device))}
            new = [
                item
                for item in self.branch.folder_files(device, folder)
                if item[0].name not in known
            ]
            survey = Survey()
            for record in self.classify(new, budget):
                survey.add(record)
                if record.handoff is not None:
                    arrived.setdefault(device, []).append(record.handoff)
            survey.partial = budget.bitten
            if survey.untrusted:
                others[device] = survey
            if device in arrived:
                arrived[device].sort(key=lambda handoff: handoff.name)
        return arrived, others

    def survey(self, commit: str | None) -> dict[str, Survey]:
        """Per device folder, what it holds by verdict (files not opened yet are opened,
        as far as the budget allows; ``partial`` says when it did not). A month folder
        counted once is not counted again until it changes."""
        budget = Budget(FILE_BUDGET * 4, "counting the files on the sync branch")
        surveys: dict[str, Survey] = {}
        for device, folder in self.folders(commit):
            total = Survey()
            for part in self.branch.folder_parts(folder):
                cache_key = (device, part.name, part.oid)
                counted = self._surveys.get(cache_key)
                if counted is None:
                    counted = Survey()
                    files = self.branch.part_files(device, part)
                    records = self.classify(files, budget, texts=False)
                    for record in records:
                        counted.add(record)
                    counted.partial = len(records) < len(files)
                    if not counted.partial:
                        self._keep_survey(cache_key, counted)
                total.merge(counted)
            surveys[device] = total
        return surveys

    def _keep_survey(self, key: tuple[str, str, str], survey: Survey) -> None:
        with self._lock:
            self._surveys[key] = survey
            while len(self._surveys) > _SURVEY_LIMIT:
                self._surveys.popitem(last=False)

    def files(self, commit: str | None) -> list[tuple[Location, str]]:
        """Every handoff file (sealed and format 1) of every device folder read at
        ``commit``, as ``(location, blob id)``, newest first within each device; nothing
        is opened."""
        return [
            item
            for device, folder in self.folders(commit)
            for item in self.branch.folder_files(device, folder)
        ]

    def history(self, commit: str | None) -> Iterator[Record]:
        """Every file of every device folder read, newest first (for ``convosyncd log``)."""
        budget = Budget(FILE_BUDGET * 16, "listing the handoffs")
        files = self.files(commit)
        files.sort(key=lambda item: (item[0].name, item[0].device), reverse=True)
        yield from self.classify(files, budget)

    # -- forgetting -------------------------------------------------------------------

    def forgotten(self, roots: Sequence[str | None]) -> Forgotten:
        """What the forget records under ``roots`` take back (paths a merge of them must
        drop: docs/format.md, "A forget record"), and which roots hold a purge."""
        keyring = self.keyring()
        mine = keyring.key_ids if keyring is not None else frozenset()
        records: dict[str, tuple[str, set[int]]] = {}
        for index, root in enumerate(roots):
            for location, oid in self.branch.forget_files(root):
                records.setdefault(location.path, (oid, set()))[1].add(index)
        contents = self.branch.read_objects(
            (oid for oid, _where in records.values()), kind="blob", limit=1_048_576
        )
        drop: set[str] = set()
        purged: set[int] = set()
        foreign: dict[str, set[str]] = {}
        for path, (oid, where) in sorted(records.items()):
            data = contents.get(oid)
            if data is None:
                continue
            record = open_forget(keyring, path, data)
            if record.purge and record.verdict in ("verified", "foreign"):
                purged |= where
            if record.verdict == "verified":
                drop.update(record.paths)
            elif record.verdict == "foreign" and record.key_id and record.key_id not in mine:
                for target in record.paths:
                    foreign.setdefault(target, set()).add(record.key_id)
        if foreign:
            drop |= self._foreign_drops(roots, foreign)
        return Forgotten(frozenset(drop), frozenset(purged))

    def _foreign_drops(
        self, roots: Sequence[str | None], claims: Mapping[str, set[str]]
    ) -> set[str]:
        """Of the paths another person's records take back, those whose file carries that
        person's key id (they may forget their own files, nobody else's)."""
        located: list[tuple[str, str]] = []
        for path in claims:
            location = parse_path(path)
            if location is None:
                continue
            for root in roots:
                oid = self.branch.file_at(root, location)
                if oid is not None:
                    located.append((path, oid))
        contents = self.branch.read_objects(
            (oid for _path, oid in located), kind="blob", limit=self.max_bytes + SEAL_OVERHEAD
        )
        drop = set()
        for path, oid in located:
            header = parse_header(contents.get(oid, b""))
            if header is not None and header.key_id in claims[path]:
                drop.add(path)
        return drop


def _still_valid(record: Record, keyring: Keyring | None) -> bool:
    """A cached verdict holds unless the keyring changed what it would be."""
    if record.verdict == "foreign":
        return keyring is None or record.key_id not in keyring.key_ids
    if record.verdict == "verified":
        return keyring is not None and record.key_id in keyring.key_ids
    return True
