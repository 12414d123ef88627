"""The sync branch's plumbing on real git: remembered tips, big folders, few git calls."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock

import pytest

from convosyncd import config as configs
from convosyncd import gitcmd
from convosyncd.gitcmd import Git
from convosyncd.gitstore import Identity, SyncBranch
from convosyncd.notify import Notifier
from convosyncd.sync import RepoSync
from tests.support.devices import (
    PERSON_KEY,
    Device,
    git,
    handoff_text,
    make_device,
    make_remote,
    opened,
)

REF = "refs/heads/convosync"
WHO = Identity("Test Person", "person@example.invalid")


@pytest.fixture
def desktop(tmp_path: Path, remote: Path) -> Device:
    return make_device(tmp_path, remote, "desktop")


def branch_of(device: Device) -> SyncBranch:
    return SyncBranch(Git(device.repo, network_timeout=30), remote="origin", branch="convosync")


def commit_file(branch: SyncBranch, name: str, parent: str | None) -> str:
    blob = branch.write_blob(f"{name}\n".encode())
    root = branch.add_file(parent, ("handoffs", "desktop"), name, blob)
    when = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return branch.commit(root, [parent] if parent else [], f"add {name}", WHO, when)


def git_commands(action: Callable[[], object]) -> list[str]:
    with mock.patch.object(gitcmd, "run_git", wraps=gitcmd.run_git) as spy:
        action()
    return [str(call.args[0][0]) for call in spy.call_args_list]


def test_the_tip_follows_whoever_moves_the_branch(desktop: Device) -> None:
    branch = branch_of(desktop)
    assert branch.tip() is None
    first = commit_file(branch, "one.md", None)
    assert branch.move(first, None, "test")
    assert branch.tip() == first
    second = commit_file(branch, "two.md", first)
    git(desktop.repo, "update-ref", REF, second)  # someone else moves it
    assert branch.tip() == second
    git(desktop.repo, "pack-refs", "--all")  # the loose ref file is gone, packed instead
    assert branch.tip() == second
    git(desktop.repo, "update-ref", REF, first)
    assert branch.tip() == first
    git(desktop.repo, "update-ref", "-d", REF)
    assert branch.tip() is None


def test_an_unchanged_tip_is_not_asked_of_git_again(desktop: Device) -> None:
    branch = branch_of(desktop)
    commit = commit_file(branch, "one.md", None)
    assert branch.move(commit, None, "test")
    assert git_commands(lambda: [branch.tip() for _ in range(3)]) == []


def test_a_stale_remembered_tip_cannot_overwrite_a_newer_one(desktop: Device) -> None:
    branch = branch_of(desktop)
    first = commit_file(branch, "one.md", None)
    assert branch.move(first, None, "test")
    other = commit_file(branch_of(desktop), "other.md", first)
    git(desktop.repo, "update-ref", REF, other)
    mine = commit_file(branch, "mine.md", first)
    assert not branch.move(mine, first, "test"), "update-ref NEW OLD refuses"
    assert branch.tip() == other


def test_a_big_folder_gets_one_more_file_and_stays_a_valid_tree(desktop: Device) -> None:
    branch = branch_of(desktop)
    names = [f"20260101T{index:06d}.000Z-{index:012x}.md" for index in range(400)]
    listing = "".join(
        f"100644 blob {git(desktop.repo, 'hash-object', '-w', '--stdin', input=name)}\t{name}\0"
        for name in names
    )
    folder = git(desktop.repo, "mktree", "-z", input=listing)
    handoffs = git(desktop.repo, "mktree", input=f"040000 tree {folder}\tdesktop\n")
    root = git(desktop.repo, "mktree", input=f"040000 tree {handoffs}\thandoffs\n")
    base = git(desktop.repo, "commit-tree", root, "-m", "seed")
    middle = "20260101T000199.500Z-aaaaaaaaaaaa.md"
    tip = commit_file(branch, middle, base)
    files = git(desktop.repo, "ls-tree", "-r", "--name-only", tip).splitlines()
    assert files == [f"handoffs/desktop/{name}" for name in sorted([*names, middle])]
    git(desktop.repo, "fsck", "--strict", "--no-dangling", tip)


def test_an_idle_poll_asks_the_remote_once_and_nothing_else(desktop: Device) -> None:
    config = configs.load(desktop.config)
    sync = RepoSync(config, config.repos[0], Notifier(enabled=False, timeout=1))
    # A remote git has to be asked (one with an upload-pack of its own): one ls-remote.
    git(desktop.repo, "config", "remote.origin.uploadpack", "git-upload-pack")
    desktop.write_draft(handoff_text("Something to have a branch"))
    assert sync.cycle(require_settled=False).pushed
    assert sync.cycle().ok
    assert git_commands(sync.cycle) == ["ls-remote"]


def test_head_of_a_repo_without_commits(tmp_path: Path) -> None:
    repo = tmp_path / "empty"
    git(tmp_path, "init", "--quiet", str(repo))
    remote = make_remote(tmp_path, "other.git")
    git(repo, "remote", "add", "origin", str(remote))
    device = Device("desktop", tmp_path, repo, remote, {"settle": 0.0, "notify": False})
    device.write_config()
    device.give_key(PERSON_KEY)
    device.write_draft(handoff_text("Before the first commit"))
    config = configs.load(device.config)
    result = RepoSync(config, config.repos[0], Notifier(enabled=False, timeout=1)).cycle(
        require_settled=False
    )
    assert result.ok and result.published
    [path] = git(remote, "ls-tree", "-r", "--name-only", REF).splitlines()
    stored = opened(remote, path)
    assert "repo_commit: none (no commits yet)\n" in stored
    assert "repo_branch: main\n" in stored
