"""The code stays ruff- and mypy --strict-clean: the suite fails otherwise.

The same three checks run before each commit for contributors who install pre-commit
(``.pre-commit-config.yaml``); this suite checks that the config still names them all.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from typing import Any

import pytest

from tests.support.devices import REPO_ROOT

CHECKS = {
    "ruff-check": ["ruff", "check", "convosyncd", "tests", "bench"],
    "ruff-format": ["ruff", "format", "--check", "convosyncd", "tests", "bench"],
    "mypy-strict": ["mypy"],
}


@pytest.mark.parametrize("command", list(CHECKS.values()), ids=list(CHECKS))
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


def test_pre_commit_runs_the_same_checks() -> None:
    # PyYAML comes with detect-secrets (a dependency); it ships no type stubs.
    yaml: Any = importlib.import_module("yaml")
    config = yaml.safe_load((REPO_ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    hooks = [hook for repo in config["repos"] for hook in repo["hooks"]]
    # Local hooks on the system's tools: the versions `pip install -e '.[test]'` pinned,
    # the ones this suite runs, and no download at commit time.
    assert [repo["repo"] for repo in config["repos"]] == ["local"]
    assert {hook["language"] for hook in hooks} == {"system"}
    entries = [hook["entry"].split() for hook in hooks]
    assert ["ruff", "check"] in entries
    assert ["ruff", "format", "--check"] in entries
    assert ["mypy"] in entries
    mypy = next(hook for hook in hooks if hook["entry"] == "mypy")
    # mypy on the changed files alone would miss what they break in other modules.
    assert mypy.get("pass_filenames") is False
