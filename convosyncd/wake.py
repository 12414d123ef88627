"""Noticing that the machine woke from sleep or that the network came back.

Timers run on monotonic time, which stands still while the machine sleeps: a poll due
a minute after the lid closed comes a minute after it opens, however long the night.
So the daemon is told about the moments that matter, and checks every repo at once.

* **The clock**, everywhere: a thread compares, every :data:`CLOCK_PERIOD` seconds, a
  clock that runs on while the machine sleeps with one that does not. On Linux that
  is ``CLOCK_BOOTTIME`` against ``CLOCK_MONOTONIC`` (they differ only by the time spent
  suspended); elsewhere the wall clock against the monotonic one (which also notices
  the time being set forward: one check too many, which costs nothing). A jump of
  more than :data:`CLOCK_JUMP` seconds means a wake-up. The thread's own wait is on
  the monotonic clock, so it looks within one period of waking.
* **The system bus**, on Linux: logind's ``PrepareForSleep(false)`` (just woke) and
  NetworkManager's ``StateChanged`` to a connected state, from the names that own
  those services. The bus may be absent (a container, a minimal machine) or restart;
  the thread keeps trying, further and further apart, and never takes the daemon down.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

CLOCK_PERIOD = 2.0
"""Seconds between looks at the clocks."""
CLOCK_JUMP = 3.0
"""Seconds of difference between the clocks that count as a sleep."""
BUS_RETRY_START = 1.0
BUS_RETRY_CAP = 300.0
BUS_CALL_TIMEOUT = 5.0

LOGIND = "org.freedesktop.login1"
LOGIND_PATH = "/org/freedesktop/login1"
LOGIND_MANAGER = "org.freedesktop.login1.Manager"
NETWORK_MANAGER = "org.freedesktop.NetworkManager"
NETWORK_MANAGER_PATH = "/org/freedesktop/NetworkManager"
NM_CONNECTED_LOCAL = 50
"""NetworkManager's states 50, 60 and 70: connected locally, to a site, globally."""

SIGNALS = (
    (LOGIND, LOGIND_PATH, LOGIND_MANAGER, "PrepareForSleep"),
    (NETWORK_MANAGER, NETWORK_MANAGER_PATH, NETWORK_MANAGER, "StateChanged"),
)
"""The signals listened to: (sender, path, interface, member)."""

Clock = Callable[[], float]


def sleeping_clock(platform: str = sys.platform) -> Clock:
    """A clock that runs on while the machine sleeps: ``CLOCK_BOOTTIME`` on Linux,
    else the wall clock."""
    if platform.startswith("linux") and hasattr(time, "CLOCK_BOOTTIME"):
        return lambda: time.clock_gettime(time.CLOCK_BOOTTIME)
    return time.time


class ClockCheck:
    """How much time passed on ``outer`` but not on ``inner`` since the last look."""

    def __init__(self, outer: Clock, inner: Clock = time.monotonic) -> None:
        self.outer = outer
        self.inner = inner
        self._gap = outer() - inner()

    def jumped(self) -> float:
        """Seconds ``outer`` gained on ``inner`` since the last call (negative when the
        wall clock was set back, which is no wake-up)."""
        gap = self.outer() - self.inner()
        jump, self._gap = gap - self._gap, gap
        return jump


class BusSignals:
    """What the signals mean: a wake-up reason, or None."""

    def __init__(self) -> None:
        self.network_state: int | None = None

    def reason(self, interface: str, member: str, body: tuple[Any, ...]) -> str | None:
        if (interface, member) == (LOGIND_MANAGER, "PrepareForSleep"):
            if body == (False,):
                return "woke from sleep (logind)"
            return None
        if (interface, member) == (NETWORK_MANAGER, "StateChanged"):
            if len(body) != 1 or not isinstance(body[0], int):
                return None
            state, previous = body[0], self.network_state
            self.network_state = state
            if state >= NM_CONNECTED_LOCAL and (previous is None or state > previous):
                return f"the network is back (NetworkManager state {state})"
        return None


