"""Taking a draft in: what may be published, read without ever blocking or following links.

A draft is refused, and left exactly where it is, when it is a symbolic link, a folder
or anything but a regular file (a FIFO must never block the daemon), larger than
``max_draft_bytes``, not UTF-8, holds NUL bytes, or is empty, and when the folder it is
in is a symbolic link (``.convosync`` pointing elsewhere): the folder is opened without
following a link, and the draft is read through that open folder. A draft is removed
only when it is still the very file that was published.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from convosyncd.errors import ConvosyncError


class DraftRefused(ConvosyncError):
    """The draft cannot be published; the message says why and what to do."""


@dataclass(frozen=True)
class Signature:
    """Identifies one version of a file: replaced or rewritten, it changes."""

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, status: os.stat_result) -> Signature:
        return cls(status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


@dataclass(frozen=True)
class Draft:
    """A draft as read: its bytes, its text and the file version they came from."""

    path: Path
    data: bytes
    text: str
    signature: Signature


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    return "not a regular file"


def peek(path: Path) -> os.stat_result | None:
    """``lstat`` of the draft, or None if there is none."""
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _open_folder(folder: Path) -> int | None:
    """The draft's folder, opened without following a symbolic link; None if missing."""
    try:
        return os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as error:
        problem = error  # a link fails as ELOOP or ENOTDIR, depending on the system
    try:
        target: str | None = os.readlink(folder)
    except OSError:
        target = None
    if target is not None:
        raise DraftRefused(
            f"{folder} is a symbolic link (to {target}); convosyncd publishes only a draft "
            "in the repo's own folder, so nothing it points at can leave the machine: "
            "replace the link with a real folder"
        )
    if problem.errno == errno.ENOTDIR:
        return None  # a file where the folder should be: no draft in it
    raise DraftRefused(f"cannot open {folder}: {problem.strerror}; check its permissions")


def read(path: Path, max_bytes: int) -> Draft | None:
    """Read the draft at ``path``; None if absent, :class:`DraftRefused` if unusable."""
    folder = _open_folder(path.parent)
    if folder is None:
        return None
    try:
        return _read_in(folder, path, max_bytes)
    finally:
        os.close(folder)


def _read_in(folder: int, path: Path, max_bytes: int) -> Draft | None:
    """:func:`read`, with the draft's folder open as ``folder``."""
    name = path.name
    try:
        status = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISLNK(status.st_mode):
        try:
            target = os.readlink(name, dir_fd=folder)
        except OSError:
            target = "?"
        raise DraftRefused(
            f"{path} is a symbolic link (to {target}); convosyncd publishes only a regular "
            "file, so nothing outside the draft can leave the machine: replace the link "
            "with the file itself"
        )
    if not stat.S_ISREG(status.st_mode):
        raise DraftRefused(
            f"{path} is {_kind(status.st_mode)}, not a regular file: remove it and write "
            "the handoff as a plain file"
        )
    _check_size(path, status.st_size, max_bytes)
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder
        )
    except FileNotFoundError:
        return None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise DraftRefused(
                f"{path} became a symbolic link while being read; left alone"
            ) from None
        raise DraftRefused(f"cannot read {path}: {error.strerror}; check its permissions") from None
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise DraftRefused(
                f"{path} is {_kind(opened.st_mode)}, not a regular file: remove it and "
                "write the handoff as a plain file"
            )
        _check_size(path, opened.st_size, max_bytes)
        chunks = []
        remaining = max_bytes + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    _check_size(path, len(data), max_bytes)
    nul = data.find(b"\x00")
    if nul >= 0:
        raise DraftRefused(
            f"{path} contains NUL bytes (offset {nul}), so it is not a text "
            "handoff: write the handoff as UTF-8 text"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DraftRefused(
            f"{path} is not UTF-8 text (invalid byte at offset {error.start}): save the "
            "handoff as UTF-8"
        ) from None
    if not text.strip():
        raise DraftRefused(f"{path} is empty: write the handoff into it, or delete it")
    return Draft(path=path, data=data, text=text, signature=Signature.of(opened))


def _check_size(path: Path, size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise DraftRefused(
            f"{path} is {size} bytes, over max_draft_bytes ({max_bytes}): shorten the "
            "handoff, or raise max_draft_bytes in the config"
        )


def remove_if_unchanged(draft: Draft) -> bool:
    """Remove the draft if it is still the published version; False if it changed."""
    status = peek(draft.path)
    if status is None:
        return True
    if Signature.of(status) != draft.signature:
        return False
    with contextlib.suppress(FileNotFoundError):
        os.unlink(draft.path)
    return True
