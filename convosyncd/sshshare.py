"""One ssh connection per server for the daemon's polls, not one per poll.

git starts a new ssh for every ``ls-remote``, and a new ssh connection costs its key
exchange: about 130 ms of CPU with OpenSSH 9's default post-quantum exchange, so a
daemon polling 100 repos a minute over ssh would keep a quarter of a core busy and
hammer the server with handshakes. OpenSSH's connection sharing (``ControlMaster``)
lets the first ssh to a server stay in the background and carry the next sessions.

Connections are shared only between repos whose ssh command, remote address as written
(``user@host:port``, so host aliases with keys of their own stay apart) and the host
ssh actually reaches are all the same; a remote whose push URL goes elsewhere is not
shared at all. The sockets live in a private folder made for this daemon (0700, ours,
in a parent nobody else can rename things in). A shared connection lives ``persist``
seconds after its last use, keeps ssh's keep-alives (a dead link is noticed within ten
seconds), and is closed when the daemon stops. Only ``convosyncd run`` shares
connections; one-off commands leave nothing behind.

Sharing is an optimisation and must never make a remote unreachable. A unix socket's
path has a hard limit (``sun_path``: 108 bytes on Linux, 104 on macOS and the BSDs,
the closing NUL included), and ssh's master first binds its ``ControlPath`` plus a dot
and 16 random characters, then renames it into place: a path that leaves no room for
those 17 makes *every* ssh fail (``unix_listener: path "..." too long for Unix domain
socket``). So the folder is chosen to fit that arithmetic, no sharing is offered where
nothing fits, and :func:`sharing_failure` recognises ssh's own lines when a master
cannot start anyway (the folder was cleaned away, say): the caller then runs the
command again without sharing (:class:`convosyncd.gitcmd.Git` does).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SUN_PATH_BYTES = {"linux": 108, "darwin": 104}
"""``sizeof(sockaddr_un.sun_path)``: a socket path's bytes plus its closing NUL."""
_OTHER_SUN_PATH_BYTES = 104  # the BSDs, like macOS; the smaller limit where unknown

SSH_TEMPORARY_SUFFIX = 17
"""What ssh's master adds to ``ControlPath`` for the name it binds first: ``.`` and 16
random characters (OpenSSH's ``muxserver_listen``)."""

HOST_HASH_LENGTH = 40
"""ssh's ``%C``: a SHA-1 in hex of the connection's local host, host, port and user."""

_NAME_LENGTH = 12
"""Hex digits of the hash that starts each socket name (then ``-`` and ``%C``)."""
_SOCKET_NAME_LENGTH = _NAME_LENGTH + 1 + HOST_HASH_LENGTH
_FOLDER_PREFIX = "cvs-"
_FOLDER_NAME_LENGTH = len(_FOLDER_PREFIX) + 8  # mkdtemp adds 8 random characters
_PLAIN = re.compile(r"[A-Za-z0-9/._-]+")
_CLOSE_TIMEOUT = 5.0
_SCP_LIKE = re.compile(r"^(?P<authority>[^/:]+):")
_SSH_URL = re.compile(r"^(?:ssh|git\+ssh|ssh\+git)://(?P<authority>[^/]+)", re.IGNORECASE)

# The lines OpenSSH prints when the sharing itself, not the connection, failed: the
# master's socket could not be made (too long a path, a folder that is gone) or the
# control path is longer than a socket address. ssh exits 255 after them, before the
# remote command ever starts, so running the command again unshared is safe. Some
# versions put the function's name first; what the server prints arrives as "remote: "
# lines and must not switch anything off.
_SHARING_FAILURE = re.compile(
    r"^(?!remote:)(?:[a-z_]+: )?"
    r"(?P<line>unix_listener: .*|ControlPath too long .*|link mux listener .*)$",
    re.MULTILINE,
)


def sun_path_bytes(platform: str = sys.platform) -> int:
    """The socket path limit on ``platform`` (a ``sys.platform`` value), NUL included."""
    for name, limit in SUN_PATH_BYTES.items():
        if platform.startswith(name):
            return limit
    return _OTHER_SUN_PATH_BYTES


def control_path_length(folder: str | Path) -> int:
    """Bytes of the ``ControlPath`` ssh expands for one of our sockets in ``folder``."""
    return len(os.fsencode(str(folder))) + 1 + _SOCKET_NAME_LENGTH


