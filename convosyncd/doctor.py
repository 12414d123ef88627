"""``convosyncd doctor``: what is wrong with this machine's setup, and how to fix it.

Each check is a small function returning a :class:`Check`: passed or not, what was
found, and (when it failed) the fix in one sentence. Every question asked of the
outside world has a time limit: git's ``ls-remote`` runs through :mod:`convosyncd.gitcmd`
(never prompts, the config's ``network_timeout``), ``ssh-add -l`` and the D-Bus calls
get ``notify_timeout``. Remotes are asked in parallel, so a silent one costs its time
limit once, not once per repo.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from convosyncd import config as configs
from convosyncd import keys, notify, service
from convosyncd.catalog import Budget, Catalog
from convosyncd.config import Config, RepoConfig
from convosyncd.daemon_lock import daemon_running
from convosyncd.errors import ConfigError, ConvosyncError, GitError, GitTimeout
from convosyncd.gitcmd import Git, error_summary, mask_credentials, run_git
from convosyncd.gitstore import SyncBranch
from convosyncd.keys import Keyring, SyncKeyError

MINIMUM_GIT = (2, 9)
"""``core.hooksPath``, which keeps the person's hooks away from the sync branch."""


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = "✓" if self.ok else "✗"
        text = f"{mark} {self.name}: {self.detail}"
        return f"{text} → {self.fix}" if not self.ok and self.fix else text


def passed(name: str, detail: str) -> Check:
    return Check(name, True, detail)


def failed(name: str, detail: str, fix: str) -> Check:
    return Check(name, False, detail, fix)


# -- git and the config ----------------------------------------------------------------


def check_git() -> Check:
    """git is on PATH and new enough."""
    where = shutil.which("git")
    if where is None:
        return failed("git", "not found on PATH", "install git (https://git-scm.com)")
    try:
        text = run_git(["--version"], cwd=Path(os.sep), timeout=10).text
    except GitError as error:
        return failed("git", f"{where} does not run: {error}", "reinstall git")
    match = re.search(r"(\d+)\.(\d+)", text)
    version = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if version < MINIMUM_GIT:
        wanted = ".".join(map(str, MINIMUM_GIT))
        return failed("git", f"{text} at {where}", f"install git {wanted} or newer")
    return passed("git", f"{text} at {where}")


def check_config(path: Path) -> tuple[Check, Config | None]:
    """The config file loads (a missing one means the defaults, with no repos)."""
    try:
        config = configs.load(path)
    except ConfigError as error:
        summary = " ".join(line.strip() for line in str(error).splitlines())
        return failed("config", summary, f"fix {path} as the message says"), None
    where = str(path) if path.exists() else f"{path} (not written yet: the defaults)"
    if not config.repos:
        return (
            failed(
                "config",
                f"{where} registers no repos, so nothing is synced",
                "register one with `convosyncd add PATH`",
            ),
            config,
        )
    count = len(config.repos)
    return passed("config", f"{where}: device {config.device}, {count} repo(s)"), config


# -- the sync key ------------------------------------------------------------------------

PAIR = "`convosyncd key show` on another of your devices, then `convosyncd key import` here"


def check_key(config_path: Path) -> tuple[Check, Keyring | None]:
    """The sync key is there, a plain file of this user's that nobody else may read."""
    name = "sync key"
    path = keys.key_file(config_path)
    try:
        keyring = keys.load(path)
    except SyncKeyError as error:
        detail, fix = _key_problem(path, error)
        return failed(name, detail, fix), None
    if keyring is None:
        return (
            failed(
                name,
                f"none at {path}, so this device can neither seal nor open handoffs",
                f"{PAIR}; on your first device, `convosyncd add PATH` makes one",
            ),
            None,
        )
    detail = f"{path}, private, key id {keyring.current.key_id}"
    if keyring.old:
        detail += f" (and {len(keyring.old)} older key(s) kept for reading)"
    return passed(name, detail), keyring


