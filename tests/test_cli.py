"""The command line, run as a subprocess the way a person runs it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from convosyncd import state as states
from tests.support.devices import (
    Device,
    cli_env,
    git,
    handoff_text,
    make_device,
    run_cli,
    snapshot,
)

EVENT = states.Event("2026-11-23T22:00:00Z", "nothing new")


@pytest.fixture
def desktop(tmp_path: Path, remote: Path) -> Device:
    return make_device(tmp_path, remote, "desktop", register=False)


def test_version_and_module_entry_point() -> None:
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("convosyncd ")


def test_add_registers_prepares_and_keeps_comments(desktop: Device) -> None:
    desktop.config.write_text(
        f'# mine\ndevice = "desktop"  # this box\nstate_dir = "{desktop.state}"\n', encoding="utf-8"
    )
    result = desktop.cli("add", str(desktop.repo))
    assert result.returncode == 0, result.stderr
    assert f"Registered {desktop.repo}" in result.stdout
    text = desktop.config.read_text(encoding="utf-8")
    assert "# mine" in text and "# this box" in text
    assert f'path = "{desktop.repo}"' in text
    assert (desktop.repo / ".convosync" / "device-id").read_text(encoding="utf-8") == "desktop\n"
    assert "/.convosync/" in (desktop.repo / ".git" / "info" / "exclude").read_text(
        encoding="utf-8"
    )
    again = desktop.cli("add", str(desktop.repo))
    assert again.returncode == 0 and "Already registered" in again.stdout
    assert desktop.config.read_text(encoding="utf-8").count("[[repos]]") == 1


def test_add_refuses_what_it_cannot_sync_with_exit_2(desktop: Device, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    result = desktop.cli("add", str(plain))
    assert result.returncode == 2
    assert f"convosyncd: {plain} is not a git work tree: run `git init`" in result.stderr
    assert "Traceback" not in result.stderr

    result = desktop.cli("add", str(desktop.repo), "--remote", "upstream")
    assert result.returncode == 2
    assert "has no git remote named 'upstream' (remotes: origin)" in result.stderr
    assert "git -C" in result.stderr and "remote add upstream URL" in result.stderr

    (desktop.repo / "src").mkdir()
    result = desktop.cli("add", str(desktop.repo / "src"))
    assert (
        result.returncode == 2
        and f"register the top folder, `convosyncd add {desktop.repo}`" in result.stderr
    )

    result = desktop.cli("add", str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "does not exist" in result.stderr
    assert "[[repos]]" not in desktop.config.read_text(encoding="utf-8")


def test_a_broken_config_is_an_error_naming_file_key_and_expectation(desktop: Device) -> None:
    desktop.config.write_text('device = "desktop"\npull_interval = "often"\n', encoding="utf-8")
    for command in (["status"], ["add", str(desktop.repo)], ["sync"], ["run"]):
        result = desktop.cli(*command, timeout=30)
        assert result.returncode == 2, (command, result.stderr)
        assert str(desktop.config) in result.stderr
        assert "'pull_interval' is 'often'; expected a number of seconds" in result.stderr
        assert "Traceback" not in result.stderr


def test_remove(desktop: Device) -> None:
    desktop.cli("add", str(desktop.repo))
    result = desktop.cli("remove", str(desktop.repo))
    assert result.returncode == 0 and "Removed" in result.stdout
    assert "[[repos]]" not in desktop.config.read_text(encoding="utf-8")
    result = desktop.cli("remove", str(desktop.repo))
    assert result.returncode == 2 and "is not registered" in result.stderr


def _listed(path: Path) -> tuple[int, str]:
    """The order ``remove`` lists what it deleted in: ``repos/`` first, by name."""
    return (path.parent.name != "repos", path.name)


def convosync_files(repo: Path) -> dict[str, bytes]:
    folder = repo / ".convosync"
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_remove_deletes_the_repos_state_and_says_so_but_leaves_the_repo(
    tmp_path: Path, remote: Path, desktop: Device
) -> None:
    other = make_device(tmp_path, remote, "other", register=False)
    laptop = make_device(tmp_path, remote, "laptop")
    laptop.write_draft(handoff_text("From the laptop"))
    assert laptop.cli("sync").returncode == 0
    for repo in (desktop.repo, other.repo):
        assert desktop.cli("add", str(repo)).returncode == 0
    assert desktop.cli("sync").returncode == 0
    for repo in (desktop.repo, other.repo):
        hooked = desktop.cli("resume", "--hook", cwd=repo)
        assert "From the laptop" in hooked.stdout, hooked.stderr
    # The daemon's poll times, as it records them; and two files convosyncd did not
    # name, one of them named like a repo's but for no repo at all.
    states.save_polls(desktop.state, {str(desktop.repo): EVENT, str(other.repo): EVENT})
    strangers = [desktop.state / "repos" / "notes.txt", desktop.state / "loaded" / "app.json"]
    for stranger in strangers:
        stranger.write_text("mine\n", encoding="utf-8")
    mine = states.repo_files(desktop.state, desktop.repo)
    theirs = states.repo_files(desktop.state, other.repo)
    assert mine[0].exists() and mine[3].exists(), "a state file and a loaded file to delete"
    existed = sorted((path for path in mine if path.exists()), key=_listed)
    before = snapshot(desktop.repo)
    branch = git(desktop.repo, "rev-parse", "refs/heads/convosync")
    exclude = (desktop.repo / ".git" / "info" / "exclude").read_bytes()
    files = convosync_files(desktop.repo)

    result = desktop.cli("remove", str(desktop.repo))

    assert result.returncode == 0, result.stderr
    names = ", ".join(str(path.relative_to(desktop.state)) for path in existed)
    assert result.stdout.splitlines()[1] == (
        f"Deleted its state in {desktop.state}: {names}, its entry in polls.json."
    )
    assert not any(path.exists() for path in mine)
    assert theirs[0].exists() and theirs[3].exists(), "another repo's state stays"
    assert all(stranger.exists() for stranger in strangers)
    assert set(states.load_polls(desktop.state)) == {str(other.repo)}
    # The repo, its sync branch and .convosync/ are the person's: all as they were.
    assert snapshot(desktop.repo) == before
    assert git(desktop.repo, "rev-parse", "refs/heads/convosync") == branch
    assert (desktop.repo / ".git" / "info" / "exclude").read_bytes() == exclude
    assert convosync_files(desktop.repo) == files

    assert desktop.cli("add", str(desktop.repo)).returncode == 0
    assert desktop.cli("remove", str(desktop.repo)).stdout.splitlines()[1] == (
        f"It had no state in {desktop.state}."
    )


def test_sync_status_and_resume_between_two_devices(tmp_path: Path, remote: Path) -> None:
    desktop = make_device(tmp_path, remote, "desktop")
    laptop = make_device(tmp_path, remote, "laptop")
    desktop.write_draft(handoff_text("Implementing OAuth refresh tokens", fact="pizza: Margherita"))
    result = desktop.cli("sync")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"✓ {desktop.repo}: published ") and "pushed" in result.stdout

    status = desktop.status()
    [repo] = status["repos"]
    assert status["device"] == "desktop" and status["daemon_running"] is False
    assert repo["pending"] == 0 and repo["remote"] == "origin" and repo["branch"] == "convosync"
    assert "Implementing OAuth refresh tokens" in repo["last_publish"]["message"]
    assert repo["last_error"] is None and repo["last_poll"] is not None

    assert laptop.cli("sync").returncode == 0
    resumed = laptop.cli("resume", str(laptop.repo))
    assert resumed.returncode == 0, resumed.stderr
    head = git(desktop.repo, "rev-parse", "HEAD")
    assert resumed.stdout.startswith("## Handoff from desktop (just now, ")
    assert (
        f"Branch: main · Commit: {head}\n\n### Current Task\nImplementing OAuth" in resumed.stdout
    )
    assert "pizza: Margherita" in resumed.stdout
    from_inside = laptop.cli("resume", cwd=laptop.repo / ".convosync")
    assert from_inside.stdout == resumed.stdout
    own = desktop.cli("resume", str(desktop.repo))
    assert own.returncode == 0 and own.stdout.startswith("No handoffs from other devices")

    text = laptop.cli("status").stdout
    assert "device laptop · daemon not running" in text and "last pull" in text


def test_resume_lists_devices_newest_first(tmp_path: Path, remote: Path) -> None:
    devices = [make_device(tmp_path, remote, name) for name in ("desktop", "phone", "laptop")]
    for device in devices[:2]:
        device.write_draft(handoff_text(f"Work on {device.name}"))
        assert device.cli("sync").returncode == 0
    laptop = devices[2]
    assert laptop.cli("sync").returncode == 0
    output = laptop.cli("resume", str(laptop.repo)).stdout
    assert output.index("Handoff from phone") < output.index("Handoff from desktop")


def test_sync_fails_for_a_broken_repo_and_still_syncs_the_others(
    tmp_path: Path, remote: Path
) -> None:
    desktop = make_device(tmp_path, remote, "desktop")
    other = make_device(tmp_path, remote, "other", register=False)
    desktop.write_config(repos=[other.repo, desktop.repo])
    shutil.rmtree(other.repo)
    desktop.write_draft(handoff_text("Still works"))
    result = desktop.cli("sync")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"✗ {other.repo}: the repo folder {other.repo} is missing")
    assert lines[1].startswith(f"✓ {desktop.repo}: published")
    [broken, good] = desktop.status()["repos"]
    assert broken["exists"] is False and "is missing" in broken["last_error"]["message"]
    assert good["last_error"] is None


def test_sync_from_inside_a_repo_finds_it(tmp_path: Path, remote: Path) -> None:
    desktop = make_device(tmp_path, remote, "desktop")
    desktop.write_draft(handoff_text("From a sub-folder"))
    (desktop.repo / "src").mkdir()
    result = desktop.cli("sync", ".", cwd=desktop.repo / "src")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"✓ {desktop.repo}: published")


def test_sync_of_an_unregistered_path_is_exit_2(tmp_path: Path, remote: Path) -> None:
    desktop = make_device(tmp_path, remote, "desktop")
    result = desktop.cli("sync", str(tmp_path))
    assert result.returncode == 2 and "is not registered" in result.stderr


def test_a_refused_draft_is_left_in_place_and_shown(tmp_path: Path, remote: Path) -> None:
    desktop = make_device(tmp_path, remote, "desktop", max_draft_bytes=100)
    desktop.write_draft("x" * 101)
    result = desktop.cli("sync")
    assert result.returncode == 1
    assert "draft refused" in result.stdout and "over max_draft_bytes (100)" in result.stdout
    assert desktop.draft.read_text(encoding="utf-8") == "x" * 101
    [repo] = desktop.status()["repos"]
    assert "over max_draft_bytes" in repo["draft_problem"]["message"]
    desktop.draft.write_text("### Current Task\nShort now\n", encoding="utf-8")
    assert desktop.cli("sync").returncode == 0
    assert desktop.status()["repos"][0]["draft_problem"] is None


def test_status_json_is_valid_with_no_repos(tmp_path: Path) -> None:
    result = run_cli("--config", str(tmp_path / "none.toml"), "status", "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout)["repos"] == []


def test_a_poll_with_nothing_new_asks_for_the_tip_and_fetches_nothing(
    tmp_path: Path, remote: Path
) -> None:
    desktop = make_device(tmp_path, remote, "desktop")
    laptop = make_device(tmp_path, remote, "laptop")
    desktop.write_draft(handoff_text("Something"))
    assert desktop.cli("sync").returncode == 0
    trace = tmp_path / "trace.txt"
    assert laptop.cli("sync", env={"GIT_TRACE": str(trace)}).returncode == 0
    assert "built-in: git fetch " in trace.read_text(encoding="utf-8"), "the first poll fetches"
    trace.unlink()
    assert laptop.cli("sync", env={"GIT_TRACE": str(trace)}).returncode == 0
    commands = trace.read_text(encoding="utf-8")
    assert "built-in: git ls-remote " in commands
    assert "git fetch" not in commands and "git push" not in commands


def test_a_reader_that_goes_away_is_no_crash(tmp_path: Path, remote: Path) -> None:
    desktop = make_device(tmp_path, remote, "desktop")
    desktop.write_config(repos=[tmp_path / f"repo-{number}" for number in range(300)])
    state = tmp_path / "home-state"
    # `status` writes far more than a pipe's buffer; the reader takes none and goes.
    result = subprocess.run(
        [
            "/bin/sh",
            "-c",
            f"{sys.executable} -m convosyncd --config {desktop.config} status | true",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env({"XDG_STATE_HOME": str(state)}),
        check=False,
    )
    assert result.stderr == ""
    assert not (state / "convosync" / "crash.log").exists()
