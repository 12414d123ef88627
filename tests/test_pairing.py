"""Pairing as a person does it: ``key show`` on one device, ``key import`` on another.

Real devices on a real bare remote, the CLI as subprocesses: codes travel through an
OS pipe between two processes, and through a pseudo-terminal where a person pastes
them. The key never appears anywhere but ``key show``'s last line and the key file.
"""

from __future__ import annotations

import base64
import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from convosyncd import keys
from convosyncd.keys import SyncKey
from tests.support.dbus_session import RecordingNotificationServer, env_for_bus
from tests.support.devices import (
    OTHER_PERSON_KEY,
    PERSON_KEY,
    DaemonProcess,
    Device,
    cli_env,
    git,
    handoff_text,
    make_device,
    wait_until,
)


def command(device: Device, *args: str) -> list[str]:
    return [sys.executable, "-m", "convosyncd", "--config", str(device.config), *args]


def pair(source: Device, target: Device) -> subprocess.CompletedProcess[str]:
    """``convosyncd key show`` on ``source`` | ``convosyncd key import`` on ``target``:
    two processes joined by an OS pipe, as ``ssh desktop convosyncd key show | ...``."""
    show = subprocess.Popen(
        command(source, "key", "show"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=cli_env(),
    )
    assert show.stdout is not None
    try:
        imported = subprocess.run(
            command(target, "key", "import"),
            stdin=show.stdout,
            capture_output=True,
            text=True,
            timeout=60,
            env=cli_env(),
            check=False,
        )
    finally:
        show.stdout.close()
        assert show.wait(timeout=60) == 0
    return imported


def feed(device: Device, text: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``convosyncd key import`` (or ``args``) with ``text`` on standard input."""
    return subprocess.run(
        command(device, *(args or ("key", "import"))),
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
        check=False,
    )


def on_terminal(argv: list[str], answer: str, prompt: bytes) -> tuple[int, str]:
    """Run ``argv`` on a pseudo-terminal; type ``answer`` once ``prompt`` shows. Returns
    the exit code and everything the terminal showed (echo included)."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, env=cli_env(), start_new_session=True
    )
    os.close(slave)
    shown = bytearray()

    def read(timeout: float) -> bool:
        """False once the terminal is closed (every process on it has exited)."""
        ready, _w, _x = select.select([master], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the other side is gone
            return False
        shown.extend(chunk)
        return bool(chunk)

    try:
        deadline = time.monotonic() + 30
        while prompt not in shown:
            assert time.monotonic() < deadline, f"no prompt; the terminal showed {shown!r}"
            assert read(0.1), f"closed before the prompt: {shown!r}"
        os.write(master, answer.encode() + b"\n")
        while read(0.1):
            assert time.monotonic() < deadline, f"still running; the terminal showed {shown!r}"
        return process.wait(timeout=30), shown.decode("utf-8", "replace")
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
            process.wait()


def key_of(device: Device) -> keys.Keyring | None:
    return keys.load(device.key_file)


def secrets_of(key: SyncKey) -> list[bytes]:
    """Every form in which the key could leak: the code (with and without dashes, either
    case), the raw bytes, hex and base64, and the keys derived from it."""
    code = key.pairing_code()
    body = code.replace("-", "")
    forms = [code, code.upper(), body, body.upper(), body[3:], body[3:].upper()]
    forms += [key.secret.hex(), key.secret.hex().upper(), base64.b64encode(key.secret).decode()]
    forms += [key.seal_key.hex(), key.name_key.hex()]
    return [form.encode() for form in forms] + [key.secret, key.seal_key, key.name_key]


def leaks(data: bytes, key: SyncKey) -> list[bytes]:
    return [form for form in secrets_of(key) if form in data]


@pytest.fixture
def alpha(tmp_path: Path, remote: Path) -> Device:
    return make_device(tmp_path, remote, "alpha")


@pytest.fixture
def bravo(tmp_path: Path, remote: Path) -> Device:
    """A new device: registered, but no sync key yet."""
    return make_device(tmp_path, remote, "bravo", key=None)


# -- key show ---------------------------------------------------------------------------


def test_key_show_prints_the_code_alone_on_the_last_line(alpha: Device, bravo: Device) -> None:
    result = alpha.cli("key", "show")
    assert result.returncode == 0, result.stderr
    *above, last = result.stdout.splitlines()
    assert last == PERSON_KEY.pairing_code()
    assert len(above) == 1 and "`convosyncd key import`" in above[0]
    assert result.stderr == ""

    missing = bravo.cli("key", "show")
    assert missing.returncode == 2 and missing.stdout == ""
    assert f"this device has no sync key yet ({bravo.key_file})" in missing.stderr
    assert "`convosyncd key import`" in missing.stderr and "`convosyncd add" in missing.stderr
    assert not bravo.key_file.exists()


# -- key import -------------------------------------------------------------------------


def test_pairing_through_a_pipe_then_a_handoff_travels(alpha: Device, bravo: Device) -> None:
    result = pair(alpha, bravo)
    assert result.returncode == 0, result.stderr
    assert f"Imported the sync key with key id {PERSON_KEY.key_id}" in result.stdout
    assert leaks((result.stdout + result.stderr).encode(), PERSON_KEY) == []
    keyring = key_of(bravo)
    assert keyring is not None and keyring.current == PERSON_KEY and keyring.old == ()
    assert bravo.key_file.stat().st_mode & 0o777 == 0o600

    alpha.write_draft(handoff_text("Pairing works", fact="The pizza is Margherita"))
    assert alpha.cli("sync").returncode == 0
    synced = bravo.cli("sync")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert "1 handoff(s) arrived" in synced.stdout
    text = bravo.materialized.read_text(encoding="utf-8")
    assert "## Handoff from alpha" in text and "The pizza is Margherita" in text


def test_pairing_on_a_terminal_never_echoes_the_code(alpha: Device, bravo: Device) -> None:
    # The harness sees what a terminal echoes: a plain input() shows what is typed.
    code, shown = on_terminal(
        [sys.executable, "-c", "import sys; sys.stderr.write('ask: '); input()"],
        "typed-in-plain-sight",
        b"ask: ",
    )
    assert code == 0 and "typed-in-plain-sight" in shown

    code, shown = on_terminal(
        command(bravo, "key", "import"), PERSON_KEY.pairing_code(), b"Pairing code"
    )
    assert code == 0, shown
    assert "it is not shown as you type" in shown
    assert f"Imported the sync key with key id {PERSON_KEY.key_id}" in shown
    assert leaks(shown.encode(), PERSON_KEY) == []
    keyring = key_of(bravo)
    assert keyring is not None and keyring.current == PERSON_KEY


def test_the_code_is_never_taken_from_the_command_line(bravo: Device) -> None:
    code = PERSON_KEY.pairing_code()
    result = bravo.cli("key", "import", code)
    assert result.returncode == 2
    assert "takes no arguments" in result.stderr and "shell history" in result.stderr
    assert leaks((result.stdout + result.stderr).encode(), PERSON_KEY) == []
    assert not bravo.key_file.exists()
    helped = bravo.cli("key", "import", "--help")
    assert "never takes the code as an argument" in " ".join(helped.stdout.split())


def typo(code: str) -> str:
    position = code.index("-", 6) + 1
    return code[:position] + ("b" if code[position] != "b" else "c") + code[position + 1 :]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (typo(PERSON_KEY.pairing_code()), "typo"),
        (PERSON_KEY.pairing_code()[:-3], "characters after cs2-"),
        ("my key is hunter2", "not a convosyncd pairing code"),
        ("", "no pairing code was given"),
    ],
)
def test_a_mistyped_code_is_refused_and_nothing_changes(
    tmp_path: Path, remote: Path, text: str, why: str
) -> None:
    carol = make_device(tmp_path, remote, "carol", key=OTHER_PERSON_KEY)
    before = carol.key_file.read_bytes(), carol.key_file.stat().st_mtime_ns
    result = feed(carol, text + "\n")
    assert result.returncode == 2, result.stdout + result.stderr
    assert why in result.stderr and result.stdout == ""
    assert (carol.key_file.read_bytes(), carol.key_file.stat().st_mtime_ns) == before
    assert leaks((result.stdout + result.stderr).encode(), PERSON_KEY) == []
    if text:
        assert text.strip() not in result.stderr, "the message never repeats the code"


