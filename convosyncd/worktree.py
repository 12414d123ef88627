"""The daemon's footprint in a work tree: ``.convosync/`` and one exclude line.

convosyncd writes only inside ``.convosync/`` (the handoffs file, ``device-id``), keeps
that folder out of ``git status`` through ``.git/info/exclude`` (never the person's
``.gitignore``), and reads HEAD to record where a handoff was written. A file that the
person's branch tracks is never written or removed. A ``.convosync`` that is a symbolic
link is refused, never followed: what it points at is not the repo's, and a link that
arrived with a checkout or a pull could send a handoff anywhere, or publish any file.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from convosyncd.atomic import write_atomically
from convosyncd.errors import UsageError
from convosyncd.gitcmd import Git
from convosyncd.handoff import CONVOSYNC_DIR, DEVICE_ID_NAME, DRAFT_NAME, MATERIALIZED_NAME

log = logging.getLogger(__name__)

EXCLUDE_LINE = f"/{CONVOSYNC_DIR}/"
EXCLUDE_COMMENT = "# convosyncd: session handoffs, synced on their own branch"


@dataclass(frozen=True)
class HeadInfo:
    """Where the work tree's HEAD is: a commit (or none yet) and a branch description."""

    commit: str
    branch: str


def validate(path: Path, remote: str) -> Path:
    """The top folder of the work tree at ``path``; a clear error if it cannot be synced."""
    from convosyncd.gitrepo import InvalidRepository, RuledRepo  # slow to import

    if not path.exists():
        raise UsageError(f"{path} does not exist: give the folder of a git work tree")
    if not path.is_dir():
        raise UsageError(f"{path} is not a folder: give the folder of a git work tree")
    try:
        repo = RuledRepo(path, search_parent_directories=True)
    except InvalidRepository:
        raise UsageError(
            f"{path} is not a git work tree: run `git init` or `git clone` there first, "
            "or give the top folder of an existing clone"
        ) from None
    try:
        if repo.bare or repo.working_tree_dir is None:
            raise UsageError(
                f"{path} is a bare repository: register a clone with a work tree instead"
            )
        top = Path(repo.working_tree_dir).resolve()
        if top != path.resolve():
            raise UsageError(
                f"{path} is inside the work tree {top}: register the top folder, "
                f"`convosyncd add {top}`"
            )
        # Asked of git (through the rules of every git call), which reads every config
        # file that applies, conditional includes too.
        names = repo.git.remote().split()
        if remote not in names:
            known = ", ".join(names) if names else "none"
            raise UsageError(
                f"{path} has no git remote named '{remote}' (remotes: {known}): add one with "
                f"`git -C {path} remote add {remote} URL`, or pass --remote NAME"
            )
    finally:
        repo.close()
    return top


