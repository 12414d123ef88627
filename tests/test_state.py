"""The state files: one per repo, and the daemon's one file of poll times."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from convosyncd import state as states
from convosyncd.hook import Loaded, write_loaded
from convosyncd.state import Event, RepoState


def test_a_state_survives_its_file() -> None:
    state = RepoState(
        path="/src/app",
        last_poll=Event("2026-12-01T10:00:00Z", "checked the remote"),
        notified_problems=["error:x"],
        pending=2,
    )
    again = RepoState.from_json(json.loads(states.encode(state)))
    assert again == state
    assert again.notified_problems is not state.notified_problems


def test_poll_times_round_trip_and_the_later_one_wins(tmp_path: Path) -> None:
    older = Event("2026-12-01T10:00:00Z", "checked the remote")
    newer = Event("2026-12-01T10:05:00Z", "checked the remote")
    states.save_polls(tmp_path, {"/src/app": newer})
    polls = states.load_polls(tmp_path)
    assert polls == {"/src/app": newer}
    app, other = Path("/src/app"), Path("/src/other")
    assert states.latest_poll(RepoState(last_poll=older), polls, app) == newer
    assert states.latest_poll(RepoState(last_poll=newer), {"/src/app": older}, app) == newer
    assert states.latest_poll(RepoState(), polls, app) == newer
    assert states.latest_poll(RepoState(last_poll=older), polls, other) == older
    assert states.latest_poll(RepoState(), polls, other) is None


def test_a_missing_or_broken_polls_file_is_no_poll_times(tmp_path: Path) -> None:
    assert states.load_polls(tmp_path) == {}
    for broken in (b"{not json", b'{"version": 99, "polls": {}}', b'{"version": 1}', b"[]"):
        states.polls_file(tmp_path).write_bytes(broken)
        assert states.load_polls(tmp_path) == {}


# -- the state folder: private, and nothing kept for repos that are gone ----------------


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.usefixtures("loose_umask")
def test_state_files_are_created_private_in_private_folders(tmp_path: Path) -> None:
    state_dir = tmp_path / "platform" / "convosync"
    repo = Path("/src/app")
    states.save(states.state_file(state_dir, repo), RepoState(path=str(repo)))
    states.save_polls(state_dir, {str(repo): Event("2026-12-01T10:00:00Z", "checked")})
    write_loaded(states.loaded_file(state_dir, repo), Loaded(str(repo), ("laptop/a.md",)), "me")
    for folder in (state_dir, state_dir / "repos", state_dir / "loaded"):
        assert mode(folder) == 0o700, folder
    for file in (
        states.state_file(state_dir, repo),
        states.polls_file(state_dir),
        states.loaded_file(state_dir, repo),
    ):
        assert mode(file) == 0o600, file
    assert mode(state_dir.parent) == 0o755, "the platform's folder above is left as usual"


def test_make_private_puts_modes_right_and_follows_no_link(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    (state_dir / "repos").mkdir(parents=True, mode=0o755)
    state_dir.chmod(0o755)
    (state_dir / "repos").chmod(0o775)
    files = [state_dir / "polls.json", state_dir / "convosyncd.log", state_dir / "repos" / "a.json"]
    for file in files:
        file.write_text("{}\n", encoding="utf-8")
        file.chmod(0o644)
    (state_dir / "repos" / "b.json").write_text("{}\n", encoding="utf-8")
    (state_dir / "repos" / "b.json").chmod(0o600)
    # Links planted in the folder: what they point at is nobody's business here.
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o755)
    (outside / "shared.txt").write_text("shared\n", encoding="utf-8")
    (outside / "shared.txt").chmod(0o644)
    (state_dir / "link-to-file").symlink_to(outside / "shared.txt")
    (state_dir / "link-to-folder").symlink_to(outside)

    changed = states.make_private(state_dir)

    assert sorted(changed) == sorted([state_dir, state_dir / "repos", *files])
    assert mode(state_dir) == mode(state_dir / "repos") == 0o700
    assert all(mode(file) == 0o600 for file in files)
    assert mode(outside) == 0o755 and mode(outside / "shared.txt") == 0o644
    assert states.make_private(state_dir) == [], "nothing left to change"


def test_forgetting_repos_touches_only_their_own_files(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    kept, gone = Path("/src/app"), Path("/src/old app")
    for repo in (kept, gone):
        states.save(states.state_file(state_dir, repo), RepoState(path=str(repo)))
        write_loaded(states.loaded_file(state_dir, repo), Loaded(str(repo), ()), "me")
        states.lock_file(state_dir, repo).write_text("", encoding="utf-8")
    old = states.state_file(state_dir, gone)
    leftovers = [
        old.with_name(old.name + ".corrupt"),
        old.with_name(f".{old.name}.1234-5678.tmp"),  # a write cut short by a crash
    ]
    strangers = [
        state_dir / "repos" / "notes.txt",
        state_dir / "repos" / "old app.json",  # not a name convosyncd gives
        state_dir / "loaded" / "x-0123456789ab.json.bak",
    ]
    for path in leftovers + strangers:
        path.write_text("x\n", encoding="utf-8")

    removed = states.forget_unregistered(state_dir, [kept])

    expected = [
        *(path for path in states.repo_files(state_dir, gone) if path not in leftovers),
        *leftovers,
    ]
    assert sorted(removed) == sorted(expected)
    assert not any(path.exists() for path in expected)
    state, _corrupt, lock, loaded = states.repo_files(state_dir, kept)
    assert state.exists() and lock.exists() and loaded.exists()
    assert all(path.exists() for path in strangers)
    assert states.forget_unregistered(state_dir, [kept]) == []
    assert states.forget_unregistered(tmp_path / "never made", [kept]) == []
