"""systemd's notify protocol, received on a real datagram socket from a real daemon."""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from convosyncd.scheduler import Scheduler
from convosyncd.state import Event, RepoState
from convosyncd.systemd_notify import NotifySocket, status_line, watchdog_period
from tests.support.devices import handoff_text, make_device, make_remote
from tests.support.service_manager import NotifyListener


@pytest.fixture
def listener() -> Iterator[NotifyListener]:
    with NotifyListener() as bound:
        yield bound


def test_run_sends_ready_watchdog_status_and_stopping(
    tmp_path: Path, listener: NotifyListener
) -> None:
    remote = make_remote(tmp_path)
    desktop = make_device(tmp_path, remote, "desktop")
    daemon = desktop.start({"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "1000000"})
    try:
        ready = listener.wait_for(lambda m: "READY" in m.fields, 10, "READY=1")
        assert ready.fields["READY"] == "1"
        assert f"watching {desktop.repo}" in daemon.log(), "READY only once the repo is watched"
        assert ready.fields["STATUS"].startswith("1 repo watched, 0 handoffs waiting to push")

        pings = [
            listener.wait_for(lambda m: "WATCHDOG" in m.fields, 3, "WATCHDOG=1").at
            for _ in range(5)
        ]
        gaps = [later - earlier for earlier, later in itertools.pairwise(pings)]
        # WATCHDOG_USEC=1 s: a ping every half period.
        assert 0.35 < statistics.median(gaps) < 0.75, gaps
        assert max(gaps) < 0.95, gaps

        desktop.write_draft(handoff_text("Shown in systemctl status"))
        listener.wait_for(
            lambda m: "last sync 20" in m.fields.get("STATUS", ""), 10, "STATUS with a last sync"
        )
    finally:
        assert daemon.stop() == 0
    stopping = listener.wait_for(lambda m: "STOPPING" in m.fields, 5, "STOPPING=1")
    assert stopping.fields["STOPPING"] == "1"


def test_status_shows_waiting_handoffs_and_failures(
    tmp_path: Path, listener: NotifyListener
) -> None:
    remote = make_remote(tmp_path)
    desktop = make_device(tmp_path, remote, "desktop", network_timeout=1.0)
    remote.rename(tmp_path / "away.git")
    daemon = desktop.start({"NOTIFY_SOCKET": listener.address})
    try:
        listener.wait_for(lambda m: "READY" in m.fields, 10, "READY=1")
        desktop.write_draft(handoff_text("Queued while the remote is away"))
        message = listener.wait_for(
            lambda m: (
                "1 handoff waiting to push" in m.fields.get("STATUS", "")
                and "1 failing" in m.fields.get("STATUS", "")
            ),
            15,
            "STATUS with the waiting handoff",
        )
        assert message.fields["STATUS"].isascii()
    finally:
        assert daemon.stop() == 0
    assert not [m for m in listener.messages if "WATCHDOG" in m.fields], "no WATCHDOG_USEC"


def test_a_notify_socket_nobody_listens_on_changes_nothing(tmp_path: Path) -> None:
    remote = make_remote(tmp_path)
    desktop = make_device(tmp_path, remote, "desktop", settle=0.0)
    daemon = desktop.start(
        {"NOTIFY_SOCKET": str(tmp_path / "nobody.sock"), "WATCHDOG_USEC": "1000000"}
    )
    try:
        desktop.write_draft(handoff_text("Published all the same"))
        daemon.wait_for_log(r"pushed the sync branch")
    finally:
        assert daemon.stop() == 0
    assert "cannot reach the service manager at NOTIFY_SOCKET" in daemon.log()


def test_watchdog_pings_come_from_the_scheduler_thread(
    listener: NotifyListener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wedged scheduler thread stops the pings; a pool busy with slow jobs does not."""
    monkeypatch.setenv("NOTIFY_SOCKET", listener.address)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    service = NotifySocket()
    assert service.enabled and service.watchdog == pytest.approx(0.1)
    scheduler = Scheduler(2)
    scheduler.start()
    release = threading.Event()
    try:
        service.schedule(scheduler, lambda: "test")
        for _ in range(3):
            listener.wait_for(lambda m: "WATCHDOG" in m.fields, 2, "WATCHDOG=1")

        for number in range(2):  # every worker of the pool blocked
            scheduler.schedule(f"slow-{number}", release.wait, 30)
        time.sleep(0.1)
        for _ in range(3):
            listener.wait_for(lambda m: "WATCHDOG" in m.fields, 2, "a ping despite a busy pool")

        wedged = threading.Event()

        def wedge() -> None:
            wedged.set()
            release.wait(30)

        scheduler.schedule("wedge", wedge, inline=True)
        assert wedged.wait(5)
        start = time.monotonic()
        while time.monotonic() - start < 1.0:
            message = listener.receive(1.0 - (time.monotonic() - start))
            assert message is None or "WATCHDOG" not in message.fields, "pinged while wedged"
        release.set()
        listener.wait_for(lambda m: "WATCHDOG" in m.fields, 2, "pings after the wedge")
    finally:
        release.set()
        scheduler.shutdown(wait=True)


def test_watchdog_period_is_half_the_interval_and_only_for_this_process() -> None:
    assert watchdog_period({"WATCHDOG_USEC": "30000000"}, pid=10) == 15.0
    assert watchdog_period({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "10"}, pid=10) == 15.0
    assert watchdog_period({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "11"}, pid=10) is None
    assert watchdog_period({"WATCHDOG_USEC": "0"}, pid=10) is None
    assert watchdog_period({"WATCHDOG_USEC": "soon"}, pid=10) is None
    assert watchdog_period({}, pid=10) is None


def test_status_line() -> None:
    assert status_line([]) == "0 repos watched, 0 handoffs waiting to push, no sync yet"
    calm = RepoState(pending=0, last_poll=Event("2026-11-23T22:45:35Z", "checked"))
    stuck = RepoState(
        pending=2,
        last_poll=Event("2026-11-23T22:40:00Z", "checked"),
        last_error=Event("2026-11-23T22:46:00Z", "pushé: refusé"),
    )
    assert status_line([calm, stuck]) == (
        "2 repos watched, 2 handoffs waiting to push, last sync 2026-11-23T22:45:35Z, "
        "1 failing (convosyncd status)"
    )