class WakeWatch:
    """Calls ``on_wake(reason)`` from a thread of its own when the machine woke up or
    the network came back (see the module's docstring)."""

    def __init__(
        self,
        on_wake: Callable[[str], None],
        *,
        system_bus: bool | None = None,
        clock: ClockCheck | None = None,
        period: float = CLOCK_PERIOD,
        threshold: float = CLOCK_JUMP,
    ) -> None:
        self.on_wake = on_wake
        self.system_bus = sys.platform.startswith("linux") if system_bus is None else system_bus
        self.clock = clock
        self.period = period
        self.threshold = threshold
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._wake_reader, self._wake_writer = socket.socketpair()

    def start(self) -> None:
        if self.clock is None:
            self.clock = ClockCheck(sleeping_clock())
        targets: list[tuple[str, Callable[[], None]]] = [("wake-clock", self._watch_clock)]
        if self.system_bus:
            targets.append(("wake-bus", self._watch_bus))
        for name, target in targets:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"x")
        for thread in self._threads:
            thread.join(timeout=5)
        self._wake_reader.close()
        self._wake_writer.close()

    def _tell(self, reason: str) -> None:
        try:
            self.on_wake(reason)
        except Exception:
            log.exception("unexpected error acting on a wake-up (%s)", reason)

    # -- the clock ------------------------------------------------------------------

    def _watch_clock(self) -> None:
        assert self.clock is not None
        while not self._stopping.wait(self.period):
            jump = self.clock.jumped()
            if jump > self.threshold:
                self._tell(f"{jump:.0f} s passed while this process did not run (asleep)")

    # -- the system bus -------------------------------------------------------------

    def _watch_bus(self) -> None:
        delay = BUS_RETRY_START
        told = False
        while not self._stopping.is_set():
            try:
                connection = self._connect()
            except Exception as error:
                if not told:
                    log.info(
                        "no system bus (%s): sleep and network changes are noticed by the "
                        "clock alone; trying again now and then",
                        error or type(error).__name__,
                    )
                    told = True
                if self._stopping.wait(delay):
                    return
                delay = min(BUS_RETRY_CAP, delay * 2)
                continue
            told = False
            try:
                log.info("listening for sleep and network changes on the system bus")
                delay = BUS_RETRY_START
                self._listen(connection)
            except Exception as error:
                if not self._stopping.is_set():
                    log.info("the system bus went away (%s); trying again", error or "closed")
            finally:
                with contextlib.suppress(Exception):
                    connection.close()
            if self._stopping.wait(delay):
                return

    def _connect(self) -> Any:
        """A connection to the system bus with our match rules added."""
        from jeepney import MatchRule, message_bus
        from jeepney.io.blocking import open_dbus_connection

        connection = open_dbus_connection(bus="SYSTEM", auth_timeout=BUS_CALL_TIMEOUT)
        try:
            for sender, path, interface, member in SIGNALS:
                rule = MatchRule(
                    type="signal", sender=sender, path=path, interface=interface, member=member
                )
                connection.send_and_get_reply(message_bus.AddMatch(rule), timeout=BUS_CALL_TIMEOUT)
        except BaseException:
            connection.close()
            raise
        return connection

    def _listen(self, connection: Any) -> None:
        """Act on signals until the bus goes away (an exception) or :meth:`stop`."""
        from jeepney import HeaderFields, MessageType

        meaning = BusSignals()
        while True:
            # Whatever jeepney has read already first, then wait for more (or stop).
            while True:
                try:
                    message = connection.receive(timeout=0)
                except TimeoutError:
                    break
                if message.header.message_type != MessageType.signal:
                    continue
                fields = message.header.fields
                reason = meaning.reason(
                    str(fields.get(HeaderFields.interface, "")),
                    str(fields.get(HeaderFields.member, "")),
                    tuple(message.body),
                )
                if reason is not None:
                    self._tell(reason)
            ready, _, _ = select.select([connection.sock, self._wake_reader], [], [])
            if self._wake_reader in ready:
                return
