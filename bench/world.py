"""The benchmark's world: a sealed environment, bare remotes, devices and their daemons.

Everything lives in one temporary folder. HOME, the XDG folders and git's global config
point into it, so a run touches nothing of the person's; remotes are bare repositories
on the local disk (file paths, never the network). Devices and daemons come from
:mod:`tests.support.devices`, the same helpers the end-to-end tests use.

Times are read from the file system where it matters: a draft's modification time is
when it was written, a ref file's is when git moved the ref, and ``session-handoff.md``'s
is when the daemon replaced it. Polling for those files only decides how soon the
benchmark notices; the times themselves do not depend on it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from convosyncd import state as states
from convosyncd.handoff import CONVOSYNC_DIR, Provenance, parse_time, render_stored
from convosyncd.layout import HANDOFFS_DIR, handoff_location
from convosyncd.seal import seal_handoff
from tests.support.devices import (
    PERSON_KEY,
    DaemonProcess,
    Device,
    make_device,
    make_remote,
)

BRANCH = "convosync"
REF = f"refs/heads/{BRANCH}"
READY_LINE = "running as device"
POLL = 0.002

_SEALED_PREFIXES = ("GIT_", "XDG_", "CONVOSYNC_")
_SEALED_NAMES = (
    "DBUS_SESSION_BUS_ADDRESS",
    "DBUS_SYSTEM_BUS_ADDRESS",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "NOTIFY_SOCKET",
    "JOURNAL_STREAM",
    "SSH_AUTH_SOCK",
)


class BenchError(RuntimeError):
    """The benchmark could not set something up or saw something it did not expect."""


def seal(root: Path) -> None:
    """Point HOME, XDG and git's config into ``root`` for this process and its children."""
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    runtime = root / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    for name in list(os.environ):
        if name.startswith(_SEALED_PREFIXES) or name in _SEALED_NAMES:
            del os.environ[name]
    os.environ.update(
        {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_STATE_HOME": str(home / ".local" / "state"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_RUNTIME_DIR": str(runtime),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": str(home / ".gitconfig"),
            # Daemons listen to a private system bus where a section starts one, never
            # to the machine's own.
            "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={runtime}/no-system-bus",
            # Compiled modules go here, not into the source tree: the first daemon pays
            # for compiling, as an installation does once, and later starts do not.
            "PYTHONPYCACHEPREFIX": str(root / "pycache"),
        }
    )
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Bench Person\n\temail = bench@example.invalid\n"
        "[init]\n\tdefaultBranch = main\n[gc]\n\tauto = 0\n",
        encoding="utf-8",
    )


def git(cwd: Path, *args: str, input: bytes | None = None, timeout: float | None = 600) -> str:
    """Run git; its output without the final newline; BenchError if it fails.

    ``timeout=None`` for the floor: with a time limit, ``subprocess`` waits for the
    exit by polling with sleeps, a millisecond or so per command that git does not cost.
    """
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise BenchError(
            f"git {' '.join(args)} failed in {cwd}: {result.stderr.decode(errors='replace')}"
        )
    return result.stdout.decode("utf-8", "surrogateescape").rstrip("\n")


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, *, interval: float = POLL
) -> None:
    """Poll ``predicate`` until it holds; BenchError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


# -- refs and files as the file system records them ---------------------------------


@dataclass(frozen=True)
class Stamp:
    """A file's content marker and modification time (seconds since the epoch)."""

    value: str | None
    mtime: float


def ref_stamp(git_dir: Path, ref: str = REF) -> Stamp:
    """The value and modification time of a loose ref (``Stamp(None, 0)`` if absent)."""
    path = git_dir / ref
    try:
        with path.open("rb") as handle:
            value = handle.read().decode().strip()
            mtime = os.fstat(handle.fileno()).st_mtime_ns / 1e9
    except FileNotFoundError:
        return Stamp(None, 0.0)
    return Stamp(value or None, mtime)


def file_mtime(path: Path) -> float:
    return path.stat().st_mtime_ns / 1e9


def wait_for_ref_change(
    git_dir: Path, old: str | None, timeout: float, what: str, ref: str = REF
) -> Stamp:
    """Wait until the loose ref moves away from ``old``; its new value and time."""
    found: list[Stamp] = []

    def moved() -> bool:
        stamp = ref_stamp(git_dir, ref)
        if stamp.value is not None and stamp.value != old:
            found.append(stamp)
            return True
        return False

    wait_for(moved, timeout, what)
    return found[0]


