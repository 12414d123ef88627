"""What every section of a run shares: the plan, the folder, the bus, the report."""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import world
from bench.plan import Plan
from bench.probe import Probe, probe
from bench.report import Report
from tests.support.dbus_session import DBUS_DAEMON, NOTIFY_SEND, env_for_bus
from tests.support.devices import make_device


@dataclass
class Context:
    """One benchmark run."""

    plan: Plan
    root: Path
    report: Report
    bus: str | None = None
    records: Path | None = None
    fleets: dict[int, world.Fleet] = field(default_factory=dict)
    _template: Path | None = None
    _probe: Probe | None = None
    _began: float = field(default_factory=time.monotonic)

    def say(self, message: str) -> None:
        """Progress on standard error (the table goes to standard output)."""
        print(f"[{time.monotonic() - self._began:7.1f} s] {message}", file=sys.stderr, flush=True)

    @property
    def can_notify(self) -> bool:
        """A private bus can be started, and the daemon has a route to notify through it."""
        return shutil.which(DBUS_DAEMON) is not None and shutil.which(NOTIFY_SEND) is not None

    def folder(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def template(self) -> Path:
        """A bare remote whose sync branch holds two handoffs of another device."""
        if self._template is None:
            remote = world.new_remote(self.folder("templates"), "fleet.git")
            world.seed_history(remote, {"laptop": 2})
            self._template = remote
        return self._template

    def probe(self) -> Probe:
        """The git commands of the daemon's idle poll and publish, counted once per run."""
        if self._probe is None:
            self._probe = probe(self.folder("probe"), self.template())
        return self._probe

    def warm_up(self) -> None:
        """Run and use one daemon first: compiling modules is paid once, here, not timed."""
        root = self.folder("warm-up")
        remote = world.copy_remote(self.template(), root / "warm.git")
        device = make_device(root, remote, "warm", notify=self.bus is not None)
        env = env_for_bus(self.bus) if self.bus is not None else None
        daemon = world.start_daemon(device, env)
        try:
            before = world.ref_stamp(remote)
            world.write_draft(device, "warm-up")
            world.wait_for_ref_change(remote, before.value, 60, "the warm-up publish")
        finally:
            daemon.stop()

    def fleet(self, count: int) -> world.Fleet:
        """A device with ``count`` registered repos, built once per run."""
        if count not in self.fleets:
            self.say(f"building a device with {count} repo(s), each with its own remote")
            self.fleets[count] = world.make_fleet(
                self.folder(f"fleet-{count}"),
                count,
                template=self.template(),
                name=f"desk{count}",
                settle=1.0,
                pull_interval=60.0,
                notify=self.bus is not None,
            )
        return self.fleets[count]
