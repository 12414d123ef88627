"""A recording ``org.freedesktop.Notifications`` server for tests.

This module owns the *server side* of the test notification path: a small,
pure-Python (jeepney, blocking I/O) D-Bus service that takes the well-known
name ``org.freedesktop.Notifications`` on a private bus and appends one JSON
line per ``Notify`` call to a record file, so tests can read back exactly what
a real client (``notify-send``, plyer, dbus-python, ...) sent.

Run it from the repository root::

    python -m tests.support.notify_server --bus ADDRESS --record FILE --ready FILE [--hang]

* ``--bus``: the D-Bus address to connect to (as printed by ``dbus-daemon``).
* ``--record``: file the ``Notify`` calls are appended to (JSON lines, each
  flushed and fsynced before the reply is sent).
* ``--ready``: written atomically (temp file + rename) once the name is owned;
  it holds a small JSON object (pid, unique_name, bus, hang).
* ``--hang``: own the name, write the ready file and then never reply to any
  method call at all (calls are still read and ``Notify`` calls are still
  recorded), so clients run into their own time limits.

Served object ``/org/freedesktop/Notifications``:

* ``org.freedesktop.Notifications``: ``Notify(susssasa{sv}i) -> u``,
  ``GetCapabilities() -> as``, ``GetServerInformation() -> ssss``,
  ``CloseNotification(u)`` (emits ``NotificationClosed(id, 3)`` for ids it
  issued);
* ``org.freedesktop.DBus.Introspectable.Introspect() -> s`` (also on the
  parent paths ``/``, ``/org`` and ``/org/freedesktop``);
* ``org.freedesktop.DBus.Peer.Ping()`` and ``GetMachineId() -> s``.

Anything else gets a D-Bus error reply (``UnknownObject``, ``UnknownInterface``,
``UnknownMethod`` or ``InvalidArgs``).  Exit status: 0 after SIGTERM/SIGINT,
1 when the bus connection is lost, 2 when the name cannot be owned or the
start-up does not finish within ``--startup-timeout`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any, NoReturn

from jeepney import (
    DBusAddress,
    HeaderFields,
    Message,
    MessageFlag,
    MessageType,
    new_error,
    new_method_return,
    new_signal,
)
from jeepney.bus_messages import DBusNameFlags, message_bus
from jeepney.io.blocking import DBusConnection, Proxy, open_dbus_connection
from jeepney.low_level import Array, DictEntry, Struct, Variant, parse_signature

BUS_NAME = "org.freedesktop.Notifications"
OBJECT_PATH = "/org/freedesktop/Notifications"
NOTIFICATIONS_IFACE = "org.freedesktop.Notifications"
INTROSPECTABLE_IFACE = "org.freedesktop.DBus.Introspectable"
PEER_IFACE = "org.freedesktop.DBus.Peer"

SERVER_INFORMATION = ("convosyncd-test-recorder", "convosyncd", "1.0", "1.2")
CAPABILITIES = ["body"]

# RequestName reply codes (D-Bus specification).
_REQUEST_NAME_PRIMARY_OWNER = 1
_REQUEST_NAME_ALREADY_OWNER = 4

# NotificationClosed reason "closed by a call to CloseNotification".
_CLOSED_BY_CALL = 3

_ERR_UNKNOWN_OBJECT = "org.freedesktop.DBus.Error.UnknownObject"
_ERR_UNKNOWN_INTERFACE = "org.freedesktop.DBus.Error.UnknownInterface"
_ERR_UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
_ERR_INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
_ERR_FAILED = "org.freedesktop.DBus.Error.Failed"

_INTROSPECT_DOCTYPE = (
    '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
    ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n'
)

JSONValue = Any  # what json.dumps accepts; D-Bus values are converted into it


class StartupError(Exception):
    """The server could not connect, own its name or get ready in time."""


@dataclass(frozen=True)
class Arg:
    """One argument of a D-Bus method or signal, for the introspection XML."""

    name: str
    signature: str


@dataclass(frozen=True)
class MethodSpec:
    """A served method: where it lives, what it takes and what it returns."""

    interface: str
    name: str
    in_args: tuple[Arg, ...] = ()
    out_args: tuple[Arg, ...] = ()

    @property
    def in_signature(self) -> str:
        return "".join(a.signature for a in self.in_args)

    @property
    def out_signature(self) -> str:
        return "".join(a.signature for a in self.out_args)


@dataclass(frozen=True)
class SignalSpec:
    """A signal of a served interface, for the introspection XML."""

    interface: str
    name: str
    args: tuple[Arg, ...] = ()


METHODS: tuple[MethodSpec, ...] = (
    MethodSpec(
        NOTIFICATIONS_IFACE,
        "Notify",
        in_args=(
            Arg("app_name", "s"),
            Arg("replaces_id", "u"),
            Arg("app_icon", "s"),
            Arg("summary", "s"),
            Arg("body", "s"),
            Arg("actions", "as"),
            Arg("hints", "a{sv}"),
            Arg("expire_timeout", "i"),
        ),
        out_args=(Arg("id", "u"),),
    ),
    MethodSpec(NOTIFICATIONS_IFACE, "GetCapabilities", out_args=(Arg("capabilities", "as"),)),
    MethodSpec(
        NOTIFICATIONS_IFACE,
        "GetServerInformation",
        out_args=(
            Arg("name", "s"),
            Arg("vendor", "s"),
            Arg("version", "s"),
            Arg("spec_version", "s"),
        ),
    ),
    MethodSpec(NOTIFICATIONS_IFACE, "CloseNotification", in_args=(Arg("id", "u"),)),
    MethodSpec(INTROSPECTABLE_IFACE, "Introspect", out_args=(Arg("xml_data", "s"),)),
    MethodSpec(PEER_IFACE, "Ping"),
    MethodSpec(PEER_IFACE, "GetMachineId", out_args=(Arg("machine_uuid", "s"),)),
)

SIGNALS: tuple[SignalSpec, ...] = (
    SignalSpec(NOTIFICATIONS_IFACE, "NotificationClosed", (Arg("id", "u"), Arg("reason", "u"))),
    SignalSpec(NOTIFICATIONS_IFACE, "ActionInvoked", (Arg("id", "u"), Arg("action_key", "s"))),
)

# Methods answered on the parent paths of OBJECT_PATH ("/", "/org", ...).
_PARENT_PATH_INTERFACES = frozenset({INTROSPECTABLE_IFACE, PEER_IFACE})


def _arg_xml(arg: Arg, direction: str | None) -> str:
    direction_attr = f' direction="{direction}"' if direction else ""
    return f'<arg name="{arg.name}" type="{arg.signature}"{direction_attr}/>'


def introspection_xml(path: str = OBJECT_PATH) -> str:
    """Introspection XML for ``path`` (the object itself or one of its parents)."""
    all_interfaces = dict.fromkeys(m.interface for m in METHODS)
    if path == OBJECT_PATH:
        interfaces = list(all_interfaces)
    else:
        interfaces = [i for i in all_interfaces if i in _PARENT_PATH_INTERFACES]
    lines = [_INTROSPECT_DOCTYPE.rstrip("\n"), "<node>"]
    for iface in interfaces:
        lines.append(f'  <interface name="{iface}">')
        for m in (m for m in METHODS if m.interface == iface):
            if not m.in_args and not m.out_args:
                lines.append(f'    <method name="{m.name}"/>')
                continue
            lines.append(f'    <method name="{m.name}">')
            lines.extend(f"      {_arg_xml(a, 'in')}" for a in m.in_args)
            lines.extend(f"      {_arg_xml(a, 'out')}" for a in m.out_args)
            lines.append("    </method>")
        for s in (s for s in SIGNALS if s.interface == iface):
            lines.append(f'    <signal name="{s.name}">')
            lines.extend(f"      {_arg_xml(a, None)}" for a in s.args)
            lines.append("    </signal>")
        lines.append("  </interface>")
    child = _child_node_name(path)
    if child is not None:
        lines.append(f'  <node name="{child}"/>')
    lines.append("</node>")
    return "\n".join(lines) + "\n"


def _child_node_name(path: str) -> str | None:
    """Name of the next path element towards OBJECT_PATH, if ``path`` is a parent."""
    if path == OBJECT_PATH:
        return None
    prefix = "/" if path == "/" else path + "/"
    if not OBJECT_PATH.startswith(prefix):
        return None
    return OBJECT_PATH[len(prefix) :].split("/", 1)[0]


def _is_served_path(path: str) -> bool:
    return path == OBJECT_PATH or _child_node_name(path) is not None


def to_plain(value: object, signature: str) -> JSONValue:
    """Convert a value parsed by jeepney with D-Bus ``signature`` to plain JSON data.

    Variants become their contained value, structs become lists, dicts keep
    their keys (non-string keys are turned into strings, as JSON needs), byte
    arrays (``ay``, e.g. ``image-data``) become lists of ints.
    """
    return _plain(value, parse_signature(list(signature)))


def _plain(value: object, dbus_type: object) -> JSONValue:
    if isinstance(dbus_type, Variant):
        assert isinstance(value, tuple)
        inner_signature, inner_value = value
        return to_plain(inner_value, inner_signature)
    if isinstance(dbus_type, Struct):  # DictEntry is a Struct too, but arrays handle it
        assert isinstance(value, tuple)
        return [_plain(v, t) for v, t in zip(value, dbus_type.fields, strict=True)]
    if isinstance(dbus_type, Array):
        if isinstance(value, bytes):
            return list(value)
        elt_type = dbus_type.elt_type
        if isinstance(elt_type, DictEntry):
            assert isinstance(value, dict)
            key_type, value_type = elt_type.fields
            return {_json_key(_plain(k, key_type)): _plain(v, value_type) for k, v in value.items()}
        assert isinstance(value, list)
        return [_plain(v, elt_type) for v in value]
    # Basic types: str, int, float, bool (object paths and signatures are str).
    return value


def _json_key(key: JSONValue) -> str:
    return key if isinstance(key, str) else json.dumps(key)


class Recorder:
    """Appends one JSON line per notification to the record file, durably."""

    def __init__(self, path: Path) -> None:
        self._file: IO[str] = path.open("a", encoding="utf-8")

    def append(self, entry: dict[str, JSONValue]) -> None:
        self._file.write(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


class NotificationServer:
    """Dispatches incoming method calls; owns the id counter and the recorder."""

    def __init__(self, conn: DBusConnection, recorder: Recorder, *, hang: bool) -> None:
        self._conn = conn
        self._recorder = recorder
        self._hang = hang
        self._next_id = 1
        self._open_ids: set[int] = set()
        self._emitter = DBusAddress(OBJECT_PATH, interface=NOTIFICATIONS_IFACE)

    def handle(self, msg: Message) -> None:
        """Handle one incoming message (signals and replies are ignored)."""
        header = msg.header
        if header.message_type != MessageType.method_call:
            return
        try:
            reply = self._dispatch(msg)
        except Exception as exc:  # a bug here must not take the server down silently
            traceback.print_exc(file=sys.stderr)
            reply = _error(msg, _ERR_FAILED, f"{type(exc).__name__}: {exc}")
        if self._hang:
            return  # a hung server never answers, whatever the call was
        if header.flags & MessageFlag.no_reply_expected:
            return
        self._conn.send(reply)

    def _dispatch(self, msg: Message) -> Message:
        fields = msg.header.fields
        path: str = fields.get(HeaderFields.path, "")
        interface: str | None = fields.get(HeaderFields.interface)
        member: str = fields.get(HeaderFields.member, "")
        signature: str = fields.get(HeaderFields.signature, "")

        if not _is_served_path(path):
            return _error(msg, _ERR_UNKNOWN_OBJECT, f"No such object path {path!r}")
        candidates = [
            m for m in METHODS if path == OBJECT_PATH or m.interface in _PARENT_PATH_INTERFACES
        ]
        if interface is not None and not any(m.interface == interface for m in candidates):
            return _error(
                msg, _ERR_UNKNOWN_INTERFACE, f"No such interface {interface!r} at {path!r}"
            )
        matches = [
            m
            for m in candidates
            if m.name == member and (interface is None or m.interface == interface)
        ]
        if not matches:
            return _error(
                msg,
                _ERR_UNKNOWN_METHOD,
                f"No such method {member!r} in interface {interface!r} at {path!r} "
                f"(signature {signature!r})",
            )
        method = matches[0]
        if signature != method.in_signature:
            return _error(
                msg,
                _ERR_INVALID_ARGS,
                f"{method.interface}.{method.name} takes signature "
                f"{method.in_signature!r}, got {signature!r}",
            )
        handler = self._handlers()[(method.interface, method.name)]
        body = handler(msg)
        return new_method_return(msg, method.out_signature or None, body)

    def _handlers(self) -> dict[tuple[str, str], Callable[[Message], tuple[Any, ...]]]:
        return {
            (NOTIFICATIONS_IFACE, "Notify"): self._notify,
            (NOTIFICATIONS_IFACE, "GetCapabilities"): lambda _msg: (list(CAPABILITIES),),
            (NOTIFICATIONS_IFACE, "GetServerInformation"): lambda _msg: SERVER_INFORMATION,
            (NOTIFICATIONS_IFACE, "CloseNotification"): self._close_notification,
            (INTROSPECTABLE_IFACE, "Introspect"): lambda msg: (
                introspection_xml(msg.header.fields[HeaderFields.path]),
            ),
            (PEER_IFACE, "Ping"): lambda _msg: (),
            (PEER_IFACE, "GetMachineId"): lambda _msg: (_machine_id(),),
        }

    def _notify(self, msg: Message) -> tuple[int]:
        (app_name, replaces_id, app_icon, summary, body, actions, hints, expire_timeout) = msg.body
        if replaces_id and replaces_id in self._open_ids:
            notification_id = int(replaces_id)
        else:
            notification_id = self._next_id
            self._next_id += 1
        self._open_ids.add(notification_id)
        self._recorder.append(
            {
                "app_name": app_name,
                "replaces_id": replaces_id,
                "app_icon": app_icon,
                "summary": summary,
                "body": body,
                "actions": to_plain(actions, "as"),
                "hints": to_plain(hints, "a{sv}"),
                "expire_timeout": expire_timeout,
                "sender": msg.header.fields.get(HeaderFields.sender, ""),
                "time": time.time(),
            }
        )
        return (notification_id,)

    def _close_notification(self, msg: Message) -> tuple[()]:
        (notification_id,) = msg.body
        if notification_id in self._open_ids and not self._hang:
            self._open_ids.discard(notification_id)
            closed = (notification_id, _CLOSED_BY_CALL)
            self._conn.send(new_signal(self._emitter, "NotificationClosed", "uu", closed))
        return ()


def _error(msg: Message, name: str, text: str) -> Message:
    return new_error(msg, name, "s", (text,))


def _machine_id() -> str:
    for candidate in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            return Path(candidate).read_text(encoding="ascii").strip()
        except OSError:
            continue
    raise RuntimeError("no machine id in /etc/machine-id or /var/lib/dbus/machine-id")


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and a rename."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def own_name(conn: DBusConnection) -> None:
    """Become the primary owner of BUS_NAME or raise StartupError."""
    bus = Proxy(message_bus, conn)
    (code,) = bus.RequestName(BUS_NAME, DBusNameFlags.do_not_queue)
    if code not in (_REQUEST_NAME_PRIMARY_OWNER, _REQUEST_NAME_ALREADY_OWNER):
        (owner,) = bus.GetNameOwner(BUS_NAME)
        raise StartupError(
            f"cannot own {BUS_NAME}: RequestName returned {code}; "
            f"the name is already owned by {owner}"
        )


class _Terminated(BaseException):
    """SIGTERM/SIGINT arrived during start-up, while blocked inside jeepney."""


class _StopFlag:
    """SIGTERM/SIGINT handler state.

    While serving, the handler only sets ``stop``; the wakeup fd registered with
    ``signal.set_wakeup_fd`` interrupts the select so the loop sees it.  During
    start-up (blocking jeepney calls that would be retried after the handler
    returns) the handler raises instead.
    """

    def __init__(self) -> None:
        self.stop = False
        self.raise_now = True

    def handler(self, signum: int, frame: FrameType | None) -> None:
        self.stop = True
        if self.raise_now:
            raise _Terminated(signal.Signals(signum).name)


def _startup_alarm(signum: int, frame: FrameType | None) -> NoReturn:
    raise TimeoutError("start-up did not finish in time")


def connect_and_own(address: str, timeout: float) -> DBusConnection:
    """Connect to ``address`` and own BUS_NAME within ``timeout`` seconds, or raise StartupError."""
    # jeepney's Hello and RequestName calls have no time limit of their own.
    signal.signal(signal.SIGALRM, _startup_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    conn: DBusConnection | None = None
    try:
        conn = open_dbus_connection(bus=address, auth_timeout=timeout)
        own_name(conn)
    except StartupError:
        if conn is not None:
            conn.close()
        raise
    except Exception as exc:
        if conn is not None:
            conn.close()
        raise StartupError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return conn


def serve(args: argparse.Namespace) -> int:
    stop = _StopFlag()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGTERM, stop.handler)
    signal.signal(signal.SIGINT, stop.handler)

    try:
        conn = connect_and_own(args.bus, args.startup_timeout)
    except _Terminated:
        return 0
    stop.raise_now = False
    if stop.stop:  # the signal came between the last jeepney call and the line above
        conn.close()
        return 0

    recorder = Recorder(args.record)
    server = NotificationServer(conn, recorder, hang=args.hang)
    ready = {
        "pid": os.getpid(),
        "unique_name": conn.unique_name,
        "bus": args.bus,
        "hang": args.hang,
    }
    write_atomically(args.ready, json.dumps(ready) + "\n")

    selector = selectors.DefaultSelector()
    selector.register(conn.sock, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    try:
        while not stop.stop:
            # Drain everything jeepney can parse without blocking (it may have
            # buffered several messages from one read), then sleep in select.
            try:
                while not stop.stop:
                    server.handle(conn.receive(timeout=0))
            except TimeoutError:
                pass
            except (ConnectionResetError, BrokenPipeError) as exc:
                print(f"notify_server: lost the bus connection: {exc}", file=sys.stderr)
                return 1
            if stop.stop:
                break
            selector.select()  # no time limit needed: SIGTERM wakes us via wake_r
            try:
                while os.read(wake_r, 512):
                    pass
            except BlockingIOError:
                pass
    finally:
        selector.close()
        recorder.close()
        conn.close()
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.notify_server",
        description="Recording org.freedesktop.Notifications server for tests.",
    )
    parser.add_argument("--bus", required=True, help="D-Bus address to connect to")
    parser.add_argument("--record", required=True, type=Path, help="JSON-lines record file")
    parser.add_argument("--ready", required=True, type=Path, help="written once the name is owned")
    parser.add_argument("--hang", action="store_true", help="never reply to any method call")
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=10.0,
        help="seconds allowed for connecting and owning the name (default 10)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return serve(args)
    except StartupError as exc:
        print(f"notify_server: cannot serve {BUS_NAME} on {args.bus!r}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
