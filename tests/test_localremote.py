"""A remote on the local disk is asked by reading its ref file; git answers the rest.

The answers are checked against ``git ls-remote`` itself on real repositories: loose
and packed refs, a branch that is not there yet, a remote moved by ``set-url`` or
``insteadOf``, and the cases that must go to git (a symbolic ref, an ``uploadpack`` of
the remote's own, a folder that has gone).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from convosyncd import config as configs
from convosyncd import localremote
from convosyncd.errors import GitError
from convosyncd.gitcmd import Git
from convosyncd.gitstore import SyncBranch
from convosyncd.notify import Notifier
from convosyncd.sync import RepoSync
from tests.support.devices import Device, git, handoff_text, make_device, make_remote
from tests.test_gitstore import git_commands

REF = "refs/heads/convosync"


@pytest.fixture
def desktop(tmp_path: Path, remote: Path) -> Device:
    return make_device(tmp_path, remote, "desktop")


def branch_of(device: Device) -> SyncBranch:
    return SyncBranch(Git(device.repo, network_timeout=30), remote="origin", branch="convosync")


def git_says(device: Device) -> str | None:
    """What ``git ls-remote`` answers for the sync branch."""
    line = git(device.repo, "ls-remote", "origin", REF)
    return line.split("\t")[0] if line else None


def push_commit(device: Device, message: str) -> str:
    """A commit pushed straight to the remote's sync branch, as another device would."""
    tree = git(device.repo, "mktree", input="")
    parent = git_says(device)
    if parent:
        git(device.repo, "fetch", "--quiet", "origin", REF)
    parents = ["-p", parent] if parent else []
    commit = git(device.repo, "commit-tree", tree, *parents, "-m", message)
    git(device.repo, "push", "--quiet", "origin", f"{commit}:{REF}")
    return commit


