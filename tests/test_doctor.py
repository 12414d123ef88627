"""``convosyncd doctor`` on broken and healthy setups: real git, real D-Bus, loopback only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from convosyncd import config as configs
from convosyncd import doctor, keys
from tests.support.dbus_session import RecordingNotificationServer, env_for_bus
from tests.support.devices import (
    OTHER_PERSON_KEY,
    PERSON_KEY,
    Device,
    cli_env,
    git,
    handoff_text,
    make_device,
    make_remote,
)
from tests.support.network import silent_listener
from tests.support.sshd import running_agent


@pytest.fixture
def silent_port() -> Iterator[int]:
    with silent_listener() as port:
        yield port


def broken_device(tmp_path: Path, port: int) -> tuple[Device, dict[str, Path]]:
    """A device with every kind of repo trouble doctor knows, each registered."""
    remote = make_remote(tmp_path)
    device = make_device(
        tmp_path, remote, "desktop", notify=True, network_timeout=1.0, notify_timeout=1.0
    )
    repos = {"missing": tmp_path / "desktop" / "gone", "plain": tmp_path / "desktop" / "plain"}
    repos["plain"].mkdir()
    for name, url in (
        ("silent", f"http://127.0.0.1:{port}/app.git"),
        ("ssh", f"ssh://git@127.0.0.1:{port}/app.git"),
    ):
        repos[name] = tmp_path / "desktop" / name
        git(tmp_path, "clone", "--quiet", str(remote), str(repos[name]))
        git(repos[name], "remote", "set-url", "origin", url)
    repos["no-remote"] = tmp_path / "desktop" / "no-remote"
    git(tmp_path, "init", "--quiet", str(repos["no-remote"]))
    device.write_config(repos=list(repos.values()))
    return device, repos


def test_doctor_names_each_problem_of_a_broken_setup(
    tmp_path: Path, silent_port: int, session_bus: str
) -> None:
    device, repos = broken_device(tmp_path, silent_port)
    start = time.monotonic()
    result = device.cli("doctor", env=env_for_bus(session_bus))
    elapsed = time.monotonic() - start
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()

    def line(prefix: str) -> str:
        found = [text for text in lines if text.startswith(prefix)]
        assert found, f"no line starting {prefix!r} in:\n{result.stdout}"
        return found[0]

    assert line("✓ git: git version ")
    assert line("✓ config: ")
    assert "the folder does not exist → put it back, or `convosyncd remove" in line(
        f"✗ repo {repos['missing']}:"
    )
    assert "not a git work tree →" in line(f"✗ repo {repos['plain']}:")
    assert "no git remote named origin (remotes: none) → `git -C" in line(
        f"✗ repo {repos['no-remote']}:"
    )
    silent = line(f"✗ remote origin of {repos['silent']}:")
    assert f"http://127.0.0.1:{silent_port}/app.git did not answer within 1 s → " in silent
    assert line(f"✗ remote origin of {repos['ssh']}:")
    assert "SSH_AUTH_SOCK is not set, and origin of " in line("✗ ssh agent:")
    notifications = line("✗ notifications:")
    assert "no notification server is running on the session bus →" in notifications
    assert line("✓ inotify: convosyncd needs 6 watch(es)")
    assert "not installed" in line("✗ service:")
    assert lines[-1] == "8 problem(s) found."
    assert all(" → " in text for text in lines if text.startswith("✗"))
    # The two silent remotes are asked at once: one time limit, not two.
    assert elapsed < 8, elapsed

    report = json.loads(device.cli("doctor", "--json", env=env_for_bus(session_bus)).stdout)
    assert report["ok"] is False
    failed = [check["name"] for check in report["checks"] if not check["ok"]]
    assert failed == [
        f"repo {repos['missing']}",
        f"repo {repos['plain']}",
        f"repo {repos['no-remote']}",
        f"remote origin of {repos['silent']}",
        f"remote origin of {repos['ssh']}",
        "ssh agent",
        "notifications",
        "service",
    ]
    assert all(check["fix"] for check in report["checks"] if not check["ok"])


def test_a_hung_notification_server_is_reported(
    tmp_path: Path,
    session_bus: str,
    hung_notification_server: RecordingNotificationServer,
) -> None:
    device = make_device(tmp_path, make_remote(tmp_path), "desktop", notify=True)
    device.write_config(notify_timeout=1.0)
    result = device.cli("doctor", env=env_for_bus(session_bus))
    assert result.returncode == 1
    [line] = [text for text in result.stdout.splitlines() if "notifications:" in text]
    assert line.startswith("✗ notifications: route ")
    assert "owns its name but did not answer within 1 s → restart" in line


@pytest.fixture
def ssh_agent() -> Iterator[str]:
    with running_agent() as socket_path:
        yield socket_path


def test_an_ssh_agent_that_answers_and_one_that_does_not(
    tmp_path: Path, silent_port: int, ssh_agent: str
) -> None:
    device = make_device(tmp_path, make_remote(tmp_path), "desktop", network_timeout=1.0)
    git(device.repo, "remote", "set-url", "origin", f"ssh://git@127.0.0.1:{silent_port}/app.git")
    answering = device.cli("doctor", env={"SSH_AUTH_SOCK": ssh_agent})
    [line] = [text for text in answering.stdout.splitlines() if "ssh agent:" in text]
    assert line == (
        f"✓ ssh agent: {ssh_agent} answers but holds no key (`ssh-add` loads yours), "
        f"for origin of {device.repo}"
    )
    gone = str(tmp_path / "no-agent.sock")
    silent = device.cli("doctor", env={"SSH_AUTH_SOCK": gone})
    [line] = [text for text in silent.stdout.splitlines() if "ssh agent:" in text]
    assert line.startswith(f"✗ ssh agent: nothing answers at SSH_AUTH_SOCK={gone}, and origin")


def test_doctor_passes_on_a_healthy_setup(
    tmp_path: Path, session_bus: str, notification_server: RecordingNotificationServer
) -> None:
    device = make_device(tmp_path, make_remote(tmp_path), "desktop", notify=True)
    env = env_for_bus(session_bus)
    assert device.cli("service", "install", env=env).returncode == 0
    daemon = device.start(env)
    try:
        result = device.cli("doctor", env=env)
    finally:
        assert daemon.stop() == 0
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "All checks passed."
    names = [text.split(":")[0] for text in lines[:-2]]
    assert names == [
        "✓ git",
        "✓ config",
        "✓ sync key",
        f"✓ repo {device.repo}",
        f"✓ remote origin of {device.repo}",
        f"✓ sync branch of {device.repo}",
        "✓ ssh agent",
        "✓ notifications",
        "✓ inotify",
        "✓ service",
    ]
    assert f"private, key id {PERSON_KEY.key_id}" in lines[2]
    assert "sync branch convosync present" in lines[4] or "not created yet" in lines[4]
    assert "handoff(s) open under your sync key" in lines[5] or "no local" in lines[5]
    assert "answered in" in lines[7]
    assert "but a `convosyncd run` is running" in lines[9]
    assert not notification_server.notifications(), "doctor asks; it never notifies"


def test_the_inotify_limits_are_compared_with_what_the_repos_need(tmp_path: Path) -> None:
    limits = tmp_path / "inotify"
    limits.mkdir()
    (limits / "max_user_instances").write_text("128\n")
    (limits / "max_user_watches").write_text("3\n")
    check = doctor.check_inotify(40, proc=limits)
    assert not check.ok
    assert "convosyncd needs 41 watch(es)" in check.detail
    assert "fs.inotify.max_user_watches=" in check.fix
    (limits / "max_user_watches").write_text("1000000\n")
    (limits / "max_user_instances").write_text("0\n")
    check = doctor.check_inotify(40, proc=limits)
    assert not check.ok and "fs.inotify.max_user_instances=" in check.fix
    (limits / "max_user_instances").write_text("100000\n")
    assert doctor.check_inotify(40, proc=limits).ok


@pytest.mark.parametrize(
    ("url", "ssh"),
    [
        ("git@github.com:me/app.git", True),
        ("ssh://git@host:2222/app.git", True),
        ("git+ssh://host/app.git", True),
        ("https://person:token@host/app.git", False),
        ("file:///srv/app.git", False),
        ("/srv/app.git", False),
        ("./relative/app.git", False),
        ("../odd:name/app.git", False),
    ],
)
def test_uses_ssh(url: str, ssh: bool) -> None:
    assert doctor.uses_ssh(url) is ssh


def test_a_broken_config_is_one_line_and_stops_there(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("settle = 'soon'\npull_interval = -1\n", encoding="utf-8")
    checks = doctor.run_checks(config)
    assert [check.name for check in checks] == ["git", "config"]
    assert not checks[1].ok
    assert "'settle' is 'soon'" in checks[1].detail and "'pull_interval'" in checks[1].detail
    assert "\n" not in checks[1].line()


def test_the_user_bus_is_found_without_dbus_session_bus_address(
    tmp_path: Path,
    hermetic: Path,
    session_bus: str,
    notification_server: RecordingNotificationServer,
) -> None:
    """A user service may start without the variable; the bus is at $XDG_RUNTIME_DIR/bus."""
    socket_path = session_bus.removeprefix("unix:path=").split(",")[0]
    (tmp_path / "runtime" / "bus").symlink_to(socket_path)
    remote = make_remote(tmp_path)
    desktop = make_device(tmp_path, remote, "desktop")
    laptop = make_device(tmp_path, remote, "laptop", notify=True, pull_interval=0.5)
    assert "DBUS_SESSION_BUS_ADDRESS" not in os.environ
    report = laptop.cli("doctor", "--json")
    [check] = [c for c in json.loads(report.stdout)["checks"] if c["name"] == "notifications"]
    assert check["ok"], check
    daemon = laptop.start()
    try:
        desktop.write_draft(handoff_text("Through the user bus"))
        assert desktop.cli("sync").returncode == 0
        [note] = notification_server.wait_for(lambda notes: len(notes) >= 1, 15)
        assert note["body"] == "app: Through the user bus"
    finally:
        assert daemon.stop() == 0


def test_the_sync_key_is_checked_present_and_private(tmp_path: Path) -> None:
    device = make_device(tmp_path, make_remote(tmp_path), "desktop", key=None)
    path = device.key_file
    check, keyring = doctor.check_key(device.config)
    assert not check.ok and keyring is None
    assert check.detail == f"none at {path}, so this device can neither seal nor open handoffs"
    assert "`convosyncd key import` here" in check.fix and "`convosyncd add PATH`" in check.fix

    device.give_key(PERSON_KEY)
    path.chmod(0o640)
    check, keyring = doctor.check_key(device.config)
    assert not check.ok and keyring is None
    assert "can be read or changed by others (permissions 640)" in check.detail
    assert check.fix == f"`chmod 600 {path}`"

    path.chmod(0o600)
    path.write_text(path.read_text(encoding="utf-8") + "current nonsense\n", encoding="utf-8")
    check, _keyring = doctor.check_key(device.config)
    assert not check.ok and "is damaged (line" in check.detail
    assert "`convosyncd key import` here" in check.fix

    path.unlink()
    path.symlink_to(tmp_path / "elsewhere")
    check, _keyring = doctor.check_key(device.config)
    assert not check.ok and check.detail == f"{path} is not a plain file"

    path.unlink()
    keys.save(path, keys.Keyring(OTHER_PERSON_KEY, (PERSON_KEY,)))
    check, keyring = doctor.check_key(device.config)
    assert check.ok and keyring is not None
    assert check.detail == (
        f"{path}, private, key id {OTHER_PERSON_KEY.key_id} (and 1 older key(s) kept for reading)"
    )
    for result in (device.cli("doctor"), device.cli("doctor", "--json")):
        assert PERSON_KEY.pairing_code() not in result.stdout + result.stderr


def test_handoffs_under_a_key_this_device_lacks_are_found_with_the_fix(
    tmp_path: Path, remote: Path
) -> None:
    desktop = make_device(tmp_path, remote, "desktop")
    laptop = make_device(tmp_path, remote, "laptop", key=OTHER_PERSON_KEY)
    desktop.write_draft(handoff_text("From the desktop"))
    laptop.write_draft(handoff_text("From a laptop never paired"))
    for device in (desktop, laptop, desktop):
        assert device.cli("sync").returncode == 0

    report = json.loads(desktop.cli("doctor", "--json").stdout)
    names = [check["name"] for check in report["checks"]]
    branch_check = names.index(f"sync branch of {desktop.repo}")
    assert names.index(f"remote origin of {desktop.repo}") < branch_check
    assert names.index("sync key") < names.index(f"repo {desktop.repo}")
    check = report["checks"][branch_check]
    assert check["ok"] is False
    assert check["detail"] == (
        "1 handoff(s) open under your sync key, but the newest of laptop and 1 file(s) in "
        f"all are sealed with a key this device lacks (key id {OTHER_PERSON_KEY.key_id}), "
        "so they are not shown here"
    )
    assert "`convosyncd key show`, then `convosyncd key import` here" in check["fix"]
    assert "another person's" in check["fix"]

    # Paired the other way round as well: the laptop takes the desktop's key and keeps its
    # own for reading. Its handoffs from before stay closed to the desktop, and that is
    # no longer a problem: the laptop's newest opens.
    show = desktop.cli("key", "show")
    imported = subprocess.run(
        [sys.executable, "-m", "convosyncd", "--config", str(laptop.config), "key", "import"],
        input=show.stdout,
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
        check=False,
    )
    assert imported.returncode == 0, imported.stderr
    laptop.write_draft(handoff_text("From the laptop, paired"))
    for device in (laptop, desktop):
        assert device.cli("sync").returncode == 0
    config = configs.load(desktop.config)
    keyring = keys.require(desktop.key_file)
    check = doctor.check_branch_keys(config, config.repos[0], keyring)
    assert check.ok, check.line()
    assert check.detail == (
        "2 handoff(s) open under your sync key; 1 older file(s) of laptop are sealed with a "
        "key this device lacks (from before they were paired, or another person's)"
    )
