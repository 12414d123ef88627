"""Hostile and broken input, from the person's side and from a remote.

Each case is tried against a real device with two registered repos: the hostile input
goes into one, a good draft into the other, and ``convosyncd sync`` runs once. A case
is handled when the error is clear, nothing is lost (a refused draft stays where it
was), the other repo's handoff is published anyway, and nothing from a remote is
written anywhere but ``.convosync/session-handoff.md``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tests.stress import InputCase, draft_with_marker, markers_on
from tests.support.devices import (
    Device,
    commit_on_remote,
    git,
    handoff_text,
    make_device,
    make_remote,
    opened,
    run_cli,
)

LIMIT = 64 * 1024


def _fake_secret() -> str:
    # Built from pieces so that this file itself holds no token.
    return "ghp_" + "Zq8" * 12


@dataclass
class Bench:
    """A device with a target repo for hostile input and another that must keep syncing."""

    desktop: Device
    other: Device
    laptop: Device
    remote: Path
    other_remote: Path
    bus_env: dict[str, str]
    recorder: object | None
    counter: int = 0

    def next_marker(self, label: str) -> str:
        self.counter += 1
        return f"{label}-{self.counter}"


@contextlib.contextmanager
def _notifications(root: Path) -> Iterator[tuple[dict[str, str], object | None]]:
    """A private bus with a recording server where the tools exist, else nothing."""
    if not (shutil.which("dbus-daemon") and shutil.which("notify-send")):
        yield {}, None
        return
    from tests.support.dbus_session import RecordingNotificationServer, env_for_bus, private_bus

    with (
        private_bus(root / "bus") as address,
        RecordingNotificationServer(address, root / "notes.jsonl") as server,
    ):
        environment = env_for_bus(address)
        yield {"DBUS_SESSION_BUS_ADDRESS": environment["DBUS_SESSION_BUS_ADDRESS"]}, server


def _files(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*") if not path.is_dir()}


def _local_case(
    bench: Bench,
    kind: str,
    make: Callable[[Path], object],
    *,
    refused: str | None,
    check: Callable[[Bench], str | None] | None = None,
) -> InputCase:
    """Put ``make``'s input in the desktop's draft, a good draft in the other repo, sync."""
    desktop, other = bench.desktop, bench.other
    draft = desktop.draft
    draft.parent.mkdir(exist_ok=True)
    make(draft)
    before = markers_on(bench.remote)
    good = bench.next_marker("other")
    other.write_draft(draft_with_marker(good))
    result = desktop.cli("sync", env=bench.bus_env, timeout=60)
    after = markers_on(bench.remote)
    problems = []
    if markers_on(bench.other_remote)[good] != 1:
        problems.append("the other repo's draft was not published")
    status = desktop.status()["repos"][0]
    if refused is not None:
        message = (status["draft_problem"] or {}).get("message", "")
        if refused not in message:
            problems.append(f"expected {refused!r} in the error, got {message!r}")
        if not os.path.lexists(draft):
            problems.append("the refused draft was not left in place")
        if after != before:
            problems.append("something was published for the refused draft")
        if result.returncode != 1:
            problems.append(f"sync exited {result.returncode}, expected 1")
        reason = message.replace(f"{draft} ", "", 1).split(": ", 1)[0]
        handling = f"refused, left in place: {reason[:110]}"
    else:
        if os.path.lexists(draft):
            problems.append("the draft was not published")
        handling = "published"
    if check is not None:
        extra = check(bench)
        if extra:
            if extra.startswith("✗"):
                problems.append(extra[1:].strip())
            else:
                handling += f"; {extra}"
    _clear(draft)
    if problems:
        handling += " — PROBLEM: " + "; ".join(problems)
    return InputCase(kind, handling, not problems)


def _clear(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def _latest_desktop_file(bench: Bench) -> str:
    listing = git(bench.remote, "ls-tree", "-r", "--name-only", "refs/heads/convosync")
    names = sorted(line for line in listing.splitlines() if line.startswith("handoffs/desktop/"))
    return opened(bench.remote, names[-1])


def _check_escapes(bench: Bench) -> str | None:
    stored = _latest_desktop_file(bench)
    header = stored.split("\n---\n", 1)[0]
    message = git(bench.remote, "log", "-1", "--format=%s", "refs/heads/convosync")
    for text in (header, message):
        if "\x1b" in text or "<b>" in text or "\x07" in text:
            return "✗ markup or escapes reached the front matter or the commit message"
    return "task line stored as plain text"


def _check_long_line(bench: Bench) -> str | None:
    stored = _latest_desktop_file(bench)
    task = next(line for line in stored.splitlines() if line.startswith("task: "))
    if len(task) > 140:
        return "✗ the task line was not cut short"
    return f"body kept whole ({len(stored) // 1024} KiB), task cut to {len(task) - 6} characters"


def _check_redacted(bench: Bench) -> str | None:
    secret = _fake_secret()
    objects = subprocess.run(
        ["git", "cat-file", "--batch-all-objects", "--batch"],
        cwd=bench.desktop.repo,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    remote_objects = subprocess.run(
        ["git", "cat-file", "--batch-all-objects", "--batch"],
        cwd=bench.remote,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    if secret.encode() in objects or secret.encode() in remote_objects:
        return "✗ the secret is in a git object"
    if "[REDACTED:github-token]" not in _latest_desktop_file(bench):
        return "✗ no redaction marker"
    return "token replaced by [REDACTED:github-token] before anything was committed"


def local_cases(bench: Bench) -> list[InputCase]:
    big = LIMIT + 1

    def fifo(path: Path) -> None:
        os.mkfifo(path)

    return [
        _local_case(
            bench,
            "draft over the size limit",
            lambda p: p.write_bytes(b"x" * big),
            refused="over max_draft_bytes",
        ),
        _local_case(
            bench,
            "not UTF-8",
            lambda p: p.write_bytes(b"caf\xe9 au lait\n"),
            refused="not UTF-8 text",
        ),
        _local_case(
            bench,
            "NUL bytes",
            lambda p: p.write_bytes(b"### Current Task\nx\x00y\n"),
            refused="contains NUL bytes",
        ),
        _local_case(
            bench,
            "symlink to /etc/passwd",
            lambda p: p.symlink_to("/etc/passwd"),
            refused="is a symbolic link",
        ),
        _local_case(
            bench,
            "symlink to a folder",
            lambda p: p.symlink_to("/etc"),
            refused="is a symbolic link",
        ),
        _local_case(
            bench,
            "dangling symlink",
            lambda p: p.symlink_to("/nonexistent/x"),
            refused="is a symbolic link",
        ),
        _local_case(bench, "FIFO (named pipe)", fifo, refused="is a FIFO"),
        _local_case(bench, "a folder", lambda p: p.mkdir(), refused="is a folder"),
        _local_case(bench, "empty", lambda p: p.write_bytes(b""), refused="is empty"),
        _local_case(
            bench,
            "whitespace only",
            lambda p: p.write_text(" \n\t\n", encoding="utf-8"),
            refused="is empty",
        ),
        _local_case(
            bench,
            "escapes and markup in the task line",
            lambda p: p.write_text(
                "### Current Task\n\x1b[31m<b>Fix</b>\x1b[0m the \x07<a href='x'>parser</a>\n",
                encoding="utf-8",
            ),
            refused=None,
            check=_check_escapes,
        ),
        _local_case(
            bench,
            "one enormous line",
            lambda p: p.write_text("### Current Task\n" + "word " * (LIMIT // 6), encoding="utf-8"),
            refused=None,
            check=_check_long_line,
        ),
        _local_case(
            bench,
            "a token pasted into the draft (redact)",
            lambda p: p.write_text(
                handoff_text("Tokens", fact=f"the key is {_fake_secret()}"), encoding="utf-8"
            ),
            refused=None,
            check=_check_redacted,
        ),
    ]


def _remote_commit(remote: Path, files: dict[str, tuple[str, bytes]]) -> None:
    """Add ``{path: (mode, content)}`` to the remote's sync branch with plumbing."""
    commit_on_remote(remote, dict(files), message="hostile")