# -- which URLs are folders ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/srv/git/app.git", "/srv/git/app.git"),
        ("../remote.git", "/work/tree/../remote.git"),
        ("remote.git", "/work/tree/remote.git"),
        ("./a:b.git", "/work/tree/a:b.git"),
        ("file:///srv/git/app.git", "/srv/git/app.git"),
        ("file://server/srv/app.git", None),
        ("file:///srv/git/my%20app.git", None),
        ("git@github.com:me/app.git", None),
        ("server:app.git", None),
        ("ssh://server/srv/app.git", None),
        ("https://example.com/app.git", None),
        ("~/app.git", None),
        ("", None),
    ],
)
def test_which_urls_are_local_folders(url: str, expected: str | None) -> None:
    found = localremote.local_path(url, Path("/work/tree"))
    assert (str(found) if found is not None else None) == expected


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:40 / /mnt/nas rw,relatime shared:2 - nfs4 server:/export rw,vers=4.2
31 30 8:17 / /mnt/nas/usb rw,relatime shared:3 - vfat /dev/sdb1 rw
32 22 0:41 / /home/me/My\\040Drive rw,nosuid - fuse.rclone remote: rw
33 22 0:42 / /tmp rw - tmpfs tmpfs rw
"""


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/home/me/src/app.git", "ext4"),
        ("/mnt/nas/app.git", "nfs4"),
        ("/mnt/nas/usb/app.git", "vfat"),
        ("/mnt/nasty/app.git", "ext4"),
        ("/home/me/My Drive/app.git", "fuse.rclone"),
        ("/tmp", "tmpfs"),
    ],
)
def test_the_file_system_of_a_path_is_its_longest_mount_point(path: str, kind: str) -> None:
    assert localremote.mount_type(Path(path), MOUNTINFO) == kind


def test_only_local_file_systems_are_read_directly() -> None:
    assert {"ext4", "btrfs", "xfs", "tmpfs", "overlay"} <= localremote.LOCAL_FILE_SYSTEMS
    assert not {"nfs", "nfs4", "cifs", "smb3", "fuse.sshfs", "9p"} & localremote.LOCAL_FILE_SYSTEMS


def test_packed_refs_skip_comments_and_peeled_lines() -> None:
    text = (
        "# pack-refs with: peeled fully-peeled sorted \n"
        f"{'a' * 40} refs/heads/convosync\n"
        f"{'b' * 40} refs/tags/v1\n"
        f"^{'c' * 40}\n"
        "not a ref line\n"
    )
    assert localremote.parse_packed_refs(text) == {
        "refs/heads/convosync": "a" * 40,
        "refs/tags/v1": "b" * 40,
    }


def test_a_repository_with_another_ref_storage_is_left_to_git(tmp_path: Path) -> None:
    remote = make_remote(tmp_path)
    assert localremote.plain_ref_storage(remote)
    with (remote / "config").open("a", encoding="utf-8") as config:
        config.write("[extensions]\n\trefStorage = reftable\n")
    assert not localremote.plain_ref_storage(remote)
    assert localremote.locate(str(remote), tmp_path) is None


def test_git_dir_suffixes_as_upload_pack_tries_them(tmp_path: Path) -> None:
    bare = make_remote(tmp_path, "app.git")
    assert localremote.find_git_dir(bare) == bare
    assert localremote.find_git_dir(tmp_path / "app") == bare  # "app" + ".git"
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", str(bare), str(clone))
    assert localremote.find_git_dir(clone) == clone / ".git"
    assert localremote.find_git_dir(tmp_path / "nothing") is None
    linked = tmp_path / "linked"
    git(clone, "worktree", "add", "--quiet", "--detach", str(linked))
    assert localremote.find_git_dir(linked) is None  # a .git file: git's business


# -- answers, against git's own -------------------------------------------------------------


def test_the_answers_are_git_ls_remotes(desktop: Device) -> None:
    branch = branch_of(desktop)
    assert branch.ls_remote() is None and git_says(desktop) is None
    first = push_commit(desktop, "first")
    assert branch.ls_remote() == first == git_says(desktop)
    git(desktop.remote, "pack-refs", "--all")
    assert not (desktop.remote / REF).exists(), "the ref lives in packed-refs now"
    assert branch.ls_remote() == first == git_says(desktop)
    second = push_commit(desktop, "second")  # a loose ref again, over the packed one
    assert branch.ls_remote() == second == git_says(desktop)
    git(desktop.remote, "update-ref", "-d", REF)
    assert branch.ls_remote() is None and git_says(desktop) is None


def test_an_idle_poll_of_a_local_remote_starts_no_git(tmp_path: Path, desktop: Device) -> None:
    config = configs.load(desktop.config)
    sync = RepoSync(config, config.repos[0], Notifier(enabled=False, timeout=1))
    desktop.write_draft(handoff_text("Something to have a branch"))
    assert sync.cycle(require_settled=False).pushed
    assert sync.cycle().ok
    assert git_commands(sync.cycle) == []
    # Another device pushes: the next poll sees it and fetches, as before.
    laptop = make_device(tmp_path, desktop.remote, "laptop", register=False)
    arrived = push_commit(laptop, "from elsewhere")
    commands = git_commands(sync.cycle)
    assert "fetch" in commands and "ls-remote" not in commands
    # That push dropped the desktop's handoff (an empty tree, no forget record): the
    # merge puts it back and pushes again, on top of what arrived.
    known = sync.branch.remote_known_tip()
    assert known is not None and sync.branch.is_ancestor(arrived, known)


def test_a_remote_moved_by_set_url_or_instead_of_is_followed(
    tmp_path: Path, desktop: Device, hermetic: Path
) -> None:
    branch = branch_of(desktop)
    first = push_commit(desktop, "on the first remote")
    assert branch.ls_remote() == first
    other = make_remote(tmp_path, "other.git")
    git(desktop.repo, "remote", "set-url", "origin", str(other))
    assert branch.ls_remote() is None == git_says(desktop)
    moved = push_commit(desktop, "on the other remote")
    assert branch.ls_remote() == moved
    # A rewrite in the person's global config points "origin" back at the first one.
    git(desktop.repo, "remote", "set-url", "origin", "mirror:app")
    with (hermetic / ".gitconfig").open("a", encoding="utf-8") as config:
        config.write(f'[url "{desktop.remote}"]\n\tinsteadOf = mirror:app\n')
    assert branch.ls_remote() == first == git_says(desktop)
    assert git_commands(branch.ls_remote) == []


def test_what_only_git_can_answer_goes_to_git(
    desktop: Device, caplog: pytest.LogCaptureFixture
) -> None:
    branch = branch_of(desktop)
    first = push_commit(desktop, "first")
    # Located once: the repo's git folder, the remote's URL, its own settings.
    assert git_commands(branch.ls_remote) == ["rev-parse", "ls-remote", "config"]
    assert git_commands(branch.ls_remote) == []
    # A symbolic ref in the remote: git follows it, so git is asked.
    git(desktop.remote, "symbolic-ref", REF, "refs/heads/main")
    with caplog.at_level(logging.INFO, logger="convosyncd.gitstore"):
        # (the first network command also reads core.sshCommand)
        assert git_commands(branch.ls_remote) == ["config", "ls-remote"]
    assert "not a plain commit id" in caplog.text
    assert branch.ls_remote() == git_says(desktop) == git(desktop.remote, "rev-parse", "main")
    git(desktop.remote, "update-ref", "--no-deref", REF, first)
    # A remote with an upload-pack program of its own is always git's.
    git(desktop.repo, "config", "remote.origin.uploadpack", "git-upload-pack")
    assert git_commands(branch.ls_remote)[-1] == "ls-remote"
    assert git_commands(branch.ls_remote) == ["ls-remote"]
    assert branch.ls_remote() == first


def test_a_remote_folder_that_has_gone_is_gits_error_not_an_empty_branch(
    desktop: Device,
) -> None:
    branch = branch_of(desktop)
    push_commit(desktop, "first")
    git(desktop.remote, "pack-refs", "--all")
    assert branch.ls_remote() is not None
    moved = desktop.remote.with_name("moved.git")
    desktop.remote.rename(moved)
    with pytest.raises(GitError, match="ls-remote"):
        branch.ls_remote()
    moved.rename(desktop.remote)
    # Back, but only read directly again once located anew (after LOCAL_RETRY).
    assert branch.ls_remote() == git_says(desktop)