def test_importing_the_key_already_there_changes_nothing(alpha: Device) -> None:
    before = alpha.key_file.read_bytes(), alpha.key_file.stat().st_mtime_ns
    result = feed(alpha, PERSON_KEY.pairing_code())
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"This device already has this sync key (key id {PERSON_KEY.key_id}); nothing changed.\n"
    )
    assert (alpha.key_file.read_bytes(), alpha.key_file.stat().st_mtime_ns) == before


def test_importing_another_key_keeps_the_old_one_for_reading(
    tmp_path: Path, remote: Path, alpha: Device
) -> None:
    # Before pairing, carol and dave share a key of their own; dave publishes under it.
    carol = make_device(tmp_path, remote, "carol", key=OTHER_PERSON_KEY)
    dave = make_device(tmp_path, remote, "dave", key=OTHER_PERSON_KEY)
    dave.write_draft(handoff_text("Before pairing", fact="sealed with the old key"))
    alpha.write_draft(handoff_text("From alpha", fact="sealed with the person's key"))
    assert dave.cli("sync").returncode == 0 and alpha.cli("sync").returncode == 0

    result = pair(alpha, carol)
    assert result.returncode == 0, result.stderr
    assert f"key id {PERSON_KEY.key_id}" in result.stdout
    assert f"The previous key (key id {OTHER_PERSON_KEY.key_id}) is kept" in result.stdout
    assert "handoffs sealed with it stay readable here" in result.stdout
    assert leaks(result.stdout.encode(), OTHER_PERSON_KEY) == []
    keyring = key_of(carol)
    assert keyring is not None
    assert keyring.current == PERSON_KEY and keyring.old == (OTHER_PERSON_KEY,)

    assert carol.cli("sync").returncode == 0
    text = carol.materialized.read_text(encoding="utf-8")
    assert "sealed with the old key" in text and "sealed with the person's key" in text
    # What carol publishes from now on, alpha reads.
    carol.write_draft(handoff_text("After pairing", fact="sealed with the imported key"))
    assert carol.cli("sync").returncode == 0 and alpha.cli("sync").returncode == 0
    assert "sealed with the imported key" in alpha.materialized.read_text(encoding="utf-8")


