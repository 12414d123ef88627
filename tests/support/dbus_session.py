"""Private D-Bus session buses and recording notification servers for tests.

This module owns the *process management* side of the notification test
path:

* :func:`private_bus` starts a throw-away ``dbus-daemon`` (a child process of
  the test run, on a fresh short socket path, with no service directories so
  no real notification daemon is ever auto-started) and yields its address;
* :class:`RecordingNotificationServer` runs ``tests.support.notify_server`` on
  such a bus and reads back the notifications it recorded;
* :func:`env_for_bus` builds the environment a client subprocess needs to talk
  to that bus;
* :func:`need_tool`, :data:`requires_dbus` and :data:`requires_notify_send`
  decide whether a missing system tool skips a test or, under ``CI=true``,
  fails it;
* :func:`jeepney_notify` is a pure-Python client for tests that do not want to
  depend on ``notify-send``.

The pytest fixtures built on these live in :mod:`tests.support.dbus_fixtures`.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NoReturn
from xml.sax.saxutils import escape as xml_escape

import pytest
from jeepney import DBusAddress, MessageType, new_method_call
from jeepney.io.blocking import open_dbus_connection

REPO_ROOT = Path(__file__).resolve().parents[2]

NOTIFICATIONS_BUS_NAME = "org.freedesktop.Notifications"
NOTIFICATIONS_PATH = "/org/freedesktop/Notifications"
NOTIFICATIONS_INTERFACE = "org.freedesktop.Notifications"

DBUS_DAEMON = "dbus-daemon"
DBUS_PACKAGE = "Debian's dbus package"
NOTIFY_SEND = "notify-send"
NOTIFY_SEND_PACKAGE = "Debian's libnotify-bin"

BUS_START_TIMEOUT = 10.0
SERVER_READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
POLL_INTERVAL = 0.02

# sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_UNIX_SOCKET_PATH = 107
# Characters that need no escaping in a D-Bus address value (D-Bus specification).
_ADDRESS_SAFE = re.compile(r"[-0-9A-Za-z_/.\\*]+")

Notification = dict[str, Any]


class DBusTestSetupError(RuntimeError):
    """A private bus or the recording notification server could not be set up."""


# --------------------------------------------------------------------------
# Missing tools: skip locally, fail under CI
# --------------------------------------------------------------------------


def in_ci() -> bool:
    """True when the environment variable ``CI`` is ``true`` (as CI services set it)."""
    return os.environ.get("CI", "").strip().lower() == "true"


def missing_tool_message(name: str, package: str) -> str:
    return f"{name} is not on PATH: install {package} ({name})"


def need_tool(name: str, package: str) -> None:
    """Skip the running test when ``name`` is not on PATH, or fail it when ``CI=true``.

    ``package`` says what provides it, e.g. ``need_tool("dbus-daemon",
    DBUS_PACKAGE)`` gives "install Debian's dbus package (dbus-daemon)".
    """
    if shutil.which(name) is not None:
        return
    missing(missing_tool_message(name, package))


def missing(message: str) -> NoReturn:
    """Skip the running test for want of ``message``'s tool, or fail it when ``CI=true``."""
    if in_ci():
        pytest.fail(f"{message} [CI=true: a missing tool fails instead of skipping]", pytrace=False)
    pytest.skip(message)


requires_dbus = pytest.mark.skipif(
    shutil.which(DBUS_DAEMON) is None and not in_ci(),
    reason=missing_tool_message(DBUS_DAEMON, DBUS_PACKAGE),
)
"""Skip when dbus-daemon is missing (under CI=true the fixtures fail instead)."""

requires_notify_send = pytest.mark.skipif(
    shutil.which(NOTIFY_SEND) is None and not in_ci(),
    reason=missing_tool_message(NOTIFY_SEND, NOTIFY_SEND_PACKAGE),
)
"""Skip when notify-send is missing (under CI=true the fixtures fail instead)."""


def env_for_bus(address: str) -> dict[str, str]:
    """A copy of ``os.environ`` that points session-bus clients at ``address``.

    ``DISPLAY`` is removed so no client can fall back to X11 autolaunch of a
    different bus.
    """
    env = dict(os.environ)
    env["DBUS_SESSION_BUS_ADDRESS"] = address
    env.pop("DISPLAY", None)
    return env


# --------------------------------------------------------------------------
# Private bus
# --------------------------------------------------------------------------


def _short_tmp_root() -> str:
    """/tmp when usable: pytest's tmp paths are often too long for a socket path."""
    if os.path.isdir("/tmp") and os.access("/tmp", os.W_OK | os.X_OK):
        return "/tmp"
    return tempfile.gettempdir()


