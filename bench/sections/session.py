"""6. Session start: a handoff pushed a moment ago is in the next session, at what cost.

Device A publishes with git plumbing and pushes; one second after the push, device B's
session starts: the plugin's hook (``convosyncd resume --hook``, as Claude Code runs it,
with the hook input on standard input) is run in B's clone and its output searched for
the handoff. B polls only every 60 s, so what the hook hands over is what its check of
the remote brought: through B's daemon (its control socket) or, with no daemon, by the
hook itself.

What the check adds to a session start is the hook's time with the check
(``fresh_timeout = 2``) less its time without (``fresh_timeout = 0``, two configs of the
same device), run in turns, with nothing new on the remote: the common case. Measured
with a remote on the local disk and over ssh to 127.0.0.1, each with the daemon
answering and with no daemon.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from bench import world
from bench.context import Context
from bench.report import Row
from bench.stats import Summary, seconds
from tests.support.claude import hook_input
from tests.support.devices import Device, cli_env, git, handoff_text, make_device
from tests.support.sshd import make_key, running_sshd, ssh_command

GAP = 1.0
"""Seconds between A's push and the start of B's session."""
TARGET_ADDS = 0.3
"""The most the check may add to a session start, median."""
FRESH = 2.0


@dataclass(frozen=True)
class Hook:
    """One run of B's session-start hook."""

    took: float
    output: str

    def context(self) -> str:
        if not self.output.strip():
            return ""
        data = json.loads(self.output)
        specific = data.get("hookSpecificOutput") or {}
        return str(specific.get("additionalContext", ""))

    def message(self) -> str:
        if not self.output.strip():
            return ""
        return str(json.loads(self.output).get("systemMessage", ""))


def run_hook(device: Device, config: Path) -> Hook:
    """B's ``SessionStart`` hook with ``config``, as Claude Code runs it; its wall time."""
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "convosyncd", "--config", str(config), "resume", "--hook"],
        input=hook_input(device.repo),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=device.repo,
        env=cli_env(bytecode=True),
        check=False,
    )
    took = time.monotonic() - start
    if result.returncode != 0 or "Traceback" in result.stderr:
        raise world.BenchError(f"the hook failed ({result.returncode}): {result.stderr[-2000:]}")
    return Hook(took, result.stdout)


def without_check(device: Device) -> Path:
    """A second config of ``device`` (same state, same repo) with ``fresh_timeout = 0``."""
    device.write_config(fresh_timeout=0)
    path = device.root / "config-no-check.toml"
    shutil.copyfile(device.config, path)
    device.write_config(fresh_timeout=FRESH)
    return path


@dataclass
class _Arrivals:
    label: str
    hooks: list[Hook] = field(default_factory=list)
    found: int = 0


def _arrivals(context: Context, root: Path, label: str, *, daemon: bool) -> _Arrivals:
    """Push, wait :data:`GAP`, start B's session: is the handoff in it?"""
    plan = context.plan
    remote = world.new_remote(root, f"{world.slug(label)}.git")
    a = make_device(root, remote, f"a-{world.slug(label)}", register=False)
    b = make_device(
        root, remote, f"b-{world.slug(label)}", pull_interval=60.0, notify=False, settle=1.0
    )
    b.write_config(fresh_timeout=FRESH)
    publisher = world.PlumbingPublisher(a.repo, a.name)
    outcome = _Arrivals(label)
    with ExitStack() as stack:
        if daemon:
            running = world.start_daemon(b)
            stack.callback(running.stop)
            running.process.wait_for_log("control socket ", timeout=30)
        for index in range(plan.warmup + plan.fresh_samples):
            marker = f"S-{world.slug(label)}-{index:03d}"
            publisher.commit(handoff_text(f"Session handoff {marker}", fact=f"marker {marker}"))
            publisher.push()
            pushed = world.ref_stamp(remote).mtime
            time.sleep(max(0.0, pushed + GAP - time.time()))
            hook = run_hook(b, b.config)
            if index < plan.warmup:
                continue
            outcome.hooks.append(hook)
            outcome.found += marker in hook.context()
    return outcome


@dataclass
class _Cost:
    label: str
    target: bool
    checked: list[float] = field(default_factory=list)
    unchecked: list[float] = field(default_factory=list)
    notes: set[str] = field(default_factory=set)


