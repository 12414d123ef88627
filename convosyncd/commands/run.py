"""``convosyncd run``: the daemon in the foreground (what the service runs)."""

from __future__ import annotations

import argparse
from typing import Any

from convosyncd import config as configs
from convosyncd import logs
from convosyncd.daemon import Daemon


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("run", help="run the daemon in the foreground")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    logs.setup(verbose=args.verbose, daemon=True, state_dir=configs.load(args.config).state_dir)
    return Daemon(args.config).run()
