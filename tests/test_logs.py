"""The daemon's log: one line per event, a rotating file or journald, no credentials."""

from __future__ import annotations

import logging
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from convosyncd import cli, logs
from convosyncd.config import default_state_dir
from tests.support.dbus_session import RecordingNotificationServer, env_for_bus
from tests.support.devices import (
    cli_env,
    git,
    handoff_text,
    make_device,
    make_remote,
    wait_until,
)

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} (INFO|WARNING|ERROR) ")


def test_each_event_is_one_line_naming_the_repo_in_the_state_folder_log(
    tmp_path: Path, session_bus: str, notification_server: RecordingNotificationServer
) -> None:
    remote = make_remote(tmp_path)
    desktop = make_device(tmp_path, remote, "desktop", settle=0.0)
    # A remote URL with credentials in it (git accepts and ignores them for file://).
    secret_url = f"file://person:hunter2secret@localhost{remote}"
    git(desktop.repo, "remote", "set-url", "origin", secret_url)
    laptop = make_device(tmp_path, remote, "laptop", notify=True, pull_interval=0.5)
    gone = tmp_path / "laptop" / "gone"
    git(tmp_path, "clone", "--quiet", str(remote), str(gone))
    laptop.write_config(repos=[laptop.repo, gone])
    env = env_for_bus(session_bus)
    desktop_daemon, laptop_daemon = desktop.start(env), laptop.start(env)
    try:
        desktop.write_draft(handoff_text("Logged once"))
        laptop_daemon.wait_for_log(r"handoff from desktop arrived .*notification sent")
        desktop_daemon.wait_for_log(rf"{desktop.repo}: pushed the sync branch to origin")
        git(tmp_path, "-C", str(gone), "remote", "remove", "origin")
        laptop_daemon.wait_for_log(rf"ERROR {gone}: ")
    finally:
        assert desktop_daemon.stop() == 0
        assert laptop_daemon.stop() == 0

    desktop_log = (desktop.state / "convosyncd.log").read_text(encoding="utf-8")
    laptop_log = (laptop.state / "convosyncd.log").read_text(encoding="utf-8")
    for text in (desktop_log, laptop_log):
        for line in text.splitlines():
            assert TIMESTAMP.match(line), f"not one timestamped line per event: {line!r}"
    events = {
        "publish": (desktop_log, rf"{desktop.repo}: published desktop/\S+ \(Logged once\)"),
        "push": (desktop_log, rf"{desktop.repo}: pushed the sync branch to origin"),
        "pull": (laptop_log, rf"{laptop.repo}: pulled convosync from origin"),
        "notify": (
            laptop_log,
            rf"{laptop.repo}: handoff from desktop arrived \(Logged once\); notification sent",
        ),
        "error": (laptop_log, rf"ERROR {gone}: .*no git remote|ERROR {gone}: .*origin"),
    }
    for event, (text, pattern) in events.items():
        assert re.search(pattern, text), f"no {event} line matching {pattern!r}"
    assert "file://***@localhost" in desktop_log
    for text in (desktop_log, laptop_log, desktop_daemon.log(), laptop_daemon.log()):
        assert "hunter2secret" not in text


