"""Leader election on a thread of its own: renewals that a busy controller cannot delay.

Why a module of its own: at a cron slot, or while kopf starts thousands of RedisBackups,
the controller's event loop runs long stretches of handler code; a renewal timer on that
loop fires late and a healthy leader loses its Lease (measured: four shards of 2,500
RedisBackups each all lost theirs within seconds of starting). client-go keeps the
elector apart from the informers for the same reason. :class:`LeaseThread` runs a
:class:`~backupctl.controller.leader.LeaderElector` -- with its own API client, so its
requests never wait behind the controller's connections -- on an event loop in a daemon
thread; the controller's loop awaits its results. When the leader cannot renew in time,
the thread (not the possibly busy main loop) tells the controller to stop and, if that
takes too long, ends the process: a leader that truly cannot renew still stops before
its Lease expires for the others.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from backupctl.controller.leader import LeaderElector

T = TypeVar("T")
log = logging.getLogger("backupctl.leader")


class LeaseThread:
    """An event loop in a daemon thread for one :class:`LeaderElector`."""

    def __init__(self, elector: LeaderElector) -> None:
        self.elector = elector
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="leader-election", daemon=True
        )
        self.thread.start()
        self.keeping: concurrent.futures.Future[None] | None = None

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` run on the election thread (cancelling this cancels it there)."""
        return await asyncio.wrap_future(self.submit(coro))

    async def acquire(self) -> None:
        await self.run(self.elector.acquire())

    def keep_leading(
        self, on_lost: Callable[[], None], grace: float, exit_now: Callable[[], None]
    ) -> None:
        """Renew on the election thread; once the renew deadline passes without a renewal,
        call ``on_lost`` (thread-safe: it is the caller's job to hand it to its loop),
        then ``exit_now`` if the process is still alive ``grace`` seconds later."""

        async def keep() -> None:
            await self.elector.keep_leading()
            on_lost()
            await asyncio.sleep(grace)
            log.error("the controller did not stop in time after losing its Lease: exiting now")
            exit_now()

        self.keeping = self.submit(keep())

    async def close(self, release: bool) -> None:
        """Stop renewing, give the Lease up (``release``), close the client, end the thread."""
        if self.keeping is not None:
            self.keeping.cancel()
        if release:
            await self.run(self.elector.release())
        await self.run(self.elector.kube.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        await asyncio.to_thread(self.thread.join, 5)
        if not self.thread.is_alive():
            self.loop.close()


__all__ = ["LeaseThread"]
