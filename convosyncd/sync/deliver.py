"""Delivering: ``session-handoff.md`` and notifications for what arrived.

After each change of the local sync branch, the newest handoff of every device is
written to ``.convosync/session-handoff.md`` in the plugin's format (in mode inline it is
also committed on the person's branch), and each other device whose handoffs arrived is
notified once, for its newest. What has been considered for a notification is
remembered (``notified_through``) before anything is sent, so after a crash a
notification may be missed but is never raised twice.
"""

from __future__ import annotations

import logging

from convosyncd import state as states
from convosyncd.handoff import MATERIALIZED_NAME, newest_per_device, notification_for, render_plugin
from convosyncd.sync.repo import SyncedRepo, now_text

log = logging.getLogger(__name__)


class Deliverer:
    """Writes one repo's handoffs file and raises its notifications."""

    def __init__(self, repo: SyncedRepo) -> None:
        self.repo = repo
        self._refreshed_tip: str | None = None

    def refresh(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Rewrite ``session-handoff.md`` and notify what arrived since the last time.

        Returns the names that arrived and those notified (``device/name``).
        """
        repo, branch = self.repo, self.repo.branch
        if self._refreshed(branch.tip()):
            # The idle case: nothing new to write or notify, not worth the repo lock.
            return (), ()
        with repo.local():
            tip = branch.tip()
            repo.state.local_tip = tip
            if tip is None:
                return (), ()
            if tip != self._refreshed_tip or not repo.tree.materialized.exists():
                self.materialize(tip)
            baseline = repo.state.notified_through
            if baseline == tip:
                return (), ()
            if baseline is not None and not branch.has_commit(baseline):
                baseline = None
            arrived = repo.catalog.arrivals(baseline, tip, repo.device)
            repo.state.notified_through = tip
            if arrived:
                repo.state.last_pull = states.Event(
                    now_text(), f"{sum(len(v) for v in arrived.values())} new handoff(s)"
                )
            # Remember first, then notify: after a crash a notification may be missed,
            # but never raised twice.
            repo.save()
        notified = []
        for device, name in sorted(newest_per_device(arrived, repo.device).items()):
            handoff = repo.catalog.read(tip, device, name)
            if handoff is None:
                continue
            delivery = repo.notifier.send(notification_for(handoff, repo.repo.path.name))
            log.info(
                "%s: handoff from %s arrived (%s); notification %s",
                repo.repo.path,
                device,
                handoff.task,
                delivery.outcome,
            )
            notified.append(f"{device}/{name}")
        names = tuple(f"{device}/{name}" for device, items in arrived.items() for name in items)
        return names, tuple(notified)

    def _refreshed(self, tip: str | None) -> bool:
        """Whether ``tip`` is written, notified and known, and the file still there."""
        repo = self.repo
        with repo.lock:
            return (
                tip is not None
                and tip == self._refreshed_tip == repo.state.notified_through
                and tip == repo.state.local_tip
                and repo.tree.materialized.exists()
            )

    def materialize(self, tip: str) -> None:
        """Write the newest handoff of every device at ``tip`` where the assistant reads it.

        Call with the repo's local lock held.
        """
        repo = self.repo
        if repo.inline is not None:
            self._record_inline(tip)
            return
        if MATERIALIZED_NAME in repo.tracked:
            message = (
                f"{repo.tree.materialized} is tracked by git on your branch, so convosyncd "
                "does not write it: run `git rm --cached .convosync/session-handoff.md` "
                "and commit"
            )
            if repo.state.last_error is None or repo.state.last_error.message != message:
                log.warning("%s", message)
            return
        if repo.tree.write_materialized(render_plugin(repo.catalog.latest(tip))):
            log.debug("%s: wrote %s", repo.repo.path, repo.tree.materialized)
        self._refreshed_tip = tip

    def _record_inline(self, tip: str) -> None:
        """Commit ``session-handoff.md`` on the person's current branch (see :mod:`inline`)."""
        repo = self.repo
        assert repo.inline is not None
        outcome = repo.inline.record(repo.catalog.latest(tip), repo.identity())
        if outcome.status == "skipped":
            # Tried again on the next refresh, until the reason has gone.
            repo.inline_problem(outcome.message)
            return
        if outcome.status == "committed":
            log.info("%s: %s (mode inline)", repo.repo.path, outcome.message)
            repo.state.last_inline = states.Event(now_text(), outcome.message)
            repo.state.inline_unpushed = outcome.branch
            repo.inline_fresh = True
        repo.clear_inline_problem("not committed")
        self._refreshed_tip = tip
        repo.save()
