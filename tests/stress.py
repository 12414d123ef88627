"""The fault campaign: ``python -m tests.stress`` runs it long and prints the report.

Every campaign runs real ``convosyncd run`` subprocesses against real bare remotes in a
temporary folder, injects one kind of fault over and over, and then counts: every
handoff written carries a unique marker, and the remote (and every device) is searched
for each marker afterwards. A marker found zero times is a lost handoff, more than once
a duplicate. The quick sizes of the same campaigns run in the normal test suite
(``tests/test_faults.py``); ``python -m tests.stress --quick`` prints their table too.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.devices import (
    DaemonProcess,
    Device,
    git,
    handoff_text,
    make_device,
    make_remote,
    opened_all,
    wait_until,
)
from tests.support.network import closed_port, silent_listener

MARKER_RE = re.compile(r"marker: (?P<marker>[a-z0-9-]+)")


@dataclass
class Outcome:
    """One campaign's line in the report."""

    campaign: str
    faults: int
    written: int
    found: int
    lost: int
    duplicated: int
    longest_recovery: float
    notes: str = ""

    def row(self) -> str:
        return (
            f"| {self.campaign} | {self.faults} | {self.written} | {self.found} | {self.lost} "
            f"| {self.duplicated} | {self.longest_recovery:.2f} s | {self.notes} |"
        )


HEADER = (
    "| campaign | faults injected | handoffs written | found | lost | duplicated "
    "| longest recovery | notes |\n|---|---|---|---|---|---|---|---|"
)


def draft_with_marker(marker: str) -> str:
    return handoff_text(f"Stress {marker}", fact=f"marker: {marker}")


def markers_on(repo: Path, ref: str = "refs/heads/convosync") -> Counter[str]:
    """How often each marker occurs in the handoffs at ``ref`` of ``repo`` (opened with
    the test person's key: a marker that does not open does not count)."""
    return Counter(
        match["marker"]
        for text in opened_all(repo, ref=ref).values()
        for match in MARKER_RE.finditer(text)
    )


def tally(
    campaign: str,
    written: Sequence[str],
    found: Counter[str],
    faults: int,
    recovery: float,
    notes: str = "",
) -> Outcome:
    return Outcome(
        campaign=campaign,
        faults=faults,
        written=len(written),
        found=sum(1 for marker in written if found[marker] >= 1),
        lost=sum(1 for marker in written if found[marker] == 0),
        duplicated=sum(1 for marker in written if found[marker] > 1),
        longest_recovery=recovery,
        notes=notes,
    )


def _kill(daemon: DaemonProcess) -> None:
    daemon.process.kill()
    daemon.process.wait(timeout=10)


def _settled(device: Device, remote: Path) -> bool:
    """The draft is taken in and the remote has everything the device has."""
    if device.draft.exists():
        return False
    local = git(device.repo, "rev-parse", "-q", "--verify", "refs/heads/convosync", check=False)
    theirs = git(remote, "rev-parse", "-q", "--verify", "refs/heads/convosync", check=False)
    return bool(local) and local == theirs


def kill9_campaign(root: Path, kills: int, seed: int = 1) -> Outcome:
    """``kill -9`` at random moments while drafts are published, ``kills`` times."""
    rng = random.Random(seed)
    remote = make_remote(root)
    device = make_device(root, remote, "desktop", settle=0.05, pull_interval=0.3)
    written: list[str] = []
    longest = 0.0
    daemon = device.start()
    for number in range(kills):
        marker = f"kill-{number}"
        device.write_draft(draft_with_marker(marker))
        written.append(marker)
        time.sleep(rng.uniform(0.0, 0.4))
        _kill(daemon)
        restarted = time.monotonic()
        # A fifth of the restarts are killed again before they are even ready.
        if rng.random() < 0.2:
            early = DaemonProcess.start(device, wait_ready=False)
            time.sleep(rng.uniform(0.0, 0.3))
            _kill(early)
        daemon = device.start()
        wait_until(lambda: _settled(device, remote), 60, f"recovery after kill {number}")
        longest = max(longest, time.monotonic() - restarted)
    assert daemon.stop() == 0
    leftover = " (a draft was left behind)" if device.draft.exists() else ""
    logs = "".join(
        path.read_text(encoding="utf-8", errors="replace")
        for path in device.root.glob("daemon-*.log")
    )
    between = logs.count("already published as")
    return tally(
        "kill -9 while publishing",
        written,
        markers_on(remote),
        kills,
        longest,
        f"restart after every kill; 20% killed again during start-up; {between} kills fell "
        f"between the ref update and the draft's removal{leftover}",
    )


