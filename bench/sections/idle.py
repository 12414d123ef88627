"""3. Idle cost: what a daemon with 1, 10 and 100 registered repos costs doing nothing.

Each repo is a clone of its own bare remote (as a person's projects each have their
own), whose sync branch holds two handoffs of another device. The daemon is started,
allowed its first poll round, made to publish one draft and raise its notifications (so
every module it loads lazily is loaded, as in a daemon that has been in use), and then
watched for exactly one ``pull_interval``, which holds exactly one poll round:

* resident memory (``VmRSS``), threads, inotify watches and instances;
* CPU time, the daemon's own apart from the git commands it waited for;
* wakeups, as context switches summed over its threads;
* the poll round: CPU from before the first repo's poll was recorded to after the last's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bench import procfs, world
from bench.context import Context
from bench.probe import describe
from bench.report import Row
from bench.sections import remote_kinds
from bench.stats import megabytes, seconds
from tests.support.dbus_session import env_for_bus

STEP = 0.05
ROUND_MARGIN = 0.5
"""Seconds before the round's first recorded poll that its CPU is counted from: a round
of local repos is recorded once, at its end (``polls.json``), and takes well under this."""


@dataclass(frozen=True)
class _Round:
    cpu_self: float
    cpu_children: float


@dataclass(frozen=True)
class _Idle:
    repos: int
    window: float
    first: procfs.ProcessSample
    last: procfs.ProcessSample
    peak_rss: int
    polled: bool
    round: _Round | None

    def percent(self, seconds_used: float) -> float:
        return 100.0 * seconds_used / self.window


def _find_round(
    series: list[procfs.ProcessSample], began: float, finished: float, began_wall: float
) -> _Round | None:
    """The poll round in ``series``: from the last sample before ``began`` (the
    wall-clock time the first repo's poll was recorded, less :data:`ROUND_MARGIN`) to the
    first after ``finished`` (the last repo's); ``began_wall`` is the wall-clock time of
    ``series[0]``. CPU times count in clock ticks (10 ms), too coarse to time the round
    itself; its CPU is what it costs.
    """
    offset = began_wall - series[0].at
    before = [point for point in series if point.at + offset <= began - ROUND_MARGIN]
    after = [point for point in series if point.at + offset >= finished + 0.2]
    if not before or not after:
        return None
    return _Round(
        cpu_self=after[0].cpu_self - before[-1].cpu_self,
        cpu_children=after[0].cpu_children - before[-1].cpu_children,
    )


def measure(context: Context, repos: int) -> _Idle:
    fleet = context.fleet(repos)
    device = fleet.device
    interval = context.plan.idle_seconds
    device.write_config(repos=fleet.repos, pull_interval=interval)
    env = env_for_bus(context.bus) if context.bus is not None else None
    daemon = world.start_daemon(device, env)
    try:
        fleet.wait_for_round(daemon.started_at, 120 + repos)
        before = world.ref_stamp(fleet.remotes[0])
        world.write_draft(device, f"idle-{repos}")
        world.wait_for_ref_change(fleet.remotes[0], before.value, 60, "the warm-up publish")
        fleet.wait_until_quiet(0.5, 60)
        # One whole round, to learn how long a round lasts; then start the window half
        # way between rounds, so that it holds exactly one round with room either side.
        mark = time.time()
        last_save = fleet.wait_for_round(mark, interval + 60 + repos)
        duration = last_save - fleet.first_save_since(mark)
        time.sleep(max(0.0, last_save + max(0.2, (interval - duration) / 2) - time.time()))
        context.say(f"idle: {repos} repo(s), watching the daemon for {interval:g} s")
        began_wall = time.time()
        first = procfs.sample(daemon.pid)
        series = [first]
        deadline = first.at + interval
        while time.monotonic() < deadline:
            time.sleep(STEP)
            series.append(procfs.sample(daemon.pid, detailed=False))
        last = procfs.sample(daemon.pid)
        series.append(last)
        # Should the round have run past the window, follow it to its end (for its cost
        # only; the averages are over the window).
        give_up = time.monotonic() + interval
        while fleet.polled_since(began_wall) < repos and time.monotonic() < give_up:
            time.sleep(STEP)
            series.append(procfs.sample(daemon.pid, detailed=False))
        time.sleep(0.3)
        series.append(procfs.sample(daemon.pid, detailed=False))
        polled = [moment for moment in fleet.poll_times() if moment >= began_wall]
        found = (
            _find_round(series, min(polled), max(polled), began_wall)
            if len(polled) >= repos
            else None
        )
        problems = world.problems_in_log(daemon)
        if problems:
            raise world.BenchError(f"the idle daemon logged: {problems[:3]}")
    finally:
        daemon.stop()
    return _Idle(
        repos=repos,
        window=last.at - first.at,
        first=first,
        last=last,
        peak_rss=max(point.rss for point in series),
        polled=len(polled) >= repos,
        round=found,
    )


def run(context: Context) -> None:
    plan = context.plan
    results = [measure(context, repos) for repos in plan.idle_repos]
    remote_kinds.run(context)
    commands = context.probe().idle_poll
    report = context.report
    for idle in results:
        condition = f"{idle.repos} repo(s)"
        window = f"one {idle.window:.0f} s window, pull_interval {plan.idle_seconds:g} s"
        own = idle.last.cpu_self - idle.first.cpu_self
        children = idle.last.cpu_children - idle.first.cpu_children
        wakeups = procfs.switches_between(idle.first, idle.last) / idle.window
        watches = idle.last.inotify_watches
        rows = [
            (
                "resident memory (VmRSS)",
                megabytes(idle.last.rss),
                f"peak {megabytes(idle.peak_rss)}; {idle.last.threads} threads",
            ),
            ("CPU, the daemon itself", f"{idle.percent(own):.3f} %", f"{seconds(own)}; {window}"),
            ("CPU, its git commands", f"{idle.percent(children):.3f} %", f"{seconds(children)}"),
            (
                "CPU, total (% of one core)",
                f"{idle.percent(own + children):.3f} %",
                f"{seconds(own + children)}",
            ),
            ("wakeups (context switches)", f"{wakeups:.1f} /s", "summed over threads"),
            (
                "inotify watches",
                str(watches),
                f"{watches / idle.repos:.2f} per repo; {idle.last.inotify_instances} instance(s)",
            ),
        ]
        for measure_name, value, note in rows:
            report.add(Row("idle", measure_name, condition, value=value, count=1, note=note))
        if idle.round is not None:
            spent = idle.round.cpu_self + idle.round.cpu_children
            report.add(
                Row(
                    "idle",
                    "one poll round: CPU (own + git)",
                    condition,
                    value=seconds(spent),
                    count=1,
                    note=(
                        f"own {seconds(idle.round.cpu_self)}, git "
                        f"{seconds(idle.round.cpu_children)}"
                    ),
                )
            )
        elif idle.polled:
            tick = seconds(1 / procfs.TICKS)
            report.add(
                Row(
                    "idle",
                    "one poll round: CPU (own + git)",
                    condition,
                    value=f"< {tick}",
                    count=1,
                    note=f"below the {tick} clock tick of /proc's CPU times",
                )
            )
        else:
            report.notes.append(f"idle, {idle.repos} repo(s): no poll round seen in the window")
    report.add(
        Row(
            "idle",
            "git commands per idle poll of one repo",
            "nothing changed",
            value=str(len(commands)),
            count=1,
            note=describe(commands) or "none: the local remote's ref file is read",
        )
    )
    largest = max(results, key=lambda idle: idle.repos)
    total = largest.last.cpu_total - largest.first.cpu_total
    own = largest.last.cpu_self - largest.first.cpu_self
    big = f"{largest.repos} repos"
    report.target(
        "idle",
        f"idle, {big}: ≤ 60 MB resident",
        megabytes(largest.last.rss),
        largest.last.rss <= 60e6,
    )
    report.target(
        "idle",
        f"idle, {big}: ≤ 0.1 % of a core (own + git)",
        f"{largest.percent(total):.3f} % (own {largest.percent(own):.3f} %)",
        largest.percent(total) <= 0.1,
    )
    report.target(
        "idle",
        f"idle, {big}: ≤ 0.1 % of a core (the daemon's own CPU only)",
        f"{largest.percent(own):.3f} %",
        largest.percent(own) <= 0.1,
    )
    per_repo = largest.last.inotify_watches / largest.repos
    report.target(
        "idle",
        f"idle, {big}: ≤ 2 inotify watches per repo",
        f"{per_repo:.2f}",
        per_repo <= 2,
    )
    report.target(
        "idle",
        "a poll round does not fetch when nothing changed",
        describe(commands) or "no git command",
        "fetch" not in commands,
    )
