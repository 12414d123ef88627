"""Real git remotes and devices for tests: a bare remote, clones, configs, the CLI.

A device is what a person has on one machine: a clone of the shared remote, its own
config file and its own state folder. Two devices in one test are two of these.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convosyncd import keys
from convosyncd.handoff import CONVOSYNC_DIR, DRAFT_NAME, MATERIALIZED_NAME
from convosyncd.keys import SyncKey

REPO_ROOT = Path(__file__).resolve().parents[2]

HANDOFF = """\
### Current Task
{task}

### Progress So Far
- ✅ Routes for login and logout
- ⏳ Refresh tokens

### Key Decisions Made
- Tokens expire after 15 minutes

### Important Context
- {fact}

### Next Steps
1. Finish the refresh endpoint

### Files Modified
- src/auth.ts

### Open Questions
- None yet
"""


PERSON_KEY = SyncKey.from_bytes(bytes(range(32)))
"""The sync key of the person whose devices a test makes (unless it says otherwise)."""
OTHER_PERSON_KEY = SyncKey.from_bytes(bytes(range(100, 132)))
"""Another person's sync key, for a remote shared by two people."""


def handoff_text(
    task: str = "Implementing OAuth refresh tokens", fact: str = "Nothing else"
) -> str:
    """A realistic draft in the plugin's sections."""
    return HANDOFF.format(task=task, fact=fact)


def git(cwd: Path, *args: str, check: bool = True, input: str | None = None) -> str:
    """Run git as a person would; return its output without the final newline."""
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed in {cwd}: {result.stderr}")
    return result.stdout.rstrip("\n")


def git_bytes(cwd: Path, *args: str) -> bytes:
    """Run git and return its standard output as bytes (a sealed file is binary)."""
    result = subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        check=False,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed in {cwd}: {result.stderr!r}")
    return result.stdout


SYNC_REF = "refs/heads/convosync"


def branch_files(repo: Path, ref: str = SYNC_REF) -> list[str]:
    """Every path on the sync branch of ``repo`` (a clone or the bare remote)."""
    output = git(repo, "ls-tree", "-r", "--name-only", ref, check=False)
    return [line for line in output.splitlines() if line]


def handoff_paths(repo: Path, device: str | None = None, ref: str = SYNC_REF) -> list[str]:
    """The sealed handoffs on the sync branch (of ``device`` only, if given)."""
    prefix = f"handoffs/{device}/" if device else "handoffs/"
    return [p for p in branch_files(repo, ref) if p.startswith(prefix) and p.endswith(".sealed")]


def opened(repo: Path, path: str, key: SyncKey | None = None, ref: str = SYNC_REF) -> str:
    """The content of the sealed handoff at ``path``, opened with ``key`` (the test
    person's by default); AssertionError if it does not open."""
    from convosyncd.seal import open_handoff

    data = git_bytes(repo, "cat-file", "blob", f"{ref}:{path}")
    result = open_handoff(keys.Keyring(key or PERSON_KEY), path, data)
    assert result.verdict == "verified" and result.content is not None, result.verdict
    return result.content.decode("utf-8")


def opened_all(repo: Path, key: SyncKey | None = None, ref: str = SYNC_REF) -> dict[str, str]:
    """``{path: content}`` of every sealed handoff at ``ref`` that opens with ``key`` (the
    test person's by default), read with one git call."""
    from convosyncd.seal import open_handoff

    listing = git(repo, "ls-tree", "-r", "-z", ref, check=False)
    entries = []
    for record in listing.split("\0"):
        if record:
            info, _, path = record.partition("\t")
            if path.endswith(".sealed") and info.split()[1] == "blob":
                entries.append((path, info.split()[2]))
    if not entries:
        return {}
    data = subprocess.run(
        ["git", "cat-file", "--batch"],
        cwd=repo,
        capture_output=True,
        check=True,
        timeout=120,
        input=("\n".join(oid for _p, oid in entries) + "\n").encode(),
    ).stdout
    keyring = keys.Keyring(key or PERSON_KEY)
    found: dict[str, str] = {}
    position = 0
    for path, _oid in entries:
        end = data.index(b"\n", position)
        size = int(data[position:end].split()[2])
        blob = data[end + 1 : end + 1 + size]
        position = end + 1 + size + 1
        result = open_handoff(keyring, path, blob)
        if result.verdict == "verified" and result.content is not None:
            found[path] = result.content.decode("utf-8")
    return found