def _mktree_with_dotdot(remote: Path) -> None:
    """A device folder called '..' (git's index refuses it; mktree does not)."""
    tip = git(remote, "rev-parse", "refs/heads/convosync")
    blob = git(remote, "hash-object", "-w", "--stdin", input="---\ntask: escaped\n---\nx\n")
    inner = git(
        remote, "mktree", input=f"100644 blob {blob}\t20990101T000000.000Z-aaaaaaaaaaaa.md\n"
    )
    handoffs_tree = git(remote, "rev-parse", f"{tip}:handoffs")
    entries = git(remote, "ls-tree", handoffs_tree) + f"\n040000 tree {inner}\t..\n"
    new_handoffs = git(remote, "mktree", input=entries)
    root_entries = [
        line if not line.endswith("\thandoffs") else f"040000 tree {new_handoffs}\thandoffs"
        for line in git(remote, "ls-tree", tip).splitlines()
    ]
    root = git(remote, "mktree", input="\n".join(root_entries) + "\n")
    commit = git(remote, "commit-tree", root, "-p", tip, "-m", "dotdot")
    git(remote, "update-ref", "refs/heads/convosync", commit, tip)


def remote_cases(bench: Bench) -> list[InputCase]:
    laptop, remote = bench.laptop, bench.remote
    hostile_task = "<b>click</b> \x1b]0;pwned\x07\x1b[2J<img src=x onerror=alert(1)>"
    cases: list[
        tuple[str, Callable[[], None], Callable[[str, list[dict[str, object]]], str | None]]
    ] = []

    def injected() -> None:
        _remote_commit(
            remote,
            {
                "handoffs/mallory/20990101T000000.000Z-bbbbbbbbbbbb.md": (
                    "100644",
                    (
                        "---\ndevice: ../../../etc\ncreated: 2099-01-01T00:00:00Z\n"
                        f"repo_branch: main\x1b[2J\ntask: {hostile_task}\n---\n"
                        "### Current Task\nnothing to see\n"
                    ).encode(),
                )
            },
        )

    def check_injected(text: str, notes: list[dict[str, object]]) -> str | None:
        mallory = [note for note in notes if "mallory" in str(note)]
        if mallory:
            return "✗ a handoff that does not open under the person's key was notified"
        if "mallory" in text or "nothing to see" in text:
            return "✗ a handoff that does not open under the person's key was shown"
        return "not shown, not notified: plain text does not open under the person's key"

    cases.append(
        (
            "a plain-text handoff that claims another device and injects markup",
            injected,
            check_injected,
        )
    )

    def malformed() -> None:
        _remote_commit(
            remote,
            {
                "handoffs/oscar/20990101T000001.000Z-cccccccccccc.md": (
                    "100644",
                    b"---\ndevice: oscar\ntask: never closed\n",
                )
            },
        )

    cases.append(
        (
            "malformed front matter",
            malformed,
            lambda text, notes: (
                "✗ shown" if "Handoff from oscar" in text else "skipped with a log line"
            ),
        )
    )

    def outside() -> None:
        _remote_commit(
            remote,
            {
                "README.md": ("100644", b"# not a handoff\n"),
                "handoffs/trudy/notes.txt": ("100644", b"not a handoff name\n"),
                "handoffs/trudy/sub/20990101T000002.000Z-dddddddddddd.md": (
                    "100644",
                    b"---\ntask: nested\n---\nx\n",
                ),
                "handoffs/evil<b>/20990101T000003.000Z-eeeeeeeeeeee.md": (
                    "100644",
                    b"---\ntask: bad name\n---\nx\n",
                ),
            },
        )

    cases.append(
        (
            "files outside handoffs/ and badly named folders",
            outside,
            lambda text, notes: "✗ shown" if ("trudy" in text or "evil" in text) else "ignored",
        )
    )

    def huge() -> None:
        _remote_commit(
            remote,
            {
                "handoffs/goliath/20990101T000004.000Z-ffffffffffff.md": (
                    "100644",
                    b"---\ntask: big\n---\n" + b"x" * (4 * LIMIT),
                )
            },
        )

    cases.append(
        (
            "a huge handoff file",
            huge,
            lambda text, notes: "✗ shown" if "goliath" in text else "skipped with a log line",
        )
    )

    def link() -> None:
        _remote_commit(
            remote,
            {"handoffs/linky/20990101T000005.000Z-abababababab.md": ("120000", b"/etc/passwd")},
        )

    cases.append(
        (
            "a symbolic link named like a handoff",
            link,
            lambda text, notes: "✗ shown" if "linky" in text else "ignored",
        )
    )
    cases += forget_record_cases(remote)
    # Last: git's object check refuses the whole fetch from here on (the remote stays
    # poisoned until someone who can push there repairs it).
    cases.append(
        (
            "a device folder named '..'",
            lambda: _mktree_with_dotdot(remote),
            lambda text, notes: (
                "✗ shown"
                if "escaped" in text
                else "refused at the fetch by git's object check; nothing of it taken in"
            ),
        )
    )

    results = []
    for kind, inject, check in cases:
        before_files = _files(laptop.root)
        inject()
        good = bench.next_marker("other")
        bench.other.write_draft(draft_with_marker(good))
        result = laptop.cli("sync", env=bench.bus_env, timeout=60)
        bench.desktop.cli("sync", env=bench.bus_env, timeout=60)
        problems = []
        refused = result.returncode == 1 and "holds objects git refuses" in result.stdout
        if result.returncode != 0 and not refused:
            problems.append(f"sync exited {result.returncode}: {result.stdout.strip()}")
        if markers_on(bench.other_remote)[good] != 1:
            problems.append("the other repo's draft was not published")
        new_files = {
            name
            for name in _files(laptop.root) - before_files
            if not name.startswith(("app/.git/", "state/"))
            and name != "app/.convosync/session-handoff.md"
        }
        if new_files:
            problems.append(f"files written outside .convosync: {sorted(new_files)[:3]}")
        text = (
            laptop.materialized.read_text(encoding="utf-8") if laptop.materialized.exists() else ""
        )
        notes = list(bench.recorder.notifications()) if bench.recorder is not None else []  # type: ignore[attr-defined]
        verdict = check(text, notes) or ""
        if verdict.startswith("✗"):
            problems.append(verdict[1:].strip())
        handling = verdict if not problems else "PROBLEM: " + "; ".join(problems)
        results.append(InputCase(f"from the remote: {kind}", handling, not problems))
    return results


