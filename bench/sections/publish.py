"""1. Draft to remote: from the draft's write to the handoff on the remote's sync branch.

One daemon per ``settle`` value, each with its own device and bare remote, and beside
them the floor: a clone that publishes the same draft with git plumbing alone (see
:class:`bench.world.PlumbingPublisher`). Samples of the daemons and of the floor take
turns, so whatever the machine does meanwhile falls on both. The daemons' polls are
held off (``pull_interval`` of ten minutes) so that what is timed is the publish path.

Beside them, what sealing costs: naming and sealing one handoff and opening it again,
in this process on the daemon's own functions, for a handoff the size the plugin asks
for and for one of the largest draft allowed (1 MiB).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone

from bench import world
from bench.context import Context
from bench.probe import describe
from bench.report import Row
from bench.stats import Summary, fine, ratio, seconds
from convosyncd.handoff import Provenance, parse_stored, render_stored
from convosyncd.keys import Keyring
from convosyncd.layout import handoff_location
from convosyncd.seal import open_handoff, seal_handoff
from tests.support.devices import PERSON_KEY, Device, make_device

TIMEOUT = 30.0
LARGEST = 1_048_576
"""The largest draft the daemon takes by default (``max_draft_bytes``)."""


@dataclass
class _Subject:
    settle: float
    device: Device
    daemon: world.Daemon
    to_local: list[float] = field(default_factory=list)
    to_remote: list[float] = field(default_factory=list)


def publish_sample(device: Device, marker: str) -> tuple[float, float]:
    """Write a draft and wait for it on the remote: ``(to local ref, to remote)`` seconds."""
    local_before = world.ref_stamp(device.repo / ".git")
    remote_before = world.ref_stamp(device.remote)
    written = world.write_draft(device, marker)
    remote = world.wait_for_ref_change(
        device.remote, remote_before.value, TIMEOUT, f"{device.name}'s handoff on the remote"
    )
    local = world.ref_stamp(device.repo / ".git")
    if local.value == local_before.value:
        raise world.BenchError(f"{device.name}: the remote moved but the local sync ref did not")
    return local.mtime - written, remote.mtime - written


def floor_sample(
    publisher: world.PlumbingPublisher, device: Device, marker: str
) -> tuple[float, float]:
    """The same draft published by :class:`world.PlumbingPublisher`: seconds to the
    local sync ref and to the remote."""
    remote_before = world.ref_stamp(device.remote)
    written = world.write_draft(device, marker)
    publisher.publish_draft(device.draft)
    local = world.ref_stamp(device.repo / ".git")
    remote = world.ref_stamp(device.remote)
    if remote.value == remote_before.value:
        raise world.BenchError("the floor's push did not move the remote")
    return local.mtime - written, remote.mtime - written


def quiet(device: Device, settle: float) -> None:
    """Wait until the daemon has finished with the last draft and its follow-ups."""
    world.wait_for(lambda: not device.draft.exists(), TIMEOUT, f"{device.name}'s draft to go")
    # The daemon's own write of session-handoff.md schedules one more look a settle later.
    time.sleep(settle + 0.25 + random.uniform(0, 0.1))


def _markers(prefix: str) -> Iterator[str]:
    number = 0
    while True:
        number += 1
        yield f"{prefix}-{number:03d}"


def run(context: Context) -> None:
    plan = context.plan
    root = context.folder("publish")
    floor_remote = world.new_remote(root, "floor.git")
    floor_device = make_device(root, floor_remote, "floor", register=False)
    floor = world.PlumbingPublisher(floor_device.repo, floor_device.name)
    floor_times: list[float] = []
    markers = _markers("publish")
    with ExitStack() as stack:
        subjects = []
        for settle in plan.settles:
            remote = world.new_remote(root, f"settle-{settle:g}.git")
            device = make_device(
                root,
                remote,
                f"desk-settle-{world.slug(f'{settle:g}')}",
                settle=settle,
                pull_interval=600.0,
                notify=False,
            )
            daemon = world.start_daemon(device)
            stack.callback(daemon.stop)
            subjects.append(_Subject(settle, device, daemon))
        context.say(f"draft to remote: settle {', '.join(f'{s.settle:g}' for s in subjects)} s")
        for index in range(plan.warmup + plan.samples):
            counted = index >= plan.warmup
            for subject in subjects:
                local, remote_time = publish_sample(subject.device, next(markers))
                quiet(subject.device, subject.settle)
                _local, floor_time = floor_sample(floor, floor_device, next(markers))
                if counted:
                    subject.to_local.append(local)
                    subject.to_remote.append(remote_time)
                    floor_times.append(floor_time)
        for subject in subjects:
            problems = world.problems_in_log(subject.daemon)
            if problems:
                raise world.BenchError(f"{subject.device.name}'s daemon logged: {problems[:3]}")
    report(context, subjects, floor_times)
    context.say("sealing and opening, in process")
    _sealing(context, subjects)


def report(context: Context, subjects: list[_Subject], floor_times: list[float]) -> None:
    floor = Summary.of(floor_times)
    add = context.report.add
    commands = context.probe().publish
    pushed = commands.index("push") if "push" in commands else len(commands)
    add(
        Row(
            "publish",
            "daemon: git commands from the settled draft to the push",
            "one publish",
            value=str(pushed),
            count=1,
            note=f"{describe(commands[:pushed])}; then push, and after it "
            f"{describe(commands[pushed + 1 :]) or 'nothing'}",
        )
    )
    add(
        Row(
            "publish",
            "floor: the same steps with git plumbing alone",
            "no daemon, no settle",
            floor,
            note="hash-object, mktree ×4, commit-tree, update-ref, push; interleaved",
        )
    )
    for subject in subjects:
        condition = f"settle {subject.settle:g} s"
        to_remote = Summary.of(subject.to_remote)
        overhead = Summary.of([value - subject.settle for value in subject.to_remote])
        add(
            Row(
                "publish", "daemon: draft → local sync ref", condition, Summary.of(subject.to_local)
            )
        )
        add(Row("publish", "daemon: draft → remote", condition, to_remote))
        add(Row("publish", "daemon: overhead above settle", condition, overhead))
        share = overhead.median / floor.median
        add(
            Row(
                "publish",
                "overhead ÷ floor (medians)",
                condition,
                value=ratio(share),
                note=f"{seconds(overhead.median)} over {seconds(floor.median)}",
            )
        )
        limit = subject.settle + 0.25
        context.report.target(
            "publish",
            f"draft → remote, settle {subject.settle:g} s: median ≤ settle + 0.25 s "
            f"({seconds(limit)})",
            seconds(to_remote.median),
            to_remote.median <= limit,
        )
        context.report.target(
            "publish",
            f"draft → remote, settle {subject.settle:g} s: overhead ≤ 1.3 × floor",
            ratio(share),
            share <= 1.3,
        )


def _timed(action: Callable[[], object]) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def _largest_draft() -> str:
    """A draft of :data:`LARGEST` bytes: the realistic one over and over."""
    text = world.full_handoff("The largest draft allowed", fact="repeated to fill 1 MiB")
    data = (text * (LARGEST // len(text.encode()) + 1)).encode()[:LARGEST]
    return data.decode("utf-8", "ignore")


def _seal_times(text: str, repetitions: int) -> tuple[dict[str, list[float]], int]:
    """Seconds per call of naming and sealing ``text``, opening it, and opening and
    reading it, in turns; and the size of the sealed file."""
    keyring = Keyring(PERSON_KEY)
    device = "desk"
    created = datetime.now(timezone.utc)
    data = text.encode()
    content = render_stored(Provenance(device, created, "0" * 40, "main"), text)
    location = handoff_location(device, created, PERSON_KEY.digest(device, data))
    sealed = [b""]

    def seal() -> None:
        path = handoff_location(device, created, PERSON_KEY.digest(device, data)).path
        sealed[0] = seal_handoff(PERSON_KEY, path, content)

    def unseal() -> None:
        opened = open_handoff(keyring, location.path, sealed[0])
        if opened.verdict != "verified":
            raise world.BenchError(f"a sealed handoff did not open: {opened.verdict}")

    def read() -> None:
        opened = open_handoff(keyring, location.path, sealed[0])
        parse_stored(opened.content or b"", device=device, name=location.name)

    times: dict[str, list[float]] = {"seal": [], "open": [], "read": []}
    for _ in range(repetitions):
        times["seal"].append(_timed(seal))
        times["open"].append(_timed(unseal))
        times["read"].append(_timed(read))
    return times, len(sealed[0])


def _sealing(context: Context, subjects: list[_Subject]) -> None:
    """What publishing and reading pay for sealed files, one handoff at a time."""
    repetitions = context.plan.seal_repetitions
    first = subjects[0] if subjects else None
    overhead = (
        Summary.of([value - first.settle for value in first.to_remote]).median
        if first is not None and first.to_remote
        else None
    )
    drafts = (
        ("a handoff the plugin asks for (3 KB)", world.full_handoff("Sealing", "a fact"), 1),
        ("the largest draft (1 MiB)", _largest_draft(), 10),
    )
    for label, text, fewer in drafts:
        times, size = _seal_times(text, max(3, repetitions // fewer))
        condition = f"{label}, {size:,} bytes sealed"
        sealing = Summary.of(times["seal"])
        share = (
            f"; {sealing.median / overhead:.2%} of the publish overhead at settle "
            f"{first.settle:g} s"
            if overhead and first is not None and fewer == 1
            else ""
        )
        for measure, values, note in (
            (
                "seal one handoff: name (HMAC-SHA256) and seal (ChaCha20-Poly1305)",
                times["seal"],
                f"in process, on the daemon's functions{share}",
            ),
            ("open one handoff: verify and decrypt", times["open"], "in process"),
            (
                "open and read one handoff: verify, decrypt, clean, parse",
                times["read"],
                "what a device pays per file it has not read before",
            ),
        ):
            context.report.add(
                Row("publish", measure, condition, Summary.of(values), note=note, unit=fine)
            )
