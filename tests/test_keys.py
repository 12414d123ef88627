"""The sync key: its pairing code, its file, and what is derived from it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convosyncd import keys
from convosyncd.errors import UsageError
from convosyncd.keys import Keyring, SyncKey, SyncKeyError, parse_pairing_code

KEY = SyncKey.from_bytes(bytes(range(32)))


@given(st.binary(min_size=32, max_size=32))
def test_a_pairing_code_gives_back_its_key(secret: bytes) -> None:
    key = SyncKey.from_bytes(secret)
    code = key.pairing_code()
    assert code.startswith("cs2-")
    assert parse_pairing_code(code) == key
    # Case, spaces, line breaks and dashes do not matter: people copy codes around.
    assert parse_pairing_code("  " + code.upper().replace("-", " - ") + "\n") == key


def test_a_mistyped_code_is_refused_by_its_checksum() -> None:
    code = KEY.pairing_code()
    position = code.index("-", 6) + 1
    replacement = "b" if code[position] != "b" else "c"
    typo = code[:position] + replacement + code[position + 1 :]
    with pytest.raises(UsageError, match="typo") as caught:
        parse_pairing_code(typo)
    assert typo not in str(caught.value) and code not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "not a convosyncd pairing code"),
        ("AKIAIOSFODNN7EXAMPLE", "not a convosyncd pairing code"),
        ("cs2-abcd", "characters after cs2-"),
        ("cs2-" + "1" * 58, "only a-z and 2-7"),
    ],
)
def test_what_is_not_a_code_is_refused(text: str, why: str) -> None:
    with pytest.raises(UsageError, match=why):
        parse_pairing_code(text)


def test_the_secret_never_shows_in_a_repr() -> None:
    assert KEY.secret.hex() not in repr(KEY) and KEY.pairing_code() not in repr(KEY)
    assert KEY.key_id in repr(KEY)


def test_derived_values_differ_and_name_the_key_without_revealing_it() -> None:
    other = SyncKey.from_bytes(bytes(range(1, 33)))
    assert len({KEY.seal_key, KEY.name_key, KEY.secret}) == 3
    assert len(KEY.key_id) == 16 and KEY.key_id != other.key_id
    assert KEY.key_id not in KEY.secret.hex()
    assert KEY.digest("desktop", b"text") != KEY.digest("laptop", b"text")
    assert KEY.digest("desktop", b"text") != other.digest("desktop", b"text")
    assert KEY.digest("desktop", b"text") == KEY.digest("desktop", b"text")


def test_the_key_file_round_trips_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "sync-key"
    keyring, created = keys.ensure(path)
    assert created and keys.ensure(path) == (keyring, False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.load(path) == keyring
    other = SyncKey.generate()
    keys.save(path, keyring.with_current(other))
    again = keys.load(path)
    assert again is not None and again.current == other and again.old == (keyring.current,)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_others_can_read_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "sync-key"
    keys.save(path, Keyring(KEY))
    path.chmod(mode)
    with pytest.raises(SyncKeyError, match=f"chmod 600 {path}") as caught:
        keys.load(path)
    assert KEY.pairing_code() not in str(caught.value)


def test_saving_makes_a_readable_key_file_private_again(tmp_path: Path) -> None:
    path = tmp_path / "sync-key"
    path.write_text("current nothing\n", encoding="ascii")
    path.chmod(0o644)
    keys.save(path, Keyring(KEY))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_key_file_that_is_a_link_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    keys.save(real, Keyring(KEY))
    link = tmp_path / "sync-key"
    link.symlink_to(real)
    with pytest.raises(SyncKeyError, match="must be a plain file"):
        keys.load(link)


@pytest.mark.parametrize(
    "content",
    [b"current cs2-nonsense\n", b"old " + KEY.pairing_code().encode() + b"\n", b"\xff\xfe", b""],
)
def test_a_damaged_key_file_is_an_error_that_never_repeats_it(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "sync-key"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(SyncKeyError, match="restore it from another device") as caught:
        keys.load(path)
    assert KEY.pairing_code() not in str(caught.value)


def test_a_missing_key_says_how_to_get_one(tmp_path: Path) -> None:
    assert keys.load(tmp_path / "sync-key") is None
    with pytest.raises(SyncKeyError, match="convosyncd key import"):
        keys.require(tmp_path / "sync-key")


def test_the_key_source_reads_the_file_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "sync-key"
    source = keys.KeySource(path)
    assert source.get() is None
    keys.save(path, Keyring(KEY))
    first = source.get()
    assert first is not None and first.current == KEY
    other = SyncKey.generate()
    keys.save(path, first.with_current(other))
    second = source.get()
    assert second is not None and second.current == other and KEY in second.keys
