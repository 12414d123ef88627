"""Git tree objects held in memory: git's order, git's bytes, git's object ids.

A :class:`Tree` is a value: its entries in the order git stores them, with each entry's
sort key and its bytes in the object kept beside it. Adding or replacing one entry is a
binary search and a list insertion, and the object's bytes are a join, so rewriting a
folder of ten thousand handoffs costs little more than rewriting one of ten. Since the
bytes and the object id are known before git sees the tree, nested folders can be
written in one git call, and git's answer can be checked against the id expected.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

TREE_MODE = "040000"


@dataclass(frozen=True)
class Entry:
    """One line of a git tree: mode, type, object id and name."""

    mode: str
    kind: str
    oid: str
    name: str

    @property
    def is_tree(self) -> bool:
        return self.kind == "tree"


def encode_name(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def sort_key(entry: Entry) -> bytes:
    """git's order: by name, bytewise, a folder compared as if its name ended in '/'."""
    return encode_name(entry.name) + (b"/" if entry.is_tree else b"")


def record(entry: Entry) -> bytes:
    """The entry as it is stored in a tree object (``mode name NUL raw-id``)."""
    # Trees store a folder's mode as "40000"; ls-tree shows it zero-padded.
    mode = entry.mode.lstrip("0").encode()
    return mode + b" " + encode_name(entry.name) + b"\0" + bytes.fromhex(entry.oid)


def object_id(kind: str, data: bytes, algorithm: str) -> str:
    """The id git gives an object of ``kind`` holding ``data`` (``sha1`` or ``sha256``)."""
    digest = hashlib.new(algorithm)
    digest.update(f"{kind} {len(data)}\0".encode())
    digest.update(data)
    return digest.hexdigest()


def algorithm_of(oid: str) -> str:
    """The hash algorithm of a repository, told by the length of one of its ids."""
    return "sha256" if len(oid) == 64 else "sha1"


class Tree:
    """A tree's entries in git's order, with their sort keys and stored bytes."""

    __slots__ = ("_records", "entries", "keys")

    def __init__(
        self, entries: Sequence[Entry], keys: Sequence[bytes], records: Sequence[bytes] | None
    ) -> None:
        self.entries: tuple[Entry, ...] = tuple(entries)
        self.keys: tuple[bytes, ...] = tuple(keys)
        self._records: tuple[bytes, ...] | None = tuple(records) if records is not None else None

    @classmethod
    def of(cls, entries: Iterable[Entry]) -> Tree:
        """A tree of ``entries``, put in git's order."""
        ordered = sorted(entries, key=sort_key)
        return cls(ordered, [sort_key(entry) for entry in ordered], None)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def records(self) -> tuple[bytes, ...]:
        if self._records is None:
            self._records = tuple(record(entry) for entry in self.entries)
        return self._records

    def body(self) -> bytes:
        """The tree object's content."""
        return b"".join(self.records)

    def oid(self, algorithm: str) -> str:
        return object_id("tree", self.body(), algorithm)

    def _index(self, key: bytes) -> int | None:
        index = bisect_left(self.keys, key)
        return index if index < len(self.keys) and self.keys[index] == key else None

    def find(self, name: str) -> Entry | None:
        """The entry called ``name``, file or folder."""
        encoded = encode_name(name)
        for key in (encoded, encoded + b"/"):
            index = self._index(key)
            if index is not None:
                return self.entries[index]
        return None

    @classmethod
    def parse(cls, body: bytes, id_bytes: int) -> Tree:
        """A tree from its object's raw bytes (ids of ``id_bytes`` bytes each).

        Raises ValueError for bytes that are no tree. The records are kept as read, so
        the parsed tree's bytes, and so its id, are exactly the object's.
        """
        entries: list[Entry] = []
        records: list[bytes] = []
        position = 0
        while position < len(body):
            space = body.find(b" ", position)
            nul = body.find(b"\0", space + 1)
            end = nul + 1 + id_bytes
            if space < 0 or nul < 0 or end > len(body):
                raise ValueError("truncated tree object")
            mode = body[position:space].decode("ascii")
            if not mode.isdigit() or len(mode) > 6:
                raise ValueError(f"invalid mode {mode!r} in a tree object")
            name = body[space + 1 : nul].decode("utf-8", "surrogateescape")
            kind = "tree" if mode == "40000" else "commit" if mode == "160000" else "blob"
            entries.append(Entry(mode.zfill(6), kind, body[nul + 1 : end].hex(), name))
            records.append(body[position:end])
            position = end
        return cls(entries, [sort_key(entry) for entry in entries], records)

    def without(self, name: str) -> Tree:
        """This tree without the entries called ``name`` (file or folder)."""
        encoded = encode_name(name)
        drop = {encoded, encoded + b"/"}
        kept = [i for i, key in enumerate(self.keys) if key not in drop]
        if len(kept) == len(self.keys):
            return self
        records = self.records
        return Tree(
            [self.entries[i] for i in kept],
            [self.keys[i] for i in kept],
            [records[i] for i in kept],
        )

    def with_entry(self, entry: Entry) -> Tree:
        """This tree with ``entry`` added, replacing whatever had its name.

        Every entry of that name goes, should a hand-made tree from a remote hold two.
        """
        entries, keys, records = list(self.entries), list(self.keys), list(self.records)
        encoded = encode_name(entry.name)
        for key in (encoded, encoded + b"/"):
            index = bisect_left(keys, key)
            while index < len(keys) and keys[index] == key:
                del entries[index], keys[index], records[index]
        key = sort_key(entry)
        index = bisect_left(keys, key)
        entries.insert(index, entry)
        keys.insert(index, key)
        records.insert(index, record(entry))
        return Tree(entries, keys, records)
