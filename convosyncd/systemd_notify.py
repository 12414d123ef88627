"""What the daemon tells a service manager: systemd's notify protocol.

When systemd runs ``convosyncd run`` as a ``Type=notify`` service it sets
``NOTIFY_SOCKET`` (and ``WATCHDOG_USEC`` for ``WatchdogSec=``). The daemon then sends
``READY=1`` once every repo is watched, ``WATCHDOG=1`` every half watchdog period,
``STATUS=`` with a one-line summary whenever it changes, and ``STOPPING=1`` when it
shuts down. Without a ``NOTIFY_SOCKET`` nothing is sent and nothing fails.

The watchdog pings are an inline job of the daemon's scheduler
(:mod:`convosyncd.scheduler`), run inside its timer thread instead of the worker pool:
if that thread wedges, the pings stop and systemd restarts the daemon. (A ping from any
other thread would keep a daemon whose scheduler is stuck looking alive.) Being off the
worker pool also means a pool busy with slow remotes never delays a ping.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sdnotify

from convosyncd.scheduler import Scheduler
from convosyncd.state import RepoState

log = logging.getLogger(__name__)

STATUS_INTERVAL = 5.0
"""Seconds between checks of whether the one-line status changed."""

SEND_TIMEOUT = 1.0
"""Seconds a datagram to the service manager may block the scheduler's thread."""


def status_line(states: Sequence[RepoState]) -> str:
    """The ``STATUS=`` text: repos, handoffs waiting to be pushed, last sync, failures.

    ASCII only: the protocol is bytes, and ``systemctl status`` shows it as it is.
    """
    waiting = sum(state.pending for state in states)
    failing = sum(1 for state in states if state.last_error is not None)
    polls = [state.last_poll.time for state in states if state.last_poll is not None]
    parts = [
        f"{len(states)} repo{'' if len(states) == 1 else 's'} watched",
        f"{waiting} handoff{'' if waiting == 1 else 's'} waiting to push",
        f"last sync {max(polls)}" if polls else "no sync yet",
    ]
    if failing:
        parts.append(f"{failing} failing (convosyncd status)")
    return ", ".join(parts).encode("ascii", "replace").decode("ascii")


def watchdog_period(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings, or None when no watchdog waits for them.

    Half of ``WATCHDOG_USEC``, as sd_watchdog_enabled(3) advises; ignored when
    ``WATCHDOG_PID`` names another process (the variables were inherited).
    """
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and (not owner.isdigit() or int(owner) != pid):
        return None
    return int(usec) / 1_000_000 / 2


class NotifySocket:
    """The service manager's notification socket, if this process was given one.

    Reads ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` when created.
    """

    def __init__(self) -> None:
        self.address = os.environ.get("NOTIFY_SOCKET") or None
        self.watchdog = watchdog_period(os.environ, os.getpid()) if self.address else None
        self._last_status: str | None = None
        self._notifier: Any = None
        if self.address is not None:
            # sdnotify connects to NOTIFY_SOCKET when created and then swallows every
            # error, so a socket that vanished costs nothing. A blocking send to a full
            # queue would hold the scheduler's thread, hence the time limit.
            self._notifier = sdnotify.SystemdNotifier()
            if self._notifier.socket is None:
                log.warning("cannot reach the service manager at NOTIFY_SOCKET=%s", self.address)
            else:
                self._notifier.socket.settimeout(SEND_TIMEOUT)

    @property
    def enabled(self) -> bool:
        """Whether a service manager is listening."""
        return self._notifier is not None and self._notifier.socket is not None

    def send(self, message: str) -> None:
        """Send one datagram of ``KEY=VALUE`` lines; never raises, never blocks long."""
        if self._notifier is not None:
            self._notifier.notify(message)

    def ready(self, status: str) -> None:
        self._last_status = status
        self.send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        """Send ``STATUS=`` if it changed since the last one."""
        if status != self._last_status:
            self._last_status = status
            self.send(f"STATUS={status}")

    def alive(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1\nSTATUS=stopping: finishing the work in flight")

    def schedule(self, scheduler: Scheduler, summary: Callable[[], str]) -> None:
        """Add the watchdog and status jobs to a running ``scheduler``, in its own thread."""
        if not self.enabled:
            return
        if self.watchdog is not None:
            scheduler.schedule(
                "service-watchdog",
                self.alive,
                delay=self.watchdog,
                every=self.watchdog,
                inline=True,
            )
            log.info("service watchdog: pinging every %g s", self.watchdog)
        scheduler.schedule(
            "service-status",
            lambda: self.status(summary()),
            delay=STATUS_INTERVAL,
            every=STATUS_INTERVAL,
            inline=True,
        )
