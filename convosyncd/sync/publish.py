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
from convosyncd.handoff import (
    DRAFT_NAME,
    HANDOFFS_DIR,
    Provenance,
    content_digest,
    digest_of_filename,
    handoff_filename,
    render_stored,
    task_line,
)
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
        digest = content_digest(draft.data)
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
            text = self._screen_secrets(draft)
            head = repo.tree.head()
            created = datetime.now(timezone.utc)
            name = handoff_filename(created, digest)
            provenance = Provenance(device, created, head.commit, head.branch)
            stored = render_stored(provenance, text)
            blob = branch.write_blob(stored)
            root = branch.add_file(tip, (HANDOFFS_DIR, device), name, blob)
            task = task_line(text)
            commit = branch.commit(
                root,
                [tip] if tip else [],
                f"handoff({device}): {task}",
                repo.identity(),
                created,
            )
            if branch.move(commit, tip, f"publish {name}"):
                break
        else:
            raise ConvosyncError(
                "the sync branch kept changing while publishing; "
                "the draft stays and will be published on the next try"
            )
        log.info("%s: published %s/%s (%s)", repo.repo.path, device, name, task)
        published[digest] = name
        self._published = (branch.device_folders(commit).get(device), published)
        repo.catalog.remember(blob, device, name, stored)
        repo.state.last_publish = states.Event(now_text(), f"{name}: {task}")
        repo.state.local_tip = commit
        self._clear_draft_problem()
        self._finish_draft(draft)
        # One more handoff commit than the remote has: counted without asking git, since
        # the push that follows at once counts again (0 once it is through).
        repo.set_pending(repo.state.pending + 1)
        return PublishResult("published", name=name, commit=commit)

    def _published_digests(self, folder: str | None) -> dict[str, str]:
        """``{content digest: file name}`` of this device's handoffs in ``folder``."""
        if folder is None:
            return {}
        if self._published[0] != folder:
            found: dict[str, str] = {}
            for entry in self.repo.branch.device_files(folder):
                digest = digest_of_filename(entry.name)
                if digest is not None:
                    found.setdefault(digest, entry.name)
            self._published = (folder, found)
        return self._published[1]

    def _finish_draft(self, draft: drafts.Draft) -> None:
        if DRAFT_NAME in self.repo.tracked:
            log.warning(
                "%s: the draft is tracked by git on your branch, so it was left in place "
                "(run `git rm --cached .convosync/%s` to let convosyncd remove it)",
                self.repo.repo.path,
                DRAFT_NAME,
            )
            return
        if not drafts.remove_if_unchanged(draft):
            log.info(
                "%s: the draft changed while publishing; the new version is next",
                self.repo.repo.path,
            )
        self._first_seen = None

    def _screen_secrets(self, draft: drafts.Draft) -> str:
        from convosyncd import secretscan

        repo = self.repo
        findings = secretscan.scan(draft.text, derived=task_line)
        if not findings:
            return draft.text
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
        return secretscan.redact(draft.text, findings)

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
