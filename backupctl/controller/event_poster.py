"""Events about RedisBackups, posted behind the work that is waiting for its turn.

Why a module of its own: at a cron slot thousands of RedisBackups each create a Job and
post a ``JobCreated`` Event. Through kopf's poster an Event cost as much controller CPU as
the Job itself (kopf's request wrapper, a logger per object), and it was posted while
other resources' Jobs were still waiting: the Events delayed the slot's Jobs. Here an
Event is queued with the time it happened and posted through the controller's one API
client once no pass is waiting for its turn (:class:`~backupctl.controller.gate.Gate`), or
after :data:`MAX_DEFER` seconds at the latest. A full queue is posted inline (the pass
waits: back-pressure, bounded memory). A failure is logged, never fatal, as with kopf. A
graceful stop posts what is still queued first (:meth:`EventPoster.flush`, at most
:data:`FLUSH_SECONDS`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from backupctl.controller.kube import ApiError, Kube
from backupctl.core.timefmt import format_time

#: Longest time an Event waits for the passes to finish (seconds).
MAX_DEFER = 30.0
#: Events queued at most (a slot of more posts inline).
QUEUE_SIZE = 10000
#: Events posted at once.
WORKERS = 4
#: Longest a graceful stop waits for the queued Events to be posted (seconds).
FLUSH_SECONDS = 5.0
#: Pauses (seconds) before posting again after a 5xx or 429.
RETRIES = (1.0, 2.0, 4.0)
#: The longest message kept (kube-apiserver refuses longer ones); the middle is cut.
MAX_MESSAGE = 1024
COMPONENT = "backupctl"
log = logging.getLogger("backupctl.operator")
#: An Event waiting: the involved object's apiVersion, kind, name, namespace, uid; then
#: type, reason, message and when it happened.
Queued = tuple[Any, Any, str, str, Any, str, str, str, datetime]


def event_object(
    involved: Mapping[str, Any], type_: str, reason: str, message: str, at: datetime
) -> dict[str, Any]:
    """The core/v1 Event about ``involved`` (apiVersion, kind, metadata), made at ``at``."""
    meta = involved["metadata"]
    if len(message) > MAX_MESSAGE:
        half = (MAX_MESSAGE - len(" ... ")) // 2
        message = f"{message[:half]} ... {message[-half:]}"
    now = format_time(at)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion"),
            "kind": involved.get("kind"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
        },
        "type": type_,
        "reason": reason,
        "message": message,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


class EventPoster:
    """A queue of Events and the tasks that post them while ``busy()`` is false."""

    def __init__(self, kube: Kube, busy: Callable[[], bool]) -> None:
        self.kube = kube
        self.busy = busy
        self.queue: asyncio.Queue[Queued] = asyncio.Queue(QUEUE_SIZE)
        #: Events queued and not yet posted (or given up on)
        self.pending = 0
        #: set by :meth:`flush`: post at once, the passes no longer matter
        self.flushing = False

    async def post(
        self, involved: Mapping[str, Any], type_: str, reason: str, message: str, at: datetime
    ) -> None:
        """Queue the Event (post it now when the queue is full). Queued compactly (a
        tuple, ~0.3 KB; the Event's dict is 3 KB): a slot queues thousands."""
        meta = involved["metadata"]
        ref = (involved.get("apiVersion"), involved.get("kind"), meta["name"], meta["namespace"])
        queued: Queued = (*ref, meta.get("uid"), type_, reason, message, at)
        try:
            self.queue.put_nowait(queued)
            self.pending += 1
        except asyncio.QueueFull:
            await self._send(queued)

    async def flush(self, seconds: float = FLUSH_SECONDS) -> int:
        """Post what is queued now, waiting at most ``seconds`` (a graceful stop: the
        Events of the last passes are not lost with the process); the number left."""
        self.flushing = True
        deadline = time.monotonic() + seconds
        while self.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.pending:
            log.warning("stopping with %d Events not posted", self.pending)
        return self.pending

    async def run(self, workers: int = WORKERS) -> None:
        """Post queued Events until cancelled."""
        async with asyncio.TaskGroup() as group:
            for _ in range(workers):
                group.create_task(self._work())

    async def _work(self) -> None:
        while True:
            queued = await self.queue.get()
            deadline = time.monotonic() + MAX_DEFER
            while self.busy() and not self.flushing and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            try:
                await self._send(queued)
            finally:
                self.pending -= 1

    async def _send(self, queued: Queued) -> None:
        """Post, trying again after :data:`RETRIES` pauses while the server is unavailable
        or throttles (as kopf's poster did)."""
        api_version, kind, name, namespace, uid, type_, reason, message, at = queued
        involved = {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace, "uid": uid},
        }
        event = event_object(involved, type_, reason, message, at)
        for pause in (*RETRIES, None):
            try:
                await self.kube.create("", "v1", "events", namespace, event)
                return
            except ApiError as e:
                if pause is None or not (e.status >= 500 or e.status == 429):
                    log.warning("could not post Event %s for %s: %s", reason, name, e)
                    return
            await asyncio.sleep(pause)


__all__ = ["EventPoster", "event_object"]