class WorkTree:
    """One registered work tree, seen from the daemon."""

    def __init__(self, path: Path, git: Git) -> None:
        self.path = path
        self.git = git
        self.folder = path / CONVOSYNC_DIR
        self.draft = self.folder / DRAFT_NAME
        self.materialized = self.folder / MATERIALIZED_NAME
        self.device_id = self.folder / DEVICE_ID_NAME
        self._git_dir: Path | None = None

    @property
    def git_dir(self) -> Path:
        if self._git_dir is None:
            self._git_dir = Path(self.git.out("rev-parse", "--absolute-git-dir"))
        return self._git_dir

    def check_exists(self) -> None:
        """Raise a clear error if the work tree is gone or no longer a git work tree."""
        if not self.path.is_dir():
            raise UsageError(
                f"the repo folder {self.path} is missing: put it back, or "
                f"`convosyncd remove {self.path}`"
            )
        if not (self.path / ".git").exists():
            raise UsageError(
                f"{self.path} is no longer a git work tree (no .git): restore it, or "
                f"`convosyncd remove {self.path}`"
            )
        self.check_folder()

    def check_folder(self) -> None:
        """Refuse a ``.convosync`` that is a symbolic link or not a folder (one ``lstat``)."""
        try:
            status = os.lstat(self.folder)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(status.st_mode):
            try:
                target = os.readlink(self.folder)
            except OSError:
                target = "?"
            raise UsageError(
                f"{self.folder} is a symbolic link (to {target}); convosyncd neither reads "
                "nor writes through it, so no handoff is published from it or delivered "
                f"into it: replace it with a real folder (`rm {self.folder} && mkdir "
                f"{self.folder}`)"
            )
        if not stat.S_ISDIR(status.st_mode):
            raise UsageError(
                f"{self.folder} is not a folder; convosyncd keeps its files in a folder of "
                "that name: move that file away"
            )

    def prepare(self, device: str) -> None:
        """Create ``.convosync/``, exclude it, and write ``device-id``."""
        self.check_folder()
        self.folder.mkdir(exist_ok=True)
        self._exclude()
        tracked = self.tracked()
        if DEVICE_ID_NAME in tracked:
            return
        try:
            current = self.device_id.read_text(encoding="utf-8").strip()
        except (FileNotFoundError, UnicodeDecodeError, IsADirectoryError):
            current = None
        if current != device:
            write_atomically(
                self.device_id, f"{device}\n".encode(), durable=False, make_parents=False
            )

    def _exclude(self) -> None:
        exclude = Path(self.git.out("rev-parse", "--git-path", "info/exclude"))
        if not exclude.is_absolute():
            exclude = self.path / exclude
        try:
            text = exclude.read_text(encoding="utf-8", errors="surrogateescape")
        except FileNotFoundError:
            text = ""
        if any(line.strip() == EXCLUDE_LINE for line in text.splitlines()):
            return
        if text and not text.endswith("\n"):
            text += "\n"
        text += f"{EXCLUDE_COMMENT}\n{EXCLUDE_LINE}\n"
        exclude.parent.mkdir(exist_ok=True)  # info/ inside .git, never .git itself
        write_atomically(
            exclude, text.encode("utf-8", "surrogateescape"), durable=False, make_parents=False
        )

    def tracked(self) -> set[str]:
        """Names of the files in ``.convosync/`` that the person's index tracks."""
        output = self.git.run("ls-files", "-z", "--", CONVOSYNC_DIR).stdout.decode(
            "utf-8", "surrogateescape"
        )
        prefix = f"{CONVOSYNC_DIR}/"
        return {name[len(prefix) :] for name in output.split("\0") if name.startswith(prefix)}

    def tracks(self, name: str) -> bool:
        """Whether the person's branch tracks ``.convosync/<name>``: in the index, or in
        HEAD's tree (untracked but not committed yet)."""
        path = f"{CONVOSYNC_DIR}/{name}"
        # One git call for both (every publish asks): --with-tree overlays HEAD's tree
        # on the index, so a file removed from the index but still in HEAD is listed.
        both = self.git.run("ls-files", "-z", "--with-tree=HEAD", "--", path, check=False)
        if both.returncode == 0:
            return bool(both.stdout)
        # No commit yet (an unborn branch): there is only the index.
        return bool(self.git.run("ls-files", "-z", "--", path).stdout)

    def head(self) -> HeadInfo:
        """HEAD's commit and branch (``detached at ...`` or ``rebasing X`` as the case is)."""
        # One git call in the usual cases (on a branch, or detached with a commit); an
        # unborn branch or an unusual HEAD takes the longer way below.
        both = self.git.run(
            "rev-parse", "-q", "HEAD^{commit}", "--symbolic-full-name", "HEAD", "--", check=False
        )
        lines = both.text.splitlines()
        if both.returncode == 0 and len(lines) >= 2:
            commit, name = lines[0], lines[1]
            if name.startswith("refs/heads/") and len(name) > len("refs/heads/"):
                return HeadInfo(commit=commit, branch=name.removeprefix("refs/heads/"))
            if name == "HEAD":
                return HeadInfo(commit=commit, branch=self._detached_branch())
        commit_result = self.git.run("rev-parse", "-q", "--verify", "HEAD^{commit}", check=False)
        commit = commit_result.text if commit_result.returncode == 0 else "none (no commits yet)"
        branch_result = self.git.run("symbolic-ref", "-q", "--short", "HEAD", check=False)
        if branch_result.returncode == 0 and branch_result.text:
            return HeadInfo(commit=commit, branch=branch_result.text)
        return HeadInfo(commit=commit, branch=self._detached_branch())

    def _detached_branch(self) -> str:
        """How to name a detached HEAD: the branch being rebased, if a rebase is on."""
        for state in ("rebase-merge", "rebase-apply"):
            try:
                name = (self.git_dir / state / "head-name").read_text(encoding="utf-8").strip()
            except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
                continue
            return f"{name.removeprefix('refs/heads/')} (rebasing)"
        return "HEAD (detached)"

    def write_materialized(self, text: str) -> bool:
        """Write ``session-handoff.md`` if its content changed; False if left alone."""
        self.check_folder()
        data = text.encode("utf-8")
        try:
            if self.materialized.read_bytes() == data:
                return False
        except (FileNotFoundError, IsADirectoryError):
            pass
        if self.materialized.is_symlink() or self.materialized.is_dir():
            raise UsageError(
                f"{self.materialized} is a link or a folder; convosyncd writes only a plain "
                "file there: remove it"
            )
        self.folder.mkdir(exist_ok=True)
        write_atomically(self.materialized, data, durable=False, make_parents=False)
        return True
