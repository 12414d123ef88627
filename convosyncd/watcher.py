"""Watching for drafts: one inotify watch per repo, never a whole work tree.

Each repo's ``.convosync/`` folder is watched without recursion (its top folder instead,
until ``.convosync/`` exists as a real folder, not a symbolic link), and the config
file's folder is watched for edits. An event only tells the daemon which repo to look
at; the daemon reads the files itself, and polls them anyway, because a watcher can miss
events.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from convosyncd.handoff import CONVOSYNC_DIR, DRAFT_NAME

log = logging.getLogger(__name__)


@dataclass
class _Watched:
    repo: Path
    folder: Path
    inode: int
    watch: ObservedWatch


def _paths(event: FileSystemEvent) -> list[str]:
    paths = [os.fsdecode(event.src_path)]
    destination = getattr(event, "dest_path", "")
    if destination:
        paths.append(os.fsdecode(destination))
    return paths


class _RepoHandler(FileSystemEventHandler):
    def __init__(self, watcher: DraftWatcher, repo: Path) -> None:
        self.watcher = watcher
        self.repo = repo

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        for path in _paths(event):
            name = os.path.basename(path)
            if name == DRAFT_NAME:
                self.watcher.on_draft(self.repo)
                return
            if name == CONVOSYNC_DIR or path == str(self.repo / CONVOSYNC_DIR):
                self.watcher.on_layout(self.repo)
                return


class _ConfigHandler(FileSystemEventHandler):
    def __init__(self, watcher: DraftWatcher, config_path: Path) -> None:
        self.watcher = watcher
        self.name = config_path.name

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        if any(os.path.basename(path) == self.name for path in _paths(event)):
            self.watcher.on_config()


class DraftWatcher:
    """Tells the daemon when a repo's draft (or the config) may have changed."""

    def __init__(
        self,
        on_draft: Callable[[Path], None],
        on_layout: Callable[[Path], None],
        on_config: Callable[[], None],
    ) -> None:
        self.on_draft = on_draft
        self.on_layout = on_layout
        self.on_config = on_config
        self._observer: BaseObserver = Observer()
        self._observer.daemon = True
        self._watched: dict[Path, _Watched] = {}
        self._config_watch: ObservedWatch | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)

    def watch_config(self, config_path: Path) -> None:
        """Watch the folder holding the config file (created if missing)."""
        folder = config_path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._config_watch = self._observer.schedule(
                _ConfigHandler(self, config_path), str(folder), recursive=False
            )
        except OSError as error:
            log.warning(
                "cannot watch %s for config changes (%s); polling it instead", folder, error
            )

    def ensure(self, repo: Path) -> bool:
        """Watch ``repo``'s ``.convosync/`` (or its top folder until that exists).

        Cheap when nothing changed; re-creates the watch when the folder was deleted,
        replaced or created. False when the repo's folder is not there to watch.
        """
        convosync = repo / CONVOSYNC_DIR
        # A .convosync that is a symbolic link is refused (worktree.check_folder), never
        # watched through: the top folder is, so that its replacement by a real folder
        # is seen.
        real = convosync.is_dir() and not convosync.is_symlink()
        target = convosync if real else repo
        try:
            inode = target.stat().st_ino
        except OSError:
            self.forget(repo)
            return False
        with self._lock:
            current = self._watched.get(repo)
            if current is not None and current.folder == target and current.inode == inode:
                return True
        self.forget(repo)
        try:
            watch = self._observer.schedule(_RepoHandler(self, repo), str(target), recursive=False)
        except OSError as error:
            log.warning("cannot watch %s (%s); relying on polling for it", target, error)
            return False
        with self._lock:
            self._watched[repo] = _Watched(repo, target, inode, watch)
        log.debug("watching %s", target)
        return True

    def forget(self, repo: Path) -> None:
        """Stop watching ``repo``."""
        with self._lock:
            current = self._watched.pop(repo, None)
        if current is not None:
            with contextlib.suppress(KeyError, OSError):
                self._observer.unschedule(current.watch)

    def watched(self) -> dict[Path, Path]:
        """``{repo: folder watched}``."""
        with self._lock:
            return {repo: item.folder for repo, item in self._watched.items()}
