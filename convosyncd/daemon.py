"""``convosyncd run``: the scheduler, the watcher, the lock, the signals.

Boring on purpose. Watcher events only schedule work: a draft event (re)schedules that
repo's publish for the moment the draft will have been still for ``settle`` seconds;
every ``pull_interval`` seconds a poll round runs every repo's full cycle; a failed push
is retried with a capped, jittered back-off, and a repo whose cycle fails leaves the
rounds for retries of its own, further and further apart, until it succeeds again.

The round polls a repo whose remote is a folder on the local disk right there, one after
the other (such a poll starts no process and takes a fraction of a millisecond, and a
thread hand-off per repo would cost several times the poll itself); any other repo's
poll goes to the worker pool, so that a remote that hangs holds up nobody else. Jobs
of one repo never overlap (APScheduler's ``max_instances=1`` plus the repo's own locks),
and a repo's failure is a result and a log line. SIGTERM and SIGINT let the publish in
flight finish, then the daemon exits 0.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from filelock import FileLock

from convosyncd import config as configs
from convosyncd import daemon_lock, housekeeping
from convosyncd import state as states
from convosyncd.config import Config, RepoConfig
from convosyncd.errors import ConfigError, ConvosyncError
from convosyncd.handoff import Notification, plain_text
from convosyncd.keys import SyncKeyError, ensure, key_file
from convosyncd.notify import Notifier
from convosyncd.sshshare import SshSharing
from convosyncd.state import Event
from convosyncd.sync import CycleResult, RepoSync
from convosyncd.systemd_notify import NotifySocket, status_line
from convosyncd.watcher import DraftWatcher

log = logging.getLogger(__name__)

BACKOFF_START = 2.0
BACKOFF_CAP = 60.0
"""Longest wait between retries: a remote that comes back is used within a minute."""
WORKERS = 8
ROUND_JOB = "poll-round"


def guarded(job: Callable[[Daemon, str], None]) -> Callable[[Daemon, str], None]:
    """Run a job so that no exception reaches the scheduler; one log line instead."""

    @functools.wraps(job)
    def run(self: Daemon, key: str) -> None:
        try:
            job(self, key)
        except Exception:
            log.exception("%s: unexpected error in %s", key, job.__name__)

    return run


def backoff_delay(
    failures: int, *, start: float = BACKOFF_START, cap: float = BACKOFF_CAP
) -> float:
    """Seconds before retry number ``failures`` (1, 2, ...): doubling, capped, jittered."""
    base = min(cap, start * 2.0 ** max(0, failures - 1))
    jitter: float = random.uniform(0.8, 1.0)  # noqa: S311 - jitter, not security
    return base * jitter


def _ssh_persist(config: Config) -> int:
    """Seconds a shared ssh connection outlives its last use: two polls and a margin, so
    that a polling daemon keeps one connection per server rather than making new ones."""
    return round(2 * config.pull_interval + 30)


def _remote_url(sync: RepoSync) -> str:
    """The remote's URL, for the log (which masks credentials), or ``?``."""
    try:
        return sync.git.run("remote", "get-url", sync.repo.remote, check=False).text or "?"
    except ConvosyncError:
        return "?"


@dataclass
class _Repo:
    sync: RepoSync
    key: str
    push_failures: int = 0
    poll_failures: int = 0


