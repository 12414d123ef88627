"""The one way convosyncd runs git: a time limit on every call, never a prompt.

Every git process runs in its own session (so a timeout can kill git *and* the ssh it
started), with standard input closed, terminal and GUI prompts disabled, ssh in batch
mode, the person's hooks and fsmonitor bypassed (the sync branch is the daemon's own
business) and automatic gc off (a daemon must not spend minutes packing someone's repo on
a whim; it packs only its own loose objects, see :mod:`convosyncd.housekeeping`).
Credentials in remote URLs are masked in every message this module produces.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import selectors
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from convosyncd.errors import GitError, GitTimeout
from convosyncd.masking import mask_credentials as mask_credentials  # re-exported
from convosyncd.sshshare import Shared, SshSharing, sharing_failure

log = logging.getLogger(__name__)

LOCAL_TIMEOUT = 30.0
"""Seconds a local plumbing command may take (object writes, ref updates, listings)."""

# Variables a hook or a wrapper may have leaked into our environment; any of them would
# point git at another repository than the one we name with ``-C``.
_LEAKY_GIT_VARS = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
    "GIT_QUARANTINE_PATH",
    "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL",
    "GIT_AUTHOR_DATE",
    "GIT_COMMITTER_NAME",
    "GIT_COMMITTER_EMAIL",
    "GIT_COMMITTER_DATE",
    "GIT_EDITOR",
    "GIT_SEQUENCE_EDITOR",
    "GIT_PAGER",
    "SSH_ASKPASS",
)

_GIT_OPTIONS = (
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "gc.auto=0",
    "-c",
    "maintenance.auto=false",
    # A repo's fsmonitor is a program of its own choosing (a hook script, or git's
    # daemon): none of it may run inside convosyncd, which never needs to scan the work tree.
    "-c",
    "core.fsmonitor=false",
    "-c",
    "fetch.recurseSubmodules=false",
    "-c",
    "push.recurseSubmodules=no",
    "-c",
    "credential.interactive=never",
    # Every object a fetch brings is checked before it is stored: a remote that serves
    # malformed objects is refused (invariant 7: nothing from a remote is trusted).
    "-c",
    "fetch.fsckObjects=true",
)


def ssh_command(configured: str | None, connect_timeout: float) -> str:
    """The ssh command git should use: the person's own, forced into batch mode."""
    base = configured or "ssh"
    seconds = max(1, round(connect_timeout))
    return (
        f"{base} -o BatchMode=yes -o ConnectTimeout={seconds}"
        " -o ServerAliveInterval=5 -o ServerAliveCountMax=2"
    )


def git_environment(
    base: Mapping[str, str] | None = None, *, ssh: str | None = None
) -> dict[str, str]:
    """An environment in which git can never ask anybody anything."""
    env = dict(os.environ if base is None else base)
    for name in _LEAKY_GIT_VARS:
        env.pop(name, None)
    env["GIT_TERMINAL_PROMPT"] = "0"
    # Set but empty: git skips core.askPass and SSH_ASKPASS and, with terminal prompts
    # off, fails at once instead of opening a password dialog nobody will see.
    env["GIT_ASKPASS"] = ""
    env["SSH_ASKPASS_REQUIRE"] = "never"
    env["GCM_INTERACTIVE"] = "never"
    env["LC_ALL"] = "C"
    env.pop("LANGUAGE", None)
    if ssh is not None and "GIT_SSH" not in env:
        env["GIT_SSH_COMMAND"] = ssh
    return env


@dataclass(frozen=True)
class GitResult:
    """What a finished git command produced."""

    args: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: str

    @property
    def text(self) -> str:
        """Standard output as text, without the final newline."""
        return self.stdout.decode("utf-8", "surrogateescape").rstrip("\n")


def describe_command(args: Sequence[str]) -> str:
    """``git push origin ...`` as a person would type it, credentials masked."""
    return mask_credentials(shlex.join(["git", *args]))


_BOILERPLATE = (
    "please make sure you have the correct access rights",
    "and the repository exists.",
)


def error_summary(stderr: str, count: int = 3) -> str:
    """git's last few meaningful error lines on one line (its generic advice dropped)."""
    lines = [
        line.strip()
        for line in stderr.strip().splitlines()
        if line.strip() and line.strip().lower() not in _BOILERPLATE
    ]
    return " / ".join(lines[-count:])


