"""Merging two sides of the sync branch: the union of their files, decided without git.

Each handoff is its own file in its own device's folder, so two histories normally
merge as the plain union of their trees. The rare collision (the same path holding
different content on each side, which only a hand-made or corrupt remote produces) is
resolved the same way on every device, keeping both files: the one with the smaller
object id keeps the name, the other is kept beside it with the id in its name. Merging
A into B and B into A therefore gives the same tree, and nothing is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from convosyncd.trees import Entry


@dataclass(frozen=True)
class Recurse:
    """Both sides hold a folder of this name with different contents: merge inside it."""

    name: str
    ours: str
    theirs: str


MergeStep = Entry | Recurse


def union(ours: Sequence[Entry], theirs: Sequence[Entry]) -> list[MergeStep]:
    """The entries of the merged tree, with the folders that need merging themselves."""
    by_name_ours = {entry.name: entry for entry in ours}
    by_name_theirs = {entry.name: entry for entry in theirs}
    steps: list[MergeStep] = []
    taken: set[str] = set(by_name_ours) | set(by_name_theirs)
    for name in sorted(taken):
        mine = by_name_ours.get(name)
        other = by_name_theirs.get(name)
        if mine is None or other is None:
            steps.append(mine or other)  # type: ignore[arg-type]
        elif mine.oid == other.oid and mine.mode == other.mode:
            steps.append(mine)
        elif mine.is_tree and other.is_tree:
            steps.append(Recurse(name, mine.oid, other.oid))
        else:
            steps.extend(_keep_both(mine, other, taken))
    return steps


def _keep_both(first: Entry, second: Entry, taken: set[str]) -> list[Entry]:
    # A folder always keeps its name; between two files the smaller id does.
    if first.is_tree != second.is_tree:
        keeper, other = (first, second) if first.is_tree else (second, first)
    else:
        keeper, other = sorted((first, second), key=lambda entry: entry.oid)
    stem, dot, suffix = other.name.rpartition(".")
    if not dot or other.is_tree:
        stem, suffix = other.name, ""
    renamed = f"{stem}~{other.oid[:8]}" + (f".{suffix}" if suffix else "")
    while renamed in taken:
        renamed = f"{renamed}~"
    taken.add(renamed)
    return [keeper, Entry(other.mode, other.kind, other.oid, renamed)]
