"""``convosyncd forget NAME... | --device D [--before DATE] [--purge]``: take handoffs
back, on every device.

The handoffs are chosen by name (as ``convosyncd log`` shows them) or by device,
optionally only those published before a date. Only what is the person's may be taken:
a handoff that opens under their key, or a format 1 file (plain text from convosyncd
0.1, most likely their own). The forget record and the removal are one commit on the
local sync branch, made under the repo's lock (so a running daemon waits), then pushed;
every device's merge drops them from then on (:mod:`convosyncd.sync.forget`).
``--purge`` also rewrites the remote's sync branch so that no commit on it holds them.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from convosyncd import config as configs
from convosyncd import logs
from convosyncd.commands.log import created_of, find_named, what_it_is
from convosyncd.errors import ConvosyncError, UsageError
from convosyncd.handoff import format_time, parse_time
from convosyncd.layout import Location
from convosyncd.notify import Notifier
from convosyncd.sync import RepoSync, is_offline_error
from convosyncd.sync.forget import Chosen, Forgetter, older_than

_DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "forget", help="take handoffs back off the sync branch, on every device"
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="handoffs as `convosyncd log` names them (device/file name, or the file name)",
    )
    parser.add_argument(
        "--device", metavar="D", help="every handoff of device D (or those before --before)"
    )
    parser.add_argument(
        "--before",
        metavar="DATE",
        help="with --device: only handoffs published before DATE (YYYY-MM-DD, midnight UTC, "
        "or an ISO time such as 2026-11-23T22:45:00Z)",
    )
    parser.add_argument(
        "--purge",
        action="store_true",
        help="also rewrite the sync branch so that no commit on it holds them, nor anything "
        "forgotten before (alone: only the latter); pushed with a lease",
    )
    parser.add_argument(
        "--repo",
        type=Path,
        default=None,
        metavar="PATH",
        help="a registered repo (default: the one you are in)",
    )
    parser.set_defaults(handler=run)


def parse_date(text: str) -> datetime:
    """``--before``'s value: a day (midnight UTC) or an ISO time (UTC unless it says)."""
    value = text.strip()
    moment: datetime | None = None
    if _DAY_RE.match(value):
        try:
            moment = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=timezone.utc)
        except ValueError:
            moment = None
    elif "T" in value or " " in value:
        moment = parse_time(value)
    if moment is None:
        raise UsageError(
            f"--before {text!r} is not a date: give YYYY-MM-DD (midnight UTC) or an ISO time "
            "such as 2026-11-23T22:45:00Z"
        )
    return moment


def _check_arguments(args: argparse.Namespace) -> datetime | None:
    if args.names and args.device:
        raise UsageError("give the handoffs to forget by name or with --device, not both")
    if args.before and not args.device:
        raise UsageError(
            "--before needs --device (to forget every device's old handoffs, set keep_days "
            "in the config)"
        )
    if not args.names and not args.device and not args.purge:
        raise UsageError(
            "name the handoffs to forget (`convosyncd log` lists them), or give --device"
        )
    return parse_date(args.before) if args.before else None


def choose(
    args: argparse.Namespace,
    before: datetime | None,
    files: Sequence[tuple[Location, str]],
    forgetter: Forgetter,
    repo: Path,
) -> Chosen:
    """What the command line asks to forget, opened and checked."""
    if args.names:
        wanted = list(dict.fromkeys(find_named(name, files, repo) for name in args.names))
        chosen = forgetter.choose(wanted, plain=True)
        if chosen.refused:
            listing = "; ".join(
                f"{record.location.key}: {what_it_is(record)}" for record in chosen.refused
            )
            raise UsageError(
                f"not yours to forget, since it does not open under your sync key ({listing}); "
                "nothing was forgotten"
            )
        return chosen
    if not args.device:
        return Chosen((), (), complete=True)
    devices = sorted({location.device for location, _oid in files})
    if args.device not in devices:
        raise UsageError(
            f"the sync branch of {repo} has no folder for device {args.device!r}; its devices "
            f"are: {', '.join(devices) or 'none yet'}"
        )
    cutoff = before or datetime.max.replace(tzinfo=timezone.utc)
    return forgetter.choose(older_than(files, cutoff, device=args.device), plain=True)


def run(args: argparse.Namespace) -> int:
    logs.setup(verbose=args.verbose)
    before = _check_arguments(args)
    config = configs.load(args.config)
    repo = configs.find_repo(config, args.repo)
    sync = RepoSync(config, repo, Notifier(enabled=config.notify, timeout=config.notify_timeout))
    sync.synced.keys.require()  # without the key nothing opens, so nothing is the person's
    sync.ensure_layout()
    unreachable: ConvosyncError | None = None
    try:
        sync.pull()
    except ConvosyncError as error:
        if args.purge:
            raise ConvosyncError(
                f"a purge needs the remote, and {repo.remote} of {repo.path} could not be "
                f"reached ({error}); nothing was changed: try again once it answers"
            ) from None
        unreachable = error
    synced = sync.synced
    if sync.branch.tip() is None:
        print(f"The sync branch of {repo.path} is empty: nothing to forget.")
        return 0
    with synced.local():
        chosen = choose(
            args, before, sync.catalog.files(sync.branch.tip()), sync.forgetter, repo.path
        )
        if chosen.records and not args.purge:
            sync.forgetter.forget(chosen.paths, why="convosyncd forget")
            synced.save()
    _report_choice(args, chosen)
    if not chosen.records and (args.names or args.device):
        return 0
    if args.purge:
        commit = sync.forgetter.purge(chosen.paths)
        sync.refresh()
        print(
            f"Purged: the sync branch on {repo.remote} is now one commit ({commit[:12]}) "
            "without them or anything forgotten before; your other devices continue on it "
            "at their next sync. The server may keep the old objects until its own clean-up "
            "(git gc)."
        )
        return 0
    sync.refresh()
    problem: str | None = None
    if unreachable is not None and is_offline_error(unreachable):
        problem = str(unreachable)  # not worth a second wait for the same remote
    else:
        try:
            sync.push()
        except ConvosyncError as error:
            problem = str(error)
    with synced.lock:
        synced.save()
    if problem is not None:
        print(
            f"Not pushed yet ({problem}): the daemon pushes it once {repo.remote} answers "
            "(or run `convosyncd sync`). Until then your other devices still have them."
        )
        return 1
    print(f"Pushed to {repo.remote}: every device drops them at its next sync.")
    return 0


def _report_choice(args: argparse.Namespace, chosen: Chosen) -> None:
    if chosen.refused:
        print(
            f"Left alone: {len(chosen.refused)} file(s) in {args.device}'s folder that do not "
            "open under your sync key (not yours; `convosyncd log --all` lists them)."
        )
    if not chosen.complete:
        print("More files wait than one run may open: run the same command again for the rest.")
    if not chosen.records:
        if args.names or args.device:
            when = (
                f" published before {format_time(parse_date(args.before))}" if args.before else ""
            )
            print(f"Nothing to forget: {args.device} has no handoffs of yours{when}.")
        return
    verb = "Purging" if args.purge else "Forgot"
    print(f"{verb} {len(chosen.records)} handoff(s):")
    for record in chosen.records:
        created = created_of(record)
        task = record.handoff.task if record.handoff is not None else "(plain text, format 1)"
        stamp = format_time(created) if created is not None else "?"
        print(f"  {stamp}  {record.location.key}  {task}")
