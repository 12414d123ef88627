"""Desktop notifications through plyer, at a bounded cost.

plyer picks its route once per process (D-Bus through dbus-python, else
``notify-send``) and none of its routes has a time limit: a notification server that
owns its name but never answers holds the caller for 25 s or more. Each notification is
therefore delivered from a worker thread that the daemon waits for at most
``timeout`` seconds; at most a few such workers may be outstanding, after which
notifications are skipped (and logged) until the server answers again. A failed
notification is a warning, never a failure of the sync.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import warnings
from dataclasses import dataclass
from typing import Literal

from convosyncd.handoff import Notification

log = logging.getLogger(__name__)

# plyer warns on stderr when it falls back from dbus-python to notify-send; the route
# is reported by `route()` and `convosyncd doctor` instead.
warnings.filterwarnings("ignore", module=r"plyer(\..*)?$")

APP_NAME = "convosyncd"
SERVER_NAME = "org.freedesktop.Notifications"
MAX_OUTSTANDING = 3

Outcome = Literal["sent", "failed", "timed out", "skipped", "off"]


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


def route() -> str:
    """The route plyer will take on this machine, in words (for ``doctor`` and logs)."""
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


class Notifier:
    """Sends notifications without ever holding the caller longer than ``timeout``."""

    def __init__(self, *, enabled: bool, timeout: float) -> None:
        self.enabled = enabled
        self.timeout = timeout
        self._outstanding = 0
        self._lock = threading.Lock()

    def send(self, notification: Notification) -> Delivery:
        """Deliver ``notification``; returns within about ``timeout`` seconds."""
        if not self.enabled:
            return Delivery("off")
        if sys.platform.startswith("linux"):
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
