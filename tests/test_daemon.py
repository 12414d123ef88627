"""``convosyncd run`` as a real subprocess: two devices, a bare remote, a private D-Bus."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from convosyncd import state as states
from convosyncd.daemon import poll_retry_delay
from tests.support.dbus_session import RecordingNotificationServer, env_for_bus
from tests.support.devices import (
    DaemonProcess,
    cli_env,
    git,
    handoff_text,
    make_device,
    make_remote,
    run_cli,
    wait_until,
)
from tests.support.network import silent_listener


def on_remote(remote: Path) -> list[str]:
    output = git(remote, "ls-tree", "-r", "--name-only", "refs/heads/convosync", check=False)
    return [line for line in output.splitlines() if line]


def test_a_draft_on_one_device_becomes_a_notification_on_the_other(
    tmp_path: Path, remote: Path, session_bus: str, notification_server: RecordingNotificationServer
) -> None:
    env = env_for_bus(session_bus)
    desktop = make_device(tmp_path, remote, "desktop", notify=True, pull_interval=0.5)
    laptop = make_device(tmp_path, remote, "laptop", notify=True, pull_interval=0.5)
    desktop_daemon, laptop_daemon = desktop.start(env), laptop.start(env)
    try:
        desktop.write_draft(
            handoff_text("Implementing OAuth refresh tokens", fact="pizza: Margherita")
        )
        wait_until(lambda: not desktop.draft.exists(), 10, "the draft to be published")
        wait_until(lambda: bool(on_remote(remote)), 10, "the handoff on the remote")
        wait_until(
            lambda: (
                laptop.materialized.exists()
                and "Handoff from desktop" in laptop.materialized.read_text(encoding="utf-8")
            ),
            10,
            "the handoff on the laptop",
        )
        assert "pizza: Margherita" in laptop.materialized.read_text(encoding="utf-8")
        [note] = notification_server.wait_for(lambda notes: len(notes) >= 1, 10)
        assert note["summary"] == "Handoff from desktop"
        assert note["body"] == "app: Implementing OAuth refresh tokens"
        laptop_daemon.wait_for_log(r"handoff from desktop arrived .*notification sent")
    finally:
        assert desktop_daemon.stop() == 0
        assert laptop_daemon.stop() == 0
    assert len(notification_server.notifications()) == 1, "never for the device's own handoff"

    restarted = laptop.start(env)
    try:
        before = laptop.status()["repos"][0]["last_poll"]["time"]
        wait_until(
            lambda: laptop.status()["repos"][0]["last_poll"]["time"] != before,
            10,
            "a poll after the restart",
        )
        time.sleep(1.2)
    finally:
        assert restarted.stop() == 0
    assert len(notification_server.notifications()) == 1, "never again after a restart"


def test_sigterm_and_sigint_finish_and_exit_zero(tmp_path: Path, remote: Path) -> None:
    desktop = make_device(tmp_path, remote, "desktop", settle=0.0)
    for sig in (signal.SIGTERM, signal.SIGINT):
        daemon = desktop.start()
        desktop.write_draft(handoff_text(f"Stopped by {sig.name}"))
        wait_until(lambda: not desktop.draft.exists(), 10, "the publish")
        assert daemon.stop(sig) == 0
        assert "stopped" in daemon.log()
    assert len(on_remote(remote)) == 2


def test_a_draft_written_while_the_daemon_was_down_is_published_at_start(
    tmp_path: Path, remote: Path
) -> None:
    desktop = make_device(tmp_path, remote, "desktop")
    desktop.write_draft(handoff_text("Written while down"))
    os.utime(desktop.draft, (time.time() - 60, time.time() - 60))
    daemon = desktop.start()
    try:
        wait_until(lambda: bool(on_remote(remote)), 10, "the startup scan to publish")
    finally:
        assert daemon.stop() == 0


def test_a_second_daemon_on_the_same_config_is_refused(tmp_path: Path, remote: Path) -> None:
    desktop = make_device(tmp_path, remote, "desktop")
    daemon = desktop.start()
    try:
        second = desktop.cli("run", timeout=20)
        assert second.returncode == 3
        assert "another `convosyncd run` is already running" in second.stderr
        assert desktop.status()["daemon_running"] is True
    finally:
        assert daemon.stop() == 0
    assert desktop.status()["daemon_running"] is False


def test_add_and_remove_take_effect_without_a_restart(tmp_path: Path, remote: Path) -> None:
    desktop = make_device(tmp_path, remote, "desktop", register=False)
    daemon = desktop.start()
    try:
        assert desktop.cli("add", str(desktop.repo)).returncode == 0
        daemon.wait_for_log(rf"watching {desktop.repo} ")
        desktop.write_draft(handoff_text("Added while running"))
        wait_until(lambda: bool(on_remote(remote)), 10, "the new repo's draft on the remote")
        assert desktop.cli("remove", str(desktop.repo)).returncode == 0
        daemon.wait_for_log(rf"no longer watching {desktop.repo}")
        desktop.write_draft(handoff_text("After removal"))
        time.sleep(1.0)
        assert desktop.draft.exists(), "a removed repo is not synced any more"
    finally:
        assert daemon.stop() == 0


def test_a_broken_config_keeps_the_last_good_one_until_fixed(tmp_path: Path, remote: Path) -> None:
    desktop = make_device(tmp_path, remote, "desktop")
    good = desktop.config.read_text(encoding="utf-8")
    daemon = desktop.start()
    try:
        desktop.config.write_text(good.replace("settle = 0.2", "settle = 'soon'"), encoding="utf-8")
        daemon.wait_for_log(r"config not reloaded, keeping the last good one: .*'settle' is 'soon'")
        desktop.write_draft(handoff_text("Still syncing"))
        wait_until(lambda: bool(on_remote(remote)), 10, "a publish under the last good config")
        desktop.config.write_text(
            good.replace("pull_interval = 1.0", "pull_interval = 2.0"), encoding="utf-8"
        )
        daemon.wait_for_log(r"config changed")
    finally:
        assert daemon.stop() == 0


def test_a_hung_notification_server_costs_a_bounded_wait(
    tmp_path: Path,
    remote: Path,
    session_bus: str,
    hung_notification_server: RecordingNotificationServer,
) -> None:
    env = env_for_bus(session_bus)
    desktop = make_device(tmp_path, remote, "desktop")
    laptop = make_device(
        tmp_path, remote, "laptop", notify=True, notify_timeout=1.0, pull_interval=0.5
    )
    daemon = laptop.start(env)
    try:
        for number in (1, 2):
            desktop.write_draft(handoff_text(f"Handoff {number}"))
            assert desktop.cli("sync").returncode == 0
            start = time.monotonic()
            wanted = f"Handoff {number}"
            wait_until(
                lambda: wanted in _read(laptop.materialized),  # noqa: B023 - used at once
                15,
                f"handoff {number} on the laptop",
            )
            assert time.monotonic() - start < 10
        daemon.wait_for_log(
            r"notification timed out: the notification server did not answer within 1 s"
        )
    finally:
        assert daemon.stop() == 0


def test_no_notification_server_is_a_log_line(
    tmp_path: Path, remote: Path, session_bus: str
) -> None:
    env = env_for_bus(session_bus)
    desktop = make_device(tmp_path, remote, "desktop")
    laptop = make_device(tmp_path, remote, "laptop", notify=True, pull_interval=0.5)
    daemon = laptop.start(env)
    try:
        desktop.write_draft(handoff_text("Nobody listening"))
        assert desktop.cli("sync").returncode == 0
        daemon.wait_for_log(
            r"notification not sent \(no notification server is running on the session bus\)"
        )
    finally:
        assert daemon.stop() == 0


@pytest.mark.parametrize("kind", ["symlink", "binary"])
def test_a_refused_draft_is_notified_once_and_left_in_place(
    tmp_path: Path,
    remote: Path,
    session_bus: str,
    notification_server: RecordingNotificationServer,
    kind: str,
) -> None:
    desktop = make_device(tmp_path, remote, "desktop", notify=True, pull_interval=0.5)
    desktop.draft.parent.mkdir(exist_ok=True)
    if kind == "symlink":
        desktop.draft.symlink_to("/etc/passwd")
    else:
        desktop.draft.write_bytes(b"\xff\xfe not text")
    daemon = desktop.start(env_for_bus(session_bus))
    try:
        [note] = notification_server.wait_for(lambda notes: len(notes) >= 1, 10)
        assert note["summary"] == "convosyncd could not publish in app"
        wait_until(
            lambda: desktop.status()["repos"][0]["draft_problem"] is not None,
            10,
            "status to show it",
        )
        time.sleep(1.5)
    finally:
        assert daemon.stop() == 0
    assert len(notification_server.notifications()) == 1
    assert os.path.lexists(desktop.draft)
    assert not on_remote(remote)
    message = desktop.status()["repos"][0]["draft_problem"]["message"]
    assert ("symbolic link" in message) if kind == "symlink" else ("not UTF-8" in message)


def test_status_while_running_shows_pending_handoffs_when_the_remote_is_gone(
    tmp_path: Path, remote: Path
) -> None:
    desktop = make_device(tmp_path, remote, "desktop", network_timeout=2.0)
    remote.rename(tmp_path / "away.git")
    daemon = desktop.start()
    try:
        desktop.write_draft(handoff_text("Queued"))
        wait_until(lambda: not desktop.draft.exists(), 10, "the draft to be taken in")
        wait_until(
            lambda: desktop.status()["repos"][0]["pending"] == 1, 10, "status to show 1 waiting"
        )
        (tmp_path / "away.git").rename(remote)
        wait_until(lambda: bool(on_remote(remote)), 30, "the push after the remote came back")
        wait_until(lambda: desktop.status()["repos"][0]["pending"] == 0, 10, "nothing waiting")
    finally:
        assert daemon.stop() == 0
    report = json.loads(run_cli("--config", str(desktop.config), "status", "--json").stdout)
    assert report["repos"][0]["last_push"] is not None


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""


def inotify_watches(pid: int) -> int:
    count = 0
    for fdinfo in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            count += fdinfo.read_text(encoding="utf-8").count("inotify wd:")
        except OSError:
            continue
    return count


def test_one_watch_per_repo_never_a_whole_work_tree(tmp_path: Path, remote: Path) -> None:
    desktop = make_device(tmp_path, remote, "desktop")
    others = [make_device(tmp_path, remote, f"clone{n}", register=False) for n in range(2)]
    for other in others:
        for folder in ("src/a", "src/b", "docs"):
            (other.repo / folder).mkdir(parents=True)
    desktop.write_config(repos=[desktop.repo, *(other.repo for other in others)])
    daemon = desktop.start()
    try:
        wait_until(
            lambda: inotify_watches(daemon.process.pid) == 4, 10, "3 repo watches + 1 config"
        )
    finally:
        assert daemon.stop() == 0


def test_a_hanging_remote_does_not_hold_up_another_repo(tmp_path: Path, remote: Path) -> None:
    desktop = make_device(tmp_path, remote, "desktop", network_timeout=5.0, pull_interval=0.5)
    stuck = make_device(tmp_path, make_remote(tmp_path, "stuck.git"), "stuck", register=False)
    desktop.write_config(repos=[stuck.repo, desktop.repo])
    with silent_listener() as port:
        git(stuck.repo, "remote", "set-url", "origin", f"http://127.0.0.1:{port}/x.git")
        daemon = desktop.start()
        try:
            stuck.write_draft(handoff_text("Stuck behind a silent remote"))
            time.sleep(1.0)
            desktop.write_draft(handoff_text("Not held up"))
            took = wait_until(lambda: bool(on_remote(remote)), 10, "the healthy repo's push")
            assert took < 5
            assert not stuck.draft.exists(), "the stuck repo's draft is still taken in"
        finally:
            assert daemon.stop(timeout=30) == 0


def test_a_poll_round_goes_on_past_a_repo_that_has_gone(tmp_path: Path, remote: Path) -> None:
    desktop = make_device(tmp_path, remote, "desktop", pull_interval=0.5)
    gone = make_device(tmp_path, make_remote(tmp_path, "gone.git"), "gone", register=False)
    other_remote = make_remote(tmp_path, "other.git")
    other = make_device(tmp_path, other_remote, "other", register=False)
    desktop.write_config(repos=[gone.repo, desktop.repo, other.repo])
    daemon = desktop.start()
    try:
        wait_until(
            lambda: all(repo["last_poll"] for repo in desktop.status()["repos"]),
            10,
            "every repo polled once",
        )
        # Gone while the daemon runs, first in every round: the rounds must go on.
        gone.repo.rename(tmp_path / "gone-away")
        laptop = make_device(tmp_path, other_remote, "laptop")
        laptop.write_draft(handoff_text("Arrives past the gone repo"))
        assert laptop.cli("sync").returncode == 0
        wait_until(
            lambda: "Arrives past the gone repo" in _read(other.materialized),
            10,
            "the handoff in the third repo",
        )
        [gone_status] = [r for r in desktop.status()["repos"] if r["path"] == str(gone.repo)]
        assert "is missing" in (gone_status["last_error"] or {}).get("message", "")
    finally:
        assert daemon.stop() == 0
    assert "unexpected error" not in daemon.log()


def test_idle_polls_record_their_time_without_rewriting_state_files(
    tmp_path: Path, remote: Path
) -> None:
    desktop = make_device(tmp_path, remote, "desktop", pull_interval=0.5)
    daemon = desktop.start()
    try:
        wait_until(lambda: bool(desktop.status()["repos"][0]["last_poll"]), 10, "a first poll")
        [state_file] = (desktop.state / "repos").glob("*.json")
        polls_file = desktop.state / "polls.json"
        written = state_file.stat().st_mtime_ns
        first = desktop.status()["repos"][0]["last_poll"]["time"]
        wait_until(
            lambda: desktop.status()["repos"][0]["last_poll"]["time"] > first,
            10,
            "a later poll time in status",
        )
        assert state_file.stat().st_mtime_ns == written, "an idle poll rewrote the state file"
        assert polls_file.exists()
        # Something real still goes to the repo's own state file at once.
        desktop.write_draft(handoff_text("Still saved"))
        wait_until(lambda: state_file.stat().st_mtime_ns != written, 10, "the state saved")
    finally:
        assert daemon.stop() == 0


# -- through the control socket ----------------------------------------------------------


def test_sync_and_status_go_through_the_running_daemon(tmp_path: Path, remote: Path) -> None:
    # settle = 30: the daemon would not take the draft in by itself during the test.
    desktop = make_device(tmp_path, remote, "desktop", settle=30.0, pull_interval=60.0)
    daemon = desktop.start()
    try:
        daemon.wait_for_log(r"control socket ")
        desktop.write_draft(handoff_text("Synced by the daemon"))
        result = desktop.cli("sync")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "published" in result.stdout and "pushed" in result.stdout
        daemon.wait_for_log(r"pushed the sync branch")
        assert on_remote(remote)

        # status reads the daemon's memory: a state file gone bad on disk does not show.
        [state_file] = (desktop.state / "repos").glob("*.json")
        state_file.write_text("{ not json", encoding="utf-8")
        report = desktop.status()
        assert report["daemon_answered"] is True and report["daemon_running"] is True
        [repo] = report["repos"]
        assert repo["last_push"] is not None and repo["last_error"] is None
    finally:
        assert daemon.stop() == 0
    # Without a daemon, the files speak (and the bad one says so).
    report = desktop.status()
    assert report["daemon_answered"] is False and report["daemon_running"] is False
    assert "unreadable" in report["repos"][0]["last_error"]["message"]
    assert not (desktop.state / "control.json").exists()


def test_the_hook_has_the_running_daemon_check_the_remote_first(
    tmp_path: Path, remote: Path
) -> None:
    desktop = make_device(tmp_path, remote, "desktop")
    laptop = make_device(tmp_path, remote, "laptop", pull_interval=60.0)
    daemon = laptop.start()
    try:
        daemon.wait_for_log(r"control socket ")
        wait_until(lambda: bool(laptop.status()["repos"][0]["last_poll"]), 10, "a first poll")
        desktop.write_draft(handoff_text("Just pushed", fact="pizza: Margherita"))
        assert desktop.cli("sync").returncode == 0
        # The daemon's next poll is a minute away: only a check now brings the handoff.
        output = run_cli(
            "--config",
            str(laptop.config),
            "resume",
            "--hook",
            cwd=laptop.repo,
        )
        assert output.returncode == 0, output.stderr
        data = json.loads(output.stdout)
        assert "pizza: Margherita" in data["hookSpecificOutput"]["additionalContext"]
        assert "could not be checked" not in data["systemMessage"]
        daemon.wait_for_log(r"pulled convosync from origin")
        # resume (for a person) checks the same way, and says nothing when it could.
        desktop.write_draft(handoff_text("Pushed again", fact="pizza: Marinara"))
        assert desktop.cli("sync").returncode == 0
        shown = laptop.cli("resume", cwd=laptop.repo)
        assert shown.returncode == 0 and "pizza: Marinara" in shown.stdout
        assert shown.stderr == ""
    finally:
        assert daemon.stop() == 0


def test_a_check_the_daemon_cannot_finish_in_time_is_said_not_waited_for(
    tmp_path: Path, remote: Path
) -> None:
    laptop = make_device(
        tmp_path, remote, "laptop", pull_interval=60.0, fresh_timeout=1.0, network_timeout=5.0
    )
    with silent_listener() as port:
        git(laptop.repo, "remote", "set-url", "origin", f"http://127.0.0.1:{port}/app.git")
        daemon = laptop.start()
        try:
            daemon.wait_for_log(r"control socket ")
            start = time.monotonic()
            output = laptop.cli("resume", "--hook", cwd=laptop.repo)
            took = time.monotonic() - start
            assert output.returncode == 0, output.stderr
            data = json.loads(output.stdout)
            assert data["systemMessage"].startswith(
                "convosync: the remote could not be checked within 1 s"
            )
            assert took < 4, "fresh_timeout, not network_timeout"
        finally:
            assert daemon.stop(timeout=40) == 0


# -- liveness ------------------------------------------------------------------------------


def test_sighup_reloads_the_config(tmp_path: Path, remote: Path) -> None:
    desktop = make_device(tmp_path, remote, "desktop", pull_interval=60.0)
    daemon = desktop.start()
    try:
        before = desktop.config.stat()
        # An edit the stamp cannot see (same size, same modification time): only a
        # SIGHUP makes the daemon read the file again.
        text = desktop.config.read_text(encoding="utf-8")
        desktop.config.write_text(text.replace("settle = 0.2", "settle = 0.3"), encoding="utf-8")
        os.utime(desktop.config, ns=(before.st_atime_ns, before.st_mtime_ns))
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_for_log(r"received SIGHUP: reloading the config")
        daemon.wait_for_log(r"config changed")
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_for_log(r"config unchanged")
        assert daemon.process.poll() is None, "SIGHUP does not end the daemon"
    finally:
        assert daemon.stop() == 0


FLAKY_DAEMON = """\
import sys
from pathlib import Path

