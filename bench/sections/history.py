"""4. History: publishing must not slow down as handoffs pile up; nor many devices.

Two daemons publish into sync branches seeded with 10 and with 10,000 earlier handoffs
of their own device, written at a heavy user's pace (20 a day, so 10,000 span about 16
months of month folders), the current month holding a whole month's handoffs (the
folder a publish rewrites at its largest); two more into branches holding the handoffs
of 2 and of 50 devices. Their samples take turns. Timed from the draft's write to the
local sync ref and to the remote, less the ``settle`` every publish waits first, and,
for the device counts, from the local ref to the rewritten
``.convosync/session-handoff.md`` (which lists every device's newest).

Beside each history size, its floor: the same publish done with git plumbing alone
(:class:`bench.world.PlumbingPublisher`) into a copy of the same seeded branch, in the
same turns, so that what the layout costs git can be told from what the daemon adds.

The first publishes after each daemon started are not counted with the others but shown
apart: a daemon that has just started opens every file on the branch once.

Last, a fresh device (a new clone, a daemon never run) against the longest history,
written by two devices taking turns: its daemon, from ``convosyncd run`` to
``session-handoff.md`` written, and its first poll's stages run in this process.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from bench import world
from bench.context import Context
from bench.report import Row
from bench.sections.publish import floor_sample, quiet
from bench.stats import Summary, ratio, seconds
from convosyncd import config as configs
from convosyncd.notify import Notifier
from convosyncd.sync import RepoSync
from tests.support.devices import Device, make_device

SETTLE = 0.2
TIMEOUT = 60.0
MONTH = round(timedelta(days=30) / world.HEAVY_PACE)
"""Handoffs in a whole month at the heavy pace (600)."""
TARGET = 1.1


@dataclass
class _Subject:
    label: str
    kind: str
    size: int
    device: Device
    daemon: world.Daemon
    note: str = ""
    to_local: list[float] = field(default_factory=list)
    to_remote: list[float] = field(default_factory=list)
    rewrite: list[float] = field(default_factory=list)
    after_start: list[float] = field(default_factory=list)
    floor: world.PlumbingPublisher | None = None
    floor_device: Device | None = None
    floor_local: list[float] = field(default_factory=list)
    floor_remote: list[float] = field(default_factory=list)


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


def _shape(remote: Path, device: str) -> str:
    """``17 month folders, 600 files in the current one`` for ``device``'s folder."""
    months = world.git(remote, "ls-tree", "--name-only", f"{world.REF}:handoffs/{device}")
    names = sorted(months.split())
    if not names:
        return ""
    current = world.git(
        remote, "ls-tree", "--name-only", f"{world.REF}:handoffs/{device}/{names[-1]}"
    )
    return f"{len(names)} month folder(s), {len(current.split()):,} files in the current one"


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
    world.seed_history(remote, seeded, per_commit=per_commit, full_month=MONTH)
    shape = _shape(remote, device_name)
    context.say(f"history: seeded {label} in {time.monotonic() - started:.1f} s ({shape})")
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
    return _Subject(
        label, kind, size, device, daemon, shape, floor=floor, floor_device=floor_device
    )


def run(context: Context) -> None:
    plan = context.plan
    with ExitStack() as stack:
        subjects = [_subject(context, "handoffs", size, stack) for size in plan.history_sizes]
        subjects += [_subject(context, "devices", size, stack) for size in plan.device_counts]
        context.say("history: publishing in turns")
        number = 0
        for index in range(plan.history_warmup + plan.samples):
            for subject in subjects:
                number += 1
                local, remote, rewrite = _sample(subject, f"history-{number:04d}")
                quiet(subject.device, SETTLE)
                floor_times = None
                if subject.floor is not None and subject.floor_device is not None:
                    floor_times = floor_sample(subject.floor, subject.floor_device, f"f-{number}")
                if index < plan.history_warmup:
                    subject.after_start.append(remote)
                    continue
                subject.to_local.append(local)
                subject.to_remote.append(remote)
                subject.rewrite.append(rewrite)
                if floor_times is not None:
                    subject.floor_local.append(floor_times[0])
                    subject.floor_remote.append(floor_times[1])
        for subject in subjects:
            problems = world.problems_in_log(subject.daemon)
            if problems:
                raise world.BenchError(f"{subject.device.name}'s daemon logged: {problems[:3]}")
    _report(context, subjects)
    _fresh_device(context, max(plan.history_sizes))


