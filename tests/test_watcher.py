"""The draft watcher on real inotify: it never stops quietly.

watchdog's observer thread ends at the first exception a handler lets through, and the
daemon would then notice drafts only at its polls, a minute late. A callback that
raises must cost one log line, and an observer that died anyway is restarted.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from convosyncd.handoff import CONVOSYNC_DIR, DRAFT_NAME
from convosyncd.watcher import DraftWatcher
from tests.support.devices import wait_until


class Calls:
    """Draft callbacks as they come; the first ``failures`` of them raise."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.seen: list[Path] = []
        self.lock = threading.Lock()

    def on_draft(self, repo: Path) -> None:
        with self.lock:
            self.seen.append(repo)
            if len(self.seen) <= self.failures:
                raise RuntimeError("a callback that breaks")

    def count(self) -> int:
        with self.lock:
            return len(self.seen)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    folder = tmp_path / "app"
    (folder / CONVOSYNC_DIR).mkdir(parents=True)
    return folder


@contextmanager
def watching(calls: Calls, repo: Path) -> Iterator[DraftWatcher]:
    watcher = DraftWatcher(calls.on_draft, lambda _repo: None, lambda: None)
    watcher.start()
    assert watcher.ensure(repo)
    try:
        yield watcher
    finally:
        watcher.stop()


def write_draft(repo: Path, text: str) -> None:
    (repo / CONVOSYNC_DIR / DRAFT_NAME).write_text(text, encoding="utf-8")


def test_a_callback_that_raises_is_logged_and_the_events_keep_coming(
    repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls = Calls(failures=1)
    with watching(calls, repo):
        write_draft(repo, "first")
        wait_until(lambda: calls.count() >= 1, 10, "the first draft event")
        wait_until(
            lambda: "unexpected error handling the file event" in caplog.text, 10, "a log line"
        )
        seen = calls.count()

        def more() -> bool:
            return calls.count() > seen

        write_draft(repo, "second")
        wait_until(more, 10, "an event after the callback raised")


def test_an_observer_that_died_is_restarted_with_its_watches(
    repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls = Calls()
    with watching(calls, repo) as watcher:
        assert watcher.check() is False, "a live observer is left alone"
        # However it died: its thread is gone, the watches with it.
        watcher._observer.stop()
        watcher._observer.join(5)
        assert watcher.check() is True
        assert "the file watcher stopped; restarting it" in caplog.text
        assert watcher.watched() == {repo: repo / CONVOSYNC_DIR}
        write_draft(repo, "after the restart")
        wait_until(lambda: calls.count() >= 1, 10, "an event from the new observer")


def test_a_folder_made_where_the_watched_one_was_deleted_is_watched(repo: Path) -> None:
    # ext4 gives a folder made right after a deletion the deleted folder's inode number:
    # the watcher must not take the new folder for the old one, whose watch died with it.
    folder = repo / CONVOSYNC_DIR
    calls = Calls()
    holding, release, relaid = threading.Event(), threading.Event(), threading.Event()

    def on_draft(path: Path) -> None:
        calls.on_draft(path)
        if not holding.is_set():
            holding.set()
            release.wait(10)  # the observer's thread waits here, events queue up

    def on_layout(path: Path) -> None:
        watcher.ensure(path)  # what the daemon does
        relaid.set()

    watcher = DraftWatcher(on_draft, on_layout, lambda: None)
    watcher.start()
    try:
        assert watcher.ensure(repo)
        inode = folder.stat().st_ino
        write_draft(repo, "one")
        assert holding.wait(5), "no event for the first draft"
        shutil.rmtree(folder)
        folder.mkdir()
        same = folder.stat().st_ino == inode
        release.set()
        if not same:
            pytest.skip("this file system gave the new folder a new inode number")
        assert relaid.wait(5), "the folder's deletion was not reported"
        seen = calls.count()
        write_draft(repo, "two")
        wait_until(lambda: calls.count() > seen, 5, "the draft in the new folder")
        assert watcher.watched() == {repo: folder}
    finally:
        release.set()
        watcher.stop()
