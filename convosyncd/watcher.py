"""Watching for drafts: one inotify watch per repo, never a whole work tree.

Each repo's ``.convosync/`` folder is watched without recursion (its top folder instead,
until ``.convosync/`` exists as a real folder, not a symbolic link), and the config
file's folder is watched for edits. An event only tells the daemon which repo to look
at; the daemon reads the files itself, and polls them anyway, because a watcher can miss
events.

The watcher must never stop quietly (the daemon would go on, noticing drafts only at
its polls, a minute late): an exception in a callback is logged and the events keep
coming, and :meth:`DraftWatcher.check` restarts an observer whose thread has died.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from abc import ABC, abstractmethod
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
    handler: _RepoHandler


def _paths(event: FileSystemEvent) -> list[str]:
    paths = [os.fsdecode(event.src_path)]
    destination = getattr(event, "dest_path", "")
    if destination:
        paths.append(os.fsdecode(destination))
    return paths


class _GuardedHandler(FileSystemEventHandler, ABC):
    """An event handler whose exceptions are logged, never raised into the observer:
    watchdog's observer thread ends at the first exception that reaches it."""

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        try:
            self.handle(event)
        except Exception:
            log.exception("unexpected error handling the file event %s", event)

    @abstractmethod
    def handle(self, event: FileSystemEvent) -> None:
        """What the event means to the daemon (the subclass says)."""


class _RepoHandler(_GuardedHandler):
    def __init__(self, watcher: DraftWatcher, repo: Path, folder: Path) -> None:
        self.watcher = watcher
        self.repo = repo
        self.folder = folder

    def handle(self, event: FileSystemEvent) -> None:
        if event.event_type == "deleted" and _paths(event)[0] == str(self.folder):
            # The watched folder itself is gone, and its watch with it. A folder made in
            # its place may have been given the same inode number (ext4 reuses them at
            # once), so only this event tells the watch is dead.
            self.watcher.drop(self)
            self.watcher.on_layout(self.repo)
            return
        for path in _paths(event):
            name = os.path.basename(path)
            if name == DRAFT_NAME:
                self.watcher.on_draft(self.repo)
                return
            if name == CONVOSYNC_DIR or path == str(self.repo / CONVOSYNC_DIR):
                self.watcher.on_layout(self.repo)
                return


class _ConfigHandler(_GuardedHandler):
    def __init__(self, watcher: DraftWatcher, config_path: Path) -> None:
        self.watcher = watcher
        self.name = config_path.name

    def handle(self, event: FileSystemEvent) -> None:
        if any(os.path.basename(path) == self.name for path in _paths(event)):
            self.watcher.on_config()


def _observer() -> BaseObserver:
    observer = Observer()
    observer.daemon = True
    return observer


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
        self._observer = _observer()
        self._watched: dict[Path, _Watched] = {}
        self._config_path: Path | None = None
        self._config_watch: ObservedWatch | None = None
        self._lock = threading.Lock()
        self._running = False

    def start(self) -> None:
        self._observer.start()
        self._running = True

    def stop(self) -> None:
        self._running = False
        self._observer.stop()
        self._observer.join(timeout=5)

    def check(self) -> bool:
        """Restart the observer if its thread has died; whether it had to."""
        if not self._running or self._observer.is_alive():
            return False
        log.error(
            "the file watcher stopped; restarting it (until now drafts were noticed only "
            "by the polls)"
        )
        with self._lock:
            repos = list(self._watched)
            self._watched.clear()
        self._observer = _observer()
        self._observer.start()
        if self._config_path is not None:
            self.watch_config(self._config_path)
        for repo in repos:
            self.ensure(repo)
        return True

    def watch_config(self, config_path: Path) -> None:
        """Watch the folder holding the config file (created if missing)."""
        self._config_path = config_path
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
        handler = _RepoHandler(self, repo, target)
        try:
            watch = self._observer.schedule(handler, str(target), recursive=False)
        except OSError as error:
            log.warning("cannot watch %s (%s); relying on polling for it", target, error)
            return False
        with self._lock:
            self._watched[repo] = _Watched(repo, target, inode, watch, handler)
        log.debug("watching %s", target)
        return True

    def forget(self, repo: Path) -> None:
        """Stop watching ``repo``."""
        with self._lock:
            current = self._watched.pop(repo, None)
        if current is not None:
            self._unschedule(current)

    def drop(self, handler: _RepoHandler) -> None:
        """Forget the watch ``handler`` serves, if it is still the repo's current one (a
        late event from an old watch must not take a newer one away)."""
        with self._lock:
            current = self._watched.get(handler.repo)
            if current is None or current.handler is not handler:
                return
            del self._watched[handler.repo]
        self._unschedule(current)

    def _unschedule(self, watched: _Watched) -> None:
        with contextlib.suppress(KeyError, OSError):
            self._observer.unschedule(watched.watch)

    def watched(self) -> dict[Path, Path]:
        """``{repo: folder watched}``."""
        with self._lock:
            return {repo: item.folder for repo, item in self._watched.items()}