def _cost(context: Context, b: Device, label: str, *, daemon: bool, target: bool) -> _Cost:
    """The hook with and without the check, in turns, with nothing new on the remote."""
    plan = context.plan
    bare = without_check(b)
    outcome = _Cost(label, target)
    with ExitStack() as stack:
        if daemon:
            running = world.start_daemon(b)
            stack.callback(running.stop)
            running.process.wait_for_log("control socket ", timeout=30)
        for index in range(plan.warmup + plan.fresh_samples):
            checked = run_hook(b, b.config)
            unchecked = run_hook(b, bare)
            if "could not be checked" in checked.message():
                outcome.notes.add(checked.message())
            if index >= plan.warmup:
                outcome.checked.append(checked.took)
                outcome.unchecked.append(unchecked.took)
    if outcome.notes:
        raise world.BenchError(f"{label}: the check failed: {sorted(outcome.notes)[:2]}")
    return outcome


def _ssh_device(context: Context, root: Path, stack: ExitStack) -> Device | None:
    """B with its remote over ssh to a real sshd on 127.0.0.1, or None without sshd."""
    if not (shutil.which("sshd") or Path("/usr/sbin/sshd").exists()):
        context.report.notes.append("session start: no sshd here, so no ssh rows")
        return None
    server = stack.enter_context(running_sshd(root / "sshd"))
    key = make_key(root / "client_ed25519")
    server.authorize(key.with_suffix(".pub"))
    remote = world.copy_remote(context.template(), root / "ssh.git")
    b = make_device(root, remote, "b-ssh", pull_interval=60.0, notify=False)
    git(b.repo, "remote", "set-url", "origin", server.url(remote))
    known = server.known_hosts(root / "known_hosts")
    git(b.repo, "config", "core.sshCommand", ssh_command(key, known))
    b.write_config(fresh_timeout=FRESH)
    return b


def run(context: Context) -> None:
    root = context.folder("session")
    plan = context.plan
    context.say(
        f"session start: a push {GAP:g} s before each session, {plan.fresh_samples} sessions, "
        "with and without a daemon"
    )
    arrivals = [
        _arrivals(context, root, "daemon answering", daemon=True),
        _arrivals(context, root, "no daemon", daemon=False),
    ]
    costs: list[_Cost] = []
    with ExitStack() as stack:
        local = make_device(
            root,
            world.copy_remote(context.template(), root / "local.git"),
            "b-local",
            pull_interval=60.0,
            notify=False,
        )
        local.write_config(fresh_timeout=FRESH)
        kinds: list[tuple[Device, str, bool, bool]] = [
            (local, "remote on the local disk, daemon answering", True, True),
            (local, "remote on the local disk, no daemon", False, True),
        ]
        over_ssh = _ssh_device(context, root, stack)
        if over_ssh is not None:
            kinds += [
                (over_ssh, "ssh to 127.0.0.1, the daemon's shared connection", True, True),
                (over_ssh, "ssh to 127.0.0.1, no daemon (a connection of its own)", False, False),
            ]
        for device, label, daemon, target in kinds:
            context.say(f"session start: what the check adds, {label}")
            costs.append(_cost(context, device, label, daemon=daemon, target=target))
    _report(context, arrivals, costs)


def _report(context: Context, arrivals: list[_Arrivals], costs: list[_Cost]) -> None:
    report = context.report
    for outcome in arrivals:
        count = len(outcome.hooks)
        report.add(
            Row(
                "session",
                f"push → in B's next session ({GAP:g} s later; B polls every 60 s)",
                outcome.label,
                Summary.of([hook.took for hook in outcome.hooks]),
                note=f"{outcome.found} of {count} sessions had the handoff; the time is the hook's",
            )
        )
        report.target(
            "session",
            f"every handoff pushed ≥ {GAP:g} s before a session starts is in it ({outcome.label})",
            f"{outcome.found} of {count}",
            outcome.found == count,
        )
    for cost in costs:
        checked, unchecked = Summary.of(cost.checked), Summary.of(cost.unchecked)
        differences = [
            with_check - without
            for with_check, without in zip(cost.checked, cost.unchecked, strict=True)
        ]
        adds = Summary.of(differences).median
        report.add(
            Row(
                "session",
                "session-start hook, with the check (fresh_timeout 2 s)",
                cost.label,
                checked,
                note=f"without the check: median {seconds(unchecked.median)}",
            )
        )
        report.add(
            Row(
                "session",
                "what the check adds to a session start (with − without, in turns)",
                cost.label,
                Summary.of(differences),
                note="nothing new on the remote: the common case",
            )
        )
        if cost.target:
            report.target(
                "session",
                f"the check adds ≤ {seconds(TARGET_ADDS)} to a session start, median "
                f"({cost.label})",
                seconds(adds),
                adds <= TARGET_ADDS,
            )
