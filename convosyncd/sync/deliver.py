"""Delivering: ``session-handoff.md`` and notifications for what arrived.

After each change of the local sync branch, the newest verified handoff of every
device is written to ``.convosync/session-handoff.md`` in the plugin's format (in mode
inline it is also committed on the person's branch), and each other device whose
verified handoffs arrived is notified once, for its newest; more than
:data:`MAX_NOTIFICATIONS` devices at once make one summary instead. What has been
considered for a notification is remembered (``notified_through``) before anything is
sent, so after a crash a notification may be missed but is never raised twice. What
arrived that does not open under the person's key is counted for ``status``, never
shown or notified.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from convosyncd import state as states
from convosyncd.catalog import Survey
from convosyncd.handoff import (
    MATERIALIZED_NAME,
    PLUGIN_FILE_BYTES,
    PLUGIN_HANDOFF_BYTES,
    Handoff,
    Notification,
    notification_for,
    render_plugin,
    summary_notification,
)
from convosyncd.keys import Keyring, SyncKeyError
from convosyncd.sync.repo import SyncedRepo, now_text

log = logging.getLogger(__name__)

MAX_NOTIFICATIONS = 3
"""Notifications one refresh raises at most; a burst from more devices is one summary."""
KNOWN_DEVICES = 32
"""Devices remembered as seen with verified handoffs (read first from a crowded remote)."""


class Deliverer:
    """Writes one repo's handoffs file and raises its notifications."""

    def __init__(self, repo: SyncedRepo) -> None:
        self.repo = repo
        self._refreshed_tip: str | None = None
        self._refreshed_keys: Keyring | None = None
        """The keyring the handoffs file was written with: a ``key import`` while the
        daemon runs opens handoffs already on the branch, so the file is written again."""
        self._survey_due = False

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
            stale = tip != self._refreshed_tip or self._refreshed_keys != self._keyring()
            if stale or not repo.tree.materialized.exists():
                self.materialize(tip)
            elif self._survey_due:
                self.survey(tip)
            baseline = repo.state.notified_through
            if baseline == tip:
                return (), ()
            if baseline is not None and not branch.has_commit(baseline):
                baseline = None
            arrived, others = repo.catalog.arrivals(baseline, tip, repo.device)
            repo.state.notified_through = tip
            if arrived:
                count = sum(len(items) for items in arrived.values())
                repo.state.last_pull = states.Event(now_text(), f"{count} new handoff(s)")
                self._remember_devices(arrived)
            for device, survey in others.items():
                log.warning(
                    "%s: %d file(s) arrived in %s's folder that do not open under your sync "
                    "key (%s); they are not shown (convosyncd status says more)",
                    repo.repo.path,
                    survey.untrusted,
                    device,
                    _describe(survey),
                )
            # Remember first, then notify: after a crash a notification may be missed,
            # but never raised twice.
            repo.save()
        notified = self._notify(arrived)
        names = tuple(
            f"{device}/{handoff.name}" for device, items in arrived.items() for handoff in items
        )
        return names, notified

    def _notify(self, arrived: dict[str, list[Handoff]]) -> tuple[str, ...]:
        repo = self.repo
        now = datetime.now(timezone.utc)
        newest = {
            device: max(items, key=lambda handoff: repo.catalog.order_key(handoff, now))
            for device, items in arrived.items()
        }
        if len(newest) > MAX_NOTIFICATIONS:
            log.info(
                "%s: handoffs from %d devices arrived at once; one summary notification "
                "instead of one each (at most %d)",
                repo.repo.path,
                len(newest),
                MAX_NOTIFICATIONS,
            )
            count = sum(len(items) for items in arrived.values())
            self._send(summary_notification(count, newest, repo.repo.path.name), "a burst")
            return tuple(f"{device}/{handoff.name}" for device, handoff in sorted(newest.items()))
        notified = []
        for device, handoff in sorted(newest.items()):
            self._send(notification_for(handoff, repo.repo.path.name), handoff.task, device)
            notified.append(f"{device}/{handoff.name}")
        return tuple(notified)

    def _send(self, notification: Notification, what: str, device: str = "") -> None:
        repo = self.repo
        delivery = repo.notifier.send(notification)
        source = f"handoff from {device}" if device else "handoffs"
        log.info(
            "%s: %s arrived (%s); notification %s", repo.repo.path, source, what, delivery.outcome
        )

    def _remember_devices(self, arrived: dict[str, list[Handoff]]) -> None:
        known = self.repo.state.known_devices
        fresh = [device for device in sorted(arrived) if device not in known]
        if fresh:
            self.repo.state.known_devices = [*known, *fresh][-KNOWN_DEVICES:]

    def survey(self, tip: str) -> None:
        """Count what the branch holds that is not the person's, for ``status``."""
        repo = self.repo
        found = {
            device: survey.as_json()
            for device, survey in repo.catalog.survey(tip).items()
            if survey.untrusted
        }
        if found != repo.state.untrusted:
            repo.state.untrusted = found
        self._survey_due = False

    def _refreshed(self, tip: str | None) -> bool:
        """Whether ``tip`` is written, notified and known, and the file still there."""
        repo = self.repo
        with repo.lock:
            return (
                tip is not None
                and tip == self._refreshed_tip == repo.state.notified_through
                and tip == repo.state.local_tip
                and self._refreshed_keys == self._keyring()
                and not self._survey_due
                and repo.tree.materialized.exists()
            )

    def _keyring(self) -> Keyring | None:
        """The keyring now (one ``stat`` of its file); None if there is none or it
        cannot be used (the cycle reports that)."""
        try:
            return self.repo.keys.get()
        except SyncKeyError:
            return None

    def published(self, tip: str) -> None:
        """This device has just published ``tip``: write ``session-handoff.md`` now, and
        count what is not the person's at the refresh after the push. The publish added
        only a file of this device's own, and counting can open a thousand files (right
        after a start it reads the whole branch, a thousand files a refresh): not worth
        delaying the push for. Call with the repo's local lock held."""
        self.materialize(tip, survey=False)

    def materialize(self, tip: str, *, survey: bool = True) -> None:
        """Write the newest handoff of every device at ``tip`` where the assistant reads it.

        Call with the repo's local lock held.
        """
        repo = self.repo
        keyring = self._keyring()
        if repo.inline is not None:
            self._record_inline(tip, keyring)
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
        latest = repo.catalog.latest(tip)
        _log_cuts(repo, latest)
        if repo.tree.write_materialized(render_plugin(latest)):
            log.debug("%s: wrote %s", repo.repo.path, repo.tree.materialized)
        if survey:
            self.survey(tip)
        else:
            self._survey_due = True
        self._refreshed_tip, self._refreshed_keys = tip, keyring

    def _record_inline(self, tip: str, keyring: Keyring | None) -> None:
        """Commit ``session-handoff.md`` on the person's current branch (see :mod:`inline`)."""
        repo = self.repo
        assert repo.inline is not None
        outcome = repo.inline.record(repo.catalog.latest(tip), repo.identity())
        self.survey(tip)
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
        self._refreshed_tip, self._refreshed_keys = tip, keyring
        repo.save()


def _describe(survey: Survey) -> str:
    parts = [
        f"{count} {verdict}"
        for verdict in ("foreign", "forged", "damaged", "unverified")
        if (count := getattr(survey, verdict))
    ]
    return ", ".join(parts)


def _log_cuts(repo: SyncedRepo, handoffs: list[Handoff]) -> None:
    """Say so when ``session-handoff.md`` cannot hold every handoff whole."""
    sizes = [len(handoff.body.encode("utf-8")) for handoff in handoffs]
    long = sum(1 for size in sizes if size > PLUGIN_HANDOFF_BYTES)
    if long or sum(sizes) > PLUGIN_FILE_BYTES:
        log.warning(
            "%s: session-handoff.md holds at most %d bytes of a handoff and %d in all; "
            "cut to fit (`convosyncd show` prints a handoff whole)",
            repo.repo.path,
            PLUGIN_HANDOFF_BYTES,
            PLUGIN_FILE_BYTES,
        )
