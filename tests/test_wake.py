"""Waking from sleep and the network coming back: the clocks, the system bus, the daemon.

A machine cannot be put to sleep in a test, so the clock check is fed clocks that
jump (the real ones are read everywhere else). The system bus is a private
``dbus-daemon`` (:mod:`tests.support.system_bus`) on which the test owns logind's and
NetworkManager's names and sends their signals, as they would after a resume.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from convosyncd.wake import (
    LOGIND_MANAGER,
    LOGIND_PATH,
    BusSignals,
    ClockCheck,
    WakeWatch,
    sleeping_clock,
)
from tests.support import system_bus
from tests.support.devices import make_device, make_remote, wait_until


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_time_that_passed_while_asleep_is_a_jump_and_a_clock_set_back_is_not() -> None:
    outer, inner = FakeClock(), FakeClock()
    check = ClockCheck(outer, inner)
    outer.now += 5
    inner.now += 5
    assert check.jumped() == 0, "both clocks ran: the machine was awake"
    outer.now += 3602  # asleep for an hour: only the outer clock ran (and 2 s awake)
    inner.now += 2
    assert check.jumped() == 3600
    assert check.jumped() == 0, "counted once"
    outer.now -= 600  # the wall clock set back
    assert check.jumped() == -600


def test_the_real_clocks_agree_while_awake() -> None:
    check = ClockCheck(sleeping_clock())
    time.sleep(0.2)
    assert abs(check.jumped()) < 0.5


def test_the_clock_check_tells_the_daemon() -> None:
    outer, inner = FakeClock(), FakeClock()
    told: list[str] = []
    watch = WakeWatch(told.append, system_bus=False, clock=ClockCheck(outer, inner), period=0.05)
    watch.start()
    try:
        time.sleep(0.2)
        assert told == []
        outer.now += 120
        wait_until(lambda: bool(told), 5, "the wake-up")
        assert told == ["120 s passed while this process did not run (asleep)"]
    finally:
        watch.stop()


@pytest.mark.parametrize(
    ("signals", "reasons"),
    [
        ([("PrepareForSleep", (False,))], ["woke from sleep (logind)"]),
        ([("PrepareForSleep", (True,))], [None]),
        ([("StateChanged", (20,)), ("StateChanged", (70,))], [None, "back"]),
        ([("StateChanged", (70,)), ("StateChanged", (70,))], ["back", None]),
        ([("StateChanged", (60,)), ("StateChanged", (70,))], ["back", "back"]),
        ([("StateChanged", (70,)), ("StateChanged", (40,))], ["back", None]),
        # Hostile or odd bodies mean nothing.
        ([("StateChanged", ("70",)), ("StateChanged", ()), ("StateChanged", (1, 2))], [None] * 3),
        ([("PrepareForSleep", ("false",)), ("PrepareForSleep", ())], [None, None]),
        ([("Other", (False,))], [None]),
    ],
)
def test_what_the_signals_mean(
    signals: list[tuple[str, tuple[object, ...]]], reasons: list[str | None]
) -> None:
    meaning = BusSignals()
    interfaces = {
        "PrepareForSleep": "org.freedesktop.login1.Manager",
        "StateChanged": "org.freedesktop.NetworkManager",
        "Other": "org.freedesktop.login1.Manager",
    }
    found = []
    for member, body in signals:
        reason = meaning.reason(interfaces[member], member, body)
        found.append("back" if reason and "network is back" in reason else reason)
    assert found == reasons


# -- the system bus ------------------------------------------------------------------


@pytest.fixture
def bus_folder() -> Iterator[Path]:
    folder = system_bus.socket_folder()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


class Told:
    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, reason: str) -> None:
        with self.lock:
            self.reasons.append(reason)

    def count(self) -> int:
        with self.lock:
            return len(self.reasons)


def test_the_bus_watch_survives_a_bus_that_is_absent_then_goes_away_and_comes_back(
    tmp_path: Path,
    bus_folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="convosyncd.wake")
    monkeypatch.setenv(system_bus.ENV, system_bus.address_of(bus_folder))
    told = Told()
    watch = WakeWatch(told, system_bus=True, clock=ClockCheck(FakeClock(), FakeClock()))
    watch.start()
    try:
        wait_until(lambda: "no system bus" in caplog.text, 10, "the bus to be missed")
        with system_bus.system_bus(bus_folder, tmp_path / "bus") as address:
            wait_until(lambda: "listening for sleep" in caplog.text, 15, "a subscription")
            system_bus.going_to_sleep(address)
            system_bus.woke_up(address)
            wait_until(lambda: told.count() >= 1, 10, "the wake-up")
            assert told.reasons == ["woke from sleep (logind)"]
        wait_until(lambda: "the system bus went away" in caplog.text, 10, "the bus to go")
        caplog.clear()
        with system_bus.system_bus(bus_folder, tmp_path / "bus") as address:
            wait_until(lambda: "listening for sleep" in caplog.text, 15, "a new subscription")
            system_bus.network_state(address, 20)
            system_bus.network_state(address, 70)
            wait_until(lambda: told.count() >= 2, 10, "the network coming back")
        assert told.reasons[1] == "the network is back (NetworkManager state 70)"
    finally:
        watch.stop()


def test_a_signal_from_a_process_that_does_not_own_the_name_is_ignored(
    tmp_path: Path,
    bus_folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="convosyncd.wake")
    monkeypatch.setenv(system_bus.ENV, system_bus.address_of(bus_folder))
    told = Told()
    with system_bus.system_bus(bus_folder, tmp_path / "bus") as address:
        watch = WakeWatch(told, system_bus=True, clock=ClockCheck(FakeClock(), FakeClock()))
        watch.start()
        try:
            wait_until(lambda: "listening for sleep" in caplog.text, 15, "a subscription")
            # Same path, interface and member, but not sent by the owner of logind's name.
            system_bus.emit(
                address,
                "org.example.Impostor",
                LOGIND_PATH,
                LOGIND_MANAGER,
                "PrepareForSleep",
                False,
            )
            system_bus.network_state(address, 70)  # a real one after it, to know when
            wait_until(lambda: told.count() >= 1, 10, "the genuine signal")
            assert told.reasons == ["the network is back (NetworkManager state 70)"]
        finally:
            watch.stop()


def test_the_daemon_checks_every_repo_when_the_machine_wakes(
    tmp_path: Path, bus_folder: Path
) -> None:
    remote = make_remote(tmp_path)
    desktop = make_device(tmp_path, remote, "desktop", pull_interval=60.0)
    other = make_device(tmp_path, make_remote(tmp_path, "other.git"), "other", register=False)
    desktop.write_config(repos=[desktop.repo, other.repo])

    def polls() -> list[str]:
        return [repo["last_poll"]["time"] for repo in desktop.status()["repos"]]

    with system_bus.system_bus(bus_folder, tmp_path / "bus") as address:
        daemon = desktop.start({system_bus.ENV: address})
        try:
            daemon.wait_for_log("listening for sleep and network changes on the system bus")
            wait_until(
                lambda: all(repo["last_poll"] for repo in desktop.status()["repos"]),
                10,
                "first polls",
            )
            first = polls()
            time.sleep(1.1)  # poll times are to the second
            system_bus.woke_up(address)
            daemon.wait_for_log(r"woke from sleep \(logind\): checking every repo now")
            wait_until(
                lambda: all(now > then for now, then in zip(polls(), first, strict=True)),
                5,
                "every repo checked after the wake-up",
            )
            second = polls()
            time.sleep(1.1)
            system_bus.network_state(address, 70)
            daemon.wait_for_log(r"the network is back \(NetworkManager state 70\)")
            wait_until(
                lambda: all(now > then for now, then in zip(polls(), second, strict=True)),
                5,
                "every repo checked when the network came back",
            )
        finally:
            assert daemon.stop() == 0
