"""The running daemon's control socket: owner-only, one JSON request and one reply.

``convosyncd run`` listens on a unix socket so that the other commands can ask it
instead of doing its work a second time (and waiting on its locks): the session-start
hook asks for one repo to be checked now (``check``), ``convosyncd sync`` for full
cycles (``sync``), ``convosyncd status`` for the state in memory (``status``).

Only the person who runs the daemon may talk to it: the socket is 0600 in a 0700
folder, and each side checks the other's user id from the kernel (``SO_PEERCRED`` on
Linux, ``LOCAL_PEERCRED``, as ``getpeereid`` reads it, on macOS and the BSDs); a peer of
another user, or one whose id cannot be read, is refused.

Where: ``<state dir>/control/daemon.sock`` when that path fits a socket address
(``sun_path``: 108 bytes on Linux, 104 on macOS), else a new private folder made the way
:mod:`convosyncd.sshshare` makes its own (``$XDG_RUNTIME_DIR``, ``/tmp``, ``$TMPDIR``).
``<state dir>/control.json`` says which; the daemon removes both when it stops, and a
new daemon replaces what a killed one left.

The protocol: the client sends one line of JSON (an object with ``op``), the daemon
answers one line of JSON (an object with ``ok``) and closes. Both sides have time
limits: a client that connects and says nothing is dropped after
:data:`REQUEST_TIMEOUT` seconds, each connection is served in its own thread (at most
:data:`MAX_CONNECTIONS` at once), and a request says how long it may wait (``wait``,
at most :data:`MAX_WAIT`). A client that finds no daemon gets None and does the work
itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import socket
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from convosyncd import sshshare
from convosyncd.atomic import write_atomically
from convosyncd.errors import ConvosyncError

log = logging.getLogger(__name__)

VERSION = 1
FOLDER_NAME = "control"
SOCKET_NAME = "daemon.sock"
POINTER_NAME = "control.json"
REQUEST_LIMIT = 65_536
"""Bytes a request may have; requests are a few hundred."""
REPLY_LIMIT = 64 * 1_048_576
"""Bytes a reply may have: ``status`` of a few hundred repos is a few hundred kilobytes."""
REQUEST_TIMEOUT = 2.0
"""Seconds the daemon waits for a request's line after the client connected."""
REPLY_TIMEOUT = 5.0
"""Seconds the daemon may take to hand its reply to a client that does not read."""
MAX_CONNECTIONS = 16
MAX_WAIT = 3600.0
"""The longest a request may ask the daemon to wait for its work."""

Handler = Callable[[dict[str, Any]], dict[str, Any]]

# macOS and the BSDs: getsockopt(SOL_LOCAL, LOCAL_PEERCRED) fills a struct xucred
# {u_int cr_version; uid_t cr_uid; short cr_ngroups; gid_t cr_groups[16]}.
_SOL_LOCAL = 0
_LOCAL_PEERCRED = 1
_XUCRED = struct.Struct("IIh16I")


class ControlError(ConvosyncError):
    """The daemon could not be asked: it did not answer in time, or not as itself."""


def refusal(message: str, code: str) -> dict[str, Any]:
    """A reply saying no (``code`` for programs, ``message`` for people)."""
    return {"ok": False, "code": code, "error": message}


