"""The benchmark still runs: a few samples of one size, every section, a sane table.

Nothing here is a timing assertion (the machines are shared and noisy): only that
``python -m bench --smoke`` finishes and reports a number, in its unit, for every
measurement of every section.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.devices import REPO_ROOT

SECTIONS = (
    "1. Draft to remote",
    "2. Remote to notification",
    "3. Idle cost",
    "4. History",
    "5. Start-up",
    "6. Session start",
    "7. Waking up",
)
NUMBER = re.compile(r"^(?:< )?(?P<value>-?\d+(?:\.\d+)?) ?(?P<unit>µs|ms|s|MB|%|/s|×)?$")


SCALE = {"µs": 1e-6, "ms": 1e-3, "s": 1.0}
"""Durations in seconds, so that ``958.8 µs`` and ``1.3 ms`` compare as they should."""


def number(cell: str) -> float:
    match = NUMBER.match(cell.strip())
    assert match is not None, f"not a number with a unit: {cell!r}"
    value = float(match["value"])
    assert math.isfinite(value), cell
    return value * SCALE.get(match["unit"] or "", 1.0)


def rows(table: str, header: str) -> list[list[str]]:
    lines = table.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header} |"))
    found = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        found.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return found


@pytest.mark.timeout(300)
def test_the_benchmark_prints_a_full_table(tmp_path: Path) -> None:
    output = tmp_path / "table.md"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--output", str(output)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = output.read_text(encoding="utf-8")
    assert table == result.stdout
    measurements = rows(table, "section")
    assert {row[0] for row in measurements} == set(SECTIONS)
    for section, measure, _condition, count, median, p95, *_rest in measurements:
        difference = " − " in measure  # with less without: may be at or below zero
        if count.isdigit() and int(count) > 1:
            assert difference or number(median) > 0, (section, measure, median)
            assert number(p95) >= number(median), (section, measure)
        else:
            assert difference or number(median) >= 0, (section, measure, median)
    targets = rows(table, "target")
    assert len(targets) >= 5
    assert all(row[2] in ("yes", "**no**") for row in targets)
    assert "cores" in table.splitlines()[0], "the machine is named"
