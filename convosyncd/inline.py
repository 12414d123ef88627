"""``mode = "inline"``: the handoffs file also committed on the person's current branch.

Devices that only have the original ``convosync`` plugin read
``.convosync/session-handoff.md`` after a ``git pull`` of their branch. For them the
daemon records that file, in the plugin's format, as a commit on the current branch
that changes that one path and nothing else:

* the tree is built in a private index (``GIT_INDEX_FILE`` pointing at a temporary
  file: ``read-tree HEAD``, ``update-index --cacheinfo``, ``write-tree``), never the
  person's index, so their staged changes are neither committed nor disturbed;
* the branch moves with ``update-ref NEW OLD`` while convosyncd holds ``index.lock``,
  the lock every index-writing git command takes (``commit``, ``add``, ``checkout``,
  ``rebase`` ...). Under that lock the person's index gets the new entry for this one
  path (a copy updated with ``update-index --cacheinfo``, then renamed into place, as
  git does itself), so ``git status`` stays clean and no ``git commit`` can run between
  the branch moving and the index following it;
* nothing happens on a detached HEAD, during a rebase, merge, cherry-pick, revert or
  bisect, on a branch without commits, or when the person has changed or staged the
  file themselves: the reason is returned for ``status``.

The branch is pushed only as a fast-forward, and only when every commit the remote
lacks is such a handoff commit: publishing the person's own unpushed commits is their
decision. Sections of the committed file from devices that are not on the sync branch
(devices that write it with the original plugin) are kept.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from convosyncd.errors import GitError
from convosyncd.gitcmd import Git
from convosyncd.gitstore import Identity
from convosyncd.handoff import (
    CONVOSYNC_DIR,
    MATERIALIZED_NAME,
    Handoff,
    newest_first,
    parse_time,
    plain_text,
    render_plugin,
    task_line,
)
from convosyncd.layout import is_device_name
from convosyncd.worktree import WorkTree

PATH = f"{CONVOSYNC_DIR}/{MATERIALIZED_NAME}"
TRAILER = "Convosync-Handoff"
LOCK_WAIT = 2.0
"""Seconds to wait for another git command to release ``index.lock``."""
MAX_PUSHED = 50
"""More handoff commits than this waiting for a push are left to the person."""

_IN_PROGRESS = (
    ("rebase-merge", "a rebase"),
    ("rebase-apply", "a rebase or `git am`"),
    ("MERGE_HEAD", "a merge"),
    ("CHERRY_PICK_HEAD", "a cherry-pick"),
    ("REVERT_HEAD", "a revert"),
    ("BISECT_LOG", "a bisect"),
)
_SECTION_RE = re.compile(r"^---\s*$", re.MULTILINE)
_DEVICE_LINE_RE = re.compile(r"^## Handoff from (.+?)\s*$", re.MULTILINE)


class Skip(Exception):
    """The handoff commit cannot be made now; ``str()`` says why and what to do."""


@dataclass(frozen=True)
class Recorded:
    """What became of one attempt to record the handoffs file on the current branch."""

    status: Literal["committed", "unchanged", "skipped"]
    message: str
    branch: str | None = None
    commit: str | None = None


@dataclass(frozen=True)
class Pushed:
    """What became of pushing the branch: pushed, nothing to push, or held (and why)."""

    status: Literal["pushed", "up-to-date", "held"]
    message: str


# -- the file's content (pure) -------------------------------------------------------


def foreign_handoffs(previous: str, known_devices: Iterable[str]) -> list[Handoff]:
    """The newest section per device of a committed ``session-handoff.md``, for devices
    that the sync branch does not know: those write the file with the original plugin.

    The file is read by the plugin's own rules: sections split on lines that are
    exactly ``---``, a ``## Handoff from <device>`` line, ``**Timestamp:**``,
    ``**Commit:**`` and ``**Branch:**`` lines, the text after the ``**Branch:**`` line.
    """
    known = set(known_devices)
    newest: dict[str, Handoff] = {}
    for raw in _SECTION_RE.split(previous):
        section = raw.strip("\n")
        heading = _DEVICE_LINE_RE.search(section)
        if heading is None:
            continue
        device = heading.group(1).strip()
        if not is_device_name(device) or device in known:
            continue
        created = parse_time(_field(section, "Timestamp"))
        if created is None:
            continue
        branch_at = section.find("**Branch:**")
        start = section.find("\n", branch_at) if branch_at >= 0 else heading.end()
        body = section[start:].strip("\n") if start >= 0 else ""
        handoff = Handoff(
            device=device,
            created=created,
            repo_commit=plain_text(_field(section, "Commit"), 80) or "unknown",
            repo_branch=plain_text(_field(section, "Branch"), 200) or "unknown",
            task=task_line(body),
            body=body,
        )
        if device not in newest or newest[device].created < created:
            newest[device] = handoff
    return list(newest.values())


def _field(section: str, name: str) -> str:
    match = re.search(rf"^\*\*{name}:\*\*\s*(.+?)\s*$", section, re.MULTILINE)
    return match.group(1) if match else ""


def file_text(handoffs: Sequence[Handoff], previous: str | None) -> str:
    """The handoffs file to commit: the sync branch's handoffs plus the foreign ones."""
    kept = foreign_handoffs(previous, {h.device for h in handoffs}) if previous else []
    return render_plugin([*handoffs, *kept])


