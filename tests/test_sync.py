"""The sync engine against real git: two devices, one bare remote, nothing mocked."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from convosyncd import config as configs
from convosyncd.notify import Notifier
from convosyncd.sync import RepoSync
from tests.support.devices import (
    Device,
    branch_files,
    git,
    handoff_paths,
    handoff_text,
    interrupt,
    make_device,
    opened,
    snapshot,
)
from tests.support.network import silent_listener


def engine(device: Device, **overrides: Any) -> RepoSync:
    if overrides:
        device.write_config(**overrides)
    config = configs.load(device.config)
    return RepoSync(config, config.repos[0], Notifier(enabled=False, timeout=1))


@pytest.fixture
def desktop(tmp_path: Path, remote: Path) -> Device:
    return make_device(tmp_path, remote, "desktop")


@pytest.fixture
def laptop(tmp_path: Path, remote: Path) -> Device:
    return make_device(tmp_path, remote, "laptop")


def remote_files(remote: Path) -> list[str]:
    return branch_files(remote)


def test_first_publish_creates_the_branch_on_both_sides(desktop: Device, remote: Path) -> None:
    desktop.write_draft(handoff_text("Implementing OAuth refresh tokens"))
    result = engine(desktop).cycle(require_settled=False)
    assert result.ok, result.error
    assert result.published and result.pushed
    assert not desktop.draft.exists()
    [path] = remote_files(remote)
    month = r"\d{4}-(0[1-9]|1[0-2])"
    name = r"\d{8}T\d{6}\.\d{3}Z-[0-9a-f]{16}\.sealed"
    assert re.fullmatch(rf"handoffs/desktop/{month}/{name}", path)
    stored = opened(remote, path)
    head = git(desktop.repo, "rev-parse", "HEAD")
    assert stored.startswith(
        f"---\ndevice: desktop\ncreated: {stored.split('created: ')[1][:20]}\n"
        f"repo_commit: {head}\nrepo_branch: main\ntask: Implementing OAuth refresh tokens\n---\n"
    )
    assert stored.rstrip("\n").endswith(handoff_text("Implementing OAuth refresh tokens").rstrip())
    # Nothing of the person's on the remote: no task line, no name, no address.
    message = git(remote, "log", "-1", "--format=%B%n%an <%ae>%n%cn <%ce>", "refs/heads/convosync")
    assert message == (
        "handoff(desktop)\ndesktop <desktop@convosyncd.invalid>\n"
        "desktop <desktop@convosyncd.invalid>"
    )


def test_a_device_that_never_saw_the_branch_gets_it_on_its_first_poll(
    desktop: Device, laptop: Device
) -> None:
    desktop.write_draft(handoff_text("Ship the parser", fact="favourite pizza is Margherita"))
    assert engine(desktop).cycle(require_settled=False).ok
    result = engine(laptop).cycle()
    assert result.ok, result.error
    assert [name.split("/")[0] for name in result.arrived] == ["desktop"]
    text = laptop.materialized.read_text(encoding="utf-8")
    assert text.startswith(
        "# ConvoSync Session Handoffs\n\n---\n## Handoff from desktop\n**Timestamp:** "
    )
    assert "**Branch:** main\n\n### Current Task\nShip the parser" in text
    assert "favourite pizza is Margherita" in text


def test_the_same_content_is_published_once(desktop: Device, remote: Path) -> None:
    sync = engine(desktop)
    desktop.write_draft(handoff_text("Once"))
    assert sync.cycle(require_settled=False).published
    desktop.write_draft(handoff_text("Once"))
    outcome = sync.publish(require_settled=False)
    assert outcome.status == "duplicate"
    assert not desktop.draft.exists()
    assert len(remote_files(remote)) == 1


def test_a_crash_after_publishing_only_removes_the_draft_on_restart(
    desktop: Device, remote: Path
) -> None:
    desktop.write_draft(handoff_text("Crash"))
    kept = desktop.draft.read_bytes()
    assert engine(desktop).publish(require_settled=False).status == "published"
    # As if the daemon died right after moving the ref: the draft is still there.
    desktop.write_draft(kept.decode())
    result = engine(desktop).cycle(require_settled=False)
    assert result.ok and result.published is None
    assert not desktop.draft.exists()
    assert len(remote_files(remote)) == 1


def test_a_rejected_push_is_merged_as_the_union_and_pushed_again(
    desktop: Device, laptop: Device, remote: Path
) -> None:
    desktop_sync, laptop_sync = engine(desktop), engine(laptop)
    laptop.write_draft(handoff_text("Laptop work"))
    assert laptop_sync.cycle(require_settled=False).pushed
    desktop.write_draft(handoff_text("Desktop work"))
    assert desktop_sync.publish(require_settled=False).status == "published"
    assert desktop_sync.push() is True  # rejected first, then fetched, merged, pushed
    files = remote_files(remote)
    assert sorted(path.split("/")[1] for path in files) == ["desktop", "laptop"]
    parents = git(remote, "log", "-1", "--format=%P", "refs/heads/convosync").split()
    assert len(parents) == 2
    assert laptop_sync.cycle().ok
    assert sorted(laptop.sync_branch_files()) == sorted(files)
    for device in (desktop, laptop):
        for path in device.sync_branch_files():
            assert "<<<<<<<" not in opened(device.repo, path)


def test_a_merge_from_both_sides_gives_the_same_tree(desktop: Device, laptop: Device) -> None:
    desktop_sync, laptop_sync = engine(desktop), engine(laptop)
    for device, sync in ((desktop, desktop_sync), (laptop, laptop_sync)):
        device.write_draft(handoff_text(f"{device.name} offline"))
        assert sync.publish(require_settled=False).status == "published"
    assert desktop_sync.cycle().ok and laptop_sync.cycle().ok and desktop_sync.cycle().ok
    assert git(desktop.repo, "rev-parse", "convosync^{tree}") == git(
        laptop.repo, "rev-parse", "convosync^{tree}"
    )
    assert len(desktop.sync_branch_files()) == 2


def test_own_handoffs_never_notify_and_others_notify_once(desktop: Device, laptop: Device) -> None:
    desktop_sync, laptop_sync = engine(desktop), engine(laptop)
    laptop_sync.cycle()  # the laptop knows the (empty) remote before anything is published
    desktop.write_draft(handoff_text("First"))
    first = desktop_sync.cycle(require_settled=False)
    assert first.notified == ()
    arrived = laptop_sync.cycle()
    assert len(arrived.notified) == 1 and arrived.notified[0].startswith("desktop/")
    assert laptop_sync.cycle().notified == ()
    assert engine(laptop).cycle().notified == (), "a restart must not notify again"
    desktop.write_draft(handoff_text("Second"))
    desktop_sync.cycle(require_settled=False)
    desktop.write_draft(handoff_text("Third"))
    desktop_sync.cycle(require_settled=False)
    both = engine(laptop).cycle()
    assert len(both.arrived) == 2 and len(both.notified) == 1, "only the newest per device"


def test_a_lost_state_file_does_not_notify_old_handoffs_again(
    desktop: Device, laptop: Device
) -> None:
    desktop.write_draft(handoff_text("Old news"))
    engine(desktop).cycle(require_settled=False)
    laptop_sync = engine(laptop)
    assert len(laptop_sync.cycle().notified) == 1
    laptop_sync.state_path.write_text("{ truncated", encoding="utf-8")
    assert engine(laptop).cycle().notified == ()
    assert laptop_sync.state_path.with_name(laptop_sync.state_path.name + ".corrupt").exists()


def _prepare_user_mess(repo: Path, kind: str) -> None:
    (repo / "staged.txt").write_text("staged\n", encoding="utf-8")
    git(repo, "add", "staged.txt")
    (repo / "README.md").write_text("# app\nunstaged edit\n", encoding="utf-8")
    (repo / "untracked.txt").write_text("untracked\n", encoding="utf-8")
    if kind == "stash":
        git(repo, "stash", "push", "--include-untracked", "-m", "my stash")
        (repo / "after-stash.txt").write_text("x\n", encoding="utf-8")
    elif kind in ("merge", "rebase"):
        git(repo, "stash", "push", "--include-untracked", "-m", "keep")
        interrupt(repo, kind)
    elif kind == "detached":
        git(repo, "checkout", "--quiet", "--detach", "HEAD")


@pytest.mark.parametrize(
    ("kind", "branch"),
    [
        ("changes", "main"),
        ("stash", "main"),
        ("merge", "main"),
        ("rebase", "feature (rebasing)"),
        ("detached", "HEAD (detached)"),
    ],
)
def test_the_persons_work_is_untouched(
    desktop: Device, laptop: Device, remote: Path, kind: str, branch: str
) -> None:
    _prepare_user_mess(desktop.repo, kind)
    laptop.write_draft(handoff_text("From the laptop"))
    engine(laptop).cycle(require_settled=False)
    before = snapshot(desktop.repo)
    desktop.write_draft(handoff_text("Mid-operation"))
    sync = engine(desktop)
    result = sync.cycle(require_settled=False)
    assert result.ok, result.error
    assert result.published and result.arrived
    assert snapshot(desktop.repo) == before
    [path] = handoff_paths(remote, "desktop")
    assert f"repo_branch: {branch}\n" in opened(remote, path)
    assert desktop.materialized.exists()
    status = git(
        desktop.repo, "--no-optional-locks", "status", "--porcelain", "--untracked-files=all"
    )
    assert ".convosync" not in status


def test_the_convosync_folder_is_excluded_without_touching_gitignore(desktop: Device) -> None:
    engine(desktop).cycle()
    exclude = Path(git(desktop.repo, "rev-parse", "--git-path", "info/exclude"))
    exclude = exclude if exclude.is_absolute() else desktop.repo / exclude
    assert "/.convosync/" in exclude.read_text(encoding="utf-8").splitlines()
    assert not (desktop.repo / ".gitignore").exists()
    assert (desktop.repo / ".convosync" / "device-id").read_text(encoding="utf-8") == "desktop\n"


def test_a_device_without_git_identity_still_publishes(
    desktop: Device, remote: Path, tmp_path: Path
) -> None:
    (Path(os.environ["GIT_CONFIG_GLOBAL"])).write_text("", encoding="utf-8")
    desktop.write_draft(handoff_text("Nameless"))
    result = engine(desktop).cycle(require_settled=False)
    assert result.ok, result.error
    author = git(remote, "log", "-1", "--format=%an <%ae>", "refs/heads/convosync")
    assert author == "desktop <desktop@convosyncd.invalid>"


def test_a_tracked_handoff_file_is_never_overwritten(desktop: Device, laptop: Device) -> None:
    (desktop.repo / ".convosync").mkdir(exist_ok=True)
    desktop.materialized.write_text("# committed by the old plugin\n", encoding="utf-8")
    git(desktop.repo, "add", "-f", ".convosync/session-handoff.md")
    git(desktop.repo, "commit", "--quiet", "-m", "old plugin")
    laptop.write_draft(handoff_text("Hello"))
    engine(laptop).cycle(require_settled=False)
    before = snapshot(desktop.repo)
    assert engine(desktop).cycle().ok
    assert desktop.materialized.read_text(encoding="utf-8") == "# committed by the old plugin\n"
    assert snapshot(desktop.repo) == before


def test_the_remote_branch_deleted_is_recreated(desktop: Device, remote: Path) -> None:
    sync = engine(desktop)
    desktop.write_draft(handoff_text("One"))
    sync.cycle(require_settled=False)
    git(remote, "update-ref", "-d", "refs/heads/convosync")
    result = sync.cycle()
    assert result.ok and result.pushed
    assert len(remote_files(remote)) == 1


def test_unreachable_remote_queues_locally_and_pushes_later(
    desktop: Device, remote: Path, tmp_path: Path
) -> None:
    moved = tmp_path / "moved.git"
    remote.rename(moved)
    sync = engine(desktop)
    desktop.write_draft(handoff_text("Offline"))
    result = sync.cycle(require_settled=False)
    assert not result.ok and result.published and result.pending == 1
    assert not desktop.draft.exists(), "taken in and queued on the local sync branch"
    assert desktop.sync_branch_files()
    moved.rename(remote)
    result = sync.cycle()
    assert result.ok and result.pushed and result.pending == 0
    assert len(remote_files(remote)) == 1


class _AskForPassword(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="git"')
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        del format, args


@pytest.fixture
def password_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AskForPassword)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/app.git"
    server.shutdown()
    server.server_close()


def test_git_never_prompts_for_a_password(desktop: Device, password_server: str) -> None:
    git(desktop.repo, "remote", "set-url", "origin", password_server)
    start = time.monotonic()
    sync = engine(desktop)
    outcome = sync.cycle()
    assert not outcome.ok
    assert outcome.error is not None and "terminal prompts disabled" in outcome.error
    assert time.monotonic() - start < 10


@pytest.fixture
def silent_port() -> Iterator[int]:
    with silent_listener() as port:
        yield port


def test_a_remote_that_never_answers_costs_the_time_limit_not_a_hang(
    desktop: Device, silent_port: int
) -> None:
    git(desktop.repo, "remote", "set-url", "origin", f"http://127.0.0.1:{silent_port}/app.git")
    sync = engine(desktop, network_timeout=1.0)
    desktop.write_draft(handoff_text("Still taken in"))
    start = time.monotonic()
    result = sync.cycle(require_settled=False)
    elapsed = time.monotonic() - start
    assert (
        not result.ok and result.error is not None and "did not finish within 1 s" in result.error
    )
    assert result.published, "the draft is taken in even though the remote hangs"
    assert elapsed < 8
