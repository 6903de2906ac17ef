"""A controller clock for tests: real time plus an offset read from a file.

The e2e tests move the controller across cron slots by writing a number of
seconds, and the whole second of real time it takes effect, into a file
(:meth:`support.kube.operator_process.Operator.set_time`).
:class:`FileOffsetClock` is a :class:`backupctl.controller.runtime.Clock`:
``now()`` is real UTC time plus that offset; the file is read once at start
and then by :meth:`FileOffsetClock.watch` (every :data:`POLL` seconds, never
on the hot path), which calls ``on_change`` whenever the offset moves, so the
controller's daemons wake up and plan at the new time.

A timestamp the API server set (``from_real``) is shifted by the offset in
force when it was set, not by today's: a resource created at 10:00 stays
created at 10:00 after the clock jumps to 11:00, as it would on a cluster
whose clock simply ran on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

#: How often the offset file is polled.
POLL = 0.1


class FileOffsetClock:
    """UTC, shifted by the offset (seconds) in ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._offset = 0.0
        #: (real time it took effect, offset), oldest first
        self._history: list[tuple[datetime, float]] = []
        self.refresh()

    def refresh(self) -> bool:
        """Re-read the file if it changed; True when the offset moved."""
        try:
            st = self.path.stat()
            if (st.st_mtime_ns, st.st_size) == self._seen:
                return False
            self._seen = (st.st_mtime_ns, st.st_size)
            fields = self.path.read_text().split()
            offset = float(fields[0]) if fields else 0.0
            now = datetime.now(UTC)
            since = datetime.fromtimestamp(int(fields[1]), UTC) if len(fields) > 1 else now
        except (OSError, ValueError):
            return False  # keep the last good offset while the file is rewritten
        changed, self._offset = offset != self._offset, offset
        if changed or not self._history:
            self._history.append((since, offset))
        return changed

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self._offset)

    def from_real(self, t: datetime) -> datetime:
        """A timestamp the API server set, on this clock (the offset then)."""
        offset = self._history[0][1] if self._history else self._offset
        for since, value in self._history:
            if since > t:
                break
            offset = value
        return t + timedelta(seconds=offset)

    async def watch(self, on_change: Callable[[], None]) -> None:
        """Call ``on_change()`` whenever the offset changes."""
        while True:
            await asyncio.sleep(POLL)
            if self.refresh():
                on_change()
