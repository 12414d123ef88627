"""2. Remote to notification: from device A's push to device B's notification and file.

Device A publishes with git plumbing and pushes (its push is the start: the remote ref
file's modification time); device B's ``convosyncd run``, polling every
``pull_interval`` seconds with notifications on a private D-Bus, is timed to the
``time`` the recording server noted the notification and to the modification time of
its ``.convosync/session-handoff.md``.

Where in B's poll period a push lands decides most of the latency, so the pushes are
spread over the period: after an arrival (which follows one of B's polls by a steady
processing time) the next push waits ``(k + u) / n`` of a period, ``u`` uniformly
random in [0, 1), for ``k = 0 .. n-1`` in shuffled order. That is a uniformly random
push time, stratified: the expected median is ``pull_interval / 2`` plus the
processing, without most of the noise that a few dozen random phases would add.
Several independent lanes (a remote, an A and a B each) run side by side to gather
samples of long intervals in less time.
"""

from __future__ import annotations

import json
import random
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from bench import world
from bench.context import Context
from bench.report import Row
from bench.stats import Summary, seconds
from tests.support.dbus_session import env_for_bus
from tests.support.devices import Device, handoff_text, make_device

EXTRA = 30.0
"""Seconds beyond two poll periods after which a handoff that has not arrived is an error."""


@dataclass
class _Lane:
    interval: float
    a: Device
    b: Device
    publisher: world.PlumbingPublisher
    daemon: world.Daemon
    to_file: list[float] = field(default_factory=list)
    to_note: list[float] = field(default_factory=list)
    sent: int = 0
    next_push: float = 0.0
    marker: str | None = None
    pushed_at: float = 0.0
    pushed_mono: float = 0.0
    file_at: float | None = None
    note_at: float | None = None


