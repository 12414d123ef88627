"""The config file: where it lives, what it may say, and how the CLI edits it.

The file is TOML (read with ``tomllib``, edited with ``tomlkit`` so that the person's
comments and layout survive ``add`` and ``remove``). It loads into frozen dataclasses,
validated at load: a broken file is an error that lists every problem with the file and
the key, never a silent fallback to defaults.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import platformdirs

from convosyncd.atomic import write_atomically
from convosyncd.errors import ConfigError, UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

APP_NAME = "convosync"
CONFIG_ENV = "CONVOSYNC_CONFIG"

SecretsPolicy = Literal["redact", "block"]
RepoMode = Literal["branch", "inline"]
REPO_MODES: tuple[RepoMode, ...] = ("branch", "inline")

_DEVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_REMOTE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,99}$")
_BRANCH_BAD = re.compile(r"(^[-/.])|(\.\.)|(//)|([/.]$)|(\.lock$)|(@\{)|[\x00-\x20\x7f~^:?*\[\\]")

DEFAULTS: dict[str, Any] = {
    "pull_interval": 60.0,
    "settle": 1.0,
    "notify": True,
    "max_draft_bytes": 1_048_576,
    "secrets": "redact",
    "network_timeout": 30.0,
    "notify_timeout": 5.0,
    "fresh_timeout": 2.0,
    "keep_days": 0,
}

FRESH_TIMEOUT_LIMIT = 60.0
"""Claude Code gives a hook a minute; a session start never waits longer for a check."""

MAX_KEEP_DAYS = 36_500
"""A hundred years: ``keep_days`` beyond this is a typo, not a wish."""

TEMPLATE = """\
# convosyncd configuration. `convosyncd add PATH` and `convosyncd remove PATH` edit the
# [[repos]] list below and keep your comments; a running daemon picks changes up by itself.

# This machine's name, as other devices see it (letters, digits, '.', '_' and '-').
device = "{device}"

# Seconds between checks of the remote for other devices' handoffs.
pull_interval = 60

# Seconds a draft must stay unchanged before it is published.
settle = 1.0

# Desktop notification when another device's handoff arrives.
notify = true

# Drafts larger than this are refused (and left where they are).
max_draft_bytes = 1048576

# Seconds a session start may wait while the remote is checked for newer handoffs
# (0: no check, hand over what this machine has).
fresh_timeout = 2.0

# What to do with API keys, tokens and private keys found in a draft:
# "redact" publishes with each replaced by [REDACTED:<kind>]; "block" refuses the draft.
secrets = "redact"

# Forget handoffs older than this many days, on every device (0 keeps everything).
keep_days = 0
"""


@dataclass(frozen=True)
class RepoConfig:
    """One registered work tree."""

    path: Path
    remote: str = "origin"
    branch: str = "convosync"
    mode: RepoMode = "branch"


@dataclass(frozen=True)
class Config:
    """Everything the daemon and the CLI read from the config file."""

    path: Path
    device: str
    state_dir: Path
    pull_interval: float = DEFAULTS["pull_interval"]
    settle: float = DEFAULTS["settle"]
    notify: bool = DEFAULTS["notify"]
    max_draft_bytes: int = DEFAULTS["max_draft_bytes"]
    secrets: SecretsPolicy = DEFAULTS["secrets"]
    network_timeout: float = DEFAULTS["network_timeout"]
    notify_timeout: float = DEFAULTS["notify_timeout"]
    fresh_timeout: float = DEFAULTS["fresh_timeout"]
    keep_days: int = DEFAULTS["keep_days"]
    repos: tuple[RepoConfig, ...] = field(default=())

    def repo_for(self, path: Path) -> RepoConfig | None:
        """The registered repo at ``path`` (compared after resolving), if any."""
        wanted = _resolve(path)
        return next((repo for repo in self.repos if repo.path == wanted), None)

    def repo_containing(self, path: Path) -> RepoConfig | None:
        """The registered repo whose work tree holds ``path`` (the repo itself or inside)."""
        where = _resolve(path)
        for candidate in (where, *where.parents):
            repo = self.repo_for(candidate)
            if repo is not None:
                return repo
        return None


def find_repo(config: Config, path: Path | None) -> RepoConfig:
    """The registered repo holding ``path`` (default: the current folder)."""
    where = (path or Path.cwd()).expanduser().absolute()
    repo = config.repo_containing(where)
    if repo is not None:
        return repo
    raise UsageError(
        f"{where} is not in a registered repo (config {config.path}): "
        f"`convosyncd add <top folder of the repo>` first"
    )


def default_config_path() -> Path:
    """``$CONVOSYNC_CONFIG``, else ``<user config dir>/convosync/config.toml``."""
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit).expanduser()
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / "config.toml"


def default_state_dir() -> Path:
    """``<user state dir>/convosync`` (XDG_STATE_HOME on Linux)."""
    return Path(platformdirs.user_state_dir(APP_NAME, appauthor=False))


def default_device() -> str:
    """The host name, reduced to the characters a device name may hold."""
    return sanitize_device(socket.gethostname())


def sanitize_device(name: str) -> str:
    """Turn any text into a valid device name (``"My Laptop!"`` -> ``"My-Laptop"``)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._")[:64].strip("-._")
    return cleaned or "device"


