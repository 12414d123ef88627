"""The control socket on its own: real unix sockets, real permissions, real user ids.

A server with a small handler runs in this process; clients are this process, raw
sockets that misbehave, or a child process that has become another user (root only,
as CI runs; elsewhere those tests skip).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from convosyncd import control
from convosyncd.control import ControlError, ControlServer
from tests.support.dbus_session import missing

NOBODY = 65534


def echo(request: dict[str, Any]) -> dict[str, Any]:
    if request.get("op") == "slow":
        time.sleep(control.wait_of(request))
    if request.get("op") == "boom":
        raise RuntimeError("handler broke")
    return {"ok": True, "echo": request}


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "state"
    folder.mkdir()
    return folder


@pytest.fixture
def server(state_dir: Path) -> Iterator[ControlServer]:
    started = ControlServer(state_dir, echo)
    started.start()
    yield started
    started.stop()


def raw(path: Path) -> socket.socket:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.settimeout(10)
    connection.connect(str(path))
    return connection


def read_all(connection: socket.socket) -> bytes:
    """Everything until the other end hangs up (a reset is a hang-up too)."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := connection.recv(65536):
            data += chunk
    return data


def test_one_request_one_reply_and_only_the_owner_can_reach_the_socket(
    server: ControlServer, state_dir: Path
) -> None:
    reply = control.ask(state_dir, {"op": "ping", "x": "é"}, timeout=5)
    assert reply == {"ok": True, "echo": {"version": 1, "op": "ping", "x": "é"}}
    assert server.path is not None
    assert control.socket_path(state_dir) == server.path
    assert stat.S_IMODE(server.path.stat().st_mode) == 0o600
    assert stat.S_ISSOCK(server.path.stat().st_mode)
    folder = server.path.parent.lstat()
    assert stat.S_IMODE(folder.st_mode) == 0o700 and folder.st_uid == os.geteuid()


def test_stopping_removes_the_socket_and_its_record(state_dir: Path) -> None:
    server = ControlServer(state_dir, echo)
    path = server.start()
    server.stop()
    assert not path.exists() and not control.pointer_file(state_dir).exists()
    assert control.ask(state_dir, {"op": "ping"}, timeout=1) is None, "no daemon: None"


def test_a_killed_daemons_socket_means_no_daemon_and_is_replaced(state_dir: Path) -> None:
    folder = state_dir / control.FOLDER_NAME
    folder.mkdir(mode=0o700)
    stale = folder / control.SOCKET_NAME
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(stale))  # bound, then gone without unlinking: as after kill -9
    control.pointer_file(state_dir).write_text(
        json.dumps({"version": 1, "socket": str(stale), "pid": 1}), encoding="utf-8"
    )
    assert control.ask(state_dir, {"op": "ping"}, timeout=1) is None
    server = ControlServer(state_dir, echo)
    try:
        assert server.start() == stale
        assert control.ask(state_dir, {"op": "ping"}, timeout=5) is not None
    finally:
        server.stop()


def test_a_state_folder_too_deep_for_a_socket_path_uses_a_short_private_folder(
    tmp_path: Path,
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60) / "state"
    deep.mkdir(parents=True)
    server = ControlServer(deep, echo)
    path = server.start()
    try:
        assert len(os.fsencode(str(path))) < 104
        assert not path.is_relative_to(deep)
        assert stat.S_IMODE(path.parent.lstat().st_mode) == 0o700
        assert control.ask(deep, {"op": "ping"}, timeout=5) is not None
    finally:
        server.stop()
    assert not path.parent.exists(), "the private folder is removed with the socket"


def test_a_client_that_says_nothing_blocks_nobody_and_is_dropped(
    server: ControlServer, state_dir: Path
) -> None:
    assert server.path is not None
    silent = [raw(server.path) for _ in range(3)]
    try:
        start = time.monotonic()
        assert control.ask(state_dir, {"op": "ping"}, timeout=5) is not None
        assert time.monotonic() - start < control.REQUEST_TIMEOUT, "served beside them"
        for connection in silent:
            assert read_all(connection) == b"", "dropped without an answer"
    finally:
        for connection in silent:
            connection.close()


@pytest.mark.parametrize(
    ("sent", "code"),
    [
        (b"not json\n", "bad-request"),
        (b"[1, 2]\n", "bad-request"),
        (b'{"no": "op"}\n', "bad-request"),
        (b'{"op": 7}\n', "bad-request"),
        (b'{"op": "ping", "version": 99}\n', "version"),
        (b'{"op": "boom"}\n', "error"),
        (b"\xff\xfe\n", "bad-request"),
    ],
)
def test_hostile_requests_get_a_refusal_not_a_crash(
    server: ControlServer, state_dir: Path, sent: bytes, code: str
) -> None:
    assert server.path is not None
    with raw(server.path) as connection:
        connection.sendall(sent)
        reply = json.loads(read_all(connection))
    assert reply["ok"] is False and reply["code"] == code
    assert control.ask(state_dir, {"op": "ping"}, timeout=5) is not None, "still serving"


