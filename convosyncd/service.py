"""convosyncd as a service: the systemd user unit, the launchd agent, and their life cycle.

Rendering is pure: :func:`render_unit` fills the template shipped as
``systemd/convosyncd.service`` (a copy of which is package data), :func:`render_plist`
builds the launchd agent and :func:`launchd_problems` checks it against launchd's own
rules. Everything else is a short list of :class:`Step` command lines (``systemctl
--user ...`` or ``launchctl ...``) that ``--dry-run`` prints and an install runs through
:func:`run_step`, the one place this module starts a process.

The unit names the absolute path of the ``convosyncd`` that is installed (the one
running now), never a guessed one, and the config file this command was given.
"""

from __future__ import annotations

import os
import plistlib
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from convosyncd.errors import ConvosyncError, UsageError
from convosyncd.logs import STDERR_SWITCH

Manager = Literal["systemd", "launchd"]

UNIT_NAME = "convosyncd.service"
LABEL = "local.convosyncd"
"""The launchd label (``local.`` marks a job defined on this machine, not by a vendor)."""

EXEC_START = "@EXEC_START@"
"""The placeholder in the unit template that install replaces with the command line."""

STEP_TIMEOUT = 60.0
"""Seconds a systemctl or launchctl call may take (``enable --now`` waits for READY=1)."""

HOMEBREW_PATH = ("/opt/homebrew/bin", "/opt/homebrew/sbin", "/usr/local/bin", "/usr/local/sbin")
SYSTEM_PATH = ("/usr/bin", "/bin", "/usr/sbin", "/sbin")


# -- what runs ------------------------------------------------------------------------


def manager_for(platform: str | None = None) -> Manager:
    """The service manager of this platform."""
    name = sys.platform if platform is None else platform
    if name.startswith("linux"):
        return "systemd"
    if name == "darwin":
        return "launchd"
    raise UsageError(
        f"`convosyncd service` knows systemd (Linux) and launchd (macOS), not {name}: start "
        "`convosyncd run` from your session's autostart instead"
    )


def executable() -> tuple[str, ...]:
    """The absolute command that starts this very convosyncd.

    The script this process was started as (``~/.local/bin/convosyncd`` under pipx, a
    virtualenv's ``bin/convosyncd``), else the script installed beside this Python, else
    ``python -m convosyncd`` with this Python. Never a guess at where it might be.
    """
    started_as = Path(os.path.abspath(sys.argv[0])) if sys.argv and sys.argv[0] else None
    beside = Path(sys.executable).parent / "convosyncd"
    for candidate in (started_as, beside):
        if candidate is not None and candidate.name == "convosyncd" and _runnable(candidate):
            return (str(candidate),)
    found = shutil.which("convosyncd")
    if found is not None:
        return (os.path.abspath(found),)
    return (os.path.abspath(sys.executable), "-m", "convosyncd")


def _runnable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def daemon_command(config_path: Path) -> tuple[str, ...]:
    """What the service runs: ``convosyncd --config CONFIG run``, all absolute.

    The config is named explicitly: a service manager's environment may not have the
    ``XDG_CONFIG_HOME`` or ``CONVOSYNC_CONFIG`` of the shell that installed it.
    """
    return (*executable(), "--config", str(config_path.absolute()), "run")


# -- systemd --------------------------------------------------------------------------


def unit_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/systemd/user/convosyncd.service`` (``~/.config`` by default)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or Path.home(), ".config")
    return Path(base) / "systemd" / "user" / UNIT_NAME


def unit_template() -> str:
    """The unit template: ``systemd/convosyncd.service`` as shipped in the package."""
    return (resources.files("convosyncd") / "data" / UNIT_NAME).read_text(encoding="utf-8")


_SYSTEMD_BARE = re.compile(r"[A-Za-z0-9_@+=:,./-]+")


def systemd_quote(argument: str) -> str:
    """One word of an ``ExecStart=`` line, as systemd will read it back.

    ``%`` starts a specifier and ``$`` a variable in systemd's command lines, so both
    are doubled; anything but plain characters is double-quoted with ``\\`` escapes.
    """
    if any(ord(char) < 0x20 or char == "\x7f" for char in argument):
        raise UsageError(
            f"{argument!r} holds a control character and cannot go into a systemd unit; "
            "use a path without one"
        )
    escaped = argument.replace("%", "%%").replace("$", "$$")
    if argument and _SYSTEMD_BARE.fullmatch(argument):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(template: str, command: Sequence[str]) -> str:
    """The unit file: ``template`` with its ``ExecStart`` placeholder filled."""
    if template.count(EXEC_START) != 1:
        raise ConvosyncError(
            f"the unit template must hold {EXEC_START} exactly once; reinstall convosyncd"
        )
    return template.replace(EXEC_START, " ".join(systemd_quote(word) for word in command))


