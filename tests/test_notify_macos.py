"""Notifications on macOS: ``osascript``'s ``display notification``, at a bounded cost.

There is no macOS here, so the command line is tested as a pure function, and the run
path with fake ``osascript`` programs put first on PATH: one that records its
arguments, one that fails as a Mac without permission does, one that never ends. The
platform is a parameter of :class:`Notifier`, :func:`notify.route` and the doctor
check, so nothing patches ``sys.platform``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convosyncd import config as configs
from convosyncd import doctor, notify
from convosyncd.handoff import Notification, plain_text
from convosyncd.notify import Notifier, osascript_command
from tests.support.devices import make_device, make_remote

SCRIPT = [
    "osascript",
    "-e",
    "on run argv",
    "-e",
    "display notification (item 2 of argv) with title (item 1 of argv)",
    "-e",
    "end run",
    "--",
]

HOSTILE = [
    'He said "hi"',
    "C:\\temp\\",
    '" & do shell script "rm -rf ~" & "',
    '\\" & do shell script "touch /tmp/pwned" & \\"',
    "line one\nline two\rline three",
    "-e",
    "--",
    "-l JavaScript",
    "end run",
    "on run argv",
    "",
    "\u202egnp.exe",
    "x" * 100_000,
]


def fake_osascript(folder: Path, body: str) -> Path:
    """An executable ``osascript`` in ``folder``, a shell script with ``body``."""
    folder.mkdir(exist_ok=True)
    program = folder / "osascript"
    program.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    program.chmod(0o755)
    return program


@pytest.fixture
def recording(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake osascript first on PATH that appends its arguments, as JSON, to a file."""
    record = tmp_path / "osascript-calls.jsonl"
    program = tmp_path / "fakebin" / "osascript"
    program.parent.mkdir()
    program.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"with open({str(record)!r}, 'a', encoding='utf-8') as calls:\n"
        "    calls.write(json.dumps(sys.argv[1:]) + '\\n')\n",
        encoding="utf-8",
    )
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{program.parent}{os.pathsep}{os.environ['PATH']}")
    return record


def calls(record: Path) -> list[list[str]]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines()]


# -- the command line ---------------------------------------------------------------------


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_texts_are_only_arguments(text: str) -> None:
    for notification in (Notification(text, "message"), Notification("title", text)):
        command = osascript_command(notification)
        assert command[: len(SCRIPT)] == SCRIPT
        assert command[len(SCRIPT) :] == [notification.title, notification.message]


@given(st.text(), st.text())
def test_any_text_is_only_an_argument(title: str, message: str) -> None:
    command = osascript_command(Notification(title, message))
    assert command == [*SCRIPT, title, message]


def test_a_real_notification_goes_through_unchanged() -> None:
    title = plain_text('Handoff from "laptop" \\ -rf', 80)
    message = plain_text('app: fix " & do shell script "id" & "', 200)
    assert osascript_command(Notification(title, message))[-2:] == [title, message]


# -- the run path, with fake osascript programs -----------------------------------------------


@pytest.mark.parametrize("text", HOSTILE)
def test_osascript_receives_the_texts_byte_for_byte(recording: Path, text: str) -> None:
    notifier = Notifier(enabled=True, timeout=10, platform="darwin")
    notification = Notification(f"Handoff from {text}", text)
    assert notifier.send(notification) == notify.Delivery("sent")
    assert calls(recording) == [osascript_command(notification)[1:]]


def test_macos_needs_no_session_bus(recording: Path) -> None:
    assert "DBUS_SESSION_BUS_ADDRESS" not in os.environ
    delivery = Notifier(enabled=True, timeout=10, platform="darwin").send(Notification("t", "m"))
    assert delivery.outcome == "sent"
    assert len(calls(recording)) == 1


def test_linux_never_takes_the_osascript_route(recording: Path) -> None:
    delivery = Notifier(enabled=True, timeout=2, platform="linux").send(Notification("t", "m"))
    assert delivery.outcome == "failed" and "session bus" in delivery.detail
    assert calls(recording) == []


def test_notifications_off_run_nothing(recording: Path) -> None:
    delivery = Notifier(enabled=False, timeout=2, platform="darwin").send(Notification("t", "m"))
    assert delivery.outcome == "off"
    assert calls(recording) == []


def test_a_refused_notification_is_a_failure_with_osascript_s_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake = fake_osascript(
        tmp_path / "bin",
        "echo 'some earlier line' >&2\n"
        "echo '0:65: execution error: Not authorized to send Apple events to "
        "System Events. (-1743)' >&2\nexit 1",
    )
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    delivery = Notifier(enabled=True, timeout=10, platform="darwin").send(Notification("t", "m"))
    assert delivery.outcome == "failed"
    assert delivery.detail == (
        "osascript exited with 1: 0:65: execution error: Not authorized to send Apple "
        "events to System Events. (-1743)"
    )
    assert "Not authorized" in caplog.text


def test_no_osascript_is_a_failure_that_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    delivery = Notifier(enabled=True, timeout=10, platform="darwin").send(Notification("t", "m"))
    assert delivery.outcome == "failed" and "osascript is not on PATH" in delivery.detail


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting for PID 1 to reap it does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_an_osascript_that_never_ends_is_stopped_with_what_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = tmp_path / "child.pid"
    fake = fake_osascript(
        tmp_path / "bin", f"sleep 600 &\necho $! > {started}.tmp\nmv {started}.tmp {started}\nwait"
    )
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    notifier = Notifier(enabled=True, timeout=2, platform="darwin")
    delivery = notifier.send(Notification("t", "m"))
    assert delivery.outcome == "timed out"
    assert "did not finish within 2 s" in delivery.detail
    child = int(started.read_text(encoding="utf-8"))
    assert not _alive(child), "the sleep osascript started outlived the time limit"
    # Nothing is left outstanding: the next notification is tried, not skipped.
    assert notifier.send(Notification("t", "m")).outcome == "timed out"


# -- route and doctor ------------------------------------------------------------------------


def test_the_route_on_macos_is_osascript_when_there_is_one(
    recording: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert notify.route("darwin") == f"osascript ({tmp_path / 'fakebin' / 'osascript'})"
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert notify.route("darwin").startswith("none (osascript is not on PATH")


def test_doctor_on_macos_checks_for_osascript(
    recording: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = make_device(tmp_path, make_remote(tmp_path), "mac", notify=True)
    config = configs.load(device.config)
    check = doctor.check_notifications(config, platform="darwin")
    assert check.ok and check.detail.startswith("route osascript (")
    assert "Script Editor" in check.detail
    assert calls(recording) == [], "doctor asks; it never notifies"
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    check = doctor.check_notifications(config, platform="darwin")
    assert not check.ok and "osascript is not on PATH" in check.detail
    assert "/usr/bin" in check.fix and "notify = false" in check.fix
    device.write_config(notify=False)
    assert doctor.check_notifications(configs.load(device.config), platform="darwin").ok
