"""Tests of the D-Bus notification test infrastructure, through real clients.

This module owns the proof that :mod:`tests.support.dbus_session`,
:mod:`tests.support.dbus_fixtures` and :mod:`tests.support.notify_server`
work: notifications sent by ``notify-send``, plyer (both its notify-send and
its dbus-python backends) and jeepney travel over a real private dbus-daemon
to the recording server and are read back intact; a hung server really
blocks clients; buses are independent; start-up failures are loud.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import plyer
import pytest
from jeepney import DBusAddress, HeaderFields, MatchRule, Message, MessageType, new_method_call
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import DBusConnection, Proxy, open_dbus_connection

from tests.support.dbus_fixtures import (  # noqa: F401
    hung_notification_server,
    notification_server,
    notify_send,
    session_bus,
)
from tests.support.dbus_session import (
    DBUS_DAEMON,
    DBUS_PACKAGE,
    NOTIFICATIONS_BUS_NAME,
    NOTIFICATIONS_INTERFACE,
    NOTIFICATIONS_PATH,
    DBusTestSetupError,
    RecordingNotificationServer,
    env_for_bus,
    jeepney_notify,
    kill_and_reap,
    missing,
    need_tool,
    private_bus,
    read_records,
    requires_dbus,
    requires_notify_send,
)

pytestmark = pytest.mark.timeout(60)

CLIENT_TIMEOUT = 20.0
HANG_PROBE = 1.5


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


@pytest.fixture
def bus_conn(session_bus: str) -> Iterator[DBusConnection]:  # noqa: F811
    with open_dbus_connection(bus=session_bus, auth_timeout=5.0) as conn:
        yield conn


def call(
    conn: DBusConnection,
    member: str,
    signature: str | None = None,
    body: tuple[Any, ...] = (),
    *,
    interface: str | None = NOTIFICATIONS_INTERFACE,
    path: str = NOTIFICATIONS_PATH,
    timeout: float = 5.0,
) -> Message:
    """Call a method on the notification server; return the reply (maybe an error)."""
    target = DBusAddress(path, bus_name=NOTIFICATIONS_BUS_NAME, interface=interface)
    reply: Message = conn.send_and_get_reply(
        new_method_call(target, member, signature, body), timeout=timeout
    )
    return reply


def error_name(reply: Message) -> str | None:
    if reply.header.message_type != MessageType.error:
        return None
    name: str = reply.header.fields[HeaderFields.error_name]
    return name


def socket_path(address: str) -> Path:
    """The socket path of a ``unix:path=...,guid=...`` address."""
    transport, _, params = address.partition(":")
    assert transport == "unix", address
    values = dict(kv.split("=", 1) for kv in params.split(","))
    return Path(values["path"])


def python_with_dbus_module() -> str | None:
    """An interpreter that can ``import dbus`` (this one, or Debian's python3-dbus)."""
    for candidate in (sys.executable, "/usr/bin/python3"):
        if not os.access(candidate, os.X_OK):
            continue
        probe = subprocess.run(
            [candidate, "-c", "import dbus"], capture_output=True, timeout=CLIENT_TIMEOUT
        )
        if probe.returncode == 0:
            return candidate
    return None


PLYER_SNIPPET = (
    "from plyer import notification\n"
    "notification.notify(title={title!r}, message={message!r}, app_name={app_name!r})\n"
)


# --------------------------------------------------------------------------
# (a) notify-send
# --------------------------------------------------------------------------


@requires_dbus
@requires_notify_send
@pytest.mark.parametrize(
    ("summary", "body"),
    [
        ("Title", "Body"),
        ("Sync ✓ — café", "line one\nline two <b>bold</b> &amp; 'quotes' \"double\""),
    ],
    ids=["plain", "unicode-markup"],
)
def test_notify_send_arrives_with_summary_and_body_intact(
    notification_server: RecordingNotificationServer,  # noqa: F811
    session_bus: str,  # noqa: F811
    notify_send: str,  # noqa: F811
    summary: str,
    body: str,
) -> None:
    proc = subprocess.Popen(
        [notify_send, summary, body],
        env=env_for_bus(session_bus),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _out, err = proc.communicate(timeout=CLIENT_TIMEOUT)
    finally:
        kill_and_reap(proc)
    assert proc.returncode == 0, err

    # The server fsyncs the record before it replies, and notify-send only
    # exits after the reply: the record is complete now, no waiting needed.
    [record] = notification_server.notifications()
    assert record["summary"] == summary
    assert record["body"] == body
    assert record["app_name"] == "notify-send"
    assert record["app_icon"] == ""
    assert record["replaces_id"] == 0
    assert record["actions"] == []
    assert record["expire_timeout"] == -1  # "server default"
    # libnotify 0.8 adds the urgency byte (1 = normal) and the client's pid.
    assert record["hints"] == {"urgency": 1, "sender-pid": proc.pid}
    assert record["sender"].startswith(":")
    assert record["sender"] != notification_server.unique_name
    assert abs(record["time"] - time.time()) < 60


# --------------------------------------------------------------------------
# (b) plyer in a subprocess
# --------------------------------------------------------------------------


@requires_dbus
def test_plyer_notify_in_subprocess_arrives(
    notification_server: RecordingNotificationServer,  # noqa: F811
    session_bus: str,  # noqa: F811
) -> None:
    uses_dbus_python = importlib.util.find_spec("dbus") is not None
    if not uses_dbus_python:
        # plyer falls back to the notify-send binary without the dbus module.
        need_tool("notify-send", "Debian's libnotify-bin")
    code = PLYER_SNIPPET.format(
        title="convosyncd: handoff ready", message="pulled 3 commits", app_name="convosyncd"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env_for_bus(session_bus),
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr

    [record] = notification_server.wait_for(lambda ns: len(ns) >= 1, timeout=5.0)
    assert record["summary"] == "convosyncd: handoff ready"
    assert record["body"] == "pulled 3 commits"
    assert record["app_name"] == "convosyncd"
    assert record["app_icon"] == ""
    assert record["actions"] == []
    if uses_dbus_python:
        assert record["expire_timeout"] == 10_000  # plyer's timeout=10 s, in ms
    else:
        # plyer's notify-send backend passes "-t 0": 0 means "never expire".
        assert record["expire_timeout"] == 0
        assert record["hints"]["urgency"] == 1
        assert "The Python dbus package is not installed" in done.stderr


@requires_dbus
def test_plyer_dbus_python_backend_arrives(
    notification_server: RecordingNotificationServer,  # noqa: F811
    session_bus: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """plyer's NotifyDbus backend: dbus-python needs our Introspect to type ``[]`` and ``{}``."""
    python = python_with_dbus_module()
    if python is None:
        missing("no Python with the dbus module: install Debian's python3-dbus")
    env = env_for_bus(session_bus)
    if python != sys.executable:
        # Give that interpreter this venv's plyer (pure Python) and nothing else.
        shim = tmp_path / "plyer-shim"
        shim.mkdir()
        (shim / "plyer").symlink_to(Path(plyer.__file__).parent)
        env["PYTHONPATH"] = str(shim)
    code = PLYER_SNIPPET.format(title="via dbus-python", message="body", app_name="convosyncd")
    done = subprocess.run(
        [python, "-c", code], env=env, capture_output=True, text=True, timeout=CLIENT_TIMEOUT
    )
    assert done.returncode == 0, done.stderr

    [record] = notification_server.notifications()
    assert record["summary"] == "via dbus-python"
    assert record["body"] == "body"
    assert record["app_name"] == "convosyncd"
    assert record["expire_timeout"] == 10_000
    assert record["hints"] == {}
    assert record["actions"] == []


# --------------------------------------------------------------------------
# (c) hung server
# --------------------------------------------------------------------------


@requires_dbus
@requires_notify_send
def test_hung_server_blocks_notify_send_until_killed(
    hung_notification_server: RecordingNotificationServer,  # noqa: F811
    session_bus: str,  # noqa: F811
    notify_send: str,  # noqa: F811
    bus_conn: DBusConnection,
) -> None:
    # The name really belongs to the hung server...
    bus = Proxy(message_bus, bus_conn, timeout=5.0)
    assert bus.GetNameOwner(NOTIFICATIONS_BUS_NAME) == (hung_notification_server.unique_name,)
    # ...and it answers nothing, not even Peer.Ping.
    with pytest.raises(TimeoutError):
        call(bus_conn, "Ping", interface="org.freedesktop.DBus.Peer", timeout=0.2)

    started = time.monotonic()
    proc = subprocess.Popen(
        [notify_send, "Title", "Body"],
        env=env_for_bus(session_bus),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=HANG_PROBE)
        assert time.monotonic() - started >= HANG_PROBE
    finally:
        status = kill_and_reap(proc)
    assert status == -signal.SIGKILL
    assert proc.poll() == -signal.SIGKILL
    assert hung_notification_server.stop() == 0, "a hung server still obeys SIGTERM"


# --------------------------------------------------------------------------
# (d) buses are fresh and independent
# --------------------------------------------------------------------------


@requires_dbus
def test_two_buses_one_after_another_both_work(tmp_path: Path) -> None:
    need_tool(DBUS_DAEMON, DBUS_PACKAGE)
    sockets: list[Path] = []
    for n in (1, 2):
        with (
            private_bus(tmp_path / f"bus{n}") as address,
            RecordingNotificationServer(address, tmp_path / f"rec{n}.jsonl") as server,
        ):
            sockets.append(socket_path(address))
            assert sockets[-1].is_socket()
            assert len(os.fsencode(sockets[-1])) < 108
            assert jeepney_notify(address, f"bus {n}", "hello") == 1
            [record] = server.notifications()
            assert record["summary"] == f"bus {n}"
        assert server.stop() == 0, "SIGTERM ends the server cleanly"
        assert not sockets[-1].parent.exists(), "the bus's socket folder is removed"
    assert sockets[0] != sockets[1]


@requires_dbus
def test_private_bus_never_auto_starts_a_notification_daemon(bus_conn: DBusConnection) -> None:
    bus = Proxy(message_bus, bus_conn, timeout=5.0)
    (activatable,) = bus.ListActivatableNames()
    assert NOTIFICATIONS_BUS_NAME not in activatable
    reply = call(bus_conn, "GetServerInformation")
    assert error_name(reply) == "org.freedesktop.DBus.Error.ServiceUnknown", reply


# --------------------------------------------------------------------------
# (e) loud start-up failures
# --------------------------------------------------------------------------


@requires_dbus
def test_server_without_a_running_bus_fails_clearly(tmp_path: Path) -> None:
    need_tool(DBUS_DAEMON, DBUS_PACKAGE)
    with private_bus(tmp_path / "bus") as address:
        pass  # the bus is gone now; its address is stale
    started = time.monotonic()
    server = RecordingNotificationServer(address, tmp_path / "rec.jsonl")
    with pytest.raises(
        DBusTestSetupError, match=r"exited with status 2 before it was ready"
    ) as info:
        server.start()
    assert time.monotonic() - started < 5.0, "fails fast instead of waiting for the time limit"
    message = str(info.value)
    assert "cannot serve org.freedesktop.Notifications" in message
    assert address in message
    assert "FileNotFoundError" in message or "ConnectionRefusedError" in message


@requires_dbus
def test_second_server_cannot_steal_the_name(
    notification_server: RecordingNotificationServer,  # noqa: F811
    session_bus: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    second = RecordingNotificationServer(session_bus, tmp_path / "second.jsonl")
    with pytest.raises(DBusTestSetupError, match=r"already owned by :") as info:
        second.start()
    assert notification_server.unique_name in str(info.value)


# --------------------------------------------------------------------------
# the server's D-Bus surface, through jeepney
# --------------------------------------------------------------------------


@requires_dbus
def test_introspection_describes_every_served_method(
    notification_server: RecordingNotificationServer,  # noqa: F811
    bus_conn: DBusConnection,
) -> None:
    reply = call(bus_conn, "Introspect", interface="org.freedesktop.DBus.Introspectable")
    assert error_name(reply) is None, reply
    (xml,) = reply.body
    root = ET.fromstring(xml)  # noqa: S314 - XML produced by our own test server
    methods = {
        (iface.get("name"), method.get("name")): [
            (arg.get("direction"), arg.get("type")) for arg in method.iter("arg")
        ]
        for iface in root.iter("interface")
        for method in iface.iter("method")
    }
    notifications = NOTIFICATIONS_INTERFACE
    assert methods[(notifications, "Notify")] == [
        *(("in", t) for t in ("s", "u", "s", "s", "s", "as", "a{sv}", "i")),
        ("out", "u"),
    ]
    assert methods[(notifications, "GetCapabilities")] == [("out", "as")]
    assert methods[(notifications, "GetServerInformation")] == [("out", "s")] * 4
    assert methods[(notifications, "CloseNotification")] == [("in", "u")]
    assert methods[("org.freedesktop.DBus.Introspectable", "Introspect")] == [("out", "s")]
    assert methods[("org.freedesktop.DBus.Peer", "Ping")] == []

    # Parent paths introspect too, so tree-walking tools find the object.
    parent = call(
        bus_conn, "Introspect", interface="org.freedesktop.DBus.Introspectable", path="/org"
    )
    children = [n.get("name") for n in ET.fromstring(parent.body[0]).findall("node")]  # noqa: S314
    assert children == ["freedesktop"]


@requires_dbus
def test_server_methods_errors_ids_and_signals(
    notification_server: RecordingNotificationServer,  # noqa: F811
    bus_conn: DBusConnection,
) -> None:
    assert call(bus_conn, "GetCapabilities").body == (["body"],)
    assert len(call(bus_conn, "GetServerInformation").body) == 4
    ping = call(bus_conn, "Ping", interface="org.freedesktop.DBus.Peer")
    assert ping.header.message_type == MessageType.method_return

    expected_errors = {
        "org.freedesktop.DBus.Error.UnknownMethod": call(bus_conn, "NoSuchMethod"),
        "org.freedesktop.DBus.Error.UnknownInterface": call(
            bus_conn, "GetAll", "s", ("x",), interface="org.freedesktop.DBus.Properties"
        ),
        "org.freedesktop.DBus.Error.UnknownObject": call(bus_conn, "GetCapabilities", path="/x"),
        "org.freedesktop.DBus.Error.InvalidArgs": call(bus_conn, "Notify", "s", ("only one",)),
    }
    for name, reply in expected_errors.items():
        assert error_name(reply) == name, reply
        assert isinstance(reply.body[0], str)
        assert reply.body[0]

    # Ids increase; replaces_id of a live notification keeps its id; hints of
    # every shape come back as plain JSON values.
    image = ("(iiibiiay)", (1, 1, 4, True, 8, 4, b"\x00\x7f\x80\xff"))
    hints = {"urgency": ("y", 2), "category": ("s", "sync"), "image-data": image}
    first = jeepney_notify(notification_server.bus_address, "one", hints=hints)
    second = jeepney_notify(notification_server.bus_address, "two")
    assert (first, second) == (1, 2)
    body: tuple[Any, ...] = ("app", first, "", "one again", "", ["default", "Open"], {}, 5000)
    again = call(bus_conn, "Notify", "susssasa{sv}i", body)
    assert again.body == (first,)

    records = notification_server.notifications()
    assert [r["summary"] for r in records] == ["one", "two", "one again"]
    assert records[0]["hints"] == {
        "urgency": 2,
        "category": "sync",
        "image-data": [1, 1, 4, True, 8, 4, [0, 127, 128, 255]],
    }
    assert records[2]["replaces_id"] == first
    assert records[2]["actions"] == ["default", "Open"]
    assert records[2]["expire_timeout"] == 5000
    assert {r["sender"] for r in records[:2]}.isdisjoint({records[2]["sender"]})
    assert records[2]["sender"] == bus_conn.unique_name

    # CloseNotification answers and announces NotificationClosed(id, 3).
    # The bus matches the well-known sender name, but the signal arrives with
    # the server's unique name as sender and jeepney's local filter compares
    # that literally: the two rules need different senders.
    def closed_rule(sender: str) -> MatchRule:
        return MatchRule(
            type="signal",
            sender=sender,
            interface=NOTIFICATIONS_INTERFACE,
            member="NotificationClosed",
            path=NOTIFICATIONS_PATH,
        )

    Proxy(message_bus, bus_conn, timeout=5.0).AddMatch(closed_rule(NOTIFICATIONS_BUS_NAME))
    with bus_conn.filter(closed_rule(notification_server.unique_name)) as queue:
        closed = call(bus_conn, "CloseNotification", "u", (second,))
        assert error_name(closed) is None, closed
        signal_msg = bus_conn.recv_until_filtered(queue, timeout=5.0)
    assert signal_msg.body == (second, 3)


# --------------------------------------------------------------------------
# pieces that need no bus
# --------------------------------------------------------------------------


def test_read_records_tolerates_a_partially_written_last_line(tmp_path: Path) -> None:
    record = tmp_path / "rec.jsonl"
    assert read_records(record) == []
    record.write_text('{"summary": "a"}\n{"summary": "b"}\n{"summ', encoding="utf-8")
    assert read_records(record) == [{"summary": "a"}, {"summary": "b"}]
    record.write_text('{"summary": "a"}\nnot json\n', encoding="utf-8")
    with pytest.raises(DBusTestSetupError, match=r"rec\.jsonl:2: not a JSON line"):
        read_records(record)


def test_need_tool_skips_locally_but_fails_under_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no tools at all
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(
        pytest.skip.Exception, match=r"install Debian's dbus package \(dbus-daemon\)"
    ):
        need_tool(DBUS_DAEMON, DBUS_PACKAGE)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(
        pytest.fail.Exception, match=r"install Debian's libnotify-bin \(notify-send\)"
    ):
        need_tool("notify-send", "Debian's libnotify-bin")
    monkeypatch.setenv("PATH", os.defpath)
    if shutil.which("sh") is not None:
        need_tool("sh", "a shell")  # present: neither skips nor fails


def test_env_for_bus_points_clients_at_the_bus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/elsewhere")
    env = env_for_bus("unix:path=/tmp/cvs-bus-x/bus.sock")
    assert env["DBUS_SESSION_BUS_ADDRESS"] == "unix:path=/tmp/cvs-bus-x/bus.sock"
    assert "DISPLAY" not in env
    assert env["PATH"] == os.environ["PATH"]
    assert os.environ["DBUS_SESSION_BUS_ADDRESS"] == "unix:path=/elsewhere", "a copy"
