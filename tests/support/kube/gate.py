"""A first-come-first-served limit, O(1) per caller, for the emulator's fairness.

Strictly first-come-first-served, so the requests that wait their turn (thousands, from
four controllers starting 2,500 RedisBackups each) are served in arrival order. (The
controller has its own copy, backupctl/controller/gate.py: the substrate does not import
the code it tests.)
"""

from __future__ import annotations

import asyncio
from collections import deque


class Gate:
    """At most ``limit`` holders at once; the others wait in arrival order."""

    def __init__(self, limit: int) -> None:
        self.free = limit
        self.waiters: deque[asyncio.Future[None]] = deque()
        self._later = 0  # releases due on the next turn of the loop

    async def acquire(self) -> None:
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # handed over just as the caller was cancelled: pass it on
            raise

    def release_soon(self) -> None:
        """:meth:`release` on the loop's next turn (one callback a turn, however many)."""
        self._later += 1
        if self._later == 1:
            asyncio.get_running_loop().call_soon(self._release_later)

    def _release_later(self) -> None:
        count, self._later = self._later, 0
        for _ in range(count):
            self.release()

    def release(self) -> None:
        while self.waiters:
            turn = self.waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self.free += 1


__all__ = ["Gate"]