def commit_on_remote(
    remote: Path,
    add: Mapping[str, bytes | tuple[str, bytes]] | None = None,
    remove: Sequence[str] = (),
    message: str = "x",
) -> None:
    """A commit on the bare ``remote``'s sync branch adding files (``{path: content}``, or
    ``{path: (mode, content)}``) and removing paths, made with plumbing through a
    private index, as anyone who can push could make it."""
    index = remote / "commit-on-remote.index"
    env = {**os.environ, "GIT_INDEX_FILE": str(index)}

    def run(*args: str, data: bytes | None = None) -> str:
        result = subprocess.run(
            ["git", *args],
            cwd=remote,
            env=env,
            input=data,
            capture_output=True,
            check=True,
            timeout=60,
        )
        return result.stdout.decode().strip()

    tip = run("rev-parse", SYNC_REF)
    run("read-tree", tip)
    for path, item in (add or {}).items():
        mode, content = item if isinstance(item, tuple) else ("100644", item)
        oid = run("hash-object", "-w", "--stdin", data=content)
        run("update-index", "--add", "--cacheinfo", f"{mode},{oid},{path}")
    for path in remove:  # mode 0 removes the entry (a bare repo has no work tree)
        run("update-index", "--index-info", data=f"0 {'0' * len(tip)}\t{path}\n".encode())
    commit = run("commit-tree", run("write-tree"), "-p", tip, "-m", message)
    run("update-ref", SYNC_REF, commit, tip)
    index.unlink()


def make_remote(root: Path, name: str = "remote.git") -> Path:
    """A bare repository with one commit on ``main``."""
    remote = root / name
    git(root, "init", "--quiet", "--bare", str(remote))
    seed = root / f"{name}-seed"
    git(root, "init", "--quiet", str(seed))
    (seed / "README.md").write_text("# app\n", encoding="utf-8")
    git(seed, "add", "README.md")
    git(seed, "commit", "--quiet", "-m", "Start")
    git(seed, "push", "--quiet", str(remote), "HEAD:refs/heads/main")
    return remote


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``predicate()`` held; AssertionError naming ``what`` if it never did."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


@dataclass
class Device:
    """One machine: a clone, a config and a state folder."""

    name: str
    root: Path
    repo: Path
    remote: Path
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def draft(self) -> Path:
        return self.repo / CONVOSYNC_DIR / DRAFT_NAME

    @property
    def materialized(self) -> Path:
        return self.repo / CONVOSYNC_DIR / MATERIALIZED_NAME

    def write_config(self, repos: list[Path] | None = None, **settings: Any) -> None:
        """Write this device's config (settings on top of the device's defaults)."""
        values = {**self.settings, **settings}
        lines = [f'device = "{self.name}"', f'state_dir = "{self.state}"']
        for key, value in values.items():
            lines.append(f"{key} = {_toml(value)}")
        for repo in self.repo_list() if repos is None else repos:
            lines += ["", "[[repos]]", f'path = "{repo}"']
        self.config.write_text("\n".join(lines) + "\n", encoding="utf-8")

    @property
    def key_file(self) -> Path:
        return keys.key_file(self.config)

    def give_key(self, key: SyncKey | None) -> None:
        """Put ``key`` in this device's keyring (alone), or remove the keyring if None."""
        if key is None:
            self.key_file.unlink(missing_ok=True)
        else:
            keys.save(self.key_file, keys.Keyring(key))

    def repo_list(self) -> list[Path]:
        return [self.repo]

    def write_draft(self, text: str) -> None:
        self.draft.parent.mkdir(exist_ok=True)
        self.draft.write_text(text, encoding="utf-8")

    def cli(
        self,
        *args: str,
        timeout: float = 60,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``convosyncd --config <this device's config> ARGS`` as a subprocess."""
        return run_cli("--config", str(self.config), *args, timeout=timeout, env=env, cwd=cwd)

    def sync_branch_files(self, ref: str = "refs/heads/convosync") -> list[str]:
        """Paths on this clone's sync branch."""
        output = git(self.repo, "ls-tree", "-r", "--name-only", ref, check=False)
        return [line for line in output.splitlines() if line]

    def status(self) -> dict[str, Any]:
        result = self.cli("status", "--json")
        assert result.returncode == 0, result.stderr
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    def start(self, env: Mapping[str, str] | None = None) -> DaemonProcess:
        """Start ``convosyncd run`` for this device."""
        return DaemonProcess.start(self, env=env)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def make_device(
    root: Path,
    remote: Path,
    name: str,
    *,
    register: bool = True,
    key: SyncKey | None = PERSON_KEY,
    **settings: Any,
) -> Device:
    """Clone ``remote`` for device ``name`` and (by default) register it in its config.

    The device holds ``key`` (by default the test person's, so that all devices of a
    test are one person's and read each other's handoffs; None: no key at all).
    """
    folder = root / name
    folder.mkdir(parents=True)
    repo = folder / "app"
    git(root, "clone", "--quiet", str(remote), str(repo))
    defaults: dict[str, Any] = {"settle": 0.2, "pull_interval": 1.0, "notify": False}
    device = Device(
        name=name, root=folder, repo=repo, remote=remote, settings={**defaults, **settings}
    )
    device.write_config(repos=[repo] if register else [])
    device.give_key(key)
    if register:
        (repo / CONVOSYNC_DIR).mkdir(exist_ok=True)
    return device


def cli_env(extra: Mapping[str, str] | None = None, *, bytecode: bool = False) -> dict[str, str]:
    """The environment of a convosyncd subprocess: this checkout first on the path.

    Tests keep Python from writing ``__pycache__`` into the checkout; the benchmark lets
    it (``bytecode``), as an installed package would have it.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


def run_cli(
    *args: str,
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m convosyncd ARGS``, the way a person runs it."""
    return subprocess.run(
        [sys.executable, "-m", "convosyncd", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@dataclass
class DaemonProcess:
    """A ``convosyncd run`` subprocess whose log is read with time limits, not sleeps."""

    device: Device
    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(
        cls,
        device: Device,
        env: Mapping[str, str] | None = None,
        *,
        wait_ready: bool = True,
        bytecode: bool = False,
    ) -> DaemonProcess:
        log_path = device.root / f"daemon-{time.monotonic_ns()}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "convosyncd", "--config", str(device.config), "run"],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=cli_env(env, bytecode=bytecode),
            )
        daemon = cls(device, process, log_path)
        if wait_ready:
            daemon.wait_for_log("running as device", timeout=20)
        return daemon

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        """Wait for a log line matching ``pattern`` (a regex)."""
        found: list[re.Match[str]] = []

        def present() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"the daemon exited ({self.process.returncode}) before logging {pattern!r}:\n"
                    + self.log()
                )
            match = re.search(pattern, self.log())
            if match:
                found.append(match)
            return match is not None

        try:
            wait_until(present, timeout, f"log line {pattern!r}")
        except AssertionError as error:
            raise AssertionError(f"{error}\n--- daemon log ---\n{self.log()}") from None
        return found[0]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Signal the daemon and wait for it; returns its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"the daemon did not stop on {sig}:\n{self.log()}") from None
        return self.process.returncode


