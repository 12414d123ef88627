"""``convosyncd log [PATH] [--all] [--json]`` and ``convosyncd show NAME``: what the sync
branch holds, as the person's key sees it.

``log`` lists every device's handoffs, newest first: when, which device, whether it
opened under the person's key, its name and its task. It is how a person audits what
their devices published. ``--all`` adds the files that did not open, each with what it
probably is. ``show`` prints one handoff whole. Both read the local sync branch only
(the daemon keeps it current), so they are instant and work offline; everything they
print of a handoff was cleaned by the catalog (:func:`convosyncd.handoff.clean_text`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from convosyncd import config as configs
from convosyncd.catalog import MEANING, Budget, Record
from convosyncd.commands.resume import open_catalog
from convosyncd.config import RepoConfig
from convosyncd.errors import ConvosyncError, UsageError
from convosyncd.handoff import Handoff, describe_age, format_time
from convosyncd.layout import HANDOFFS_DIR, Location, parse_name


def add_parser(subparsers: Any) -> None:
    log = subparsers.add_parser("log", help="list the handoffs on the sync branch, newest first")
    log.add_argument(
        "path",
        nargs="?",
        type=Path,
        default=None,
        help="a registered repo (default: the one you are in)",
    )
    log.add_argument(
        "--all",
        action="store_true",
        help="also list the files that do not open under your sync key, with what they are",
    )
    log.add_argument("--json", action="store_true", help="print a JSON array for scripts")
    log.set_defaults(handler=run_log)
    show = subparsers.add_parser("show", help="print one handoff")
    show.add_argument(
        "name",
        help="the handoff as `convosyncd log` names it (device/file name), or its file name "
        "alone when no other device has one of that name",
    )
    show.add_argument(
        "--repo",
        type=Path,
        default=None,
        metavar="PATH",
        help="a registered repo (default: the one you are in)",
    )
    show.set_defaults(handler=run_show)


def what_it_is(record: Record) -> str:
    """Why ``record`` did not open, for a person."""
    meaning = MEANING.get(record.verdict, record.verdict)
    return f"{meaning} (key id {record.key_id})" if record.verdict == "foreign" else meaning


def created_of(record: Record) -> datetime | None:
    """The handoff's time: sealed inside when it opened, else what its name says."""
    if record.handoff is not None:
        return record.handoff.created
    name = parse_name(record.location.name)
    return name.created if name is not None else None


def as_json(record: Record) -> dict[str, Any]:
    """One entry of ``log --json``."""
    handoff = record.handoff
    created = created_of(record)
    data: dict[str, Any] = {
        "device": record.location.device,
        "name": record.location.key,
        "path": record.location.path,
        "created": format_time(created) if created is not None else None,
        "task": handoff.task if handoff is not None else None,
        "verified": handoff is not None,
        "verdict": record.verdict,
        "text": handoff.body if handoff is not None else None,
    }
    if handoff is not None:
        data["repo_branch"] = handoff.repo_branch
        data["repo_commit"] = handoff.repo_commit
    else:
        data["what"] = what_it_is(record)
    return data


def render_log(records: Sequence[Record]) -> str:
    """The lines ``log`` prints: a header, then one line per file."""
    rows = [("created", "device", "verified", "name", "task")]
    for record in records:
        created = created_of(record)
        rows.append(
            (
                format_time(created) if created is not None else "?",
                record.location.device,
                "yes" if record.handoff is not None else f"no ({record.verdict})",
                record.location.key,
                record.handoff.task if record.handoff is not None else what_it_is(record),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True))
        + f"  {row[4]}\n"
        for row in rows
    )


def find_named(
    name: str, files: Sequence[tuple[Location, str]], repo: Path
) -> tuple[Location, str]:
    """The one file ``name`` means: ``device/file name`` (as ``log`` shows it), the file
    name alone, or the whole path on the branch; :class:`UsageError` when it names no
    file or several."""
    wanted = name.strip()
    if wanted.startswith(f"{HANDOFFS_DIR}/"):
        found = [item for item in files if item[0].path == wanted]
    elif "/" in wanted:
        found = [item for item in files if item[0].key == wanted]
    else:
        found = [item for item in files if item[0].name == wanted]
    if not found:
        raise UsageError(
            f"no handoff {name!r} on the sync branch of {repo}: `convosyncd log {repo}` lists "
            "them by name (`--all` also lists the files that do not open)"
        )
    if len(found) > 1:
        choices = ", ".join(sorted(location.key for location, _oid in found))
        raise UsageError(f"{name!r} names {len(found)} files in {repo}: give one of {choices}")
    return found[0]


def render_handoff(handoff: Handoff, location: Location, now: datetime) -> str:
    """What ``show`` prints: a few lines about the handoff, then its text as written."""
    return "\n".join(
        [
            f"Handoff from {handoff.device}, {handoff.created_text} "
            f"({describe_age(handoff.created, now)})",
            f"Name: {location.key}",
            f"Task: {handoff.task}",
            f"Branch: {handoff.repo_branch} · Commit: {handoff.repo_commit}",
            "Verified with your sync key.",
            "",
            handoff.body.strip("\n"),
            "",
        ]
    )


def _repo(args: argparse.Namespace, path: Path | None) -> tuple[configs.Config, RepoConfig]:
    config = configs.load(args.config)
    repo = configs.find_repo(config, path)
    if not repo.path.is_dir():
        raise UsageError(
            f"the repo folder {repo.path} is missing: put it back, or `convosyncd remove` it"
        )
    return config, repo


def run_log(args: argparse.Namespace) -> int:
    config, repo = _repo(args, args.path)
    catalog = open_catalog(config, repo)
    records = list(catalog.history(catalog.branch.tip()))
    shown = [record for record in records if args.all or record.handoff is not None]
    if args.json:
        print(json.dumps([as_json(record) for record in shown], indent=2, ensure_ascii=False))
        return 0
    if not shown:
        print(f"No handoffs on the sync branch of {repo.path} yet.")
    else:
        print(render_log(shown), end="")
    hidden = len(records) - len(shown)
    if hidden:
        print(
            f"({hidden} more file(s) on the sync branch do not open under your sync key; "
            f"`convosyncd log --all {repo.path}` lists them)"
        )
    return 0


def run_show(args: argparse.Namespace) -> int:
    config, repo = _repo(args, args.repo)
    catalog = open_catalog(config, repo)
    tip = catalog.branch.tip()
    location, oid = find_named(args.name, catalog.files(tip), repo.path)
    records = catalog.classify([(location, oid)], Budget(1, f"reading {location.key}"))
    handoff = records[0].handoff if records else None
    if handoff is None:
        why = what_it_is(records[0]) if records else "it could not be read"
        raise ConvosyncError(
            f"{location.key} in {repo.path} does not open under your sync key ({why}), "
            "so it is not shown"
        )
    print(render_handoff(handoff, location, datetime.now(timezone.utc)), end="")
    return 0