import convosyncd.daemon as daemon

flag = Path(sys.argv[1])
Original = daemon.RepoSync


class Flaky(Original):
    def __init__(self, config, repo, *args, **kwargs):
        if flag.exists() and repo.path.name == "app-flaky":
            raise OSError(f"cannot set {repo.path} up (injected)")
        super().__init__(config, repo, *args, **kwargs)


daemon.RepoSync = Flaky
from convosyncd.cli import main

sys.exit(main(sys.argv[2:]))
"""


def test_a_config_that_fails_to_apply_is_retried_until_it_does(
    tmp_path: Path, remote: Path
) -> None:
    desktop = make_device(tmp_path, remote, "desktop", pull_interval=60.0)
    flaky_remote = make_remote(tmp_path, "flaky.git")
    flaky = tmp_path / "app-flaky"
    git(tmp_path, "clone", "--quiet", str(flaky_remote), str(flaky))
    flag = tmp_path / "fail"
    flag.touch()
    script = tmp_path / "flaky_daemon.py"
    script.write_text(FLAKY_DAEMON, encoding="utf-8")
    log_path = tmp_path / "flaky.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, str(script), str(flag), "--config", str(desktop.config), "run"],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=cli_env(),
        )
    daemon = DaemonProcess(desktop, process, log_path)
    try:
        daemon.wait_for_log("running as device")
        desktop.write_config(repos=[desktop.repo, flaky])
        daemon.wait_for_log(r"1 repo\(s\) could not be set up, .*cannot set .*app-flaky up")
        # The other repo of the same config is set up and syncing all the same.
        desktop.write_draft(handoff_text("Not held up by the other repo"))
        wait_until(lambda: bool(on_remote(remote)), 10, "the healthy repo's push")
        flag.unlink()  # the trouble goes away; the config file does not change
        daemon.wait_for_log(rf"watching {flaky} ", timeout=20)
        daemon.wait_for_log(r"config applied in full")
    finally:
        assert daemon.stop() == 0


def test_status_is_right_as_soon_as_a_retried_push_went_through(
    tmp_path: Path, remote: Path
) -> None:
    # pull_interval = 60: no poll comes to save the state in the meantime.
    desktop = make_device(tmp_path, remote, "desktop", pull_interval=60.0)
    daemon = desktop.start()
    try:
        wait_until(lambda: bool(desktop.status()["repos"][0]["last_poll"]), 10, "a first poll")
        remote.rename(tmp_path / "away.git")
        desktop.write_draft(handoff_text("Pushed on a retry"))
        daemon.wait_for_log(r"next push in")
        (tmp_path / "away.git").rename(remote)
        daemon.wait_for_log(r"pushed the sync branch", timeout=30)
        [state_file] = (desktop.state / "repos").glob("*.json")

        def saved() -> bool:
            state, _ = states.load(state_file, repair=False)
            return state.pending == 0 and state.last_push is not None

        wait_until(saved, 5, "the state file to show the push")
        [repo] = desktop.status()["repos"]
        assert repo["pending"] == 0 and repo["last_push"] is not None
    finally:
        assert daemon.stop() == 0


def test_a_failing_repo_is_retried_further_and_further_apart() -> None:
    """Doubling from pull_interval, not stuck at a minute (as it was at the defaults)."""
    delays = [poll_retry_delay(failures, 60.0, jitter=1.0) for failures in range(1, 8)]
    assert delays == [60.0, 120.0, 240.0, 480.0, 900.0, 900.0, 900.0]
    assert [poll_retry_delay(n, 1.0, jitter=1.0) for n in range(1, 5)] == [1.0, 2.0, 4.0, 8.0]
    # Jitter only ever shortens a wait, and never below pull_interval.
    for failures in range(1, 8):
        delay = poll_retry_delay(failures, 60.0)
        assert 60.0 <= delay <= delays[failures - 1]
    assert poll_retry_delay(3, 3600.0, jitter=1.0) == 3600.0, "never more often than polls"


def test_after_a_kill_9_the_commands_work_alone_and_a_new_daemon_takes_the_socket_over(
    tmp_path: Path, remote: Path
) -> None:
    desktop = make_device(tmp_path, remote, "desktop")
    laptop = make_device(tmp_path, remote, "laptop", pull_interval=60.0)
    daemon = laptop.start()
    daemon.wait_for_log(r"control socket ")
    daemon.process.kill()
    daemon.process.wait()
    assert (laptop.state / "control.json").exists(), "left behind, as by any crash"
    report = laptop.status()
    assert report["daemon_answered"] is False and report["daemon_running"] is False
    desktop.write_draft(handoff_text("While the laptop's daemon was dead", fact="kiwi"))
    assert desktop.cli("sync").returncode == 0
    hook = laptop.cli("resume", "--hook", cwd=laptop.repo)
    assert hook.returncode == 0 and "kiwi" in hook.stdout, hook.stderr
    assert laptop.cli("sync").returncode == 0
    again = laptop.start()
    try:
        again.wait_for_log(r"control socket ")
        assert laptop.status()["daemon_answered"] is True
    finally:
        assert again.stop() == 0
