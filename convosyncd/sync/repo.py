"""What the stages of one repo's cycle share: its config, git, sync branch, state and locks.

Two locks per repo: local changes (the draft, the sync ref, the state file) are made
under a short lock that also excludes other convosyncd processes, network calls under
another, so a remote that hangs for its full time limit never delays taking a draft in.
A repo's trouble is recorded here once: the state file, one log line and, unless it is
the ordinary trouble of being offline, one notification.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timezone

from filelock import FileLock, Timeout

from convosyncd import keys
from convosyncd import state as states
from convosyncd.catalog import Catalog
from convosyncd.config import Config, RepoConfig
from convosyncd.errors import ConvosyncError, GitError, GitTimeout
from convosyncd.gitcmd import Git, mask_credentials
from convosyncd.gitstore import Identity, SyncBranch
from convosyncd.handoff import Notification, format_time, plain_text
from convosyncd.inline import InlineBranch
from convosyncd.notify import Notifier
from convosyncd.sshshare import SshSharing
from convosyncd.worktree import WorkTree

log = logging.getLogger(__name__)

ATTEMPTS = 5
"""How often a publish, merge or push is retried when another writer moved the branch."""

LOCK_WAIT = 60.0
"""Seconds to wait for another convosyncd process to let go of a repo."""

LAYOUT_RECHECK = 300.0
"""Seconds between full checks of ``.convosync/`` while it is there."""

_OFFLINE_HINTS = (
    "could not resolve host",
    "connection refused",
    "connection timed out",
    "network is unreachable",
    "no route to host",
    "operation timed out",
    "temporary failure in name resolution",
    "connection reset",
)


def now_text() -> str:
    return format_time(datetime.now(timezone.utc))


def is_offline_error(error: ConvosyncError) -> bool:
    """An error that ordinary life produces (offline laptop, sleeping server)."""
    if isinstance(error, GitTimeout):
        return True
    text = str(error).lower()
    return any(hint in text for hint in _OFFLINE_HINTS)


def _without_poll(data: bytes) -> bytes:
    return re.sub(rb'"last_poll": \{[^}]*\}', b"", data)


class SyncedRepo:
    """One registered repo as every stage of its cycle sees it."""

    def __init__(
        self,
        config: Config,
        repo: RepoConfig,
        notifier: Notifier,
        *,
        sharing: SshSharing | None = None,
    ) -> None:
        self.config = config
        self.repo = repo
        self.notifier = notifier
        self.git = Git(
            repo.path, network_timeout=config.network_timeout, sharing=sharing, remote=repo.remote
        )
        self.tree = WorkTree(repo.path, self.git)
        self.branch = SyncBranch(self.git, remote=repo.remote, branch=repo.branch)
        self.state_path = states.state_file(config.state_dir, repo.path)
        self.state, _fresh = states.load(self.state_path)
        self.keys = keys.KeySource(keys.key_file(config.path))
        """The person's sync key, read again whenever its file changes."""
        self.catalog = Catalog(
            self.branch,
            self.keys.get,
            max_bytes=config.max_draft_bytes,
            first_seen=self.state.first_seen,
            known_devices=lambda: (self.device, *self.state.known_devices),
        )
        self.state.path = str(repo.path)
        self.state.remote = repo.remote
        self.state.branch = repo.branch
        self.state.device = config.device
        self.lock = threading.RLock()
        """Guards the state and the caches of this repo within the process."""
        self.net = threading.Lock()
        """Held for network calls, so that two never race for one remote."""
        self.poll_times_elsewhere = False
        """Set by the daemon: a poll that changed nothing but its time is not saved here."""
        self.tracked: set[str] = set()
        """Names in ``.convosync/`` that the person's branch tracks (never written by us)."""
        # mode = "inline": the handoffs file is also committed on the person's branch.
        self.inline = (
            InlineBranch(self.git, self.tree, repo.remote) if repo.mode == "inline" else None
        )
        self.inline_fresh = False
        """A handoff commit was made on the person's branch and awaits its push."""
        # Before the lock's first use: filelock would create the folder, world-readable.
        # If it cannot be made, taking the lock fails too, and says why.
        with suppress(OSError):
            states.make_folders(config.state_dir, self.state_path.parent)
        self._file_lock = FileLock(
            str(states.lock_file(config.state_dir, repo.path)), mode=states.FILE_MODE
        )
        self.lock_wait = LOCK_WAIT
        """Seconds to wait for another process's hold on the repo (the session-start
        hook's own check waits only as long as its budget)."""
        self._identity: Identity | None = None
        self._saved: bytes | None = None
        self._layout_checked = 0.0

    @property
    def device(self) -> str:
        return self.config.device

    def reconfigure(self, config: Config) -> None:
        """Take new global settings (settle, timeouts, notify) without losing state."""
        with self.lock:
            if config.device != self.config.device:
                self._layout_checked = 0.0
            self.config = config
            self.git.network_timeout = config.network_timeout
            self.state.device = config.device

    # -- locking --------------------------------------------------------------------

    @contextmanager
    def local(self) -> Iterator[None]:
        """Hold the repo for a local change, against threads and other processes."""
        with self.lock:
            try:
                self._file_lock.acquire(timeout=self.lock_wait)
            except Timeout:
                raise ConvosyncError(
                    f"another convosyncd process has held the lock on {self.repo.path} for "
                    f"{self.lock_wait:g} s ({self._file_lock.lock_file}); if none is running, "
                    "delete that file"
                ) from None
            try:
                yield
            finally:
                self._file_lock.release()

    # -- the work tree ---------------------------------------------------------------

    def ensure_layout(self) -> None:
        """Check the repo is there; create ``.convosync/`` and its exclude line if needed.

        The full check (exclude line, ``device-id``, which files the person tracks) runs
        at start, whenever ``.convosync/`` has gone, and every few minutes.
        """
        self.tree.check_exists()
        fresh = time.monotonic() - self._layout_checked < LAYOUT_RECHECK
        if self._layout_checked and fresh and self.tree.device_id.is_file():
            return
        with self.local():
            self.tree.prepare(self.device)
            self.tracked = self.tree.tracked()
            self._layout_checked = time.monotonic()
            if not self.state.initialized:
                # First sight of this repo (or its state was lost): what is already on the
                # local branch is known, so only handoffs arriving from now on notify.
                self.state.notified_through = self.branch.tip()
                self.state.initialized = True
                self.save()

    def branch_identity(self) -> Identity:
        """Who the sync branch's commits are by: the device, never the person's name or
        address (the remote is not theirs alone)."""
        return Identity(name=self.device, email=f"{self.device}@convosyncd.invalid")

    def identity(self) -> Identity:
        """The person's git identity where configured, else the device's name (for the
        commits mode inline makes on the person's own branch)."""
        if self._identity is None:
            output = self.git.run(
                "config", "--get-regexp", r"^user\.(name|email)$", check=False
            ).text
            values = dict(line.split(" ", 1) for line in output.splitlines() if " " in line)
            self._identity = Identity(
                name=values.get("user.name") or self.device,
                email=values.get("user.email") or f"{self.device}@convosyncd.invalid",
            )
        return self._identity

    # -- state and trouble -----------------------------------------------------------

    def save(self) -> None:
        """Write the state file if it changed; flush it to disk unless only the time of
        the last poll moved (losing that to a power cut costs nothing)."""
        data = states.encode(self.state)
        if data == self._saved:
            return
        polled_only = self._saved is not None and _without_poll(data) == _without_poll(self._saved)
        if polled_only and self.poll_times_elsewhere:
            return  # the daemon records poll times for all repos at once (state.save_polls)
        try:
            states.save(self.state_path, self.state, durable=not polled_only, encoded=data)
        except OSError as error:
            log.error("cannot save state %s: %s", self.state_path, error)
            return
        self._saved = data

    def as_error(self, problem: Exception) -> ConvosyncError:
        """Any exception as the error a person reads (an unexpected one also logged whole)."""
        if isinstance(problem, ConvosyncError):
            return problem
        if isinstance(problem, OSError):
            return ConvosyncError(str(problem))
        log.exception("%s: unexpected error", self.repo.path)
        return ConvosyncError(
            f"unexpected {type(problem).__name__}: {problem} "
            "(the log has the details; please report it)"
        )

    def record_error(self, error: ConvosyncError) -> None:
        """Status, one log line and (unless it is only being offline) one notification."""
        message = mask_credentials(str(error))
        log.error("%s: %s", self.repo.path, message)
        self.state.last_error = states.Event(now_text(), message)
        if is_offline_error(error):
            return
        key = f"error:{message[:200]}"
        if key not in self.state.notified_problems:
            self.remember_problem(key)
            self.notify_problem(f"convosyncd: trouble with {self.repo.path.name}", message)

    def remember_problem(self, key: str) -> None:
        self.state.notified_problems = [*self.state.notified_problems[-19:], key]

    def notify_problem(self, title: str, message: str) -> None:
        self.notifier.send(
            Notification(title=plain_text(title, 80), message=plain_text(message, 240))
        )

    def set_pending(self, count: int) -> None:
        with self.lock:
            self.state.pending = count

    def update_pending(self) -> None:
        """Count the handoff commits the remote lacks (for ``status``)."""
        try:
            count = self.branch.count_unpushed(self.branch.tip(), self.branch.remote_known_tip())
        except GitError as error:
            log.warning("%s: cannot count unpushed handoffs: %s", self.repo.path, error)
            return
        self.set_pending(count)

    def inline_problem(self, message: str) -> None:
        """Record why mode inline could not commit or push (once per distinct reason)."""
        problem = self.state.inline_problem
        if problem is None or problem.message != message:
            log.warning("%s: mode inline: %s", self.repo.path, message)
            self.state.inline_problem = states.Event(now_text(), message)
            self.save()

    def clear_inline_problem(self, kind: str) -> None:
        problem = self.state.inline_problem
        if problem is not None and problem.message.startswith(kind):
            self.state.inline_problem = None