def test_an_endless_request_is_cut_off(server: ControlServer, state_dir: Path) -> None:
    assert server.path is not None
    with raw(server.path) as connection:
        # The daemon may hang up mid-send: that is the point.
        with contextlib.suppress(OSError):
            connection.sendall(b'{"op": "' + b"x" * (control.REQUEST_LIMIT * 4))
        assert read_all(connection) == b""
    assert control.ask(state_dir, {"op": "ping"}, timeout=5) is not None


def test_the_wait_asked_for_is_bounded() -> None:
    assert control.wait_of({"wait": 2.5}) == 2.5
    for hostile in (-1, "soon", True, None, float("nan")):
        assert control.wait_of({"wait": hostile}) == 0.0
    assert control.wait_of({"wait": 1e12}) == control.MAX_WAIT


def test_a_daemon_that_does_not_answer_in_time_is_an_error(
    server: ControlServer, state_dir: Path
) -> None:
    with pytest.raises(ControlError, match=r"did not answer within 0\.5 s"):
        control.ask(state_dir, {"op": "slow", "wait": 3}, timeout=0.5)


def test_requests_are_served_side_by_side(server: ControlServer, state_dir: Path) -> None:
    replies: list[dict[str, Any] | None] = []
    threads = [
        threading.Thread(
            target=lambda: replies.append(
                control.ask(state_dir, {"op": "slow", "wait": 0.5}, timeout=10)
            )
        )
        for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert len(replies) == 6 and all(reply and reply["ok"] for reply in replies)


# -- other users -------------------------------------------------------------------------


SYSTEM_PYTHON = Path("/usr/bin/python3")
"""A Python that another user may run (the test's own may live in root's home)."""


def need_root() -> None:
    if os.geteuid() != 0:
        missing("these tests become another user, which needs root (as CI runs them)")
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        missing(f"{SYSTEM_PYTHON} is missing: install Debian's python3 package")


def as_nobody(code: str) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` as the user ``nobody``."""

    def become() -> None:
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    return subprocess.run(
        [str(SYSTEM_PYTHON), "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=become,
        check=False,
        cwd="/",
    )


def test_another_user_cannot_even_reach_the_socket(server: ControlServer) -> None:
    """The socket is 0600 in a 0700 folder: not even a connection."""
    need_root()
    assert server.path is not None
    code = (
        "import socket,sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        f"try: s.connect({str(server.path)!r})\n"
        "except PermissionError: sys.exit(7)\n"
    )
    assert as_nobody(code).returncode == 7


def test_another_user_is_refused_even_where_the_folder_lets_them_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The permissions are the first wall; the peer's user id, from the kernel, the second."""
    need_root()
    # A state folder too deep for a socket path puts the socket in a private folder in
    # /tmp, which the test can open up without touching anything else.
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    state_dir = tmp_path / ("s" * 100) / "state"
    state_dir.mkdir(parents=True)
    server = ControlServer(state_dir, echo)
    path = server.start()
    try:
        assert path.parent.parent == Path("/tmp")
        path.parent.chmod(0o755)
        path.chmod(0o666)
        code = (
            "import socket\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            f"s.connect({str(path)!r})\n"
            "data = b''\n"
            "try:\n"
            '    s.sendall(b\'{"op": "ping"}\\n\')\n'
            "    while chunk := s.recv(4096): data += chunk\n"
            "except (BrokenPipeError, ConnectionResetError): pass\n"
            "print(repr(data))\n"
        )
        result = as_nobody(code)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "b''", "no answer for another user"
        assert "refused a connection from user id 65534" in caplog.text
        assert control.ask(state_dir, {"op": "ping"}, timeout=5) is not None
    finally:
        path.parent.chmod(0o700)
        server.stop()


def test_a_socket_of_another_user_is_not_asked(state_dir: Path) -> None:
    need_root()
    folder = Path(tempfile.mkdtemp(prefix="cvs-theirs-", dir="/tmp"))
    folder.chmod(0o777)
    path = folder / "daemon.sock"
    code = (
        "import socket,time\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        f"s.bind({str(path)!r}); s.listen(1)\n"
        "c, _ = s.accept()\n"
        'c.sendall(b\'{"ok": true, "checked": true, "done": true}\\n\')\n'
        "time.sleep(1)\n"
    )

    def become() -> None:
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    impostor = subprocess.Popen(
        [str(SYSTEM_PYTHON), "-c", code],
        preexec_fn=become,
        cwd="/",
    )
    try:
        deadline = time.monotonic() + 10
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        control.pointer_file(state_dir).write_text(
            json.dumps({"version": 1, "socket": str(path), "pid": impostor.pid}), encoding="utf-8"
        )
        with pytest.raises(ControlError, match=r"not this user's daemon \(user id 65534"):
            control.ask(state_dir, {"op": "check"}, timeout=5)
    finally:
        impostor.kill()
        impostor.wait()
        shutil.rmtree(folder, ignore_errors=True)