def commit_message(handoffs: Sequence[Handoff]) -> str:
    """``convosync: handoff from desktop: <task>``, a short body and a trailer."""
    ordered = newest_first(handoffs)
    subject = (
        plain_text(f"convosync: handoff from {ordered[0].device}: {ordered[0].task}", 100)
        if ordered
        else "convosync: session handoffs"
    )
    lines = [
        subject,
        "",
        f"{PATH} holds the latest handoff of every device, in the",
        "format of the convosync plugin's /convosync:resume. Committed by convosyncd",
        '(mode = "inline"); it changes this one file only.',
        "",
    ]
    if ordered and ordered[0].name:
        lines.append(f"{TRAILER}: {ordered[0].device}/{ordered[0].name}")
    else:
        lines.append(f"{TRAILER}: {PATH}")
    return "\n".join(lines) + "\n"


# -- git -------------------------------------------------------------------------------


class IndexLock:
    """git's own lock on an index: ``<index>.lock``, created exclusively.

    While it exists no git command writes that index. It is released either by
    renaming a new index onto it and then onto the index (:meth:`commit`, what git
    does itself) or by deleting it; never by deleting a lock someone else took after.
    """

    def __init__(self, index: Path, wait: float | None = None) -> None:
        self.index = index
        self.path = index.with_name(index.name + ".lock")
        self.wait = LOCK_WAIT if wait is None else wait
        self.held = False

    def __enter__(self) -> IndexLock:
        deadline = time.monotonic() + self.wait
        while True:
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            except FileExistsError:
                if time.monotonic() > deadline:
                    raise Skip(
                        f"another git command has held {self.path} for {self.wait:g} s; "
                        "tried again later (if no git command is running, delete that file)"
                    ) from None
                time.sleep(0.05)
            else:
                self.held = True
                return self

    def commit(self, new_index: Path) -> None:
        """Put ``new_index`` in place of the index and release the lock."""
        os.replace(new_index, self.path)
        os.replace(self.path, self.index)
        self.held = False

    def __exit__(self, *exc: object) -> None:
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.held = False


