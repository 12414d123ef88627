"""``convosyncd key show`` and ``convosyncd key import``: pairing a person's devices.

``show`` prints the pairing code of this device's sync key alone on the last line of
standard output, with one line above it saying what to do with it, so that
``ssh desktop convosyncd key show | convosyncd key import`` works as well as copying by
hand. ``import`` reads a code from standard input only: a code given on the command line
would land in the shell's history and in every process listing. On a terminal it asks
without echo. A mistyped code is refused by its checksum before the key file is touched;
a different key becomes the one that seals, and the previous ones are kept for opening,
so nothing readable becomes unreadable. Neither ever prints the key but ``show``'s last
line; messages name the key by its key id.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from convosyncd import keys
from convosyncd.errors import UsageError
from convosyncd.keys import Keyring, SyncKeyError

MAX_INPUT = 64 * 1024
"""Bytes of standard input read at most: a code is 70 characters, and a pipe that
brings more (``key show`` with its instruction line, a pasted mail) is still small."""

INSTRUCTION = (
    "Run `convosyncd key import` on each of your other devices and paste this code when "
    "it asks (it opens every handoff you publish: paste it nowhere else):"
)
PROMPT = "Pairing code (the last line of `convosyncd key show`; it is not shown as you type): "


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "key", help="pair your devices: show or import the pairing code of your sync key"
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser(
        "show",
        help="print this device's pairing code (alone on the last line), for `key import` "
        "on your other devices",
    )
    show.set_defaults(handler=run_show)
    imported = actions.add_parser(
        "import",
        help="read a pairing code from standard input and use that key from now on",
        description=(
            "Reads the pairing code from standard input: paste it when asked (it is not "
            "shown as you type), or pipe `convosyncd key show` into it. It never takes the "
            "code as an argument, since a command line lands in your shell history and is "
            "visible to every process on this machine. A different key already here is "
            "kept for reading, so handoffs sealed with it stay readable."
        ),
    )
    # Taken only to refuse it without repeating it (argparse's own error would print it).
    imported.add_argument("given", nargs="*", help=argparse.SUPPRESS)
    imported.set_defaults(handler=run_import)


def run_show(args: argparse.Namespace) -> int:
    path = keys.key_file(args.config)
    keyring = keys.load(path)
    if keyring is None:
        raise UsageError(
            f"this device has no sync key yet ({path}): `convosyncd key import` here pairs "
            "it with a device that has one (run `convosyncd key show` there), or "
            "`convosyncd add PATH` makes a new one"
        )
    print(INSTRUCTION)
    print(keyring.current.pairing_code())
    return 0


def run_import(args: argparse.Namespace) -> int:
    if args.given:
        raise UsageError(
            "`convosyncd key import` takes no arguments: a code on the command line lands in "
            "your shell history and in process listings, so nothing was imported. Run it "
            "alone and paste the code when it asks (and delete that line from your shell "
            "history)"
        )
    if sys.stdin is None:  # started with standard input closed
        raise UsageError(
            "standard input is closed, so there is no pairing code to read: pipe the code "
            "in, or run `convosyncd key import` at a terminal and paste it"
        )
    key = keys.parse_pairing_code(read_code(sys.stdin))
    path = keys.key_file(args.config)
    existing = _existing(path)
    if existing is not None and existing.current == key:
        print(f"This device already has this sync key (key id {key.key_id}); nothing changed.")
        return 0
    keyring = Keyring(key) if existing is None else existing.with_current(key)
    _save(path, keyring)
    print(f"Imported the sync key with key id {key.key_id} into {path}.")
    if existing is not None:
        kept = ", ".join(old.key_id for old in keyring.old)
        print(
            f"It seals your handoffs from now on. The previous key (key id {kept}) is kept "
            "for reading: handoffs sealed with it stay readable here."
        )
    print("A running daemon uses it at once; `convosyncd doctor` checks the pairing.")
    return 0


def read_code(stream: TextIO) -> str:
    """The pairing code in ``stream``: asked for without echo on a terminal, else the
    last line starting ``cs2-`` and what follows it (a code a mail broke over lines).

    Anything else is returned whole, for :func:`keys.parse_pairing_code` to refuse.
    """
    try:
        text = _ask_without_echo(stream) if stream.isatty() else stream.read(MAX_INPUT)
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise UsageError(
            f"cannot read a pairing code from standard input ({error}): pipe it in, or run "
            "`convosyncd key import` at a terminal and paste it"
        ) from None
    if not text.strip():
        raise UsageError(
            "no pairing code was given: run `convosyncd key show` on a device that has the "
            "key, then `convosyncd key import` here and paste its last line"
        )
    lines = text.splitlines()
    starts = [
        index
        for index, line in enumerate(lines)
        if line.strip().lower().startswith(keys.CODE_PREFIX)
    ]
    return "".join(lines[starts[-1] :]) if starts else text


def _ask_without_echo(stream: TextIO) -> str:
    """One line from the terminal ``stream`` with echo off, as ``getpass`` does, but on
    standard input itself (``getpass`` reads ``/dev/tty``, which may be another
    terminal than the one standard input is)."""
    try:
        import termios
    except ImportError:  # not a POSIX system: getpass knows its console
        import getpass

        return getpass.getpass(PROMPT)
    fd = stream.fileno()
    before = termios.tcgetattr(fd)
    quiet = list(before)
    quiet[3] &= ~termios.ECHO  # local modes: no echo, but still a line at a time
    # Echo goes off before the prompt shows: what is pasted after it is never echoed.
    termios.tcsetattr(fd, termios.TCSAFLUSH, quiet)
    try:
        sys.stderr.write(PROMPT)
        sys.stderr.flush()
        line = stream.readline(MAX_INPUT)
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, before)
        sys.stderr.write("\n")
        sys.stderr.flush()
    return line


def _existing(path: Path) -> Keyring | None:
    """The keyring already at ``path``. One that others can read, or that is not a plain
    file of this user's, is refused with its fix (a key others could read may have
    leaked: the person decides what to do). One whose content is damaged is moved
    aside, since importing is how such a file is repaired."""
    try:
        return keys.load(path)
    except SyncKeyError:
        if not _private_file(path):
            raise
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    try:
        os.replace(path, aside)
    except OSError as error:
        raise SyncKeyError(
            f"the sync key {path} is damaged and could not be moved aside "
            f"({error.strerror}); nothing was changed: move it away yourself, then run "
            "`convosyncd key import` again"
        ) from None
    print(f"The sync key file {path} was damaged; it is kept as {aside.name}.")
    return None


def _private_file(path: Path) -> bool:
    """Whether ``path`` is a plain file of this user's that nobody else may read."""
    try:
        status = path.lstat()
    except OSError:
        return False
    return (
        stat.S_ISREG(status.st_mode) and status.st_uid == os.getuid() and not status.st_mode & 0o077
    )


def _save(path: Path, keyring: Keyring) -> None:
    try:
        keys.save(path, keyring)
    except OSError as error:
        raise SyncKeyError(
            f"cannot write the sync key {path} ({error.strerror or error}); nothing was "
            "changed: check that its folder is yours and writable, then import again"
        ) from None
