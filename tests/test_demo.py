"""``convosyncd demo`` runs the whole product on throwaway devices and cleans up."""

from __future__ import annotations

import re
import time
from pathlib import Path

from tests.support.dbus_session import RecordingNotificationServer, env_for_bus
from tests.support.devices import run_cli


def test_the_demo_shows_a_handoff_arriving_with_its_notification(
    session_bus: str, notification_server: RecordingNotificationServer
) -> None:
    start = time.monotonic()
    result = run_cli("demo", env=env_for_bus(session_bus), timeout=60)
    elapsed = time.monotonic() - start
    assert result.returncode == 0, result.stdout + result.stderr
    assert elapsed < 15
    # Paired through the command line, as a person does: the code itself is never shown.
    assert re.search(
        r"paired: `convosyncd key show` on the desktop piped into `convosyncd key import` on "
        r"the laptop \(key id [0-9a-f]{16}\)",
        result.stdout,
    ), result.stdout
    assert "cs2-" not in result.stdout + result.stderr
    assert "5. laptop: it arrived in .convosync/session-handoff.md" in result.stdout
    assert "handed to this desktop's notification server" in result.stdout
    assert "## Handoff from desktop (just now," in result.stdout
    assert "favourite pizza is Margherita" in result.stdout
    [note] = notification_server.wait_for(lambda notes: len(notes) >= 1, 5)
    assert note["summary"] == "Handoff from desktop"
    assert note["body"] == "app: Implementing OAuth refresh tokens"
    folder = re.search(r"convosyncd demo in (\S+)", result.stdout)
    assert folder is not None and not Path(folder.group(1)).exists(), "the demo cleans up"


def test_the_demo_without_a_notification_server_says_so() -> None:
    result = run_cli("demo", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(not shown: no desktop session bus" in result.stdout
