"""Logging: one line per event, credentials never written.

Under systemd (``JOURNAL_STREAM`` is set) lines carry no timestamp of their own, since
the journal adds one; elsewhere they do.
"""

from __future__ import annotations

import logging
import os
import sys

from convosyncd.gitcmd import mask_credentials


class _MaskingFormatter(logging.Formatter):
    """Masks credentials and keeps each event on one line (tracebacks excepted)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if not record.exc_info:
            text = " ".join(line.strip() for line in text.splitlines())
        return mask_credentials(text)


def under_journal() -> bool:
    """Whether standard error goes to the systemd journal."""
    return bool(os.environ.get("JOURNAL_STREAM"))


def setup(*, verbose: bool = False, daemon: bool = False) -> None:
    """Send log lines to standard error (INFO for the daemon, WARNING otherwise)."""
    level = logging.DEBUG if verbose else (logging.INFO if daemon else logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    if under_journal():
        pattern = "%(levelname)s %(message)s"
    else:
        pattern = "%(asctime)s %(levelname)s %(message)s"
    handler.setFormatter(_MaskingFormatter(pattern, datefmt="%Y-%m-%dT%H:%M:%S%z"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("apscheduler", "watchdog", "filelock", "git"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
