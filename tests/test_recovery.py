"""Faults a long-running daemon meets, each against a real ``convosyncd run``."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from tests.stress import draft_with_marker, markers_on
from tests.support.devices import (
    Device,
    git,
    handoff_text,
    make_device,
    wait_until,
)


def last_error(device: Device) -> str:
    error = device.status()["repos"][0]["last_error"]
    return str(error["message"]) if error else ""


def test_a_force_pushed_remote_gets_every_handoff_back(tmp_path: Path, remote: Path) -> None:
    desktop = make_device(tmp_path, remote, "desktop")
    for marker in ("one", "two"):
        desktop.write_draft(draft_with_marker(marker))
        assert desktop.cli("sync").returncode == 0
    # Someone rewrites the remote's sync branch with unrelated history.
    stranger = make_device(tmp_path, remote, "stranger")
    git(stranger.repo, "checkout", "--quiet", "--orphan", "rewrite")
    git(stranger.repo, "rm", "-r", "--quiet", "--cached", ".")
    (stranger.repo / "handoffs").mkdir()
    (stranger.repo / "handoffs" / "note.txt").write_text("rewritten\n", encoding="utf-8")
    git(stranger.repo, "add", "handoffs/note.txt")
    git(stranger.repo, "commit", "--quiet", "-m", "rewrite")
    git(stranger.repo, "push", "--quiet", "--force", "origin", "HEAD:refs/heads/convosync")
    assert markers_on(remote) == {}
    daemon = desktop.start()
    try:
        wait_until(lambda: set(markers_on(remote)) == {"one", "two"}, 15, "the handoffs back")
    finally:
        assert daemon.stop() == 0
    # Only handoff files are read or kept: the stranger's note is not carried on.
    assert "handoffs/note.txt" not in git(remote, "ls-tree", "-r", "--name-only", "convosync")


def test_a_remote_that_is_not_a_git_repository_is_a_clear_error(
    tmp_path: Path, remote: Path
) -> None:
    desktop = make_device(tmp_path, remote, "desktop")
    plain = tmp_path / "plain-folder"
    plain.mkdir()
    git(desktop.repo, "remote", "set-url", "origin", str(plain))
    desktop.write_draft(handoff_text("Nowhere to go"))
    result = desktop.cli("sync")
    assert result.returncode == 1
    assert "does not appear to be a git repository" in result.stdout
    assert not desktop.draft.exists(), "taken in and queued all the same"
    assert desktop.status()["repos"][0]["pending"] == 1


def test_the_repo_folder_moved_away_and_back(tmp_path: Path, remote: Path) -> None:
    desktop = make_device(tmp_path, remote, "desktop", pull_interval=0.3)
    daemon = desktop.start()
    try:
        moved = tmp_path / "moved-away"
        desktop.repo.rename(moved)
        wait_until(
            lambda: "is missing" in last_error(desktop), 10, "status to show the folder missing"
        )
        daemon.wait_for_log(r"the repo folder .* is missing")
        moved.rename(desktop.repo)
        wait_until(lambda: last_error(desktop) == "", 30, "the error to clear")
        desktop.write_draft(draft_with_marker("after-move"))
        wait_until(
            lambda: markers_on(remote)["after-move"] == 1, 10, "a publish after the move back"
        )
    finally:
        assert daemon.stop() == 0


def test_the_repo_folder_deleted_and_restored(tmp_path: Path, remote: Path) -> None:
    desktop = make_device(tmp_path, remote, "desktop", pull_interval=0.3)
    backup = tmp_path / "backup"
    shutil.copytree(desktop.repo, backup, symlinks=True)
    daemon = desktop.start()
    try:
        shutil.rmtree(desktop.repo)
        wait_until(
            lambda: "is missing" in last_error(desktop), 10, "status to show the folder missing"
        )
        shutil.copytree(backup, desktop.repo, symlinks=True)
        desktop.write_draft(draft_with_marker("restored"))
        wait_until(lambda: markers_on(remote)["restored"] == 1, 30, "a publish after the restore")
    finally:
        assert daemon.stop() == 0


def test_the_convosync_folder_deleted_is_watched_again(tmp_path: Path, remote: Path) -> None:
    # A long poll interval: only the watcher can publish quickly.
    desktop = make_device(tmp_path, remote, "desktop", pull_interval=30.0)
    daemon = desktop.start()
    try:
        desktop.write_draft(draft_with_marker("before"))
        wait_until(lambda: markers_on(remote)["before"] == 1, 10, "the first publish")
        shutil.rmtree(desktop.repo / ".convosync")
        time.sleep(0.3)
        desktop.write_draft(draft_with_marker("after"))
        wait_until(lambda: markers_on(remote)["after"] == 1, 10, "a publish after re-creation")
    finally:
        assert daemon.stop() == 0
    assert (desktop.repo / ".convosync" / "device-id").read_text(encoding="utf-8") == "desktop\n"


def test_corrupt_state_files_are_set_aside_and_nothing_is_notified_twice(
    tmp_path: Path, remote: Path
) -> None:
    desktop = make_device(tmp_path, remote, "desktop")
    laptop = make_device(tmp_path, remote, "laptop")
    desktop.write_draft(handoff_text("Old"))
    assert desktop.cli("sync").returncode == 0
    assert laptop.cli("sync").returncode == 0
    for path in (laptop.state / "repos").glob("*.json"):
        path.write_bytes(path.read_bytes()[:17])
    daemon = laptop.start()
    try:
        daemon.wait_for_log(r"was unreadable .* started afresh")
        desktop.write_draft(handoff_text("New"))
        assert desktop.cli("sync").returncode == 0
        daemon.wait_for_log(r"handoff from desktop arrived \(New\)")
    finally:
        assert daemon.stop() == 0
    assert "arrived (Old)" not in daemon.log()
    assert list((laptop.state / "repos").glob("*.corrupt"))


def test_a_stale_lock_on_the_sync_ref_does_not_stop_publishing(
    tmp_path: Path, remote: Path
) -> None:
    desktop = make_device(tmp_path, remote, "desktop")
    desktop.write_draft(handoff_text("First"))
    assert desktop.cli("sync").returncode == 0
    lock = desktop.repo / ".git" / "refs" / "heads" / "convosync.lock"
    lock.write_text("", encoding="utf-8")
    old = time.time() - 3600
    os.utime(lock, (old, old))
    desktop.write_draft(handoff_text("Second"))
    result = desktop.cli("sync")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not lock.exists()
    assert len(git(remote, "ls-tree", "-r", "--name-only", "convosync").splitlines()) == 2


def test_a_fresh_lock_held_by_someone_else_is_left_alone(tmp_path: Path, remote: Path) -> None:
    desktop = make_device(tmp_path, remote, "desktop")
    desktop.write_draft(handoff_text("First"))
    assert desktop.cli("sync").returncode == 0
    lock = desktop.repo / ".git" / "refs" / "heads" / "convosync.lock"
    lock.write_text("", encoding="utf-8")
    desktop.write_draft(handoff_text("Second"))
    result = desktop.cli("sync")
    assert result.returncode == 1
    assert "convosync.lock" in result.stdout
    assert lock.exists()
    assert desktop.draft.exists(), "nothing lost: the draft waits for the next try"
