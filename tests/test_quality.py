"""The code stays ruff- and mypy --strict-clean: the suite fails otherwise."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.devices import REPO_ROOT


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "convosyncd", "tests", "bench"],
        ["ruff", "format", "--check", "convosyncd", "tests", "bench"],
        ["mypy"],
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict"],
)
def test_linters_pass(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", *command],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