def wait_for_text(path: Path, marker: str, timeout: float, what: str) -> float:
    """Wait until ``path`` holds ``marker``; the time the file was last written."""
    found: list[float] = []
    last = [0]

    def holds() -> bool:
        try:
            status = path.stat()
        except FileNotFoundError:
            return False
        if status.st_mtime_ns == last[0]:
            return False
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return False
        if marker in text:
            found.append(file_mtime(path))
            return True
        last[0] = status.st_mtime_ns
        return False

    wait_for(holds, timeout, what)
    return found[0]


FULL_HANDOFF = """\
### Current Task
{task}

### Progress So Far
- ✅ Routes for login and logout, with the session cookie set to SameSite=Lax
- ✅ Token table migration (expires_at, revoked_at, the device that asked for it)
- ✅ Refresh endpoint returns a new pair and revokes the old refresh token
- ✅ Unit tests for the token service: issue, refresh, revoke, expiry at the boundary
- ⏳ Rotation on reuse: a refresh token used twice revokes the whole family
- ⏳ Rate limit on the refresh endpoint (per user and per address)

### Key Decisions Made
- Access tokens expire after 15 minutes, refresh tokens after 30 days: short enough
  that a leaked access token is of little use, long enough that nobody logs in daily
- Refresh tokens are opaque random strings stored hashed, not JWTs, so they can be
  revoked one by one without a deny list
- Rotation on every refresh, because the mobile client cannot keep a secret anyway
- The family id goes into the token row rather than a separate table (one query)
- Clock skew of up to 30 seconds is tolerated on expiry checks, after the incident
  with the laptops whose clocks drifted during the offsite

### Important Context
- {fact}
- The person prefers small pull requests, one concern each, and squashes on merge
- Staging is shared with the payments team until Friday: no migrations there before
- The mobile release freezes on the 14th; the endpoint must be stable by then
- They would rather keep the old /auth/token route working for one more release
- Tests run with `make test`; the slow suite with `make test-all` (about 9 minutes)
- The OAuth provider's sandbox resets every night at 02:00 UTC: re-register then
- Their favourite pizza is a quattro formaggi, mentioned while planning the offsite

### Next Steps
1. Finish rotation on reuse: detect a second use, revoke the family, log it once
2. Add the rate limit with the existing limiter middleware (see `src/limits.ts`)
3. Write the integration test that logs in, refreshes twice and reuses the old token
4. Document the new endpoints in `docs/api/auth.md` with request and response shapes
5. Ask the mobile team to try the staging build once the migration is in
6. Remove the debug logging of token ids before the pull request

### Files Modified
- `src/auth/routes.ts`: login, logout and refresh routes
- `src/auth/tokens.ts`: the token service (issue, refresh, revoke, families)
- `src/auth/tokens.test.ts`: unit tests for the token service
- `migrations/0042_refresh_tokens.sql`: the token table and its indexes
- `src/limits.ts`: read only so far; the limiter will be reused as it is
- `docs/api/auth.md`: started, only the login section is written

### Open Questions
- Should a revoked family also end the access tokens already issued (15 minutes)?
- Does the admin console need a way to revoke one device's tokens by hand?
- Which address does the rate limit use behind the load balancer: the first
  forwarded one, or the balancer's own?
"""


def full_handoff(task: str, fact: str) -> str:
    """A draft the size the plugin asks for: seven sections, under about 60 lines (4 KB)."""
    return FULL_HANDOFF.format(task=task, fact=fact)


def write_draft(device: Device, marker: str) -> float:
    """Write a realistic draft naming ``marker``; when it was written."""
    device.write_draft(full_handoff(f"Benchmark handoff {marker}", fact=f"marker {marker}"))
    return file_mtime(device.draft)


# -- remotes, devices, daemons --------------------------------------------------------


def copy_remote(template: Path, target: Path) -> Path:
    """A copy of the bare repository ``template`` at ``target``."""
    shutil.copytree(template, target, symlinks=True)
    return target


