"""Shared ssh connections: one per server and ssh command, against a real sshd.

sshd's own log counts the connections ("Accepted publickey" once per connection, not
per session), so a test can tell one shared connection from one per poll. Sharing must
never make a remote unreachable: the socket path arithmetic is checked against the real
ssh, and polls and pushes must work with a long runtime folder, with no room for a
socket at all, and when a shared connection cannot be made.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from convosyncd import config as configs
from convosyncd.notify import Notifier
from convosyncd.sshshare import (
    SSH_TEMPORARY_SUFFIX,
    SshSharing,
    control_path_fits,
    control_path_length,
    longest_folder,
    private_folder,
    sharing_failure,
    ssh_authority,
    sun_path_bytes,
)
from convosyncd.sync import RepoSync
from tests.support.devices import (
    Device,
    git,
    handoff_text,
    make_device,
    make_remote,
    wait_until,
)
from tests.support.sshd import SshServer, make_key, running_sshd, ssh_command


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshServer]:
    with running_sshd(tmp_path / "sshd") as server:
        yield server


@pytest.fixture
def sharing() -> Iterator[SshSharing]:
    made = SshSharing.create(persist=30)
    assert made is not None
    try:
        yield made
    finally:
        made.close()


def ssh_device(tmp_path: Path, sshd: SshServer, name: str, key_name: str = "id_a") -> Device:
    """A device whose remote is reached over ssh with the key ``key_name``."""
    key = tmp_path / key_name
    if not key.exists():
        make_key(key)
        sshd.authorize(key.with_suffix(".pub"))
    remote = make_remote(tmp_path, f"{name}.git")
    device = make_device(tmp_path, remote, name, network_timeout=3.0)
    git(device.repo, "remote", "set-url", "origin", sshd.url(remote))
    known = sshd.known_hosts(tmp_path / "known_hosts")
    git(device.repo, "config", "core.sshCommand", ssh_command(key, known))
    return device


def sync_of(device: Device, sharing: SshSharing | None) -> RepoSync:
    config = configs.load(device.config)
    return RepoSync(config, config.repos[0], Notifier(enabled=False, timeout=1), sharing=sharing)


def connections(sshd: SshServer) -> int:
    return sshd.log().count("Accepted publickey")


def sessions(sshd: SshServer) -> int:
    """Commands run on the server (many to a shared connection)."""
    return sshd.log().count("Starting session:")


def masters() -> set[int]:
    """Processes that are ssh connection masters (their title ends in ``[mux]``)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"[mux]" in title and b"cvs-" in title:
                found.add(int(entry.name))
    return found


