"""Replacing files atomically: permissions kept, and a work tree never created anew."""

from __future__ import annotations

from pathlib import Path

import pytest

from convosyncd.atomic import write_atomically


def test_a_file_is_replaced_keeping_its_permissions(tmp_path: Path) -> None:
    target = tmp_path / "made" / "here" / "file.txt"
    write_atomically(target, b"one", durable=False)
    target.chmod(0o600)
    write_atomically(target, b"two")
    assert target.read_bytes() == b"two" and target.stat().st_mode & 0o777 == 0o600
    assert [path.name for path in target.parent.iterdir()] == ["file.txt"]


def test_a_folder_that_has_gone_is_not_made_again(tmp_path: Path) -> None:
    repo = tmp_path / "app"
    with pytest.raises(FileNotFoundError):
        write_atomically(repo / ".convosync" / "session-handoff.md", b"x", make_parents=False)
    assert not repo.exists()
