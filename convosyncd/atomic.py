"""Replacing a file so that a reader, or a crash, only ever sees the old or the new one."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
_FLAGS |= getattr(os, "O_CLOEXEC", 0)


def write_atomically(
    path: Path,
    data: bytes,
    *,
    mode: int = 0o644,
    durable: bool = True,
    make_parents: bool = True,
    keep_mode: bool = True,
) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder.

    The file keeps its permissions if it existed, unless ``keep_mode`` is False (a
    secret that must end up with exactly ``mode``, whatever it had). ``durable``
    flushes to disk before the rename (state and config); files that are rebuilt from
    git anyway can skip it.
    ``make_parents=False`` is for files in a person's work tree: a repo folder moved
    away meanwhile must make the write fail, not be created anew around the file.

    The temporary file is named for this process and thread, which never write two
    files at once, and is opened without following a symbolic link. Few system calls
    on purpose: an idle poll saves every repo's state through here.
    """
    temp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    if keep_mode:
        with contextlib.suppress(FileNotFoundError):
            mode = path.stat().st_mode & 0o7777
    try:
        fd = os.open(temp, _FLAGS, 0o600)
    except FileNotFoundError:
        if not make_parents:
            raise
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(temp, _FLAGS, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