def concurrent_campaign(root: Path, rounds: int, devices: int = 3) -> Outcome:
    """``devices`` devices publish at the same moment, ``rounds`` times."""
    remote = make_remote(root)
    crowd = [
        make_device(root, remote, f"device{index}", settle=0.05, pull_interval=0.3)
        for index in range(devices)
    ]
    daemons = [device.start() for device in crowd]
    written: list[str] = []
    longest = 0.0
    try:
        for number in range(rounds):
            barrier = threading.Barrier(devices)
            markers = [f"round-{number}-{device.name}" for device in crowd]

            def write(device: Device, marker: str, barrier: threading.Barrier) -> None:
                barrier.wait(timeout=10)
                device.write_draft(draft_with_marker(marker))

            threads = [
                threading.Thread(target=write, args=(device, marker, barrier))
                for device, marker in zip(crowd, markers, strict=True)
            ]
            start = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            written += markers
            wait_until(
                lambda: not any(device.draft.exists() for device in crowd), 30, "drafts taken in"
            )
            longest = max(longest, time.monotonic() - start)
        expected = len(written)
        for device in crowd:
            repo = device.repo
            wait_until(
                lambda: sum(markers_on(repo).values()) >= expected,  # noqa: B023 - used at once
                90,
                f"{device.name} to hold every handoff",
            )
        wait_until(lambda: sum(markers_on(remote).values()) >= expected, 90, "the remote")
    finally:
        for daemon in daemons:
            daemon.stop()
    gave_up = sum(len(re.findall(r"kept (changing|moving)", daemon.log())) for daemon in daemons)
    conflicts = sum(_conflict_markers(device.repo) for device in crowd)
    per_device = [markers_on(device.repo) for device in crowd]
    mismatched = sum(1 for counts in per_device if counts != markers_on(remote))
    return tally(
        f"{devices} devices publishing at once",
        written,
        markers_on(remote),
        rounds,
        longest,
        f"{rounds} rounds; cycles that gave up: {gave_up}; conflict markers: {conflicts}; "
        f"devices differing from the remote: {mismatched}",
    )


def _paths_by_marker(repo: Path) -> dict[str, str]:
    """``{marker: path}`` of the handoffs on ``repo``'s sync branch."""
    found = {}
    for path, text in opened_all(repo).items():
        for match in MARKER_RE.finditer(text):
            found[match["marker"]] = path
    return found


def _reachable(repo: Path) -> set[str]:
    """Every object id reachable from the sync branch of ``repo``."""
    output = git(repo, "rev-list", "--objects", "refs/heads/convosync")
    return {line.split(" ", 1)[0] for line in output.splitlines() if line}