def master_pid(sharing: SshSharing) -> int:
    [socket] = [path for path in sharing.folder.iterdir() if path.is_socket()]
    check = subprocess.run(
        ["ssh", "-o", f"ControlPath={socket}", "-O", "check", "x"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return int(check.stderr.split("pid=")[1].split(")")[0])


@pytest.fixture
def short_root() -> Iterator[Path]:
    """A fresh folder right in /tmp, for paths of an exact length (tmp_path is long)."""
    root = Path(tempfile.mkdtemp(prefix="cr", dir="/tmp"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def folder_of_length(root: Path, length: int, mode: int = 0o700) -> Path:
    """A new folder under ``root`` whose path is exactly ``length`` bytes."""
    name_length = length - len(str(root)) - 1
    assert 0 < name_length < 256, f"{root} leaves no room for a {length}-byte path"
    folder = root / ("r" * name_length)
    folder.mkdir(mode=mode)
    os.chmod(folder, mode)
    assert len(str(folder)) == length
    return folder


def remote_files(device: Device) -> list[str]:
    output = git(device.remote, "ls-tree", "-r", "--name-only", "refs/heads/convosync", check=False)
    return [line for line in output.splitlines() if line]


def poll_and_push(device: Device, sync: RepoSync, task: str) -> None:
    """A cycle that polls and pushes one new handoff over ssh; it must succeed."""
    before = len(remote_files(device))
    device.write_draft(handoff_text(task))
    result = sync.cycle(require_settled=False)
    assert result.ok, result.error
    assert result.pushed and len(remote_files(device)) == before + 1
    result = sync.cycle()  # a poll with nothing new
    assert result.ok, result.error


def sharing_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "convosyncd.sshshare" and record.levelno >= logging.WARNING
    ]


def test_without_sharing_every_poll_is_a_new_connection(tmp_path: Path, sshd: SshServer) -> None:
    sync = sync_of(ssh_device(tmp_path, sshd, "alone"), None)
    for _ in range(3):
        assert sync.cycle().ok
    assert connections(sshd) == 3


def test_polls_share_one_connection_per_server_and_ssh_command(
    tmp_path: Path, sshd: SshServer, sharing: SshSharing
) -> None:
    before = masters()
    same_key = [ssh_device(tmp_path, sshd, name) for name in ("one", "two")]
    other_key = ssh_device(tmp_path, sshd, "three", key_name="id_b")
    syncs = [sync_of(device, sharing) for device in [*same_key, other_key]]
    for _ in range(3):
        for sync in syncs:
            result = sync.cycle()
            assert result.ok, result.error
    assert connections(sshd) == 2, sshd.log()
    assert len(masters() - before) == 2
    sharing.close()
    assert not sharing.folder.exists()
    wait_until(lambda: not masters() - before, 10, "the shared connections to close")


def test_a_killed_shared_connection_is_replaced(
    tmp_path: Path, sshd: SshServer, sharing: SshSharing
) -> None:
    sync = sync_of(ssh_device(tmp_path, sshd, "solo"), sharing)
    assert sync.cycle().ok
    os.kill(master_pid(sharing), signal.SIGKILL)
    result = sync.cycle()
    assert result.ok, result.error
    assert connections(sshd) == 2


def test_a_hung_shared_connection_costs_one_time_limit(
    tmp_path: Path, sshd: SshServer, sharing: SshSharing
) -> None:
    sync = sync_of(ssh_device(tmp_path, sshd, "solo"), sharing)
    assert sync.cycle().ok
    stuck = master_pid(sharing)
    os.kill(stuck, signal.SIGSTOP)
    try:
        failed = sync.cycle()
        assert not failed.ok and "did not finish within 3 s" in (failed.error or "")
        result = sync.cycle()  # a fresh connection, not the stuck one
        assert result.ok, result.error
        assert connections(sshd) == 2
    finally:
        os.kill(stuck, signal.SIGKILL)


@pytest.mark.parametrize(
    ("url", "authority"),
    [
        ("ssh://git@example.com:2222/app.git", "git@example.com:2222"),
        ("git+ssh://example.com/app.git", "example.com"),
        ("git@github.com:me/app.git", "git@github.com"),
        ("github-work:me/app.git", "github-work"),
        ("https://example.com/app.git", None),
        ("/srv/git/app.git", None),
        ("./a:b.git", None),
        ("file:///srv/app.git", None),
    ],
)
def test_which_remotes_are_ssh_and_at_which_address(url: str, authority: str | None) -> None:
    assert ssh_authority(url) == authority


def test_connections_are_told_apart_by_command_and_address(sharing: SshSharing) -> None:
    github = sharing.options("ssh -i personal", ["git@github.com:me/a.git"])
    assert f"ControlPath={sharing.folder}/" in github and github.endswith("ControlPersist=30")
    assert github == sharing.options("ssh -i personal", ["git@github.com:me/b.git"])
    assert github != sharing.options("ssh -i work", ["git@github.com:me/a.git"])
    assert github != sharing.options("ssh -i personal", ["git@github-work:me/a.git"])
    # A push URL on another server, or no ssh at all: nothing is shared.
    assert sharing.options("ssh", ["git@a.example:x.git", "git@b.example:x.git"]) == ""
    assert sharing.options("ssh", ["https://example.com/x.git"]) == ""
    assert sharing.options("ssh", []) == ""
    path = github.split("ControlPath=")[1].split()[0].replace("%C", "0" * 40)
    assert len(path) == control_path_length(sharing.folder)
    assert len(path) + SSH_TEMPORARY_SUFFIX < sun_path_bytes()
    assert (sharing.folder.stat().st_mode & 0o777) == 0o700


def test_the_daemon_shares_connections_and_closes_them_when_it_stops(
    tmp_path: Path, sshd: SshServer, short_root: Path
) -> None:
    before = masters()
    device = ssh_device(tmp_path, sshd, "daemon")
    # With runtime and temporary folders far too long for a socket path.
    long_folder = str(folder_of_length(short_root, 150))
    daemon = device.start({"XDG_RUNTIME_DIR": long_folder, "TMPDIR": long_folder})
    try:
        polls = tmp_path / "polls"

        def polled_five_times() -> bool:
            stamp = (device.status()["repos"][0]["last_poll"] or {}).get("time")
            seen = polls.read_text(encoding="utf-8").split() if polls.exists() else []
            if stamp and stamp not in seen:
                polls.write_text(" ".join([*seen, stamp]), encoding="utf-8")
            return len(seen) >= 5

        wait_until(polled_five_times, 30, "five polls")
        assert connections(sshd) == 1, sshd.log()
        assert len(masters() - before) == 1
    finally:
        assert daemon.stop() == 0
    wait_until(lambda: not masters() - before, 10, "the daemon's ssh connection to close")


# -- the socket path's length ------------------------------------------------------------


@pytest.mark.parametrize(
    ("platform", "limit", "longest"), [("linux", 108, 36), ("darwin", 104, 32)]
)
def test_the_socket_path_leaves_room_for_the_name_ssh_binds_first(
    platform: str, limit: int, longest: int
) -> None:
    assert sun_path_bytes(platform) == limit
    assert longest_folder(platform) == longest
    # A socket is <folder>/<12 hex>-<%C: 40 hex>; ssh's master binds it with "." and 16
    # random characters added, and the kernel wants a NUL after that.
    fits = "/" + "f" * (longest - 1)
    assert control_path_length(fits) == longest + 1 + 12 + 1 + 40
    assert control_path_length(fits) + 17 + 1 == limit
    assert control_path_fits(fits, platform)
    assert not control_path_fits(fits + "f", platform)
    # Bytes, not characters.
    assert not control_path_fits("/" + "é" * (longest // 2), platform)
    assert control_path_fits("/run/user/1000/cvs-abcdefgh", platform)
    assert control_path_fits("/tmp/cvs-abcdefgh", platform)
    # macOS's own $TMPDIR alone is longer than the room there is.
    assert not control_path_fits(
        "/var/folders/zz/zyxvpxvq6csfxvn_n0000000gn/T/cvs-abcdefgh", platform
    )


def test_unknown_platforms_get_the_smaller_limit() -> None:
    assert sun_path_bytes("freebsd14") == 104
    assert sun_path_bytes("openbsd7") == 104


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux's limit is measured")
def test_the_arithmetic_is_what_the_real_ssh_does(
    tmp_path: Path, sshd: SshServer, short_root: Path
) -> None:
    key = make_key(tmp_path / "id_a")
    sshd.authorize(key.with_suffix(".pub"))
    command = ssh_command(key, sshd.known_hosts(tmp_path / "known_hosts"))
    prefix = SshSharing(short_root, 1).prefix(command, [sshd.url(tmp_path)])
    assert prefix is not None
    for length in (longest_folder(), longest_folder() + 1):
        folder = folder_of_length(short_root, length)
        result = subprocess.run(
            [
                *shlex.split(command),
                *("-o", "ControlMaster=auto", "-o", f"ControlPath={folder / prefix}%C"),
                *("-o", "ControlPersist=5", "-p", str(sshd.port), f"{sshd.user}@127.0.0.1"),
                "true",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        SshSharing(folder, 1).close()  # ends the master, if one started
        if control_path_fits(folder):
            assert result.returncode == 0, result.stderr
        else:
            assert result.returncode == 255
            reason = sharing_failure(result.stderr)
            assert reason is not None and "too long for Unix domain socket" in reason
    assert sessions(sshd) == 1, "ssh stops before the command when the master cannot start"


@pytest.mark.parametrize(
    ("stderr", "line"),
    [
        (
            'unix_listener: path "/run/user/1000/cvs-x/0123-abcd.Z5fT0cQk1Ajc9Xyz" too long '
            "for Unix domain socket\r\nfatal: Could not read from remote repository.\n",
            'unix_listener: path "/run/user/1000/cvs-x/0123-abcd.Z5fT0cQk1Ajc9Xyz" too long '
            "for Unix domain socket",
        ),
        (
            "Warning: Permanently added '[127.0.0.1]:2222' (ED25519) to the list of known "
            "hosts.\r\nunix_listener: cannot bind to path /tmp/cvs-x/0123-abcd.Z5fT0cQk1A: "
            "No such file or directory\r\n",
            "unix_listener: cannot bind to path /tmp/cvs-x/0123-abcd.Z5fT0cQk1A: "
            "No such file or directory",
        ),
        (
            "ControlPath too long ('/tmp/xxxx' >= 108 bytes)\r\n",
            "ControlPath too long ('/tmp/xxxx' >= 108 bytes)",
        ),
        (
            "muxserver_listen: link mux listener /tmp/a.b => /tmp/a: Operation not permitted\r\n",
            "link mux listener /tmp/a.b => /tmp/a: Operation not permitted",
        ),
    ],
)
def test_ssh_lines_that_mean_the_sharing_failed(stderr: str, line: str) -> None:
    assert sharing_failure(stderr) == line


@pytest.mark.parametrize(
    "stderr",
    [
        "",
        # ssh goes on without the master after these: no reason to run again.
        "Control socket connect(/tmp/cvs-x/0123-abcd): Connection refused\r\n",
        "muxclient: master hello exchange failed\r\n",
        "ControlSocket /tmp/cvs-x/0123-abcd already exists, disabling multiplexing\r\n",
        "git@127.0.0.1: Permission denied (publickey).\r\n"
        "fatal: Could not read from remote repository.\n",
        "Host key verification failed.\r\n",
        "fatal: 'unix_listener' does not appear to be a git repository\n",
        # What the server says is not ssh's own word.
        'remote: unix_listener: path "/x" too long for Unix domain socket\n',
        "remote: ControlPath too long ('/x' >= 108 bytes)\n",
        "Warning: unix_listener: path /x too long for Unix domain socket\n",
    ],
)
def test_ssh_lines_that_do_not_mean_the_sharing_failed(stderr: str) -> None:
    assert sharing_failure(stderr) is None


# -- choosing the folder -----------------------------------------------------------------


def test_the_folder_is_new_private_and_in_the_first_place_with_room(short_root: Path) -> None:
    roomy = folder_of_length(short_root, 20)
    first, second = private_folder([str(roomy)]), private_folder([str(roomy)])
    assert first is not None and second is not None and first != second
    for folder in (first, second):
        assert folder.parent == roomy and folder.name.startswith("cvs-")
        status = folder.lstat()
        assert status.st_uid == os.geteuid() and (status.st_mode & 0o777) == 0o700
        assert control_path_fits(folder)


def test_the_umask_does_not_change_the_folder_mode(short_root: Path) -> None:
    previous = os.umask(0o277)
    try:
        folder = private_folder([str(short_root)])
    finally:
        os.umask(previous)
    assert folder is not None and (folder.stat().st_mode & 0o777) == 0o700


def test_places_that_are_too_long_or_not_private_are_passed_over(short_root: Path) -> None:
    too_long = folder_of_length(short_root, longest_folder() - 12)  # no room for cvs-XXXXXXXX
    shared_by_all = folder_of_length(short_root, 20, mode=0o777)  # no sticky bit
    sticky = folder_of_length(short_root, 21, mode=0o1777)  # like /tmp: fine
    odd = short_root / "a b"
    odd.mkdir(mode=0o700)
    candidates = [
        "relative/path",
        str(too_long),
        str(shared_by_all),
        str(odd),
        str(short_root / "gone"),
    ]
    assert private_folder(candidates) is None
    assert list(too_long.iterdir()) == list(shared_by_all.iterdir()) == list(odd.iterdir()) == []
    chosen = private_folder([*candidates, str(sticky)])
    assert chosen is not None and chosen.parent == sticky


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_place_that_belongs_to_someone_else_is_passed_over(short_root: Path) -> None:
    theirs = folder_of_length(short_root, 20)
    os.chown(theirs, 65534, 65534)
    assert private_folder([str(theirs)]) is None
    mine_inside = theirs / "mine"
    mine_inside.mkdir(mode=0o700)  # ours, but they could rename it and put theirs there
    assert private_folder([str(mine_inside)]) is None


def test_no_room_anywhere_means_no_sharing_said_once(
    short_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    long_runtime = folder_of_length(short_root, 150)
    caplog.set_level(logging.INFO)
    assert SshSharing.create(persist=30, bases=[str(long_runtime)]) is None
    [warning] = sharing_warnings(caplog)
    assert str(long_runtime) in warning and "not shared" in warning
    # 32 bytes on macOS: a folder that would do on Linux does not there.
    linux_only = folder_of_length(short_root, longest_folder("linux") - 13)
    assert SshSharing.create(persist=30, platform="darwin", bases=[str(linux_only)]) is None
    made = SshSharing.create(persist=30, platform="linux", bases=[str(linux_only)])
    assert made is not None
    made.close()
    assert not made.folder.exists()


# -- polls and pushes whatever the folders ----------------------------------------------


@pytest.mark.parametrize("length", [20, 33, 150])
def test_a_long_runtime_folder_still_shares_and_syncs(
    tmp_path: Path,
    sshd: SshServer,
    short_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    length: int,
) -> None:
    # 33: the sockets' path fitted the old margin of 100 bytes, but not ssh's 17 more.
    runtime = folder_of_length(short_root, length)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("TMPDIR", str(runtime))
    sharing = SshSharing.create(persist=30)
    assert sharing is not None
    try:
        expected_parent = runtime if length + 13 <= longest_folder() else Path("/tmp")
        assert sharing.folder.parent == expected_parent and control_path_fits(sharing.folder)
        device = ssh_device(tmp_path, sshd, "solo")
        sync = sync_of(device, sharing)
        poll_and_push(device, sync, "With a long runtime folder")
        poll_and_push(device, sync, "And again")
        assert connections(sshd) == 1, sshd.log()
    finally:
        sharing.close()


def test_with_no_room_for_a_socket_every_call_connects_on_its_own(
    tmp_path: Path, sshd: SshServer, short_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    long_runtime = folder_of_length(short_root, 150)
    # A sharing whose folder cannot work and that finds no other: it offers nothing.
    sharing = SshSharing(long_runtime, 30, bases=[str(long_runtime)])
    device = ssh_device(tmp_path, sshd, "solo")
    sync = sync_of(device, sharing)
    poll_and_push(device, sync, "Without sharing")
    poll_and_push(device, sync, "Still without")
    assert connections(sshd) == sessions(sshd) >= 4  # a connection a call: never a master
    assert not any(path.is_socket() for path in long_runtime.iterdir())
    assert len(sharing_warnings(caplog)) == 1


def test_a_socket_that_cannot_be_made_costs_one_retry_and_a_new_folder(
    tmp_path: Path, sshd: SshServer, sharing: SshSharing, caplog: pytest.LogCaptureFixture
) -> None:
    device = ssh_device(tmp_path, sshd, "solo")
    sync = sync_of(device, sharing)
    poll_and_push(device, sync, "Shared")
    old = sharing.folder
    os.kill(master_pid(sharing), signal.SIGKILL)
    shutil.rmtree(old)  # a cleaner of /tmp took the folder away
    poll_and_push(device, sync, "The folder is gone")
    [warning] = sharing_warnings(caplog)
    assert str(old) in warning
    assert sharing.folder != old and control_path_fits(sharing.folder)
    assert any(path.is_socket() for path in sharing.folder.iterdir()), "shared again"
    before = connections(sshd)
    poll_and_push(device, sync, "Shared again")
    assert connections(sshd) == before


def test_a_master_that_cannot_start_is_given_up_once(
    tmp_path: Path,
    sshd: SshServer,
    sharing: SshSharing,
    short_root: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    device = ssh_device(tmp_path, sshd, "solo")
    # ssh takes the first value it is given: the person's own ControlPath, short enough
    # to connect to but too long for a master's temporary name, wins over ours.
    theirs = folder_of_length(short_root, 100 - 10) / "their-sock"
    own = git(device.repo, "config", "core.sshCommand").strip()
    git(device.repo, "config", "core.sshCommand", f"{own} -o ControlPath={theirs}")
    sync = sync_of(device, sharing)
    for task in ("First", "Second", "Third"):
        poll_and_push(device, sync, task)
    [warning] = sharing_warnings(caplog)
    assert "unix_listener" in warning and "too long" in warning and str(device.repo) in warning
    # The one master that could not start ran nothing; every other call ran once.
    assert connections(sshd) == sessions(sshd) + 1
    assert not any(path.is_socket() for path in sharing.folder.iterdir())
    assert sharing.folder.exists(), "the folder is fine; only that remote is not shared"