def _key_problem(path: Path, error: SyncKeyError) -> tuple[str, str]:
    """What is wrong with a key file :func:`keys.load` refused, and the fix."""
    try:
        status = path.lstat()
    except OSError:
        return str(error), PAIR
    if not stat.S_ISREG(status.st_mode):
        return f"{path} is not a plain file", f"move it away, then {PAIR}"
    if status.st_uid != os.getuid():
        return (
            f"{path} belongs to another user (uid {status.st_uid})",
            f"move it away, then {PAIR}",
        )
    if status.st_mode & 0o077:
        mode = stat.S_IMODE(status.st_mode)
        return (
            f"{path} can be read or changed by others (permissions {mode:o}), so it is not used",
            f"`chmod 600 {path}`",
        )
    return str(error), f"{PAIR} (it replaces the damaged file, which is kept aside)"


def check_branch_keys(config: Config, repo: RepoConfig, keyring: Keyring) -> Check:
    """No device folder of the local sync branch holds newest handoffs sealed with a key
    this device lacks (a device never paired with this one, or another person's).

    Files under such a key that only precede handoffs this device opens are from before
    that device was paired: they pass, and are counted.
    """
    name = f"sync branch of {repo.path}"
    branch = SyncBranch(
        Git(repo.path, network_timeout=config.network_timeout),
        remote=repo.remote,
        branch=repo.branch,
    )
    tip = branch.tip()
    if tip is None:
        return passed(name, f"no local {repo.branch} branch yet (the first sync makes it)")
    catalog = Catalog(branch, lambda: keyring, max_bytes=config.max_draft_bytes)
    surveys = catalog.survey(tip)
    verified = sum(survey.verified for survey in surveys.values())
    foreign = {device: survey for device, survey in surveys.items() if survey.foreign}
    folders = dict(catalog.folders(tip))
    unpaired = sorted(
        device for device in foreign if _newest_is_foreign(catalog, device, folders[device])
    )
    counted = " (of the first files read)" if any(s.partial for s in surveys.values()) else ""
    opened = f"{verified} handoff(s) open under your sync key{counted}"
    if unpaired:
        files = sum(foreign[device].foreign for device in unpaired)
        ids = sorted(set().union(*(foreign[device].key_ids for device in unpaired)))
        return failed(
            name,
            f"{opened}, but the newest of {', '.join(unpaired)} and {files} file(s) in all "
            f"are sealed with a key this device lacks (key id {', '.join(ids)}), so they "
            "are not shown here",
            "on the device that wrote them, `convosyncd key show`, then `convosyncd key "
            "import` here; if they are another person's (someone else using convosyncd "
            "on this repo), there is nothing to fix",
        )
    if foreign:
        files = sum(survey.foreign for survey in foreign.values())
        return passed(
            name,
            f"{opened}; {files} older file(s) of {', '.join(sorted(foreign))} are sealed "
            "with a key this device lacks (from before they were paired, or another "
            "person's)",
        )
    return passed(name, opened)


def _newest_is_foreign(catalog: Catalog, device: str, folder: str) -> bool:
    """Whether the newest format 2 file of a device folder is under a key not held here."""
    for location, oid in catalog.branch.folder_files(device, folder):
        if location.folder == "":
            continue  # format 1: plain text, no key at all
        records = catalog.classify([(location, oid)], Budget(1, f"reading {location.key}"))
        return bool(records) and records[0].verdict == "foreign"
    return False


# -- repos and remotes -----------------------------------------------------------------


def check_repo(config: Config, repo: RepoConfig) -> Check:
    """The folder is there, is the top of a git work tree and has the remote."""
    name = f"repo {repo.path}"
    remove = f"`convosyncd remove {repo.path}`"
    if not repo.path.exists():
        return failed(name, "the folder does not exist", f"put it back, or {remove}")
    if not repo.path.is_dir():
        return failed(name, "this is a file, not a folder", f"put the repo back, or {remove}")
    git = Git(repo.path, network_timeout=config.network_timeout)
    top = git.run("rev-parse", "--show-toplevel", check=False)
    if top.returncode != 0:
        return failed(name, "not a git work tree", f"clone the repo there again, or {remove}")
    if Path(top.text).resolve() != repo.path.resolve():
        return failed(
            name,
            f"inside the work tree {top.text}, not its top folder",
            f"{remove}, then `convosyncd add {top.text}`",
        )
    remotes = git.run("remote", check=False).text.split()
    if repo.remote not in remotes:
        known = ", ".join(remotes) or "none"
        return failed(
            name,
            f"no git remote named {repo.remote} (remotes: {known})",
            f"`git -C {repo.path} remote add {repo.remote} URL`",
        )
    return passed(name, f"a work tree with the remote {repo.remote}")


