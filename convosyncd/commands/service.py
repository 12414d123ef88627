"""``convosyncd service install | uninstall | status``: run the daemon as a service.

A systemd user unit on Linux, a launchd agent on macOS (see :mod:`convosyncd.service`).
``install --dry-run`` shows the file and the commands without doing anything, and
``install --print`` writes only the file, to standard output.
"""

from __future__ import annotations

import argparse
from typing import Any

from convosyncd import config as configs
from convosyncd import service
from convosyncd.daemon_lock import daemon_running, lock_path
from convosyncd.errors import UsageError


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "service", help="run the daemon as a systemd user service or a launchd agent"
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    install = actions.add_parser("install", help="write the unit (or agent), enable and start it")
    shown = install.add_mutually_exclusive_group()
    shown.add_argument(
        "--dry-run", action="store_true", help="show the file and the commands; change nothing"
    )
    shown.add_argument(
        "--print", action="store_true", help="write the file to standard output only"
    )
    install.set_defaults(handler=run_install)
    uninstall = actions.add_parser("uninstall", help="stop, disable and remove the service")
    uninstall.add_argument(
        "--dry-run", action="store_true", help="show what would be done; change nothing"
    )
    uninstall.set_defaults(handler=run_uninstall)
    status = actions.add_parser("status", help="installed? running? last exit? where is the log?")
    status.set_defaults(handler=run_status)


def run_install(args: argparse.Namespace) -> int:
    manager = service.manager_for()
    config = configs.load(args.config)
    if manager == "launchd" and not (args.print or args.dry_run):
        service.launchd_log_dir().mkdir(parents=True, exist_ok=True)
    if args.print:
        print(service.plan_install(args.config, manager).text, end="")
        return 0
    if args.dry_run:
        plan = service.plan_install(args.config, manager)
        print(f"Would write {plan.path}:")
        print(plan.text, end="" if plan.text.endswith("\n") else "\n")
        print("Would run:")
        for step in plan.start:
            print(f"  {step}")
        return 0
    problem = service.manager_problem(manager)
    before = service.inspect(manager, config.state_dir)
    # A service started next to a `convosyncd run` would find the state folder locked
    # and exit 3 (which systemd does not restart).
    foreground = daemon_running(config.state_dir) and before.running is not True
    if foreground and problem is None:
        raise UsageError(
            f"a `convosyncd run` outside the service is using the state folder "
            f"{config.state_dir}: stop it first (Ctrl-C in its terminal), then run "
            "`convosyncd service install` again"
        )
    plan = service.plan_install(args.config, manager, restart=bool(before.running))
    changed = not plan.path.is_file() or plan.path.read_bytes() != plan.content
    if changed:
        from convosyncd.atomic import write_atomically

        write_atomically(plan.path, plan.content)
    print(f"{'Wrote' if changed else 'Unchanged:'} {plan.path}")
    print(f"  it runs: {' '.join(plan.command)}")
    if not config.repos:
        print("  no repos are registered yet: `convosyncd add PATH` (the service picks it up)")
    if problem is not None:
        print(f"Not started: {problem}.")
        if foreground:
            print(
                "A `convosyncd run` is running now with the same state folder: stop it "
                "before starting the service."
            )
        print("Where a user service manager runs (your desktop session), start it with:")
        for step in plan.start:
            print(f"  {step}")
        return 0
    steps = plan.start if changed or not before.running else ()
    for step in steps:
        service.run_step(step)
        print(f"Ran: {step}")
    after = service.inspect(manager, config.state_dir)
    print(f"convosyncd is {'running' if after.running else after.state}; logs: {after.log}")
    return 0 if after.running else 1


def run_uninstall(args: argparse.Namespace) -> int:
    manager = service.manager_for()
    path = service.installed_path(manager)
    if not path.exists():
        print(f"Not installed: {path} does not exist.")
        return 0
    problem = service.manager_problem(manager)
    stop = service.stop_steps(manager)
    forget = service.after_removal_steps(manager)
    if args.dry_run:
        if problem is None:
            for step in stop:
                print(f"Would run: {step}")
        print(f"Would remove {path}")
        if problem is None:
            for step in forget:
                print(f"Would run: {step}")
        return 0
    if problem is None:
        for step in stop:
            service.run_step(step)
            print(f"Ran: {step}")
    for removed in service.remove_files(manager):
        print(f"Removed {removed}")
    if problem is not None:
        print(f"{problem}, so nothing was stopped here.")
        print("Where the user service manager runs, stop it and let it forget the unit:")
        print(f"  systemctl --user stop {service.UNIT_NAME}")
        print("  systemctl --user daemon-reload")
        return 0
    for step in forget:
        service.run_step(step)
        print(f"Ran: {step}")
    return 0


def run_status(args: argparse.Namespace) -> int:
    manager = service.manager_for()
    config = configs.load(args.config)
    status = service.inspect(manager, config.state_dir)
    kind = "systemd user unit" if manager == "systemd" else "launchd agent"
    if status.installed:
        print(f"installed   yes, {kind} {status.path}")
        program = status.program or "(no ExecStart)"
        suffix = "" if status.program_ok else "  (MISSING: run `convosyncd service install` again)"
        print(f"runs        {program}{suffix}")
    else:
        print(f"installed   no ({status.path} does not exist; `convosyncd service install`)")
    if status.running is None:
        print(f"running     cannot ask the service manager: {status.manager_problem}")
    else:
        print(f"running     {'yes' if status.running else 'no'}, {status.state}")
    lock = "yes" if daemon_running(config.state_dir) else "no"
    print(f"daemon      a `convosyncd run` holds {lock_path(config.state_dir)}: {lock}")
    print(f"last exit   {status.last_exit or 'none recorded'}")
    print(f"log         {status.log}")
    return 0
