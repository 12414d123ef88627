"""Trees computed in memory are byte for byte the trees git itself makes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convosyncd.trees import TREE_MODE, Entry, Tree, object_id
from tests.support.devices import git

NAMES = st.text(alphabet="ab.-_~0Zé", min_size=1, max_size=4)


def fake_oid(seed: str) -> str:
    return hashlib.sha1(seed.encode(), usedforsecurity=False).hexdigest()


def entry(name: str, *, folder: bool = False) -> Entry:
    if folder:
        return Entry(TREE_MODE, "tree", fake_oid(f"tree {name}"), name)
    return Entry("100644", "blob", fake_oid(f"blob {name}"), name)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    git(tmp_path, "init", "--quiet", str(path))
    return path


def git_tree_id(repo: Path, entries: list[Entry]) -> str:
    listing = "".join(f"{e.mode} {e.kind} {e.oid}\t{e.name}\0" for e in entries)
    return git(repo, "mktree", "-z", "--missing", input=listing)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(names=st.dictionaries(NAMES, st.booleans(), max_size=12))
def test_a_tree_has_the_id_git_gives_it(repo: Path, names: dict[str, bool]) -> None:
    entries = [entry(name, folder=folder) for name, folder in names.items()]
    assert Tree.of(entries).oid("sha1") == git_tree_id(repo, entries)


@given(
    names=st.dictionaries(NAMES, st.booleans(), max_size=12),
    added=NAMES,
    folder=st.booleans(),
)
def test_adding_an_entry_is_the_same_as_building_the_tree_anew(
    names: dict[str, bool], added: str, folder: bool
) -> None:
    entries = [entry(name, folder=is_folder) for name, is_folder in names.items()]
    new = entry(added, folder=folder)
    changed = Tree.of(entries).with_entry(new)
    expected = Tree.of([*(e for e in entries if e.name != added), new])
    assert changed.entries == expected.entries
    assert changed.body() == expected.body()
    assert changed.find(added) == new


def test_a_file_replaces_a_folder_of_the_same_name_and_back() -> None:
    tree = Tree.of([entry("a", folder=True), entry("a.b"), entry("a-b")])
    as_file = tree.with_entry(entry("a"))
    assert [e.name for e in as_file.entries] == ["a", "a-b", "a.b"]
    assert as_file.find("a") == entry("a")
    assert as_file.with_entry(entry("a", folder=True)).body() == tree.body()


def test_a_name_held_twice_by_a_hand_made_tree_is_replaced_once_and_for_all() -> None:
    twice = Tree([entry("a"), entry("a")], [b"a", b"a"], None)
    changed = twice.with_entry(entry("a", folder=True))
    assert changed.entries == (entry("a", folder=True),)


def test_object_ids_match_git(repo: Path) -> None:
    data = "### Current Task\nÜnïcode and a NUL-free body\n"
    assert object_id("blob", data.encode(), "sha1") == git(
        repo, "hash-object", "--stdin", input=data
    )
    assert Tree.of([]).oid("sha1") == git(repo, "mktree", input="")
