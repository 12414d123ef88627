"""``python -m bench``: set everything up, measure, print the table.

    python -m bench                  the full run (about fifteen minutes)
    python -m bench --quick          fewer samples and sizes (a couple of minutes)
    python -m bench --only idle      one section (repeat --only for more)
    python -m bench --samples 50     more (or fewer) samples per measurement

Progress goes to standard error, the markdown table to standard output (and to
``--output FILE``). Everything is built in a temporary folder that is removed at the
end unless ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

from bench import world
from bench.context import Context
from bench.plan import PLANS, SECTIONS, Plan
from bench.report import Report, machine


def _runners() -> dict[str, Callable[[Context], None]]:
    from bench.sections import arrival, history, idle, publish, session, startup, wake

    return {
        "publish": publish.run,
        "arrival": arrival.run,
        "idle": idle.run,
        "history": history.run,
        "startup": startup.run,
        "session": session.run,
        "wake": wake.run,
    }


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark convosyncd against git itself; prints a markdown table.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer samples and sizes")
    size.add_argument(
        "--smoke", action="store_true", help="a few samples of one size (the test suite's run)"
    )
    parser.add_argument("--samples", type=int, help="samples per measurement (default 30)")
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        metavar="SECTION",
        help=f"run only this section ({', '.join(SECTIONS)}); may be repeated",
    )
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    if args.samples is not None and args.samples < 1:
        parser.error("--samples must be at least 1")
    return args


def choose_plan(args: argparse.Namespace) -> Plan:
    plan = PLANS["smoke" if args.smoke else "quick" if args.quick else "full"]
    return plan.with_samples(args.samples) if args.samples else plan


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    plan = choose_plan(args)
    sections = [name for name in SECTIONS if not args.only or name in args.only]
    root = Path(tempfile.mkdtemp(prefix="convosyncd-bench-"))
    description = machine()
    world.seal(root)
    report = Report(plan=plan.name)
    context = Context(plan=plan, root=root, report=report)
    runners = _runners()
    try:
        with ExitStack() as stack:
            if context.can_notify:
                from tests.support.dbus_session import RecordingNotificationServer, private_bus

                context.bus = stack.enter_context(private_bus(root / "bus"))
                context.records = root / "notifications.jsonl"
                stack.enter_context(RecordingNotificationServer(context.bus, context.records))
            else:
                report.notes.append(
                    "dbus-daemon or notify-send is missing: notifications were not measured "
                    "(Debian's dbus and libnotify-bin packages provide them)"
                )
            context.say("warming up: one daemon compiles its modules")
            context.warm_up()
            for name in sections:
                context.say(f"section {name}")
                runners[name](context)
    except world.BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"bench: kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    table = report.markdown(description)
    sys.stdout.write(table)
    if args.output is not None:
        args.output.write_text(table, encoding="utf-8")
    return 0
