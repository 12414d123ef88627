"""Desktop notifications at a bounded cost: plyer on Linux, ``osascript`` on macOS.

plyer picks its route once per process (D-Bus through dbus-python, else
``notify-send``) and none of its routes has a time limit: a notification server that
owns its name but never answers holds the caller for 25 s or more. Each notification is
therefore delivered from a worker thread that the daemon waits for at most
``timeout`` seconds; at most a few such workers may be outstanding, after which
notifications are skipped (and logged) until the server answers again.

On macOS plyer needs ``pyobjus``, which it does not install, so notifications go
through ``osascript``'s ``display notification`` instead: a constant script with the
title and message passed as arguments (never as script text), run with the same time
limit and killed with anything it started when it runs out. A failed notification is a
warning, never a failure of the sync.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import warnings
from dataclasses import dataclass
from typing import Literal

from convosyncd.handoff import Notification, plain_text

log = logging.getLogger(__name__)

# plyer warns on stderr when it falls back from dbus-python to notify-send; the route
# is reported by `route()` and `convosyncd doctor` instead.
warnings.filterwarnings("ignore", module=r"plyer(\..*)?$")

APP_NAME = "convosyncd"
SERVER_NAME = "org.freedesktop.Notifications"
MAX_OUTSTANDING = 3

Outcome = Literal["sent", "failed", "timed out", "skipped", "off"]

_OSASCRIPT_LINES = (
    "on run argv",
    "display notification (item 2 of argv) with title (item 1 of argv)",
    "end run",
)
"""The whole AppleScript: the texts arrive in ``argv``, so none is ever read as script."""


@dataclass(frozen=True)
class Delivery:
    """What happened to one notification."""

    outcome: Outcome
    detail: str = ""


def session_bus_address() -> str | None:
    """``DBUS_SESSION_BUS_ADDRESS``, else the user bus at ``$XDG_RUNTIME_DIR/bus``.

    libdbus, GLib and sd-bus all fall back to the user bus; jeepney does not, and a
    systemd user service may be started without the variable.
    """
    explicit = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    if explicit:
        return explicit
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime is not None and os.path.exists(os.path.join(runtime, "bus")):
        return f"unix:path={os.path.join(runtime, 'bus')}"
    return None


def session_bus_available() -> bool:
    """Whether a desktop session bus is there to carry a notification at all."""
    return session_bus_address() is not None


def server_problem(timeout: float) -> str | None:
    """Why no notification server can take a notification now, or None if one can.

    plyer's ``notify-send`` route ignores failures, so the daemon asks the session bus
    itself (with ``jeepney``, a pure-Python D-Bus client, and a time limit) whether
    anybody owns ``org.freedesktop.Notifications``.
    """
    address = session_bus_address()
    if address is None:
        return "no desktop session bus (DBUS_SESSION_BUS_ADDRESS is unset)"
    from jeepney import DBusAddress, new_method_call
    from jeepney.io.blocking import open_dbus_connection

    try:
        connection = open_dbus_connection(bus=address, auth_timeout=timeout)
    except Exception as error:
        return f"cannot connect to the session bus: {error}"
    try:
        bus = DBusAddress(
            "/org/freedesktop/DBus",
            bus_name="org.freedesktop.DBus",
            interface="org.freedesktop.DBus",
        )
        reply = connection.send_and_get_reply(
            new_method_call(bus, "NameHasOwner", "s", (SERVER_NAME,)), timeout=timeout
        )
        if not reply.body or not reply.body[0]:
            return "no notification server is running on the session bus"
    except Exception as error:
        return f"the session bus did not answer: {error}"
    finally:
        connection.close()
    return None


def route(platform: str = sys.platform) -> str:
    """The route notifications take on this machine, in words (for ``doctor`` and logs);
    it starts with ``none`` where there is none."""
    if platform == "darwin":
        found = shutil.which("osascript")
        if found is None:
            return "none (osascript is not on PATH; it comes with macOS, in /usr/bin)"
        return f"osascript ({found})"
    if os.path.isdir("/app"):
        return "the Flatpak portal (a folder /app exists; plyer ignores every error there)"
    try:
        import dbus  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        pass
    else:
        return "D-Bus through dbus-python"
    if shutil.which("notify-send"):
        return "notify-send"
    return "none (install libnotify-bin for notify-send, or dbus-python)"


def osascript_command(notification: Notification) -> list[str]:
    """The command line that shows ``notification`` on macOS.

    The script is constant; the title and message follow ``--`` as arguments of its
    ``run`` handler, so quotes, backslashes, ``& do shell script ...`` or a leading
    ``-`` in them stay text.
    """
    command = ["osascript"]
    for line in _OSASCRIPT_LINES:
        command += ["-e", line]
    return [*command, "--", notification.title, notification.message]


def run_osascript(notification: Notification, timeout: float) -> Delivery:
    """Show ``notification`` through ``osascript``, waiting at most ``timeout`` seconds."""
    try:
        process = subprocess.Popen(
            osascript_command(notification),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # Its own process group, so a timeout ends whatever it started too.
            start_new_session=True,
        )
    except FileNotFoundError:
        return Delivery("failed", "osascript is not on PATH (it comes with macOS, in /usr/bin)")
    except (OSError, ValueError) as error:
        return Delivery("failed", f"osascript could not be started: {error}")
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except OSError:
            with contextlib.suppress(OSError):
                process.kill()
        # Not drained: something that left the group may hold the pipe open for ever.
        if process.stderr is not None:
            process.stderr.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        return Delivery(
            "timed out",
            f"osascript did not finish within {timeout:g} s and was stopped; syncing goes on",
        )
    if process.returncode != 0:
        lines = stderr.decode("utf-8", "replace").strip().splitlines()
        said = plain_text(lines[-1], 200) if lines else "no message"
        return Delivery("failed", f"osascript exited with {process.returncode}: {said}")
    return Delivery("sent")


class Notifier:
    """Sends notifications without ever holding the caller longer than ``timeout``.

    ``platform`` (a ``sys.platform`` value) chooses the route: ``osascript`` on macOS,
    plyer elsewhere.
    """

    def __init__(self, *, enabled: bool, timeout: float, platform: str = sys.platform) -> None:
        self.enabled = enabled
        self.timeout = timeout
        self.platform = platform
        self._outstanding = 0
        self._lock = threading.Lock()

    def send(self, notification: Notification) -> Delivery:
        """Deliver ``notification``; returns within about ``timeout`` seconds."""
        if not self.enabled:
            return Delivery("off")
        if self.platform == "darwin":
            delivery = run_osascript(notification, self.timeout)
            if delivery.outcome == "sent":
                log.info("notified: %s: %s", notification.title, notification.message)
            else:
                log.warning("notification %s: %s", delivery.outcome, delivery.detail)
            return delivery
        if self.platform.startswith("linux"):
            problem = server_problem(min(self.timeout, 2.0))
            if problem is not None:
                log.warning("notification not sent (%s): %s", problem, notification.title)
                return Delivery("failed", problem)
        with self._lock:
            if self._outstanding >= MAX_OUTSTANDING:
                detail = (
                    f"{self._outstanding} earlier notifications are still waiting on the "
                    "notification server"
                )
                log.warning("notification skipped: %s", detail)
                return Delivery("skipped", detail)
            self._outstanding += 1
        result: list[Delivery] = []
        worker = threading.Thread(
            target=self._deliver,
            args=(notification, result),
            name="convosyncd-notify",
            daemon=True,
        )
        worker.start()
        worker.join(self.timeout)
        if worker.is_alive():
            detail = (
                f"the notification server did not answer within {self.timeout:g} s; "
                "syncing goes on (check it with `convosyncd doctor`)"
            )
            log.warning("notification timed out: %s", detail)
            return Delivery("timed out", detail)
        return result[0] if result else Delivery("failed", "no result")

    def _deliver(self, notification: Notification, result: list[Delivery]) -> None:
        try:
            from plyer import notification as plyer_notification

            plyer_notification.notify(
                title=notification.title,
                message=notification.message,
                app_name=APP_NAME,
                timeout=10,
            )
        except NotImplementedError:
            result.append(Delivery("failed", f"no notification route: {route()}"))
            log.warning("notification not sent: no route (%s)", route())
        except Exception as error:
            result.append(Delivery("failed", f"{type(error).__name__}: {error}"))
            log.warning("notification failed: %s: %s", type(error).__name__, error)
        else:
            result.append(Delivery("sent"))
            log.info("notified: %s: %s", notification.title, notification.message)
        finally:
            with self._lock:
                self._outstanding -= 1
