"""The command line: parse, dispatch to ``commands/``, turn errors into one line.

A mistake the person can fix prints ``convosyncd: <what, where, what to do>`` and exits
with the error's code (2 for bad input). Anything unexpected prints one line naming a
log file that holds the whole story.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from convosyncd import __version__, logs
from convosyncd.commands import (
    add_remove,
    demo,
    doctor,
    forget,
    key,
    log,
    resume,
    run,
    service,
    status,
    sync,
)
from convosyncd.config import default_config_path, default_state_dir
from convosyncd.errors import ConvosyncError
from convosyncd.masking import mask_credentials

COMMANDS = (add_remove, run, sync, status, resume, log, forget, service, doctor, key, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convosyncd",
        description=(
            "Moves AI coding-session handoffs between machines: publishes "
            ".convosync/session-handoff-draft.md to a git sync branch and brings other "
            "devices' handoffs back."
        ),
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"config file (default: $CONVOSYNC_CONFIG, else {default_config_path()})",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    parser.add_argument("--version", action="version", version=f"convosyncd {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config is None:
        args.config = default_config_path()
    args.config = args.config.expanduser().absolute()
    try:
        code: int = args.handler(args)
        return code
    except ConvosyncError as error:
        print(f"convosyncd: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("convosyncd: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`convosyncd log | head`): nothing is wrong, nothing to
        # report. Python would print an error flushing standard output at exit.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as error:
        report = _write_crash_report(argv)
        print(
            f"convosyncd: unexpected {type(error).__name__}: {mask_credentials(str(error))} "
            f"(the details are in {report}; please include them in a bug report)",
            file=sys.stderr,
        )
        return 70


def _write_crash_report(argv: Sequence[str] | None) -> Path:
    # The command line and the traceback can hold a remote URL with a password in it
    # (an argument, a path built from one, an exception's message): a crash report is
    # meant to be pasted into a bug report, so it is masked like the log.
    report = mask_credentials(
        f"--- {datetime.now(timezone.utc).isoformat()} convosyncd {__version__}\n"
        f"python {sys.version.split()[0]} argv {list(argv or sys.argv[1:])}\n"
        + traceback.format_exc()
    )
    folder = default_state_dir()
    path = folder / "crash.log"
    try:
        logs.make_room(path)  # rotated like the log, 0600 in an owner-only folder
        with path.open("a", encoding="utf-8") as handle:
            handle.write(report)
    except OSError as problem:
        sys.stderr.write(f"{report}(could not write {path}: {problem.strerror or problem})\n")
        return Path("<stderr>")
    return path


if __name__ == "__main__":
    raise SystemExit(main())
