"""``mode = "inline"`` against real git: the handoffs file committed on the person's branch.

A device with only the original plugin is a plain clone that pulls its branch and reads
``.convosync/session-handoff.md`` with the plugin's own rules. The person's staged and
unstaged changes must come through byte for byte, ``git status`` must stay clean, and a
branch that cannot be pushed as a fast-forward of only handoff commits is not pushed.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from convosyncd import config as configs
from convosyncd import inline
from convosyncd.errors import ConfigError
from convosyncd.handoff import Handoff, render_plugin
from convosyncd.notify import Notifier
from convosyncd.sync import RepoSync
from tests.support.devices import (
    Device,
    git,
    handoff_text,
    interrupt,
    make_device,
    snapshot,
    wait_until,
)
from tests.support.plugin_format import plugin_parse

PATH = ".convosync/session-handoff.md"
PIZZA = "the person's favourite pizza is Margherita"


def engine(device: Device) -> RepoSync:
    config = configs.load(device.config)
    return RepoSync(config, config.repos[0], Notifier(enabled=False, timeout=1))


def cycle(device: Device) -> RepoSync:
    sync = engine(device)
    result = sync.cycle(require_settled=False)
    assert result.ok, result.error
    return sync


def make_inline(device: Device) -> Device:
    text = device.config.read_text(encoding="utf-8")
    device.config.write_text(text + 'mode = "inline"\n', encoding="utf-8")
    assert configs.load(device.config).repos[0].mode == "inline"
    return device


def clone(remote: Path, folder: Path) -> Path:
    """A device with only the original plugin: a plain clone."""
    git(remote.parent, "clone", "--quiet", str(remote), str(folder))
    return folder


def plugin_reads(repo: Path) -> dict[str, dict[str, str | None]]:
    """What the original plugin's /convosync:resume finds, by device."""
    text = (repo / PATH).read_text(encoding="utf-8")
    return {str(item["device"]): item for item in plugin_parse(text)}


def changed_paths(repo: Path, commit: str = "HEAD") -> list[str]:
    return git(repo, "diff-tree", "--no-commit-id", "--name-only", "-r", commit).splitlines()


def status(repo: Path) -> str:
    return git(repo, "status", "--porcelain=v1", "--untracked-files=all")


def inline_problem(device: Device) -> str:
    (repo,) = device.status()["repos"]
    problem = repo["inline_problem"]
    return str(problem["message"]) if problem else ""


@pytest.fixture
def desktop(tmp_path: Path, remote: Path) -> Device:
    return make_inline(make_device(tmp_path, remote, "desktop"))


@pytest.fixture
def laptop(tmp_path: Path, remote: Path) -> Device:
    return make_device(tmp_path, remote, "laptop")


# -- config and the file's text (pure) ---------------------------------------------------


