"""``convosyncd demo``: the whole product on two throwaway devices, in seconds.

In a temporary folder it makes a bare remote and two clones ("desktop" and "laptop"),
each with its own config and state folder, runs a real daemon for each, writes a
sample handoff on the desktop and shows it arriving on the laptop, notification
included where the session has a notification server. None of the person's repos,
config or state is touched; the folder is removed afterwards (unless ``--keep``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from convosyncd.gitcmd import git_environment, run_git
from convosyncd.handoff import CONVOSYNC_DIR, DRAFT_NAME, MATERIALIZED_NAME

SAMPLE = """\
### Current Task
Implementing OAuth refresh tokens

### Progress So Far
- ✅ Login, logout and callback routes in src/auth.ts
- ✅ Google provider wired up
- ⏳ Storing refresh tokens (Redis, half done)

### Key Decisions Made
- Access tokens expire after 15 minutes; refresh tokens after 7 days
- Refresh tokens live in Redis, not in the JWT

### Important Context
- The person's favourite pizza is Margherita
- Staging uses a separate Google client id

### Next Steps
1. Finish the refresh endpoint
2. Handle revoked tokens
3. Integration tests

### Files Modified
- src/auth.ts (+145, -10)
- src/oauth-provider.ts (new)

### Open Questions
- Rotate refresh tokens on every use?
"""

WAIT = 12.0


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo", help="show a handoff travelling between two throwaway devices"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.set_defaults(handler=run)


def _git(args: list[str], cwd: Path) -> None:
    run_git(
        ["-c", "user.name=convosyncd demo", "-c", "user.email=demo@convosyncd.invalid", *args],
        cwd=cwd,
        timeout=30,
    )


def _wait_for(predicate: Callable[[], bool], timeout: float) -> float | None:
    """Seconds until ``predicate`` held, or None if it did not within ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.02)
    return None


def _device(root: Path, remote: Path, name: str, *, notify: bool) -> tuple[Path, Path]:
    """A clone and a config with the demo's quick settings; ``add`` registers it."""
    tree = root / name / "app"
    _git(["clone", "--quiet", str(remote), str(tree)], root)
    config = root / name / "config.toml"
    config.write_text(
        f'device = "{name}"\n'
        f'state_dir = "{root / name / "state"}"\n'
        "settle = 0.2\npull_interval = 0.5\n"
        f"notify = {'true' if notify else 'false'}\n"
        "notify_timeout = 3\n",
        encoding="utf-8",
    )
    return tree, config


def _command(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "convosyncd", "--config", str(config), *args]


def _convosyncd(config: Path, *args: str) -> str:
    """Run a convosyncd command as a person would; its output, or DemoError."""
    result = subprocess.run(
        _command(config, *args),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env=git_environment(),
        check=False,
    )
    if result.returncode != 0:
        raise DemoError(f"`convosyncd {' '.join(args)}` failed: {result.stderr.strip()}")
    return result.stdout


