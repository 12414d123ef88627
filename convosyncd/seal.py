"""Sealed files: a handoff or a forget record that only the person's devices can open.

Each file starts with one clear header line naming the format and the key id, so a
device tells "sealed with a key I do not hold" from "damaged" without guessing. A
handoff's content is ChaCha20-Poly1305 (PyCA ``cryptography``) with a fresh random
nonce; the header and the file's path on the branch are the associated data, so a file
moved to another path (another device's folder) or given another header does not open.
A forget record lists paths in the clear and carries the same kind of tag over them.
The format is specified in ``docs/format.md``. Nothing here does I/O.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from convosyncd.keys import Keyring, SyncKey

HANDOFF_FORMAT = b"convosyncd-handoff/2"
FORGET_FORMAT = b"convosyncd-forget/2"
PURGE_FLAG = b"purge"
NONCE_BYTES = 12
TAG_BYTES = 16
_HEADER_LIMIT = 128
_KEY_ID_LENGTH = 16
_HEX = frozenset(b"0123456789abcdef")

Verdict = Literal["verified", "foreign", "forged", "damaged"]
"""verified: opens under the keyring; foreign: sealed under a key it lacks; forged: names
one of its keys but does not open; damaged: not a sealed file of this format at all."""


@dataclass(frozen=True)
class Header:
    """A sealed file's clear first line."""

    format: bytes
    key_id: str
    purge: bool
    line: bytes

    @property
    def size(self) -> int:
        return len(self.line)


def parse_header(data: bytes) -> Header | None:
    """The header of ``data``, or None if it does not start with a valid one."""
    end = data.find(b"\n", 0, _HEADER_LIMIT)
    if end < 0:
        return None
    line = data[: end + 1]
    parts = data[:end].split(b" ")
    if len(parts) not in (2, 3) or parts[0] not in (HANDOFF_FORMAT, FORGET_FORMAT):
        return None
    key_id = parts[1]
    if len(key_id) != _KEY_ID_LENGTH or not set(key_id) <= _HEX:
        return None
    purge = len(parts) == 3
    if purge and (parts[0] != FORGET_FORMAT or parts[2] != PURGE_FLAG):
        return None
    return Header(parts[0], key_id.decode("ascii"), purge, line)


def _aad(header: bytes, path: str, extra: bytes = b"") -> bytes:
    return header + extra + b"\0" + path.encode("utf-8")


def seal_handoff(key: SyncKey, path: str, content: bytes) -> bytes:
    """The file stored at ``path``: header, nonce, ``content`` sealed."""
    header = HANDOFF_FORMAT + b" " + key.key_id.encode("ascii") + b"\n"
    nonce = os.urandom(NONCE_BYTES)
    sealed = ChaCha20Poly1305(key.seal_key).encrypt(nonce, content, _aad(header, path))
    return header + nonce + sealed


@dataclass(frozen=True)
class Opened:
    """What reading one sealed handoff gave: a verdict, and the content if verified."""

    verdict: Verdict
    key_id: str | None = None
    content: bytes | None = None


def open_handoff(keyring: Keyring | None, path: str, data: bytes) -> Opened:
    """Open the handoff ``data`` stored at ``path`` with whichever key it names."""
    header = parse_header(data)
    if header is None or header.format != HANDOFF_FORMAT:
        return Opened("damaged")
    key = keyring.by_id(header.key_id) if keyring is not None else None
    if key is None:
        return Opened("foreign", header.key_id)
    body = data[header.size :]
    if len(body) < NONCE_BYTES + TAG_BYTES:
        return Opened("forged", header.key_id)
    nonce, sealed = body[:NONCE_BYTES], body[NONCE_BYTES:]
    try:
        content = ChaCha20Poly1305(key.seal_key).decrypt(nonce, sealed, _aad(header.line, path))
    except InvalidTag:
        return Opened("forged", header.key_id)
    return Opened("verified", header.key_id, content)


@dataclass(frozen=True)
class ForgetRecord:
    """A forget record as read: its verdict, key id, whether it purged, and its paths."""

    verdict: Verdict
    key_id: str | None
    purge: bool
    paths: tuple[str, ...]


def seal_forget(key: SyncKey, path: str, paths: list[str], *, purge: bool) -> bytes:
    """A forget record stored at ``path`` taking back ``paths``."""
    flag = b" " + PURGE_FLAG if purge else b""
    header = FORGET_FORMAT + b" " + key.key_id.encode("ascii") + flag + b"\n"
    listing = b"".join(item.encode("utf-8") + b"\n" for item in sorted(set(paths))) + b"\n"
    nonce = os.urandom(NONCE_BYTES)
    tag = ChaCha20Poly1305(key.seal_key).encrypt(nonce, b"", _aad(header, path, listing))
    return header + listing + nonce + tag


def open_forget(keyring: Keyring | None, path: str, data: bytes) -> ForgetRecord:
    """Read the forget record ``data`` stored at ``path``; its paths are returned even
    when it is foreign (the caller decides what a foreign record may do)."""
    header = parse_header(data)
    if header is None or header.format != FORGET_FORMAT:
        return ForgetRecord("damaged", None, False, ())
    end = data.find(b"\n\n", header.size - 1)
    if end < 0:
        return ForgetRecord("damaged", header.key_id, header.purge, ())
    listing = data[header.size : end + 2] if end >= header.size else b"\n"
    try:
        paths = tuple(line for line in listing.decode("utf-8").split("\n") if line)
    except UnicodeDecodeError:
        return ForgetRecord("damaged", header.key_id, header.purge, ())
    tail = data[header.size + len(listing) :]
    key = keyring.by_id(header.key_id) if keyring is not None else None
    if key is None:
        return ForgetRecord("foreign", header.key_id, header.purge, paths)
    if len(tail) != NONCE_BYTES + TAG_BYTES:
        return ForgetRecord("forged", header.key_id, header.purge, ())
    try:
        ChaCha20Poly1305(key.seal_key).decrypt(
            tail[:NONCE_BYTES], tail[NONCE_BYTES:], _aad(header.line, path, listing)
        )
    except InvalidTag:
        return ForgetRecord("forged", header.key_id, header.purge, ())
    return ForgetRecord("verified", header.key_id, header.purge, paths)
