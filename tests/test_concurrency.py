"""One repo's stages running at once, as the daemon's threads run them: nothing breaks.

Publish, poll, push, refresh and the session-start hook's reading share one repo's
sync branch object and catalog (and their caches) in the daemon. Here they run
concurrently on real git for a few seconds, with another device pushing meanwhile and
Python switching threads as often as it can, and then every handoff written must be on
the remote exactly once, and no thread may have met an exception.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from convosyncd import config as configs
from convosyncd.commands.resume import others_latest
from convosyncd.errors import ConvosyncError
from convosyncd.gitstore import _CACHE_SIZE
from convosyncd.notify import Notifier
from convosyncd.sync import RepoSync
from convosyncd.trees import Entry
from tests.stress import draft_with_marker, markers_on
from tests.support.devices import Device, make_device

SECONDS = 4.0


def engine(device: Device) -> RepoSync:
    config = configs.load(device.config)
    return RepoSync(config, config.repos[0], Notifier(enabled=False, timeout=1))


@pytest.fixture
def busy_switching() -> Iterator[None]:
    """Let Python switch threads every few microseconds: races show up in seconds."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


def test_publish_poll_push_refresh_and_the_hook_at_once(
    tmp_path: Path, remote: Path, busy_switching: None, caplog: pytest.LogCaptureFixture
) -> None:
    desktop = make_device(tmp_path, remote, "desktop")
    laptop = make_device(tmp_path, remote, "laptop")
    sync, other = engine(desktop), engine(laptop)
    config = configs.load(desktop.config)
    stop = threading.Event()
    failures: list[BaseException] = []
    written: list[str] = []

    def loop(step: Callable[[int], object]) -> Callable[[], None]:
        def run() -> None:
            number = 0
            while not stop.is_set():
                try:
                    step(number)
                except BaseException as error:  # every exception counts here
                    failures.append(error)
                    stop.set()
                number += 1

        return run

    def publish_desktop(number: int) -> None:
        if not desktop.draft.exists():
            marker = f"desktop-{number}"
            desktop.write_draft(draft_with_marker(marker))
            written.append(marker)
        sync.publish(require_settled=False)

    def publish_laptop(number: int) -> None:
        marker = f"laptop-{number}"
        laptop.write_draft(draft_with_marker(marker))
        written.append(marker)
        result = other.cycle(require_settled=False)
        assert result.error is None or "kept moving" in result.error, result.error
        time.sleep(0.05)

    def push_desktop(number: int) -> None:
        del number
        try:
            sync.push()
        except ConvosyncError as error:
            # The laptop pushes back to back: losing every race of a push's attempts is
            # the retryable outcome the daemon waits out, not a fault.
            if "kept moving" not in str(error):
                raise

    def read_as_the_hook(number: int) -> None:
        del number
        others_latest(config, config.repos[0])

    steps: dict[str, Callable[[int], object]] = {
        "publish": publish_desktop,
        "poll": lambda number: sync.pull(),
        "push": push_desktop,
        "refresh": lambda number: sync.refresh(),
        "hook": read_as_the_hook,
        "laptop": publish_laptop,
    }
    threads = [threading.Thread(target=loop(step), name=name) for name, step in steps.items()]
    for thread in threads:
        thread.start()
    stop.wait(SECONDS)
    stop.set()
    for thread in threads:
        thread.join(60)
    assert not failures, repr(failures[0])
    assert "unexpected" not in caplog.text
    # Settle: whatever waits is published and pushed, both ways.
    for _ in range(3):
        assert sync.cycle(require_settled=False).ok
        assert other.cycle(require_settled=False).ok
    found = markers_on(remote)
    assert {marker: found[marker] for marker in written} == dict.fromkeys(written, 1)
    assert sum(marker.startswith("desktop") for marker in written) > 3


def test_the_tree_cache_is_safe_for_threads_that_evict_each_others_entries(
    tmp_path: Path, remote: Path, busy_switching: None
) -> None:
    desktop = make_device(tmp_path, remote, "desktop")
    branch = engine(desktop).branch
    blob = branch.write_blob(b"x\n")
    trees = [
        branch.write_tree([Entry("100644", "blob", blob, f"file-{number}")])
        for number in range(_CACHE_SIZE * 3)
    ]
    failures: list[BaseException] = []
    deadline = time.monotonic() + 3.0

    def read(offset: int) -> None:
        # Mostly hits on a cache that other threads keep evicting from.
        mine = trees[offset : offset + _CACHE_SIZE // 2]
        while time.monotonic() < deadline and not failures:
            for oid in mine:
                assert branch.listing(oid).entries[0].oid == blob

    def flood(offset: int) -> None:
        # Many trees listed at once: the cache evicts in a burst.
        while time.monotonic() < deadline and not failures:
            branch.listings(trees[offset:] + trees[:offset])
            branch.listings(reversed(trees))

    def guarded(work: Callable[[int], None], offset: int) -> Callable[[], None]:
        def run() -> None:
            try:
                work(offset)
            except BaseException as error:
                failures.append(error)

        return run

    threads = [threading.Thread(target=guarded(read, n * 11)) for n in range(6)]
    threads += [threading.Thread(target=guarded(flood, n * 5)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, repr(failures[0])
