"""Which git commands the daemon's own code runs, counted in this process.

Not a timing: the same :class:`convosyncd.sync.RepoSync` calls the daemon makes (an idle
poll; a publish followed by its push and refresh), run here on a throwaway device with
``convosyncd.gitcmd.run_git`` wrapped to record each command.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from bench import world
from convosyncd import config as configs
from convosyncd import gitcmd
from convosyncd.notify import Notifier
from convosyncd.sync import RepoSync
from tests.support.devices import Device, handoff_text, make_device


def git_commands(action: Callable[[], object]) -> list[str]:
    """The git subcommands ``action`` ran, in order."""
    with mock.patch.object(gitcmd, "run_git", wraps=gitcmd.run_git) as spy:
        action()
    return [str(call.args[0][0]) for call in spy.call_args_list]


def describe(commands: list[str]) -> str:
    """``ls-remote, rev-parse ×3`` for a list of subcommands."""
    counts = Counter(commands)
    return ", ".join(
        f"{name} ×{count}" if count > 1 else name for name, count in sorted(counts.items())
    )


@dataclass(frozen=True)
class Probe:
    """The git commands of the daemon's two paths."""

    idle_poll: list[str]
    publish: list[str]


def _sync(device: Device) -> RepoSync:
    config = configs.load(device.config)
    return RepoSync(config, config.repos[0], Notifier(enabled=False, timeout=1.0))


def probe(root: Path, template: Path) -> Probe:
    """Count the git commands of an idle poll and of a publish on a fresh device."""
    root.mkdir(parents=True, exist_ok=True)
    remote = world.copy_remote(template, root / "probe.git")
    device = make_device(root, remote, "probe", notify=False)
    sync = _sync(device)
    first = sync.cycle()
    if not first.ok:
        raise world.BenchError(f"the probe's first cycle failed: {first.error}")
    idle = git_commands(sync.cycle)

    def publish() -> None:
        sync.ensure_layout()
        outcome = sync.publish(require_settled=False)
        if outcome.status != "published":
            raise world.BenchError(f"the probe's draft was not published: {outcome}")
        sync.push()
        sync.refresh()

    # What a daemon that has published before does (the first publish also reads the
    # person's git identity once): the daemon's own steps, publish, push, refresh.
    device.write_draft(handoff_text("Probing the publish path"))
    publish()
    device.write_draft(handoff_text("Probing the publish path again"))
    return Probe(idle_poll=idle, publish=git_commands(publish))
