"""The daemon's timers: jobs run on monotonic time by a small pool of threads.

A job has an id, a function and a due time on the monotonic clock (``time.monotonic``,
which no wall-clock step moves: a clock set back an hour neither stalls the polls nor,
set forward, fires a backlog of them at once). It runs once, or again every ``every``
seconds. The rules the daemon relies on:

* **Runs of one job never overlap.** A job that falls due while its previous run is
  still going runs once more right after that run, however often it fell due
  meanwhile (coalescing), never twice at once and never dropped.
* **Adding a job replaces the one with the same id**, keeping whoever waits for it:
  :meth:`Scheduler.schedule` returns a :class:`Completion` that is set when a run that
  *started after the call* has ended (or the job was cancelled, or the scheduler shut
  down), so a caller can ask "poll this repo now and tell me when it is done".
* An interval job late by several periods runs once, then keeps its period from then
  on; nothing is made up later.
* **Inline jobs** run in the timer thread itself instead of the pool: the service
  watchdog's pings, which must stop when the timer thread wedges and must not wait
  behind a pool busy with slow remotes.
* :meth:`Scheduler.shutdown` lets the runs in flight finish; from its start on, adding
  a job does nothing (a running job may try to schedule its successor), and nothing
  waits on anything a running job needs.

APScheduler 3, used before, computes every due time from the wall clock
(``datetime.now``), so a clock step back paused every job until the clock caught up.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Ending = Literal["ran", "failed", "cancelled"]


class Completion:
    """Set when a run of a job that started after it was made has ended, or never will."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.ending: Ending | None = None
        self.result: Any = None
        """What the job's function returned (None for a job that failed or did not run)."""

    def wait(self, timeout: float | None = None) -> bool:
        """Whether it ended within ``timeout`` seconds."""
        return self._event.wait(timeout)

    def done(self) -> bool:
        return self._event.is_set()

    def _finish(self, ending: Ending, result: Any = None) -> None:
        if not self._event.is_set():
            self.ending = ending
            self.result = result
            self._event.set()


@dataclass(eq=False)
class _Job:
    id: str
    func: Callable[..., Any]
    args: tuple[Any, ...]
    every: float | None
    inline: bool
    due: float | None = None
    """When the next run is due; None while nothing is scheduled."""
    generation: int = 0
    """Bumped whenever ``due`` changes, so that outdated heap entries are skipped."""
    running: bool = False
    again: bool = False
    """It fell due while running: run once more as soon as the run ends."""
    waiting: list[Completion] = field(default_factory=list)
    """Completions for the next run to start."""


