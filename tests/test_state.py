"""The state files: one per repo, and the daemon's one file of poll times."""

from __future__ import annotations

import json
from pathlib import Path

from convosyncd import state as states
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
