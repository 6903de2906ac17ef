"""A network partition between the API emulator and one client (by its bearer token).

Why: a controller that loses the API server while it leads must stop handling before its
Lease expires (issue 15); the test needs to cut exactly one of two controller processes
off while the other, and the test itself, keep talking to the server. While a token is
partitioned, its requests hang as on a dropped network and are lost: they end, unserved,
with 503 when the partition heals or after :data:`HOLD` seconds (a request that never
arrived is never carried out, even if its client is gone by then); its open watch
streams deliver nothing; a stream that was cut ends when the partition heals, so
the client re-lists as after a real reconnect.

A client with a *creation delay* (``create_delay``) has its POSTs held that long before
the server carries them out: a slow network, so two clients that decide at the same
moment both send a create before either lands.
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
    create_delay: dict[str, float] = field(default_factory=dict)
    held: int = 0

    def cut(self, token: str) -> bool:
        return bool(token) and token in self.tokens

    async def delay(self, token: str, method: str) -> None:
        """Hold a POST of a client with a creation delay (bounded by :data:`HOLD`)."""
        seconds = self.create_delay.get(token) if token and method == "POST" else None
        if seconds:
            await asyncio.sleep(min(seconds, HOLD))

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
