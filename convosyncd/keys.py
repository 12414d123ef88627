"""The sync key: one secret per person that seals every handoff, and its pairing code.

The key is 32 random bytes, shared by all of a person's devices and used for all their
repos. It lives in ``sync-key`` in the config file's folder, a file only its owner may
read or write; one that others can read is refused with the fix, as ssh refuses a
private key. The file holds a keyring: the ``current`` key seals, every key opens, so
importing a new key never makes what was readable unreadable.

From each key HKDF-SHA256 derives the seal key, the name key (the HMAC of the digests in
file names) and the key id, a short public name of the key. The pairing code is the key
in base32 with a checksum, so a typo is refused before anything is written. The format
is specified in ``docs/format.md``; the key never appears in a log, an error message or
the output of any command but ``key show``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from convosyncd.atomic import write_atomically
from convosyncd.errors import ConvosyncError, UsageError

KEY_FILE_NAME = "sync-key"
KEY_BYTES = 32
CODE_PREFIX = "cs2-"
_CHECKSUM_BYTES = 4
_CHECKSUM_LABEL = b"convosyncd pairing code"
_SALT = b"convosyncd"
_HEADER = (
    "# convosyncd sync key: it opens every handoff you publish. Keep it private.\n"
    "# `convosyncd key show` prints it for your other devices; never paste it anywhere else.\n"
)


class SyncKeyError(ConvosyncError):
    """The sync key is missing, unreadable or not private; the message says what to do."""


def _derive(key: bytes, info: str, length: int) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=length, salt=_SALT, info=info.encode("ascii")
    ).derive(key)


@dataclass(frozen=True)
class SyncKey:
    """One sync key and what is derived from it. Its ``repr`` never shows the secret."""

    secret: bytes = field(repr=False)
    seal_key: bytes = field(repr=False, compare=False)
    name_key: bytes = field(repr=False, compare=False)
    key_id: str

    @classmethod
    def from_bytes(cls, secret: bytes) -> SyncKey:
        if len(secret) != KEY_BYTES:
            raise ValueError(f"a sync key is {KEY_BYTES} bytes, not {len(secret)}")
        return cls(
            secret=secret,
            seal_key=_derive(secret, "convosyncd/2 seal", 32),
            name_key=_derive(secret, "convosyncd/2 name", 32),
            key_id=_derive(secret, "convosyncd/2 key id", 8).hex(),
        )

    @classmethod
    def generate(cls) -> SyncKey:
        return cls.from_bytes(os.urandom(KEY_BYTES))

    def digest(self, device: str, data: bytes) -> str:
        """The keyed digest in a handoff's file name: 16 hex characters."""
        mac = hmac.new(self.name_key, device.encode("utf-8") + b"\0" + data, hashlib.sha256)
        return mac.hexdigest()[:16]

    def pairing_code(self) -> str:
        """``cs2-xxxx-xxxx-...``: the key and a checksum, for typing on another device."""
        raw = base64.b32encode(self.secret + _checksum(self.secret)).decode("ascii")
        text = raw.rstrip("=").lower()
        return CODE_PREFIX + "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def _checksum(secret: bytes) -> bytes:
    return hashlib.sha256(_CHECKSUM_LABEL + secret).digest()[:_CHECKSUM_BYTES]


