"""Claude Code's side for tests: the plugin's hook run as Claude Code runs it, and the real client.

Claude Code runs a command hook through the shell, in the project folder, with the
hook input as JSON on standard input; a ``SessionStart`` hook's standard output (on
exit 0) is what the assistant is handed.

The real client (``claude``, npm's ``@anthropic-ai/claude-code``) is driven by
:class:`Client`: each device gets its own Claude Code home with the plugin installed,
and :meth:`Client.start_session` runs ``claude -p`` in the device's clone against a
Messages API stand-in (:mod:`tests.support.messages_api`) and returns what the client
sent. Where the hook's output lands, as measured with client 2.1: the first
conversation request's ``messages`` hold an entry with role ``system`` whose text
begins ``SessionStart hook additional context:`` followed by the hook's
``additionalContext`` (the client appends its own context, the list of agents and
skills, to the same text).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convosyncd.plugin import PLUGIN_ID, PLUGIN_ROOT
from tests.support.devices import Device, cli_env
from tests.support.messages_api import MessagesAPI, Request

HOOKS_FILE = PLUGIN_ROOT / "hooks" / "hooks.json"


def session_start_command() -> str:
    """The one command the plugin's ``hooks.json`` runs at ``SessionStart``."""
    hooks = json.loads(HOOKS_FILE.read_text(encoding="utf-8"))
    commands = [
        hook["command"]
        for group in hooks["hooks"]["SessionStart"]
        for hook in group["hooks"]
        if hook["type"] == "command"
    ]
    assert len(commands) == 1, commands
    command: str = commands[0]
    return command


def make_shim(folder: Path) -> Path:
    """A ``convosyncd`` executable in ``folder`` that runs this checkout's package."""
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "convosyncd"
    shim.write_text(
        f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m convosyncd "$@"\n', encoding="utf-8"
    )
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return shim


def hook_input(cwd: Path, source: str = "startup") -> str:
    """The JSON Claude Code sends a ``SessionStart`` hook."""
    return json.dumps(
        {
            "session_id": "00893aaf-19fa-41d2-8238-13269b9b3ca0",
            "transcript_path": str(cwd / "transcript.jsonl"),
            "cwd": str(cwd),
            "hook_event_name": "SessionStart",
            "source": source,
        }
    )


