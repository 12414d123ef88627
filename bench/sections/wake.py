"""7. Waking up: from the signal that the machine woke (or the network came back) to
every repo checked.

A device with many repos (each its own remote on the local disk, ``pull_interval`` a
minute, so no scheduled round interferes) runs its daemon against a private system
bus (:mod:`tests.support.system_bus`), on which the benchmark owns logind's and
NetworkManager's names and sends what they send after a resume: ``PrepareForSleep
(false)``, and ``StateChanged`` from disconnected (20) to connected (70). Timed from the
signal to the moment the last repo's poll was recorded (its state file or the daemon's
``polls.json``).

The clock check (for machines without these signals) cannot be driven here, since a
test machine cannot be put to sleep: it looks every ``CLOCK_PERIOD`` seconds, so it
notices a wake-up that much later at most, then starts the same round.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable

from bench import world
from bench.context import Context
from bench.report import Row
from bench.stats import Summary, seconds
from convosyncd.wake import CLOCK_PERIOD
from tests.support import system_bus
from tests.support.dbus_session import env_for_bus

TARGET = 5.0


def _network_back(address: str) -> None:
    system_bus.network_state(address, 20)
    system_bus.network_state(address, 70)


SIGNALS: tuple[tuple[str, Callable[[str], None]], ...] = (
    ("logind PrepareForSleep(false)", system_bus.woke_up),
    ("NetworkManager StateChanged 20 → 70", _network_back),
)


def run(context: Context) -> None:
    if shutil.which("dbus-daemon") is None:
        context.report.notes.append(
            "waking up: dbus-daemon is missing, so it was not measured (Debian's dbus package)"
        )
        return
    plan = context.plan
    folder = system_bus.socket_folder()
    try:
        with system_bus.system_bus(folder, context.folder("wake")) as address:
            for count in plan.wake_repos:
                _measure(context, address, count)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    context.report.notes.append(
        f"waking up without those signals: the clock check looks every {CLOCK_PERIOD:g} s, "
        "then the same round runs"
    )


def _measure(context: Context, address: str, count: int) -> None:
    plan = context.plan
    fleet = context.fleet(count)
    fleet.device.write_config(repos=fleet.repos, pull_interval=60.0)
    env = env_for_bus(context.bus) if context.bus is not None else {}
    env[system_bus.ENV] = address
    context.say(f"waking up: {count} repo(s), {plan.wake_samples} of each signal")
    daemon = world.start_daemon(fleet.device, env)
    taken: dict[str, list[float]] = {label: [] for label, _ in SIGNALS}
    stamp = context.folder("wake") / "sent"
    try:
        daemon.process.wait_for_log("listening for sleep and network changes", timeout=30)
        fleet.wait_for_round(daemon.started_at, 120 + count)
        for index in range(plan.warmup + plan.wake_samples):
            for label, send in SIGNALS:
                # Poll times are recorded to the second: start in a fresh one.
                time.sleep(1.05)
                # The moment of sending as the file system tells time (its clock is
                # coarser than time.time()), like the poll times it is compared with.
                stamp.write_bytes(b"")
                sent = world.file_mtime(stamp)
                send(address)
                last = fleet.wait_for_round(sent, 60 + count)
                if index >= plan.warmup:
                    taken[label].append(last - sent)
        problems = world.problems_in_log(daemon)
        if problems:
            raise world.BenchError(f"the daemon logged: {problems[:3]}")
    finally:
        daemon.stop()
    for label, values in taken.items():
        summary = Summary.of(values)
        condition = f"{count} repos, {label}"
        context.report.add(Row("wake", "wake-up signal → every repo checked", condition, summary))
        context.report.target(
            "wake",
            f"wake → every repo checked ≤ {seconds(TARGET)} ({condition}), slowest",
            seconds(summary.high),
            summary.high <= TARGET,
        )
