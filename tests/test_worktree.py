"""The daemon's footprint in a work tree: a ``.convosync`` that is a symbolic link.

Such a link may come with a checkout or a pull, and may point anywhere: at a folder
holding someone else's draft, or at a folder the handoffs file must never be written
into. It is refused, never followed, and said once: in ``status``, the log and one
notification.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from convosyncd.watcher import DraftWatcher
from tests.support.dbus_session import RecordingNotificationServer, env_for_bus
from tests.support.devices import (
    Device,
    git,
    handoff_text,
    make_device,
    opened_all,
    wait_until,
)

SECRET = "what lies outside the repo"


def contents(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside every repo, with a draft of its own in it."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "session-handoff-draft.md").write_text(handoff_text(SECRET), encoding="utf-8")
    return folder


@pytest.fixture
def laptop(tmp_path: Path, remote: Path) -> Device:
    """Another device whose handoff waits on the remote, to be delivered."""
    device = make_device(tmp_path, remote, "laptop")
    device.write_draft(handoff_text("From the laptop"))
    assert device.cli("sync").returncode == 0
    return device


def link_convosync(device: Device, target: Path) -> Path:
    folder = device.repo / ".convosync"
    if folder.exists():
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
    folder.symlink_to(target)
    return folder


def published_by(device: Device, remote: Path) -> list[str]:
    files = git(remote, "ls-tree", "-r", "--name-only", "refs/heads/convosync", check=False)
    local = device.sync_branch_files()
    return [path for path in [*files.splitlines(), *local] if f"/{device.name}/" in path]


@pytest.mark.usefixtures("laptop")
def test_sync_and_add_refuse_a_linked_convosync_and_write_nothing_through_it(
    tmp_path: Path, remote: Path, outside: Path
) -> None:
    desktop = make_device(tmp_path, remote, "desktop")
    assert desktop.cli("sync").returncode == 0
    assert "From the laptop" in _text(desktop.materialized)
    # The folder becomes a link (a checkout brought it, say): the local sync branch has
    # handoffs to deliver, and a draft waits behind the link.
    link = link_convosync(desktop, outside)
    before = contents(outside)

    synced = desktop.cli("sync")
    assert synced.returncode == 1
    assert f"{link} is a symbolic link (to {outside})" in synced.stdout
    assert "replace it with a real folder" in synced.stdout
    [repo] = desktop.status()["repos"]
    assert f"{link} is a symbolic link" in repo["last_error"]["message"]

    assert desktop.cli("remove", str(desktop.repo)).returncode == 0
    added = desktop.cli("add", str(desktop.repo))
    assert added.returncode == 2
    assert f"{link} is a symbolic link (to {outside})" in added.stderr
    assert "[[repos]]" not in desktop.config.read_text(encoding="utf-8")

    assert contents(outside) == before, "nothing written, nothing removed"
    assert not published_by(desktop, remote), "the draft behind the link is not published"
    assert SECRET not in git(remote, "log", "--all", "--format=%B", check=False)
    assert all(SECRET not in text for text in opened_all(remote).values())


def test_the_daemon_refuses_a_linked_convosync_once_and_recovers_when_it_is_a_folder(
    tmp_path: Path,
    remote: Path,
    outside: Path,
    laptop: Device,
    session_bus: str,
    notification_server: RecordingNotificationServer,
) -> None:
    desktop = make_device(tmp_path, remote, "desktop", notify=True, pull_interval=0.5)
    link = link_convosync(desktop, outside)
    before = contents(outside)
    daemon = desktop.start(env_for_bus(session_bus))
    try:
        [note] = notification_server.wait_for(lambda notes: len(notes) >= 1, 10)
        assert note["summary"] == "convosyncd: trouble with app"
        assert f"{link} is a symbolic link" in note["body"]
        daemon.wait_for_log(rf"ERROR {desktop.repo}: {link} is a symbolic link")
        # A draft written through the link meanwhile is not taken either.
        (outside / "session-handoff-draft.md").write_text(handoff_text("Later"), "utf-8")
        before = contents(outside)
        time.sleep(1.5)  # a few polls (pull_interval 0.5 s): still one notification
        assert len(notification_server.notifications()) == 1
        [repo] = desktop.status()["repos"]
        assert f"{link} is a symbolic link" in repo["last_error"]["message"]
        assert contents(outside) == before
        assert not published_by(desktop, remote)

        link.unlink()
        desktop.write_draft(handoff_text("From a real folder"))
        wait_until(lambda: not desktop.draft.exists(), 20, "the draft in the real folder")
        wait_until(
            lambda: "From the laptop" in _text(desktop.materialized), 20, "the laptop's handoff"
        )
        wait_until(
            lambda: desktop.status()["repos"][0]["last_error"] is None,
            30,
            "the error to clear with the next full cycle (after its back-off)",
        )
    finally:
        assert daemon.stop() == 0
    assert contents(outside) == before
    assert len(published_by(desktop, remote)) == 2, "on the remote and the local branch"


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""


def test_the_watcher_watches_the_top_folder_not_through_the_link(
    tmp_path: Path, outside: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / ".convosync").symlink_to(outside)
    events: list[Path] = []
    watcher = DraftWatcher(events.append, events.append, lambda: None)
    watcher.start()
    try:
        assert watcher.ensure(repo)
        assert watcher.watched() == {repo: repo}
        (repo / ".convosync").unlink()
        (repo / ".convosync").mkdir()
        wait_until(lambda: bool(events), 10, "the link's replacement to be seen")
        assert watcher.ensure(repo)
        assert watcher.watched() == {repo: repo / ".convosync"}
    finally:
        watcher.stop()