# -- launchd --------------------------------------------------------------------------


def plist_path(home: Path | None = None) -> Path:
    """``~/Library/LaunchAgents/<label>.plist``."""
    return (home or Path.home()) / "Library" / "LaunchAgents" / f"{LABEL}.plist"


def launchd_log_dir(home: Path | None = None) -> Path:
    """Where launchd writes what the daemon prints outside its log (``~/Library/Logs``)."""
    return (home or Path.home()) / "Library" / "Logs" / "convosync"


def launchd_search_path(command: Sequence[str]) -> str:
    """PATH for the agent: the executable's folder, Homebrew's, then the system's.

    launchd starts agents with a bare ``/usr/bin:/bin:/usr/sbin:/sbin``, where a
    Homebrew git, ``gh`` or credential helper would not be found.
    """
    folders = [os.path.dirname(command[0]), *HOMEBREW_PATH, *SYSTEM_PATH]
    return ":".join(dict.fromkeys(folder for folder in folders if folder))


def render_plist(command: Sequence[str], *, log_dir: Path) -> bytes:
    """The launchd agent: started at login, restarted when it fails."""
    output = str(log_dir / "launchd-output.log")
    agent: dict[str, Any] = {
        "Label": LABEL,
        "ProgramArguments": list(command),
        "RunAtLoad": True,
        # Restarted when it exits with a failure, like systemd's Restart=on-failure.
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 10,
        # The unit's UMask=0077: what the daemon creates is the person's alone. launchd
        # takes the umask as a plain integer (0o077).
        "Umask": 0o077,
        "EnvironmentVariables": {
            "PATH": launchd_search_path(command),
            # Log lines go to the rotating file in the state folder; launchd's own file
            # (never rotated) keeps only what could not be logged.
            STDERR_SWITCH: "no",
        },
        "StandardOutPath": output,
        "StandardErrorPath": output,
    }
    return plistlib.dumps(agent, fmt=plistlib.FMT_XML, sort_keys=True)


def launchd_problems(data: Any) -> list[str]:
    """What launchd would refuse or misread in a parsed agent plist (empty: none)."""
    if not isinstance(data, dict):
        return ["the plist's top level must be a dictionary"]
    problems = []
    label = data.get("Label")
    if not isinstance(label, str) or not label:
        problems.append("Label must be a non-empty string")
    arguments = data.get("ProgramArguments")
    if (
        not isinstance(arguments, list)
        or not arguments
        or not all(isinstance(word, str) for word in arguments)
    ):
        problems.append("ProgramArguments must be a non-empty list of strings")
    elif not os.path.isabs(arguments[0]):
        problems.append("ProgramArguments[0] must be an absolute path (launchd has no shell)")
    if "Program" in data and not isinstance(data["Program"], str):
        problems.append("Program must be a string")
    if not isinstance(data.get("RunAtLoad"), bool):
        problems.append("RunAtLoad must be true or false")
    keep_alive = data.get("KeepAlive")
    if isinstance(keep_alive, dict):
        for key, value in keep_alive.items():
            if key in ("SuccessfulExit", "Crashed") and not isinstance(value, bool):
                problems.append(f"KeepAlive.{key} must be true or false")
    elif not isinstance(keep_alive, bool):
        problems.append("KeepAlive must be true, false or a dictionary of conditions")
    environment = data.get("EnvironmentVariables", {})
    if not isinstance(environment, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in environment.items()
    ):
        problems.append("EnvironmentVariables must map strings to strings")
    for key in ("StandardOutPath", "StandardErrorPath"):
        if key in data and not (isinstance(data[key], str) and os.path.isabs(data[key])):
            problems.append(f"{key} must be an absolute path")
    throttle = data.get("ThrottleInterval", 10)
    if isinstance(throttle, bool) or not isinstance(throttle, int):
        problems.append("ThrottleInterval must be a whole number of seconds")
    if "Umask" in data and _launchd_umask(data["Umask"]) is None:
        problems.append(
            "Umask must be an integer from 0 to 511 (plists have no octal: 63 is 077), "
            'or a string strtoul(3) reads, such as "077"'
        )
    return problems