def bus_config(socket_path: Path) -> str:
    """dbus-daemon configuration for a permissive private session bus.

    No ``<servicedir>`` and no ``<standard_session_servicedirs/>``: nothing is
    ever auto-started, so only the servers a test starts itself can answer.
    """
    return f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={xml_escape(str(socket_path))}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def _stop_process(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; always reaps the child."""
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(timeout=timeout)


def _read_line(stream: IO[bytes], deadline: float) -> bytes | None:
    """Read one line from a pipe before ``deadline``; None on timeout, partial data on EOF."""
    fd = stream.fileno()
    data = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                return data
            data += chunk
    return data.split(b"\n", 1)[0]


@contextmanager
def private_bus(tmp_dir: Path, *, start_timeout: float = BUS_START_TIMEOUT) -> Iterator[str]:
    """Run a private dbus-daemon session bus; yield its address.

    The socket lives in a fresh ``/tmp/cvs-bus-*`` folder (short path, never
    shared between buses); the config file and the daemon's stderr go to
    ``tmp_dir``.  dbus-daemon runs with ``--nofork`` as our child, so exit can
    terminate *and reap* it.
    """
    sock_dir = Path(tempfile.mkdtemp(prefix="cvs-bus-", dir=_short_tmp_root()))
    try:
        socket_path = sock_dir / "bus.sock"
        if len(os.fsencode(socket_path)) > _MAX_UNIX_SOCKET_PATH:
            raise DBusTestSetupError(f"socket path too long for AF_UNIX: {socket_path}")
        if not _ADDRESS_SAFE.fullmatch(str(socket_path)):
            raise DBusTestSetupError(f"socket path needs D-Bus address escaping: {socket_path}")
        tmp_dir.mkdir(parents=True, exist_ok=True)
        config_path = tmp_dir / f"{sock_dir.name}.conf"
        config_path.write_text(bus_config(socket_path), encoding="utf-8")
        stderr_path = tmp_dir / f"{sock_dir.name}.stderr"

        with stderr_path.open("wb") as stderr_file:
            proc = subprocess.Popen(
                [DBUS_DAEMON, f"--config-file={config_path}", "--nofork", "--print-address=1"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr_file,
            )
        try:
            assert proc.stdout is not None
            line = _read_line(proc.stdout, time.monotonic() + start_timeout)
            if line is None:
                raise DBusTestSetupError(
                    f"dbus-daemon did not print its address within {start_timeout:g} s "
                    f"(config {config_path}); stderr: {_read_text(stderr_path)!r}"
                )
            address = line.decode("utf-8", errors="replace").strip()
            if not address.startswith("unix:"):
                try:  # stdout closed: the daemon is on its way out
                    status: int | None = proc.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    status = None
                raise DBusTestSetupError(
                    f"dbus-daemon did not start (exit status {status}, printed {address!r}, "
                    f"config {config_path}); stderr: {_read_text(stderr_path)!r}"
                )
            yield address
        finally:
            _stop_process(proc)
            if proc.stdout is not None:
                proc.stdout.close()
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


# --------------------------------------------------------------------------
# Recording notification server
# --------------------------------------------------------------------------


def read_records(path: Path) -> list[Notification]:
    """Parse a JSON-lines record file; a last line without its newline is ignored.

    The server writes each line with one write + flush + fsync, so only the
    line being written at this instant can be incomplete; a complete line that
    is not valid JSON is a real error and raises.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    complete, _, _partial = text.rpartition("\n")
    records: list[Notification] = []
    for number, line in enumerate(complete.split("\n") if complete else [], start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DBusTestSetupError(f"{path}:{number}: not a JSON line: {line!r}") from exc
        if not isinstance(value, dict):
            raise DBusTestSetupError(f"{path}:{number}: not a JSON object: {line!r}")
        records.append(value)
    return records


class RecordingNotificationServer:
    """``python -m tests.support.notify_server`` as a child process, plus its record.

    Use as a context manager::

        with RecordingNotificationServer(address, tmp_path / "n.jsonl") as server:
            ...  # send notifications
            server.wait_for(lambda ns: len(ns) == 1, timeout=5)

    The record file is truncated on start.  The ready file and the server's
    stderr sit next to it (``<record>.ready``, ``<record>.stderr``).
    """

    def __init__(
        self,
        bus_address: str,
        record_file: Path,
        *,
        hang: bool = False,
        ready_timeout: float = SERVER_READY_TIMEOUT,
    ) -> None:
        self.bus_address = bus_address
        self.record_file = record_file
        self.hang = hang
        self.ready_timeout = ready_timeout
        self.ready_file = record_file.with_name(record_file.name + ".ready")
        self.stderr_file = record_file.with_name(record_file.name + ".stderr")
        self.unique_name = ""
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        return self._require_proc().pid

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "tests.support.notify_server",
            "--bus",
            self.bus_address,
            "--record",
            str(self.record_file),
            "--ready",
            str(self.ready_file),
        ]
        if self.hang:
            cmd.append("--hang")
        return cmd

    def start(self) -> None:
        if self._proc is not None:
            raise DBusTestSetupError("server already started")
        self.record_file.parent.mkdir(parents=True, exist_ok=True)
        self.record_file.write_bytes(b"")
        self.ready_file.unlink(missing_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        with self.stderr_file.open("wb") as stderr:
            self._proc = subprocess.Popen(
                self.command(),
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        proc = self._require_proc()
        deadline = time.monotonic() + self.ready_timeout
        while not self.ready_file.exists():
            status = proc.poll()
            if status is not None:
                raise DBusTestSetupError(
                    f"notification server exited with status {status} before it was ready; "
                    f"stderr: {self.stderr_text()!r}"
                )
            if time.monotonic() >= deadline:
                raise DBusTestSetupError(
                    f"notification server not ready within {self.ready_timeout:g} s; "
                    f"stderr: {self.stderr_text()!r}"
                )
            time.sleep(POLL_INTERVAL)
        ready = json.loads(self.ready_file.read_text(encoding="utf-8"))
        self.unique_name = str(ready["unique_name"])

    def stop(self) -> int | None:
        """SIGTERM the server, wait (SIGKILL after 5 s); return its exit status."""
        if self._proc is None:
            return None
        return _stop_process(self._proc)

    def __enter__(self) -> RecordingNotificationServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stderr_text(self) -> str:
        return _read_text(self.stderr_file)

    def notifications(self) -> list[Notification]:
        """Everything recorded so far, oldest first."""
        return read_records(self.record_file)

    def wait_for(
        self, predicate: Callable[[list[Notification]], bool], timeout: float
    ) -> list[Notification]:
        """Poll the record every 20 ms until ``predicate(records)`` holds; return the records.

        Raises AssertionError (listing what did arrive) once ``timeout`` seconds
        pass, or at once if the server process has died.
        """
        deadline = time.monotonic() + timeout
        while True:
            records = self.notifications()
            if predicate(records):
                return records
            status = self._require_proc().poll()
            if status is not None:
                raise AssertionError(
                    f"notification server died (status {status}) while waiting; "
                    f"recorded {records!r}; stderr: {self.stderr_text()!r}"
                )
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"condition not met within {timeout:g} s; recorded {len(records)} "
                    f"notification(s): {records!r}"
                )
            time.sleep(POLL_INTERVAL)

    def _require_proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise DBusTestSetupError("server not started")
        return self._proc


# --------------------------------------------------------------------------
# A pure-Python client
# --------------------------------------------------------------------------


def jeepney_notify(
    address: str,
    summary: str,
    body: str = "",
    *,
    app_name: str = "tests",
    hints: Mapping[str, tuple[str, Any]] | None = None,
    expire_timeout: int = -1,
    timeout: float = 5.0,
) -> int:
    """Send one ``Notify`` call to ``address`` with jeepney; return the notification id.

    ``hints`` values are jeepney variants: ``(signature, value)`` pairs.  The
    reply wait is limited by ``timeout`` (TimeoutError); jeepney's own Hello at
    connect time has no limit of its own, pytest-timeout is the backstop.
    """
    target = DBusAddress(
        NOTIFICATIONS_PATH, bus_name=NOTIFICATIONS_BUS_NAME, interface=NOTIFICATIONS_INTERFACE
    )
    msg = new_method_call(
        target,
        "Notify",
        "susssasa{sv}i",
        (app_name, 0, "", summary, body, [], dict(hints or {}), expire_timeout),
    )
    with open_dbus_connection(bus=address, auth_timeout=timeout) as conn:
        reply = conn.send_and_get_reply(msg, timeout=timeout)
    if reply.header.message_type == MessageType.error:
        raise DBusTestSetupError(f"Notify failed: {reply.body!r}")
    (notification_id,) = reply.body
    return int(notification_id)


def kill_and_reap(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> int:
    """SIGKILL ``proc`` if still running and reap it (for clients a test started)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    return proc.wait(timeout=timeout)
