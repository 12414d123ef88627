"""``convosyncd run``: the timers, the watcher, the control socket, the lock, the signals.

Boring on purpose. Watcher events only schedule work: a draft event (re)schedules that
repo's publish for the moment the draft will have been still for ``settle`` seconds;
every ``pull_interval`` seconds a poll round runs every repo's full cycle; a failed push
is retried with a capped, jittered back-off, and a repo whose cycle fails leaves the
rounds for retries of its own, further and further apart (doubling from
``pull_interval`` up to :data:`POLL_BACKOFF_CAP`), until it succeeds again. Every timer
runs on monotonic time (:mod:`convosyncd.scheduler`), so a wall-clock step neither
stalls nor bunches them; after sleep or when the network comes back
(:mod:`convosyncd.wake`) every repo is checked at once.

The round polls a repo whose remote is a folder on the local disk right there, one after
the other (such a poll starts no process and takes a fraction of a millisecond, and a
thread hand-off per repo would cost several times the poll itself); any other repo's
poll goes to the worker pool, so that a remote that hangs holds up nobody else. Runs of
one job never overlap (the scheduler's rule, plus the repo's own locks), and a repo's
failure is a result and a log line.

Other processes reach the daemon through its control socket (:mod:`convosyncd.control`):
the session-start hook asks for one repo to be checked now, ``convosyncd sync`` for
full cycles, ``convosyncd status`` for the state in memory. SIGTERM and SIGINT let the
work in flight finish, then the daemon exits 0; SIGHUP reloads the config.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
from pathlib import Path
from types import FrameType
from typing import Any

from filelock import FileLock

from convosyncd import config as configs
from convosyncd import control, daemon_lock, housekeeping
from convosyncd import state as states
from convosyncd.config import Config, RepoConfig
from convosyncd.errors import ConfigError, ConvosyncError
from convosyncd.handoff import Notification, plain_text
from convosyncd.keys import SyncKeyError, ensure, key_file
from convosyncd.notify import Notifier
from convosyncd.scheduler import Completion, Scheduler
from convosyncd.sshshare import SshSharing
from convosyncd.state import Event
from convosyncd.sync import CycleResult, RepoSync
from convosyncd.systemd_notify import NotifySocket, status_line
from convosyncd.wake import WakeWatch
from convosyncd.watcher import DraftWatcher

log = logging.getLogger(__name__)

BACKOFF_START = 2.0
BACKOFF_CAP = 60.0
"""Longest wait between push retries: a remote that comes back is used within a minute."""
POLL_BACKOFF_CAP = 900.0
"""Longest wait between the retries of a failing repo's cycle (unless ``pull_interval``
is longer): a repo whose remote is gone for good costs a poll every quarter hour, and
waking up or the network coming back retries it at once."""
WORKERS = 8
ROUND_JOB = "poll-round"
PACK_JOB = "pack"
CONFIG_JOB = "config"
CONFIG_CHECK = 5.0
"""Seconds between checks of the config file's stamp (the watcher is the fast path)."""
CONFIG_SETTLE = 0.2
"""Seconds after a config event before it is read: an editor's save is several events."""


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
    failures: int,
    *,
    start: float = BACKOFF_START,
    cap: float = BACKOFF_CAP,
    jitter: float | None = None,
) -> float:
    """Seconds before retry number ``failures`` (1, 2, ...): doubling, capped, jittered.

    ``jitter`` (0.8 to 1.0) is random unless given.
    """
    base = min(cap, start * 2.0 ** max(0, failures - 1))
    if jitter is None:
        jitter = random.uniform(0.8, 1.0)  # noqa: S311 - jitter, not security
    return base * jitter


def poll_retry_delay(failures: int, interval: float, *, jitter: float | None = None) -> float:
    """Seconds before a failing repo's cycle is tried again, after ``failures`` failures.

    ``interval`` (the ``pull_interval``) at first, then twice as long after each further
    failure, up to :data:`POLL_BACKOFF_CAP` or ``interval`` if that is longer; jittered
    downwards by at most a fifth, never below ``interval``.
    """
    cap = max(interval, POLL_BACKOFF_CAP)
    return max(interval, backoff_delay(failures, start=interval, cap=cap, jitter=jitter))


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


