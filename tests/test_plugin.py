"""The Claude Code plugin's files, and whether convosyncd can tell that it is installed.

The files are checked against what Claude Code requires of them (the marketplace's
``name``, ``owner.name`` and plugin entries with ``name`` and a ``./`` ``source``; the
manifest's kebab-case ``name``; command frontmatter; the hooks file's shape), and every
``convosyncd`` command line they contain is parsed by the real command line.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from convosyncd import __version__
from convosyncd.cli import build_parser
from convosyncd.handoff import CONVOSYNC_DIR, DRAFT_NAME
from convosyncd.plugin import (
    HOOK_COMMAND,
    MARKETPLACE_NAME,
    PLUGIN_ID,
    PLUGIN_NAME,
    PLUGIN_ROOT,
    installed_status,
)
from tests.support.claude import HOOKS_FILE, run_session_start, session_start_command
from tests.support.devices import REPO_ROOT, run_cli

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

KEBAB = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
SEMVER = re.compile(r"^\d+\.\d+\.\d+$")
COMMANDS = ("generate-handoff", "resume", "save")
SECTIONS = (
    "Current Task",
    "Progress So Far",
    "Key Decisions Made",
    "Important Context",
    "Next Steps",
    "Files Modified",
    "Open Questions",
)
MARKETPLACES = (
    REPO_ROOT / ".claude-plugin" / "marketplace.json",
    PLUGIN_ROOT / ".claude-plugin" / "marketplace.json",
)


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def frontmatter(path: Path) -> tuple[dict[str, str], str]:
    """A command file's ``key: value`` frontmatter and its body."""
    text = path.read_text(encoding="utf-8")
    match = re.match(r"^---\n(.*?)\n---\n(.*)$", text, re.S)
    assert match, f"{path.name} has no frontmatter between --- lines"
    fields = {}
    for line in match.group(1).splitlines():
        key, sep, value = line.partition(":")
        assert sep and key.strip(), f"{path.name}: unreadable frontmatter line {line!r}"
        fields[key.strip()] = value.strip()
    return fields, match.group(2)


def convosyncd_command_lines(text: str) -> list[str]:
    """Every ``convosyncd <command> ...`` line quoted in inline code."""
    return [m.group(1) for m in re.finditer(r"`(convosyncd [^`]+)`", text)]


def parses(command_line: str) -> bool:
    """Whether the real command line accepts ``command_line`` (``<placeholder>``s filled)."""
    words = shlex.split(re.sub(r"<[^<>]+>", "PLACEHOLDER", command_line))
    assert words[0] == "convosyncd"
    try:
        build_parser().parse_args(words[1:])
    except SystemExit:
        return False
    return True


@pytest.mark.parametrize("path", MARKETPLACES, ids=["repo-root", "plugin-folder"])
def test_marketplace_has_what_claude_code_requires(path: Path) -> None:
    data = load(path)
    assert KEBAB.match(data["name"]) and data["name"] == MARKETPLACE_NAME
    assert data["owner"]["name"]
    assert isinstance(data["plugins"], list) and len(data["plugins"]) == 1
    entry = data["plugins"][0]
    assert entry["name"] == PLUGIN_NAME and entry["description"]
    assert entry["source"].startswith("./")
    # Relative sources resolve from the folder that holds .claude-plugin/.
    plugin_folder = (path.parent.parent / entry["source"]).resolve()
    assert plugin_folder == PLUGIN_ROOT
    assert (plugin_folder / ".claude-plugin" / "plugin.json").is_file()
    assert entry["version"] == __version__


def test_plugin_manifest() -> None:
    manifest = load(PLUGIN_ROOT / ".claude-plugin" / "plugin.json")
    assert manifest["name"] == PLUGIN_NAME and KEBAB.match(manifest["name"])
    assert SEMVER.match(manifest["version"]) and manifest["version"] == __version__
    assert manifest["description"] and manifest["author"]["name"]
    assert f"{manifest['name']}@{MARKETPLACE_NAME}" == PLUGIN_ID
    # Components sit where Claude Code looks for them by default.
    assert sorted(p.stem for p in (PLUGIN_ROOT / "commands").glob("*.md")) == sorted(COMMANDS)
    assert HOOKS_FILE.is_file()


@pytest.mark.parametrize("name", COMMANDS)
def test_commands_have_frontmatter_and_use_the_real_command_line(name: str) -> None:
    fields, body = frontmatter(PLUGIN_ROOT / "commands" / f"{name}.md")
    assert 10 <= len(fields["description"]) <= 80
    tools = [tool.strip() for tool in fields["allowed-tools"].split(",")]
    for tool in tools:
        assert re.match(r"^(Read|Write|Bash\([^()]+:\*\))$", tool), tool
        if tool.startswith("Bash("):
            prefix = tool[len("Bash(") : -len(":*)")]
            assert prefix.startswith("convosyncd "), f"{name} may run {prefix!r}"
            assert parses(prefix), prefix
            assert f"`{prefix}" in body, f"{name} allows {prefix!r} but never runs it"
    lines = convosyncd_command_lines(body)
    for line in lines:
        assert parses(line), f"{name}.md quotes `{line}`, which convosyncd does not accept"
    if name != "generate-handoff":
        assert lines, f"{name}.md runs no convosyncd command"
    assert len(body.split()) < 400, "keep the prompt short: it costs the assistant's context"


def test_generate_handoff_asks_for_every_section_and_the_draft_path() -> None:
    _fields, body = frontmatter(PLUGIN_ROOT / "commands" / "generate-handoff.md")
    assert f"`{CONVOSYNC_DIR}/{DRAFT_NAME}`" in body
    positions = [body.index(f"`### {section}`") for section in SECTIONS]
    assert positions == sorted(positions), "the sections must be asked for in order"
    assert "✅" in body and "⏳" in body
    assert "personal facts" in body