def _branch_paths(remote: Path, prefix: str) -> list[str]:
    listing = git(remote, "ls-tree", "-r", "--name-only", "refs/heads/convosync")
    return [line for line in listing.splitlines() if line.startswith(prefix)]


def _record_path(device: str, token: str) -> str:
    return f"handoffs/{device}/forgotten/20261201T000000.000Z-{token * 16}.forget"


def forget_record_cases(
    remote: Path,
) -> list[tuple[str, Callable[[], None], Callable[[str, list[dict[str, object]]], str | None]]]:
    """Forget records someone who can push makes: none may take the person's handoffs."""
    from convosyncd.handoff import Provenance, render_stored
    from convosyncd.layout import handoff_location
    from convosyncd.seal import seal_forget, seal_handoff
    from tests.support.devices import OTHER_PERSON_KEY, PERSON_KEY

    targets: list[str] = []
    stranger: list[str] = []

    def forged() -> None:
        # The person's handoffs deleted, and a record naming them under the person's key
        # id with a made-up tag: it does not open, so it takes nothing back.
        targets[:] = _branch_paths(remote, "handoffs/desktop/")
        header = f"convosyncd-forget/2 {PERSON_KEY.key_id}\n".encode()
        listing = "".join(f"{path}\n" for path in targets).encode() + b"\n"
        files = {_record_path("mallory", "1"): ("100644", header + listing + b"\0" * 28)}
        _remote_commit(remote, files)
        _remote_remove(remote, targets)

    def theirs() -> None:
        # Another person's record naming their own handoff and the person's.
        now = datetime.now(timezone.utc)
        text = handoff_text("Another person's")
        location = handoff_location("stranger", now, OTHER_PERSON_KEY.digest("stranger", b"x"))
        content = render_stored(Provenance("stranger", now, "0" * 40, "main"), text)
        stranger[:] = [location.path]
        record = _record_path("stranger", "2")
        data = seal_forget(OTHER_PERSON_KEY, record, [*targets, location.path], purge=False)
        _remote_commit(
            remote,
            {
                location.path: ("100644", seal_handoff(OTHER_PERSON_KEY, location.path, content)),
                record: ("100644", data),
            },
        )

    def kept(text: str, notes: list[dict[str, object]]) -> str | None:
        missing = [path for path in targets if path not in _branch_paths(remote, "handoffs/")]
        if not targets or missing:
            return f"✗ {len(missing)} of the person's handoffs were taken back"
        return f"took nothing back: all {len(targets)} of the person's handoffs are on the remote"

    def only_theirs(text: str, notes: list[dict[str, object]]) -> str | None:
        verdict = kept(text, notes) or ""
        if verdict.startswith("✗"):
            return verdict
        if stranger[0] in _branch_paths(remote, "handoffs/"):
            return "✗ the other person's own handoff was not taken back"
        return "took back only that person's own handoff; the person's stayed"

    return [
        ("a forged forget record under the person's key id, and a deletion", forged, kept),
        ("another person's forget record naming the person's handoffs", theirs, only_theirs),
    ]


def _remote_remove(remote: Path, paths: list[str]) -> None:
    """Delete ``paths`` from the remote's sync branch with plumbing (no record)."""
    commit_on_remote(remote, remove=paths, message="hostile")


def hostile_inputs(root: Path) -> list[InputCase]:
    """Every hostile case, local and remote, each with its verdict."""
    remote = make_remote(root)
    other_remote = make_remote(root, "other.git")
    with _notifications(root) as (bus_env, recorder):
        desktop = make_device(root, remote, "desktop", max_draft_bytes=LIMIT, notify=False)
        other = make_device(root, other_remote, "other", register=False)
        desktop.write_config(repos=[desktop.repo, other.repo])
        laptop = make_device(
            root, remote, "laptop", max_draft_bytes=LIMIT, notify=recorder is not None
        )
        bench = Bench(desktop, other, laptop, remote, other_remote, bus_env, recorder)
        seed = bench.next_marker("seed")
        desktop.write_draft(draft_with_marker(seed))
        run_cli("--config", str(desktop.config), "sync", timeout=60)
        laptop.cli("sync", timeout=60)
        cases = local_cases(bench)
        cases += remote_cases(bench)
    return cases
