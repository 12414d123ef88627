"""A real sshd on 127.0.0.1 for tests, with keys made on the spot.

The server is a child process (waited for, never left to PID 1), listens on loopback
only, accepts public keys listed in its own authorized_keys file and nothing else. ssh
clients in tests are always told ``-F /dev/null`` and their own known-hosts file: ssh
takes the home folder from the password database, not from ``$HOME``, so without that
it would read the real user's configuration and keys.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.dbus_session import in_ci, need_tool


def need_sshd() -> str:
    """The sshd binary; skip (or fail under CI) with what to install."""
    found = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
    if found is None or shutil.which("ssh-keygen") is None:
        message = "sshd not found: install Debian's openssh-server (and openssh-client)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return found


def make_key(path: Path, passphrase: str = "") -> Path:
    """An ed25519 key pair at ``path`` / ``path.pub``."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "test", "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class SshServer:
    """A running sshd and what a client needs to reach it."""

    port: int
    user: str
    folder: Path
    host_key_line: str
    authorized: Path
    process: subprocess.Popen[bytes]

    def url(self, path: Path) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{path}"

    def authorize(self, public_key: Path) -> None:
        with self.authorized.open("a", encoding="utf-8") as handle:
            handle.write(public_key.read_text(encoding="utf-8"))

    def known_hosts(self, path: Path) -> Path:
        """Write a known-hosts file that trusts this server."""
        path.write_text(self.host_key_line + "\n", encoding="utf-8")
        return path

    def log(self) -> str:
        return (self.folder / "sshd.log").read_text(encoding="utf-8", errors="replace")


def ssh_command(key: Path | None, known_hosts: Path, *, agent: bool = False) -> str:
    """An ssh command line for ``core.sshCommand`` that ignores the real user's setup."""
    parts = ["ssh", "-F", "/dev/null", "-o", f"UserKnownHostsFile={known_hosts}"]
    parts += ["-o", "GlobalKnownHostsFile=/dev/null"]
    if key is not None:
        # Only this key: never the real user's ~/.ssh/id_* (ssh ignores $HOME).
        parts += ["-o", "IdentitiesOnly=yes", "-i", str(key)]
    if not agent:
        parts += ["-o", "IdentityAgent=none"]
    return " ".join(parts)


@contextmanager
def running_sshd(folder: Path) -> Iterator[SshServer]:
    """Start sshd on a free loopback port; stop and reap it afterwards."""
    binary = need_sshd()
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        # sshd insists on its privilege-separation folder when started as root.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    host_key = make_key(folder / "host_ed25519")
    authorized = folder / "authorized_keys"
    authorized.touch()
    port = _free_port()
    config = folder / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"PidFile {folder / 'sshd.pid'}",
                f"AuthorizedKeysFile {authorized}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "PermitRootLogin prohibit-password",
                "LogLevel VERBOSE",
                "",
            ]
        ),
        encoding="utf-8",
    )
    log = (folder / "sshd.log").open("wb")
    process = subprocess.Popen(
        [binary, "-D", "-e", "-f", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    public = (folder / "host_ed25519.pub").read_text(encoding="utf-8").split()
    server = SshServer(
        port=port,
        user=getpass.getuser(),
        folder=folder,
        host_key_line=f"[127.0.0.1]:{port} {public[0]} {public[1]}",
        authorized=authorized,
        process=process,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                raise AssertionError(f"sshd exited ({process.returncode}):\n{server.log()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"sshd did not listen within 10 s:\n{server.log()}"
                    ) from None
                time.sleep(0.02)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@contextmanager
def running_agent() -> Iterator[str]:
    """An ssh-agent of our own, a child process on a fresh short socket path (unix
    socket paths are limited to about 107 bytes); yields its ``SSH_AUTH_SOCK``."""
    need_tool("ssh-agent", "Debian's openssh-client")
    folder = Path(tempfile.mkdtemp(prefix="cvs-agent-", dir="/tmp"))
    socket_path = folder / "agent.sock"
    process = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(socket_path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not socket_path.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("ssh-agent did not start")
            time.sleep(0.02)
        yield str(socket_path)
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)
