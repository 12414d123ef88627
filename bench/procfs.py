"""What a running process costs, read from ``/proc`` (Linux only).

Resident memory from ``VmRSS``; CPU time from ``/proc/<pid>/stat``, the process's own
(``utime + stime``) apart from that of the children it waited for (``cutime + cstime``:
every git command the daemon runs, and what those started); wakeups as context switches
summed over the threads in ``/proc/<pid>/task``; inotify watches as the ``inotify wd:``
lines in ``/proc/<pid>/fdinfo``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcessSample:
    """One look at a process."""

    at: float
    rss: int
    threads: int
    cpu_self: float
    cpu_children: float
    switches: dict[int, tuple[int, int]] = field(default_factory=dict)
    inotify_watches: int = 0
    inotify_instances: int = 0

    @property
    def cpu_total(self) -> float:
        return self.cpu_self + self.cpu_children


def _status(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        key, _, value = line.partition(":")
        values[key] = value.strip()
    return values


def cpu_times(pid: int) -> tuple[float, float]:
    """``(own, children)`` CPU seconds of ``pid``."""
    text = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    fields = text.rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return (utime + stime) / TICKS, (cutime + cstime) / TICKS


def rss_bytes(pid: int) -> int:
    value = _status(Path(f"/proc/{pid}/status")).get("VmRSS", "0 kB").split()[0]
    return int(value) * 1024


def thread_switches(pid: int) -> dict[int, tuple[int, int]]:
    """``{thread id: (voluntary, involuntary)}`` context switches of every live thread."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = _status(task / "status")
        except OSError:
            continue  # the thread ended meanwhile
        found[int(task.name)] = (
            int(status.get("voluntary_ctxt_switches", "0")),
            int(status.get("nonvoluntary_ctxt_switches", "0")),
        )
    return found


def inotify_usage(pid: int) -> tuple[int, int]:
    """``(watches, instances)`` of ``pid``'s inotify file descriptors."""
    watches = instances = 0
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            text = info.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        count = sum(1 for line in text.splitlines() if line.startswith("inotify wd:"))
        if count or _is_inotify(pid, info.name):
            instances += 1
            watches += count
    return watches, instances


def _is_inotify(pid: int, fd: str) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify"
    except OSError:
        return False


def sample(pid: int, *, detailed: bool = True) -> ProcessSample:
    """Look at ``pid`` now; ``detailed`` adds the per-thread and inotify counts."""
    own, children = cpu_times(pid)
    switches = thread_switches(pid) if detailed else {}
    watches, instances = inotify_usage(pid) if detailed else (0, 0)
    return ProcessSample(
        at=time.monotonic(),
        rss=rss_bytes(pid),
        threads=len(list(Path(f"/proc/{pid}/task").iterdir())),
        cpu_self=own,
        cpu_children=children,
        switches=switches,
        inotify_watches=watches,
        inotify_instances=instances,
    )


def switches_between(before: ProcessSample, after: ProcessSample) -> int:
    """Context switches (voluntary and not) between two samples, over all threads.

    A thread seen only in ``after`` counts from zero; one that ended in between is lost,
    so the figure is a lower bound when threads come and go.
    """
    total = 0
    for tid, (voluntary, involuntary) in after.switches.items():
        was = before.switches.get(tid, (0, 0))
        total += max(0, voluntary - was[0]) + max(0, involuntary - was[1])
    return total