def _launchd_umask(value: Any) -> int | None:
    """The umask launchd reads from a plist's ``Umask`` (launchd.plist(5)), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        base = 16 if text.lower().startswith("0x") else 8 if text.startswith("0") else 10
        try:
            value = int(text, base)
        except ValueError:
            return None
    if isinstance(value, int) and 0 <= value <= 0o777:
        return value
    return None


# -- steps ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One command the install or uninstall runs."""

    argv: tuple[str, ...]
    may_fail: bool = False
    """True for a step whose failure means "nothing to do" (stopping a stopped job)."""

    def __str__(self) -> str:
        return shlex.join(self.argv)


def systemctl(*args: str, may_fail: bool = False) -> Step:
    return Step(("systemctl", "--user", *args), may_fail=may_fail)


def launchctl(*args: str, may_fail: bool = False) -> Step:
    return Step(("launchctl", *args), may_fail=may_fail)


def launchd_domain() -> str:
    return f"gui/{os.getuid()}"


def run_step(step: Step) -> subprocess.CompletedProcess[str]:
    """Run ``step`` with a time limit; raise :class:`ConvosyncError` if it fails."""
    try:
        result = subprocess.run(
            step.argv,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError:
        result = subprocess.CompletedProcess(step.argv, 127, "", f"{step.argv[0]}: not found")
    except subprocess.TimeoutExpired:
        raise ConvosyncError(f"`{step}` did not finish within {STEP_TIMEOUT:g} s") from None
    if result.returncode != 0 and not step.may_fail:
        detail = " / ".join(line for line in result.stderr.strip().splitlines()[-3:]) or (
            "no message"
        )
        raise ConvosyncError(f"`{step}` failed (exit {result.returncode}): {detail}")
    return result


def query(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run a read-only command (a status question); its failure is an answer too."""
    return run_step(Step(tuple(argv), may_fail=True))


def manager_problem(manager: Manager) -> str | None:
    """Why the service manager cannot be driven from here, or None if it can."""
    tool = "systemctl" if manager == "systemd" else "launchctl"
    if shutil.which(tool) is None:
        return f"{tool} is not on PATH"
    if manager == "launchd":
        return None
    # `show-environment` answers only when a user manager is reachable (not in a
    # container, over plain ssh without a login session, or as root via su).
    result = query("systemctl", "--user", "show-environment")
    if result.returncode != 0:
        reason = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "no reason"
        return f"`systemctl --user` cannot reach a user service manager ({reason})"
    return None


# -- plans ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Installation:
    """The service file for this machine and the commands that load and start it."""

    manager: Manager
    path: Path
    content: bytes
    command: tuple[str, ...]
    start: tuple[Step, ...] = field(default=())

    @property
    def text(self) -> str:
        return self.content.decode("utf-8")


def plan_install(
    config_path: Path, manager: Manager, *, restart: bool = False, home: Path | None = None
) -> Installation:
    """What ``service install`` writes and runs (``restart``: the old one is running)."""
    command = daemon_command(config_path)
    if manager == "systemd":
        steps = [systemctl("daemon-reload"), systemctl("enable", "--now", UNIT_NAME)]
        if restart:
            # enable --now leaves a running service alone; it must pick up the new unit.
            steps.append(systemctl("restart", UNIT_NAME))
        content = render_unit(unit_template(), command).encode("utf-8")
        return Installation(manager, unit_path(), content, command, tuple(steps))
    path = plist_path(home)
    content = render_plist(command, log_dir=launchd_log_dir(home))
    problems = launchd_problems(plistlib.loads(content))
    if problems:
        raise ConvosyncError(f"the launchd agent would be refused: {'; '.join(problems)}")
    target = f"{launchd_domain()}/{LABEL}"
    steps = [
        # A job still loaded from an earlier install would make bootstrap fail.
        launchctl("bootout", target, may_fail=True),
        # `launchctl disable` survives reboots and makes bootstrap fail: undo it.
        launchctl("enable", target),
        launchctl("bootstrap", launchd_domain(), str(path)),
    ]
    return Installation(manager, path, content, command, tuple(steps))


def stop_steps(manager: Manager) -> tuple[Step, ...]:
    """The commands that stop and disable the service (run before its file goes)."""
    if manager == "systemd":
        return (systemctl("disable", "--now", UNIT_NAME, may_fail=True),)
    return (launchctl("bootout", f"{launchd_domain()}/{LABEL}", may_fail=True),)


def after_removal_steps(manager: Manager) -> tuple[Step, ...]:
    """The commands that make the manager forget the removed file."""
    if manager == "systemd":
        return (
            systemctl("daemon-reload"),
            systemctl("reset-failed", UNIT_NAME, may_fail=True),
        )
    return ()


def installed_path(manager: Manager, home: Path | None = None) -> Path:
    return unit_path() if manager == "systemd" else plist_path(home)


def remove_files(manager: Manager, home: Path | None = None) -> list[Path]:
    """Delete the service file (and, for systemd, the symlinks ``enable`` made)."""
    path = installed_path(manager, home)
    removed = []
    if manager == "systemd":
        # What `systemctl --user disable` would do, for when it cannot run here.
        for link in path.parent.glob(f"*.wants/{UNIT_NAME}"):
            if link.is_symlink() and Path(os.readlink(link)).name == UNIT_NAME:
                link.unlink()
                removed.append(link)
    if path.exists() or path.is_symlink():
        path.unlink()
        removed.append(path)
    return removed


def exec_start_program(unit_text: str) -> str | None:
    """The program an installed unit's ``ExecStart=`` runs (its first word)."""
    for line in unit_text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "ExecStart":
            try:
                words = shlex.split(value.replace("%%", "%").replace("$$", "$"))
            except ValueError:  # an unbalanced quote, edited by hand
                return None
            return words[0].lstrip("@-:+!") if words else None
    return None


# -- status ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceStatus:
    """What ``service status`` and ``doctor`` report about the installed service."""

    manager: Manager
    path: Path
    installed: bool
    running: bool | None
    """None when the service manager cannot be asked from here."""
    state: str
    last_exit: str | None
    program: str | None
    program_ok: bool
    manager_problem: str | None
    log: str


def inspect(manager: Manager, state_dir: Path, home: Path | None = None) -> ServiceStatus:
    """Whether the service is installed and running, how it last exited, where it logs."""
    from convosyncd.logs import log_file

    path = installed_path(manager, home)
    installed = path.is_file()
    problem = manager_problem(manager)
    program: str | None = None
    if installed:
        if manager == "systemd":
            program = exec_start_program(path.read_text(encoding="utf-8", errors="replace"))
        else:
            program = _plist_program(path)
    program_ok = program is not None and _runnable(Path(program))
    running: bool | None = None
    state = "not installed" if not installed else "unknown"
    last_exit: str | None = None
    if problem is None and manager == "systemd":
        properties = _systemd_properties(
            "ActiveState", "SubState", "Result", "ExecMainCode", "ExecMainStatus", "MainPID"
        )
        active = properties.get("ActiveState", "unknown")
        running = active in ("active", "reloading")
        state = f"{active} ({properties.get('SubState', '?')})"
        if properties.get("ExecMainCode", "0") != "0":
            last_exit = (
                f"status {properties.get('ExecMainStatus', '?')}, "
                f"result {properties.get('Result', '?')}"
            )
    elif problem is None and installed:
        result = query("launchctl", "print", f"{launchd_domain()}/{LABEL}")
        fields = dict(re.findall(r"^\s*([a-z ]+?) = (.+)$", result.stdout, re.MULTILINE))
        running = result.returncode == 0 and fields.get("state") == "running"
        state = fields.get("state", "not loaded") if result.returncode == 0 else "not loaded"
        last_exit = fields.get("last exit code")
    if manager == "systemd":
        log = f"journalctl --user -u {UNIT_NAME} (when run by the service); otherwise "
        log += str(log_file(state_dir))
    else:
        log = f"{log_file(state_dir)} (and {launchd_log_dir(home) / 'launchd-output.log'})"
    return ServiceStatus(
        manager=manager,
        path=path,
        installed=installed,
        running=running,
        state=state,
        last_exit=last_exit,
        program=program,
        program_ok=program_ok,
        manager_problem=problem,
        log=log,
    )


def _plist_program(path: Path) -> str | None:
    """The program an installed agent runs, or None if the plist does not say."""
    try:
        with path.open("rb") as handle:
            agent = plistlib.load(handle)
    except Exception:  # plistlib raises several types on a damaged file
        return None
    arguments = agent.get("ProgramArguments") if isinstance(agent, dict) else None
    if isinstance(arguments, list) and arguments and isinstance(arguments[0], str):
        return arguments[0]
    return None


def _systemd_properties(*names: str) -> dict[str, str]:
    result = query("systemctl", "--user", "show", UNIT_NAME, "--property=" + ",".join(names))
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
