"""The union merge, decided without git: nothing lost, same answer on every device."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from convosyncd.trees import Entry
from convosyncd.union import Recurse, union


def blob(name: str, oid: str) -> Entry:
    return Entry("100644", "blob", oid.ljust(40, "0"), name)


def tree(name: str, oid: str) -> Entry:
    return Entry("040000", "tree", oid.ljust(40, "0"), name)


def test_disjoint_files_are_united() -> None:
    merged = union([blob("a.md", "1")], [blob("b.md", "2")])
    assert merged == [blob("a.md", "1"), blob("b.md", "2")]


def test_same_entry_on_both_sides_is_kept_once() -> None:
    assert union([blob("a.md", "1")], [blob("a.md", "1")]) == [blob("a.md", "1")]


def test_folders_present_on_both_sides_are_merged_inside() -> None:
    merged = union([tree("desktop", "1"), tree("laptop", "2")], [tree("desktop", "3")])
    assert merged == [
        Recurse("desktop", "1".ljust(40, "0"), "3".ljust(40, "0")),
        tree("laptop", "2"),
    ]


def test_a_collision_keeps_both_files_the_same_way_on_both_sides() -> None:
    ours = [blob("x.md", "aa")]
    theirs = [blob("x.md", "bb")]
    assert union(ours, theirs) == union(theirs, ours)
    names = {entry.name for entry in union(ours, theirs) if isinstance(entry, Entry)}
    assert names == {"x.md", "x~bb000000.md"}


def test_a_file_against_a_folder_keeps_both() -> None:
    merged = union([blob("x", "aa")], [tree("x", "bb")])
    assert merged == union([tree("x", "bb")], [blob("x", "aa")])
    assert {(e.name, e.kind) for e in merged if isinstance(e, Entry)} == {
        ("x", "tree"),
        ("x~aa000000", "blob"),
    }


names = st.sampled_from(["a.md", "b.md", "c.md", "d"])
oids = st.sampled_from(["1", "2", "3"])
entries = st.lists(st.builds(blob, names, oids), unique_by=lambda entry: entry.name, max_size=4)


@given(entries, entries)
def test_union_is_symmetric_and_loses_no_object(ours: list[Entry], theirs: list[Entry]) -> None:
    merged = union(ours, theirs)
    assert merged == union(theirs, ours)
    kept = {(entry.oid, entry.kind) for entry in merged if isinstance(entry, Entry)}
    assert {(entry.oid, entry.kind) for entry in ours + theirs} <= kept
    names_out = [entry.name for entry in merged if isinstance(entry, Entry)]
    assert len(names_out) == len(set(names_out))
