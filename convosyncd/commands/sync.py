"""``convosyncd sync [PATH...]``: one full cycle now, then exit (1 if a repo failed)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from convosyncd import config as configs
from convosyncd import logs
from convosyncd.config import Config, RepoConfig
from convosyncd.errors import UsageError
from convosyncd.notify import Notifier
from convosyncd.sync import CycleResult, RepoSync


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("sync", help="publish, pull and push now, then exit")
    parser.add_argument(
        "paths", nargs="*", type=Path, metavar="PATH", help="registered repos (default: all)"
    )
    parser.set_defaults(handler=run)


def selected(config: Config, paths: list[Path]) -> list[RepoConfig]:
    """The registered repos named by ``paths`` (all when none is named)."""
    if not paths:
        return list(config.repos)
    repos = []
    for path in paths:
        repo = config.repo_containing(path)
        if repo is None:
            raise UsageError(
                f"{path.expanduser().absolute()} is not registered in {config.path}: "
                f"`convosyncd add {path}` first"
            )
        repos.append(repo)
    return repos


def describe(result: CycleResult) -> str:
    """One line for a person."""
    if not result.ok:
        return f"✗ {result.repo}: {result.error}"
    parts = []
    if result.published:
        parts.append(f"published {result.published}")
    if result.pushed:
        parts.append("pushed")
    if result.arrived:
        parts.append(f"{len(result.arrived)} handoff(s) arrived")
    if result.retained:
        parts.append(f"forgot {result.retained} handoff(s) older than keep_days")
    if result.pending:
        parts.append(f"{result.pending} waiting to be pushed")
    if result.draft_problem:
        parts.append(f"draft refused: {result.draft_problem}")
    return f"✓ {result.repo}: {', '.join(parts) or 'up to date'}"


def run(args: argparse.Namespace) -> int:
    logs.setup(verbose=args.verbose)
    config = configs.load(args.config)
    repos = selected(config, list(args.paths))
    if not repos:
        print(f"No repos registered in {config.path}; add one with `convosyncd add PATH`.")
        return 0
    notifier = Notifier(enabled=config.notify, timeout=config.notify_timeout)
    failed = False
    for repo in repos:
        result = RepoSync(config, repo, notifier).cycle(require_settled=False)
        print(describe(result), flush=True)
        failed = failed or not result.ok or result.draft_problem is not None
    return 1 if failed else 0
