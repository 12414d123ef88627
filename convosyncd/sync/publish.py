"""Publishing: the draft becomes a handoff on the local sync branch.

A draft is taken once it has been still for ``settle`` seconds, screened for secrets,
written as one file in this device's folder and committed on the local sync ref with
``update-ref NEW OLD``. It is removed only once the handoff is on the ref, and only if it
is still the very file that was published. Publishing the same text again is recognised
by the digest in the file name, so a crash between commit and removal costs nothing.
Nothing here touches the network: pushing is :mod:`convosyncd.sync.push`'s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

from convosyncd import draft as drafts
from convosyncd import state as states
from convosyncd.errors import ConvosyncError
from convosyncd.handoff import DRAFT_NAME, Provenance, clean_text, render_stored, task_line
from convosyncd.layout import handoff_location, parse_name
from convosyncd.seal import seal_handoff
from convosyncd.sync.repo import ATTEMPTS, SyncedRepo, now_text

log = logging.getLogger(__name__)

PublishStatus = Literal["none", "published", "duplicate", "unsettled", "refused"]


@dataclass(frozen=True)
class PublishResult:
    """What became of the draft."""

    status: PublishStatus
    name: str = ""
    retry_at: float | None = None
    message: str = ""
    commit: str | None = None


class Publisher:
    """Takes one repo's draft in."""

    def __init__(self, repo: SyncedRepo, on_published: Callable[[str], None]) -> None:
        self.repo = repo
        self.on_published = on_published
        """Called with the new tip, still under the repo lock, after each publish."""
        self._first_seen: tuple[drafts.Signature, float] | None = None
        # This device's folder on the sync branch and the digests in it (kept up to date
        # by each publish, so a folder of thousands is read once, not once per publish).
        self._published: tuple[str | None, dict[str, str]] = (None, {})

    def publish(self, *, require_settled: bool = True) -> PublishResult:
        """Publish the draft if there is one (and it has settled); never pushes."""
        repo = self.repo
        if drafts.peek(repo.tree.draft) is None and repo.state.draft_problem is None:
            # Nothing to take in: not worth the repo lock on every idle poll.
            self._first_seen = None
            return PublishResult("none")
        with repo.local():
            try:
                draft = drafts.read(repo.tree.draft, repo.config.max_draft_bytes)
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
                result = self._publish(draft)
            except drafts.DraftRefused as refusal:
                self._draft_problem(refusal, draft.signature)
                return PublishResult("refused", message=str(refusal))
            if result.commit is not None:
                self.on_published(result.commit)
                repo.save()
            return result

    def _settles_at(self, signature: drafts.Signature) -> float | None:
        """None if the draft has been still for ``settle`` seconds, else when it will be."""
        now = time.time()
        changed = signature.mtime_ns / 1e9
        if changed <= now + 1:
            ready = changed + self.repo.config.settle
            return None if ready <= now else ready
        # A modification time in the future (a copied file, a clock jump): count from
        # the moment this version was first seen instead.
        if self._first_seen is None or self._first_seen[0] != signature:
            self._first_seen = (signature, now)
        ready = self._first_seen[1] + self.repo.config.settle
        return None if ready <= now else ready

    def _publish(self, draft: drafts.Draft) -> PublishResult:
        repo, branch, device = self.repo, self.repo.branch, self.repo.device
        self._refuse_tracked(draft)
        key = repo.keys.require().current
        digest = key.digest(device, draft.data)
        for _attempt in range(ATTEMPTS):
            tip = branch.tip()
            folder = branch.device_folders(tip).get(device)
            published = self._published_digests(folder)
            if digest in published:
                log.info(
                    "%s: draft already published as %s; removing the draft",
                    repo.repo.path,
                    published[digest],
                )
                self._finish_draft(draft)
                return PublishResult("duplicate", name=published[digest])
            text = self._screen_secrets(draft, clean_text(draft.text))
            head = repo.tree.head()
            created = datetime.now(timezone.utc)
            location = handoff_location(device, created, digest)
            content = render_stored(Provenance(device, created, head.commit, head.branch), text)
            blob = branch.write_blob(seal_handoff(key, location.path, content))
            root = branch.edit(tip, add={location.path: blob})
            commit = branch.commit(
                root, [tip] if tip else [], f"handoff({device})", repo.branch_identity(), created
            )
            if branch.move(commit, tip, f"publish {location.name}"):
                break
        else:
            raise ConvosyncError(
                "the sync branch kept changing while publishing; "
                "the draft stays and will be published on the next try"
            )
        task = task_line(text)
        log.info("%s: published %s (%s)", repo.repo.path, location.key, task)
        published[digest] = location.name
        self._published = (branch.device_folders(commit).get(device), published)
        repo.catalog.remember(location, blob, content, key.key_id)
        repo.state.last_publish = states.Event(now_text(), f"{location.key}: {task}")
        repo.state.local_tip = commit
        self._clear_draft_problem()
        self._finish_draft(draft)
        # One more handoff commit than the remote has: counted without asking git, since
        # the push that follows at once counts again (0 once it is through).
        repo.set_pending(repo.state.pending + 1)
        return PublishResult("published", name=location.key, commit=commit)

    def _refuse_tracked(self, draft: drafts.Draft) -> None:
        """A draft the person's branch tracks came with a checkout or a pull: someone
        else's words, never to be published as this device's."""
        tree = self.repo.tree
        if tree.tracks(DRAFT_NAME):
            raise drafts.DraftRefused(
                f"{draft.path} is tracked by git on your branch, so it came with a checkout "
                "or a pull and is not this device's to publish; it was left alone: untrack "
                f"it (`git rm --cached .convosync/{DRAFT_NAME}`, then commit) if it is yours"
            )

    def _published_digests(self, folder: str | None) -> dict[str, str]:
        """``{digest: file name}`` of this device's sealed handoffs in ``folder``."""
        if folder is None:
            return {}
        if self._published[0] != folder:
            found: dict[str, str] = {}
            for location, _oid in self.repo.branch.folder_files(self.repo.device, folder):
                name = parse_name(location.name)
                if name is not None and name.kind == "sealed":
                    found.setdefault(name.digest, location.name)
            self._published = (folder, found)
        return self._published[1]

    def _finish_draft(self, draft: drafts.Draft) -> None:
        if not drafts.remove_if_unchanged(draft):
            log.info(
                "%s: the draft changed while publishing; the new version is next",
                self.repo.repo.path,
            )
        self._first_seen = None

    def _screen_secrets(self, draft: drafts.Draft, text: str) -> str:
        """``text`` (the draft, cleaned as every receiver will clean it, so that a token
        split by an invisible character is seen whole) with secrets redacted, or
        :class:`DraftRefused` if the config says to block them."""
        from convosyncd import secretscan

        repo = self.repo
        findings = secretscan.scan(text, derived=task_line)
        if not findings:
            return text
        where = secretscan.describe(findings)
        if repo.config.secrets == "block":
            raise drafts.DraftRefused(
                f"{draft.path} contains what look like secrets ({where}) and the config says "
                'secrets = "block": remove them from the draft, or set secrets = "redact"'
            )
        log.warning("%s: redacted %s from the draft before publishing", repo.repo.path, where)
        key = f"draft:redacted:{draft.signature}"
        if key not in repo.state.notified_problems:
            repo.remember_problem(key)
            repo.notify_problem(
                f"convosyncd redacted secrets in {repo.repo.path.name}",
                f"Replaced before publishing: {where}",
            )
        return secretscan.redact(text, findings)

    def _draft_problem(
        self, refusal: drafts.DraftRefused, signature: drafts.Signature | None = None
    ) -> None:
        repo = self.repo
        message = str(refusal)
        if signature is None:
            status = drafts.peek(repo.tree.draft)
            signature = drafts.Signature.of(status) if status else None
        key = f"draft:{signature}:{message[:120]}"
        repo.state.draft_problem = states.Event(now_text(), message)
        if key in repo.state.notified_problems:
            return
        log.error("%s: draft refused: %s", repo.repo.path, message)
        repo.remember_problem(key)
        repo.save()
        repo.notify_problem(f"convosyncd could not publish in {repo.repo.path.name}", message)

    def _clear_draft_problem(self) -> None:
        state = self.repo.state
        if state.draft_problem is not None:
            state.draft_problem = None
            state.notified_problems = [
                key for key in state.notified_problems if not key.startswith("draft:")
            ]
            self.repo.save()
