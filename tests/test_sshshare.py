"""Shared ssh connections: one per server and ssh command, against a real sshd.

sshd's own log counts the connections ("Accepted publickey" once per connection, not
per session), so a test can tell one shared connection from one per poll.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from convosyncd import config as configs
from convosyncd.notify import Notifier
from convosyncd.sshshare import MAX_SOCKET_PATH, SshSharing, ssh_authority
from convosyncd.sync import RepoSync
from tests.support.devices import Device, git, make_device, make_remote, wait_until
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
    assert len(path) <= MAX_SOCKET_PATH
    assert (sharing.folder.stat().st_mode & 0o777) == 0o700


def test_the_daemon_shares_connections_and_closes_them_when_it_stops(
    tmp_path: Path, sshd: SshServer
) -> None:
    before = masters()
    device = ssh_device(tmp_path, sshd, "daemon")
    daemon = device.start()
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
