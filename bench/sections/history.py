"""4. History: publishing must not slow down as handoffs pile up; nor many devices.

Two daemons publish into sync branches seeded with 10 and with 10,000 earlier handoffs
of their own device (all in the one folder the publish rewrites, the worst case); two
more into branches holding the handoffs of 2 and of 50 devices. Their samples take
turns. Timed from the draft's write to the local sync ref and to the remote, less the
``settle`` every publish waits first, and, for the device counts, from the local ref
to the rewritten ``.convosync/session-handoff.md`` (which lists every device's newest).

Beside each history size, its floor: the same publish done with git plumbing alone
(:class:`bench.world.PlumbingPublisher`) into a copy of the same seeded branch, in the
same turns, so that what the layout costs git can be told from what the daemon adds.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, field

from bench import world
from bench.context import Context
from bench.report import Row
from bench.sections.publish import floor_sample, quiet
from bench.stats import Summary, ratio, seconds
from tests.support.devices import Device, make_device

SETTLE = 0.2
TIMEOUT = 60.0


@dataclass
class _Subject:
    label: str
    kind: str
    size: int
    device: Device
    daemon: world.Daemon
    to_local: list[float] = field(default_factory=list)
    to_remote: list[float] = field(default_factory=list)
    rewrite: list[float] = field(default_factory=list)
    floor: world.PlumbingPublisher | None = None
    floor_device: Device | None = None
    floor_times: list[float] = field(default_factory=list)


def _sample(subject: _Subject, marker: str) -> tuple[float, float, float]:
    device = subject.device
    local_before = world.ref_stamp(device.repo / ".git")
    remote_before = world.ref_stamp(device.remote)
    written = world.write_draft(device, marker)
    local = world.wait_for_ref_change(
        device.repo / ".git", local_before.value, TIMEOUT, f"{device.name}'s publish"
    )
    remote = world.wait_for_ref_change(
        device.remote, remote_before.value, TIMEOUT, f"{device.name}'s push"
    )
    rewritten = world.wait_for_text(
        device.materialized, marker, TIMEOUT, f"{device.name}'s session-handoff.md"
    )
    return local.mtime - written - SETTLE, remote.mtime - written - SETTLE, rewritten - local.mtime


def _subject(context: Context, kind: str, size: int, stack: ExitStack) -> _Subject:
    root = context.folder("history")
    name = f"{kind}-{size}"
    remote = world.new_remote(root, f"{name}.git")
    device_name = f"desk-{name}"
    if kind == "handoffs":
        seeded = {device_name: size, "laptop": 1}
        label = f"{size:,} earlier handoffs"
    else:
        seeded = {f"device-{number:02d}": 1 for number in range(1, size)}
        seeded[device_name] = 1
        label = f"{size} devices"
    per_commit = context.plan.history_per_commit if size > 100 else 1
    started = time.monotonic()
    world.seed_history(remote, seeded, per_commit=per_commit)
    context.say(f"history: seeded {label} in {time.monotonic() - started:.1f} s")
    floor: world.PlumbingPublisher | None = None
    floor_device: Device | None = None
    if kind == "handoffs":
        floor_remote = world.copy_remote(remote, root / f"floor-{name}.git")
        floor_device = make_device(root, floor_remote, f"floor-{name}", register=False)
        floor = world.PlumbingPublisher(floor_device.repo, device_name)
        floor.adopt_remote_branch()
    device = make_device(
        root, remote, device_name, settle=SETTLE, pull_interval=600.0, notify=False
    )
    daemon = world.start_daemon(device)
    stack.callback(daemon.stop)
    world.wait_for(
        lambda: world.ref_stamp(device.repo / ".git").value is not None,
        TIMEOUT,
        f"{device.name} to take the seeded branch in",
    )
    return _Subject(label, kind, size, device, daemon, floor=floor, floor_device=floor_device)


def run(context: Context) -> None:
    plan = context.plan
    with ExitStack() as stack:
        subjects = [_subject(context, "handoffs", size, stack) for size in plan.history_sizes]
        subjects += [_subject(context, "devices", size, stack) for size in plan.device_counts]
        context.say("history: publishing in turns")
        number = 0
        for index in range(plan.warmup + plan.samples):
            for subject in subjects:
                number += 1
                local, remote, rewrite = _sample(subject, f"history-{number:04d}")
                quiet(subject.device, SETTLE)
                floor_time = None
                if subject.floor is not None and subject.floor_device is not None:
                    floor_time = floor_sample(subject.floor, subject.floor_device, f"f-{number}")
                if index >= plan.warmup:
                    subject.to_local.append(local)
                    subject.to_remote.append(remote)
                    subject.rewrite.append(rewrite)
                    if floor_time is not None:
                        subject.floor_times.append(floor_time)
        for subject in subjects:
            problems = world.problems_in_log(subject.daemon)
            if problems:
                raise world.BenchError(f"{subject.device.name}'s daemon logged: {problems[:3]}")
    _report(context, subjects)


def _report(context: Context, subjects: list[_Subject]) -> None:
    add = context.report.add
    histories = [subject for subject in subjects if subject.kind == "handoffs"]
    for subject in histories:
        add(
            Row(
                "history",
                "publish: draft → local sync ref, less settle",
                subject.label,
                Summary.of(subject.to_local),
                note=f"settle {SETTLE:g} s",
            )
        )
        add(
            Row(
                "history",
                "publish: draft → remote, less settle",
                subject.label,
                Summary.of(subject.to_remote),
            )
        )
        if subject.floor_times:
            add(
                Row(
                    "history",
                    "floor: the same publish with git plumbing alone, to the remote",
                    subject.label,
                    Summary.of(subject.floor_times),
                    note="a copy of the same branch; interleaved",
                )
            )
    for subject in subjects:
        if subject.kind == "devices":
            add(
                Row(
                    "history",
                    "session-handoff.md rewritten after the local ref moved",
                    subject.label,
                    Summary.of(subject.rewrite),
                    note="the file lists each device's newest handoff",
                )
            )
    if len(histories) >= 2:
        small, large = histories[0], histories[-1]
        for what, small_values, large_values in (
            ("local sync ref", small.to_local, large.to_local),
            ("remote", small.to_remote, large.to_remote),
        ):
            large_median = Summary.of(large_values).median
            small_median = Summary.of(small_values).median
            share = large_median / small_median
            felt = (large_median + SETTLE) / (small_median + SETTLE)
            add(
                Row(
                    "history",
                    f"publish to the {what}: {large.size:,} ÷ {small.size:,} handoffs",
                    "medians, less settle",
                    value=ratio(share),
                    note=f"{seconds(large_median)} over {seconds(small_median)}",
                )
            )
            add(
                Row(
                    "history",
                    f"publish to the {what}: {large.size:,} ÷ {small.size:,} handoffs",
                    f"medians, with the {SETTLE:g} s settle",
                    value=ratio(felt),
                    note="the latency a person sees",
                )
            )
            if what == "remote" and small.floor_times and large.floor_times:
                floor_large = Summary.of(large.floor_times).median
                floor_small = Summary.of(small.floor_times).median
                add(
                    Row(
                        "history",
                        f"floor to the remote: {large.size:,} ÷ {small.size:,} handoffs",
                        "medians, git plumbing alone",
                        value=ratio(floor_large / floor_small),
                        note=f"{seconds(floor_large)} over {seconds(floor_small)}: "
                        "what the one-folder layout costs git itself",
                    )
                )
                for subject in (small, large):
                    daemon = Summary.of(subject.to_remote).median
                    floor = Summary.of(subject.floor_times).median
                    add(
                        Row(
                            "history",
                            "daemon ÷ floor, to the remote (medians, less settle)",
                            subject.label,
                            value=ratio(daemon / floor),
                            note=f"{seconds(daemon)} over {seconds(floor)}",
                        )
                    )
            context.report.target(
                "history",
                f"publish to the {what} with {large.size:,} handoffs ≤ 1.2 × with "
                f"{small.size:,} (work above settle)",
                ratio(share),
                share <= 1.2,
            )
