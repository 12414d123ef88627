"""The lock that marks a running daemon: one ``convosyncd run`` per state folder.

``convosyncd run`` holds ``<state dir>/daemon.lock`` for as long as it runs; the other
commands ask it whether a daemon is running (the operating system releases the lock
when the process dies, however it dies).
"""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock, Timeout

from convosyncd.errors import AlreadyRunning
from convosyncd.state import FILE_MODE, make_folders

LOCK_NAME = "daemon.lock"


def lock_path(state_dir: Path) -> Path:
    return state_dir / LOCK_NAME


def acquire(state_dir: Path) -> FileLock:
    """Take the daemon lock of ``state_dir``; :class:`AlreadyRunning` if it is held."""
    path = lock_path(state_dir)
    make_folders(state_dir)
    lock = FileLock(str(path), mode=FILE_MODE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise AlreadyRunning(
            f"another `convosyncd run` is already running with the state folder "
            f"{state_dir} (lock {path}); stop it first "
            "(`convosyncd service status` shows a service instance)"
        ) from None
    return lock


def daemon_running(state_dir: Path) -> bool:
    """Whether a ``convosyncd run`` holds the lock of ``state_dir``."""
    path = lock_path(state_dir)
    if not path.exists():
        return False
    lock = FileLock(str(path), mode=FILE_MODE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False
