"""The daemon's timers: monotonic time, no overlapping runs, coalescing, clean shutdown.

Real threads and the real monotonic clock; the wall clock is stepped by replacing
``time.time`` in this process (the machine's own clock is not ours to set), and a
scheduler deliberately driven by that stepped wall clock shows what the step would do.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from convosyncd.scheduler import Scheduler
from tests.support.devices import wait_until


class SteppedClock:
    """The real wall clock plus an offset that a test steps."""

    def __init__(self, real: Callable[[], float]) -> None:
        self.real = real
        self.offset = 0.0

    def __call__(self) -> float:
        return self.real() + self.offset

    def step(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def scheduler() -> Iterator[Scheduler]:
    started = Scheduler(4)
    started.start()
    yield started
    started.shutdown(wait=True)


def test_a_job_runs_after_its_delay_and_its_completion_carries_the_result(
    scheduler: Scheduler,
) -> None:
    order: list[str] = []

    def record(name: str) -> str:
        order.append(name)
        return name.upper()

    later = scheduler.schedule("later", record, "later", delay=0.3)
    sooner = scheduler.schedule("sooner", record, "sooner", delay=0.05)
    assert later.wait(5) and sooner.wait(5)
    assert order == ["sooner", "later"]
    assert (sooner.ending, sooner.result) == ("ran", "SOONER")
    assert scheduler.jobs() == [], "a one-off job is forgotten once it ran"


def test_runs_of_one_job_never_overlap_and_a_run_asked_for_meanwhile_comes_after(
    scheduler: Scheduler,
) -> None:
    inside = threading.Event()
    release = threading.Event()
    running = 0
    most = 0
    runs = 0
    lock = threading.Lock()

    def job() -> None:
        nonlocal running, most, runs
        with lock:
            running += 1
            most = max(most, running)
            runs += 1
        inside.set()
        release.wait(10)
        with lock:
            running -= 1

    first = scheduler.schedule("repo", job)
    assert inside.wait(5)
    # Three more requests while the first run is going: one run more, after it.
    asked = [scheduler.schedule("repo", job) for _ in range(3)]
    time.sleep(0.2)
    assert runs == 1 and not any(completion.done() for completion in asked)
    release.set()
    assert first.wait(5)
    for completion in asked:
        assert completion.wait(5) and completion.ending == "ran"
    assert (runs, most) == (2, 1)


def test_replacing_a_job_keeps_its_waiters_and_cancelling_releases_them(
    scheduler: Scheduler,
) -> None:
    ran: list[str] = []
    first = scheduler.schedule("poll", ran.append, "first", delay=30)
    second = scheduler.schedule("poll", ran.append, "second", delay=0.05)
    assert first.wait(5) and second.wait(5)
    assert ran == ["second"], "the replaced schedule never runs; its waiter is told all the same"

    gone = scheduler.schedule("push", ran.append, "never", delay=30)
    scheduler.cancel("push")
    assert gone.wait(1) and gone.ending == "cancelled"
    assert scheduler.due_in("push") is None and "never" not in ran


def test_an_interval_job_late_by_many_periods_runs_once_then_keeps_its_period() -> None:
    offset = [0.0]
    scheduler = Scheduler(2, clock=lambda: time.monotonic() + offset[0])
    scheduler.start()
    runs: list[float] = []
    try:
        scheduler.schedule("round", lambda: runs.append(time.monotonic()), delay=0, every=0.2)
        wait_until(lambda: len(runs) >= 2, 5, "two rounds")
        offset[0] += 60  # 300 periods "missed" at once
        count = len(runs)
        time.sleep(0.5)
        assert len(runs) - count <= 4, "missed periods are not made up"
        wait_until(lambda: len(runs) >= count + 2, 5, "rounds going on")
    finally:
        scheduler.shutdown(wait=True)


def test_a_wall_clock_step_neither_stalls_nor_bunches_the_jobs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wall = SteppedClock(time.time)
    monkeypatch.setattr(time, "time", wall)
    scheduler = Scheduler(2)
    scheduler.start()
    runs: list[float] = []
    try:
        scheduler.schedule("round", lambda: runs.append(time.monotonic()), every=0.1)
        wait_until(lambda: len(runs) >= 3, 5, "three rounds")
        wall.step(-3600)
        count = len(runs)
        wait_until(lambda: len(runs) >= count + 3, 5, "rounds after the clock went back an hour")
        wall.step(+7200)
        count = len(runs)
        time.sleep(0.35)
        assert len(runs) - count <= 5, "no backlog fired when the clock jumped forward"
        wait_until(lambda: len(runs) >= count + 3, 5, "rounds after the clock went forward")
    finally:
        scheduler.shutdown(wait=True)


def test_the_same_step_stalls_a_scheduler_that_runs_on_the_wall_clock() -> None:
    """What the test above guards against (APScheduler 3 schedules on the wall clock)."""
    wall = SteppedClock(time.time)
    scheduler = Scheduler(2, clock=wall)
    scheduler.start()
    runs: list[float] = []
    try:
        scheduler.schedule("round", lambda: runs.append(time.monotonic()), every=0.1)
        wait_until(lambda: len(runs) >= 3, 5, "three rounds")
        wall.step(-3600)
        time.sleep(0.3)  # a round in flight when the clock moved may still end
        count = len(runs)
        time.sleep(1.0)
        assert len(runs) == count, "a wall-clock scheduler waits out the hour"
    finally:
        scheduler.shutdown(wait=True)


def test_inline_jobs_run_in_the_timer_thread_and_a_failing_job_keeps_its_period(
    scheduler: Scheduler,
) -> None:
    def thread() -> str:
        return threading.current_thread().name

    inline = scheduler.schedule("ping", thread, inline=True)
    pooled = scheduler.schedule("work", thread)
    assert inline.wait(5) and pooled.wait(5)
    assert inline.result == "jobs-timer"
    assert pooled.result.startswith("jobs") and pooled.result != "jobs-timer"

    failures = []

    def fail() -> None:
        failures.append(1)
        raise RuntimeError("broken job")

    failed = scheduler.schedule("broken", fail, every=0.05)
    assert failed.wait(5) and failed.ending == "failed"
    wait_until(lambda: len(failures) >= 3, 5, "the failing job to keep running")


def test_shutdown_lets_the_run_in_flight_finish_and_schedules_nothing_more() -> None:
    scheduler = Scheduler(2)
    scheduler.start()
    inside = threading.Event()
    finished = threading.Event()
    followers: list[object] = []

    def slow() -> None:
        inside.set()
        time.sleep(0.3)
        # A job that schedules its successor while the scheduler shuts down.
        followers.append(scheduler.schedule("next", finished.set))
        finished.set()

    scheduler.schedule("slow", slow)
    waiting = scheduler.schedule("later", lambda: None, delay=30)
    assert inside.wait(5)
    scheduler.shutdown(wait=True)
    assert finished.is_set(), "shutdown returned before the run in flight ended"
    assert waiting.done() and waiting.ending == "cancelled"
    (follower,) = followers
    assert follower.ending == "cancelled"  # type: ignore[attr-defined]
    assert scheduler.schedule("after", lambda: None).ending == "cancelled"