def snapshot(repo: Path) -> dict[str, str]:
    """Everything of the person's a sync must leave untouched, byte for byte."""
    git_dir = Path(git(repo, "rev-parse", "--absolute-git-dir"))
    refs = git(repo, "for-each-ref", "--format=%(refname) %(objectname)")
    user_refs = "\n".join(
        line
        for line in refs.splitlines()
        if not line.startswith(
            ("refs/heads/convosync ", "refs/convosync/", "refs/remotes/origin/convosync ")
        )
    )
    files = {}
    for path in sorted(repo.rglob("*")):
        relative = path.relative_to(repo)
        if relative.parts[0] in (".git", CONVOSYNC_DIR) or not path.is_file():
            continue
        files[str(relative)] = hashlib.sha256(path.read_bytes()).hexdigest()
    special = {}
    for name in ("HEAD", "ORIG_HEAD", "MERGE_HEAD", "index", "FETCH_HEAD"):
        candidate = git_dir / name
        special[name] = (
            hashlib.sha256(candidate.read_bytes()).hexdigest() if candidate.exists() else "-"
        )
    for folder in ("rebase-merge", "rebase-apply"):
        special[folder] = str(sorted(p.name for p in (git_dir / folder).glob("*")))
    return {
        "refs": user_refs,
        "stash": git(repo, "stash", "list", check=False),
        "status": git(
            repo, "--no-optional-locks", "status", "--porcelain=v1", "--untracked-files=all"
        ),
        "files": json.dumps(files, sort_keys=True),
        **special,
    }


def interrupt(repo: Path, kind: str) -> None:
    """Leave ``repo`` mid-``merge`` or mid-``rebase`` (with a conflict), or ``detached``."""
    if kind == "detached":
        git(repo, "checkout", "--quiet", "--detach", "HEAD")
        return
    git(repo, "checkout", "--quiet", "-b", "feature")
    (repo / "README.md").write_text("# feature side\n", encoding="utf-8")
    git(repo, "commit", "--quiet", "-am", "feature")
    git(repo, "checkout", "--quiet", "main")
    (repo / "README.md").write_text("# main side\n", encoding="utf-8")
    git(repo, "commit", "--quiet", "-am", "main")
    if kind == "merge":
        git(repo, "merge", "feature", check=False)
    else:
        git(repo, "checkout", "--quiet", "feature")
        git(repo, "rebase", "main", check=False)
