"""The one git runner: data in and out intact, a time limit that kills, never a hang."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from convosyncd.errors import GitTimeout
from convosyncd.gitcmd import run_git
from tests.support.devices import git, handoff_text, make_device, wait_until


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
    # SIGKILL went to the whole group; under load the kernel may take a moment to end it.
    wait_until(lambda: _state(sleeper) in ("gone", "Z"), 5, "the command git started to die")


def recording_fsmonitor(repo: Path, folder: Path) -> Path:
    """Set the repo's ``core.fsmonitor`` to a script that records each run; its record."""
    record = folder / "fsmonitor-ran"
    script = folder / "fsmonitor.sh"
    script.write_text(f'#!/bin/sh\necho "$@" >> "{record}"\nexit 1\n', encoding="utf-8")
    script.chmod(0o755)
    git(repo, "config", "core.fsmonitor", str(script))
    # The person's own git runs it (else the checks below would prove nothing).
    git(repo, "status", "--porcelain")
    assert record.exists(), "git status runs the fsmonitor"
    record.unlink()
    return record


def test_a_repos_fsmonitor_never_runs_in_convosyncds_git_calls(repo: Path, tmp_path: Path) -> None:
    record = recording_fsmonitor(repo, tmp_path)
    for args in (["status", "--porcelain"], ["ls-files", "-z", "--", ".convosync"], ["diff"]):
        run_git(args, cwd=repo, timeout=30)
    assert not record.exists()


def test_the_daemon_and_the_commands_never_run_a_repos_fsmonitor(
    tmp_path: Path, remote: Path
) -> None:
    desktop = make_device(tmp_path, remote, "desktop", register=False)
    laptop = make_device(tmp_path, remote, "laptop")
    laptop.write_draft(handoff_text("From the laptop"))
    assert laptop.cli("sync").returncode == 0
    record = recording_fsmonitor(desktop.repo, tmp_path)

    assert desktop.cli("add", str(desktop.repo)).returncode == 0
    desktop.write_draft(handoff_text("Through the command"))
    assert desktop.cli("sync").returncode == 0
    assert "From the laptop" in desktop.cli("resume", "--hook", cwd=desktop.repo).stdout
    assert desktop.cli("status").returncode == 0
    daemon = desktop.start()
    try:
        desktop.write_draft(handoff_text("Through the daemon"))
        daemon.wait_for_log(r"published desktop/\S+ \(Through the daemon\)")
    finally:
        assert daemon.stop() == 0
    assert not record.exists(), record.read_text(encoding="utf-8")