def test_mode_must_be_branch_or_inline(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[[repos]]\npath = "/src/app"\nmode = "inline"\n', encoding="utf-8")
    assert configs.load(path).repos[0].mode == "inline"
    path.write_text('[[repos]]\npath = "/src/app"\nmode = "commit"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"'repos\[1\].mode' is 'commit'; expected \"branch\""):
        configs.load(path)


def _handoff(device: str, hour: int, body: str, name: str = "") -> Handoff:
    return Handoff(
        device=device,
        created=datetime(2026, 11, 23, hour, tzinfo=timezone.utc),
        repo_commit="3f2a9c1",
        repo_branch="main",
        task="task",
        body=body,
        name=name,
    )


def test_sections_of_plugin_only_devices_are_kept_and_ours_replaced() -> None:
    before = render_plugin(
        [
            _handoff("desktop", 10, "### Current Task\nold desktop"),
            _handoff("phone", 9, "### Current Task\nfrom the phone"),
        ]
    ) + ("---\n## Handoff from phone\n**Timestamp:** 2026-11-23T08:00:00.123456Z\n**Commit:** a\n")
    text = inline.file_text([_handoff("desktop", 11, "### Current Task\nnew desktop")], before)
    found = {item["device"]: item for item in plugin_parse(text)}
    assert set(found) == {"desktop", "phone"}
    assert found["desktop"]["content"] == "### Current Task\nnew desktop"
    assert found["phone"]["content"] == "### Current Task\nfrom the phone"
    assert text.index("## Handoff from desktop") < text.index("## Handoff from phone")


def test_commit_message_names_the_newest_handoff_and_carries_the_trailer() -> None:
    message = inline.commit_message(
        [_handoff("desktop", 10, "x", "a.md"), _handoff("laptop", 11, "y", "b.md")]
    )
    assert message.startswith("convosync: handoff from laptop: task\n\n")
    assert message.rstrip().endswith(f"{inline.TRAILER}: laptop/b.md")


# -- committing on the person's branch ------------------------------------------------------


def test_the_plugin_reads_what_the_daemon_committed_after_a_pull(
    tmp_path: Path, desktop: Device, laptop: Device, remote: Path
) -> None:
    start = git(desktop.repo, "rev-parse", "HEAD")
    desktop.write_draft(handoff_text("Implementing OAuth refresh tokens", fact=PIZZA))
    sync = cycle(desktop)

    assert git(desktop.repo, "rev-parse", "HEAD^") == start
    assert changed_paths(desktop.repo) == [PATH]
    subject = git(desktop.repo, "log", "-1", "--format=%s")
    assert subject == "convosync: handoff from desktop: Implementing OAuth refresh tokens"
    assert git(desktop.repo, "ls-files", ".convosync") == PATH
    assert status(desktop.repo) == "", "git status must stay clean"
    assert git(remote, "rev-parse", "main") == git(desktop.repo, "rev-parse", "HEAD")
    assert sync.state.last_inline is not None and sync.state.inline_problem is None

    phone = clone(remote, tmp_path / "phone")
    found = plugin_reads(phone)
    assert list(found) == ["desktop"]
    assert found["desktop"]["Branch"] == "main"
    assert found["desktop"]["Commit"] == start
    assert PIZZA in str(found["desktop"]["content"])

    # The default mode commits nothing: the laptop's branches stay where they were.
    refs = ("refs/heads/main", "refs/remotes/origin/main")
    before = git(laptop.repo, "for-each-ref", *refs)
    cycle(laptop)
    assert git(laptop.repo, "for-each-ref", *refs) == before


def test_staged_and_unstaged_changes_survive_byte_for_byte(
    desktop: Device, laptop: Device, remote: Path
) -> None:
    repo = desktop.repo
    (repo / "README.md").write_bytes(b"# app\nstaged line\r\n")
    (repo / "new.txt").write_bytes(b"brand new\n")
    git(repo, "add", "README.md", "new.txt")
    (repo / "README.md").write_bytes(b"# app\nstaged line\r\nunstaged line\n")
    (repo / "untracked.txt").write_bytes(b"mine\n")
    staged = git(repo, "diff", "--cached", "--binary")
    unstaged = git(repo, "diff", "--binary")
    entries = git(repo, "ls-files", "-s")
    before_status = status(repo)
    head = git(repo, "rev-parse", "HEAD")

    laptop.write_draft(handoff_text("From the laptop", fact=PIZZA))
    cycle(laptop)
    cycle(desktop)

    assert git(repo, "rev-parse", "HEAD^") == head
    assert changed_paths(repo) == [PATH], "only the handoffs file is committed"
    assert git(repo, "diff", "--cached", "--binary") == staged
    assert git(repo, "diff", "--binary") == unstaged
    after_entries = git(repo, "ls-files", "-s").splitlines()
    assert [line for line in after_entries if not line.endswith(f"\t{PATH}")] == (
        entries.splitlines()
    )
    assert status(repo) == before_status
    assert (repo / "README.md").read_bytes() == b"# app\nstaged line\r\nunstaged line\n"
    assert PIZZA in str(plugin_reads(repo)["laptop"]["content"])
    assert git(remote, "rev-parse", "main") == git(repo, "rev-parse", "HEAD")


def test_a_diverged_branch_is_not_pushed_and_status_says_why(
    tmp_path: Path, desktop: Device, laptop: Device, remote: Path
) -> None:
    phone = clone(remote, tmp_path / "phone")
    (phone / "phone.txt").write_text("from the phone\n", encoding="utf-8")
    git(phone, "add", "phone.txt")
    git(phone, "commit", "--quiet", "-m", "phone work")
    git(phone, "push", "--quiet", "origin", "main")
    phone_tip = git(phone, "rev-parse", "HEAD")

    laptop.write_draft(handoff_text("Diverged"))
    cycle(laptop)
    cycle(desktop)
    assert changed_paths(desktop.repo) == [PATH], "committed locally"
    assert git(remote, "rev-parse", "main") == phone_tip, "but not pushed"
    problem = inline_problem(desktop)
    assert "not pushed: main and origin/main have diverged" in problem
    assert "git pull" in problem
    text = desktop.cli("status").stdout
    assert "inline issue" in text and "diverged" in text

    git(desktop.repo, "pull", "--quiet", "--rebase", "origin", "main")
    cycle(desktop)
    assert git(remote, "rev-parse", "main") == git(desktop.repo, "rev-parse", "HEAD")
    assert git(remote, "rev-parse", "main^") == phone_tip
    assert inline_problem(desktop) == ""


def test_the_persons_unpushed_commits_are_left_for_them_to_push(
    desktop: Device, laptop: Device, remote: Path
) -> None:
    start = git(remote, "rev-parse", "main")
    (desktop.repo / "wip.txt").write_text("work in progress\n", encoding="utf-8")
    git(desktop.repo, "add", "wip.txt")
    git(desktop.repo, "commit", "--quiet", "-m", "wip, not for pushing yet")
    laptop.write_draft(handoff_text("Hold on"))
    cycle(laptop)
    cycle(desktop)
    assert changed_paths(desktop.repo) == [PATH]
    assert git(remote, "rev-parse", "main") == start
    assert "1 commit(s) of yours that origin/main lacks" in inline_problem(desktop)

    git(desktop.repo, "push", "--quiet", "origin", "main")
    cycle(desktop)
    assert inline_problem(desktop) == ""
    assert engine(desktop).state.inline_unpushed is None


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("detached", "HEAD is detached"),
        ("merge", "a merge is in progress"),
        ("rebase", "a rebase is in progress"),
    ],
)
def test_nothing_is_committed_mid_operation(
    desktop: Device, laptop: Device, kind: str, reason: str
) -> None:
    repo = desktop.repo
    interrupt(repo, kind)
    before = snapshot(repo)
    laptop.write_draft(handoff_text("While busy", fact=PIZZA))
    cycle(laptop)
    cycle(desktop)
    assert snapshot(repo) == before
    problem = inline_problem(desktop)
    assert problem.startswith("not committed: ") and reason in problem
    # The file is still written where it is not tracked, as in branch mode.
    assert PIZZA in str(plugin_reads(repo)["laptop"]["content"])

    if kind == "merge":
        git(repo, "merge", "--abort")
    elif kind == "rebase":
        git(repo, "rebase", "--abort")
    git(repo, "checkout", "--quiet", "main")
    cycle(desktop)
    assert changed_paths(repo) == [PATH]
    # Committed now; pushing waits for the person's own unpushed "main" commit.
    assert not inline_problem(desktop).startswith("not committed")