class Scheduler:
    """Jobs on a monotonic ``clock``, run in a pool of ``workers`` threads."""

    def __init__(self, workers: int, *, clock: Clock = time.monotonic, name: str = "jobs") -> None:
        self.clock = clock
        self.name = name
        self._workers = workers
        self._condition = threading.Condition(threading.Lock())
        self._jobs: dict[str, _Job] = {}
        self._heap: list[tuple[float, int, str, int]] = []
        self._order = itertools.count()
        self._pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._closing = False

    # -- life cycle -----------------------------------------------------------------

    def start(self) -> None:
        """Start the timer thread and the pool."""
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix=self.name)
        self._thread = threading.Thread(target=self._loop, name=f"{self.name}-timer", daemon=True)
        self._thread.start()

    def shutdown(self, *, wait: bool = True) -> None:
        """Run nothing more; with ``wait``, return once the runs in flight have ended."""
        with self._condition:
            if self._closing:
                return
            self._closing = True
            self._heap.clear()
            waiting = [c for job in self._jobs.values() for c in job.waiting]
            for job in self._jobs.values():
                job.waiting = []
                job.due = None
            self._condition.notify_all()
        for completion in waiting:
            completion._finish("cancelled")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        if self._pool is not None:
            self._pool.shutdown(wait=wait)

    # -- jobs -----------------------------------------------------------------------

    def schedule(
        self,
        job_id: str,
        func: Callable[..., Any],
        *args: Any,
        delay: float = 0.0,
        every: float | None = None,
        inline: bool = False,
    ) -> Completion:
        """Run ``func(*args)`` as job ``job_id`` ``delay`` seconds from now (then every
        ``every`` seconds, if given), replacing that job's previous schedule.

        The returned completion is set once a run that starts after this call has
        ended; right away (``cancelled``) when the scheduler is shutting down.
        """
        completion = Completion()
        with self._condition:
            if self._closing:
                completion._finish("cancelled")
                return completion
            job = self._jobs.get(job_id)
            if job is None:
                job = _Job(job_id, func, args, every, inline)
                self._jobs[job_id] = job
            else:
                job.func, job.args, job.every, job.inline = func, args, every, inline
            job.waiting.append(completion)
            self._set_due(job, self.clock() + max(0.0, delay))
        return completion

    def cancel(self, job_id: str) -> None:
        """Forget job ``job_id``'s schedule (a run in flight finishes)."""
        with self._condition:
            job = self._jobs.get(job_id)
            if job is None:
                return
            job.due = None
            job.generation += 1
            job.again = False
            waiting, job.waiting = job.waiting, []
            if not job.running:
                del self._jobs[job_id]
        for completion in waiting:
            completion._finish("cancelled")

    def due_in(self, job_id: str) -> float | None:
        """Seconds until job ``job_id`` is next due (0 if overdue); None if not scheduled."""
        with self._condition:
            job = self._jobs.get(job_id)
            if job is None or job.due is None:
                return None
            return max(0.0, job.due - self.clock())

    def jobs(self) -> list[str]:
        """The ids of the jobs scheduled or running."""
        with self._condition:
            return sorted(self._jobs)

    # -- inside ---------------------------------------------------------------------

    def _set_due(self, job: _Job, due: float) -> None:
        """Called with the condition held."""
        job.due = due
        job.generation += 1
        heapq.heappush(self._heap, (due, next(self._order), job.id, job.generation))
        self._condition.notify()

    def _loop(self) -> None:
        while True:
            inline: list[tuple[_Job, list[Completion]]] = []
            with self._condition:
                while not self._closing:
                    now = self.clock()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    timeout = self._heap[0][0] - now if self._heap else None
                    self._condition.wait(timeout)
                if self._closing:
                    return
                now = self.clock()
                while self._heap and self._heap[0][0] <= now:
                    _due, _order, job_id, generation = heapq.heappop(self._heap)
                    job = self._jobs.get(job_id)
                    if job is None or job.generation != generation or job.due is None:
                        continue  # replaced or cancelled since
                    started = self._start(job, now)
                    if started is not None and job.inline:
                        inline.append((job, started))
                    elif started is not None:
                        assert self._pool is not None
                        self._pool.submit(self._run, job, started)
            for job, started in inline:
                self._run(job, started)

    def _start(self, job: _Job, now: float) -> list[Completion] | None:
        """Mark ``job`` running and schedule its next period; the completions of this
        run, or None if it must wait for the run in flight. Called with the condition."""
        if job.every is not None:
            following = job.due + job.every if job.due is not None else now + job.every
            # Late by a period or more: one run now, then the period from now.
            self._set_due(job, following if following > now else now + job.every)
        else:
            job.due = None
            job.generation += 1
        if job.running:
            job.again = True
            return None
        job.running = True
        started, job.waiting = job.waiting, []
        return started

    def _run(self, job: _Job, started: list[Completion]) -> None:
        ending: Ending = "ran"
        result: Any = None
        try:
            result = job.func(*job.args)
        except Exception:
            ending = "failed"
            log.exception("job %s failed", job.id)
        finally:
            with self._condition:
                job.running = False
                if job.again and not self._closing:
                    # Whatever was scheduled meanwhile, the run it asked for comes now;
                    # the job's own code schedules its successor as it always does.
                    job.again = False
                    self._set_due(job, self.clock())
                elif job.due is None and not job.waiting and self._jobs.get(job.id) is job:
                    del self._jobs[job.id]
            for completion in started:
                completion._finish(ending, result)