class Daemon:
    """The long-running process that keeps every registered repo in sync."""

    def __init__(
        self, config_path: Path, *, on_ready: Callable[[Daemon], None] | None = None
    ) -> None:
        self.config_path = config_path
        self.config = configs.load(config_path)
        self.notifier = Notifier(enabled=self.config.notify, timeout=self.config.notify_timeout)
        self.repos: dict[Path, _Repo] = {}
        self.stopping = threading.Event()
        self.on_ready = on_ready
        self.last_cycle: dict[Path, CycleResult] = {}
        self.config_error: str | None = None
        self._config_stamp = self._stamp()
        self._reload_lock = threading.Lock()
        self._scheduling = threading.Lock()
        self._closing = False
        self._lock: FileLock | None = None
        self._scheduler: Any = None
        self._watcher = DraftWatcher(self._on_draft, self._on_layout, self._on_config_event)
        self.service = NotifySocket()
        self.sharing: SshSharing | None = None
        self._round_scheduled = False
        self._polls_lock = threading.Lock()
        self._polls_saved: dict[str, Event] | None = None

    # -- life cycle -----------------------------------------------------------------

    def acquire_lock(self) -> None:
        """Refuse to run twice on one state folder."""
        self._lock = daemon_lock.acquire(self.config.state_dir)

    def ensure_key(self) -> None:
        """Make a sync key if repos are registered and there is none (a config from
        convosyncd 0.1, a deleted key file): handoffs sealed with a key no other device
        holds yet become readable there once the person pairs, whereas without a key
        nothing would be published at all. Said loudly, once: a log line and one
        notification. A key file that cannot be used is left alone; every repo's cycle
        reports it (status, the log, one notification)."""
        if not self.config.repos:
            return
        try:
            keyring, made = ensure(key_file(self.config_path))
        except (SyncKeyError, OSError) as error:
            log.error("no usable sync key: %s", error)
            return
        if made:
            log.warning(
                "this device had no sync key, so one was made (key id %s) in %s: pair your "
                "devices, `convosyncd key show` on one of them and `convosyncd key import` "
                "on each of the others",
                keyring.current.key_id,
                key_file(self.config_path),
            )
            self.notifier.send(
                Notification(
                    title="convosyncd: pair your devices",
                    message="This device had no sync key, so convosyncd made one. Run "
                    "`convosyncd key show` on one of your devices and `convosyncd key "
                    "import` on each of the others.",
                )
            )

    def run(self) -> int:
        """Run until SIGTERM or SIGINT; returns the exit code."""
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        self.acquire_lock()
        self.ensure_key()
        housekeeping.tidy_state(self.config.state_dir, [repo.path for repo in self.config.repos])
        # APScheduler warns when a job's run is skipped because the previous one is still
        # going; the publish job catches that itself (see _publish), so only errors show.
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
        logging.getLogger("watchdog").setLevel(logging.WARNING)
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(WORKERS)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT)
        }
        self.sharing = SshSharing.create(persist=_ssh_persist(self.config))
        try:
            self._watcher.start()
            self._watcher.watch_config(self.config_path)
            self._scheduler.start()
            self._apply(self.config)
            self._submit(self._check_config, "config", "interval", seconds=5)
            # Loose objects are counted (and packed when many) with the first poll round,
            # then daily; in the pool, so a publish never waits for a pack.
            self._submit(
                self._pack,
                "pack",
                "interval",
                seconds=housekeeping.PACK_INTERVAL,
                args=("pack",),
                next_run_time=datetime.now().astimezone()
                + timedelta(seconds=self.config.pull_interval),
            )
            log.info(
                "convosyncd running as device %s with %d repo(s); config %s",
                self.config.device,
                len(self.repos),
                self.config_path,
            )
            self.service.schedule(self._scheduler, self.summary)
            self.service.ready(self.summary())
            if self.on_ready is not None:
                self.on_ready(self)
            self._wait_for_signal()
        finally:
            self.service.stopping()
            log.info("stopping: finishing the work in flight")
            with self._scheduling:
                # From here on no job may schedule another: APScheduler's shutdown waits
                # for running jobs while holding locks that add_job needs.
                self._closing = True
            self._watcher.stop()
            if self._scheduler is not None and self._scheduler.running:
                self._scheduler.shutdown(wait=True)
            if self.sharing is not None:
                self.sharing.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if self._lock is not None:
                self._lock.release()
            log.info("stopped")
        return 0

    def _wait_for_signal(self) -> None:
        """Sleep until SIGTERM or SIGINT, with no periodic wake-ups.

        The kernel may hand a signal to any thread; Python runs its handler in the main
        thread only once that thread wakes up, and a thread blocked on a lock never does.
        So the main thread sleeps in ``select`` on the signal wake-up socket instead.
        """
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        previous = signal.set_wakeup_fd(writer.fileno())
        try:
            while not self.stopping.is_set():
                select.select([reader], [], [], 3600)
                with contextlib.suppress(BlockingIOError):
                    reader.recv(512)
        finally:
            signal.set_wakeup_fd(previous)
            reader.close()
            writer.close()

    def summary(self) -> str:
        """One line for the service manager (``systemctl --user status convosyncd``)."""
        return status_line([entry.sync.state for entry in list(self.repos.values())])

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        self.stopping.set()

    # -- repos ----------------------------------------------------------------------

    def _apply(self, config: Config) -> None:
        """Make the running set of repos match ``config``."""
        previous_interval = self.config.pull_interval
        self.config = config
        self.notifier.enabled = config.notify
        self.notifier.timeout = config.notify_timeout
        if self.sharing is not None:
            self.sharing.persist = _ssh_persist(config)
        wanted = {repo.path: repo for repo in config.repos}
        for path in list(self.repos):
            current = self.repos[path]
            if path not in wanted or wanted[path] != current.sync.repo:
                self._drop(path)
        for path, repo in wanted.items():
            if path in self.repos:
                self.repos[path].sync.reconfigure(config)
            else:
                self._add(repo)
        if config.pull_interval != previous_interval or not self._round_scheduled:
            # A new interval starts with a round now; the first round, one interval after
            # start (every repo added has just had a poll of its own).
            self._schedule_round(delay=0 if self._round_scheduled else config.pull_interval)
            self._round_scheduled = True

    def _add(self, repo: RepoConfig) -> None:
        sync = RepoSync(self.config, repo, self.notifier, sharing=self.sharing)
        sync.poll_times_elsewhere = True
        entry = _Repo(sync=sync, key=str(repo.path))
        self.repos[repo.path] = entry
        self._watcher.ensure(repo.path)
        self._schedule_poll(entry, delay=0)
        log.info(
            "watching %s (remote %s at %s, branch %s)",
            repo.path,
            repo.remote,
            _remote_url(sync),
            repo.branch,
        )

    def _drop(self, path: Path) -> None:
        entry = self.repos.pop(path)
        self._watcher.forget(path)
        for prefix in ("poll", "draft", "push"):
            self._cancel(f"{prefix}:{entry.key}")
        log.info("no longer watching %s", path)

    def _poll_interval(self, entry: _Repo) -> float:
        """``pull_interval``, stretched by back-off while the repo keeps failing."""
        interval = self.config.pull_interval
        if entry.poll_failures:
            return max(interval, backoff_delay(entry.poll_failures, start=interval))
        return interval

    def _schedule_round(self, *, delay: float) -> None:
        self._submit(
            self._round,
            ROUND_JOB,
            "interval",
            seconds=self.config.pull_interval,
            args=(ROUND_JOB,),
            next_run_time=datetime.now().astimezone() + timedelta(seconds=delay),
        )

    def _schedule_poll(self, entry: _Repo, *, delay: float) -> None:
        """One poll of this repo alone, in the worker pool, ``delay`` seconds from now."""
        self._submit(
            self._poll,
            f"poll:{entry.key}",
            "date",
            run_date=datetime.now().astimezone() + timedelta(seconds=delay),
            args=(entry.key,),
        )

    def _submit(self, func: Callable[..., None], job_id: str, trigger: str, **options: Any) -> None:
        """Add or replace a job, unless the daemon is shutting down."""
        with self._scheduling:
            if self._closing or self._scheduler is None:
                return
            self._scheduler.add_job(func, trigger, id=job_id, replace_existing=True, **options)

    def _cancel(self, job_id: str) -> None:
        with self._scheduling:
            if self._closing or self._scheduler is None:
                return
            job = self._scheduler.get_job(job_id)
            if job is not None:
                job.remove()

    def _entry(self, key: str) -> _Repo | None:
        return self.repos.get(Path(key))

    # -- jobs -----------------------------------------------------------------------

    @guarded
    def _round(self, key: str) -> None:
        """Poll every repo not waiting out a back-off (see the module's docstring)."""
        try:
            for entry in list(self.repos.values()):
                if self.stopping.is_set():
                    return
                if entry.poll_failures or self.repos.get(entry.sync.repo.path) is not entry:
                    continue  # failing: its own retry is scheduled; or removed meanwhile
                if not entry.sync.polls_in_process():
                    self._schedule_poll(entry, delay=0)
                    continue
                try:
                    self._poll_entry(entry)
                except Exception:
                    log.exception("%s: unexpected error in a poll", entry.key)
        finally:
            self._record_polls()

    @guarded
    def _poll(self, key: str) -> None:
        entry = self._entry(key)
        if entry is None:
            return
        try:
            self._poll_entry(entry)
        finally:
            self._record_polls()

    def _record_polls(self) -> None:
        """Write every repo's last poll time to the one polls file (see state.save_polls)."""
        with self._polls_lock:
            polls = {
                str(path): entry.sync.state.last_poll
                for path, entry in list(self.repos.items())
                if entry.sync.state.last_poll is not None
            }
            if polls == self._polls_saved:
                return
            try:
                states.save_polls(self.config.state_dir, polls)
            except OSError as error:
                log.error("cannot save the poll times in %s: %s", self.config.state_dir, error)
                return
            self._polls_saved = polls

    def _poll_entry(self, entry: _Repo) -> None:
        watching = self._watcher.ensure(entry.sync.repo.path)
        result = entry.sync.cycle(require_settled=True)
        self.last_cycle[entry.sync.repo.path] = result
        if not watching:
            self._watcher.ensure(entry.sync.repo.path)
        self._after_cycle(entry, result)

    def _after_cycle(self, entry: _Repo, result: CycleResult) -> None:
        entry.poll_failures = 0 if result.ok else entry.poll_failures + 1
        if entry.poll_failures:
            # Each cycle also pushes, so a failing repo backs off as a whole; once a
            # retry succeeds, the repo is back in the rounds.
            delay = self._poll_interval(entry)
            log.info(
                "%s: %d handoff(s) waiting; next attempt in %.1f s",
                entry.sync.repo.path,
                result.pending,
                delay,
            )
            self._schedule_poll(entry, delay=delay)
        if result.publish_at is not None:
            self._schedule_publish(entry, at=result.publish_at)

    def _on_draft(self, repo: Path) -> None:
        entry = self.repos.get(repo)
        if entry is not None:
            self._schedule_publish(entry, at=time.time() + self.config.settle)

    def _on_layout(self, repo: Path) -> None:
        entry = self.repos.get(repo)
        if entry is not None and not self.stopping.is_set():
            self._watcher.ensure(repo)
            self._schedule_publish(entry, at=time.time() + self.config.settle)

    def _schedule_publish(self, entry: _Repo, *, at: float) -> None:
        self._submit(
            self._publish,
            f"draft:{entry.key}",
            "date",
            run_date=datetime.fromtimestamp(at).astimezone(),
            args=(entry.key,),
        )

    @guarded
    def _publish(self, key: str) -> None:
        entry = self._entry(key)
        if entry is None:
            return
        sync = entry.sync
        try:
            sync.ensure_layout()
            outcome = sync.publish(require_settled=True)
        except ConvosyncError as error:
            sync.fail(error)
            return
        if outcome.status == "unsettled" and outcome.retry_at is not None:
            self._schedule_publish(entry, at=outcome.retry_at)
            return
        if outcome.status in ("published", "duplicate"):
            self._push(key)
            try:
                sync.refresh()
            except ConvosyncError as error:
                sync.fail(error)
            if sync.tree.draft.exists():
                # A new draft arrived while this one was published; its own event may
                # have fallen on this running job and been dropped.
                self._schedule_publish(entry, at=time.time() + self.config.settle)

    def _schedule_push(self, entry: _Repo) -> None:
        delay = backoff_delay(max(1, entry.push_failures))
        log.info(
            "%s: %d handoff(s) wait on the local sync branch; next push in %.1f s",
            entry.sync.repo.path,
            entry.sync.state.pending,
            delay,
        )
        self._submit(
            self._push,
            f"push:{entry.key}",
            "date",
            run_date=datetime.now().astimezone() + timedelta(seconds=delay),
            args=(entry.key,),
        )

    @guarded
    def _push(self, key: str) -> None:
        entry = self._entry(key)
        if entry is None:
            return
        try:
            entry.sync.push()
        except ConvosyncError as error:
            entry.push_failures += 1
            entry.sync.fail(error)
            self._schedule_push(entry)
        else:
            entry.push_failures = 0

    @guarded
    def _pack(self, key: str) -> None:
        """Pack each repo's loose git objects where there are many (see housekeeping)."""
        for entry in list(self.repos.values()):
            if self.stopping.is_set():
                return
            housekeeping.pack_repo(entry.sync.git)

    # -- config ---------------------------------------------------------------------

    def _stamp(self) -> tuple[int, int] | None:
        try:
            status = self.config_path.stat()
        except OSError:
            return None
        return (status.st_mtime_ns, status.st_size)

    def _on_config_event(self) -> None:
        self._submit(
            self._check_config,
            "config-event",
            "date",
            run_date=datetime.now().astimezone() + timedelta(seconds=0.2),
        )

    def _check_config(self) -> None:
        with self._reload_lock:
            stamp = self._stamp()
            if stamp == self._config_stamp:
                return
            self._config_stamp = stamp
            try:
                config = configs.load(self.config_path)
            except ConfigError as error:
                message = str(error)
                if message != self.config_error:
                    self.config_error = message
                    log.error("config not reloaded, keeping the last good one: %s", message)
                    self.notifier.send(
                        Notification(
                            title="convosyncd: config error",
                            message=plain_text(message, 240),
                        )
                    )
                return
            self.config_error = None
            if config == self.config:
                return
            log.info("config changed; now %d repo(s)", len(config.repos))
            self._apply(config)