def run_session_start(
    cwd: Path,
    *,
    path: list[Path],
    config: Path | None = None,
    stdin: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the plugin's ``SessionStart`` command through ``/bin/sh`` as Claude Code does.

    ``path`` is the whole ``PATH``: leave out the shim's folder to play a machine
    without convosyncd. ``config`` becomes ``CONVOSYNC_CONFIG``.
    """
    env = cli_env(extra_env)
    env["PATH"] = os.pathsep.join(str(folder) for folder in path)
    env["CLAUDE_PROJECT_DIR"] = str(cwd)
    if config is not None:
        env["CONVOSYNC_CONFIG"] = str(config)
    return subprocess.run(
        ["/bin/sh", "-c", session_start_command()],
        cwd=cwd,
        input=hook_input(cwd) if stdin is None else stdin,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )


def parse_hook_output(stdout: str) -> dict[str, Any]:
    """The hook's JSON, checked against the documented ``SessionStart`` shape."""
    data = json.loads(stdout)
    assert isinstance(data, dict)
    assert set(data) <= {"hookSpecificOutput", "systemMessage"}, data.keys()
    specific = data["hookSpecificOutput"]
    assert set(specific) == {"hookEventName", "additionalContext"}, specific.keys()
    assert specific["hookEventName"] == "SessionStart"
    assert isinstance(specific["additionalContext"], str) and specific["additionalContext"]
    assert isinstance(data.get("systemMessage", ""), str)
    return data


# -- the real client -------------------------------------------------------------------

CLAUDE_PACKAGE = "@anthropic-ai/claude-code"
CI_PREFIX = Path("/opt/claude-code")
"""Where ``.ci/run`` installs the client (``npm install --prefix``)."""
MISSING_CLAUDE = (
    f"the Claude Code client (claude) is neither on PATH nor in {CI_PREFIX}: install it "
    f"with `npm install {CLAUDE_PACKAGE}` (.ci/run runs `npm install --prefix {CI_PREFIX} "
    f"{CLAUDE_PACKAGE}@2.1`)"
)
HOOK_CONTEXT_PREFIX = "SessionStart hook additional context:"
DUMMY_API_KEY = "sk-ant-api03-convosyncd-test-stand-in"


def find_claude() -> Path | None:
    """The ``claude`` executable: on PATH, else where ``.ci/run`` installs it."""
    found = shutil.which("claude")
    if found:
        return Path(found)
    installed = CI_PREFIX / "node_modules" / ".bin" / "claude"
    return installed if os.access(installed, os.X_OK) else None


def claude_env(
    home: Path, base: Mapping[str, str], extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The client's environment: ``base`` without a trace of the person's own Claude Code.

    Whatever Claude Code or Anthropic settings the environment holds (a config folder,
    a key, a model, a session the tests themselves run in) is dropped, so the client
    reads only ``home`` and talks only to what ``extra`` names.
    """
    env = {
        name: value
        for name, value in base.items()
        if not name.startswith(("ANTHROPIC_", "CLAUDE")) and name != "DISABLE_TELEMETRY"
    }
    tmp = home / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "HOME": str(home),
            # The client keeps a folder of its own under the temporary folder.
            "TMPDIR": str(tmp),
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_TELEMETRY": "1",
        }
    )
    env.update(extra or {})
    return env


def run_claude(
    claude: Path,
    home: Path,
    *args: str,
    base: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``claude ARGS`` with ``home`` as its home and no standard input."""
    minimal = {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8"}
    return subprocess.run(
        [str(claude), *args],
        cwd=cwd or home,
        env=claude_env(home, minimal if base is None else base, extra),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass(frozen=True)
class InstalledHome:
    """A Claude Code home with the plugin installed, and what the client said doing it."""

    home: Path
    marketplace_add: subprocess.CompletedProcess[str]
    plugin_install: subprocess.CompletedProcess[str]


def install_plugin(claude: Path, home: Path) -> InstalledHome:
    """Add the packaged plugin folder as a marketplace in ``home`` and install the plugin."""
    home.mkdir(parents=True, exist_ok=True)
    added = run_claude(claude, home, "plugin", "marketplace", "add", str(PLUGIN_ROOT))
    assert added.returncode == 0, f"marketplace add failed:\n{added.stdout}{added.stderr}"
    installed = run_claude(claude, home, "plugin", "install", PLUGIN_ID)
    assert installed.returncode == 0, (
        f"plugin install failed:\n{installed.stdout}{installed.stderr}"
    )
    return InstalledHome(home, added, installed)


def copy_home(template: Path, target: Path) -> Path:
    """A copy of the Claude Code home ``template`` at ``target``, as if installed there.

    The client records absolute paths into its home (where it keeps the installed
    plugin's copy); they are rewritten to point into the copy.
    """

    def leave_out(folder: str, names: list[str]) -> list[str]:
        # The client's temporary folder (see claude_env) is not part of the home.
        return ["tmp"] if Path(folder) == template and "tmp" in names else []

    shutil.copytree(template, target, symlinks=True, ignore=leave_out)
    for path in target.rglob("*.json"):
        if path.is_file() and not path.is_symlink():
            text = path.read_text(encoding="utf-8")
            path.write_text(text.replace(str(template), str(target)), encoding="utf-8")
    return target


def _text_of(content: Any) -> str:
    """The text of a message's content: a string, or its text blocks joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            block["text"]
            for block in content
            if isinstance(block, dict) and isinstance(block.get("text"), str)
        )
    return ""


@dataclass(frozen=True)
class Entry:
    """One entry of a model request's ``messages``, as text."""

    role: str
    text: str


def entries(request: Request) -> list[Entry]:
    return [
        Entry(str(item.get("role")), _text_of(item.get("content"))) for item in request.messages
    ]


def hook_entries(request: Request) -> list[Entry]:
    """The entries of ``request`` that carry a ``SessionStart`` hook's context."""
    return [entry for entry in entries(request) if HOOK_CONTEXT_PREFIX in entry.text]


@dataclass(frozen=True)
class Session:
    """One ``claude -p`` run and every request it sent the stand-in."""

    result: subprocess.CompletedProcess[str]
    requests: list[Request]

    @property
    def output(self) -> dict[str, Any]:
        """The client's ``--output-format json`` result."""
        assert self.result.returncode == 0, self.result.stdout + self.result.stderr
        data = json.loads(self.result.stdout)
        assert isinstance(data, dict), data
        return data

    @property
    def conversation(self) -> list[Request]:
        return [request for request in self.requests if request.is_conversation]

    @property
    def first(self) -> Request:
        """The session's first model request of the conversation."""
        assert self.conversation, f"the client sent no model request:\n{self.result.stderr}"
        return self.conversation[0]


@dataclass
class Client:
    """The real client, a plugin home to copy for each device, and the stand-in it talks to."""

    claude: Path
    template: Path
    api: MessagesAPI
    shim_folder: Path
    homes: dict[str, Path] = field(default_factory=dict)

    def home_of(self, device: Device) -> Path:
        """``device``'s Claude Code home, with the plugin installed (made on first use)."""
        if device.name not in self.homes:
            self.homes[device.name] = copy_home(self.template, device.root / "claude-home")
        return self.homes[device.name]

    def start_session(self, device: Device, prompt: str, *args: str) -> Session:
        """Run ``claude -p PROMPT ARGS`` in ``device``'s clone until it exits.

        The plugin's hook finds ``convosyncd`` (this checkout, through the shim) first
        on PATH, and the device's config through ``CONVOSYNC_CONFIG``.
        """
        before = len(self.api.requests)
        base = cli_env()
        extra = {
            "PATH": os.pathsep.join((str(self.shim_folder), base.get("PATH", os.defpath))),
            "CONVOSYNC_CONFIG": str(device.config),
            "ANTHROPIC_BASE_URL": self.api.url,
            "ANTHROPIC_API_KEY": DUMMY_API_KEY,
        }
        result = run_claude(
            self.claude,
            self.home_of(device),
            "-p",
            prompt,
            "--output-format",
            "json",
            *args,
            base=base,
            extra=extra,
            cwd=device.repo,
        )
        return Session(result, self.api.requests[before:])
