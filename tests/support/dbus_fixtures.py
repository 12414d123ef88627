"""Pytest fixtures for notification tests on a private D-Bus session bus.

This module owns the fixtures; the machinery is in
:mod:`tests.support.dbus_session`.  Use them either by importing them into a
test module::

    from tests.support.dbus_fixtures import (  # noqa: F401
        hung_notification_server,
        notification_server,
        session_bus,
    )

or for the whole suite with ``pytest_plugins = ["tests.support.dbus_fixtures"]``
in ``tests/conftest.py``.

All fixtures are function-scoped: a bus starts in tens of milliseconds and a
server in well under 100 ms, so every test gets its own clean bus.  Missing
tools skip the test, or fail it when ``CI=true``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dbus_session import (
    DBUS_DAEMON,
    DBUS_PACKAGE,
    NOTIFY_SEND,
    NOTIFY_SEND_PACKAGE,
    RecordingNotificationServer,
    need_tool,
    private_bus,
)


@pytest.fixture
def session_bus(tmp_path: Path) -> Iterator[str]:
    """Address of a private dbus-daemon session bus, stopped and reaped afterwards."""
    need_tool(DBUS_DAEMON, DBUS_PACKAGE)
    with private_bus(tmp_path / "bus") as address:
        yield address


@pytest.fixture
def notification_server(session_bus: str, tmp_path: Path) -> Iterator[RecordingNotificationServer]:
    """A recording org.freedesktop.Notifications server running on ``session_bus``."""
    with RecordingNotificationServer(session_bus, tmp_path / "notifications.jsonl") as server:
        yield server


@pytest.fixture
def hung_notification_server(
    session_bus: str, tmp_path: Path
) -> Iterator[RecordingNotificationServer]:
    """A server on ``session_bus`` that owns the name but never replies to anything."""
    with RecordingNotificationServer(
        session_bus, tmp_path / "hung-notifications.jsonl", hang=True
    ) as server:
        yield server


@pytest.fixture
def notify_send() -> str:
    """Path of the notify-send executable (skips, or fails under CI=true, if missing)."""
    need_tool(NOTIFY_SEND, NOTIFY_SEND_PACKAGE)
    path = shutil.which(NOTIFY_SEND)
    assert path is not None
    return path
