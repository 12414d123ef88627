"""Hermetic tests: every test gets its own HOME, XDG folders and git config.

Nothing a test does may reach the real home folder, the real session bus or a real
notification server; a test that touches the real convosync config or state fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.support.dbus_fixtures"]

REAL_HOME = Path(os.path.expanduser("~"))
_GUARDED = (
    REAL_HOME / ".config" / "convosync",
    REAL_HOME / ".local" / "state" / "convosync",
)


def _fingerprint() -> dict[str, float | None]:
    found: dict[str, float | None] = {}
    for path in _GUARDED:
        try:
            found[str(path)] = path.stat().st_mtime
        except FileNotFoundError:
            found[str(path)] = None
    return found


@pytest.fixture(autouse=True)
def hermetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point HOME, XDG and git's config at ``tmp_path``; fail if the real home changes."""
    home = tmp_path / "home"
    home.mkdir()
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    for name in list(os.environ):
        if name.startswith(("GIT_", "XDG_", "CONVOSYNC_")) or name in (
            "DBUS_SESSION_BUS_ADDRESS",
            "DBUS_SYSTEM_BUS_ADDRESS",
            "DISPLAY",
            "WAYLAND_DISPLAY",
            "NOTIFY_SOCKET",
            "JOURNAL_STREAM",
            "SSH_AUTH_SOCK",
        ):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    # No daemon under test listens to the machine's own system bus (a test that wants
    # one starts a private bus: tests.support.system_bus).
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={runtime}/no-system-bus")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Test Person\n\temail = person@example.invalid\n"
        "[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n",
        encoding="utf-8",
    )
    before = _fingerprint()
    yield home
    assert _fingerprint() == before, "a test touched the real home's convosync folders"


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """A bare remote with one commit on ``main``, shared by the test's devices."""
    from tests.support.devices import make_remote

    return make_remote(tmp_path)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The umask most people have (022): new files are world-readable unless made
    otherwise, so a test of file modes cannot pass by the test runner's umask alone."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)
