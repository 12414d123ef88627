"""Years of use: the daemon packs its own loose objects and keeps its state folder tidy.

On real repos: handoffs published through the real engine, the daemon as a subprocess.
Whatever is packed, the person's git config (the repo's and their global one), refs and
objects stay exactly as they were, and a ``git gc`` of theirs that is running is never
joined.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from convosyncd import config as configs
from convosyncd import housekeeping
from convosyncd import state as states
from convosyncd.notify import Notifier
from convosyncd.sync import RepoSync
from tests.support.devices import Device, git, handoff_text, make_device, wait_until


@pytest.fixture
def desktop(tmp_path: Path, remote: Path) -> Device:
    return make_device(tmp_path, remote, "desktop")


def engine(device: Device) -> RepoSync:
    config = configs.load(device.config)
    sync = RepoSync(config, config.repos[0], Notifier(enabled=False, timeout=1))
    sync.ensure_layout()
    return sync


def publish_until(device: Device, sync: RepoSync, loose: int) -> int:
    """Publish handoffs (each a few loose objects) until the repo holds ``loose``; how many."""
    count = 0
    while housekeeping.loose_objects(sync.git) <= loose:
        device.write_draft(handoff_text(f"Step {count}", fact=f"fact number {count}"))
        assert sync.publish(require_settled=False).status == "published"
        count += 1
        assert count < 1000, "publishing adds loose objects"
    return count


def counted(repo: Path) -> dict[str, str]:
    lines = git(repo, "count-objects", "-v").splitlines()
    return dict(line.split(": ", 1) for line in lines)


def persons_git(repo: Path) -> dict[str, str]:
    """What must never change: every config file git reads here, refs, reachable objects."""
    return {
        "config": (repo / ".git" / "config").read_text(encoding="utf-8"),
        "global": Path(os.environ["GIT_CONFIG_GLOBAL"]).read_text(encoding="utf-8"),
        "effective": git(repo, "config", "--list", "--show-origin"),
        "refs": git(repo, "for-each-ref", "--format=%(refname) %(objectname)"),
        "objects": git(repo, "rev-list", "--objects", "--all"),
    }


def the_persons_settings(repo: Path) -> None:
    """Settings a person may have: automatic gc off, their own pack tuning."""
    git(repo, "config", "gc.auto", "0")
    git(repo, "config", "pack.threads", "4")
    git(repo, "config", "maintenance.auto", "true")


def test_many_loose_objects_are_packed_and_nothing_of_the_persons_changes(
    desktop: Device,
) -> None:
    the_persons_settings(desktop.repo)
    sync = engine(desktop)
    publish_until(desktop, sync, 60)
    before = persons_git(desktop.repo)
    loose = int(counted(desktop.repo)["count"])

    packed = housekeeping.pack_loose_objects(sync.git, limit=50)

    assert packed == housekeeping.Packed("packed", loose, 0)
    after = counted(desktop.repo)
    assert after["count"] == "0" and after["packs"] == "1"
    assert int(after["in-pack"]) >= loose
    assert persons_git(desktop.repo) == before
    git(desktop.repo, "fsck", "--strict", "--no-progress")
    assert not (desktop.repo / ".git" / "gc.pid").exists()
    # The engine goes on as before: another publish, read back from the pack.
    desktop.write_draft(handoff_text("After the pack"))
    result = sync.cycle(require_settled=False)
    assert result.ok and result.published, result.error


def test_a_few_loose_objects_are_left_alone(desktop: Device) -> None:
    sync = engine(desktop)
    publish_until(desktop, sync, 10)
    loose = housekeeping.loose_objects(sync.git)
    assert housekeeping.pack_loose_objects(sync.git, limit=loose) == housekeeping.Packed(
        "few", loose, loose
    )
    assert counted(desktop.repo)["packs"] == "0"


def test_a_gc_of_the_persons_that_runs_is_never_joined(desktop: Device) -> None:
    sync = engine(desktop)
    publish_until(desktop, sync, 20)
    loose = housekeeping.loose_objects(sync.git)
    gc_pid = desktop.repo / ".git" / "gc.pid"
    gc_pid.write_text("4242 their-laptop", encoding="utf-8")

    assert housekeeping.pack_loose_objects(sync.git, limit=10).status == "busy"
    assert counted(desktop.repo)["count"] == str(loose)

    # One left behind by a gc that died half a day ago is not a gc that runs (git's rule).
    stale = time.time() - housekeeping.GC_STALE - 60
    os.utime(gc_pid, (stale, stale))
    assert housekeeping.pack_loose_objects(sync.git, limit=10).status == "packed"
    assert counted(desktop.repo)["count"] == "0"
    assert gc_pid.read_text(encoding="utf-8") == "4242 their-laptop", "theirs, untouched"


def test_the_daemon_packs_its_loose_objects_after_many_publishes(desktop: Device) -> None:
    the_persons_settings(desktop.repo)
    publish_until(desktop, engine(desktop), housekeeping.LOOSE_LIMIT)
    before = persons_git(desktop.repo)
    daemon = desktop.start()
    try:
        match = daemon.wait_for_log(r"packed (\d+) loose git objects \((\d+) left loose\)")
        assert int(match[1]) > housekeeping.LOOSE_LIMIT and match[2] == "0"
        desktop.write_draft(handoff_text("Published after the pack"))
        daemon.wait_for_log(r"published desktop/\S+ \(Published after the pack\)")
    finally:
        assert daemon.stop() == 0
    assert int(counted(desktop.repo)["count"]) < 20, "only what came after the pack"
    after = persons_git(desktop.repo)
    assert after["config"] == before["config"] and after["global"] == before["global"]
    assert after["effective"] == before["effective"]
    assert set(before["objects"].splitlines()) <= set(after["objects"].splitlines())
    git(desktop.repo, "fsck", "--strict", "--no-progress")


def modes(folder: Path) -> dict[str, int]:
    found = {".": stat.S_IMODE(folder.stat().st_mode)}
    for path in folder.rglob("*"):
        found[str(path.relative_to(folder))] = stat.S_IMODE(path.lstat().st_mode)
    return found


@pytest.mark.usefixtures("loose_umask")
def test_the_daemon_start_makes_the_state_folder_private_and_drops_unregistered_repos(
    tmp_path: Path, remote: Path, desktop: Device
) -> None:
    laptop = make_device(tmp_path, remote, "laptop")
    laptop.write_draft(handoff_text("From the laptop"))
    assert laptop.cli("sync").returncode == 0
    old = make_device(tmp_path, remote, "old", register=False).repo
    desktop.write_config(repos=[desktop.repo, old])
    (old / ".convosync").mkdir()
    assert desktop.cli("sync").returncode == 0
    for repo in (desktop.repo, old):
        assert "From the laptop" in desktop.cli("resume", "--hook", cwd=repo).stdout
    # A state folder from before it was kept private, and a repo taken out of the config
    # by hand (not with `remove`).
    for path in [desktop.state, *desktop.state.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    desktop.write_config(repos=[desktop.repo])
    kept = [path for path in states.repo_files(desktop.state, desktop.repo) if path.exists()]
    dropped = [path for path in states.repo_files(desktop.state, old) if path.exists()]
    assert len(dropped) >= 2, "a state file and a loaded file at least"

    daemon = desktop.start()
    try:
        daemon.wait_for_log(r"readable by you alone")
        daemon.wait_for_log(r"kept for repos no longer registered")
        daemon.wait_for_log(r"convosyncd running")
        wait_until(states.polls_file(desktop.state).exists, 20, "the first poll's record")
    finally:
        assert daemon.stop() == 0

    assert all(path.exists() for path in kept)
    assert not any(path.exists() for path in dropped)
    found = modes(desktop.state)
    assert {"repos", "loaded", "convosyncd.log", "polls.json"} <= set(found)
    for name, mode in found.items():
        wanted = 0o700 if (desktop.state / name).is_dir() else 0o600
        assert mode == wanted, f"{name} is {mode:o}"
