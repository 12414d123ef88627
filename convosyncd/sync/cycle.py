"""One repo's whole tick: publish, poll, merge, retain, push, deliver, in that order.

:meth:`RepoSync.cycle` is the same code for the daemon's timer and for
``convosyncd sync``; :meth:`RepoSync.publish`, :meth:`RepoSync.push` and
:meth:`RepoSync.refresh` are the parts the daemon also runs on their own (a draft
settles, a push is retried). A repo's trouble becomes a :class:`CycleResult` and a log
line, never an exception that escapes into the daemon's loop.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

from convosyncd.config import Config, RepoConfig
from convosyncd.errors import ConvosyncError
from convosyncd.gitcmd import mask_credentials
from convosyncd.notify import Notifier
from convosyncd.sshshare import SshSharing
from convosyncd.state import RepoState
from convosyncd.sync.deliver import Deliverer
from convosyncd.sync.forget import Forgetter
from convosyncd.sync.merge import Merger
from convosyncd.sync.poll import Poller
from convosyncd.sync.publish import Publisher, PublishResult
from convosyncd.sync.push import Pusher
from convosyncd.sync.repo import SyncedRepo
from convosyncd.sync.retain import Retainer

log = logging.getLogger(__name__)


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
    retained: int = 0


class RepoSync:
    """The sync engine of one registered repo: its stages, run in order."""

    def __init__(
        self,
        config: Config,
        repo: RepoConfig,
        notifier: Notifier,
        *,
        sharing: SshSharing | None = None,
    ) -> None:
        self.synced = SyncedRepo(config, repo, notifier, sharing=sharing)
        self.deliverer = Deliverer(self.synced)
        self.publisher = Publisher(self.synced, on_published=self.deliverer.published)
        self.poller = Poller(self.synced)
        self.merger = Merger(self.synced)
        self.pusher = Pusher(self.synced, self.merger)
        self.forgetter = Forgetter(self.synced, self.merger, self.poller)
        self.retainer = Retainer(self.synced, self.forgetter)
        # What callers read, kept where the stages share it.
        self.repo = repo
        self.git = self.synced.git
        self.tree = self.synced.tree
        self.branch = self.synced.branch
        self.catalog = self.synced.catalog
        self.state_path = self.synced.state_path

    @property
    def config(self) -> Config:
        return self.synced.config

    @property
    def state(self) -> RepoState:
        return self.synced.state

    @property
    def poll_times_elsewhere(self) -> bool:
        return self.synced.poll_times_elsewhere

    @poll_times_elsewhere.setter
    def poll_times_elsewhere(self, value: bool) -> None:
        self.synced.poll_times_elsewhere = value

    @property
    def device(self) -> str:
        return self.synced.device

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
        self.synced.reconfigure(config)

    def ensure_layout(self) -> None:
        self.synced.ensure_layout()

    # -- the stages -----------------------------------------------------------------

    def publish(self, *, require_settled: bool = True) -> PublishResult:
        """Publish the draft if there is one (and it has settled); never pushes."""
        return self.publisher.publish(require_settled=require_settled)

    def pull(self) -> str | None:
        """Ask the remote for its tip; fetch and merge only when it moved."""
        synced = self.synced
        with synced.net:
            remote_tip = self.poller.poll()
        if remote_tip is None:
            return None
        with synced.local():
            before = self.branch.tip()
            after = self.merger.integrate(remote_tip)
        if after != before:
            log.info(
                "%s: pulled %s from %s (sync branch now at %s)",
                self.repo.path,
                self.repo.branch,
                self.repo.remote,
                (after or "")[:12],
            )
        return remote_tip

    def push(self) -> bool:
        """Push the local sync branch if the remote lacks some of it; True if pushed.

        In mode inline, the handoff commit on the person's branch follows it. A push
        that went through is saved at once: ``status`` must not show it still waiting.
        """
        pushed = self.pusher.push()
        if pushed:
            self.save()
        self.pusher.push_inline()
        return pushed

    def check(self) -> None:
        """Bring the local sync branch up to the remote's and deliver what arrived: a
        cycle's poll, merge and delivery, without publishing or pushing (what the
        session-start hook runs when no daemon can check for it)."""
        self.ensure_layout()
        self.pull()
        self.refresh()
        self.save()

    def save(self) -> None:
        """Write the repo's state file if it changed."""
        with self.synced.lock:
            self.synced.save()

    def refresh(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Rewrite ``session-handoff.md`` and notify what arrived since the last time."""
        return self.deliverer.refresh()

    # -- the whole tick -------------------------------------------------------------

    def cycle(self, *, require_settled: bool = True) -> CycleResult:
        """Publish, pull, push, write ``session-handoff.md`` and notify; never raises."""
        published: str | None = None
        publish_at: float | None = None
        pushed = False
        arrived: tuple[str, ...] = ()
        notified: tuple[str, ...] = ()
        retained = 0
        error: ConvosyncError | None = None
        try:
            self.ensure_layout()
            outcome = self.publish(require_settled=require_settled)
            if outcome.status == "published":
                published = outcome.name
            publish_at = outcome.retry_at
            self.pull()
            retained = self.retainer.retain()
            pushed = self.push()
        except Exception as problem:
            error = self.synced.as_error(problem)
        try:
            arrived, notified = self.refresh()
            if self.synced.inline_fresh:
                self.pusher.push_inline()
        except Exception as problem:
            error = error or self.synced.as_error(problem)
        result = self._conclude(error, published, pushed, arrived, notified, publish_at)
        return dataclasses.replace(result, retained=retained)

    def fail(self, error: ConvosyncError) -> None:
        """Record ``error`` (status, log, one notification) outside a full cycle."""
        with self.synced.lock:
            self.synced.record_error(error)
            self.synced.save()

    def _conclude(
        self,
        error: ConvosyncError | None,
        published: str | None,
        pushed: bool,
        arrived: tuple[str, ...],
        notified: tuple[str, ...],
        publish_at: float | None,
    ) -> CycleResult:
        synced = self.synced
        with synced.lock:
            state = synced.state
            if error is None:
                state.last_error = None
                state.notified_problems = [
                    key for key in state.notified_problems if key.startswith("draft:")
                ]
            else:
                synced.record_error(error)
            synced.save()
            problem = state.draft_problem.message if state.draft_problem else None
            return CycleResult(
                repo=str(self.repo.path),
                ok=error is None,
                error=mask_credentials(str(error)) if error else None,
                published=published,
                pushed=pushed,
                arrived=arrived,
                notified=notified,
                pending=state.pending,
                draft_problem=problem,
                publish_at=publish_at,
            )