def test_an_index_lock_held_by_git_is_waited_for_and_never_taken(
    desktop: Device, laptop: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inline, "LOCK_WAIT", 0.2)
    lock = desktop.repo / ".git" / "index.lock"
    lock.write_bytes(b"")
    head = git(desktop.repo, "rev-parse", "HEAD")
    laptop.write_draft(handoff_text("Locked out"))
    cycle(laptop)
    sync = cycle(desktop)
    assert git(desktop.repo, "rev-parse", "HEAD") == head
    assert lock.exists(), "another command's lock is never removed"
    assert sync.state.inline_problem is not None
    assert "index.lock" in sync.state.inline_problem.message

    lock.unlink()
    sync.cycle(require_settled=False)
    assert changed_paths(desktop.repo) == [PATH]
    assert not lock.exists()
    assert status(desktop.repo) == ""


def test_the_persons_own_edit_or_staging_of_the_file_is_kept(
    desktop: Device, laptop: Device
) -> None:
    desktop.write_draft(handoff_text("First"))
    cycle(desktop)
    committed = git(desktop.repo, "rev-parse", "HEAD")
    edited = desktop.materialized.read_text(encoding="utf-8") + "my own note\n"
    desktop.materialized.write_text(edited, encoding="utf-8")

    laptop.write_draft(handoff_text("Second"))
    cycle(laptop)
    cycle(desktop)
    assert git(desktop.repo, "rev-parse", "HEAD") == committed
    assert desktop.materialized.read_text(encoding="utf-8") == edited
    assert "you have changed .convosync/session-handoff.md" in inline_problem(desktop)

    git(desktop.repo, "add", "--force", PATH)
    cycle(desktop)
    assert git(desktop.repo, "rev-parse", "HEAD") == committed
    assert "you have staged a change to .convosync/session-handoff.md" in inline_problem(desktop)

    git(desktop.repo, "restore", "--staged", "--worktree", PATH)
    cycle(desktop)
    assert changed_paths(desktop.repo) == [PATH]
    assert set(plugin_reads(desktop.repo)) == {"desktop", "laptop"}
    assert status(desktop.repo) == ""