def test_save_publishes_through_convosyncd_and_never_commits_on_the_branch() -> None:
    fields, body = frontmatter(PLUGIN_ROOT / "commands" / "save.md")
    assert "git" not in fields["allowed-tools"].replace("convosyncd", "")
    assert "`convosyncd sync .`" in body
    assert "never run `git add`" in body


def test_hooks_file_runs_the_resume_hook_at_session_start() -> None:
    data = load(HOOKS_FILE)
    assert set(data["hooks"]) == {"SessionStart"}
    (group,) = data["hooks"]["SessionStart"]
    assert all(re.fullmatch(group["matcher"], source) for source in ("startup", "resume"))
    (hook,) = group["hooks"]
    assert hook["type"] == "command" and 1 <= hook["timeout"] <= 60
    command = session_start_command()
    assert HOOK_COMMAND in command
    assert parses(HOOK_COMMAND)


def test_the_hook_without_convosyncd_on_path_is_a_one_line_no_op(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    result = run_session_start(tmp_path, path=[empty])
    assert result.returncode == 0
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert "convosyncd is not on PATH" in result.stderr


def test_pyproject_ships_every_plugin_file_with_the_package() -> None:
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = data["tool"]["setuptools"]["package-data"]["convosyncd"]
    package = REPO_ROOT / "convosyncd"
    shipped = {path for pattern in patterns for path in package.glob(pattern) if path.is_file()}
    files = {path for path in PLUGIN_ROOT.rglob("*") if path.is_file()}
    assert files and files <= shipped, sorted(str(p) for p in files - shipped)


# -- is it installed? ------------------------------------------------------------------


def claude_folder(tmp_path: Path, plugins: dict[str, Any], **settings: Any) -> Path:
    """A Claude Code config folder holding the given install records."""
    folder = tmp_path / "claude"
    (folder / "plugins").mkdir(parents=True)
    (folder / "plugins" / "installed_plugins.json").write_text(
        json.dumps({"version": 2, "plugins": plugins}), encoding="utf-8"
    )
    if settings:
        (folder / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
    return folder


def installed_copy(tmp_path: Path, name: str, *, with_hook: bool = True) -> Path:
    """A copy of a plugin where Claude Code's cache keeps installed plugins."""
    target = tmp_path / "claude-cache" / name
    shutil.copytree(PLUGIN_ROOT, target)
    if not with_hook:
        shutil.rmtree(target / "hooks")
    return target


def record(path: Path, scope: str = "user") -> list[dict[str, str]]:
    return [{"scope": scope, "installPath": str(path), "version": __version__}]


def test_status_of_a_machine_without_claude_code(tmp_path: Path) -> None:
    installed, message = installed_status(tmp_path / "nothing")
    assert not installed
    assert "was not found" in message and f"/plugin install {PLUGIN_ID}" in message


def test_status_when_the_plugin_is_not_installed(tmp_path: Path) -> None:
    folder = claude_folder(tmp_path, {"other@somewhere": record(tmp_path)})
    installed, message = installed_status(folder)
    assert not installed
    assert "not installed" in message
    assert f"/plugin marketplace add {PLUGIN_ROOT}" in message


def test_status_when_installed_enabled_and_disabled(tmp_path: Path) -> None:
    copy = installed_copy(tmp_path, "convosync")
    folder = claude_folder(tmp_path, {PLUGIN_ID: record(copy)})
    installed, message = installed_status(folder)
    assert installed, message
    assert f"{PLUGIN_ID} {__version__} is installed (user scope)" in message

    (folder / "settings.json").write_text(
        json.dumps({"enabledPlugins": {PLUGIN_ID: False}}), encoding="utf-8"
    )
    installed, message = installed_status(folder)
    assert not installed and "disabled" in message


def test_status_tells_the_original_plugin_apart(tmp_path: Path) -> None:
    original = installed_copy(tmp_path, "original", with_hook=False)
    folder = claude_folder(tmp_path, {"convosync@convocli-marketplace": record(original)})
    installed, message = installed_status(folder)
    assert not installed
    assert "convosync@convocli-marketplace is installed" in message
    assert "without the session-start hook" in message
    assert "/plugin uninstall convosync@convocli-marketplace" in message


def test_status_reads_version_1_records_and_project_scope(tmp_path: Path) -> None:
    copy = installed_copy(tmp_path, "convosync")
    folder = claude_folder(tmp_path, {})
    (folder / "plugins" / "installed_plugins.json").write_text(
        json.dumps(
            {
                "version": 1,
                "plugins": {
                    PLUGIN_ID: {
                        "version": __version__,
                        "installPath": str(copy),
                        "scope": "project",
                        "projectPath": "/src/app",
                    }
                },
            }
        ),
        encoding="utf-8",
    )
    installed, message = installed_status(folder)
    assert installed and "(for /src/app)" in message


def test_status_command_shows_the_plugin_line(tmp_path: Path) -> None:
    copy = installed_copy(tmp_path, "convosync")
    folder = claude_folder(tmp_path, {PLUGIN_ID: record(copy)})
    config = tmp_path / "config.toml"
    config.write_text(f'device = "desktop"\nstate_dir = "{tmp_path / "state"}"\n', "utf-8")
    env = {"CLAUDE_CONFIG_DIR": str(folder)}
    text = run_cli("--config", str(config), "status", env=env)
    assert text.returncode == 0, text.stderr
    assert f"plugin {PLUGIN_ID} {__version__} is installed" in text.stdout
    report = json.loads(run_cli("--config", str(config), "status", "--json", env=env).stdout)
    assert report["plugin"]["installed"] is True