def remote_url(config: Config, repo: RepoConfig) -> str:
    git = Git(repo.path, network_timeout=config.network_timeout)
    return git.run("remote", "get-url", repo.remote, check=False).text


def check_remote(config: Config, repo: RepoConfig) -> Check:
    """``git ls-remote`` answers within ``network_timeout`` without asking anything."""
    name = f"remote {repo.remote} of {repo.path}"
    url = mask_credentials(remote_url(config, repo))
    git = Git(repo.path, network_timeout=config.network_timeout)
    start = time.monotonic()
    try:
        result = git.run("ls-remote", repo.remote, f"refs/heads/{repo.branch}", network=True)
    except GitTimeout:
        return failed(
            name,
            f"{url} did not answer within {config.network_timeout:g} s",
            "check the network and that the server is up "
            f"(`git -C {repo.path} ls-remote {repo.remote}` shows git's own view)",
        )
    except GitError as error:
        detail = error_summary(error.stderr) or str(error)
        return failed(
            name,
            f"{url} refused: {mask_credentials(detail)}",
            "check the URL and your credentials: "
            f"`git -C {repo.path} ls-remote {repo.remote}` must work without a prompt",
        )
    elapsed = time.monotonic() - start
    branch = "present" if result.text else "not created yet (the first push creates it)"
    return passed(name, f"{url} answered in {elapsed:.2f} s; sync branch {repo.branch} {branch}")


def uses_ssh(url: str) -> bool:
    """Whether git reaches ``url`` through ssh (``ssh://`` or scp-like ``host:path``)."""
    if "://" in url:
        return url.split("://", 1)[0].lower() in ("ssh", "git+ssh", "ssh+git")
    # git's rule: a colon before the first slash makes [user@]host:path an ssh address.
    return ":" in url.split("/", 1)[0]


