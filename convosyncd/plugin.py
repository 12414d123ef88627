"""The Claude Code plugin shipped with convosyncd: where it is, and whether it is installed.

The plugin's files live in the package (``claude_plugin/``, a folder that is both a
plugin and a one-plugin marketplace), so ``pip install convosyncd`` brings them along and
the person can add that folder as a marketplace. Whether Claude Code has it installed is
read from Claude Code's own files, never written: ``plugins/installed_plugins.json`` and
the ``enabledPlugins`` map of ``settings.json`` in Claude Code's config folder
(``$CLAUDE_CONFIG_DIR``, else ``~/.claude``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PLUGIN_NAME = "convosync"
MARKETPLACE_NAME = "convosyncd"
PLUGIN_ID = f"{PLUGIN_NAME}@{MARKETPLACE_NAME}"
HOOK_COMMAND = "convosyncd resume --hook"

PLUGIN_ROOT = Path(__file__).resolve().parent / "claude_plugin"
"""The plugin's folder; also a marketplace (``.claude-plugin/marketplace.json``)."""

_SIZE_LIMIT = 4 * 1_048_576


@dataclass(frozen=True)
class Installation:
    """One installation of a plugin called ``convosync``, as Claude Code recorded it."""

    plugin_id: str
    scope: str
    version: str
    install_path: Path | None
    project: str | None

    @property
    def marketplace(self) -> str:
        return self.plugin_id.partition("@")[2]

    def has_session_hook(self) -> bool:
        """Whether the installed copy runs ``convosyncd resume --hook`` at session start."""
        if self.install_path is None:
            return self.marketplace == MARKETPLACE_NAME
        hooks = _read_json(self.install_path / "hooks" / "hooks.json")
        return HOOK_COMMAND in json.dumps(hooks)


def claude_dir() -> Path:
    """Claude Code's config folder: ``$CLAUDE_CONFIG_DIR``, else ``~/.claude``."""
    explicit = os.environ.get("CLAUDE_CONFIG_DIR")
    return Path(explicit).expanduser() if explicit else Path.home() / ".claude"


def install_commands() -> str:
    """What to type in Claude Code to install the plugin from this installation."""
    return (
        f"/plugin marketplace add {PLUGIN_ROOT} then /plugin install {PLUGIN_ID} (in Claude Code)"
    )


def installations(folder: Path) -> list[Installation]:
    """Every installation of a plugin named ``convosync`` recorded under ``folder``."""
    data = _read_json(folder / "plugins" / "installed_plugins.json")
    plugins = data.get("plugins") if isinstance(data, dict) else None
    if not isinstance(plugins, dict):
        return []
    found = []
    for plugin_id, records in sorted(plugins.items()):
        if not isinstance(plugin_id, str) or plugin_id.partition("@")[0] != PLUGIN_NAME:
            continue
        # Version 2 of the file keeps a list of installations (one per scope);
        # version 1 kept a single object.
        for record in records if isinstance(records, list) else [records]:
            if not isinstance(record, dict):
                continue
            path = record.get("installPath")
            found.append(
                Installation(
                    plugin_id=plugin_id,
                    scope=str(record.get("scope", "user")),
                    version=str(record.get("version", "unknown")),
                    install_path=Path(path).expanduser() if isinstance(path, str) else None,
                    project=record.get("projectPath")
                    if isinstance(record.get("projectPath"), str)
                    else None,
                )
            )
    return found


def _disabled(folder: Path, plugin_id: str) -> bool:
    """True when the user settings turn the plugin off (``enabledPlugins[id] = false``)."""
    settings = _read_json(folder / "settings.json")
    enabled = settings.get("enabledPlugins") if isinstance(settings, dict) else None
    return isinstance(enabled, dict) and enabled.get(plugin_id) is False


def installed_status(folder: Path | None = None) -> tuple[bool, str]:
    """Whether this plugin is installed and enabled, and one sentence saying so or what to do.

    ``folder`` is Claude Code's config folder (default :func:`claude_dir`). Only an
    installation that runs the session-start hook counts: the original ``convosync``
    plugin has the same commands' names but loads nothing by itself.
    """
    folder = folder or claude_dir()
    if not folder.is_dir():
        return False, (
            f"Claude Code's folder {folder} was not found; if you use Claude Code, install "
            f"the plugin: {install_commands()}"
        )
    found = installations(folder)
    ours = [item for item in found if item.has_session_hook()]
    if not ours:
        if found:
            others = ", ".join(sorted({item.plugin_id for item in found}))
            return False, (
                f"{others} is installed in {folder}, a convosync plugin without the "
                f"session-start hook; replace it: /plugin uninstall {found[0].plugin_id}, "
                f"then {install_commands()}"
            )
        return False, f"the convosync plugin is not installed in {folder}: {install_commands()}"
    best = next((item for item in ours if item.scope == "user"), ours[0])
    if _disabled(folder, best.plugin_id):
        return False, (
            f"{best.plugin_id} is installed but disabled in {folder / 'settings.json'}: "
            f"enable it with /plugin in Claude Code"
        )
    if best.scope != "user" and best.project:
        where = f"for {best.project}"
    else:
        where = f"{best.scope} scope"
    return True, f"{best.plugin_id} {best.version} is installed ({where}) in {folder}"


def _read_json(path: Path) -> Any:
    try:
        if path.stat().st_size > _SIZE_LIMIT:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