def forget_campaign(root: Path, rounds: int, devices: int = 3, seed: int = 5) -> Outcome:
    """``devices`` devices publish at the same moment, ``rounds`` times; at that same
    moment one of them forgets an earlier handoff with the CLI, and every third round
    purges it instead (a leased push racing the others' pushes).

    Afterwards: every handoff not forgotten is on the remote and every device exactly
    once, none forgotten is anywhere, and nothing forgotten before a purge (the purged
    one included) is reachable from the remote's branch.
    """
    rng = random.Random(seed)
    remote = make_remote(root)
    crowd = [
        make_device(root, remote, f"device{index}", settle=0.05, pull_interval=0.3)
        for index in range(devices)
    ]
    daemons = [device.start() for device in crowd]
    written: list[str] = []
    forgotten: list[str] = []
    on_remote: set[str] = set()  # blobs of handoffs forgotten, with the record pushed
    purged: set[str] = set()  # blobs that must be unreachable: forgotten before a purge
    purges = failed = 0
    reasons: list[str] = []
    errors: list[str] = []
    longest = 0.0
    try:
        for number in range(rounds):
            markers = [f"forget-{number}-{device.name}" for device in crowd]
            actor = rng.choice(crowd)
            held = _paths_by_marker(actor.repo)
            candidates = sorted(m for m in held if m in written and m not in forgotten)
            target = rng.choice(candidates) if candidates else None
            purge = number % 3 == 2
            barrier = threading.Barrier(devices + 1)
            commands: list[subprocess.CompletedProcess[str]] = []

            def write(device: Device, marker: str, barrier: threading.Barrier) -> None:
                barrier.wait(timeout=10)
                device.write_draft(draft_with_marker(marker))

            def forget(
                barrier: threading.Barrier,
                actor: Device,
                args: list[str],
                commands: list[subprocess.CompletedProcess[str]],
            ) -> None:
                barrier.wait(timeout=10)
                if args:
                    commands.append(actor.cli(*args, timeout=120))

            args: list[str] = []
            blob = ""
            if target is not None:
                parts = held[target].split("/")
                args = ["forget", f"{parts[1]}/{parts[-1]}", "--repo", str(actor.repo)]
                args += ["--purge"] if purge else []
                blob = git(actor.repo, "rev-parse", f"refs/heads/convosync:{held[target]}")
            threads = [
                threading.Thread(target=write, args=(device, marker, barrier))
                for device, marker in zip(crowd, markers, strict=True)
            ]
            threads.append(threading.Thread(target=forget, args=(barrier, actor, args, commands)))
            start = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            written += markers
            for result in commands:
                if result.returncode == 0 or (not purge and "Forgot 1" in result.stdout):
                    forgotten.append(target or "")
                    if result.returncode == 0:
                        on_remote.add(blob)
                    if purge:
                        purges += 1
                        purged |= on_remote
                else:
                    failed += 1
                    why = (result.stderr.strip() or result.stdout.strip()).splitlines()
                    reasons.append(why[-1] if why else f"exit {result.returncode}")
            wait_until(
                lambda: not any(device.draft.exists() for device in crowd), 30, "drafts taken in"
            )
            longest = max(longest, time.monotonic() - start)
        expected = Counter({marker: 1 for marker in written if marker not in forgotten})
        for repo in [remote, *(device.repo for device in crowd)]:
            wait_until(
                lambda: markers_on(repo) == expected,  # noqa: B023 - used at once
                90,
                f"{repo} to hold every handoff not forgotten, and none forgotten",
            )
        # Counted before the daemons stop: what they log while shutting down is not
        # this campaign's business.
        errors = [
            line for daemon in daemons for line in daemon.log().splitlines() if " ERROR " in line
        ]
    finally:
        for daemon in daemons:
            daemon.stop()
    found = markers_on(remote)
    came_back = sum(
        1
        for marker in forgotten
        if found[marker] or any(markers_on(device.repo)[marker] for device in crowd)
    )
    reachable = len(purged & _reachable(remote))
    return tally(
        f"forget and purge while {devices} devices publish",
        [marker for marker in written if marker not in forgotten],
        found,
        rounds,
        longest,
        f"{len(forgotten)} forgotten ({purges} by purge); came back: {came_back}; purged "
        f"still reachable: {reachable}; commands that failed: {failed}"
        + (f" (first: {reasons[0][:200]})" if reasons else "")
        + f"; errors in the daemons' logs: {len(errors)}"
        + (f" (first: {errors[0].split(' ERROR ', 1)[1][:300]})" if errors else ""),
    )


def _conflict_markers(repo: Path) -> int:
    count = 0
    for text in opened_all(repo).values():
        count += text.count("<<<<<<<") + text.count(">>>>>>>")
    return count