def check_ssh_agent(ssh_remotes: list[str], answered: bool, timeout: float) -> Check:
    """An ssh agent answers on ``SSH_AUTH_SOCK`` (only needed when a remote uses ssh).

    ``answered``: every ssh remote answered anyway (a key without a passphrase, say),
    in which case a missing agent is no problem.
    """
    name = "ssh agent"
    if not ssh_remotes:
        return passed(name, "not needed: no remote uses ssh")
    remotes = ", ".join(ssh_remotes)
    fix = (
        "start one and load your key (`eval $(ssh-agent)` then `ssh-add`); for the "
        "service, pass SSH_AUTH_SOCK as the README shows"
    )
    socket_path = os.environ.get("SSH_AUTH_SOCK", "")
    problem: str
    if not socket_path:
        problem = "SSH_AUTH_SOCK is not set"
    elif shutil.which("ssh-add") is None:
        return failed(name, "ssh-add is not on PATH", "install the OpenSSH client")
    else:
        try:
            result = subprocess.run(
                ["ssh-add", "-l"],
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired:
            result = None
        if result is None:
            problem = f"the agent at {socket_path} did not answer within {timeout:g} s"
        elif result.returncode == 0:
            keys = len([line for line in result.stdout.splitlines() if line.strip()])
            return passed(name, f"{socket_path} answers with {keys} key(s), for {remotes}")
        elif result.returncode == 1:
            return passed(
                name,
                f"{socket_path} answers but holds no key (`ssh-add` loads yours), for {remotes}",
            )
        else:
            problem = f"nothing answers at SSH_AUTH_SOCK={socket_path}"
    if answered:
        return passed(name, f"{problem}, but every ssh remote answered without one")
    return failed(name, f"{problem}, and {remotes} use(s) ssh", fix)


# -- notifications -----------------------------------------------------------------------


def server_information(timeout: float) -> tuple[str, ...]:
    """Ask the notification server who it is; TimeoutError if it does not answer."""
    from jeepney import DBusAddress, new_method_call
    from jeepney.io.blocking import open_dbus_connection

    address = notify.session_bus_address()
    if address is None:
        raise ConnectionError("no session bus")
    connection = open_dbus_connection(bus=address, auth_timeout=timeout)
    try:
        server = DBusAddress(
            "/org/freedesktop/Notifications",
            bus_name=notify.SERVER_NAME,
            interface=notify.SERVER_NAME,
        )
        reply = connection.send_and_get_reply(
            new_method_call(server, "GetServerInformation"), timeout=timeout
        )
        return tuple(str(value) for value in reply.body)
    finally:
        connection.close()


def check_notifications(config: Config, platform: str = sys.platform) -> Check:
    """The route notifications take, and (on Linux) that a notification server answers."""
    name = "notifications"
    if not config.notify:
        return passed(name, "off in the config (notify = false)")
    off = "or set notify = false in the config"
    if platform == "darwin":
        route = notify.route(platform)
        if route.startswith("none"):
            return failed(
                name,
                f"no route: {route}",
                f"run convosyncd with /usr/bin on its PATH, {off}",
            )
        return passed(
            name,
            f"route {route}; if none appear, allow notifications for Script Editor "
            "(macOS shows osascript's under it) in System Settings → Notifications",
        )
    if not platform.startswith("linux"):
        return passed(name, f"sent by plyer's {platform} backend (not checked here)")
    route = notify.route(platform)
    if route.startswith("none"):
        return failed(name, f"no route: {route}", f"install libnotify-bin (notify-send), {off}")
    if route.startswith("the Flatpak portal"):
        return failed(
            name,
            f"route {route}, so notifications may vanish",
            f"run convosyncd where no folder /app exists, {off}",
        )
    timeout = config.notify_timeout
    problem = notify.server_problem(timeout)
    if problem is not None:
        return failed(
            name,
            f"route {route}, but {problem}",
            f"log in to a desktop session with a notification server (or run dunst/mako), {off}",
        )
    start = time.monotonic()
    try:
        info = server_information(timeout)
    except TimeoutError:
        return failed(
            name,
            f"route {route}; the notification server owns its name but did not answer "
            f"within {timeout:g} s",
            "restart your desktop's notification service (it is hung); syncing goes on meanwhile",
        )
    except Exception as error:
        return failed(
            name,
            f"route {route}; asking the notification server failed: {error}",
            f"restart your desktop's notification service, {off}",
        )
    who = " ".join(part for part in info[:3] if part) or "unnamed server"
    return passed(name, f"route {route}; {who} answered in {time.monotonic() - start:.2f} s")


# -- inotify ---------------------------------------------------------------------------


def inotify_in_use(uid: int | None = None) -> tuple[int, int]:
    """(instances, watches) that this user's processes hold now, as /proc shows them."""
    owner = os.getuid() if uid is None else uid
    instances = watches = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != owner:
                continue
            descriptors = os.listdir(f"/proc/{entry.name}/fd")
        except OSError:
            continue
        for descriptor in descriptors:
            try:
                if os.readlink(f"/proc/{entry.name}/fd/{descriptor}") != "anon_inode:inotify":
                    continue
                with open(f"/proc/{entry.name}/fdinfo/{descriptor}", encoding="ascii") as info:
                    watches += sum(1 for line in info if line.startswith("inotify wd:"))
                instances += 1
            except OSError:
                continue
    return instances, watches


def check_inotify(repo_count: int, proc: Path = Path("/proc/sys/fs/inotify")) -> Check:
    """The per-user inotify limits leave room for one watch per repo plus the config's."""
    name = "inotify"
    if not sys.platform.startswith("linux"):
        return passed(name, f"not applicable on {sys.platform}")
    try:
        max_watches = int((proc / "max_user_watches").read_text())
        max_instances = int((proc / "max_user_instances").read_text())
    except (OSError, ValueError) as error:
        return failed(
            name,
            f"cannot read the limits in {proc}: {error}",
            "check that /proc is mounted; convosyncd falls back to polling without inotify",
        )
    instances, watches = inotify_in_use()
    need = repo_count + 1
    detail = (
        f"convosyncd needs {need} watch(es) and 1 instance; your processes use {watches} of "
        f"max_user_watches {max_watches} and {instances} of max_user_instances {max_instances}"
    )
    if watches + need > max_watches:
        return failed(
            name,
            detail,
            "raise the limit: `echo fs.inotify.max_user_watches=524288 | sudo tee "
            "/etc/sysctl.d/60-inotify.conf && sudo sysctl --system`",
        )
    if instances + 1 > max_instances:
        return failed(
            name,
            detail,
            "raise the limit: `echo fs.inotify.max_user_instances=512 | sudo tee "
            "/etc/sysctl.d/60-inotify.conf && sudo sysctl --system`",
        )
    return passed(name, detail)


# -- the service ----------------------------------------------------------------------


def check_service(config: Config) -> Check:
    """The service is installed, its program exists, and it runs."""
    name = "service"
    try:
        manager = service.manager_for()
    except ConvosyncError as error:
        return failed(name, str(error), "start `convosyncd run` with your session")
    status = service.inspect(manager, config.state_dir)
    if not status.installed:
        return failed(name, f"not installed ({status.path})", "run `convosyncd service install`")
    if not status.program_ok:
        return failed(
            name,
            f"{status.path} runs {status.program or 'nothing'}, which does not exist",
            "run `convosyncd service install` again from the convosyncd you use",
        )
    if status.running:
        return passed(name, f"{status.path} installed and running ({status.state})")
    if status.running is False:
        why = f"; last exit {status.last_exit}" if status.last_exit else ""
        if manager == "systemd":
            fix = (
                "`systemctl --user restart convosyncd` "
                "(`journalctl --user -u convosyncd` says why it stopped)"
            )
        else:
            fix = f"`launchctl kickstart {service.launchd_domain()}/{service.LABEL}`"
        return failed(name, f"{status.path} installed but not running ({status.state}{why})", fix)
    if daemon_running(config.state_dir):
        return passed(
            name,
            f"{status.path} installed; {status.manager_problem}, but a `convosyncd run` is running",
        )
    return failed(
        name,
        f"{status.path} installed; {status.manager_problem}, and no `convosyncd run` is running",
        "start it where your user service manager runs: "
        f"`systemctl --user enable --now {service.UNIT_NAME}`",
    )


# -- all of it ----------------------------------------------------------------------------


def run_checks(config_path: Path) -> list[Check]:
    """Every check, in the order a person would fix things."""
    checks = [check_git()]
    config_check, config = check_config(config_path)
    checks.append(config_check)
    if config is None:
        return checks
    key_check, keyring = check_key(config_path)
    checks.append(key_check)
    usable = []
    for repo in config.repos:
        check = check_repo(config, repo)
        checks.append(check)
        if check.ok:
            usable.append(repo)
    with ThreadPoolExecutor(max_workers=8) as pool:
        remote_checks = list(pool.map(lambda repo: check_remote(config, repo), usable))
    checks.extend(remote_checks)
    if keyring is not None:
        checks.extend(check_branch_keys(config, repo, keyring) for repo in usable)
    ssh = [
        (repo, check)
        for repo, check in zip(usable, remote_checks, strict=True)
        if uses_ssh(remote_url(config, repo))
    ]
    checks.append(
        check_ssh_agent(
            [f"{repo.remote} of {repo.path}" for repo, _ in ssh],
            answered=all(check.ok for _, check in ssh),
            timeout=config.notify_timeout,
        )
    )
    checks.append(check_notifications(config))
    checks.append(check_inotify(len(config.repos)))
    checks.append(check_service(config))
    return checks


def all_passed(checks: Iterable[Check]) -> bool:
    return all(check.ok for check in checks)
