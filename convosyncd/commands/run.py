"""``convosyncd run``: the daemon in the foreground (what the service runs)."""

from __future__ import annotations

import argparse
from typing import Any

from convosyncd import config as configs
from convosyncd import logs


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("run", help="run the daemon in the foreground")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: the daemon pulls in watchdog, jeepney and the sync engine, which
    # every other command (the session-start hook above all) must not pay for.
    from convosyncd.daemon import Daemon

    logs.setup(verbose=args.verbose, daemon=True, state_dir=configs.load(args.config).state_dir)
    return Daemon(args.config).run()
