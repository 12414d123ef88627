"""The service manager's side of the sockets a daemon talks to, for tests.

* :class:`NotifyListener` is what systemd holds for a ``Type=notify`` service: a unix
  datagram socket whose path goes into ``NOTIFY_SOCKET``. It records every message with
  the moment it arrived, and waits for one with a time limit.
* :func:`silent_listener` is a remote that does not answer: a TCP listener on
  127.0.0.1 that accepts connections and never says a word. Tests address nothing but
  loopback.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Message:
    """One datagram: its ``KEY=VALUE`` lines and when it arrived (monotonic seconds)."""

    at: float
    fields: dict[str, str]


class NotifyListener:
    """A bound unix datagram socket that collects sd_notify messages."""

    def __init__(self) -> None:
        # A short folder: pytest's tmp paths can pass the 107-byte socket path limit.
        self.folder = Path(tempfile.mkdtemp(prefix="cvs-notify-", dir="/tmp"))
        self.address = str(self.folder / "notify.sock")
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(self.address)
        self.messages: list[Message] = []

    def close(self) -> None:
        self.socket.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> NotifyListener:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def receive(self, timeout: float) -> Message | None:
        """The next message, or None if none came within ``timeout`` seconds."""
        self.socket.settimeout(max(timeout, 0.001))
        try:
            data = self.socket.recv(65536)
        except TimeoutError:
            return None
        fields = dict(
            line.split("=", 1) for line in data.decode("utf-8").splitlines() if "=" in line
        )
        message = Message(time.monotonic(), fields)
        self.messages.append(message)
        return message

    def wait_for(self, predicate: Callable[[Message], bool], timeout: float, what: str) -> Message:
        """The first new message matching ``predicate``; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            message = self.receive(remaining) if remaining > 0 else None
            if message is None:
                seen = [m.fields for m in self.messages[-5:]]
                raise AssertionError(f"no {what} within {timeout:g} s (last messages: {seen})")
            if predicate(message):
                return message