@dataclass
class Fleet:
    """One device with many registered repos, each a clone of its own bare remote."""

    device: Device
    repos: list[Path]
    remotes: list[Path]

    def state_files(self) -> list[Path]:
        return sorted((self.device.state / "repos").glob("*.json"))

    def poll_times(self) -> list[float]:
        """When each repo was last polled, as far as the files tell.

        A poll that changes a repo's state saves its state file; an idle one is only
        recorded in the daemon's ``polls.json``, written as soon as a round (or a poll
        of its own) ends. So a repo's time is its state file's modification time, or
        that of ``polls.json`` where the time recorded there (whole seconds) is no older.
        """
        polls_path = self.device.state / states.POLLS_NAME
        try:
            written = file_mtime(polls_path)
        except FileNotFoundError:
            written = None
        recorded = states.load_polls(self.device.state)
        times = []
        for repo in self.repos:
            try:
                saved = file_mtime(states.state_file(self.device.state, repo))
            except FileNotFoundError:
                saved = 0.0
            event = recorded.get(str(repo))
            moment = parse_time(event.time) if event is not None else None
            if written is not None and moment is not None and moment.timestamp() + 1 > saved:
                saved = max(saved, written)
            times.append(saved)
        return times

    def polled_since(self, moment: float) -> int:
        """How many repos were polled at or after ``moment``."""
        return sum(1 for polled in self.poll_times() if polled >= moment)

    def first_save_since(self, moment: float) -> float:
        """The earliest poll at or after ``moment``."""
        return min(polled for polled in self.poll_times() if polled >= moment)

    def wait_until_quiet(self, quiet: float, timeout: float) -> None:
        """Wait until no repo has been polled (or its state saved) for ``quiet`` seconds."""

        def still() -> bool:
            latest = max(self.poll_times())
            return time.time() - latest >= quiet

        wait_for(still, timeout, "the daemon to fall quiet", interval=0.05)

    def wait_for_round(self, since: float, timeout: float) -> float:
        """Wait until every repo was polled at or after ``since``; the last such moment."""
        count = len(self.repos)
        wait_for(
            lambda: self.polled_since(since) >= count,
            timeout,
            f"a poll round over {count} repo(s)",
            interval=0.05,
        )
        return max(self.poll_times())


def make_fleet(
    root: Path, count: int, *, template: Path, name: str = "desk", **settings: Any
) -> Fleet:
    """``count`` repos on one device, each with its own copy of the ``template`` remote.

    A person's repos each have a remote of their own; copying one seeded bare repository
    gives them that without paying for ``count`` separate histories.
    """
    root.mkdir(parents=True, exist_ok=True)
    remotes = [copy_remote(template, root / f"remote-{index:03d}.git") for index in range(count)]
    device = make_device(root, remotes[0], name, **settings)
    repos = [device.repo]
    for index, remote in enumerate(remotes[1:], start=1):
        repo = device.root / f"app-{index:03d}"
        git(root, "clone", "--quiet", str(remote), str(repo))
        (repo / CONVOSYNC_DIR).mkdir()
        repos.append(repo)
    device.write_config(repos=repos)
    return Fleet(device=device, repos=repos, remotes=remotes)


