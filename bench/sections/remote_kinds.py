"""3. Idle cost, by kind of remote: the CPU of one poll of one repo when nothing changed.

Measured in this process on the daemon's own code (``RepoSync.cycle``) with
``getrusage``, which counts in microseconds: the poll's own CPU, and that of the
processes it started and waited for (git, and the ssh or ``git-upload-pack`` git
started). One repo, three kinds of remote, polls in turns:

* a bare repository on the local disk, read directly (the remotes of the rows above);
* the same repository asked through ``git ls-remote`` (an ``uploadpack`` setting sends
  every poll to git, as for a remote on a network file system);
* the same repository over ssh, to a real sshd on 127.0.0.1 with key authentication:
  a fresh connection per poll, as git makes it on its own, and the one connection the
  daemon keeps per server (:mod:`convosyncd.sshshare`). Client side only: the
  server's ``git-upload-pack`` runs under sshd. Left out where sshd is not installed.

From each median follows what 100 such repos cost at the default ``pull_interval``.
"""

from __future__ import annotations

import resource
import shutil
from contextlib import ExitStack
from dataclasses import dataclass, field

from bench import world
from bench.context import Context
from bench.report import Row
from bench.stats import Summary
from convosyncd import config as configs
from convosyncd.notify import Notifier
from convosyncd.sshshare import SshSharing
from convosyncd.sync import RepoSync
from tests.support.devices import Device, git, make_device
from tests.support.sshd import make_key, running_sshd, ssh_command

DEFAULT_INTERVAL = 60.0
REPOS = 100


@dataclass
class _Kind:
    label: str
    sync: RepoSync
    own: list[float] = field(default_factory=list)
    children: list[float] = field(default_factory=list)

    def poll(self) -> None:
        before_self = resource.getrusage(resource.RUSAGE_SELF)
        before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = self.sync.cycle()
        after_self = resource.getrusage(resource.RUSAGE_SELF)
        after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
        if not result.ok:
            raise world.BenchError(f"an idle poll ({self.label}) failed: {result.error}")
        self.own.append(_cpu(after_self) - _cpu(before_self))
        self.children.append(_cpu(after_children) - _cpu(before_children))


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def _sync(device: Device, sharing: SshSharing | None = None) -> RepoSync:
    config = configs.load(device.config)
    notifier = Notifier(enabled=False, timeout=1.0)
    return RepoSync(config, config.repos[0], notifier, sharing=sharing)


def _kinds(context: Context, stack: ExitStack) -> list[_Kind]:
    root = context.folder("remote-kinds")
    kinds = []
    local = make_device(root, world.copy_remote(context.template(), root / "local.git"), "local")
    kinds.append(_Kind("local disk, read directly", _sync(local)))
    through = make_device(
        root, world.copy_remote(context.template(), root / "git.git"), "through-git"
    )
    git(through.repo, "config", "remote.origin.uploadpack", "git-upload-pack")
    kinds.append(_Kind("local disk, through git ls-remote", _sync(through)))
    if shutil.which("sshd") or shutil.which("/usr/sbin/sshd"):
        server = stack.enter_context(running_sshd(root / "sshd"))
        key = make_key(root / "client_ed25519")
        server.authorize(key.with_suffix(".pub"))
        remote = world.copy_remote(context.template(), root / "ssh.git")
        over_ssh = make_device(root, remote, "over-ssh")
        git(over_ssh.repo, "remote", "set-url", "origin", server.url(remote))
        known = server.known_hosts(root / "known_hosts")
        git(over_ssh.repo, "config", "core.sshCommand", ssh_command(key, known))
        kinds.append(_Kind("ssh to 127.0.0.1, a new connection each poll", _sync(over_ssh)))
        sharing = SshSharing.create(persist=600)
        if sharing is not None:
            stack.callback(sharing.close)
            kinds.append(
                _Kind("ssh to 127.0.0.1, the daemon's shared connection", _sync(over_ssh, sharing))
            )
    else:
        context.report.notes.append("idle by kind of remote: no sshd here, so no ssh row")
    return kinds


def run(context: Context) -> None:
    plan = context.plan
    with ExitStack() as stack:
        kinds = _kinds(context, stack)
        context.say(f"idle: one poll by kind of remote ({', '.join(k.label for k in kinds)})")
        for kind in kinds:
            for _ in range(2):  # the first polls fetch, locate the remote, load modules
                kind.poll()
            kind.own.clear()
            kind.children.clear()
        for _ in range(plan.samples):
            for kind in kinds:
                kind.poll()
    for kind in kinds:
        total = Summary.of(
            [own + child for own, child in zip(kind.own, kind.children, strict=True)]
        )
        own = Summary.of(kind.own).median
        children = Summary.of(kind.children).median
        share = 100.0 * REPOS * total.median / DEFAULT_INTERVAL
        context.report.add(
            Row(
                "idle",
                "one idle poll of one repo: CPU (own + processes)",
                kind.label,
                total,
                note=(
                    f"own {own * 1e3:.2f} ms, processes {children * 1e3:.2f} ms; "
                    f"{REPOS} such repos at pull_interval {DEFAULT_INTERVAL:g} s: "
                    f"{share:.3f} % of a core"
                ),
            )
        )
