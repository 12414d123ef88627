"""The benchmark's output: one markdown table of measurements, one of targets, the machine."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from bench.stats import Summary, seconds

SECTION_TITLES = {
    "publish": "1. Draft to remote",
    "arrival": "2. Remote to notification",
    "idle": "3. Idle cost",
    "history": "4. History",
    "startup": "5. Start-up",
    "session": "6. Session start",
    "wake": "7. Waking up",
}

DASH = "–"


@dataclass(frozen=True)
class Row:
    """One line of the table: a distribution of samples, or a single value."""

    section: str
    measure: str
    condition: str
    summary: Summary | None = None
    value: str | None = None
    count: int | None = None
    note: str = ""
    unit: Callable[[float], str] = seconds

    def cells(self) -> list[str]:
        title = SECTION_TITLES[self.section]
        if self.summary is not None:
            s = self.summary
            return [
                title,
                self.measure,
                self.condition,
                str(s.count),
                self.unit(s.median),
                self.unit(s.p95),
                f"{self.unit(s.q1)} {DASH} {self.unit(s.q3)}",
                f"{self.unit(s.low)} {DASH} {self.unit(s.high)}",
                self.note,
            ]
        return [
            title,
            self.measure,
            self.condition,
            str(self.count) if self.count is not None else DASH,
            self.value or DASH,
            DASH,
            DASH,
            DASH,
            self.note,
        ]


@dataclass(frozen=True)
class Target:
    """A goal from the issue, what was measured against it, and whether it holds."""

    section: str
    goal: str
    measured: str
    holds: bool


@dataclass
class Report:
    """Everything one run measured."""

    plan: str
    rows: list[Row] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)

    def target(self, section: str, goal: str, measured: str, holds: bool) -> None:
        self.targets.append(Target(section, goal, measured, holds))

    def markdown(self, machine: str) -> str:
        order = list(SECTION_TITLES)
        rows = sorted(self.rows, key=lambda row: order.index(row.section))
        lines = [
            f"Plan `{self.plan}`, {machine}",
            "",
            _table(
                ["section", "measure", "condition", "n", "median", "p95", "IQR", "min–max", "note"],
                [row.cells() for row in rows],
            ),
        ]
        if self.targets:
            targets = sorted(self.targets, key=lambda target: order.index(target.section))
            lines += [
                "",
                _table(
                    ["target", "measured", "holds"],
                    [[t.goal, t.measured, "yes" if t.holds else "**no**"] for t in targets],
                ),
            ]
        if self.notes:
            lines += ["", *(f"* {note}" for note in self.notes)]
        return "\n".join(lines) + "\n"


def _table(header: list[str], body: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(row) for row in body)])


def _first(path: str, key: str) -> str:
    try:
        for text in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
            name, _, value = text.partition(":")
            if name.strip() == key:
                return value.strip()
    except OSError:
        pass
    return "unknown"


def machine() -> str:
    """The machine in one line: CPU, cores, memory, kernel, Python, git, load, date."""
    memory_kb = _first("/proc/meminfo", "MemTotal").split()[0]
    try:
        memory = f"{int(memory_kb) / 1024 / 1024:.0f} GiB RAM"
    except ValueError:
        memory = "unknown RAM"
    try:
        git_version = subprocess.run(
            ["git", "--version"], capture_output=True, text=True, check=False, timeout=10
        ).stdout.strip()
    except OSError:
        git_version = "git unknown"
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    cpu = _first("/proc/cpuinfo", "model name")
    return (
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {cpu}, "
        f"{os.cpu_count()} cores, {memory}, Linux {platform.release()}, "
        f"Python {sys.version.split()[0]}, {git_version}, load average at start {load}"
    )