def parse_pairing_code(text: str) -> SyncKey:
    """The key a pairing code holds; :class:`UsageError` for anything but a valid code.

    Case, spaces and dashes do not matter. The message never repeats the code.
    """
    cleaned = "".join(text.split()).replace("-", "").lower()
    prefix = CODE_PREFIX.rstrip("-")
    if not cleaned.startswith(prefix):
        raise UsageError(
            "that is not a convosyncd pairing code (it starts with cs2-): copy the last line "
            "`convosyncd key show` prints on a device that has the key"
        )
    body = cleaned[len(prefix) :].upper()
    expected = -(-(KEY_BYTES + _CHECKSUM_BYTES) * 8 // 5)
    if len(body) != expected:
        raise UsageError(
            f"the pairing code has {len(body)} characters after cs2- where {expected} were "
            "expected: copy it again, whole, from `convosyncd key show`"
        )
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except ValueError:
        raise UsageError(
            "the pairing code holds characters that cannot be in one (only a-z and 2-7): "
            "copy it again from `convosyncd key show`"
        ) from None
    secret, checksum = raw[:KEY_BYTES], raw[KEY_BYTES:]
    if not hmac.compare_digest(checksum, _checksum(secret)):
        raise UsageError(
            "the pairing code has a typo (its checksum does not match); nothing was changed: "
            "copy it again from `convosyncd key show`"
        )
    return SyncKey.from_bytes(secret)


@dataclass(frozen=True)
class Keyring:
    """The keys of one person on this device: ``current`` seals, all of them open."""

    current: SyncKey
    old: tuple[SyncKey, ...] = ()

    @property
    def keys(self) -> tuple[SyncKey, ...]:
        return (self.current, *self.old)

    def by_id(self, key_id: str) -> SyncKey | None:
        return next((key for key in self.keys if key.key_id == key_id), None)

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(key.key_id for key in self.keys)

    def with_current(self, key: SyncKey) -> Keyring:
        """This keyring with ``key`` sealing from now on; the previous keys still open."""
        if key == self.current:
            return self
        kept = [self.current, *self.old]
        return Keyring(key, tuple(old for old in kept if old != key))


def key_file(config_path: Path) -> Path:
    """Where the keyring of the config at ``config_path`` lives: beside it."""
    return config_path.parent / KEY_FILE_NAME


def load(path: Path) -> Keyring | None:
    """The keyring at ``path``; None if there is none; :class:`SyncKeyError` if unusable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise SyncKeyError(
            f"cannot read the sync key {path} ({error.strerror}): it must be a plain file "
            "you own; `convosyncd doctor` says more"
        ) from None
    try:
        status = os.fstat(fd)
        _check_private(path, status)
        data = os.read(fd, 64 * 1024)
    finally:
        os.close(fd)
    return _parse(path, data)


def _check_private(path: Path, status: os.stat_result) -> None:
    if not stat.S_ISREG(status.st_mode):
        raise SyncKeyError(f"the sync key {path} is not a plain file: move it away")
    if hasattr(os, "getuid") and status.st_uid != os.getuid():
        raise SyncKeyError(
            f"the sync key {path} belongs to another user (uid {status.st_uid}): it must be "
            "yours alone; move it away and import the key again"
        )
    if status.st_mode & 0o077:
        raise SyncKeyError(
            f"the sync key {path} can be read or changed by others "
            f"(permissions {stat.S_IMODE(status.st_mode):o}), so it is not used: "
            f"run `chmod 600 {path}`"
        )


def _parse(path: Path, data: bytes) -> Keyring:
    current: SyncKey | None = None
    old: list[SyncKey] = []
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        text = "\0"
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        kind, _, code = line.partition(" ")
        try:
            key = parse_pairing_code(code)
        except UsageError:
            kind = "?"
        if kind == "current" and current is None:
            current = key
        elif kind == "old":
            old.append(key)
        else:
            raise SyncKeyError(
                f"the sync key {path} is damaged (line {number}); restore it from another "
                "device: `convosyncd key show` there, `convosyncd key import` here"
            )
    if current is None:
        raise SyncKeyError(
            f"the sync key {path} holds no current key; restore it from another device: "
            "`convosyncd key show` there, `convosyncd key import` here"
        )
    return Keyring(current, tuple(old))


def save(path: Path, keyring: Keyring) -> None:
    """Write ``keyring`` to ``path`` atomically, readable by its owner only."""
    lines = [_HEADER, f"current {keyring.current.pairing_code()}\n"]
    lines += [f"old {key.pairing_code()}\n" for key in keyring.old]
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(path.parent, stat.S_IMODE(path.parent.stat().st_mode) & ~0o077)
    write_atomically(path, "".join(lines).encode("ascii"), mode=0o600, keep_mode=False)


def ensure(path: Path) -> tuple[Keyring, bool]:
    """The keyring at ``path``, created with a new key if there is none; True if created."""
    existing = load(path)
    if existing is not None:
        return existing, False
    keyring = Keyring(SyncKey.generate())
    save(path, keyring)
    return keyring, True


def require(path: Path) -> Keyring:
    """The keyring at ``path``; :class:`SyncKeyError` with what to do if there is none."""
    keyring = load(path)
    if keyring is None:
        raise SyncKeyError(
            f"this device has no sync key ({path}), so it can neither seal nor open "
            "handoffs: run `convosyncd key show` on a device that has one and "
            "`convosyncd key import` here (or `convosyncd add` to start with a new key)"
        )
    return keyring


class KeySource:
    """The keyring file of one config, read again whenever it changes (a ``key import``
    while the daemon runs takes effect at once)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int, int] | None = None
        self._keyring: Keyring | None = None

    def get(self) -> Keyring | None:
        """The keyring, or None if there is none; :class:`SyncKeyError` if unusable."""
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._keyring = None, None
            return None
        except OSError:
            return load(self.path)  # let load say what is wrong
        stamp = (status.st_ino, status.st_size, status.st_mtime_ns, status.st_mode)
        if stamp != self._stamp:
            self._keyring = load(self.path)
            self._stamp = stamp
        return self._keyring

    def require(self) -> Keyring:
        """The keyring; :class:`SyncKeyError` with what to do if there is none."""
        keyring = self.get()
        if keyring is None:
            return require(self.path)
        return keyring