def _report(context: Context, subjects: list[_Subject]) -> None:
    add = context.report.add
    warmup = context.plan.history_warmup
    histories = [subject for subject in subjects if subject.kind == "handoffs"]
    for subject in histories:
        add(
            Row(
                "history",
                "publish: draft → local sync ref, less settle",
                subject.label,
                Summary.of(subject.to_local),
                note=f"settle {SETTLE:g} s; {subject.note}",
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
        if subject.floor_remote:
            add(
                Row(
                    "history",
                    "floor: the same publish with git plumbing alone, to the local sync ref",
                    subject.label,
                    Summary.of(subject.floor_local),
                    note="hash-object, mktree ×4, commit-tree, update-ref; a copy of the "
                    "same branch; interleaved",
                )
            )
            add(
                Row(
                    "history",
                    "floor: the same publish with git plumbing alone, to the remote",
                    subject.label,
                    Summary.of(subject.floor_remote),
                    note="then push",
                )
            )
        add(
            Row(
                "history",
                f"right after the daemon started: its first {warmup} publish(es), "
                "draft → remote, less settle",
                subject.label,
                Summary.of(subject.after_start),
                note="not counted above: a daemon that has just started opens every file "
                "on the branch once, at most 1,024 at each refresh after a push",
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
        _ratios(context, histories[0], histories[-1])


def _ratios(context: Context, small: _Subject, large: _Subject) -> None:
    add = context.report.add
    sizes = f"{large.size:,} ÷ {small.size:,} handoffs"
    for what, small_values, large_values, small_floor, large_floor in (
        ("local sync ref", small.to_local, large.to_local, small.floor_local, large.floor_local),
        ("remote", small.to_remote, large.to_remote, small.floor_remote, large.floor_remote),
    ):
        large_median = Summary.of(large_values).median
        small_median = Summary.of(small_values).median
        share = large_median / small_median
        felt = (large_median + SETTLE) / (small_median + SETTLE)
        add(
            Row(
                "history",
                f"publish to the {what}: {sizes}",
                "medians, less settle",
                value=ratio(share),
                note=f"{seconds(large_median)} over {seconds(small_median)}",
            )
        )
        add(
            Row(
                "history",
                f"publish to the {what}: {sizes}",
                f"medians, with the {SETTLE:g} s settle",
                value=ratio(felt),
                note="the latency a person sees",
            )
        )
        floor_note = ""
        if small_floor and large_floor:
            floor_large = Summary.of(large_floor).median
            floor_small = Summary.of(small_floor).median
            floor_share = floor_large / floor_small
            floor_note = f" (git alone: {ratio(floor_share)})"
            add(
                Row(
                    "history",
                    f"floor to the {what}: {sizes}",
                    "medians, git plumbing alone",
                    value=ratio(floor_share),
                    note=f"{seconds(floor_large)} over {seconds(floor_small)}: "
                    "what the month layout costs git itself",
                )
            )
            for subject, daemon, floor in (
                (small, small_median, floor_small),
                (large, large_median, floor_large),
            ):
                add(
                    Row(
                        "history",
                        f"daemon ÷ floor, to the {what} (medians, less settle)",
                        subject.label,
                        value=ratio(daemon / floor),
                        note=f"{seconds(daemon)} over {seconds(floor)}",
                    )
                )
        context.report.target(
            "history",
            f"publish to the {what} with {large.size:,} handoffs ≤ {TARGET:g} × with "
            f"{small.size:,} (work above settle)",
            f"{share:.3f}×{floor_note}",
            share <= TARGET,
        )


# -- a fresh device against a long history ----------------------------------------


def _fresh_device(context: Context, size: int) -> None:
    """A new device's first poll of ``size`` handoffs written by two devices in turns."""
    plan = context.plan
    root = context.folder("history-fresh")
    remote = world.new_remote(root, "two-devices.git")
    half = size // 2
    world.seed_history(
        remote,
        {"desk": size - half, "laptop": half},
        per_commit=plan.history_per_commit if size > 100 else 1,
        full_month=MONTH,
    )
    condition = f"{size:,} handoffs of 2 devices"
    context.say(f"history: fresh devices against {condition}")
    ready: list[float] = []
    written: list[float] = []
    merge: list[float] = []
    refresh: list[float] = []
    for index in range(plan.fresh_device_samples):
        device = make_device(
            root, remote, f"fresh-{index:02d}", settle=SETTLE, pull_interval=600.0, notify=False
        )
        daemon = world.start_daemon(device)
        try:
            world.wait_for(
                device.materialized.exists, TIMEOUT, f"{device.name}'s session-handoff.md"
            )
            problems = world.problems_in_log(daemon)
        finally:
            daemon.stop()
        if problems:
            raise world.BenchError(f"{device.name}'s daemon logged: {problems[:3]}")
        text = device.materialized.read_text(encoding="utf-8")
        if "desk" not in text or "laptop" not in text:
            raise world.BenchError(f"{device.name}'s session-handoff.md lacks a device")
        ready.append(daemon.ready_after)
        written.append(world.file_mtime(device.materialized) - daemon.started_at)
        stages = _first_poll_in_process(root, remote, f"fresh-inproc-{index:02d}")
        merge.append(stages[0])
        refresh.append(stages[1])
    add = context.report.add
    add(
        Row(
            "history",
            "fresh device: `convosyncd run` → ready",
            condition,
            Summary.of(ready),
            note="a new clone, the daemon's first start",
        )
    )
    add(
        Row(
            "history",
            "fresh device: `convosyncd run` → session-handoff.md written",
            condition,
            Summary.of(written),
            note="its first poll: fetch, take the branch in, read each device's newest",
        )
    )
    add(
        Row(
            "history",
            "fresh device's first poll, in process: merge (take the branch in)",
            condition,
            Summary.of(merge),
            note="RepoSync's own stages, on a new clone",
        )
    )
    add(
        Row(
            "history",
            "fresh device's first poll, in process: refresh",
            condition,
            Summary.of(refresh),
            note="session-handoff.md, arrivals (≤ 256 files), counting what is not the "
            "person's (≤ 1,024 files)",
        )
    )


def _first_poll_in_process(root: Path, remote: Path, name: str) -> tuple[float, float]:
    """Seconds of the merge and of the refresh of a new device's first cycle (its
    warnings, that a budget bit, are the daemon's to log: kept off the progress)."""
    logging.disable(logging.WARNING)
    try:
        return _first_poll_stages(root, remote, name)
    finally:
        logging.disable(logging.NOTSET)


def _first_poll_stages(root: Path, remote: Path, name: str) -> tuple[float, float]:
    device = make_device(root, remote, name, notify=False)
    config = configs.load(device.config)
    sync = RepoSync(config, config.repos[0], Notifier(enabled=False, timeout=1.0))
    sync.ensure_layout()
    with sync.synced.net:
        tip = sync.poller.poll()
    if tip is None:
        raise world.BenchError(f"{name}: the remote has no sync branch")
    began = time.perf_counter()
    with sync.synced.local():
        sync.merger.integrate(tip)
    merged = time.perf_counter()
    sync.refresh()
    done = time.perf_counter()
    if not device.materialized.exists():
        raise world.BenchError(f"{name}: the first refresh wrote no session-handoff.md")
    return merged - began, done - merged
