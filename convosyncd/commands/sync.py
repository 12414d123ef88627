"""``convosyncd sync [PATH...]``: one full cycle now, then exit (1 if a repo failed).

With a daemon running, the daemon runs the cycles (through its control socket, with
its shared ssh connections) and this command prints its results: the work is not done
twice, and nothing waits on the daemon's locks. Without one, the cycles run here.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from convosyncd import config as configs
from convosyncd import control, keys, logs
from convosyncd.config import Config, RepoConfig
from convosyncd.errors import ConvosyncError, UsageError
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


def daemon_wait(config: Config) -> float:
    """Seconds to let the daemon's cycles run: a cycle's fetches and pushes are each
    limited to ``network_timeout``, and a push is tried a dozen times at most."""
    return min(control.MAX_WAIT, 20 * config.network_timeout)


def through_daemon(config: Config, repos: list[RepoConfig]) -> list[CycleResult | str] | None:
    """Have the running daemon run the cycles; each repo's result, or a line saying it
    is still running. None when no daemon runs (or it does not watch one of the repos
    yet): the caller runs them itself."""
    wait = daemon_wait(config)
    request = {"op": "sync", "repos": [str(repo.path) for repo in repos], "wait": wait}
    reply = control.ask(config.state_dir, request, timeout=wait + 5)
    if reply is None or reply.get("code") == "unknown-repo":
        return None
    if not reply["ok"]:
        raise ConvosyncError(
            f"the running daemon did not sync: {reply.get('error')}; "
            "`convosyncd status` shows its state"
        )
    found: list[CycleResult | str] = []
    for item in reply.get("results", []):
        data = item.get("result")
        if isinstance(data, dict):
            found.append(result_of(data))
        else:
            found.append(
                f"✗ {item.get('repo')}: still running in the daemon after {wait:g} s "
                "(`convosyncd status` shows how it ends)"
            )
    return found


def result_of(data: dict[str, Any]) -> CycleResult:
    """A :class:`CycleResult` from its JSON form."""
    names = {item.name for item in dataclasses.fields(CycleResult)}
    values = {key: value for key, value in data.items() if key in names}
    for key in ("arrived", "notified"):
        values[key] = tuple(values.get(key) or ())
    return CycleResult(**values)


def run(args: argparse.Namespace) -> int:
    logs.setup(verbose=args.verbose)
    config = configs.load(args.config)
    if config.repos:
        # As the daemon does (Daemon.ensure_key): sealing with a key no other device holds
        # yet is undone by pairing; publishing nothing is not. A key file that others can
        # read stops here, with its fix.
        keyring, made = keys.ensure(keys.key_file(config.path))
        if made:
            print(
                f"This device had no sync key, so one was made (key id "
                f"{keyring.current.key_id}) in {keys.key_file(config.path)}: pair your "
                "devices, `convosyncd key show` on one of them and `convosyncd key import` "
                "on each of the others."
            )
    repos = selected(config, list(args.paths))
    if not repos:
        print(f"No repos registered in {config.path}; add one with `convosyncd add PATH`.")
        return 0
    outcomes = through_daemon(config, repos)
    if outcomes is None:
        notifier = Notifier(enabled=config.notify, timeout=config.notify_timeout)
        outcomes = []
        for repo in repos:
            result = RepoSync(config, repo, notifier).cycle(require_settled=False)
            print(describe(result), flush=True)
            outcomes.append(result)
    else:
        for outcome in outcomes:
            print(outcome if isinstance(outcome, str) else describe(outcome), flush=True)
    failed = any(
        isinstance(outcome, str) or not outcome.ok or outcome.draft_problem is not None
        for outcome in outcomes
    )
    return 1 if failed else 0