def test_sections_written_by_plugin_only_devices_are_kept(
    tmp_path: Path, desktop: Device, laptop: Device, remote: Path
) -> None:
    desktop.write_draft(handoff_text("From the desktop"))
    cycle(desktop)
    phone = clone(remote, tmp_path / "phone")
    # What the original plugin's /convosync:save does: append a section and commit.
    with (phone / PATH).open("a", encoding="utf-8") as handle:
        handle.write(
            "---\n## Handoff from phone\n**Timestamp:** 2026-11-24T01:02:03.456789Z\n"
            f"**Commit:** {git(phone, 'rev-parse', 'HEAD')}\n**Branch:** main\n\n"
            f"### Current Task\nOn the bus\n\n### Important Context\n- {PIZZA}\n\n"
        )
    git(phone, "commit", "--quiet", "-am", "phone handoff")
    git(phone, "push", "--quiet", "origin", "main")
    git(desktop.repo, "pull", "--quiet", "--ff-only", "origin", "main")

    laptop.write_draft(handoff_text("From the laptop"))
    cycle(laptop)
    cycle(desktop)
    assert changed_paths(desktop.repo) == [PATH]
    found = plugin_reads(desktop.repo)
    assert set(found) == {"desktop", "laptop", "phone"}
    assert PIZZA in str(found["phone"]["content"])
    git(phone, "pull", "--quiet", "--ff-only", "origin", "main")
    assert set(plugin_reads(phone)) == {"desktop", "laptop", "phone"}


def test_a_commit_whose_file_was_never_written_is_recognised_as_ours(
    desktop: Device, laptop: Device
) -> None:
    desktop.write_draft(handoff_text("One"))
    cycle(desktop)
    first = desktop.materialized.read_bytes()
    laptop.write_draft(handoff_text("Two"))
    cycle(laptop)
    cycle(desktop)
    # As if the daemon had stopped after committing but before writing the file.
    desktop.materialized.write_bytes(first)
    laptop.write_draft(handoff_text("Three"))
    cycle(laptop)
    cycle(desktop)
    assert inline_problem(desktop) == ""
    assert "### Current Task\nThree" in str(plugin_reads(desktop.repo)["laptop"]["content"])
    assert status(desktop.repo) == ""


def test_with_the_daemon_running_a_draft_reaches_the_plugin_only_device(
    tmp_path: Path, desktop: Device, remote: Path
) -> None:
    daemon = desktop.start()
    try:
        desktop.write_draft(handoff_text("Through the daemon", fact=PIZZA))
        wait_until(
            lambda: git(remote, "log", "-1", "--format=%s", "main").startswith(
                "convosync: handoff from desktop"
            ),
            timeout=20,
            what="the handoff commit on the remote's main",
        )
    finally:
        assert daemon.stop() == 0
    phone = clone(remote, tmp_path / "phone")
    assert PIZZA in str(plugin_reads(phone)["desktop"]["content"])
    assert status(desktop.repo) == ""