def test_a_damaged_key_file_is_replaced_by_an_import_and_kept_aside(bravo: Device) -> None:
    bravo.key_file.write_text("current cs2-this-is-not-a-key\n", encoding="utf-8")
    bravo.key_file.chmod(0o600)
    assert bravo.cli("key", "show").returncode == 1
    result = feed(bravo, PERSON_KEY.pairing_code())
    assert result.returncode == 0, result.stderr
    assert "was damaged; it is kept as sync-key.damaged-" in result.stdout
    [aside] = bravo.key_file.parent.glob("sync-key.damaged-*")
    assert aside.read_text(encoding="utf-8") == "current cs2-this-is-not-a-key\n"
    keyring = key_of(bravo)
    assert keyring is not None and keyring.current == PERSON_KEY


def test_a_running_daemon_opens_what_the_imported_key_seals_without_a_restart(
    alpha: Device, bravo: Device
) -> None:
    alpha.write_draft(handoff_text("Published before pairing", fact="first fact"))
    assert alpha.cli("sync").returncode == 0
    daemon = bravo.start()
    try:
        # A device registered without a key makes one at start, and reads nothing of alpha's.
        daemon.wait_for_log("this device had no sync key, so one was made")
        daemon.wait_for_log("do not open under your sync key")
        assert "first fact" not in bravo.materialized.read_text(encoding="utf-8")

        assert pair(alpha, bravo).returncode == 0
        wait_until(
            lambda: "first fact" in bravo.materialized.read_text(encoding="utf-8"),
            20,
            "the handoff already on the branch to open under the imported key",
        )
        alpha.write_draft(handoff_text("Published after pairing", fact="second fact"))
        assert alpha.cli("sync").returncode == 0
        wait_until(
            lambda: "second fact" in bravo.materialized.read_text(encoding="utf-8"),
            20,
            "a new handoff to arrive",
        )
        # And what bravo's daemon seals now, alpha opens.
        bravo.write_draft(handoff_text("From bravo", fact="third fact"))
        wait_until(lambda: not bravo.draft.exists(), 20, "bravo to publish")
        wait_until(
            lambda: (
                alpha.cli("sync").returncode == 0
                and "third fact" in alpha.materialized.read_text(encoding="utf-8")
            ),
            20,
            "bravo's handoff to reach alpha",
        )
    finally:
        assert daemon.stop() == 0
    assert leaks(daemon.log().encode(), PERSON_KEY) == []


