"""``convosyncd service``: the systemd unit (verified by systemd itself) and the launchd agent.

``systemd --user`` does not run here, so the install is tested as it happens on such a
machine: with ``systemctl`` absent from PATH, and with a ``systemctl --user`` that cannot
reach a user manager. launchd cannot run here: the agent is checked with plistlib and
launchd's own rules.
"""

from __future__ import annotations

import json
import os
import plistlib
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from convosyncd import service
from convosyncd.errors import UsageError
from convosyncd.logs import STDERR_SWITCH
from tests.support.dbus_session import need_tool
from tests.support.devices import Device, make_device, make_remote

SYSTEMD_PACKAGE = "Debian's systemd package"
INSTALLED_SCRIPT = Path(sys.executable).parent / "convosyncd"


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze --user verify``; systemd exits 0 on many errors, so read stderr too."""
    need_tool("systemd-analyze", SYSTEMD_PACKAGE)
    return subprocess.run(
        ["systemd-analyze", "--user", "--man=no", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def assert_verifies(unit: Path) -> None:
    result = verify(unit)
    assert result.returncode == 0 and result.stderr == "", result.stderr


def unit_file(home: Path) -> Path:
    return home / ".config" / "systemd" / "user" / "convosyncd.service"


def exec_start(unit: Path) -> list[str]:
    """The ExecStart words as systemd reads them (quotes, ``%%`` and ``$$`` undone)."""
    for line in unit.read_text(encoding="utf-8").splitlines():
        if line.startswith("ExecStart="):
            value = line.removeprefix("ExecStart=")
            return shlex.split(value.replace("%%", "%").replace("$$", "$"))
    raise AssertionError(f"no ExecStart in {unit}")


def path_without_systemctl(tmp_path: Path) -> dict[str, str]:
    """A PATH holding git and nothing else."""
    folder = tmp_path / "bin-without-systemctl"
    folder.mkdir()
    git = shutil.which("git")
    assert git is not None
    (folder / "git").symlink_to(git)
    return {"PATH": str(folder)}


@pytest.fixture
def desktop(tmp_path: Path) -> Device:
    return make_device(tmp_path, make_remote(tmp_path), "desktop")


def test_dry_run_shows_the_unit_and_the_commands_and_changes_nothing(
    desktop: Device, hermetic: Path
) -> None:
    result = desktop.cli("service", "install", "--dry-run")
    assert result.returncode == 0, result.stderr
    unit = unit_file(hermetic)
    assert f"Would write {unit}:" in result.stdout
    assert "Type=notify" in result.stdout
    assert f"--config {desktop.config} run" in result.stdout
    assert "  systemctl --user daemon-reload\n" in result.stdout
    assert "  systemctl --user enable --now convosyncd.service\n" in result.stdout
    assert not unit.parent.exists()


def test_install_without_systemctl_writes_a_unit_systemd_accepts(
    tmp_path: Path, desktop: Device, hermetic: Path
) -> None:
    printed = desktop.cli("service", "install", "--print")
    assert printed.returncode == 0, printed.stderr
    result = desktop.cli("service", "install", env=path_without_systemctl(tmp_path))
    assert result.returncode == 0, result.stderr
    unit = unit_file(hermetic)
    assert f"Wrote {unit}" in result.stdout
    assert "Not started: systemctl is not on PATH." in result.stdout
    assert "  systemctl --user enable --now convosyncd.service" in result.stdout
    assert unit.read_text(encoding="utf-8") == printed.stdout, "--print is the installed file"
    assert_verifies(unit)

    words = exec_start(unit)
    assert os.path.isabs(words[0]) and os.access(words[0], os.X_OK)
    assert words[-3:] == ["--config", str(desktop.config), "run"]
    assert "\nUMask=0077\n" in unit.read_text(encoding="utf-8")
    # The command line the service runs works, and reads this device's config.
    status = subprocess.run(
        [*words[:-1], "status", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["config"] == str(desktop.config)


def test_install_where_systemctl_cannot_reach_a_user_manager(
    desktop: Device, hermetic: Path
) -> None:
    need_tool("systemctl", SYSTEMD_PACKAGE)
    result = desktop.cli("service", "install")
    assert result.returncode == 0, result.stderr
    assert "Not started: `systemctl --user` cannot reach a user service manager (" in (
        result.stdout
    )
    assert_verifies(unit_file(hermetic))


def test_exec_start_names_the_convosyncd_that_was_run(tmp_path: Path, desktop: Device) -> None:
    """Through a link in a folder with a space, into a config path systemd must escape."""
    if not INSTALLED_SCRIPT.exists():
        pytest.skip(f"no convosyncd script beside {sys.executable} (pip install -e . first)")
    folder = tmp_path / "my tools"
    folder.mkdir()
    link = folder / "convosyncd"
    link.symlink_to(INSTALLED_SCRIPT)
    config = tmp_path / "odd 100% $HOME 'quoted'" / "config.toml"
    config.parent.mkdir()
    config.write_text(desktop.config.read_text(encoding="utf-8"), encoding="utf-8")
    result = subprocess.run(
        [str(link), "--config", str(config), "service", "install"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **path_without_systemctl(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    unit = unit_file(Path(os.environ["HOME"]))
    assert_verifies(unit)
    assert exec_start(unit) == [str(link), "--config", str(config), "run"]
    assert service.exec_start_program(unit.read_text(encoding="utf-8")) == str(link)


def test_verify_catches_what_systemd_only_warns_about(tmp_path: Path, hermetic: Path) -> None:
    unit = unit_file(hermetic)
    unit.parent.mkdir(parents=True)
    good = service.render_unit(service.unit_template(), service.daemon_command(tmp_path / "c"))
    unit.write_text(good, encoding="utf-8")
    assert_verifies(unit)
    for broken in (
        good.replace("Type=notify", "Type=notifyy"),
        good.replace("WatchdogSec=30", "WatchdogSec=abc"),
        good.replace("Restart=on-failure", "Restart=on-failure\nRestartSteps=5"),
    ):
        unit.write_text(broken, encoding="utf-8")
        result = verify(unit)
        assert result.stderr, "systemd-analyze said nothing about a broken unit"


def test_status_then_uninstall(tmp_path: Path, desktop: Device, hermetic: Path) -> None:
    env = path_without_systemctl(tmp_path)
    before = desktop.cli("service", "status", env=env)
    assert "installed   no" in before.stdout
    assert desktop.cli("service", "install", env=env).returncode == 0
    unit = unit_file(hermetic)
    # What `systemctl --user enable` leaves behind, which uninstall must clean up too.
    wants = unit.parent / "default.target.wants"
    wants.mkdir()
    (wants / "convosyncd.service").symlink_to(unit)

    daemon = desktop.start(env)
    try:
        status = desktop.cli("service", "status", env=env)
        assert status.returncode == 0, status.stderr
        assert f"installed   yes, systemd user unit {unit}" in status.stdout
        assert "running     cannot ask the service manager: systemctl is not on PATH" in (
            status.stdout
        )
        assert "daemon.lock: yes" in status.stdout
        assert f"otherwise {desktop.state / 'convosyncd.log'}" in status.stdout
        again = desktop.cli("service", "install", env=env)
        assert "A `convosyncd run` is running now with the same state folder" in again.stdout
    finally:
        assert daemon.stop() == 0

    dry = desktop.cli("service", "uninstall", "--dry-run", env=env)
    assert f"Would remove {unit}" in dry.stdout and unit.exists()
    removed = desktop.cli("service", "uninstall", env=env)
    assert removed.returncode == 0, removed.stderr
    assert f"Removed {unit}" in removed.stdout
    assert "  systemctl --user stop convosyncd.service" in removed.stdout
    assert not unit.exists() and not (wants / "convosyncd.service").is_symlink()
    assert "Not installed" in desktop.cli("service", "uninstall", env=env).stdout


def test_a_broken_config_is_refused_before_anything_is_written(
    desktop: Device, hermetic: Path
) -> None:
    desktop.config.write_text("settle = 'soon'\n", encoding="utf-8")
    result = desktop.cli("service", "install")
    assert result.returncode == 2
    assert "'settle' is 'soon'" in result.stderr
    assert not unit_file(hermetic).exists()


def test_the_shipped_template_is_the_installed_one() -> None:
    top = Path(__file__).resolve().parents[1] / "systemd" / "convosyncd.service"
    template = top.read_text(encoding="utf-8")
    assert service.unit_template() == template
    assert template.count(service.EXEC_START) == 1
    rendered = service.render_unit(template, ["/usr/bin/convosyncd", "run"])
    assert "ExecStart=/usr/bin/convosyncd run\n" in rendered


@pytest.mark.parametrize(
    ("word", "quoted"),
    [
        ("/usr/bin/convosyncd", "/usr/bin/convosyncd"),
        ("/home/me/My Configs/c.toml", '"/home/me/My Configs/c.toml"'),
        ("/tmp/100%", '"/tmp/100%%"'),
        ("/tmp/$HOME", '"/tmp/$$HOME"'),
        ('/tmp/say "hi"\\', '"/tmp/say \\"hi\\"\\\\"'),
        ("", '""'),
    ],
)
def test_systemd_quote(word: str, quoted: str) -> None:
    assert service.systemd_quote(word) == quoted


def test_a_control_character_cannot_go_into_a_unit() -> None:
    with pytest.raises(UsageError, match="control character"):
        service.systemd_quote("/tmp/a\nb")


# -- launchd --------------------------------------------------------------------------


def test_the_launchd_agent_follows_launchds_rules(tmp_path: Path) -> None:
    home = tmp_path / "mac-home"
    plan = service.plan_install(tmp_path / "config.toml", "launchd", home=home)
    assert plan.path == home / "Library" / "LaunchAgents" / "local.convosyncd.plist"
    agent = plistlib.loads(plan.content)
    assert plistlib.dumps(agent, sort_keys=True) == plan.content, "a stable round trip"
    assert service.launchd_problems(agent) == []
    assert agent["Label"] == "local.convosyncd"
    assert agent["ProgramArguments"] == list(service.daemon_command(tmp_path / "config.toml"))
    assert os.path.isabs(agent["ProgramArguments"][0])
    assert agent["RunAtLoad"] is True
    assert agent["KeepAlive"] == {"SuccessfulExit": False}
    path = agent["EnvironmentVariables"]["PATH"].split(":")
    for folder in ("/opt/homebrew/bin", "/usr/local/bin", "/usr/bin", "/bin"):
        assert folder in path
    assert path[0] == os.path.dirname(agent["ProgramArguments"][0])
    assert agent["EnvironmentVariables"][STDERR_SWITCH] == "no"
    assert agent["Umask"] == 63 == 0o077, "the unit's UMask=0077, in decimal as plists need"
    logs = home / "Library" / "Logs" / "convosync"
    assert (
        agent["StandardOutPath"] == agent["StandardErrorPath"] == str(logs / "launchd-output.log")
    )
    domain = f"gui/{os.getuid()}"
    assert [str(step) for step in plan.start] == [
        f"launchctl bootout {domain}/local.convosyncd",
        f"launchctl enable {domain}/local.convosyncd",
        f"launchctl bootstrap {domain} {plan.path}",
    ]
    assert [step.may_fail for step in plan.start] == [True, False, False]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"Label": ""}, "Label must be a non-empty string"),
        ({"ProgramArguments": "/usr/bin/convosyncd run"}, "ProgramArguments must be a non-empty"),
        ({"ProgramArguments": ["/usr/bin/convosyncd", 7]}, "ProgramArguments must be a non-empty"),
        ({"ProgramArguments": ["convosyncd", "run"]}, "must be an absolute path"),
        ({"RunAtLoad": "yes"}, "RunAtLoad must be true or false"),
        ({"KeepAlive": "always"}, "KeepAlive must be true, false or a dictionary"),
        ({"KeepAlive": {"SuccessfulExit": "no"}}, "KeepAlive.SuccessfulExit must be true"),
        ({"EnvironmentVariables": {"PATH": 1}}, "EnvironmentVariables must map strings"),
        ({"StandardOutPath": "log.txt"}, "StandardOutPath must be an absolute path"),
        ({"Umask": 512}, "Umask must be an integer from 0 to 511"),
        ({"Umask": -1}, "Umask must be an integer from 0 to 511"),
        ({"Umask": True}, "Umask must be an integer from 0 to 511"),
        ({"Umask": "077x"}, "Umask must be an integer from 0 to 511"),
    ],
)
def test_launchd_rules_catch_what_plistlib_accepts(
    tmp_path: Path, change: dict[str, object], problem: str
) -> None:
    content = service.render_plist(["/usr/bin/convosyncd", "run"], log_dir=tmp_path)
    agent = {**plistlib.loads(content), **change}
    reloaded = plistlib.loads(plistlib.dumps(agent))
    problems = service.launchd_problems(reloaded)
    assert any(problem in found for found in problems), problems


@pytest.mark.parametrize("umask", [63, 0, "077", "0x3f", "63"])
def test_launchd_takes_the_umask_as_a_number_or_as_strtoul_reads_it(
    tmp_path: Path, umask: int | str
) -> None:
    content = service.render_plist(["/usr/bin/convosyncd", "run"], log_dir=tmp_path)
    agent = {**plistlib.loads(content), "Umask": umask}
    assert service.launchd_problems(plistlib.loads(plistlib.dumps(agent))) == []


def test_a_hand_edited_unit_does_not_break_status() -> None:
    assert service.exec_start_program('ExecStart="/usr/bin/convosyncd run\n') is None
    assert service.exec_start_program("[Service]\nType=notify\n") is None
    assert service.exec_start_program('ExecStart=-"/opt/my tools/convosyncd" run') == (
        "/opt/my tools/convosyncd"
    )


def test_launchd_status_where_launchctl_cannot_run(tmp_path: Path) -> None:
    if shutil.which("launchctl"):
        pytest.skip("launchctl is here: this is the status of a machine without it")
    home = tmp_path / "mac-home"
    plan = service.plan_install(tmp_path / "config.toml", "launchd", home=home)
    plan.path.parent.mkdir(parents=True)
    plan.path.write_bytes(plan.content)
    status = service.inspect("launchd", tmp_path / "state", home=home)
    assert status.installed and status.program == plan.command[0] and status.program_ok
    assert status.running is None
    assert status.manager_problem == "launchctl is not on PATH"
    assert str(tmp_path / "state" / "convosyncd.log") in status.log
    plan.path.write_bytes(b"<plist><dict><key>Label</key>")
    assert service.inspect("launchd", tmp_path / "state", home=home).program is None
