"""The one git runner: data in and out intact, a time limit that kills, never a hang."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from convosyncd.errors import GitTimeout
from convosyncd.gitcmd import run_git
from tests.support.devices import git


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    git(tmp_path, "init", "--quiet", str(path))
    git(path, "commit", "--quiet", "--allow-empty", "-m", "start")
    return path


def test_megabytes_in_and_out_arrive_whole(repo: Path) -> None:
    data = os.urandom(3 * 1024 * 1024)
    oid = run_git(["hash-object", "-w", "--stdin"], cwd=repo, timeout=30, input=data).text
    result = run_git(["cat-file", "blob", oid], cwd=repo, timeout=30)
    assert result.returncode == 0
    assert result.stdout == data


def test_input_git_does_not_read_is_no_error(repo: Path) -> None:
    result = run_git(["rev-parse", "HEAD"], cwd=repo, timeout=30, input=b"x" * 1_000_000)
    assert result.returncode == 0
    assert len(result.text) == 40


def test_a_failure_keeps_its_code_and_message(repo: Path) -> None:
    result = run_git(["rev-parse", "--verify", "no-such-thing"], cwd=repo, timeout=30, check=False)
    assert result.returncode == 128
    assert "no-such-thing" in result.stderr or "Needed a single revision" in result.stderr


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except FileNotFoundError:
        return "gone"
    return stat.rsplit(")", 1)[1].split()[0]


def test_the_time_limit_kills_git_and_what_it_started(repo: Path, tmp_path: Path) -> None:
    pid_file = tmp_path / "sleeper.pid"
    alias = f"alias.nap=!echo $$ > {pid_file}; exec sleep 60"
    started = time.monotonic()
    with pytest.raises(GitTimeout, match=r"did not finish within 0\.5 s"):
        run_git(["-c", alias, "nap"], cwd=repo, timeout=0.5)
    assert time.monotonic() - started < 10
    sleeper = int(pid_file.read_text(encoding="utf-8"))
    assert _state(sleeper) in ("gone", "Z"), "the command git started was killed too"