def control_path_fits(folder: str | Path, platform: str = sys.platform) -> bool:
    """Whether ssh can start a master for a socket in ``folder``: its temporary name,
    the longest path it binds, needs room for the closing NUL too."""
    return control_path_length(folder) + SSH_TEMPORARY_SUFFIX < sun_path_bytes(platform)


def longest_folder(platform: str = sys.platform) -> int:
    """The longest folder path, in bytes, whose sockets :func:`control_path_fits`."""
    return sun_path_bytes(platform) - 1 - SSH_TEMPORARY_SUFFIX - 1 - _SOCKET_NAME_LENGTH


def sharing_failure(stderr: str) -> str | None:
    """ssh's own line saying that a connection could not be *shared*, or None."""
    match = _SHARING_FAILURE.search(stderr)
    return match["line"].strip() if match else None


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


def default_bases() -> list[str]:
    """Where to look for room: the user's runtime folder (private, cleaned at logout),
    then ``/tmp`` (short everywhere; macOS's own ``$TMPDIR`` is about 50 characters),
    then ``$TMPDIR``."""
    found = [os.environ.get("XDG_RUNTIME_DIR"), "/tmp", os.environ.get("TMPDIR")]  # noqa: S108 - a private mkdtemp folder
    return list(dict.fromkeys(base.rstrip("/") or "/" for base in found if base))


def private_folder(bases: Sequence[str], platform: str = sys.platform) -> Path | None:
    """A new folder for control sockets (0700, ours, a random name: never one that
    already existed) in the first of ``bases`` where the sockets' paths fit; None if
    they fit nowhere."""
    for base in bases:
        problem = _base_problem(base, platform)
        if problem is not None:
            log.debug("no ssh control sockets in %s: %s", base, problem)
            continue
        try:
            folder = Path(tempfile.mkdtemp(prefix=_FOLDER_PREFIX, dir=base))
        except OSError as error:
            log.debug("no ssh control sockets in %s: %s", base, error)
            continue
        with contextlib.suppress(OSError):
            os.chmod(folder, 0o700)  # mkdtemp's 0700 went through the umask
        if _fits(folder, platform) and is_private(folder):
            return folder
        with contextlib.suppress(OSError):
            folder.rmdir()
    return None


def _base_problem(base: str, platform: str) -> str | None:
    """Why sockets cannot go in a folder made in ``base``, or None."""
    if not os.path.isabs(base):
        return "not an absolute path"
    # The socket path goes into GIT_SSH_COMMAND, which a shell reads: plain characters.
    if not _PLAIN.fullmatch(base):
        return "a character a shell would read specially"
    room = longest_folder(platform) - 1 - _FOLDER_NAME_LENGTH
    if len(os.fsencode(base)) > room:
        return f"too long ({len(os.fsencode(base))} bytes; at most {room} leave room for a socket)"
    # Whoever can rename entries in a folder on the way could swap ours for theirs, and
    # ssh would hand a session to their socket.
    current = Path(base)
    for folder in [current, *current.parents]:
        try:
            status = os.stat(folder)
        except OSError as error:
            return f"{folder}: {error.strerror}"
        if not stat.S_ISDIR(status.st_mode):
            return f"{folder} is not a folder"
        if status.st_uid not in (os.geteuid(), 0):
            return f"{folder} belongs to another user (uid {status.st_uid})"
        if status.st_mode & 0o022 and not status.st_mode & stat.S_ISVTX:
            return f"{folder} is writable by others"
    return None


def _fits(folder: Path, platform: str) -> bool:
    """Sockets in ``folder`` fit, and its path is safe in a shell's command line."""
    return control_path_fits(folder, platform) and _PLAIN.fullmatch(str(folder)) is not None


def is_private(folder: Path) -> bool:
    """``folder`` is a real folder (not a link), ours, and nobody else's to enter."""
    try:
        status = folder.lstat()
    except OSError:
        return False
    return (
        stat.S_ISDIR(status.st_mode)
        and status.st_uid == os.geteuid()
        and stat.S_IMODE(status.st_mode) == 0o700
    )


@dataclass(frozen=True)
class Shared:
    """How the ssh calls to one remote share a connection."""

    folder: Path
    prefix: str
    """The start of the socket names (a hash of the ssh command and address)."""
    options: str
    """What to add to the ssh command."""


