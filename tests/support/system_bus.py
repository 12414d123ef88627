"""A private "system bus" for tests, and the signals logind and NetworkManager send on it.

There is no system bus on the test machines (and a test must never use a real one):
:func:`system_bus` starts a private ``dbus-daemon`` at a socket path the test chooses,
so that it can be stopped and started again at the same address (the bus going away
and coming back), and a daemon under test is pointed at it with
``DBUS_SYSTEM_BUS_ADDRESS``. :func:`emit` owns the service's well-known name (as
logind and NetworkManager do on a real bus) and sends one of its signals.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jeepney import DBusAddress, new_signal
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import open_dbus_connection

from convosyncd.wake import (
    LOGIND,
    LOGIND_MANAGER,
    LOGIND_PATH,
    NETWORK_MANAGER,
    NETWORK_MANAGER_PATH,
)
from tests.support.dbus_session import (
    BUS_START_TIMEOUT,
    DBUS_DAEMON,
    DBUS_PACKAGE,
    DBusTestSetupError,
    _read_line,
    _stop_process,
    bus_config,
    need_tool,
)

ENV = "DBUS_SYSTEM_BUS_ADDRESS"


def socket_folder() -> Path:
    """A fresh short folder for a bus socket (pytest's folders are too deep for one)."""
    return Path(tempfile.mkdtemp(prefix="cvs-sysbus-", dir="/tmp"))


def address_of(folder: Path) -> str:
    return f"unix:path={folder / 'system_bus_socket'}"


@contextmanager
def system_bus(folder: Path, log_folder: Path) -> Iterator[str]:
    """A private bus listening at ``folder/system_bus_socket`` until the block ends."""
    need_tool(DBUS_DAEMON, DBUS_PACKAGE)
    socket_path = folder / "system_bus_socket"
    socket_path.unlink(missing_ok=True)
    log_folder.mkdir(parents=True, exist_ok=True)
    config = log_folder / f"system-bus-{time.monotonic_ns()}.conf"
    config.write_text(bus_config(socket_path), encoding="utf-8")
    process = subprocess.Popen(
        [DBUS_DAEMON, f"--config-file={config}", "--nofork", "--print-address=1"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        line = _read_line(process.stdout, time.monotonic() + BUS_START_TIMEOUT)
        if not line or not line.startswith(b"unix:"):
            raise DBusTestSetupError(f"the private system bus did not start ({line!r})")
        yield address_of(folder)
    finally:
        _stop_process(process)
        if process.stdout is not None:
            process.stdout.close()
        socket_path.unlink(missing_ok=True)


def emit(address: str, sender: str, path: str, interface: str, member: str, body: Any) -> None:
    """Send one signal as the owner of ``sender``."""
    with open_dbus_connection(address) as connection:
        reply = connection.send_and_get_reply(message_bus.RequestName(sender), timeout=5)
        if reply.body[0] != 1:  # DBUS_REQUEST_NAME_REPLY_PRIMARY_OWNER
            raise DBusTestSetupError(f"could not own {sender} on {address}: {reply.body}")
        signature = "b" if isinstance(body, bool) else "u"
        connection.send(
            new_signal(DBusAddress(path, interface=interface), member, signature, (body,))
        )
        # A round trip to the bus: the signal has been routed before the name is let go.
        connection.send_and_get_reply(message_bus.GetId(), timeout=5)


def woke_up(address: str) -> None:
    """logind's ``PrepareForSleep(false)``: the machine has just resumed."""
    emit(address, LOGIND, LOGIND_PATH, LOGIND_MANAGER, "PrepareForSleep", False)


def going_to_sleep(address: str) -> None:
    emit(address, LOGIND, LOGIND_PATH, LOGIND_MANAGER, "PrepareForSleep", True)


def network_state(address: str, state: int) -> None:
    """NetworkManager's ``StateChanged(state)`` (70: connected globally)."""
    emit(address, NETWORK_MANAGER, NETWORK_MANAGER_PATH, NETWORK_MANAGER, "StateChanged", state)
