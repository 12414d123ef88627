"""5. Start-up: from ``convosyncd run`` to ready, and to its first poll round done.

Ready is the log line the daemon writes once its watches and timers are in place
(``convosyncd running as device ...``); from then on a draft is noticed. The first
poll round is done when every repo's state has been saved since the start. Each
sample is a restart of an installed daemon (its repos already synced once, its
modules already compiled), which is what a login or a service restart costs.
"""

from __future__ import annotations

from bench import world
from bench.context import Context
from bench.report import Row
from bench.stats import Summary
from tests.support.dbus_session import env_for_bus


def run(context: Context) -> None:
    plan = context.plan
    env = env_for_bus(context.bus) if context.bus is not None else None
    for repos in plan.startup_repos:
        fleet = context.fleet(repos)
        fleet.device.write_config(repos=fleet.repos, pull_interval=60.0)
        ready: list[float] = []
        polled: list[float] = []
        context.say(f"start-up: {repos} repo(s), {plan.startup_samples} starts")
        for index in range(plan.warmup + plan.startup_samples):
            daemon = world.start_daemon(fleet.device, env)
            try:
                last = fleet.wait_for_round(daemon.started_at, 120 + repos)
                problems = world.problems_in_log(daemon)
                if problems:
                    raise world.BenchError(f"the daemon logged: {problems[:3]}")
            finally:
                daemon.stop()
            if index >= plan.warmup:
                ready.append(daemon.ready_after)
                polled.append(last - daemon.started_at)
        condition = f"{repos} repo(s)"
        context.report.add(Row("startup", "`convosyncd run` → ready", condition, Summary.of(ready)))
        context.report.add(
            Row(
                "startup",
                "`convosyncd run` → first poll round done",
                condition,
                Summary.of(polled),
                note="every repo's remote asked once",
            )
        )