def _resolve(path: Path) -> Path:
    return Path(os.path.abspath(path.expanduser()))


def load(path: Path | None = None) -> Config:
    """Read and validate the config at ``path`` (a missing file means the defaults)."""
    config_path = _resolve(path or default_config_path())
    try:
        raw = config_path.read_bytes()
    except FileNotFoundError:
        return Config(path=config_path, device=default_device(), state_dir=default_state_dir())
    except OSError as error:
        raise ConfigError(f"cannot read the config {config_path}: {error.strerror}") from error
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{config_path} is not UTF-8 text (byte {error.start}); save it as UTF-8"
        ) from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(
            f"{config_path} is not valid TOML: {error}; fix the file or move it away "
            "to start from the defaults"
        ) from error
    return parse(data, config_path)


def parse(data: Mapping[str, Any], config_path: Path) -> Config:
    """Validate parsed TOML; raise one :class:`ConfigError` listing every problem."""
    problems: list[str] = []
    known = {"device", "state_dir", "repos", *DEFAULTS}
    for key in sorted(set(data) - known):
        problems.append(f"unknown key '{key}' (expected one of: {', '.join(sorted(known))})")

    values: dict[str, Any] = {}
    device = data.get("device", None)
    if device is None:
        values["device"] = default_device()
    elif not isinstance(device, str) or not _DEVICE_RE.match(device):
        problems.append(
            f"'device' is {device!r}; expected 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    else:
        values["device"] = device

    for key in ("pull_interval", "settle", "network_timeout", "notify_timeout"):
        if key in data:
            value = data[key]
            minimum = 0.0 if key == "settle" else 0.05
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                problems.append(f"'{key}' is {value!r}; expected a number of seconds")
            elif not minimum <= value <= 86_400:
                problems.append(
                    f"'{key}' is {value!r}; expected seconds between {minimum:g} and 86400"
                )
            else:
                values[key] = float(value)
    if "fresh_timeout" in data:
        value = data["fresh_timeout"]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"'fresh_timeout' is {value!r}; expected a number of seconds")
        elif not 0 <= value <= FRESH_TIMEOUT_LIMIT:
            problems.append(
                f"'fresh_timeout' is {value!r}; expected seconds between 0 (no check at "
                f"session start) and {FRESH_TIMEOUT_LIMIT:g}"
            )
        else:
            values["fresh_timeout"] = float(value)
    if "notify" in data:
        if isinstance(data["notify"], bool):
            values["notify"] = data["notify"]
        else:
            problems.append(f"'notify' is {data['notify']!r}; expected true or false")
    if "max_draft_bytes" in data:
        value = data["max_draft_bytes"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"'max_draft_bytes' is {value!r}; expected a positive whole number")
        elif value > 64 * 1_048_576:
            problems.append(f"'max_draft_bytes' is {value!r}; expected at most 67108864 (64 MiB)")
        else:
            values["max_draft_bytes"] = value
    if "secrets" in data:
        if data["secrets"] in ("redact", "block"):
            values["secrets"] = data["secrets"]
        else:
            problems.append(f'\'secrets\' is {data["secrets"]!r}; expected "redact" or "block"')
    if "keep_days" in data:
        value = data["keep_days"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            problems.append(
                f"'keep_days' is {value!r}; expected a whole number of days (0 keeps everything)"
            )
        elif value > MAX_KEEP_DAYS:
            problems.append(f"'keep_days' is {value!r}; expected at most {MAX_KEEP_DAYS} days")
        else:
            values["keep_days"] = value
    if "state_dir" in data:
        if isinstance(data["state_dir"], str) and data["state_dir"].strip():
            values["state_dir"] = _resolve(Path(data["state_dir"]))
        else:
            problems.append(f"'state_dir' is {data['state_dir']!r}; expected a folder path")

    repos = _parse_repos(data.get("repos", []), problems)
    if problems:
        listing = "\n".join(f"  - {problem}" for problem in problems)
        raise ConfigError(f"{config_path} has {_plural(len(problems), 'problem')}:\n{listing}")
    return Config(
        path=config_path,
        state_dir=values.pop("state_dir", default_state_dir()),
        repos=tuple(repos),
        **values,
    )


def _parse_repos(raw: Any, problems: list[str]) -> list[RepoConfig]:
    if not isinstance(raw, list):
        problems.append("'repos' must be a list of [[repos]] tables")
        return []
    repos: list[RepoConfig] = []
    seen: set[Path] = set()
    allowed = {"path", "remote", "branch", "mode"}
    for index, entry in enumerate(raw, start=1):
        where = f"repos[{index}]"
        if not isinstance(entry, dict):
            problems.append(f"'{where}' is {entry!r}; expected a [[repos]] table")
            continue
        for key in sorted(set(entry) - allowed):
            problems.append(
                f"unknown key '{where}.{key}' (expected one of: {', '.join(sorted(allowed))})"
            )
        path = entry.get("path")
        if not isinstance(path, str) or not path.strip():
            problems.append(f"'{where}.path' is {path!r}; expected the path of a git work tree")
            continue
        resolved = _resolve(Path(path))
        if resolved in seen:
            problems.append(f"'{where}.path' repeats {resolved}; list each repo once")
            continue
        seen.add(resolved)
        remote = entry.get("remote", "origin")
        if not isinstance(remote, str) or not _REMOTE_RE.match(remote):
            problems.append(f"'{where}.remote' is {remote!r}; expected a git remote name")
            continue
        branch = entry.get("branch", "convosync")
        if not isinstance(branch, str) or not branch or _BRANCH_BAD.search(branch):
            problems.append(f"'{where}.branch' is {branch!r}; expected a valid git branch name")
            continue
        mode = entry.get("mode", "branch")
        if mode not in REPO_MODES:
            problems.append(
                f"'{where}.mode' is {mode!r}; expected \"branch\" (handoffs on the sync branch "
                'only) or "inline" (also committed to your current branch for devices that '
                "only have the original convosync plugin)"
            )
            continue
        repos.append(RepoConfig(path=resolved, remote=remote, branch=branch, mode=mode))
    return repos


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def save_repo(config_path: Path, repo: RepoConfig) -> bool:
    """Add (or update) ``repo`` in the file, keeping comments; False if already there."""
    import tomlkit

    document = _read_document(config_path)
    table = tomlkit.table()
    table.add("path", str(repo.path))
    table.add("remote", repo.remote)
    table.add("branch", repo.branch)
    if repo.mode != "branch":
        table.add("mode", repo.mode)
    repos = document.get("repos")
    if repos is None:
        repos = tomlkit.aot()
        document.append("repos", repos)
    for existing in repos:
        if _resolve(Path(str(existing.get("path", "")))) == repo.path:
            if (
                existing.get("remote", "origin") == repo.remote
                and existing.get("branch", "convosync") == repo.branch
            ):
                return False
            # Edit the table in place: its comments and other keys (a hand-set mode) stay.
            existing["remote"] = repo.remote
            existing["branch"] = repo.branch
            break
    else:
        repos.append(table)
    _write_document(config_path, document)
    return True


def drop_repo(config_path: Path, path: Path) -> bool:
    """Remove the repo at ``path`` from the file, keeping comments; False if absent."""
    document = _read_document(config_path)
    repos = document.get("repos")
    if repos is None:
        return False
    wanted = _resolve(path)
    for index, existing in enumerate(repos):
        if _resolve(Path(str(existing.get("path", "")))) == wanted:
            del repos[index]
            _write_document(config_path, document)
            return True
    return False


def _read_document(config_path: Path) -> Any:
    import tomlkit

    try:
        text = config_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = TEMPLATE.format(device=default_device())
    # Validate first: editing a file that does not load would hide its problems.
    parse(tomllib.loads(text), config_path)
    return tomlkit.parse(text)


def _write_document(config_path: Path, document: Any) -> None:
    import tomlkit

    text = tomlkit.dumps(document)
    parse(tomllib.loads(text), config_path)
    write_atomically(config_path, text.encode("utf-8"))
