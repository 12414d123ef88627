"""A remote that is a folder on this machine's own disk, asked without a git process.

``git ls-remote`` on a local path starts git and then ``git-upload-pack`` in the remote's
folder, which reads one ref file: about 4 ms of CPU, at every poll of every repo. When
the remote is a repository on a local file system, the same answer is one small file
read (tens of microseconds), so an idle daemon with many such repos costs next to
nothing. Anything this module is not sure of (a network file system, a symbolic ref,
another ref storage, a remote with its own ``uploadpack`` or helper, a folder that has
gone) makes it step aside, and git is asked as before, with its time limit.

Only reading lives here; which remote a repo uses is still git's answer (``git ls-remote
--get-url`` applies ``insteadOf``), asked again whenever a git config file changes.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from convosyncd.gitcmd import FileIdentity, identity_of

_OID = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")

LOCAL_FILE_SYSTEMS = frozenset(
    {
        "apfs",
        "bcachefs",
        "btrfs",
        "erofs",
        "exfat",
        "ext2",
        "ext3",
        "ext4",
        "f2fs",
        "hfsplus",
        "iso9660",
        "jfs",
        "nilfs2",
        "ntfs",
        "ntfs3",
        "overlay",
        "ramfs",
        "reiserfs",
        "squashfs",
        "tmpfs",
        "udf",
        "vfat",
        "xfs",
        "zfs",
    }
)
"""File systems whose reads cannot hang on a network: NFS, SMB, sshfs and other FUSE
mounts are left to git, whose time limit covers a server that went away."""

MOUNTINFO = Path("/proc/self/mountinfo")


class Unreadable(Exception):
    """The remote cannot be read directly (any more); ask git instead."""


def local_path(url: str, base: Path) -> Path | None:
    """The folder ``url`` names if git would take it as a local path, else None.

    Follows git's rule: ``file://`` URLs and strings with no ``://`` whose first colon,
    if any, comes after a slash are paths; ``host:path`` is ssh.
    """
    if not url or "\n" in url or "\0" in url:
        return None
    if url.startswith("file://"):
        rest = url[len("file://") :]
        # file://host/path and %-escapes are rare and subtle: git decides those.
        if not rest.startswith("/") or "%" in rest:
            return None
        return Path(rest)
    if "://" in url:
        return None
    colon, slash = url.find(":"), url.find("/")
    if colon != -1 and (slash == -1 or colon < slash):
        return None
    if url.startswith("~"):
        return None  # upload-pack's own reading of ~user: git decides
    path = Path(url)
    return path if path.is_absolute() else base / path


def find_git_dir(path: Path) -> Path | None:
    """The repository folder git's ``upload-pack`` would use for ``path``, or None.

    Tries the same suffixes as git (``/.git``, none, ``.git/.git``, ``.git``). A
    ``.git`` *file* (a linked work tree or a submodule) and a folder that shares its
    refs with another (``commondir``) are left to git.
    """
    text = str(path).rstrip("/") or "/"
    for suffix in ("/.git", "", ".git/.git", ".git"):
        candidate = Path(text + suffix)
        if candidate.is_file() and candidate.name == ".git":
            return None
        if _is_git_dir(candidate):
            if (candidate / "commondir").exists():
                return None
            return candidate
    return None


def _is_git_dir(folder: Path) -> bool:
    return (
        (folder / "HEAD").is_file() and (folder / "objects").is_dir() and (folder / "refs").is_dir()
    )


def plain_ref_storage(git_dir: Path) -> bool:
    """False if the repository's config names another ref storage (reftable) or has an
    ``extensions`` section this module does not know; True for the plain files."""
    try:
        text = (git_dir / "config").read_text("utf-8", "replace")
    except OSError:
        return False
    return re.search(r"(?im)^\s*(refstorage|\[extensions)", text) is None


def mount_type(path: Path, mountinfo: str) -> str | None:
    """The file system type of the mount holding ``path`` (a resolved path), by the
    longest mount point that contains it in ``mountinfo`` (``/proc/self/mountinfo``)."""
    best: tuple[int, str] | None = None
    target = str(path)
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right.split():
            continue
        point = _unescape(fields[4])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= best[0]):
            best = (len(point), right.split()[0])
    return best[1] if best else None


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \040, \011, \012, \134.
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match[1], 8)), field)


def on_local_disk(path: Path) -> bool:
    """Whether ``path`` lies on a local file system (Linux only; elsewhere: not known)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mountinfo = MOUNTINFO.read_text("utf-8", "replace")
    except OSError:
        return False
    kind = mount_type(Path(os.path.realpath(path)), mountinfo)
    return kind in LOCAL_FILE_SYSTEMS


def locate(url: str, base: Path) -> LocalRemote | None:
    """A :class:`LocalRemote` for ``url`` if it can be read directly, else None."""
    path = local_path(url, base)
    if path is None:
        return None
    try:
        git_dir = find_git_dir(path)
        if git_dir is None or not plain_ref_storage(git_dir) or not on_local_disk(git_dir):
            return None
        device = git_dir.stat().st_dev
    except OSError:
        return None
    return LocalRemote(git_dir.resolve(), device)


@dataclass
class LocalRemote:
    """A repository folder on a local disk whose refs are read from its files."""

    git_dir: Path
    device: int
    _packed: tuple[FileIdentity, dict[str, str]] | None = field(default=None, repr=False)

    def read(self, ref: str) -> str | None:
        """The commit ``ref`` points at, or None if the repository has no such ref.

        Raises :class:`Unreadable` if the answer is not certain: the folder has gone
        or moved to another file system, or the ref is not a plain commit id.
        """
        try:
            status = self.git_dir.stat()
        except OSError as error:
            raise Unreadable(f"{self.git_dir}: {error.strerror}") from error
        if status.st_dev != self.device:
            raise Unreadable(f"{self.git_dir} is on another file system now")
        try:
            with (self.git_dir / ref).open("rb") as handle:
                content = handle.read(256).decode("ascii", "replace").strip()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            content = None
        except OSError as error:
            raise Unreadable(f"{self.git_dir / ref}: {error.strerror}") from error
        if content is not None:
            if not _OID.match(content):
                raise Unreadable(f"{self.git_dir / ref} is not a plain commit id")
            return content
        # No loose file: the packed refs say, once the folder is seen to still be a
        # repository (an emptied folder must not read as "no sync branch").
        if not (self.git_dir / "HEAD").is_file():
            raise Unreadable(f"{self.git_dir} is no longer a git repository")
        return self._packed_refs().get(ref)

    def _packed_refs(self) -> dict[str, str]:
        path = self.git_dir / "packed-refs"
        try:
            with path.open("rb") as handle:
                status = os.fstat(handle.fileno())
                identity = identity_of(status)
                if self._packed is not None and self._packed[0] == identity:
                    return self._packed[1]
                data = handle.read()
        except FileNotFoundError:
            return {}
        except OSError as error:
            raise Unreadable(f"{path}: {error.strerror}") from error
        refs = parse_packed_refs(data.decode("utf-8", "surrogateescape"))
        self._packed = (identity, refs)
        return refs


def parse_packed_refs(text: str) -> dict[str, str]:
    """``{ref: commit id}`` from a ``packed-refs`` file (comments and peeled lines skipped)."""
    refs: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line[0] in "#^":
            continue
        oid, _, name = line.partition(" ")
        if _OID.match(oid) and name:
            refs[name] = oid
    return refs
