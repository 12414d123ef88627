"""The one error type a person sees, and its variants.

Every message says what happened, where, and what to do next; the command line prints
it as one line and exits with the error's code, never with a traceback.
"""

from __future__ import annotations


class ConvosyncError(Exception):
    """A problem the person can act on. ``str(error)`` is the whole message."""

    exit_code = 1


class UsageError(ConvosyncError):
    """The command was asked something it cannot do as given (exit code 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """The config file cannot be used; the message lists every problem found."""


class GitError(ConvosyncError):
    """A git command failed or ran out of time."""

    def __init__(self, message: str, *, returncode: int | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


class GitTimeout(GitError):
    """A git command did not finish within its time limit and was killed."""


class AlreadyRunning(ConvosyncError):
    """Another ``convosyncd run`` holds the daemon lock for this config."""

    exit_code = 3