def outage_campaign(root: Path, kind: str, outage: float, drafts: int) -> Outcome:
    """The remote unreachable for ``outage`` seconds: a moved folder, a refusing port, or a
    listener that accepts and never answers. Drafts keep being taken in meanwhile."""
    remote = make_remote(root)
    device = make_device(root, remote, "desktop", pull_interval=0.5, network_timeout=2.0)
    url = str(remote)
    daemon = device.start()
    written: list[str] = []
    with silent_listener() as silent_port:
        try:
            if kind == "moved":
                remote.rename(root / "elsewhere.git")
            elif kind == "refused":
                git(
                    device.repo,
                    "remote",
                    "set-url",
                    "origin",
                    f"http://127.0.0.1:{closed_port()}/a.git",
                )
            else:
                git(
                    device.repo,
                    "remote",
                    "set-url",
                    "origin",
                    f"http://127.0.0.1:{silent_port}/a.git",
                )
            began = time.monotonic()
            for number in range(drafts):
                marker = f"outage-{kind}-{number}"
                device.write_draft(draft_with_marker(marker))
                written.append(marker)
                wait_until(
                    lambda: not device.draft.exists(), 10, "the draft taken in while offline"
                )
                time.sleep(max(0.0, outage / drafts - 0.3))
            wait_until(
                lambda: device.status()["repos"][0]["pending"] == drafts,
                30,
                f"status to show {drafts} waiting",
            )
            remaining = outage - (time.monotonic() - began)
            if remaining > 0:
                time.sleep(remaining)
            if kind == "moved":
                (root / "elsewhere.git").rename(remote)
            else:
                git(device.repo, "remote", "set-url", "origin", url)
            back = time.monotonic()
            wait_until(lambda: _settled(device, remote), 120, "the push after the remote returned")
            recovery = time.monotonic() - back
        finally:
            daemon.stop()
    log = daemon.log()
    cycles = [float(value) for value in re.findall(r"next attempt in ([0-9.]+) s", log)]
    pushes = [float(value) for value in re.findall(r"next push in ([0-9.]+) s", log)]
    return tally(
        f"remote unreachable ({kind}) for {outage:.0f} s",
        written,
        markers_on(remote),
        1,
        recovery,
        f"{len(pushes)} push retries, longest wait {max(pushes, default=0.0):.1f} s (cap 60 s); "
        f"{len(cycles)} cycle retries, longest wait {max(cycles, default=0.0):.1f} s (doubling "
        f"from pull_interval); status showed {drafts} waiting",
    )


@dataclass
class InputCase:
    """One hostile or broken input and how it was handled."""

    kind: str
    handling: str
    ok: bool

    def row(self) -> str:
        return f"| {self.kind} | {self.handling} | {'✓' if self.ok else '✗'} |"


INPUT_HEADER = "| input | how it was handled | nothing lost, others kept syncing |\n|---|---|---|"


def run_campaign(quick: bool) -> tuple[list[Outcome], list[InputCase]]:
    """Every campaign, at the quick or the long size."""
    from tests.hostile import hostile_inputs

    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="convosyncd-stress-") as folder:
        root = Path(folder)

        def fresh(name: str) -> Path:
            path = root / name
            path.mkdir()
            return path

        outcomes.append(kill9_campaign(fresh("kill"), kills=15 if quick else 120))
        outcomes.append(concurrent_campaign(fresh("crowd"), rounds=5 if quick else 30))
        outcomes.append(forget_campaign(fresh("forget"), rounds=6 if quick else 30))
        for kind in ("moved", "refused", "silent"):
            outcomes.append(
                outage_campaign(
                    fresh(f"outage-{kind}"),
                    kind,
                    outage=6.0 if quick else 150.0,
                    drafts=3 if quick else 10,
                )
            )
        cases = hostile_inputs(fresh("inputs"))
    return outcomes, cases


def render(outcomes: Sequence[Outcome], cases: Sequence[InputCase]) -> str:
    lines = [HEADER, *(outcome.row() for outcome in outcomes), "", INPUT_HEADER]
    lines += [case.row() for case in cases]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.stress", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the sizes the test suite uses")
    args = parser.parse_args(argv)
    from tests.support.devices import REPO_ROOT

    os.chdir(REPO_ROOT)
    started = time.monotonic()
    with _hermetic():
        outcomes, cases = run_campaign(args.quick)
    print(render(outcomes, cases))
    print(f"\n{time.monotonic() - started:.0f} s in all; {git(Path.cwd(), '--version')}")
    bad = any(o.lost or o.duplicated for o in outcomes) or not all(c.ok for c in cases)
    return 1 if bad else 0


@contextmanager
def _hermetic() -> Iterator[None]:
    """The same isolation as the test suite: a throwaway HOME and git config."""
    saved = dict(os.environ)
    home = Path(tempfile.mkdtemp(prefix="convosyncd-stress-home-"))
    try:
        for name in list(os.environ):
            if name.startswith(("GIT_", "XDG_", "CONVOSYNC_")) or name in (
                "DBUS_SESSION_BUS_ADDRESS",
                "DISPLAY",
                "SSH_AUTH_SOCK",
                "NOTIFY_SOCKET",
            ):
                del os.environ[name]
        os.environ["HOME"] = str(home)
        os.environ["GIT_CONFIG_NOSYSTEM"] = "1"
        os.environ["GIT_CONFIG_GLOBAL"] = str(home / ".gitconfig")
        (home / ".gitconfig").write_text(
            "[user]\n\tname = Stress\n\temail = stress@example.invalid\n"
            "[init]\n\tdefaultBranch = main\n",
            encoding="utf-8",
        )
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