class InlineBranch:
    """Records the handoffs file on one work tree's current branch, and pushes it."""

    def __init__(self, git: Git, tree: WorkTree, remote: str) -> None:
        self.git = git
        self.tree = tree
        self.remote = remote

    # -- committing ------------------------------------------------------------------

    def record(self, handoffs: Sequence[Handoff], identity: Identity) -> Recorded:
        """Commit the handoffs file on the current branch if it changed; never raises Skip."""
        self.tree.check_folder()  # nothing is committed for a file that cannot be written
        try:
            return self._record(handoffs, identity)
        except Skip as skip:
            self._write_untracked(render_plugin(handoffs))
            return Recorded("skipped", f"not committed: {skip}")

    def _record(self, handoffs: Sequence[Handoff], identity: Identity) -> Recorded:
        ref, head = self._current_branch()
        branch = ref.removeprefix("refs/heads/")
        at_head = self._entry(head)
        previous = self._blob_text(at_head[1]) if at_head else None
        text = file_text(handoffs, previous)
        data = text.encode("utf-8")
        self._check_untouched(head, at_head, data)
        if previous is not None and previous.encode("utf-8") == data:
            self._write_worktree(data)
            return Recorded("unchanged", f"{PATH} on {branch} is current", branch, head)
        blob = self.git.run("hash-object", "-w", "--stdin", input=data).text
        tree = self._tree_with(head, blob)
        commit = self.git.run(
            "commit-tree",
            tree,
            "-p",
            head,
            "-F",
            "-",
            input=commit_message(handoffs).encode("utf-8"),
            extra_env={
                "GIT_AUTHOR_NAME": identity.name,
                "GIT_AUTHOR_EMAIL": identity.email,
                "GIT_COMMITTER_NAME": identity.name,
                "GIT_COMMITTER_EMAIL": identity.email,
            },
        ).text
        self._move(ref, commit, head, blob, data)
        return Recorded("committed", f"committed {commit[:12]} on {branch}", branch, commit)

    def _current_branch(self) -> tuple[str, str]:
        """HEAD's branch ref and commit; Skip when there is no branch to commit on."""
        result = self.git.run("symbolic-ref", "-q", "HEAD", check=False)
        ref = result.text if result.returncode == 0 else ""
        for marker, what in _IN_PROGRESS:
            if (self.tree.git_dir / marker).exists():
                raise Skip(f"{what} is in progress in {self.tree.path}; it is committed after")
        if not ref.startswith("refs/heads/"):
            raise Skip(
                f"HEAD is detached in {self.tree.path}; it is committed once a branch is "
                "checked out"
            )
        found = self.git.run("rev-parse", "-q", "--verify", f"{ref}^{{commit}}", check=False)
        if found.returncode != 0 or not found.text:
            raise Skip(f"{ref.removeprefix('refs/heads/')} has no commits yet")
        return ref, found.text

    def _entry(self, commit: str) -> tuple[str, str] | None:
        """``(mode, blob)`` of the handoffs file in ``commit``, or None."""
        output = self.git.run("ls-tree", "-z", commit, "--", PATH).stdout.decode(
            "utf-8", "surrogateescape"
        )
        for record in output.split("\0"):
            meta, _, name = record.partition("\t")
            parts = meta.split()
            if name == PATH and len(parts) == 3 and parts[1] == "blob":
                return parts[0], parts[2]
        return None

    def _index_entries(self) -> list[tuple[str, str]]:
        """``(mode, blob)`` of each index entry for the path (several during a conflict)."""
        output = self.git.run("ls-files", "-s", "-z", "--", PATH).stdout.decode(
            "utf-8", "surrogateescape"
        )
        entries = []
        for record in output.split("\0"):
            meta, _, name = record.partition("\t")
            parts = meta.split()
            if name == PATH and len(parts) == 3:
                entries.append((parts[0], parts[1]))
        return entries

    def _blob_text(self, oid: str) -> str:
        return self.git.run("cat-file", "blob", oid).stdout.decode("utf-8", "replace")

    def _check_untouched(self, head: str, at_head: tuple[str, str] | None, new: bytes) -> None:
        """Skip when the person has staged or changed the file themselves."""
        staged = self._index_entries()
        if staged != ([at_head] if at_head else []):
            raise Skip(
                f"you have staged a change to {PATH}; commit it or unstage it "
                f"(git restore --staged {PATH})"
            )
        if at_head is None:
            return
        path = self.tree.materialized
        if path.is_symlink() or path.is_dir():
            raise Skip(f"{path} is a link or a folder; convosyncd writes only a plain file there")
        try:
            current = path.read_bytes()
        except FileNotFoundError:
            return
        if current in (self._blob_text(at_head[1]).encode("utf-8"), new):
            return
        if self._left_over(head, current):
            return
        raise Skip(
            f"you have changed {PATH} since it was committed; commit or discard your change "
            f"(git restore {PATH})"
        )

    def _left_over(self, head: str, current: bytes) -> bool:
        """Whether ``current`` is the file before convosyncd's own commit at ``head``
        (the commit was made but writing the file did not happen)."""
        message = self.git.run("cat-file", "commit", head).text
        if f"\n{TRAILER}: " not in message:
            return False
        parent = self.git.run("rev-parse", "-q", "--verify", f"{head}^", check=False)
        if parent.returncode != 0:
            return False
        before = self._entry(parent.text)
        return before is not None and self._blob_text(before[1]).encode("utf-8") == current

    def _tree_with(self, head: str, blob: str) -> str:
        """HEAD's tree with the handoffs file set to ``blob``, built in a private index."""
        folder = Path(tempfile.mkdtemp(prefix="convosyncd-index-", dir=self.tree.git_dir))
        try:
            private = {"GIT_INDEX_FILE": str(folder / "index")}
            self.git.run("read-tree", head, extra_env=private)
            self.git.run(
                "update-index", "--add", "--cacheinfo", f"100644,{blob},{PATH}", extra_env=private
            )
            return self.git.run("write-tree", extra_env=private).text
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _move(self, ref: str, commit: str, head: str, blob: str, data: bytes) -> None:
        """Move the branch and the person's index entry together, under ``index.lock``."""
        index = self.tree.git_dir / "index"
        with IndexLock(index) as lock:
            # Checked again under the lock: a rebase or checkout may have begun meanwhile.
            if self._current_branch() != (ref, head):
                raise Skip(f"{ref.removeprefix('refs/heads/')} moved meanwhile; tried again")
            staged = index.with_name(f"index.convosyncd-{os.getpid()}")
            try:
                if index.exists():
                    shutil.copyfile(index, staged)
                    shutil.copymode(index, staged)
                self.git.run(
                    "update-index",
                    "--add",
                    "--cacheinfo",
                    f"100644,{blob},{PATH}",
                    extra_env={"GIT_INDEX_FILE": str(staged)},
                )
                moved = self.git.run(
                    "update-ref", "-m", "convosyncd: handoff", ref, commit, head, check=False
                )
                if moved.returncode != 0:
                    raise Skip(f"{ref.removeprefix('refs/heads/')} moved meanwhile; tried again")
                try:
                    self._write_worktree(data)
                finally:
                    try:
                        lock.commit(staged)
                    except OSError:
                        # The index could not follow: put the branch back, so that the
                        # index does not show the file as a staged deletion.
                        self.git.run("update-ref", ref, head, commit, check=False)
                        raise
            finally:
                with contextlib.suppress(FileNotFoundError):
                    staged.unlink()

    def _write_worktree(self, data: bytes) -> None:
        try:
            if self.tree.materialized.read_bytes() == data:
                return
        except FileNotFoundError:
            pass
        self.tree.write_materialized(data.decode("utf-8"))

    def _write_untracked(self, text: str) -> None:
        """While no commit can be made, keep the file current if the branch does not track
        it (as in branch mode); a tracked file is left as the branch has it."""
        with contextlib.suppress(GitError):
            tracked = self.git.run("ls-files", "-z", "--", PATH).stdout
            if not tracked:
                self.tree.write_materialized(text)

    # -- pushing ---------------------------------------------------------------------

    def upstream(self, branch: str) -> str:
        """The remote branch to push ``branch`` to: its upstream on our remote, else its name."""
        remote = self.git.run("config", "--get", f"branch.{branch}.remote", check=False).text
        merge = self.git.run("config", "--get", f"branch.{branch}.merge", check=False).text
        if remote == self.remote and merge.startswith("refs/heads/"):
            return merge
        return f"refs/heads/{branch}"

    def push(self, branch: str) -> Pushed:
        """Push ``branch`` if that is a fast-forward publishing only handoff commits."""
        found = self.git.run(
            "rev-parse", "-q", "--verify", f"refs/heads/{branch}^{{commit}}", check=False
        )
        if found.returncode != 0:
            return Pushed("up-to-date", f"{branch} no longer exists; nothing to push")
        local = found.text
        target = self.upstream(branch)
        shown = f"{self.remote}/{target.removeprefix('refs/heads/')}"
        remote_tip = self._remote_tip(target)
        if remote_tip is None:
            return Pushed(
                "held",
                f"not pushed: {self.remote} has no branch {target.removeprefix('refs/heads/')}; "
                f"convosyncd creates no branches there (git push -u {self.remote} {branch} "
                "publishes it with the handoff)",
            )
        if remote_tip == local:
            return Pushed("up-to-date", f"{branch} is on {shown}")
        if not self._has(remote_tip) or not self._is_ancestor(remote_tip, local):
            return Pushed(
                "held",
                f"not pushed: {branch} and {shown} have diverged ({shown} has commits this "
                "clone lacks); after `git pull` the handoff commit is pushed",
            )
        theirs = self._foreign_commits(remote_tip, local)
        if theirs:
            return Pushed(
                "held",
                f"not pushed: {branch} has {theirs} commit(s) of yours that {shown} lacks; "
                "convosyncd pushes only its own handoff commits, so `git push` when you are "
                "ready and the handoff goes along",
            )
        result = self.git.run(
            "push", "--porcelain", self.remote, f"{local}:{target}", network=True, check=False
        )
        if result.returncode == 0:
            return Pushed("pushed", f"pushed {branch} to {shown} ({local[:12]})")
        text = (result.stderr + result.text).lower()
        if "rejected" in text or "non-fast-forward" in text or "fetch first" in text:
            return Pushed(
                "held",
                f"not pushed: {shown} moved on while pushing; after `git pull` the handoff "
                "commit is pushed",
            )
        detail = " / ".join(line.strip() for line in result.stderr.splitlines() if line.strip())
        raise GitError(f"pushing {branch} to {shown} failed: {detail[-400:] or 'no message'}")

    def _remote_tip(self, target: str) -> str | None:
        output = self.git.run("ls-remote", self.remote, target, network=True).text
        for line in output.splitlines():
            oid, _, name = line.partition("\t")
            if name == target:
                return oid
        return None

    def _has(self, oid: str) -> bool:
        return self.git.run("cat-file", "-e", f"{oid}^{{commit}}", check=False).returncode == 0

    def _is_ancestor(self, ancestor: str, descendant: str) -> bool:
        result = self.git.run("merge-base", "--is-ancestor", ancestor, descendant, check=False)
        return result.returncode == 0

    def _foreign_commits(self, base: str, tip: str) -> int:
        """How many commits in ``base..tip`` are not handoff commits (merges count)."""
        listing = self.git.run(
            "rev-list", "--parents", f"--max-count={MAX_PUSHED + 1}", f"{base}..{tip}"
        ).text.splitlines()
        if len(listing) > MAX_PUSHED:
            return len(listing)
        foreign = 0
        for line in listing:
            oid, *parents = line.split()
            if len(parents) != 1:
                foreign += 1
                continue
            changed = self.git.run(
                "diff-tree", "--no-commit-id", "--name-only", "-r", "-z", oid
            ).stdout.decode("utf-8", "surrogateescape")
            if [name for name in changed.split("\0") if name] != [PATH]:
                foreign += 1
        return foreign
