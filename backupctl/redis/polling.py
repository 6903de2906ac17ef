"""Bounded waiting on a Redis node: a deadline on an injected clock, and a
poll loop that gives up with the caller's own error.

Why a module of its own: the BGSAVE wait, the AOF-rewrite wait and the
replication handshake all wait for a server with a timeout; each takes its
``clock`` and ``sleep`` as arguments (tests pass fakes, production passes
``time.monotonic``/``time.sleep``), and every loop is bounded even if the
clock never moves.
"""

from __future__ import annotations

from collections.abc import Callable

from backupctl.core.timing import Monotonic, Sleep
from backupctl.redis.errors import RedisNodeError

__all__ = ["Deadline", "wait_until"]


class Deadline:
    """``timeout`` seconds from now on ``clock``."""

    def __init__(self, timeout: float, clock: Monotonic) -> None:
        self.clock = clock
        self.end = clock() + timeout
        self.timeout = timeout

    def left(self) -> float:
        return self.end - self.clock()

    def expired(self) -> bool:
        return self.left() <= 0


def wait_until(
    cond: Callable[[], bool],
    deadline: Deadline,
    poll: float,
    sleep: Sleep,
    on_timeout: Callable[[], RedisNodeError],
) -> None:
    """Poll ``cond`` until true; bounded by ``deadline`` (and a poll count)."""
    max_polls = int(deadline.timeout / max(poll, 1e-3)) + 1000
    for _ in range(max_polls):
        if cond():
            return
        if deadline.expired():
            break
        sleep(max(0.0, min(poll, deadline.left())))
    if cond():
        return
    raise on_timeout()