# -- making the key ---------------------------------------------------------------------


def test_add_makes_the_key_once_and_says_how_to_pair(tmp_path: Path, remote: Path) -> None:
    erin = make_device(tmp_path, remote, "erin", register=False, key=None)
    first = erin.cli("add", str(erin.repo))
    assert first.returncode == 0, first.stderr
    keyring = key_of(erin)
    assert keyring is not None and erin.key_file.stat().st_mode & 0o777 == 0o600
    assert f"Made a new sync key (key id {keyring.current.key_id})" in first.stdout
    assert "  here:   convosyncd key show" in first.stdout
    assert "  there:  convosyncd key import" in first.stdout
    assert leaks(first.stdout.encode(), keyring.current) == []

    other = tmp_path / "erin" / "other"
    git(tmp_path, "clone", "--quiet", str(remote), str(other))
    again = erin.cli("add", str(other))
    assert again.returncode == 0, again.stderr
    assert "sync key" not in again.stdout and "key show" not in again.stdout
    assert key_of(erin) == keyring


def test_sync_and_the_daemon_make_a_key_when_repos_are_registered_without_one(
    tmp_path: Path,
    remote: Path,
    session_bus: str,
    notification_server: RecordingNotificationServer,
) -> None:
    # A config from convosyncd 0.1: repos registered, no key. Publishing nothing is worse
    # than sealing with a key no other device holds yet (pairing later opens it).
    old = make_device(tmp_path, remote, "old", key=None)
    old.write_draft(handoff_text("Still published"))
    result = old.cli("sync")
    assert result.returncode == 0, result.stdout + result.stderr
    keyring = key_of(old)
    assert keyring is not None
    assert f"This device had no sync key, so one was made (key id {keyring.current.key_id})" in (
        result.stdout
    )
    assert "published" in result.stdout and not old.draft.exists()

    older = make_device(tmp_path, remote, "older", key=None, notify=True)
    env = env_for_bus(session_bus)
    daemon = older.start(env)
    try:
        line = daemon.wait_for_log(r"this device had no sync key, so one was made[^\n]*")
        assert "`convosyncd key show`" in line.group(0)
        assert "`convosyncd key import`" in line.group(0)
        [note] = notification_server.wait_for(lambda notes: len(notes) >= 1, 10)
        assert note["summary"] == "convosyncd: pair your devices"
        older.write_draft(handoff_text("Published by the daemon"))
        wait_until(lambda: not older.draft.exists(), 20, "the daemon to publish")
    finally:
        assert daemon.stop() == 0
    again = older.start(env)
    try:
        again.wait_for_log("running as device")
    finally:
        assert again.stop() == 0
    assert "no sync key" not in again.log()
    assert len(notification_server.notifications()) == 1, "said once"


# -- a key file others can read ---------------------------------------------------------


def test_a_key_file_others_can_read_is_refused_by_every_command_that_needs_it(
    alpha: Device, bravo: Device
) -> None:
    alpha.key_file.chmod(0o644)
    before = alpha.key_file.read_bytes()
    fix = f"chmod 600 {alpha.key_file}"
    alpha.write_draft(handoff_text("Waits for the fix"))
    outcomes = {
        "key show": alpha.cli("key", "show"),
        "key import": feed(alpha, OTHER_PERSON_KEY.pairing_code()),
        "add": alpha.cli("add", str(alpha.repo)),
        "sync": alpha.cli("sync"),
        "resume": alpha.cli("resume", str(alpha.repo)),
        "hook": alpha.cli("resume", "--hook", str(alpha.repo)),
        "doctor": alpha.cli("doctor"),
    }
    for name, result in outcomes.items():
        said = " ".join((result.stdout + result.stderr).split())
        assert fix in said, f"{name}: {said}"
        assert leaks(said.encode(), PERSON_KEY) == [], name
        if name == "hook":
            assert result.returncode == 0 and result.stdout == "", "the hook never fails"
        else:
            assert result.returncode != 0, name
    assert "✗ sync key:" in outcomes["doctor"].stdout
    assert alpha.draft.exists(), "nothing was published"
    assert alpha.key_file.read_bytes() == before, "nothing was written over it"

    daemon = alpha.start()
    try:
        daemon.wait_for_log("can be read or changed by others")
        wait_until(
            lambda: fix in str(alpha.status()["repos"][0]["last_error"]),
            20,
            "status to show the fix",
        )
    finally:
        assert daemon.stop() == 0
    assert alpha.draft.exists()
    alpha.key_file.chmod(0o600)
    assert alpha.cli("sync").returncode == 0 and not alpha.draft.exists()


