"""A network partition between the API emulator and one client (by its bearer token).

Why: a controller that loses the API server while it leads must stop handling before its
Lease expires (issue 15); the test needs to cut exactly one of two controller processes
off while the other, and the test itself, keep talking to the server. While a token is
partitioned, its requests hang as on a dropped network and are lost: they end, unserved,
with 503 when the partition heals or after :data:`HOLD` seconds (a request that never
arrived is never carried out, even if its client is gone by then); its open watch
streams deliver nothing; a stream that was cut ends when the partition heals, so
the client re-lists as after a real reconnect. A *stalled* client (``stalled``) keeps
its requests but its watches go quiet the same way: the silent watch stall kopf is known
for, and a way to make two controllers act on one object without seeing each other.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from .errors import ApiError

#: Longest a request of a partitioned client hangs (seconds): clients time out earlier.
HOLD = 60.0
_STEP = 0.05


def bearer(authorization: str | None) -> str:
    return (authorization or "").removeprefix("Bearer ").strip()


@dataclass
class Partitions:
    """The tokens cut off from the server, and how many of their requests were held."""

    tokens: set[str] = field(default_factory=set)
    stalled: set[str] = field(default_factory=set)
    held: int = 0

    def cut(self, token: str) -> bool:
        return bool(token) and token in self.tokens

    def quiet(self, token: str) -> bool:
        """Watch events to ``token`` are withheld (partitioned or stalled)."""
        return self.cut(token) or (bool(token) and token in self.stalled)

    async def wait(self, token: str) -> None:
        """Hold a request of ``token`` while it is partitioned (bounded: :data:`HOLD`),
        then drop it (503)."""
        if not self.cut(token):
            return
        self.held += 1
        deadline = time.monotonic() + HOLD
        while self.cut(token) and time.monotonic() < deadline:
            await asyncio.sleep(_STEP)
        raise ApiError(503, "ServiceUnavailable", "the request was lost in a network partition")
