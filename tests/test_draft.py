"""Taking a draft in: refusals that say why and leave the file, reads that never block."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from convosyncd import draft as drafts
from convosyncd.draft import DraftRefused

LIMIT = 1000


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "session-handoff-draft.md"


def refused(path: Path, match: str) -> None:
    with pytest.raises(DraftRefused, match=match):
        drafts.read(path, LIMIT)
    assert os.path.lexists(path), "a refused draft must stay where it was"


def test_absent_draft_is_none(path: Path) -> None:
    assert drafts.read(path, LIMIT) is None


def test_a_regular_utf8_draft_is_read(path: Path) -> None:
    path.write_text("### Current Task\nÜbersetzung ✅\n", encoding="utf-8")
    draft = drafts.read(path, LIMIT)
    assert draft is not None and draft.text == "### Current Task\nÜbersetzung ✅\n"


def test_size_limit(path: Path) -> None:
    path.write_bytes(b"x" * (LIMIT + 1))
    refused(path, r"1001 bytes, over max_draft_bytes \(1000\): shorten the handoff")
    path.write_bytes(b"x" * LIMIT)
    assert drafts.read(path, LIMIT) is not None


def test_not_utf8(path: Path) -> None:
    path.write_bytes(b"caf\xe9\n")
    refused(path, r"not UTF-8 text \(invalid byte at offset 3\)")


def test_nul_bytes(path: Path) -> None:
    path.write_bytes(b"abc\x00def")
    refused(path, r"contains NUL bytes \(offset 3\)")


@pytest.mark.parametrize("content", [b"", b"  \n\t\n"])
def test_empty_or_whitespace(path: Path, content: bytes) -> None:
    path.write_bytes(content)
    refused(path, "is empty")


@pytest.mark.parametrize("target", ["/etc/passwd", "/etc", "/nonexistent/dangling"])
def test_symlinks_are_refused_whatever_they_point_at(path: Path, target: str) -> None:
    path.symlink_to(target)
    refused(path, rf"is a symbolic link \(to {target}\)")


def test_a_folder(path: Path) -> None:
    path.mkdir()
    refused(path, "is a folder, not a regular file")


def test_a_fifo_never_blocks(path: Path) -> None:
    os.mkfifo(path)
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            drafts.read(path, LIMIT)
        except BaseException as error:
            outcome.append(error)
        else:
            outcome.append(None)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(5)
    assert not worker.is_alive(), "reading a FIFO blocked"
    assert isinstance(outcome[0], DraftRefused) and "FIFO" in str(outcome[0])


def test_a_socket(path: Path, tmp_path: Path) -> None:
    short = Path("/tmp") / f"cvs-{os.getpid()}.sock"
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(short))
        refused(short, "is a socket")
    finally:
        server.close()
        short.unlink()


def test_remove_only_if_unchanged(path: Path) -> None:
    path.write_text("one\n", encoding="utf-8")
    draft = drafts.read(path, LIMIT)
    assert draft is not None
    path.write_text("two, written meanwhile\n", encoding="utf-8")
    os.utime(path, ns=(draft.signature.mtime_ns + 5_000_000, draft.signature.mtime_ns + 5_000_000))
    assert drafts.remove_if_unchanged(draft) is False
    assert path.read_text(encoding="utf-8") == "two, written meanwhile\n"
    again = drafts.read(path, LIMIT)
    assert again is not None and drafts.remove_if_unchanged(again) is True
    assert not path.exists()


def test_a_draft_in_a_folder_that_is_a_symbolic_link_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "session-handoff-draft.md").write_text("### Current Task\nSecret\n", "utf-8")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / ".convosync").symlink_to(outside)
    with pytest.raises(DraftRefused, match=r"\.convosync is a symbolic link \(to .*outside\)"):
        drafts.read(repo / ".convosync" / "session-handoff-draft.md", LIMIT)
    (repo / ".convosync").unlink()
    (repo / ".convosync").symlink_to(tmp_path / "nowhere")
    with pytest.raises(DraftRefused, match="is a symbolic link"):
        drafts.read(repo / ".convosync" / "session-handoff-draft.md", LIMIT)
    assert (outside / "session-handoff-draft.md").exists()
