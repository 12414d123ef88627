"""One repo's sync: publish the draft, pull the other devices' handoffs, push, notify.

:meth:`RepoSync.cycle` is the whole tick, the same code for the daemon's timer and for
``convosyncd sync``; :meth:`RepoSync.publish` and :meth:`RepoSync.push` are its halves
that the daemon also runs on their own when a draft settles or a push is retried. A
repo's trouble becomes a :class:`CycleResult` and a log line, never an exception that
escapes into the daemon's loop.

Two locks per repo: local changes (the draft, the sync ref, the state file) are made
under a short lock that also excludes other convosyncd processes, network calls under
another, so a remote that hangs for its full time limit never delays taking a draft in.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Literal

from filelock import FileLock, Timeout

from convosyncd import draft as drafts
from convosyncd import state as states
from convosyncd.catalog import Catalog
from convosyncd.config import Config, RepoConfig
from convosyncd.errors import ConvosyncError, GitError, GitTimeout
from convosyncd.gitcmd import Git, mask_credentials
from convosyncd.gitstore import Identity, SyncBranch
from convosyncd.handoff import (
    DRAFT_NAME,
    HANDOFFS_DIR,
    MATERIALIZED_NAME,
    Notification,
    Provenance,
    content_digest,
    digest_of_filename,
    format_time,
    handoff_filename,
    newest_per_device,
    notification_for,
    plain_text,
    render_plugin,
    render_stored,
    task_line,
)
from convosyncd.inline import InlineBranch, Pushed
from convosyncd.notify import Notifier
from convosyncd.sshshare import SshSharing
from convosyncd.worktree import WorkTree

log = logging.getLogger(__name__)

ATTEMPTS = 5
"""How often a publish, merge or push is retried when another writer moved the branch."""

PUSH_ATTEMPTS = 12
"""Pushes tried (fetching and merging in between) before a cycle leaves it to the next."""

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

PublishStatus = Literal["none", "published", "duplicate", "unsettled", "refused"]


@dataclass(frozen=True)
class PublishResult:
    """What became of the draft."""

    status: PublishStatus
    name: str = ""
    retry_at: float | None = None
    message: str = ""


@dataclass(frozen=True)
class CycleResult:
    """The outcome of one full cycle for one repo."""

    repo: str
    ok: bool
    error: str | None = None
    published: str | None = None
    pushed: bool = False
    arrived: tuple[str, ...] = field(default=())
    notified: tuple[str, ...] = field(default=())
    pending: int = 0
    draft_problem: str | None = None
    publish_at: float | None = None


def _without_poll(data: bytes) -> bytes:
    return re.sub(rb'"last_poll": \{[^}]*\}', b"", data)


def now_text() -> str:
    return format_time(datetime.now(timezone.utc))


def is_offline_error(error: ConvosyncError) -> bool:
    """An error that ordinary life produces (offline laptop, sleeping server)."""
    if isinstance(error, GitTimeout):
        return True
    text = str(error).lower()
    return any(hint in text for hint in _OFFLINE_HINTS)


class RepoSync:
    """The sync engine of one registered repo."""

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
        self.state.path = str(repo.path)
        self.state.remote = repo.remote
        self.state.branch = repo.branch
        self.state.device = config.device
        self._lock = threading.RLock()
        self._net = threading.Lock()
        self.poll_times_elsewhere = False
        """Set by the daemon: a poll that changed nothing but its time is not saved here."""
        self._file_lock = FileLock(str(states.lock_file(config.state_dir, repo.path)))
        self._identity: Identity | None = None
        self._tracked: set[str] | None = None
        self.catalog = Catalog(self.branch, max_bytes=config.max_draft_bytes)
        self._first_seen: tuple[drafts.Signature, float] | None = None
        self._saved: bytes | None = None
        self._layout_checked = 0.0
        self._refreshed_tip: str | None = None
        # mode = "inline": the handoffs file is also committed on the person's branch.
        self.inline = (
            InlineBranch(self.git, self.tree, repo.remote) if repo.mode == "inline" else None
        )
        self._inline_fresh = False
        # This device's folder on the sync branch and the digests in it (kept up to date
        # by each publish, so a folder of thousands is read once, not once per publish).
        self._published: tuple[str | None, dict[str, str]] = (None, {})

    @property
    def device(self) -> str:
        return self.config.device

    def polls_in_process(self) -> bool:
        """Whether an idle poll of this repo starts no process (its remote is read from
        the local disk), so that it cannot hang on a network. False when that cannot be
        told (a folder gone, a broken repo): the poll itself then reports why."""
        try:
            return self.branch.reads_remote_directly()
        except (ConvosyncError, OSError):
            return False

    def reconfigure(self, config: Config) -> None:
        """Take new global settings (settle, timeouts, notify) without losing state."""
        with self._lock:
            if config.device != self.config.device:
                self._layout_checked = 0.0
            self.config = config
            self.git.network_timeout = config.network_timeout
            self.state.device = config.device

    # -- locking --------------------------------------------------------------------

    @contextmanager
    def _local(self) -> Iterator[None]:
        with self._lock:
            try:
                self._file_lock.acquire(timeout=60)
            except Timeout:
                raise ConvosyncError(
                    f"another convosyncd process has held the lock on {self.repo.path} for a "
                    f"minute ({self._file_lock.lock_file}); if none is running, delete that file"
                ) from None
            try:
                yield
            finally:
                self._file_lock.release()

    # -- the cycle ------------------------------------------------------------------

    def cycle(self, *, require_settled: bool = True) -> CycleResult:
        """Publish, pull, push, write ``session-handoff.md`` and notify; never raises."""
        published: str | None = None
        publish_at: float | None = None
        pushed = False
        arrived: tuple[str, ...] = ()
        notified: tuple[str, ...] = ()
        error: ConvosyncError | None = None
        try:
            self.ensure_layout()
            outcome = self.publish(require_settled=require_settled)
            if outcome.status == "published":
                published = outcome.name
            publish_at = outcome.retry_at
            self.pull()
            pushed = self.push()
        except Exception as problem:
            error = self._as_error(problem)
        try:
            arrived, notified = self.refresh()
            if self._inline_fresh:
                self.push_inline()
        except Exception as problem:
            error = error or self._as_error(problem)
        return self._conclude(error, published, pushed, arrived, notified, publish_at)

    def _as_error(self, problem: Exception) -> ConvosyncError:
        if isinstance(problem, ConvosyncError):
            return problem
        if isinstance(problem, OSError):
            return ConvosyncError(str(problem))
        log.exception("%s: unexpected error", self.repo.path)
        return ConvosyncError(
            f"unexpected {type(problem).__name__}: {problem} "
            "(the log has the details; please report it)"
        )

    def fail(self, error: ConvosyncError) -> None:
        """Record ``error`` (status, log, one notification) outside a full cycle."""
        with self._lock:
            self._record_error(error)
            self._save()

    def _conclude(
        self,
        error: ConvosyncError | None,
        published: str | None,
        pushed: bool,
        arrived: tuple[str, ...],
        notified: tuple[str, ...],
        publish_at: float | None,
    ) -> CycleResult:
        with self._lock:
            if error is None:
                self.state.last_error = None
                self.state.notified_problems = [
                    key for key in self.state.notified_problems if key.startswith("draft:")
                ]
            else:
                self._record_error(error)
            self._save()
            problem = self.state.draft_problem.message if self.state.draft_problem else None
            return CycleResult(
                repo=str(self.repo.path),
                ok=error is None,
                error=mask_credentials(str(error)) if error else None,
                published=published,
                pushed=pushed,
                arrived=arrived,
                notified=notified,
                pending=self.state.pending,
                draft_problem=problem,
                publish_at=publish_at,
            )

    def _record_error(self, error: ConvosyncError) -> None:
        message = mask_credentials(str(error))
        log.error("%s: %s", self.repo.path, message)
        self.state.last_error = states.Event(now_text(), message)
        if is_offline_error(error):
            return
        key = f"error:{message[:200]}"
        if key not in self.state.notified_problems:
            self._remember_problem(key)
            self.notifier.send(
                Notification(
                    title=plain_text(f"convosyncd: trouble with {self.repo.path.name}", 80),
                    message=plain_text(message, 240),
                )
            )

    def _remember_problem(self, key: str) -> None:
        self.state.notified_problems = [*self.state.notified_problems[-19:], key]

    def _save(self) -> None:
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
        with self._local():
            self.tree.prepare(self.device)
            self._tracked = self.tree.tracked()
            self._layout_checked = time.monotonic()
            if not self.state.initialized:
                # First sight of this repo (or its state was lost): what is already on the
                # local branch is known, so only handoffs arriving from now on notify.
                self.state.notified_through = self.branch.tip()
                self.state.initialized = True
                self._save()

    # -- publishing ------------------------------------------------------------------

    def publish(self, *, require_settled: bool = True) -> PublishResult:
        """Publish the draft if there is one (and it has settled); never pushes."""
        if drafts.peek(self.tree.draft) is None and self.state.draft_problem is None:
            # Nothing to take in: not worth the repo lock on every idle poll.
            self._first_seen = None
            return PublishResult("none")
        with self._local():
            try:
                draft = drafts.read(self.tree.draft, self.config.max_draft_bytes)
            except drafts.DraftRefused as refusal:
                self._draft_problem(refusal)
                return PublishResult("refused", message=str(refusal))
            if draft is None:
                self._first_seen = None
                self._clear_draft_problem()
                return PublishResult("none")
            if require_settled:
                retry_at = self._settles_at(draft.signature)
                if retry_at is not None:
                    return PublishResult("unsettled", retry_at=retry_at)
            try:
                return self._publish(draft)
            except drafts.DraftRefused as refusal:
                self._draft_problem(refusal, draft.signature)
                return PublishResult("refused", message=str(refusal))

    def _settles_at(self, signature: drafts.Signature) -> float | None:
        """None if the draft has been still for ``settle`` seconds, else when it will be."""
        now = time.time()
        changed = signature.mtime_ns / 1e9
        if changed <= now + 1:
            ready = changed + self.config.settle
            return None if ready <= now else ready
        # A modification time in the future (a copied file, a clock jump): count from
        # the moment this version was first seen instead.
        if self._first_seen is None or self._first_seen[0] != signature:
            self._first_seen = (signature, now)
        ready = self._first_seen[1] + self.config.settle
        return None if ready <= now else ready

    def _publish(self, draft: drafts.Draft) -> PublishResult:
        digest = content_digest(draft.data)
        for _attempt in range(ATTEMPTS):
            tip = self.branch.tip()
            folder = self.branch.device_folders(tip).get(self.device)
            published = self._published_digests(folder)
            if digest in published:
                log.info(
                    "%s: draft already published as %s; removing the draft",
                    self.repo.path,
                    published[digest],
                )
                self._finish_draft(draft)
                return PublishResult("duplicate", name=published[digest])
            text = self._screen_secrets(draft)
            head = self.tree.head()
            created = datetime.now(timezone.utc)
            name = handoff_filename(created, digest)
            provenance = Provenance(self.device, created, head.commit, head.branch)
            stored = render_stored(provenance, text)
            blob = self.branch.write_blob(stored)
            root = self.branch.add_file(tip, (HANDOFFS_DIR, self.device), name, blob)
            task = task_line(text)
            commit = self.branch.commit(
                root,
                [tip] if tip else [],
                f"handoff({self.device}): {task}",
                self.identity(),
                created,
            )
            if self.branch.move(commit, tip, f"publish {name}"):
                break
        else:
            raise ConvosyncError(
                "the sync branch kept changing while publishing; "
                "the draft stays and will be published on the next try"
            )
        log.info("%s: published %s/%s (%s)", self.repo.path, self.device, name, task)
        published[digest] = name
        self._published = (self.branch.device_folders(commit).get(self.device), published)
        self.catalog.remember(blob, self.device, name, stored)
        self.state.last_publish = states.Event(now_text(), f"{name}: {task}")
        self.state.local_tip = commit
        self._clear_draft_problem()
        self._finish_draft(draft)
        # One more handoff commit than the remote has: counted without asking git, since
        # the push that follows at once counts again (0 once it is through).
        self._set_pending(self.state.pending + 1)
        self._materialize(commit)
        self._save()
        return PublishResult("published", name=name)

    def _published_digests(self, folder: str | None) -> dict[str, str]:
        """``{content digest: file name}`` of this device's handoffs in ``folder``."""
        if folder is None:
            return {}
        if self._published[0] != folder:
            found: dict[str, str] = {}
            for entry in self.branch.device_files(folder):
                digest = digest_of_filename(entry.name)
                if digest is not None:
                    found.setdefault(digest, entry.name)
            self._published = (folder, found)
        return self._published[1]

    def _finish_draft(self, draft: drafts.Draft) -> None:
        if DRAFT_NAME in (self._tracked or set()):
            log.warning(
                "%s: the draft is tracked by git on your branch, so it was left in place "
                "(run `git rm --cached .convosync/%s` to let convosyncd remove it)",
                self.repo.path,
                DRAFT_NAME,
            )
            return
        if not drafts.remove_if_unchanged(draft):
            log.info(
                "%s: the draft changed while publishing; the new version is next", self.repo.path
            )
        self._first_seen = None

    def _screen_secrets(self, draft: drafts.Draft) -> str:
        from convosyncd import secretscan

        findings = secretscan.scan(draft.text, derived=task_line)
        if not findings:
            return draft.text
        where = secretscan.describe(findings)
        if self.config.secrets == "block":
            raise drafts.DraftRefused(
                f"{draft.path} contains what look like secrets ({where}) and the config says "
                'secrets = "block": remove them from the draft, or set secrets = "redact"'
            )
        log.warning("%s: redacted %s from the draft before publishing", self.repo.path, where)
        key = f"draft:redacted:{draft.signature}"
        if key not in self.state.notified_problems:
            self._remember_problem(key)
            self.notifier.send(
                Notification(
                    title=plain_text(f"convosyncd redacted secrets in {self.repo.path.name}", 80),
                    message=plain_text(f"Replaced before publishing: {where}", 240),
                )
            )
        return secretscan.redact(draft.text, findings)

    def _draft_problem(
        self, refusal: drafts.DraftRefused, signature: drafts.Signature | None = None
    ) -> None:
        message = str(refusal)
        if signature is None:
            status = drafts.peek(self.tree.draft)
            signature = drafts.Signature.of(status) if status else None
        key = f"draft:{signature}:{message[:120]}"
        self.state.draft_problem = states.Event(now_text(), message)
        if key in self.state.notified_problems:
            return
        log.error("%s: draft refused: %s", self.repo.path, message)
        self._remember_problem(key)
        self._save()
        self.notifier.send(
            Notification(
                title=plain_text(f"convosyncd could not publish in {self.repo.path.name}", 80),
                message=plain_text(message, 240),
            )
        )

    def _clear_draft_problem(self) -> None:
        if self.state.draft_problem is not None:
            self.state.draft_problem = None
            self.state.notified_problems = [
                key for key in self.state.notified_problems if not key.startswith("draft:")
            ]
            self._save()

    def identity(self) -> Identity:
        """The person's git identity where configured, else the device's name."""
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

    # -- the remote ------------------------------------------------------------------

    def pull(self) -> str | None:
        """Ask the remote for its tip; fetch and merge only when it moved."""
        with self._net:
            remote_tip = self.branch.ls_remote()
            self.state.last_poll = states.Event(now_text(), "checked the remote")
            self.state.remote_tip = remote_tip
            if remote_tip is None:
                if self.branch.remote_known_tip() is not None:
                    self.branch.forget_remote_tip()
                return None
            if remote_tip == self.state.local_tip == self.branch.tip():
                return remote_tip
            if not self.branch.has_commit(remote_tip):
                self.branch.fetch()
            elif self.branch.remote_known_tip() != remote_tip:
                self.branch.record_remote_tip(remote_tip)
            if not self.branch.has_commit(remote_tip):
                raise GitError(
                    f"fetched {self.repo.remote} but its {self.repo.branch} "
                    f"commit {remote_tip[:12]} is still missing; run `git -C {self.repo.path} "
                    f"fetch {self.repo.remote}` to see why"
                )
        with self._local():
            before = self.branch.tip()
            after = self._integrate(remote_tip)
        if after != before:
            log.info(
                "%s: pulled %s from %s (sync branch now at %s)",
                self.repo.path,
                self.repo.branch,
                self.repo.remote,
                (after or "")[:12],
            )
        return remote_tip

    def _integrate(self, remote: str) -> str | None:
        """Make the local branch contain ``remote``: adopt, fast-forward or merge."""
        for _attempt in range(ATTEMPTS):
            local = self.branch.tip()
            if local == remote:
                break
            if local is None:
                if self.branch.move(remote, None, f"first sync from {self.repo.remote}"):
                    break
                continue
            if self.branch.is_ancestor(remote, local):
                break
            if self.branch.is_ancestor(local, remote):
                if self.branch.move(remote, local, f"fast-forward from {self.repo.remote}"):
                    break
                continue
            tree = self.branch.union_tree(
                self.branch.root_tree(local), self.branch.root_tree(remote)
            )
            merged = self.branch.commit(
                tree,
                [local, remote],
                f"merge({self.device}): handoffs from {self.repo.remote}",
                self.identity(),
                datetime.now(timezone.utc),
            )
            if self.branch.move(merged, local, f"merge {self.repo.remote}"):
                log.info("%s: merged the remote's handoffs with this device's", self.repo.path)
                break
        else:
            raise ConvosyncError("the sync branch kept changing while merging; will retry")
        tip = self.branch.tip()
        self.state.local_tip = tip
        return tip

    def push(self) -> bool:
        """Push the local sync branch if the remote lacks some of it; True if pushed.

        In mode inline, the handoff commit on the person's branch follows it.
        """
        pushed = self._push_sync_branch()
        self.push_inline()
        return pushed

    def _push_sync_branch(self) -> bool:
        """Push, fetching and merging when another device pushed first.

        After a rejection the next try waits a short random pause that grows with each
        try, so that devices racing for the remote stop colliding in step.
        """
        with self._net:
            for attempt in range(PUSH_ATTEMPTS):
                if attempt:
                    time.sleep(random.uniform(0.0, 0.1 * attempt))  # noqa: S311 - jitter
                local = self.branch.tip()
                known = self.branch.remote_known_tip()
                if local is None or local == known:
                    self._set_pending(0)
                    return False
                outcome = self.branch.push(local)
                if outcome.accepted:
                    self.state.remote_tip = local
                    self.state.last_push = states.Event(now_text(), f"pushed {local[:12]}")
                    self._set_pending(0)
                    log.info("%s: pushed the sync branch to %s", self.repo.path, self.repo.remote)
                    return True
                if not outcome.rejected:
                    self._update_pending()
                    raise GitError(f"push to {self.repo.remote} failed: {outcome.message}")
                log.info("%s: push rejected (another device pushed first); merging", self.repo.path)
                self.branch.fetch()
                remote = self.branch.remote_known_tip()
                if remote is not None:
                    with self._local():
                        self._integrate(remote)
            self._update_pending()
            raise ConvosyncError(
                f"the remote kept moving during {PUSH_ATTEMPTS} pushes; will retry"
            )

    def _set_pending(self, count: int) -> None:
        with self._lock:
            self.state.pending = count

    def _update_pending(self) -> None:
        try:
            count = self.branch.count_unpushed(self.branch.tip(), self.branch.remote_known_tip())
        except GitError as error:
            log.warning("%s: cannot count unpushed handoffs: %s", self.repo.path, error)
            return
        self._set_pending(count)

    # -- what arrived ----------------------------------------------------------------

    def refresh(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Rewrite ``session-handoff.md`` and notify what arrived since the last time."""
        if self._refreshed(self.branch.tip()):
            # The idle case: nothing new to write or notify, not worth the repo lock.
            return (), ()
        with self._local():
            tip = self.branch.tip()
            self.state.local_tip = tip
            if tip is None:
                return (), ()
            if tip != self._refreshed_tip or not self.tree.materialized.exists():
                self._materialize(tip)
            baseline = self.state.notified_through
            if baseline == tip:
                return (), ()
            if baseline is not None and not self.branch.has_commit(baseline):
                baseline = None
            arrived = self.catalog.arrivals(baseline, tip, self.device)
            self.state.notified_through = tip
            if arrived:
                self.state.last_pull = states.Event(
                    now_text(), f"{sum(len(v) for v in arrived.values())} new handoff(s)"
                )
            # Remember first, then notify: after a crash a notification may be missed,
            # but never raised twice.
            self._save()
        notified = []
        for device, name in sorted(newest_per_device(arrived, self.device).items()):
            handoff = self.catalog.read(tip, device, name)
            if handoff is None:
                continue
            delivery = self.notifier.send(notification_for(handoff, self.repo.path.name))
            log.info(
                "%s: handoff from %s arrived (%s); notification %s",
                self.repo.path,
                device,
                handoff.task,
                delivery.outcome,
            )
            notified.append(f"{device}/{name}")
        names = tuple(f"{device}/{name}" for device, items in arrived.items() for name in items)
        return names, tuple(notified)

    def _refreshed(self, tip: str | None) -> bool:
        """Whether ``tip`` is written, notified and known, and the file still there."""
        with self._lock:
            return (
                tip is not None
                and tip == self._refreshed_tip == self.state.notified_through
                and tip == self.state.local_tip
                and self.tree.materialized.exists()
            )

    def _materialize(self, tip: str) -> None:
        if self.inline is not None:
            self._record_inline(tip)
            return
        if MATERIALIZED_NAME in (self._tracked or set()):
            message = (
                f"{self.tree.materialized} is tracked by git on your branch, so convosyncd "
                "does not write it: run `git rm --cached .convosync/session-handoff.md` "
                "and commit"
            )
            if self.state.last_error is None or self.state.last_error.message != message:
                log.warning("%s", message)
            return
        if self.tree.write_materialized(render_plugin(self.catalog.latest(tip))):
            log.debug("%s: wrote %s", self.repo.path, self.tree.materialized)
        self._refreshed_tip = tip

    # -- mode inline -----------------------------------------------------------------

    def _record_inline(self, tip: str) -> None:
        """Commit ``session-handoff.md`` on the person's current branch (see :mod:`inline`)."""
        assert self.inline is not None
        outcome = self.inline.record(self.catalog.latest(tip), self.identity())
        if outcome.status == "skipped":
            # Tried again on the next refresh, until the reason has gone.
            self._inline_problem(outcome.message)
            return
        if outcome.status == "committed":
            log.info("%s: %s (mode inline)", self.repo.path, outcome.message)
            self.state.last_inline = states.Event(now_text(), outcome.message)
            self.state.inline_unpushed = outcome.branch
            self._inline_fresh = True
        self._clear_inline_problem("not committed")
        self._refreshed_tip = tip
        self._save()

    def push_inline(self) -> bool:
        """Push the handoff commit on the person's branch, if that is safe; True if pushed."""
        branch = self.state.inline_unpushed
        if self.inline is None or branch is None:
            return False
        with self._net:
            try:
                outcome = self.inline.push(branch)
            except ConvosyncError as error:
                outcome = Pushed("held", f"not pushed: {mask_credentials(str(error))}")
        with self._lock:
            self._inline_fresh = False
            if outcome.status == "held":
                self._inline_problem(outcome.message)
                return False
            if self.state.inline_unpushed == branch:
                self.state.inline_unpushed = None
            if outcome.status == "pushed":
                log.info("%s: %s (mode inline)", self.repo.path, outcome.message)
                self.state.last_inline = states.Event(now_text(), outcome.message)
            self._clear_inline_problem("not pushed")
            self._save()
        return outcome.status == "pushed"

    def _inline_problem(self, message: str) -> None:
        problem = self.state.inline_problem
        if problem is None or problem.message != message:
            log.warning("%s: mode inline: %s", self.repo.path, message)
            self.state.inline_problem = states.Event(now_text(), message)
            self._save()

    def _clear_inline_problem(self, kind: str) -> None:
        problem = self.state.inline_problem
        if problem is not None and problem.message.startswith(kind):
            self.state.inline_problem = None