def new_remote(root: Path, name: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return make_remote(root, name)


@dataclass
class Daemon:
    """A running ``convosyncd run`` and how long it took to say it was ready."""

    process: DaemonProcess
    ready_after: float
    started_at: float = field(default=0.0)

    @property
    def pid(self) -> int:
        return self.process.process.pid

    def stop(self) -> None:
        code = self.process.stop()
        if code != 0:
            raise BenchError(f"the daemon exited with {code}:\n{self.process.log()[-3000:]}")


def start_daemon(
    device: Device, env: Mapping[str, str] | None = None, *, timeout: float = 60
) -> Daemon:
    """Start ``convosyncd run`` for ``device``; wait (polling its log) until it is ready."""
    started_at = time.time()
    begin = time.monotonic()
    handle = DaemonProcess.start(device, env, wait_ready=False, bytecode=True)
    process = handle.process
    ready: list[float] = []

    def is_ready() -> bool:
        if process.poll() is not None:
            raise BenchError(f"the daemon exited ({process.returncode}):\n{handle.log()[-3000:]}")
        if READY_LINE in handle.log():
            ready.append(time.monotonic() - begin)
            return True
        return False

    try:
        wait_for(is_ready, timeout, f"{device.name}'s daemon to be ready")
    except BaseException:
        handle.stop()
        raise
    return Daemon(process=handle, ready_after=ready[0], started_at=started_at)


def problems_in_log(daemon: Daemon) -> list[str]:
    """ERROR lines and tracebacks in a daemon's log (a benchmark of a failing daemon lies)."""
    return [
        line
        for line in daemon.process.log().splitlines()
        if " ERROR " in line or line.startswith("Traceback")
    ]


# -- handoffs written with git plumbing alone ----------------------------------------


def stored_handoff(device: str, text: str, created: datetime) -> tuple[str, bytes]:
    """The path on the branch and the sealed file the daemon would store for ``text``
    (under the test person's key, which the benchmark's devices hold)."""
    location = handoff_location(device, created, PERSON_KEY.digest(device, text.encode()))
    content = render_stored(Provenance(device, created, "0" * 40, "main"), text)
    return location.path, seal_handoff(PERSON_KEY, location.path, content)


def _tree_line(mode: str, kind: str, oid: str, name: str) -> bytes:
    return f"{mode} {kind} {oid}\t{name}".encode() + b"\0"


class PlumbingPublisher:
    """Publishes handoffs with nothing but git plumbing: the floor under the daemon.

    One handoff is exactly: ``hash-object -w`` (the sealed file), ``mktree`` four times
    (the month's folder, the device's, ``handoffs/``, the root), ``commit-tree``,
    ``update-ref NEW OLD`` and ``push``. The listings of the folders are kept in memory
    between handoffs, so nothing is read back from git.
    """

    def __init__(self, repo: Path, device: str, *, remote: str = "origin") -> None:
        self.repo = repo
        self.device = device
        self.remote = remote
        self.tip: str | None = None
        self.months: dict[str, dict[str, bytes]] = {}
        self.folder: dict[str, bytes] = {}
        self.devices: dict[str, bytes] = {}
        self.top: dict[str, bytes] = {}

    def _git(self, *args: str, input: bytes | None = None) -> str:
        return git(self.repo, *args, input=input, timeout=None)

    def adopt_remote_branch(self) -> None:
        """Continue the remote's sync branch: fetch it and list its three folders once."""
        self._git("fetch", "--quiet", self.remote, f"+{REF}:{REF}")
        self.tip = self._git("rev-parse", REF)
        for lines, spec in (
            (self.top, f"{REF}^{{tree}}"),
            (self.devices, f"{REF}:{HANDOFFS_DIR}"),
            (self.folder, f"{REF}:{HANDOFFS_DIR}/{self.device}"),
        ):
            self._list(lines, spec)
        current = f"{datetime.now(timezone.utc):%Y-%m}"
        if current in self.folder:
            self._list(
                self.months.setdefault(current, {}), f"{REF}:{HANDOFFS_DIR}/{self.device}/{current}"
            )

    def _list(self, lines: dict[str, bytes], spec: str) -> None:
        for record in self._git("ls-tree", "-z", spec).split("\0"):
            if record:
                info, _, name = record.partition("\t")
                mode, kind, oid = info.split()
                lines[name] = _tree_line(mode, kind, oid, name)

    def _mktree(self, lines: dict[str, bytes]) -> str:
        return self._git("mktree", "-z", input=b"".join(lines.values()))

    def commit(self, text: str) -> str:
        """Commit one handoff holding ``text`` on the local sync branch."""
        created = datetime.now(timezone.utc)
        path, data = stored_handoff(self.device, text, created)
        month, name = path.split("/")[2:]
        blob = self._git("hash-object", "-w", "--stdin", input=data)
        files = self.months.setdefault(month, {})
        files[name] = _tree_line("100644", "blob", blob, name)
        self.folder[month] = _tree_line("040000", "tree", self._mktree(files), month)
        folder = self._mktree(self.folder)
        self.devices[self.device] = _tree_line("040000", "tree", folder, self.device)
        handoffs = self._mktree(self.devices)
        self.top[HANDOFFS_DIR] = _tree_line("040000", "tree", handoffs, HANDOFFS_DIR)
        root = self._mktree(self.top)
        parents = ["-p", self.tip] if self.tip else []
        message = f"handoff({self.device})"
        commit = self._git("commit-tree", root, *parents, "-m", message)
        self._git("update-ref", REF, commit, self.tip or "0" * 40)
        self.tip = commit
        return commit

    def push(self) -> None:
        self._git("push", "--quiet", "--no-verify", self.remote, f"{self.tip}:{REF}")

    def publish_draft(self, draft: Path) -> None:
        """What the daemon does for a draft, minus everything but git: read, commit, push."""
        self.commit(draft.read_text(encoding="utf-8"))
        draft.unlink()
        self.push()


# -- history written in bulk ---------------------------------------------------------

HEAVY_PACE = timedelta(minutes=72)
"""A heavy user's pace: 20 handoffs a day (10,000 take about 16 months)."""


def _moments(
    total: int, start: datetime | None, spacing: timedelta, full_month: int
) -> list[datetime]:
    """When each of ``total`` seeded handoffs was published, oldest first."""
    end = datetime.now(timezone.utc) - timedelta(minutes=1)
    month_start = end.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    recent = min(full_month, total)
    if start is not None or recent == 0 or end - month_start < timedelta(minutes=1):
        first = start or end - spacing * total - timedelta(hours=1)
        return [first + spacing * (step + 1) for step in range(total)]
    step = (end - month_start) / (recent + 1)
    older = [month_start - spacing * (total - recent - index) for index in range(total - recent)]
    return older + [month_start + step * (index + 1) for index in range(recent)]


def seed_history(
    remote: Path,
    per_device: Mapping[str, int],
    *,
    per_commit: int = 1,
    start: datetime | None = None,
    spacing: timedelta = HEAVY_PACE,
    full_month: int = 0,
) -> None:
    """Put ``per_device[d]`` earlier handoffs of each device on ``remote``'s sync branch.

    Written by one ``git fast-import``, ``per_commit`` handoffs to a commit (one is what
    the daemon makes; more only makes seeding ten thousand faster: a publish never walks
    the history, it reads the tip's trees). Devices take turns, ``spacing`` apart (a
    heavy user's pace by default: 20 handoffs a day), ending before now, so everything
    published later is newer.

    ``full_month``: the newest that many go into the current month, however far into
    it the run is, so that the month folder a publish rewrites holds a whole month's
    handoffs, as on its last day (the worst case, and the same on any date).
    """
    total = sum(per_device.values())
    moments = _moments(total, start, spacing, full_month)
    queues = {device: count for device, count in per_device.items() if count > 0}
    order: list[str] = []
    while queues:
        for device in list(queues):
            order.append(device)
            queues[device] -= 1
            if not queues[device]:
                del queues[device]
    chunks: list[bytes] = []
    mark = 0
    parent: int | None = None
    for first in range(0, total, per_commit):
        files: list[bytes] = []
        devices = order[first : first + per_commit]
        for step, device in enumerate(devices, start=first):
            moment = moments[step]
            text = full_handoff(f"Earlier work number {step} on {device}", fact=f"seed {step}")
            path, data = stored_handoff(device, text, moment)
            mark += 1
            chunks.append(b"blob\nmark :%d\ndata %d\n%s\n" % (mark, len(data), data))
            files.append(b"M 100644 :%d %s\n" % (mark, path.encode()))
        mark += 1
        subject = f"handoff({devices[-1]})".encode()
        header = b"commit %s\nmark :%d\ncommitter %s <%s@convosyncd.invalid> %d +0000\n" % (
            REF.encode(),
            mark,
            devices[-1].encode(),
            devices[-1].encode(),
            int(moment.timestamp()),
        )
        body = b"data %d\n%s\n" % (len(subject), subject)
        from_line = b"from :%d\n" % parent if parent is not None else b""
        chunks.append(header + body + from_line + b"".join(files) + b"\n")
        parent = mark
    result = subprocess.run(
        ["git", "fast-import", "--quiet", "--force"],
        cwd=remote,
        input=b"".join(chunks),
        capture_output=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise BenchError(
            f"fast-import failed in {remote}: {result.stderr.decode(errors='replace')}"
        )
    # A remote that lived through months of pushes holds what git's own gc packed
    # (receive-pack runs ``gc --auto``) from the loose objects those pushes left, with
    # deltas found afresh. fast-import's pack is not that: its delta chains alone make
    # the remote's connectivity check of every later push several times slower. So the
    # history is packed again, its deltas recomputed (``-f``), as gc's would be.
    git(remote, "repack", "-a", "-d", "-f", "-q")


_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def slug(text: str) -> str:
    return _SAFE.sub("-", text).strip("-")