class SshSharing:
    """The daemon's shared ssh connections: a private folder of control sockets.

    Safe to use from several threads: the repos' syncs share one instance.
    """

    def __init__(
        self,
        folder: Path,
        persist: int,
        *,
        platform: str = sys.platform,
        bases: Sequence[str] | None = None,
    ) -> None:
        self.folder = folder
        self.persist = persist
        self.platform = platform
        self._bases = list(bases) if bases is not None else None
        self._lock = threading.Lock()
        self._unshared: set[str] = set()
        self._off = False

    @classmethod
    def create(
        cls, persist: int, *, platform: str = sys.platform, bases: Sequence[str] | None = None
    ) -> SshSharing | None:
        """A fresh private folder for the sockets, in the first of ``bases`` (by
        default :func:`default_bases`) where they fit, or None where none can be made
        (then every ssh makes its own connection, as without sharing)."""
        tried = list(bases) if bases is not None else default_bases()
        folder = private_folder(tried, platform)
        if folder is None:
            log.warning(
                "ssh connections are not shared: no private folder in %s leaves room for "
                "a control socket (a folder of at most %d bytes on %s); every ssh call "
                "makes its own connection",
                ", ".join(tried) or "no folder",
                longest_folder(platform),
                platform,
            )
            return None
        return cls(folder, persist, platform=platform, bases=tried)

    def share(self, ssh_command: str, urls: Iterable[str]) -> Shared | None:
        """How ``ssh_command`` shares one connection for a remote's ``urls`` (fetch and
        push), or None: they are not all ssh to one address, their sharing failed
        before, or no socket path can work.

        The socket's name joins a hash of the ssh command and the address as written
        (so host aliases with keys of their own stay apart) with ssh's own ``%C``, a hash
        of the host, port and user it actually connects to: a stale setting can never
        send a session through another server's connection.
        """
        prefix = self.prefix(ssh_command, urls)
        if prefix is None:
            return None
        with self._lock:
            folder = self._usable_folder()
            if folder is None or prefix in self._unshared:
                return None
        options = (
            f" -o ControlMaster=auto -o ControlPath={folder / prefix}%C"
            f" -o ControlPersist={max(1, self.persist)}"
        )
        return Shared(folder, prefix, options)

    def options(self, ssh_command: str, urls: Iterable[str]) -> str:
        """The ssh options of :meth:`share`, or '' where nothing is shared."""
        shared = self.share(ssh_command, urls)
        return shared.options if shared is not None else ""

    def prefix(self, ssh_command: str, urls: Iterable[str]) -> str | None:
        """The start of the socket names for ``urls`` reached by ``ssh_command``."""
        authorities = {ssh_authority(url) for url in urls}
        if len(authorities) != 1 or None in authorities:
            return None
        [authority] = authorities
        digest = hashlib.sha256(f"{ssh_command}\0{authority}".encode()).hexdigest()
        return f"{digest[:_NAME_LENGTH]}-"

    def failed(self, shared: Shared, reason: str, where: str) -> None:
        """ssh could not share the connection ``shared`` (``reason``: its own line) for
        ``where``; the caller runs its command again unshared.

        A folder that is gone or no longer private is replaced at the next
        :meth:`share`. Otherwise these connections are not shared from now on, so the
        failure is paid for (and logged) once, not at every call.
        """
        with self._lock:
            if shared.folder != self.folder or self._off:
                return  # another repo's failure replaced the folder already
            if self._usable_folder() != shared.folder:
                return  # replaced now (and logged)
            if shared.prefix not in self._unshared:
                self._unshared.add(shared.prefix)
                log.warning(
                    "ssh could not share a connection for %s (%s); its ssh calls make "
                    "their own connections from now on",
                    where,
                    reason,
                )

    def _usable_folder(self) -> Path | None:
        """The socket folder, replaced if it went away (a cleaner of /tmp, say) or is
        not private any more; None once no folder can be made. Called with the lock."""
        if self._off:
            return None
        if _fits(self.folder, self.platform) and is_private(self.folder):
            return self.folder
        bases = self._bases if self._bases is not None else default_bases()
        replacement = private_folder(bases, self.platform)
        if replacement is None:
            self._off = True
            log.warning(
                "ssh connections are not shared any more: the folder %s for their control "
                "sockets cannot be used and no other can be made in %s",
                self.folder,
                ", ".join(bases) or "no folder",
            )
            return None
        log.warning(
            "the folder %s for shared ssh connections cannot be used (gone, or not private); "
            "using %s",
            self.folder,
            replacement,
        )
        self.folder = replacement
        return replacement

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
        if is_private(self.folder):
            shutil.rmtree(self.folder, ignore_errors=True)

    def _sockets(self) -> list[Path]:
        try:
            return [path for path in self.folder.iterdir() if path.is_socket()]
        except OSError:
            return []
