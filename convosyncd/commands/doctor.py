"""``convosyncd doctor [--json]``: every check, ✓ or ✗ with its fix; exit 0 only if all pass."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from convosyncd import doctor


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "doctor", help="check git, the config, repos, remotes, agents, notifications, service"
    )
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    checks = doctor.run_checks(args.config)
    ok = doctor.all_passed(checks)
    if args.json:
        report = {"ok": ok, "checks": [dataclasses.asdict(check) for check in checks]}
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        for check in checks:
            print(check.line())
        failures = sum(1 for check in checks if not check.ok)
        print()
        print("All checks passed." if ok else f"{failures} problem(s) found.")
    return 0 if ok else 1
