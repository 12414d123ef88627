"""The fault campaign at its quick size: nothing lost, nothing duplicated, nothing hung.

``python -m tests.stress`` runs the same campaigns long (120 kills, 30 rounds, outages
of minutes, 30 rounds of forgetting and purging) and prints the report.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hostile import hostile_inputs
from tests.stress import (
    concurrent_campaign,
    forget_campaign,
    kill9_campaign,
    outage_campaign,
)


def test_kill_9_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    outcome = kill9_campaign(tmp_path, kills=12, seed=7)
    assert outcome.written == 12
    assert (outcome.lost, outcome.duplicated) == (0, 0), outcome
    assert "left behind" not in outcome.notes


def test_three_devices_publishing_at_once_converge(tmp_path: Path) -> None:
    outcome = concurrent_campaign(tmp_path, rounds=4)
    assert (outcome.written, outcome.lost, outcome.duplicated) == (12, 0, 0), outcome
    assert "gave up: 0; conflict markers: 0; devices differing from the remote: 0" in outcome.notes


def test_forget_and_purge_while_three_devices_publish_lose_nothing_else(
    tmp_path: Path,
) -> None:
    outcome = forget_campaign(tmp_path, rounds=6)
    assert (outcome.lost, outcome.duplicated) == (0, 0), outcome
    assert outcome.written >= 12, outcome
    assert "came back: 0; purged still reachable: 0; commands that failed: 0;" in outcome.notes
    assert "errors in the daemons' logs: 0" in outcome.notes
    assert "(2 by purge)" in outcome.notes, outcome


@pytest.mark.parametrize("kind", ["moved", "refused", "silent"])
def test_an_unreachable_remote_queues_and_catches_up(tmp_path: Path, kind: str) -> None:
    outcome = outage_campaign(tmp_path, kind, outage=5.0, drafts=2)
    assert (outcome.written, outcome.lost, outcome.duplicated) == (2, 0, 0), outcome
    assert outcome.longest_recovery < 30, outcome


def test_hostile_input_is_refused_clearly_and_loses_nothing(tmp_path: Path) -> None:
    cases = hostile_inputs(tmp_path)
    assert len(cases) >= 12
    failed = [case.row() for case in cases if not case.ok]
    assert not failed, "\n".join(failed)
