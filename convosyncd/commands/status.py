"""``convosyncd status [--json]``: per repo, what waits, what happened last, what is wrong.

With a daemon running, each repo's state comes from the daemon's memory (through its
control socket); a repo it does not watch yet, or every repo when no daemon runs, from
the state files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from convosyncd import config as configs
from convosyncd import control, plugin
from convosyncd import state as states
from convosyncd.catalog import MEANING
from convosyncd.config import Config, RepoConfig
from convosyncd.daemon_lock import daemon_running
from convosyncd.state import RepoState


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("status", help="show each repo's sync state")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.set_defaults(handler=run)


ASK_TIMEOUT = 5.0
"""Seconds to wait for the daemon's answer before reading the state files instead."""


def from_daemon(config: Config) -> dict[str, Any] | None:
    """The running daemon's own report (see ``Daemon.status_report``), or None."""
    try:
        reply = control.ask(config.state_dir, {"op": "status"}, timeout=ASK_TIMEOUT)
    except control.ControlError:
        return None
    return reply if reply is not None and reply.get("ok") else None


def _state_of(
    config: Config,
    repo: RepoConfig,
    daemon: dict[str, Any] | None,
    polls: dict[str, states.Event],
) -> RepoState:
    if daemon is not None:
        data = daemon.get("repos", {}).get(str(repo.path))
        if isinstance(data, dict):
            try:
                return RepoState.from_json(data)
            except (ValueError, TypeError, KeyError, AttributeError):
                pass
    state, _ = states.load(states.state_file(config.state_dir, repo.path), repair=False)
    state.last_poll = states.latest_poll(state, polls, repo.path)
    return state


def collect(config: Config) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data."""
    repos = []
    daemon = from_daemon(config)
    polls = states.load_polls(config.state_dir)
    for repo in config.repos:
        state = _state_of(config, repo, daemon, polls)
        data = dataclasses.asdict(state)
        repos.append(
            {
                "path": str(repo.path),
                "exists": repo.path.is_dir(),
                "remote": repo.remote,
                "branch": repo.branch,
                "mode": repo.mode,
                "pending": state.pending,
                "last_publish": data["last_publish"],
                "last_push": data["last_push"],
                "last_poll": data["last_poll"],
                "last_pull": data["last_pull"],
                "last_error": data["last_error"],
                "draft_problem": data["draft_problem"],
                "last_inline": data["last_inline"],
                "inline_problem": data["inline_problem"],
                "untrusted": state.untrusted,
            }
        )
    installed, plugin_message = plugin.installed_status()
    return {
        "device": config.device,
        "config": str(config.path),
        "state_dir": str(config.state_dir),
        "daemon_running": daemon is not None or daemon_running(config.state_dir),
        "daemon_answered": daemon is not None,
        "daemon_config_error": daemon.get("config_error") if daemon is not None else None,
        "plugin": {"installed": installed, "message": plugin_message},
        "repos": repos,
    }


def untrusted_lines(untrusted: dict[str, dict[str, Any]]) -> list[str]:
    """What ``status`` says of files on the sync branch that are not the person's."""
    if not untrusted:
        return []
    counts = []
    kinds: set[str] = set()
    for device, survey in sorted(untrusted.items()):
        parts = [f"{survey[kind]} {kind}" for kind in MEANING if survey.get(kind)]
        kinds.update(kind for kind in MEANING if survey.get(kind))
        counts.append(f"{device}: {', '.join(parts)}")
    lines = [
        f"  not yours     {'; '.join(counts)}",
        "                these files do not open under your sync key, so they are never "
        "shown, notified or handed to the assistant:",
    ]
    lines += [f"                {kind}: {MEANING[kind]}" for kind in MEANING if kind in kinds]
    return lines


def _event(value: dict[str, str] | None, empty: str = "never") -> str:
    if not value:
        return empty
    return f"{value['time']}  {value['message']}".strip()


def run(args: argparse.Namespace) -> int:
    config = configs.load(args.config)
    report = collect(config)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    running = (
        "running"
        if report["daemon_running"]
        else "not running (start it: convosyncd service install, or convosyncd run)"
    )
    print(f"device {report['device']} · daemon {running}")
    if report["daemon_config_error"]:
        print(f"daemon config problem: {report['daemon_config_error']}")
    print(f"config {report['config']}")
    print(f"plugin {report['plugin']['message']}")
    if not report["repos"]:
        print("no repos registered; add one with `convosyncd add PATH`")
    for repo in report["repos"]:
        print()
        print(repo["path"] + ("" if repo["exists"] else "  (MISSING)"))
        print(f"  remote        {repo['remote']} (sync branch {repo['branch']})")
        print(f"  waiting       {repo['pending']} handoff(s) to push")
        print(f"  last publish  {_event(repo['last_publish'])}")
        print(f"  last push     {_event(repo['last_push'])}")
        print(f"  last poll     {_event(repo['last_poll'])}")
        print(f"  last pull     {_event(repo['last_pull'])}")
        print(f"  last error    {_event(repo['last_error'], 'none')}")
        if repo["draft_problem"]:
            print(f"  draft         {_event(repo['draft_problem'])}")
        for line in untrusted_lines(repo["untrusted"]):
            print(line)
        if repo["mode"] == "inline":
            print(f"  inline        {_event(repo['last_inline'])}")
            if repo["inline_problem"]:
                print(f"  inline issue  {_event(repo['inline_problem'])}")
    return 0