def run_git(
    args: Sequence[str],
    *,
    cwd: Path,
    timeout: float,
    input: bytes | None = None,
    check: bool = True,
    env: Mapping[str, str] | None = None,
) -> GitResult:
    """Run ``git ARGS`` in ``cwd``; raise :class:`GitError` on failure if ``check``.

    A command that outlives ``timeout`` seconds is killed with everything it started
    and raises :class:`GitTimeout`.
    """
    argv = ("git", *_GIT_OPTIONS, *args)
    shown = describe_command(args)
    log.debug("running %s in %s", shown, cwd)
    try:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else git_environment(),
            start_new_session=True,
        )
    except FileNotFoundError as error:
        if not cwd.is_dir():
            raise GitError(f"the folder {cwd} does not exist any more") from error
        raise GitError(
            "git was not found on PATH: install git (https://git-scm.com) and try again"
        ) from error
    except NotADirectoryError as error:
        raise GitError(f"{cwd} is not a folder") from error
    try:
        stdout, stderr_bytes = _exchange(process, input, timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        raise GitTimeout(
            f"{shown} did not finish within {timeout:g} s in {cwd} and was stopped; "
            "check that the remote answers (convosyncd doctor)",
        ) from None
    except BaseException:
        _kill_group(process)
        raise
    stderr = mask_credentials(stderr_bytes.decode("utf-8", "replace"))
    result = GitResult(tuple(args), process.returncode, stdout, stderr)
    if check and process.returncode != 0:
        detail = error_summary(stderr) or "no message"
        raise GitError(
            f"{shown} failed in {cwd} (exit {process.returncode}): {detail}",
            returncode=process.returncode,
            stderr=stderr,
        )
    return result


def _exchange(
    process: subprocess.Popen[bytes], data: bytes | None, timeout: float
) -> tuple[bytes, bytes]:
    """Feed ``data`` to ``process``, collect its output and wait for its exit.

    What ``Popen.communicate(data, timeout)`` does, but for the exit: communicate polls
    for it with sleeps (half a millisecond, then one, two...), which added about a
    millisecond to every git call. Here the wait is on a pidfd where Linux has one.
    Raises ``subprocess.TimeoutExpired`` once ``timeout`` seconds have passed.
    """
    deadline = time.monotonic() + timeout
    assert process.stdout is not None and process.stderr is not None
    out, err = process.stdout.fileno(), process.stderr.fileno()
    streams: dict[int, IO[bytes]] = {out: process.stdout, err: process.stderr}
    output: dict[int, list[bytes]] = {out: [], err: []}
    view = memoryview(data or b"")
    written = 0
    with selectors.DefaultSelector() as selector:
        stdin = process.stdin
        if stdin is not None:
            if view:
                selector.register(stdin, selectors.EVENT_WRITE)
            else:
                stdin.close()
        for stream in streams.values():
            selector.register(stream, selectors.EVENT_READ)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise subprocess.TimeoutExpired(process.args, timeout)
            for key, _events in selector.select(remaining):
                if stdin is not None and key.fileobj is stdin:
                    try:
                        written += os.write(key.fd, view[written : written + select.PIPE_BUF])
                    except BrokenPipeError:
                        written = len(view)  # git stopped reading; its exit code tells why
                    if written >= len(view):
                        selector.unregister(stdin)
                        stdin.close()
                    continue
                chunk = os.read(key.fd, 65536)
                if chunk:
                    output[key.fd].append(chunk)
                else:
                    selector.unregister(key.fileobj)
                    streams[key.fd].close()
    _wait_for_exit(process, deadline, timeout)
    return b"".join(output[out]), b"".join(output[err])


def _wait_for_exit(process: subprocess.Popen[bytes], deadline: float, timeout: float) -> None:
    if process.returncode is None:
        try:
            # Our own child, not reaped yet: the pid cannot have been reused.
            pidfd = os.pidfd_open(process.pid)
        except (AttributeError, OSError):
            pidfd = None  # not Linux, or too old a kernel: Popen.wait's polling it is
        if pidfd is not None:
            try:
                poller = select.poll()
                poller.register(pidfd, select.POLLIN)
                ready = poller.poll(max(0.0, deadline - time.monotonic()) * 1000)
            finally:
                os.close(pidfd)
            if not ready:
                raise subprocess.TimeoutExpired(process.args, timeout)
    process.wait(timeout=max(0.0, deadline - time.monotonic()))


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    # Our ends of the pipes are closed rather than drained: a grandchild that left the
    # group may hold the other ends open for as long as it likes.
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        log.warning("git process %d did not end after being killed", process.pid)


class Git:
    """git bound to one work tree, with its time limits and its ssh command.

    With ``sharing`` (the daemon's), network commands to ``remote`` reuse one ssh
    connection per server (:mod:`convosyncd.sshshare`). Sharing never fails a command:
    when ssh says the shared connection itself could not be made, the command runs
    again with a connection of its own.
    """

    def __init__(
        self,
        worktree: Path,
        *,
        network_timeout: float,
        sharing: SshSharing | None = None,
        remote: str | None = None,
    ) -> None:
        self.worktree = worktree
        self.network_timeout = network_timeout
        self.sharing = sharing
        self.remote = remote
        self._env: dict[str, str] | None = None
        self._env_stamp: tuple[FileIdentity | None, ...] | None = None
        self._config_paths: tuple[str, ...] | None = None
        self._shared: Shared | None = None
        """How this remote's ssh calls share a connection (None: they do not)."""
        self._unshared_env: dict[str, str] | None = None
        """The environment without sharing, for a command whose sharing failed."""

    def config_stamp(self) -> tuple[FileIdentity | None, ...]:
        """The identities of every git config file that applies here: any edit (a new
        remote URL, an ``insteadOf``, another ``core.sshCommand``) changes it."""
        if self._config_paths is None:
            common = Path(self.out("rev-parse", "--git-common-dir"))
            self._config_paths = config_files((self.worktree / common).resolve())
        return tuple(file_identity(path) for path in self._config_paths)

    def _environment(self) -> dict[str, str]:
        stamp = self.config_stamp()
        if self._env is None or stamp != self._env_stamp:
            configured = self.run("config", "--get", "core.sshCommand", check=False).text
            base_ssh = os.environ.get("GIT_SSH_COMMAND") or configured or None
            command = ssh_command(base_ssh, self.network_timeout)
            self._shared = None
            if self.sharing is not None and self.remote is not None:
                self._shared = self.sharing.share(command, self._remote_urls(self.remote))
            self._unshared_env = git_environment(ssh=command)
            if self._shared is not None:
                self._env = git_environment(ssh=command + self._shared.options)
            else:
                self._env = self._unshared_env
            self._env_stamp = stamp
        return self._env

    def _remote_urls(self, remote: str) -> list[str]:
        """Every fetch and push URL of ``remote`` (``insteadOf`` applied); [] if unknown."""
        urls: list[str] = []
        for push in ((), ("--push",)):
            result = self.run("remote", "get-url", *push, "--all", remote, check=False)
            if result.returncode != 0:
                return []
            urls += result.text.splitlines()
        return urls

    def run(
        self,
        *args: str,
        input: bytes | None = None,
        check: bool = True,
        network: bool = False,
        extra_env: Mapping[str, str] | None = None,
    ) -> GitResult:
        """Run one git command here; ``network`` commands get the network time limit."""
        shared: Shared | None = None
        unshared_env: dict[str, str] = {}
        if network or extra_env:
            env = dict(self._environment())
            env.update(extra_env or {})
            if network and self._shared is not None and self._unshared_env is not None:
                shared = self._shared
                unshared_env = {**self._unshared_env, **(extra_env or {})}
        else:
            env = git_environment()
        try:
            result = run_git(
                args,
                cwd=self.worktree,
                timeout=self.network_timeout if network else LOCAL_TIMEOUT,
                input=input,
                check=check,
                env=env,
            )
        except GitError as error:
            if network:
                self.forget_environment()
                if isinstance(error, GitTimeout) and self.sharing and shared:
                    # The shared connection may be what hung: the next ssh starts afresh.
                    self.sharing.forget(shared.prefix)
                elif shared is not None and (reason := sharing_failure(error.stderr)):
                    return self._run_unshared(args, shared, reason, unshared_env, input, check)
            raise
        if network and result.returncode != 0:
            self.forget_environment()
            if shared is not None and (reason := sharing_failure(result.stderr)):
                return self._run_unshared(args, shared, reason, unshared_env, input, check)
        return result

    def _run_unshared(
        self,
        args: Sequence[str],
        shared: Shared,
        reason: str,
        env: Mapping[str, str],
        input: bytes | None,
        check: bool,
    ) -> GitResult:
        """Run again, with an ssh connection of its own, a command whose shared
        connection could not be made. ssh stops before the remote command starts when
        that happens, so nothing ran twice on the server."""
        assert self.sharing is not None
        self.sharing.failed(shared, reason, f"remote {self.remote} of {self.worktree}")
        log.debug("running %s again without a shared ssh connection", describe_command(args))
        return run_git(
            args,
            cwd=self.worktree,
            timeout=self.network_timeout,
            input=input,
            check=check,
            env=env,
        )

    def forget_environment(self) -> None:
        """Read ``core.sshCommand`` again next time (the person may have fixed it)."""
        self._env = None

    def out(self, *args: str) -> str:
        """Standard output of a command that must succeed."""
        return self.run(*args).text


FileIdentity = tuple[int, int, int, int]


def identity_of(status: os.stat_result) -> FileIdentity:
    """Device, inode, size and modification time: git replaces a config or ref file to
    change it, so a changed file is a new identity."""
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


def file_identity(path: str) -> FileIdentity | None:
    """The :func:`identity_of` the file at ``path``; None if it is not there."""
    try:
        return identity_of(os.stat(path))
    except OSError:
        return None


def config_files(common_dir: Path) -> tuple[str, ...]:
    """The git config files that apply to the repository whose common folder is given."""
    home = Path(os.environ.get("HOME", "~")).expanduser()
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    paths = [common_dir / "config", common_dir / "config.worktree"]
    global_file = os.environ.get("GIT_CONFIG_GLOBAL")
    if global_file:
        paths.append(Path(global_file))
    else:
        paths += [home / ".gitconfig", xdg / "git" / "config"]
    if not os.environ.get("GIT_CONFIG_NOSYSTEM"):
        paths.append(Path(os.environ.get("GIT_CONFIG_SYSTEM") or "/etc/gitconfig"))
    return tuple(str(path) for path in paths)
