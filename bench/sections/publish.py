"""1. Draft to remote: from the draft's write to the handoff on the remote's sync branch.

One daemon per ``settle`` value, each with its own device and bare remote, and beside
them the floor: a clone that publishes the same draft with git plumbing alone (see
:class:`bench.world.PlumbingPublisher`). Samples of the daemons and of the floor take
turns, so whatever the machine does meanwhile falls on both. The daemons' polls are
held off (``pull_interval`` of ten minutes) so that what is timed is the publish path.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field

from bench import world
from bench.context import Context
from bench.probe import describe
from bench.report import Row
from bench.stats import Summary, ratio, seconds
from tests.support.devices import Device, make_device

TIMEOUT = 30.0


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


def floor_sample(publisher: world.PlumbingPublisher, device: Device, marker: str) -> float:
    """The same draft published by :class:`world.PlumbingPublisher`; seconds to the remote."""
    remote_before = world.ref_stamp(device.remote)
    written = world.write_draft(device, marker)
    publisher.publish_draft(device.draft)
    remote = world.ref_stamp(device.remote)
    if remote.value == remote_before.value:
        raise world.BenchError("the floor's push did not move the remote")
    return remote.mtime - written


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
                floor_time = floor_sample(floor, floor_device, next(markers))
                if counted:
                    subject.to_local.append(local)
                    subject.to_remote.append(remote_time)
                    floor_times.append(floor_time)
        for subject in subjects:
            problems = world.problems_in_log(subject.daemon)
            if problems:
                raise world.BenchError(f"{subject.device.name}'s daemon logged: {problems[:3]}")
    report(context, subjects, floor_times)


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
            note="hash-object, mktree ×3, commit-tree, update-ref, push; interleaved",
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
            f"draft → remote, settle {subject.settle:g} s: overhead ≤ 1.5 × floor",
            ratio(share),
            share <= 1.5,
        )