def wait_of(request: dict[str, Any]) -> float:
    """The seconds a request asks the daemon to wait, made sane."""
    value = request.get("wait", 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return 0.0
    return min(MAX_WAIT, max(0.0, float(value)))


def peer_uid(connection: socket.socket) -> int | None:
    """The user id of the process at the other end of a unix socket, or None."""
    try:
        if hasattr(socket, "SO_PEERCRED"):
            data = connection.getsockopt(
                socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
            )
            _pid, uid, _gid = struct.unpack("3i", data)
            return int(uid)
        if sys.platform == "darwin" or "bsd" in sys.platform:
            data = connection.getsockopt(_SOL_LOCAL, _LOCAL_PEERCRED, _XUCRED.size)
            _version, uid = struct.unpack_from("II", data)
            return int(uid)
    except (OSError, struct.error):
        return None
    return None


def pointer_file(state_dir: Path) -> Path:
    return state_dir / POINTER_NAME


def socket_path(state_dir: Path) -> Path | None:
    """Where the daemon of ``state_dir`` listens, as it wrote down; None if nowhere."""
    try:
        data = json.loads(pointer_file(state_dir).read_bytes().decode("utf-8"))
    except (OSError, ValueError):
        return None
    where = data.get("socket") if isinstance(data, dict) else None
    if data.get("version") != VERSION or not isinstance(where, str) or not where:
        return None
    return Path(where)


def fits(path: Path, platform: str = sys.platform) -> bool:
    """Whether ``path`` fits a unix socket address (with its closing NUL)."""
    return len(os.fsencode(str(path))) < sshshare.sun_path_bytes(platform)


def _remove_socket(path: Path) -> None:
    with contextlib.suppress(OSError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()


# -- the server (in the daemon) ---------------------------------------------------------


class ControlServer:
    """The daemon's end: accepts connections and answers each with ``handle``."""

    def __init__(self, state_dir: Path, handle: Handler) -> None:
        self.state_dir = state_dir
        self.handle = handle
        self.path: Path | None = None
        self._listener: socket.socket | None = None
        self._temporary: Path | None = None
        self._wake_reader: socket.socket | None = None
        self._wake_writer: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def start(self) -> Path:
        """Listen, write down where, and serve in a thread of its own; the socket's path."""
        self._clear_stale()
        folder = self._folder()
        path = folder / SOCKET_NAME
        _remove_socket(path)  # a killed daemon's; we hold the daemon lock
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(path))
            # The folder is 0700 already, so nobody else could reach the socket in
            # the moment between bind and chmod.
            os.chmod(path, 0o600)
            listener.listen(MAX_CONNECTIONS)
        except OSError:
            listener.close()
            raise
        self._listener, self.path = listener, path
        self._wake_reader, self._wake_writer = socket.socketpair()
        record = {"version": VERSION, "socket": str(path), "pid": os.getpid()}
        write_atomically(
            pointer_file(self.state_dir), (json.dumps(record) + "\n").encode(), durable=False
        )
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self._thread.start()
        return path

    def stop(self) -> None:
        """Stop accepting, and remove the socket, its record and a folder made for it."""
        if self._listener is None:
            return
        if self._wake_writer is not None:
            with contextlib.suppress(OSError):
                self._wake_writer.send(b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        if socket_path(self.state_dir) == self.path:
            with contextlib.suppress(OSError):
                pointer_file(self.state_dir).unlink()
        if self.path is not None:
            _remove_socket(self.path)
        if self._temporary is not None:
            with contextlib.suppress(OSError):
                self._temporary.rmdir()
        for item in (self._listener, self._wake_reader, self._wake_writer):
            if item is not None:
                item.close()
        self._listener = None

    def _folder(self) -> Path:
        """``<state dir>/control`` (0700) if a socket's path there fits, else a new
        private folder where one does."""
        folder = self.state_dir / FOLDER_NAME
        if fits(folder / SOCKET_NAME):
            with contextlib.suppress(FileExistsError):
                folder.mkdir(mode=0o700, parents=True)
            with contextlib.suppress(OSError):
                if not folder.is_symlink() and folder.lstat().st_uid == os.geteuid():
                    os.chmod(folder, 0o700)  # mkdir's mode went through the umask
            if sshshare.is_private(folder):
                return folder
            log.warning(
                "%s is not a private folder of this user (0700, not a link); "
                "the control socket goes elsewhere",
                folder,
            )
        temporary = sshshare.private_folder(sshshare.default_bases())
        if temporary is None:
            raise ConvosyncError(
                f"no private folder for the control socket: {folder} is too long for a "
                "socket path and none could be made in "
                f"{', '.join(sshshare.default_bases())}; set a shorter state_dir"
            )
        self._temporary = temporary
        return temporary

    def _clear_stale(self) -> None:
        """Remove the socket and private folder a killed daemon left behind."""
        old = socket_path(self.state_dir)
        if old is None or old.name != SOCKET_NAME:
            return
        _remove_socket(old)
        folder = old.parent
        if folder != self.state_dir / FOLDER_NAME and sshshare.is_private(folder):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: never anything but our own socket

    def _serve(self) -> None:
        assert self._listener is not None and self._wake_reader is not None
        while True:
            try:
                ready, _, _ = select.select([self._listener, self._wake_reader], [], [])
            except OSError:
                return
            if self._wake_reader in ready:
                return
            try:
                connection, _ = self._listener.accept()
            except OSError as error:
                log.warning("control socket: cannot accept a connection: %s", error)
                time.sleep(0.1)  # e.g. out of file descriptors: do not spin
                continue
            uid = peer_uid(connection)
            if uid != os.geteuid():
                log.warning(
                    "control socket: refused a connection from %s",
                    "a process whose user cannot be told" if uid is None else f"user id {uid}",
                )
                connection.close()
                continue
            if not self._slots.acquire(blocking=False):
                self._send(connection, refusal("too many requests at once", "busy"))
                connection.close()
                continue
            threading.Thread(
                target=self._answer, args=(connection,), name="control-request", daemon=True
            ).start()

    def _answer(self, connection: socket.socket) -> None:
        try:
            request = _read_line(connection, time.monotonic() + REQUEST_TIMEOUT, REQUEST_LIMIT)
            if request is None:
                return  # said nothing in time, or hung up
            try:
                message = json.loads(request.decode("utf-8"))
            except ValueError:
                message = None
            if not isinstance(message, dict) or not isinstance(message.get("op"), str):
                reply = refusal("a request is one line of JSON with an 'op'", "bad-request")
            elif message.get("version", VERSION) != VERSION:
                reply = refusal(f"protocol version {message.get('version')!r}", "version")
            else:
                try:
                    reply = self.handle(message)
                except Exception as error:
                    log.exception("control socket: unexpected error answering %s", message)
                    reply = refusal(f"unexpected {type(error).__name__}: {error}", "error")
            self._send(connection, reply)
        finally:
            connection.close()
            self._slots.release()

    @staticmethod
    def _send(connection: socket.socket, reply: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            connection.settimeout(REPLY_TIMEOUT)
            connection.sendall((json.dumps(reply) + "\n").encode("utf-8"))


def _read_line(connection: socket.socket, deadline: float, limit: int) -> bytes | None:
    """One line (without its newline) before ``deadline``; None if none came in time,
    the peer hung up first, or it was longer than ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or size > limit:
            return None
        connection.settimeout(remaining)
        try:
            chunk = connection.recv(65_536)
        except OSError:
            return None
        if not chunk:
            return None
        chunks.append(chunk)
        size += len(chunk)
        if b"\n" in chunk:
            break
    line = b"".join(chunks).split(b"\n", 1)[0]
    return line if len(line) <= limit else None


# -- the client (in the other commands) ---------------------------------------------------


def ask(state_dir: Path, request: dict[str, Any], *, timeout: float) -> dict[str, Any] | None:
    """Send ``request`` to the daemon of ``state_dir``; its reply, within ``timeout`` s.

    None when no daemon listens (none runs, or a killed one left its record behind):
    the caller then does the work itself. :class:`ControlError` when one listens but
    is not this user's, or does not answer in time.
    """
    path = socket_path(state_dir)
    if path is None:
        return None
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(max(0.01, timeout))
        try:
            connection.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            return None
        except OSError as error:
            raise ControlError(
                f"cannot reach the daemon's control socket {path}: {error}"
            ) from None
        uid = peer_uid(connection)
        if uid != os.geteuid():
            raise ControlError(
                f"the control socket {path} is not this user's daemon "
                f"({'unknown user' if uid is None else f'user id {uid}'}); not asking it. "
                "Stop whatever listens there, or remove it"
            )
        try:
            connection.sendall((json.dumps({"version": VERSION, **request}) + "\n").encode())
        except OSError as error:
            raise ControlError(f"the daemon hung up on {path}: {error}") from None
        line = _read_line(connection, deadline, REPLY_LIMIT)
    if line is None:
        raise ControlError(f"the daemon did not answer within {timeout:.1f} s")
    try:
        reply = json.loads(line.decode("utf-8"))
    except ValueError:
        reply = None
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise ControlError(f"the daemon's answer on {path} is not one this version reads")
    return reply
