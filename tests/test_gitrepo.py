"""GitPython's git calls follow the rules of every other git call (time limit, no prompt)."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from convosyncd.errors import GitTimeout
from convosyncd.gitrepo import RuledGit, RuledRepo
from tests.support.devices import git, make_device


def git_wrapper(folder: Path, log: Path, *, hang_on: str | None = None) -> Path:
    """A ``git`` first on PATH that records each call (argv, a few variables), then runs
    the real git, or sleeps on the subcommand ``hang_on``."""
    real = shutil.which("git")
    assert real is not None
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = folder / "git"
    hang = f'for a in "$@"; do [ "$a" = {hang_on} ] && exec sleep 60; done\n' if hang_on else ""
    wrapper.write_text(
        "#!/bin/sh\n"
        f'python3 -c \'import json,os,sys; print(json.dumps({{"argv": sys.argv[1:], '
        f'"prompt": os.environ.get("GIT_TERMINAL_PROMPT"), '
        f'"git_dir": os.environ.get("GIT_DIR")}}))\' "$@" >> {log}\n'
        f'{hang}exec {real} "$@"\n',
        encoding="utf-8",
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return folder


def test_add_asks_gitpython_through_the_rules(tmp_path: Path, remote: Path) -> None:
    device = make_device(tmp_path, remote, "desktop", register=False)
    elsewhere = tmp_path / "elsewhere.git"
    git(tmp_path, "init", "--quiet", "--bare", str(elsewhere))
    log = tmp_path / "calls.jsonl"
    folder = git_wrapper(tmp_path / "bin", log)
    env = {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}", "GIT_DIR": str(elsewhere)}
    result = device.cli("add", str(device.repo), env=env)
    assert result.returncode == 0, result.stderr
    calls = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    remote_calls = [call for call in calls if "remote" in call["argv"]]
    assert remote_calls, calls  # GitPython asked git for the remotes...
    for call in remote_calls:  # ...through run_git: its options, its environment
        assert "core.hooksPath=/dev/null" in call["argv"]
        assert call["prompt"] == "0"
        assert call["git_dir"] is None  # the leaked GIT_DIR never reaches git
    assert str(device.repo) in device.config.read_text(encoding="utf-8")


def test_a_hanging_git_under_gitpython_is_stopped(
    tmp_path: Path, remote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = make_device(tmp_path, remote, "desktop", register=False)
    folder = git_wrapper(tmp_path / "bin", tmp_path / "calls.jsonl", hang_on="remote")
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    repo = RuledRepo(device.repo)
    try:
        runner = repo.git
        assert isinstance(runner, RuledGit)
        runner.timeout = 0.5
        with pytest.raises(GitTimeout, match=r"did not finish within 0\.5 s"):
            repo.git.remote()
    finally:
        repo.close()


def test_gitpython_modes_that_are_not_honoured_are_refused(tmp_path: Path, remote: Path) -> None:
    device = make_device(tmp_path, remote, "desktop", register=False)
    repo = RuledRepo(device.repo)
    try:
        assert repo.git.remote().split() == ["origin"]
        with pytest.raises(TypeError, match="as_process"):
            repo.git.execute(["git", "status"], as_process=True)
    finally:
        repo.close()
