"""Sealed files: what opens, what does not, and how a reader tells them apart."""

from __future__ import annotations

import pytest

from convosyncd.keys import Keyring, SyncKey
from convosyncd.seal import (
    NONCE_BYTES,
    open_forget,
    open_handoff,
    parse_header,
    seal_forget,
    seal_handoff,
)

MINE = SyncKey.from_bytes(bytes(range(32)))
THEIRS = SyncKey.from_bytes(bytes(range(100, 132)))
PATH = "handoffs/desktop/2026-11/20261123T224535.123Z-0123456789abcdef.sealed"
CONTENT = b"---\ndevice: desktop\n---\n### Current Task\nthe favourite pizza is Margherita\n"


def test_a_sealed_handoff_opens_under_its_key_only() -> None:
    data = seal_handoff(MINE, PATH, CONTENT)
    assert b"pizza" not in data and b"desktop\n" not in data
    assert data.startswith(f"convosyncd-handoff/2 {MINE.key_id}\n".encode())
    opened = open_handoff(Keyring(MINE), PATH, data)
    assert opened.verdict == "verified" and opened.content == CONTENT
    assert open_handoff(Keyring(THEIRS), PATH, data).verdict == "foreign"
    assert open_handoff(None, PATH, data).verdict == "foreign"
    # An old key of the keyring still opens it.
    assert open_handoff(Keyring(THEIRS, (MINE,)), PATH, data).verdict == "verified"


def test_every_file_gets_a_fresh_nonce() -> None:
    first, second = seal_handoff(MINE, PATH, CONTENT), seal_handoff(MINE, PATH, CONTENT)
    header = len(f"convosyncd-handoff/2 {MINE.key_id}\n")
    assert first[header : header + NONCE_BYTES] != second[header : header + NONCE_BYTES]


def test_a_file_moved_to_another_device_folder_does_not_open() -> None:
    data = seal_handoff(MINE, PATH, CONTENT)
    moved = PATH.replace("/desktop/", "/laptop/")
    assert open_handoff(Keyring(MINE), moved, data).verdict == "forged"


@pytest.mark.parametrize("where", ["header", "nonce", "body", "tag"])
def test_any_change_to_a_sealed_file_is_caught(where: str) -> None:
    data = bytearray(seal_handoff(MINE, PATH, CONTENT))
    header = data.index(b"\n") + 1
    position = {
        "header": header - 2,
        "nonce": header + 1,
        "body": header + NONCE_BYTES + 3,
        "tag": len(data) - 1,
    }[where]
    data[position] ^= 0x01
    assert open_handoff(Keyring(MINE), PATH, bytes(data)).verdict in (
        "forged",
        "foreign",
        "damaged",
    )
    assert open_handoff(Keyring(MINE), PATH, bytes(data)).content is None


def test_a_header_naming_the_key_in_front_of_garbage_is_forged() -> None:
    header = f"convosyncd-handoff/2 {MINE.key_id}\n".encode()
    assert open_handoff(Keyring(MINE), PATH, header).verdict == "forged"
    assert open_handoff(Keyring(MINE), PATH, header + b"x" * 200).verdict == "forged"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"---\ndevice: desktop\n---\nplain text\n",
        b"convosyncd-handoff/3 0123456789abcdef\n" + b"x" * 40,
        b"convosyncd-handoff/2 0123\n" + b"x" * 40,
        b"convosyncd-handoff/2 0123456789ABCDEF\n" + b"x" * 40,
        b"convosyncd-handoff/2 0123456789abcdef" + b"x" * 400,
        b"\x00" * 64,
    ],
)
def test_what_is_not_a_sealed_file_is_damaged(data: bytes) -> None:
    assert open_handoff(Keyring(MINE), PATH, data).verdict == "damaged"


def test_headers_are_strict() -> None:
    assert parse_header(f"convosyncd-forget/2 {MINE.key_id} purge\n".encode()) is not None
    assert parse_header(f"convosyncd-handoff/2 {MINE.key_id} purge\n".encode()) is None
    assert parse_header(f"convosyncd-forget/2 {MINE.key_id} other\n".encode()) is None


FORGET_PATH = "handoffs/desktop/forgotten/20261201T000000.000Z-00112233445566ff.forget"


def test_a_forget_record_lists_its_paths_and_opens_under_its_key() -> None:
    data = seal_forget(MINE, FORGET_PATH, [PATH, PATH], purge=True)
    record = open_forget(Keyring(MINE), FORGET_PATH, data)
    assert record.verdict == "verified" and record.purge and record.paths == (PATH,)
    foreign = open_forget(Keyring(THEIRS), FORGET_PATH, data)
    assert foreign.verdict == "foreign" and foreign.key_id == MINE.key_id
    assert foreign.paths == (PATH,), "another person's devices can respect it"


def test_a_forged_or_moved_forget_record_takes_nothing_back() -> None:
    data = seal_forget(MINE, FORGET_PATH, [PATH], purge=False)
    moved = FORGET_PATH.replace("/desktop/", "/laptop/")
    assert open_forget(Keyring(MINE), moved, data).paths == ()
    tampered = data.replace(b"desktop/2026-11", b"laptop/2026-11!")
    assert open_forget(Keyring(MINE), FORGET_PATH, tampered).verdict == "forged"
    # Someone without the key writes a record under the person's key id: ignored.
    header = f"convosyncd-forget/2 {MINE.key_id}\n".encode()
    fake = header + PATH.encode() + b"\n\n" + b"\x00" * 28
    assert open_forget(Keyring(MINE), FORGET_PATH, fake).verdict == "forged"
    assert open_forget(Keyring(MINE), FORGET_PATH, fake).paths == ()