class _Notifications:
    """New lines of the recording server's file, read as they come."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.offset = 0
        self.seen: list[dict[str, object]] = []

    def poll(self) -> None:
        if self.path is None:
            return
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.splitlines():
            if line.strip():
                self.seen.append(json.loads(line))

    def time_of(self, marker: str) -> float | None:
        for record in self.seen:
            if marker in str(record.get("body", "")):
                return float(str(record["time"]))
        return None


def _push(lane: _Lane, index: int) -> None:
    lane.marker = f"P{lane.interval:g}-{lane.a.name}-{index:03d}"
    lane.publisher.commit(
        handoff_text(f"Benchmark handoff {lane.marker}", fact=f"marker {lane.marker}")
    )
    lane.publisher.push()
    stamp = world.ref_stamp(lane.a.remote)
    if stamp.value != lane.publisher.tip:
        raise world.BenchError(f"{lane.a.name}'s push did not reach its remote")
    lane.pushed_at = stamp.mtime
    lane.pushed_mono = time.monotonic()
    lane.file_at = lane.note_at = None


def _check(lane: _Lane, notes: _Notifications, *, with_notes: bool) -> bool:
    """Whether the handoff in flight has fully arrived at B."""
    assert lane.marker is not None
    if lane.file_at is None:
        path = lane.b.materialized
        try:
            if lane.marker in path.read_text(encoding="utf-8", errors="replace"):
                lane.file_at = world.file_mtime(path)
        except FileNotFoundError:
            pass
    if with_notes and lane.note_at is None:
        lane.note_at = notes.time_of(lane.marker)
    return lane.file_at is not None and (lane.note_at is not None or not with_notes)


def run(context: Context) -> None:
    plan = context.plan
    root = context.folder("arrival")
    env = env_for_bus(context.bus) if context.bus is not None else None
    with_notes = context.bus is not None
    notes = _Notifications(context.records)
    wanted = plan.warmup + plan.arrival_samples
    with ExitStack() as stack:
        lanes: list[_Lane] = []
        for interval in plan.pull_intervals:
            for number in range(plan.arrival_lanes):
                name = world.slug(f"p{interval:g}-{number}")
                remote = world.new_remote(root, f"{name}.git")
                a = make_device(root, remote, f"laptop-{name}", register=False)
                b = make_device(
                    root,
                    remote,
                    f"desk-{name}",
                    pull_interval=interval,
                    notify=with_notes,
                    settle=1.0,
                )
                daemon = world.start_daemon(b, env)
                stack.callback(daemon.stop)
                lane = _Lane(interval, a, b, world.PlumbingPublisher(a.repo, a.name), daemon)
                lane.next_push = time.monotonic() + random.uniform(0, interval)
                lanes.append(lane)
        intervals = ", ".join(f"{interval:g}" for interval in plan.pull_intervals)
        context.say(
            f"remote to notification: pull_interval {intervals} s, "
            f"{plan.arrival_lanes} lane(s) each, {plan.arrival_samples} samples each"
        )
        _drive(lanes, notes, wanted, plan.warmup, with_notes=with_notes)
        for lane in lanes:
            problems = world.problems_in_log(lane.daemon)
            if problems:
                raise world.BenchError(f"{lane.b.name}'s daemon logged: {problems[:3]}")
    _report(context, lanes, with_notes=with_notes)


def _drive(
    lanes: list[_Lane], notes: _Notifications, wanted: int, warmup: int, *, with_notes: bool
) -> None:
    """Push, wait for arrival, wait part of a period; until each interval is done."""
    offsets: dict[float, list[float]] = {}
    for interval in {lane.interval for lane in lanes}:
        counted = wanted - warmup
        spread = [(index + random.random()) / counted * interval for index in range(counted)]
        random.shuffle(spread)
        offsets[interval] = spread

    def done(interval: float) -> bool:
        same = [lane for lane in lanes if lane.interval == interval]
        return sum(max(0, lane.sent - warmup) for lane in same) >= wanted - warmup

    while not all(done(lane.interval) for lane in lanes):
        now = time.monotonic()
        notes.poll()
        for lane in lanes:
            if lane.marker is None:
                if now >= lane.next_push and not done(lane.interval):
                    _push(lane, lane.sent)
                continue
            if _check(lane, notes, with_notes=with_notes):
                assert lane.file_at is not None
                if lane.sent >= warmup:
                    lane.to_file.append(lane.file_at - lane.pushed_at)
                    if lane.note_at is not None:
                        lane.to_note.append(lane.note_at - lane.pushed_at)
                lane.sent += 1
                lane.marker = None
                spread = offsets[lane.interval]
                counted_next = lane.sent >= warmup
                wait = spread.pop() if counted_next and spread else random.uniform(0, lane.interval)
                # Counted from the arrival itself, not from when this loop noticed it.
                arrived = time.monotonic() - max(0.0, time.time() - lane.file_at)
                lane.next_push = arrived + wait
            elif now - lane.pushed_mono > 2 * lane.interval + EXTRA:
                raise world.BenchError(
                    f"{lane.b.name} did not receive {lane.marker} within "
                    f"{2 * lane.interval + EXTRA:g} s:\n{lane.daemon.process.log()[-2000:]}"
                )
        time.sleep(0.005)


def _report(context: Context, lanes: list[_Lane], *, with_notes: bool) -> None:
    for interval in context.plan.pull_intervals:
        same = [lane for lane in lanes if lane.interval == interval]
        to_file = [value for lane in same for value in lane.to_file]
        to_note = [value for lane in same for value in lane.to_note]
        condition = f"pull_interval {interval:g} s"
        expected = (
            f"expected ≈ {seconds(interval / 2)} + processing; stratified phases, "
            f"{len(same)} lane(s)"
        )
        context.report.add(
            Row(
                "arrival",
                "push → B's session-handoff.md",
                condition,
                Summary.of(to_file),
                note=expected,
            )
        )
        limit = interval / 2 + 0.5
        measured = Summary.of(to_file)
        if with_notes and to_note:
            measured = Summary.of(to_note)
            context.report.add(
                Row("arrival", "push → B's notification", condition, measured, note=expected)
            )
        what = "notification" if with_notes else "session-handoff.md"
        context.report.target(
            "arrival",
            f"push → {what}, pull_interval {interval:g} s: median ≤ interval / 2 + 0.5 s "
            f"({seconds(limit)})",
            seconds(measured.median),
            measured.median <= limit,
        )
