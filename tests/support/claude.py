"""Claude Code's side for tests: the plugin's files, and its hook run the way Claude Code runs it.

Claude Code runs a command hook through the shell, in the project folder, with the
hook input as JSON on standard input; a ``SessionStart`` hook's standard output (on
exit 0) is what the assistant is handed.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from convosyncd.plugin import PLUGIN_ROOT
from tests.support.devices import cli_env

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