def _run_briefly(config: Path, env: dict[str, str], stderr_path: Path, started: Path) -> None:
    """Start ``convosyncd run``, wait until ``started`` says it runs, stop it."""
    with stderr_path.open("wb") as stderr:
        if "JOURNAL_STREAM" in env and env["JOURNAL_STREAM"] == "match":
            status = os.fstat(stderr.fileno())
            env = {**env, "JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"}
        process = subprocess.Popen(
            [sys.executable, "-m", "convosyncd", "--config", str(config), "run"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=cli_env(env),
        )
    try:
        wait_until(
            lambda: started.exists() and "running as device" in started.read_text(encoding="utf-8"),
            20,
            f"the daemon to log into {started}",
        )
    finally:
        process.terminate()
        assert process.wait(timeout=20) == 0


def test_under_journald_lines_carry_a_priority_and_no_timestamp(tmp_path: Path) -> None:
    remote = make_remote(tmp_path)
    desktop = make_device(tmp_path, remote, "desktop")
    stderr = tmp_path / "journal-stream"
    _run_briefly(desktop.config, {"JOURNAL_STREAM": "match"}, stderr, stderr)
    lines = stderr.read_text(encoding="utf-8").splitlines()
    assert lines
    for line in lines:
        assert re.match(r"^<[2-7]>(INFO|WARNING|ERROR) ", line), line
    assert any(line.startswith("<6>INFO convosyncd running as device") for line in lines)
    assert not (desktop.state / "convosyncd.log").exists(), "the journal keeps the log"


def test_an_inherited_journal_stream_is_not_the_journal(tmp_path: Path) -> None:
    """A terminal started by systemd passes JOURNAL_STREAM on; it names another stream."""
    remote = make_remote(tmp_path)
    desktop = make_device(tmp_path, remote, "desktop")
    stderr = tmp_path / "stderr"
    log_file = desktop.state / "convosyncd.log"
    _run_briefly(desktop.config, {"JOURNAL_STREAM": "8:12345"}, stderr, log_file)
    assert TIMESTAMP.match(stderr.read_text(encoding="utf-8"))
    assert TIMESTAMP.match(log_file.read_text(encoding="utf-8"))


def test_the_launchd_switch_keeps_stderr_for_what_cannot_be_logged(tmp_path: Path) -> None:
    remote = make_remote(tmp_path)
    desktop = make_device(tmp_path, remote, "desktop")
    stderr = tmp_path / "stderr"
    log_file = desktop.state / "convosyncd.log"
    _run_briefly(desktop.config, {logs.STDERR_SWITCH: "no"}, stderr, log_file)
    assert stderr.read_text(encoding="utf-8") == ""
    assert "stopped" in log_file.read_text(encoding="utf-8")


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.usefixtures("root_logging", "loose_umask")
def test_the_log_file_rotates_and_masks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "LOG_BYTES", 20_000)
    monkeypatch.setenv(logs.STDERR_SWITCH, "no")
    state = tmp_path / "state"
    logs.setup(daemon=True, state_dir=state)
    log = logging.getLogger("convosyncd.test")
    log.info("remote https://person:token123@example.invalid/app.git\nsecond line")
    for number in range(260):
        log.info("event %d %s", number, "x" * 200)
    names = sorted(path.name for path in state.iterdir())
    assert names == [f"convosyncd.log{suffix}" for suffix in ("", ".1", ".2", ".3")]
    assert (state / "convosyncd.log").stat().st_size <= 20_000
    oldest = (state / "convosyncd.log.3").read_text(encoding="utf-8").splitlines()
    assert oldest[0].endswith("remote https://***@example.invalid/app.git second line")
    assert all(TIMESTAMP.match(line) for line in oldest)
    # Private under the usual umask (022), each file made by a rotation too.
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in state.iterdir())


@pytest.mark.usefixtures("loose_umask")
def test_crash_log_rotates_like_the_log_and_is_private(
    hermetic: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "LOG_BYTES", 4_000)
    reports = []
    for number in range(80):
        try:
            raise RuntimeError(f"crash number {number}")
        except RuntimeError:
            reports.append(cli._write_crash_report(["sync", f"--number={number}"]))
    folder = default_state_dir()
    assert folder.is_relative_to(hermetic)
    assert reports == [folder / "crash.log"] * 80
    names = sorted(path.name for path in folder.iterdir())
    assert names == [f"crash.log{suffix}" for suffix in ("", ".1", ".2", ".3")]
    report = len((folder / "crash.log").read_text(encoding="utf-8").split("--- ")[-1]) + 4
    for path in folder.iterdir():
        assert path.stat().st_size < 4_000 + report, "at most one report past the limit"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    newest = (folder / "crash.log").read_text(encoding="utf-8")
    assert "RuntimeError: crash number 79" in newest
    assert "argv ['sync', '--number=79']" in newest
    oldest = (folder / "crash.log.3").read_text(encoding="utf-8")
    assert "crash number 0\n" not in oldest, "the oldest reports went"
