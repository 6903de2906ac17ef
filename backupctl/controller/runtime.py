"""What the controller reads from the world besides the API: the time.

Every decision takes ``now`` as an argument; the handlers get it from the one
:class:`Clock` the controller was started with (:func:`backupctl.controller.app.run`),
so a test can run the real controller on a clock of its own without any switch
in production code."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """The controller's notion of now."""

    def now(self) -> datetime:
        """An aware UTC datetime."""
        ...

    def from_real(self, t: datetime) -> datetime:
        """A timestamp the API server set (real time), on this clock."""
        ...

    async def watch(self, on_change: Callable[[], None]) -> None:
        """Call ``on_change()`` whenever this clock jumps; return never, or
        at once for a clock that only moves forward with real time."""
        ...


class SystemClock:
    """Real time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def from_real(self, t: datetime) -> datetime:
        return t

    async def watch(self, on_change: Callable[[], None]) -> None:
        return None
