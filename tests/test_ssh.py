"""A remote over ssh, the way most people's are: a real sshd on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.devices import Device, git, handoff_text, make_device, make_remote, wait_until
from tests.support.sshd import (
    SshServer,
    make_key,
    running_agent,
    running_sshd,
    ssh_command,
)


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshServer]:
    with running_sshd(tmp_path / "sshd") as server:
        yield server


@pytest.fixture
def ssh_device(tmp_path: Path, sshd: SshServer) -> Device:
    remote = make_remote(tmp_path)
    device = make_device(tmp_path, remote, "desktop", pull_interval=0.5, network_timeout=10.0)
    git(device.repo, "remote", "set-url", "origin", sshd.url(remote))
    return device


def remote_files(device: Device) -> list[str]:
    output = git(device.remote, "ls-tree", "-r", "--name-only", "refs/heads/convosync", check=False)
    return [line for line in output.splitlines() if line]


def test_a_working_key_syncs(tmp_path: Path, sshd: SshServer, ssh_device: Device) -> None:
    key = make_key(tmp_path / "id_good")
    sshd.authorize(key.with_suffix(".pub"))
    known = sshd.known_hosts(tmp_path / "known_hosts")
    git(ssh_device.repo, "config", "core.sshCommand", ssh_command(key, known))
    ssh_device.write_draft(handoff_text("Over ssh"))
    result = ssh_device.cli("sync", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr + sshd.log()
    assert len(remote_files(ssh_device)) == 1


def _broken(kind: str, tmp_path: Path, sshd: SshServer) -> tuple[str, str, dict[str, str]]:
    """core.sshCommand for a broken setup, the error expected, and the daemon's env."""
    good = make_key(tmp_path / "id_good")
    sshd.authorize(good.with_suffix(".pub"))
    known = sshd.known_hosts(tmp_path / "known_hosts")
    if kind == "passphrase":
        locked = make_key(tmp_path / "id_locked", passphrase="correct horse")
        sshd.authorize(locked.with_suffix(".pub"))
        return ssh_command(locked, known), "Permission denied (publickey)", {}
    if kind == "unknown-host":
        empty = tmp_path / "empty_known_hosts"
        empty.touch()
        return ssh_command(good, empty), "Host key verification failed", {}
    # "no agent": the key lives only in an agent, and the daemon has none.
    return ssh_command(None, known, agent=True), "Permission denied (publickey)", {}


@pytest.mark.parametrize("kind", ["passphrase", "unknown-host", "no-agent"])
def test_a_broken_ssh_setup_fails_at_once_and_resumes_when_fixed(
    tmp_path: Path, sshd: SshServer, ssh_device: Device, kind: str
) -> None:
    command, expected, env = _broken(kind, tmp_path, sshd)
    git(ssh_device.repo, "config", "core.sshCommand", command)
    daemon = ssh_device.start(env)
    try:
        ssh_device.write_draft(handoff_text(f"Waiting on {kind}"))
        failed_after = wait_until(
            lambda: (
                expected
                in ((ssh_device.status()["repos"][0]["last_error"] or {}).get("message") or "")
            ),
            15,
            f"status to show {expected!r}",
        )
        assert failed_after < 10, "an ssh problem must fail at once, not hang"
        report = json.loads(ssh_device.cli("doctor", "--json", env=env).stdout)
        [remote_check] = [c for c in report["checks"] if c["name"].startswith("remote origin")]
        assert remote_check["ok"] is False and expected in remote_check["detail"]
        wait_until(lambda: not ssh_device.draft.exists(), 10, "the draft to be taken in")
        wait_until(
            lambda: ssh_device.status()["repos"][0]["pending"] == 1, 10, "one handoff queued"
        )
        assert not remote_files(ssh_device)
        good = tmp_path / "id_good"
        git(
            ssh_device.repo,
            "config",
            "core.sshCommand",
            ssh_command(good, sshd.known_hosts(tmp_path / "fixed_known_hosts")),
        )
        wait_until(lambda: len(remote_files(ssh_device)) == 1, 30, "the push once the key is fixed")
        wait_until(
            lambda: ssh_device.status()["repos"][0]["pending"] == 0, 10, "nothing left waiting"
        )
    finally:
        assert daemon.stop() == 0
    assert "Enter passphrase" not in daemon.log()


def test_the_key_in_an_agent_works(tmp_path: Path, sshd: SshServer, ssh_device: Device) -> None:
    key = make_key(tmp_path / "id_agent")
    sshd.authorize(key.with_suffix(".pub"))
    known = sshd.known_hosts(tmp_path / "known_hosts")
    with running_agent() as agent:
        subprocess.run(
            ["ssh-add", str(key)],
            env={"SSH_AUTH_SOCK": agent, "PATH": "/usr/bin:/bin"},
            check=True,
            capture_output=True,
            timeout=10,
        )
        git(ssh_device.repo, "config", "core.sshCommand", ssh_command(None, known, agent=True))
        ssh_device.write_draft(handoff_text("Through the agent"))
        result = ssh_device.cli("sync", env={"SSH_AUTH_SOCK": agent})
        assert result.returncode == 0, result.stdout + result.stderr
    assert len(remote_files(ssh_device)) == 1
