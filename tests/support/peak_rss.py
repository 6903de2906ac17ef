"""Peak memory of a child process tree, as the tests and benchmarks measure it.

Why not ``wait4``'s ``ru_maxrss``: Linux counts in it the parent's peak RSS at
fork time (the child starts on a copy of the parent's memory, and exec keeps
that high-water mark), so a CLI started by a pytest run that reached 450 MiB
"peaks" at 450 MiB. ``VmHWM`` in ``/proc/PID/status`` is the high-water mark
of the process's own memory since its exec; it only grows, so polling it
until the process ends gives its peak.
"""

from __future__ import annotations

import psutil


def high_water_kib(pid: int) -> int:
    """``VmHWM`` of ``pid`` in KiB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def tree(pid: int) -> list[int]:
    """``pid`` and every descendant alive now."""
    try:
        return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except psutil.Error:
        return [pid]


class PeakTracker:
    """Polled while a process runs: the largest ``VmHWM`` of any process of its tree."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._peaks: dict[int, int] = {}

    def sample(self) -> None:
        for p in tree(self.pid):
            self._peaks[p] = max(self._peaks.get(p, 0), high_water_kib(p))

    @property
    def largest_mib(self) -> float:
        return max(self._peaks.values(), default=0) / 1024


__all__ = ["PeakTracker", "high_water_kib", "tree"]
