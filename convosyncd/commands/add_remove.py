"""``convosyncd add PATH`` and ``convosyncd remove PATH``: the list of synced repos."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from convosyncd import config as configs
from convosyncd import keys
from convosyncd import state as states
from convosyncd.config import RepoConfig
from convosyncd.errors import ConvosyncError, UsageError
from convosyncd.gitcmd import Git
from convosyncd.worktree import WorkTree, validate


def add_parser(subparsers: Any) -> None:
    add = subparsers.add_parser("add", help="register a git work tree to sync")
    add.add_argument("path", type=Path, help="the top folder of a git work tree")
    add.add_argument(
        "--remote", default="origin", help="the git remote to sync through (default: origin)"
    )
    add.add_argument("--branch", default="convosync", help="the sync branch (default: convosync)")
    add.set_defaults(handler=run_add)
    remove = subparsers.add_parser(
        "remove", help="stop syncing a repo and delete its state (its handoffs stay)"
    )
    remove.add_argument("path", type=Path, help="a registered repo")
    remove.set_defaults(handler=run_remove)


def run_add(args: argparse.Namespace) -> int:
    config = configs.load(args.config)
    path = Path(args.path).expanduser().absolute()
    top = validate(path, args.remote)
    repo = configs.parse(
        {"repos": [{"path": str(top), "remote": args.remote, "branch": args.branch}]},
        args.config,
    ).repos[0]
    tree = WorkTree(top, Git(top, network_timeout=config.network_timeout))
    tree.prepare(config.device)
    # Before the config changes: a key file others can read stops `add` with its fix.
    keyring, made = keys.ensure(keys.key_file(args.config))
    changed = configs.save_repo(args.config, RepoConfig(top, repo.remote, repo.branch))
    verb = "Registered" if changed else "Already registered:"
    print(
        f"{verb} {top} (remote {repo.remote}, sync branch {repo.branch}, device {config.device})."
    )
    print(f"Config: {args.config}")
    print(
        "A running daemon picks this up by itself; start one with `convosyncd run` or "
        "`convosyncd service install`."
    )
    if made:
        print(
            f"Made a new sync key (key id {keyring.current.key_id}), kept in "
            f"{keys.key_file(args.config)}: only devices that hold it can read your handoffs."
        )
        print("Pair each of your other devices with it:")
        print("  here:   convosyncd key show")
        print("  there:  convosyncd key import   (and paste the code `key show` printed)")
        print(
            "If another of your devices already has a sync key, pair the other way round "
            "instead: `key show` there, `key import` here."
        )
    return 0


def run_remove(args: argparse.Namespace) -> int:
    config = configs.load(args.config)
    path = Path(args.path).expanduser().absolute()
    repo = config.repo_for(path)
    if repo is None:
        known = ", ".join(str(repo.path) for repo in config.repos) or "none"
        raise UsageError(f"{path} is not registered in {args.config} (registered: {known})")
    configs.drop_repo(args.config, path)
    print(
        f"Removed {path} from {args.config}. Its handoffs stay on the sync branch and in "
        ".convosync/; `convosyncd add` brings it back."
    )
    # Only the daemon's memory of the repo goes; the repo and its sync branch are the
    # person's. A daemon still finishing a cycle of it may write its state once more:
    # the next daemon start deletes that too (state.forget_unregistered).
    try:
        removed = states.forget_repo(config.state_dir, repo.path)
    except OSError as error:
        raise ConvosyncError(
            f"{path} is no longer registered, but its state in {config.state_dir} could not "
            f"be deleted ({error}); it is deleted at the next start of the daemon"
        ) from None
    if removed:
        names = ", ".join(_shown(config.state_dir, item) for item in removed)
        print(f"Deleted its state in {config.state_dir}: {names}.")
    else:
        print(f"It had no state in {config.state_dir}.")
    return 0


def _shown(state_dir: Path, path: Path) -> str:
    if path == states.polls_file(state_dir):
        return f"its entry in {path.name}"
    return str(path.relative_to(state_dir))