def _delay_until(wall_time: float) -> float:
    """Seconds from now until ``wall_time`` (a ``time.time()`` value, as draft times are)."""
    return max(0.0, wall_time - time.time())


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
        self._applied = False
        """Whether ``self.config`` has been applied in full (a failed repo is retried)."""
        self._apply_error: str | None = None
        self._reload_lock = threading.Lock()
        self._lock: FileLock | None = None
        self._scheduler = Scheduler(WORKERS, name="convosyncd-job")
        self._watcher = DraftWatcher(self._on_draft, self._on_layout, self._on_config_event)
        self._control = control.ControlServer(self.config.state_dir, self._on_request)
        self._wake = WakeWatch(self._on_wake)
        self.service = NotifySocket()
        self.sharing: SshSharing | None = None
        self._round_interval: float | None = None
        self._polls_lock = threading.Lock()
        self._polls_saved: dict[str, Event] | None = None
        self._hangup = False

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
        self.acquire_lock()
        self.ensure_key()
        housekeeping.tidy_state(self.config.state_dir, [repo.path for repo in self.config.repos])
        logging.getLogger("watchdog").setLevel(logging.WARNING)
        previous = {
            signum: signal.signal(signum, handler)
            for signum, handler in (
                (signal.SIGTERM, self._on_signal),
                (signal.SIGINT, self._on_signal),
                (signal.SIGHUP, self._on_hangup),
            )
        }
        self.sharing = SshSharing.create(persist=_ssh_persist(self.config))
        try:
            self._watcher.start()
            self._watcher.watch_config(self.config_path)
            self._scheduler.start()
            self._apply_config(self.config)
            self._scheduler.schedule(
                CONFIG_JOB, self._check_config, delay=CONFIG_CHECK, every=CONFIG_CHECK
            )
            self._start_control()
            self._wake.start()
            # Loose objects are counted (and packed when many) with the first poll round,
            # then daily; in the pool, so a publish never waits for a pack.
            self._scheduler.schedule(
                PACK_JOB,
                self._pack,
                PACK_JOB,
                delay=self.config.pull_interval,
                every=housekeeping.PACK_INTERVAL,
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
            self._control.stop()
            self._wake.stop()
            self._watcher.stop()
            # From here on no job can schedule another; the runs in flight finish.
            self._scheduler.shutdown(wait=True)
            if self.sharing is not None:
                self.sharing.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if self._lock is not None:
                self._lock.release()
            log.info("stopped")
        return 0

    def _start_control(self) -> None:
        try:
            where = self._control.start()
        except (ConvosyncError, OSError) as error:
            # Everything still syncs; the hook, sync and status then work on their own.
            log.error("no control socket: %s", error)
            return
        log.info("control socket %s", where)

    def _wait_for_signal(self) -> None:
        """Sleep until SIGTERM or SIGINT, with no periodic wake-ups.

        The kernel may hand a signal to any thread; Python runs its handler in the main
        thread only once that thread wakes up, and a thread blocked on a lock never does.
        So the main thread sleeps in ``select`` on the signal wake-up socket instead, and
        acts on SIGHUP here, outside the handler (which may interrupt code holding the
        scheduler's lock).
        """
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        previous = signal.set_wakeup_fd(writer.fileno())
        try:
            while not self.stopping.is_set():
                if self._hangup:
                    self._hangup = False
                    log.info("received SIGHUP: reloading the config")
                    self._scheduler.schedule("config-reload", self._check_config, True)
                    continue
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

    def _on_hangup(self, signum: int, frame: FrameType | None) -> None:
        self._hangup = True

    # -- repos ----------------------------------------------------------------------

    def _apply(self, config: Config) -> None:
        """Make the running set of repos match ``config``.

        A repo that cannot be set up is left out and named in the :class:`ConvosyncError`
        raised at the end, after every other repo was set up; applying the same config
        again retries it.
        """
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
        failed: list[str] = []
        for path, repo in wanted.items():
            try:
                if path in self.repos:
                    self.repos[path].sync.reconfigure(config)
                else:
                    self._add(repo)
            except Exception as error:
                if not isinstance(error, ConvosyncError):
                    log.exception("%s: unexpected error setting the repo up", path)
                failed.append(f"{path}: {error}")
        if config.pull_interval != self._round_interval:
            # A new interval starts with a round now; the first round, one interval after
            # start (every repo added has just had a poll of its own).
            first = self._round_interval is None
            self._round_interval = config.pull_interval
            self._schedule_round(delay=config.pull_interval if first else 0)
        if failed:
            raise ConvosyncError(
                f"{len(failed)} repo(s) could not be set up, retried every "
                f"{CONFIG_CHECK:g} s: " + "; ".join(failed)
            )

    def _apply_config(self, config: Config) -> bool:
        """:meth:`_apply`, its failure logged once per distinct message; whether it worked."""
        try:
            self._apply(config)
        except ConvosyncError as error:
            self._applied = False
            message = str(error)
            if message != self._apply_error:
                self._apply_error = message
                log.error("%s", message)
            return False
        self._applied = True
        if self._apply_error is not None:
            log.info("config applied in full; every repo is set up")
            self._apply_error = None
        return True

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
            self._scheduler.cancel(f"{prefix}:{entry.key}")
        log.info("no longer watching %s", path)

    def _poll_interval(self, entry: _Repo) -> float:
        """``pull_interval``, stretched by back-off while the repo keeps failing."""
        if entry.poll_failures:
            return poll_retry_delay(entry.poll_failures, self.config.pull_interval)
        return self.config.pull_interval

    def _schedule_round(self, *, delay: float) -> None:
        self._scheduler.schedule(
            ROUND_JOB, self._round, ROUND_JOB, delay=delay, every=self.config.pull_interval
        )

    def _schedule_poll(self, entry: _Repo, *, delay: float, settled: bool = True) -> Completion:
        """One cycle of this repo alone, in the worker pool, ``delay`` seconds from now;
        the scheduler's :class:`~convosyncd.scheduler.Completion` of it."""
        return self._scheduler.schedule(
            f"poll:{entry.key}", self._poll, entry.key, settled, delay=delay
        )

    def _entry(self, key: str) -> _Repo | None:
        return self.repos.get(Path(key))

    # -- jobs -----------------------------------------------------------------------

    @guarded
    def _round(self, key: str) -> None:
        """Poll every repo not waiting out a back-off (see the module's docstring)."""
        self._watcher.check()
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
                    self._poll_entry(entry, settled=True)
                except Exception:
                    log.exception("%s: unexpected error in a poll", entry.key)
        finally:
            self._record_polls()

    def _poll(self, key: str, settled: bool = True) -> CycleResult | None:
        """One cycle of one repo (``settled``: only a draft that has settled is taken);
        its result, for whoever asked for it through the control socket."""
        entry = self._entry(key)
        if entry is None:
            return None
        try:
            return self._poll_entry(entry, settled=settled)
        except Exception:
            log.exception("%s: unexpected error in a poll", key)
            return None
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

    def _poll_entry(self, entry: _Repo, *, settled: bool) -> CycleResult:
        watching = self._watcher.ensure(entry.sync.repo.path)
        result = entry.sync.cycle(require_settled=settled)
        self.last_cycle[entry.sync.repo.path] = result
        if not watching:
            self._watcher.ensure(entry.sync.repo.path)
        self._after_cycle(entry, result)
        return result

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
            self._schedule_publish(entry, delay=_delay_until(result.publish_at))

    def _on_draft(self, repo: Path) -> None:
        entry = self.repos.get(repo)
        if entry is not None:
            self._schedule_publish(entry, delay=self.config.settle)

    def _on_layout(self, repo: Path) -> None:
        entry = self.repos.get(repo)
        if entry is not None and not self.stopping.is_set():
            self._watcher.ensure(repo)
            self._schedule_publish(entry, delay=self.config.settle)

    def _schedule_publish(self, entry: _Repo, *, delay: float) -> None:
        self._scheduler.schedule(f"draft:{entry.key}", self._publish, entry.key, delay=delay)

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
            self._schedule_publish(entry, delay=_delay_until(outcome.retry_at))
            return
        if outcome.status in ("published", "duplicate"):
            self._push(key)
            try:
                sync.refresh()
            except ConvosyncError as error:
                sync.fail(error)
            if sync.tree.draft.exists():
                # A new draft arrived while this one was published; its event has set
                # this job to run again, but look anyway: an event can be missed.
                self._schedule_publish(entry, delay=self.config.settle)

    def _schedule_push(self, entry: _Repo, *, delay: float | None = None) -> None:
        if delay is None:
            delay = backoff_delay(max(1, entry.push_failures))
            log.info(
                "%s: %d handoff(s) wait on the local sync branch; next push in %.1f s",
                entry.sync.repo.path,
                entry.sync.state.pending,
                delay,
            )
        self._scheduler.schedule(f"push:{entry.key}", self._push, entry.key, delay=delay)

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

    # -- waking up ------------------------------------------------------------------

    def _on_wake(self, reason: str) -> None:
        """The machine woke up or the network came back: check every repo now, the
        failing ones and the pushes waiting out a back-off included."""
        if self.stopping.is_set():
            return
        log.info("%s: checking every repo now", reason)
        self._schedule_round(delay=0)
        for entry in list(self.repos.values()):
            if entry.poll_failures:
                self._schedule_poll(entry, delay=0)
            if entry.push_failures:
                self._schedule_push(entry, delay=0)

    # -- the control socket ---------------------------------------------------------

    def _on_request(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one request from the control socket (see :mod:`convosyncd.control`)."""
        operation = request.get("op")
        if operation == "check":
            return self._answer_check(request)
        if operation == "sync":
            return self._answer_sync(request)
        if operation == "status":
            return self.status_report()
        return control.refusal(f"unknown request {operation!r}", "unknown-op")

    def _requested_entry(self, path: Any) -> _Repo | None:
        if not isinstance(path, str):
            return None
        return self.repos.get(Path(path))

    def _answer_check(self, request: dict[str, Any]) -> dict[str, Any]:
        """Run one repo's cycle now (after any run in flight) and wait for it, at most
        ``wait`` seconds; say whether its remote was reached."""
        entry = self._requested_entry(request.get("repo"))
        if entry is None:
            return control.refusal(f"not watching {request.get('repo')!r}", "unknown-repo")
        before = entry.sync.state.last_poll
        completion = self._schedule_poll(entry, delay=0)
        if not completion.wait(control.wait_of(request)):
            return {"ok": True, "done": False}
        result = completion.result
        if completion.ending == "cancelled" or result is None:
            return control.refusal("the check did not run (the daemon is stopping)", "stopped")
        return {
            "ok": True,
            "done": True,
            # A new poll time means the remote answered (the poll stage records it only then).
            "checked": entry.sync.state.last_poll is not before,
            "result": dataclasses.asdict(result),
        }

    def _answer_sync(self, request: dict[str, Any]) -> dict[str, Any]:
        """What ``convosyncd sync`` does, by this process: a full cycle of each repo
        named (every repo when none is), drafts taken whether settled or not."""
        named = request.get("repos")
        if named is None:
            entries = list(self.repos.values())
        elif isinstance(named, list):
            found = {str(path): self._requested_entry(path) for path in named}
            unknown = [path for path, entry in found.items() if entry is None]
            if unknown:
                return control.refusal(f"not watching {', '.join(unknown)}", "unknown-repo")
            entries = [entry for entry in found.values() if entry is not None]
        else:
            return control.refusal("'repos' must be a list of paths", "bad-request")
        runs = [(entry, self._schedule_poll(entry, delay=0, settled=False)) for entry in entries]
        deadline = time.monotonic() + control.wait_of(request)
        results: list[dict[str, Any]] = []
        for entry, completion in runs:
            done = completion.wait(max(0.0, deadline - time.monotonic()))
            result = completion.result if done else None
            results.append(
                {
                    "repo": entry.key,
                    "done": result is not None,
                    "result": dataclasses.asdict(result) if result is not None else None,
                }
            )
        return {"ok": True, "results": results}

    def status_report(self) -> dict[str, Any]:
        """What ``convosyncd status`` shows, from memory: each repo's state."""
        repos: dict[str, Any] = {}
        for path, entry in list(self.repos.items()):
            with entry.sync.synced.lock:
                repos[str(path)] = entry.sync.state.to_json()
        return {
            "ok": True,
            "device": self.config.device,
            "config": str(self.config_path),
            "config_error": self.config_error or self._apply_error,
            "repos": repos,
        }

    # -- config ---------------------------------------------------------------------

    def _stamp(self) -> tuple[int, int] | None:
        try:
            status = self.config_path.stat()
        except OSError:
            return None
        return (status.st_mtime_ns, status.st_size)

    def _on_config_event(self) -> None:
        self._scheduler.schedule("config-event", self._check_config, delay=CONFIG_SETTLE)

    def _check_config(self, force: bool = False) -> None:
        """Reload the config if the file changed (``force``: whether or not it did), and
        apply it; a config that did not apply in full is applied again, file changed
        or not, until it does."""
        with self._reload_lock:
            stamp = self._stamp()
            if stamp == self._config_stamp and self._applied and not force:
                return
            try:
                config = configs.load(self.config_path)
            except ConfigError as error:
                # Only an edit can fix the file: wait for the next one. The last good
                # config stays, and is applied again if it did not apply in full.
                self._config_stamp = stamp
                if not self._applied:
                    self._apply_config(self.config)
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
            if config == self.config and self._applied:
                self._config_stamp = stamp
                if force:
                    log.info("config unchanged")
                return
            if config != self.config:
                log.info("config changed; now %d repo(s)", len(config.repos))
            if self._apply_config(config):
                self._config_stamp = stamp
