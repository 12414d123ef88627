"""One ssh connection per server for the daemon's polls, not one per poll.

git starts a new ssh for every ``ls-remote``, and a new ssh connection costs its key
exchange: about 130 ms of CPU with OpenSSH 9's default post-quantum exchange, so a
daemon polling 100 repos a minute over ssh would keep a quarter of a core busy and
hammer the server with handshakes. OpenSSH's connection sharing (``ControlMaster``)
lets the first ssh to a server stay in the background and carry the next sessions.

Connections are shared only between repos whose ssh command, remote address as written
(``user@host:port``, so host aliases with keys of their own stay apart) and the host
ssh actually reaches are all the same; a remote whose push URL goes elsewhere is not
shared at all. The sockets live in a private folder made for this daemon (0700, a short
path: a unix socket's path is limited to about 100 bytes, and ssh refuses a longer
``ControlPath``). A shared connection lives
``persist`` seconds after its last use, keeps ssh's keep-alives (a dead link is noticed
within ten seconds), and is closed when the daemon stops. Only ``convosyncd run`` shares
connections; one-off commands leave nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

MAX_SOCKET_PATH = 100
"""Bytes a socket path may take (the platforms' limits are 104 and 108, less a margin)."""
_NAME_LENGTH = 12
_PLAIN = re.compile(r"[A-Za-z0-9/._-]+")
_CLOSE_TIMEOUT = 5.0
_SCP_LIKE = re.compile(r"^(?P<authority>[^/:]+):")
_SSH_URL = re.compile(r"^(?:ssh|git\+ssh|ssh\+git)://(?P<authority>[^/]+)", re.IGNORECASE)


def ssh_authority(url: str) -> str | None:
    """``user@host:port`` of an ssh remote URL as written, or None if it is not ssh."""
    match = _SSH_URL.match(url)
    if match:
        return match["authority"]
    if "://" in url:
        return None
    match = _SCP_LIKE.match(url)
    slash = url.find("/")
    if match and (slash == -1 or slash > match.end()):
        return match["authority"]
    return None


class SshSharing:
    """The daemon's shared ssh connections: a private folder of control sockets."""

    def __init__(self, folder: Path, persist: int) -> None:
        self.folder = folder
        self.persist = persist

    @classmethod
    def create(cls, persist: int) -> SshSharing | None:
        """A fresh private folder for the sockets, or None where none short enough can
        be made (then every ssh makes its own connection, as without sharing)."""
        candidates = [os.environ.get("XDG_RUNTIME_DIR"), "/tmp", tempfile.gettempdir()]  # noqa: S108 - a private mkdtemp folder
        for base in dict.fromkeys(candidate for candidate in candidates if candidate):
            try:
                folder = Path(tempfile.mkdtemp(prefix="cvs-", dir=base))
            except OSError:
                continue
            longest = folder / f"{'0' * _NAME_LENGTH}-{'0' * 40}"  # ssh's %C: 40 characters
            # The path goes into GIT_SSH_COMMAND, which a shell reads: plain characters only.
            if len(str(longest)) <= MAX_SOCKET_PATH and _PLAIN.fullmatch(str(folder)):
                return cls(folder, persist)
            with contextlib.suppress(OSError):
                folder.rmdir()
        log.info("no short private folder for ssh control sockets; ssh connections not shared")
        return None

    def options(self, ssh_command: str, urls: Iterable[str]) -> str:
        """The ssh options that share one connection for a remote's ``urls`` (fetch and
        push), or '' if they are not all ssh to one address.

        The socket's name joins a hash of the ssh command and the address as written
        (so host aliases with keys of their own stay apart) with ssh's own ``%C``, a hash
        of the host, port and user it actually connects to: a stale setting can never
        send a session through another server's connection.
        """
        prefix = self.prefix(ssh_command, urls)
        if prefix is None:
            return ""
        return (
            f" -o ControlMaster=auto -o ControlPath={self.folder / prefix}%C"
            f" -o ControlPersist={max(1, self.persist)}"
        )

    def prefix(self, ssh_command: str, urls: Iterable[str]) -> str | None:
        """The start of the socket names for ``urls`` reached by ``ssh_command``."""
        authorities = {ssh_authority(url) for url in urls}
        if len(authorities) != 1 or None in authorities:
            return None
        [authority] = authorities
        digest = hashlib.sha256(f"{ssh_command}\0{authority}".encode()).hexdigest()
        return f"{digest[:_NAME_LENGTH]}-"

    def forget(self, prefix: str) -> None:
        """Let the next ssh for these sockets start afresh: a connection that timed out
        may be stuck (it is left to end by itself; nothing can reach it any more)."""
        for socket in self._sockets():
            if socket.name.startswith(prefix):
                with contextlib.suppress(OSError):
                    socket.unlink()

    def close(self) -> None:
        """Close every shared connection and remove the folder."""
        for socket in self._sockets():
            try:
                # Not git, so not run_git: ssh's own way to end a master, time-limited.
                subprocess.run(
                    ["ssh", "-o", f"ControlPath={socket}", "-O", "exit", "convosyncd"],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=_CLOSE_TIMEOUT,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as error:
                log.warning("could not close the shared ssh connection %s: %s", socket, error)
        shutil.rmtree(self.folder, ignore_errors=True)

    def _sockets(self) -> list[Path]:
        try:
            return [path for path in self.folder.iterdir() if path.is_socket()]
        except OSError:
            return []
