"""``convosyncd resume [PATH]``: the latest handoff of every other device, newest first.

First has the remote checked, by the running daemon or by itself, for at most
``fresh_timeout`` seconds (:mod:`convosyncd.freshness`), then reads the local sync
branch; offline, it says the remote could not be checked and prints what this machine
has. ``--hook`` is the Claude Code session-start hook (:mod:`convosyncd.hook`).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from convosyncd import config as configs
from convosyncd import keys
from convosyncd import state as states
from convosyncd.catalog import Catalog
from convosyncd.config import Config, RepoConfig
from convosyncd.errors import UsageError
from convosyncd.freshness import freshen
from convosyncd.gitcmd import Git
from convosyncd.gitstore import SyncBranch
from convosyncd.handoff import Handoff, describe_age


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("resume", help="print the other devices' latest handoffs")
    parser.add_argument(
        "path",
        nargs="?",
        type=Path,
        default=None,
        help="a registered repo (default: the one you are in)",
    )
    parser.add_argument(
        "--hook",
        action="store_true",
        help="run as Claude Code's SessionStart hook: print the newest handoff from another "
        "device that this device has not loaded yet, as the hook's JSON (nothing if none); "
        "always exits 0",
    )
    parser.set_defaults(handler=run)


def open_catalog(config: Config, repo: RepoConfig) -> Catalog:
    """The repo's sync branch as this device's keyring sees it (read-only)."""
    keyring = keys.require(keys.key_file(config.path))
    branch = SyncBranch(
        Git(repo.path, network_timeout=config.network_timeout),
        remote=repo.remote,
        branch=repo.branch,
    )
    state, _fresh = states.load(states.state_file(config.state_dir, repo.path), repair=False)
    return Catalog(
        branch,
        lambda: keyring,
        max_bytes=config.max_draft_bytes,
        first_seen=dict(state.first_seen),
        known_devices=lambda: (config.device, *state.known_devices),
    )


def others_latest(config: Config, repo: RepoConfig) -> list[Handoff]:
    """The newest verified handoff of each other device on the local sync branch,
    newest first."""
    catalog = open_catalog(config, repo)
    now = datetime.now(timezone.utc)
    found = [h for h in catalog.latest(catalog.branch.tip(), now=now) if h.device != config.device]
    return sorted(found, key=lambda handoff: catalog.order_key(handoff, now), reverse=True)


def render(handoffs: list[Handoff], now: datetime) -> str:
    """The text ``resume`` prints."""
    blocks = []
    for handoff in handoffs:
        blocks.append(
            "\n".join(
                [
                    f"## Handoff from {handoff.device} ({describe_age(handoff.created, now)}, "
                    f"{handoff.created_text})",
                    f"Branch: {handoff.repo_branch} · Commit: {handoff.repo_commit}",
                    "",
                    handoff.body.strip("\n"),
                ]
            )
        )
    return "\n\n".join(blocks) + "\n"


def run(args: argparse.Namespace) -> int:
    if args.hook:
        from convosyncd import hook

        return hook.run(args)
    config = configs.load(args.config)
    repo = configs.find_repo(config, args.path)
    if not repo.path.is_dir():
        raise UsageError(
            f"the repo folder {repo.path} is missing: put it back, or `convosyncd remove` it"
        )
    note = freshen(config, repo, config.fresh_timeout)
    if note:
        print(f"convosyncd: {note}; showing what this machine has", file=sys.stderr)
    handoffs = others_latest(config, repo)
    if not handoffs:
        print(
            f"No handoffs from other devices in {repo.path} yet (this device is {config.device})."
        )
        return 0
    print(render(handoffs, datetime.now(timezone.utc)), end="")
    return 0
