"""Logging: one line per event, credentials never written.

Under systemd (standard error is the stream named by ``JOURNAL_STREAM``) lines carry no
timestamp of their own, since the journal adds one, and start with the ``<N>`` priority
prefix journald turns into the entry's priority (``journalctl -p warning`` works).
Elsewhere they carry a timestamp, and the daemon also keeps them in a rotating file in
its state folder (:data:`LOG_NAME`), which is where to look under launchd or after a
terminal was closed. ``crash.log`` rotates the same way (:func:`make_room`). Both are
created readable by their owner only, in an owner-only folder: log lines name repos and
handoff tasks.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import sys
from pathlib import Path
from typing import Any

from convosyncd.masking import mask_credentials
from convosyncd.state import FILE_MODE, make_folders

LOG_NAME = "convosyncd.log"
"""The daemon's log file in the state folder (when not under journald)."""

LOG_BYTES = 2 * 1_048_576
LOG_BACKUPS = 3

STDERR_SWITCH = "CONVOSYNC_LOG_STDERR"
"""Set to ``no`` (the launchd agent does) to log to the file only: launchd's own output
file is never rotated, so it should catch only what cannot be logged."""

_DATE = "%Y-%m-%dT%H:%M:%S%z"
# syslog(3) priorities, as journald reads them from a "<N>" prefix.
_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class _MaskingFormatter(logging.Formatter):
    """Masks credentials and keeps each event on one line (tracebacks excepted)."""

    def __init__(self, pattern: str, *, journal: bool = False) -> None:
        super().__init__(pattern, datefmt=_DATE)
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if not record.exc_info:
            text = " ".join(line.strip() for line in text.splitlines())
        text = mask_credentials(text)
        if self.journal:
            priority = _PRIORITY.get(record.levelno, 6)
            # Every line of a traceback is its own journal entry: give each the prefix.
            text = "\n".join(f"<{priority}>{line}" for line in text.splitlines())
        return text


def under_journal() -> bool:
    """Whether standard error goes to the systemd journal.

    ``JOURNAL_STREAM`` is inherited by everything a service starts (a terminal started
    as a user service passes it to its shells), so it counts only when it names the
    very stream standard error is, as systemd.exec(5) asks.
    """
    value = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        status = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (status.st_dev, status.st_ino) == (int(device), int(inode))


def _private(path: str, flags: int) -> int:
    """``open``'s opener for a file that only its owner may read, whatever the umask."""
    return os.open(path, flags | getattr(os, "O_CLOEXEC", 0), FILE_MODE)


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """The standard rotating file, created 0600 (each new file after a rotation too)."""

    def _open(self) -> Any:
        return open(
            self.baseFilename,
            self.mode,
            encoding=self.encoding,
            errors=self.errors,
            opener=_private,
        )


def rotating_file(path: Path, *, delay: bool = False) -> PrivateRotatingFileHandler:
    """The handler that keeps ``path`` at :data:`LOG_BYTES`, with :data:`LOG_BACKUPS`
    older files (``path.1`` the newest of them), its folder created owner-only."""
    make_folders(path.parent)
    return PrivateRotatingFileHandler(
        path, maxBytes=LOG_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8", delay=delay
    )


def make_room(path: Path) -> None:
    """Get ``path`` ready to be appended to, rotated like the log: once it holds
    :data:`LOG_BYTES`, it becomes ``path.1`` (``path.1`` becomes ``path.2``..., the
    oldest beyond :data:`LOG_BACKUPS` goes), and a missing file is created 0600."""
    handler = rotating_file(path, delay=True)
    try:
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_size >= LOG_BYTES:
                handler.doRollover()
        os.close(_private(str(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND))
    finally:
        handler.close()


def log_file(state_dir: Path) -> Path:
    """Where the daemon keeps its log lines when not under journald."""
    return state_dir / LOG_NAME


def setup(*, verbose: bool = False, daemon: bool = False, state_dir: Path | None = None) -> None:
    """Send log lines to standard error (INFO for the daemon, WARNING otherwise).

    With ``state_dir`` and no journal, lines also go to a rotating file there (a few
    MB, a few old files kept).
    """
    level = logging.DEBUG if verbose else (logging.INFO if daemon else logging.WARNING)
    journal = under_journal()
    handlers: list[logging.Handler] = []
    problem = None
    if state_dir is not None and not journal:
        path = log_file(state_dir)
        try:
            handlers.append(rotating_file(path))
        except OSError as error:
            problem = f"cannot write the log file {path} ({error.strerror}); logging to stderr"
    if not handlers or os.environ.get(STDERR_SWITCH, "").lower() != "no":
        handlers.append(logging.StreamHandler(sys.stderr))
    for handler in handlers:
        if journal:
            handler.setFormatter(_MaskingFormatter("%(levelname)s %(message)s", journal=True))
        else:
            handler.setFormatter(_MaskingFormatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
        existing.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("watchdog", "filelock", "git"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if problem is not None:
        logging.getLogger(__name__).warning("%s", problem)
