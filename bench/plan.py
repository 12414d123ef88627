"""How much to measure: the full run, ``--quick``, and the test suite's ``--smoke``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

SECTIONS = ("publish", "arrival", "idle", "history", "startup", "session", "wake")


@dataclass(frozen=True)
class Plan:
    """Sample counts and sizes for one run."""

    name: str
    samples: int
    settles: tuple[float, ...] = (0.2, 1.0)
    pull_intervals: tuple[float, ...] = (2.0, 10.0)
    arrival_samples: int = 30
    arrival_lanes: int = 3
    """Independent remote + device pairs per pull interval, measured side by side."""
    idle_repos: tuple[int, ...] = (1, 10, 100)
    idle_seconds: float = 60.0
    history_sizes: tuple[int, ...] = (10, 10_000)
    history_per_commit: int = 1
    history_warmup: int = 12
    """Uncounted publishes of each history first, shown apart: a daemon that has just
    started opens every file on the branch once, at most 1,024 per refresh."""
    fresh_device_samples: int = 10
    """Fresh devices started against the longest history, each on a new clone."""
    device_counts: tuple[int, ...] = (2, 50)
    seal_repetitions: int = 2_000
    """Seals and opens of one handoff, in process, per size (the 1 MiB one a tenth)."""
    startup_repos: tuple[int, ...] = (1, 100)
    startup_samples: int = 30
    fresh_samples: int = 30
    """Sessions started per condition of the session-start rows."""
    wake_repos: tuple[int, ...] = (10, 100)
    wake_samples: int = 10
    warmup: int = 2
    """Uncounted samples first: imports and first fetches are paid once per daemon."""

    def with_samples(self, samples: int) -> Plan:
        return dataclasses.replace(
            self,
            samples=samples,
            arrival_samples=samples,
            startup_samples=samples,
            fresh_samples=samples,
            wake_samples=samples,
        )


FULL = Plan(name="full", samples=30)

QUICK = Plan(
    name="quick",
    samples=8,
    arrival_samples=5,
    arrival_lanes=3,
    idle_repos=(100,),
    idle_seconds=10.0,
    history_per_commit=20,
    fresh_device_samples=3,
    seal_repetitions=500,
    startup_samples=3,
    fresh_samples=10,
    wake_repos=(100,),
    wake_samples=5,
    warmup=1,
)

SMOKE = Plan(
    name="smoke",
    samples=3,
    settles=(0.2,),
    pull_intervals=(0.5,),
    arrival_samples=3,
    arrival_lanes=1,
    idle_repos=(2,),
    idle_seconds=2.0,
    history_sizes=(10,),
    history_per_commit=5,
    history_warmup=1,
    fresh_device_samples=1,
    device_counts=(2,),
    seal_repetitions=20,
    startup_repos=(2,),
    startup_samples=2,
    fresh_samples=1,
    wake_repos=(2,),
    wake_samples=2,
    warmup=1,
)

PLANS = {plan.name: plan for plan in (FULL, QUICK, SMOKE)}