# -- the key never leaks ----------------------------------------------------------------


def test_the_key_never_appears_in_any_output_or_file_of_a_whole_session(
    tmp_path: Path, remote: Path
) -> None:
    first = make_device(tmp_path, remote, "first", register=False, key=None)
    second = make_device(tmp_path, remote, "second", key=None)
    said: dict[str, str] = {}

    def run(name: str, result: subprocess.CompletedProcess[str]) -> None:
        said[name] = result.stdout + result.stderr

    run("add", first.cli("add", str(first.repo)))
    shown = first.cli("key", "show")  # the one place the code is printed
    keyring = key_of(first)
    assert keyring is not None and shown.stdout.splitlines()[-1] == keyring.current.pairing_code()
    key = keyring.current
    assert leaks(shown.stdout.encode(), key), "the search finds the code where it is"
    run("key import", pair(first, second))
    run("key import again", feed(second, key.pairing_code()))
    run("key import typo", feed(second, typo(key.pairing_code())))
    run("key import argument", second.cli("key", "import", key.pairing_code()))

    log_path = first.root / "daemon-verbose.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command(first, "-v", "run"),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=cli_env(),
        )
    daemon = DaemonProcess(first, process, log_path)
    try:
        daemon.wait_for_log("running as device")
        first.write_draft(handoff_text("A whole session", fact="nothing secret"))
        wait_until(lambda: not first.draft.exists(), 20, "the daemon to publish")
        run("sync", second.cli("-v", "sync"))
        second.write_draft(handoff_text("And back", fact="still nothing secret"))
        run("sync back", second.cli("-v", "sync"))
        daemon.wait_for_log("handoff from second arrived")
        for device in (first, second):
            run(f"status {device.name}", device.cli("status"))
            run(f"status json {device.name}", device.cli("status", "--json"))
            run(f"resume {device.name}", device.cli("resume", str(device.repo)))
            run(f"hook {device.name}", device.cli("resume", "--hook", str(device.repo)))
            run(f"doctor {device.name}", device.cli("doctor", "--json"))
    finally:
        assert daemon.stop() == 0
    # A crash, through the real command line: a path longer than PATH_MAX.
    crash = second.cli("add", str(tmp_path / ("a" * 5000)))
    assert crash.returncode == 70, crash.stderr[:300]
    run("crash", crash)
    first.key_file.chmod(0o644)
    run("refused", first.cli("sync"))
    first.key_file.chmod(0o600)

    assert "published" in said["sync back"]
    assert json.loads(said["status json second"])["repos"][0]["untrusted"] == {}
    for name, text in said.items():
        assert leaks(text.encode(), key) == [], name
    key_files = {first.key_file, second.key_file}
    files = [path for path in tmp_path.rglob("*") if path.is_file() and path not in key_files]
    assert any(path.name == "crash.log" for path in files)
    assert any(path.name == "daemon-verbose.log" for path in files)
    for path in files:
        assert leaks(path.read_bytes(), key) == [], path
    objects = subprocess.run(
        ["git", "cat-file", "--batch-all-objects", "--batch"],
        cwd=remote,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    assert b"handoff(first)" in objects
    assert leaks(objects, key) == []


def test_import_with_standard_input_closed_is_a_clear_error(tmp_path: Path, remote: Path) -> None:
    device = make_device(tmp_path, remote, "laptop", key=None)
    result = subprocess.run(
        [
            "/bin/sh",
            "-c",
            f"exec {sys.executable} -m convosyncd --config {device.config} key import <&-",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "standard input is closed" in result.stderr
    assert not device.key_file.exists()