def _pair(source: Path, target: Path) -> str:
    """``convosyncd key show`` on ``source`` piped into ``convosyncd key import`` on
    ``target``, two processes joined by a pipe; the key id ``import`` names."""
    env = git_environment()
    show = subprocess.Popen(
        _command(source, "key", "show"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert show.stdout is not None
    try:
        imported = subprocess.run(
            _command(target, "key", "import"),
            stdin=show.stdout,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
    finally:
        show.stdout.close()
        _, show_errors = show.communicate(timeout=60)
    if show.returncode != 0:
        raise DemoError(f"`convosyncd key show` failed: {show_errors.decode().strip()}")
    if imported.returncode != 0:
        raise DemoError(f"`convosyncd key import` failed: {imported.stderr.strip()}")
    match = re.search(r"key id [0-9a-f]+", imported.stdout)
    return match.group(0) if match else "imported"


class DemoError(Exception):
    """A step of the demo failed; the message says which, with the command's own words."""


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "convosyncd", "--config", str(config), "run"],
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=git_environment(),
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="convosyncd-demo-"))
    daemons: list[subprocess.Popen[bytes]] = []
    started = time.monotonic()
    print(f"convosyncd demo in {root}" + ("" if args.keep else " (removed afterwards)"))
    try:
        remote = root / "remote.git"
        _git(["init", "--quiet", "--bare", str(remote)], root)
        _git(["symbolic-ref", "HEAD", "refs/heads/main"], remote)
        seed = root / "seed"
        _git(["init", "--quiet", str(seed)], root)
        (seed / "README.md").write_text("# app\n", encoding="utf-8")
        _git(["add", "README.md"], seed)
        _git(["commit", "--quiet", "-m", "Start the app"], seed)
        _git(["push", "--quiet", str(remote), "HEAD:refs/heads/main"], seed)
        desktop, desktop_config = _device(root, remote, "desktop", notify=False)
        laptop, laptop_config = _device(root, remote, "laptop", notify=True)
        # One person's two devices, set up as the README says: `add` on the first makes
        # the sync key, `key show` there piped into `key import` here pairs the second.
        try:
            _convosyncd(desktop_config, "add", str(desktop))
            paired = _pair(desktop_config, laptop_config)
            _convosyncd(laptop_config, "add", str(laptop))
        except DemoError as error:
            print(f"  ✗ {error}", file=sys.stderr)
            return 1
        print(
            "  1. a bare remote and two devices, 'desktop' and 'laptop', each a clone "
            "registered with `convosyncd add`"
        )
        print(
            "     paired: `convosyncd key show` on the desktop piped into `convosyncd key "
            f"import` on the laptop ({paired})"
        )
        logs = {
            "desktop": root / "desktop" / "daemon.log",
            "laptop": root / "laptop" / "daemon.log",
        }
        daemons.append(_start(desktop_config, logs["desktop"]))
        daemons.append(_start(laptop_config, logs["laptop"]))
        ready = _wait_for(
            lambda: all("running as device" in _read(log) for log in logs.values()), WAIT
        )
        if ready is None:
            print("  ✗ the daemons did not start; their logs:", file=sys.stderr)
            for name, log in logs.items():
                print(f"--- {name}\n{_read(log)}", file=sys.stderr)
            return 1
        print(
            "  2. a daemon for each is running (settle 0.2 s, poll every 0.5 s), "
            f"ready in {ready:.2f} s"
        )
        draft = desktop / CONVOSYNC_DIR / DRAFT_NAME
        draft.parent.mkdir(exist_ok=True)
        written = time.monotonic()
        draft.write_text(SAMPLE, encoding="utf-8")
        print(f"  3. desktop: the assistant writes {CONVOSYNC_DIR}/{DRAFT_NAME}")

        def on_remote() -> bool:
            result = run_git(
                ["ls-remote", str(remote), "refs/heads/convosync"],
                cwd=root,
                timeout=10,
                check=False,
            )
            return bool(result.text) and not draft.exists()

        pushed = _wait_for(on_remote, WAIT)
        if pushed is None:
            return _failed("the desktop did not publish", logs["desktop"])
        print(
            f"  4. desktop: published on the sync branch and pushed, {pushed:.2f} s after the write"
        )
        handoffs = laptop / CONVOSYNC_DIR / MATERIALIZED_NAME
        arrived = _wait_for(lambda: "Handoff from desktop" in _read(handoffs), WAIT)
        if arrived is None:
            return _failed("the laptop did not receive it", logs["laptop"])
        print(
            f"  5. laptop: it arrived in {CONVOSYNC_DIR}/{MATERIALIZED_NAME}, "
            f"{time.monotonic() - written:.2f} s after the write"
        )
        _wait_for(lambda: "notification" in _read(logs["laptop"]), 5)
        log_text = _read(logs["laptop"])
        match = re.search(r"notification (sent|failed|timed out|skipped)", log_text)
        outcome = match.group(1) if match else "not reported"
        reason = re.search(r"notification not sent \((.+?)\):", log_text)
        shown = {
            "sent": "handed to this desktop's notification server",
            "failed": "not shown: "
            + (reason.group(1) if reason else "no notification server answered"),
            "timed out": "not shown: the notification server did not answer",
        }.get(outcome, outcome)
        print(
            "  6. laptop: notification 'Handoff from desktop' / "
            f"'app: Implementing OAuth refresh tokens' ({shown})"
        )
        print()
        print("--- on the laptop, `convosyncd resume` prints:")
        resume = subprocess.run(
            [
                sys.executable,
                "-m",
                "convosyncd",
                "--config",
                str(laptop_config),
                "resume",
                str(laptop),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        print(resume.stdout.rstrip())
        print("---")
        print(
            f"Done in {time.monotonic() - started:.1f} s. "
            "Next: `convosyncd add PATH` for your own repos."
        )
        return 0
    finally:
        for process in daemons:
            _stop(process)
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def _failed(what: str, log: Path) -> int:
    print(f"  ✗ {what}; its log:\n{_read(log)}", file=sys.stderr)
    return 1


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
