"""Watch events: who is watching what, and the recent changes a resumed watch replays.

Why: kopf, kubectl ``wait`` and the ``kubernetes`` client depend on watch semantics kmock lacks:
label/field selectors, ``ADDED``/``DELETED`` when an object enters or leaves a selector,
resuming from a ``resourceVersion`` (and 410 Gone when it is too old), and the server ending
streams. The store reports every change here (:meth:`WatchHub.record`); the HTTP front turns
a :class:`Watcher`'s queue into a stream. Nothing here knows HTTP.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass

from . import selectors
from .errors import ApiError, JsonDict
from .resources import StorageKey

WATCH_LOG_SIZE = 20000  # events kept to replay watches that resume from a resourceVersion

# One change: (resourceVersion, storage key, old object or None, new object or None).
Change = tuple[int, StorageKey, JsonDict | None, JsonDict | None]


class Inbox:
    """A watch stream's pending events: a deque and one waiting reader, woken once per
    batch. (An ``asyncio.Queue`` read under ``wait_for`` made a task per event: at a slot,
    with nine streams, more of the emulator's CPU than the events themselves.)"""

    def __init__(self) -> None:
        self.items: collections.deque[JsonDict | None] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: JsonDict | None) -> None:
        self.items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def empty(self) -> bool:
        return not self.items

    async def wait(self, deadline: float | None) -> bool:
        """Until something is pending (True) or the loop's clock passes ``deadline`` (False)."""
        if self.items:
            return True
        loop = asyncio.get_running_loop()
        if deadline is not None and loop.time() >= deadline:
            return False
        self._waiter = loop.create_future()
        timer = None if deadline is None else loop.call_at(deadline, self._expire)
        try:
            await self._waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        return bool(self.items)

    def _expire(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def take(self, limit: int) -> list[JsonDict | None]:
        """Up to ``limit`` pending items, oldest first."""
        count = min(limit, len(self.items))
        return [self.items.popleft() for _ in range(count)]


@dataclass(eq=False)
class Watcher:
    """One open watch stream."""

    key: StorageKey
    namespace: str | None
    labels: selectors.Predicate
    fields: selectors.Predicate
    queue: Inbox

    def matches(self, obj: JsonDict | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata", {})
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return self.labels(meta.get("labels") or {}) and self.fields(obj)

    def event_for(self, old: JsonDict | None, new: JsonDict | None) -> JsonDict | None:
        """The event this watcher sees for a change, if any (selector transitions included)."""
        was, now = self.matches(old), self.matches(new)
        if new is None:  # removed: old carries the final state
            return {"type": "DELETED", "object": old} if was else None
        if was and now:
            return {"type": "MODIFIED", "object": new}
        if now:
            return {"type": "ADDED", "object": new}
        if was:  # stopped matching the selector
            return {"type": "DELETED", "object": new}
        return None


class WatchHub:
    """The open watches and a bounded log of recent changes."""

    def __init__(self, log_size: int = WATCH_LOG_SIZE) -> None:
        self._log: collections.deque[Change] = collections.deque(maxlen=log_size)
        self._watchers: set[Watcher] = set()
        self._by_key: dict[StorageKey, set[Watcher]] = {}  # the same, by resource watched

    def record(self, rv: int, key: StorageKey, old: JsonDict | None, new: JsonDict | None) -> None:
        """A change was stored at resourceVersion ``rv``: log it and tell matching watchers."""
        self._log.append((rv, key, old, new))
        for watcher in list(self._by_key.get(key, ())):
            event = watcher.event_for(old, new)
            if event is not None:
                watcher.queue.put_nowait(event)

    def replay(self, watcher: Watcher, since_rv: int, current_rv: int) -> list[JsonDict]:
        """What happened after ``since_rv`` for ``watcher``, or one 410 ERROR if it is too old."""
        oldest = self._log[0][0] if self._log else current_rv + 1
        if len(self._log) == self._log.maxlen and since_rv < oldest - 1:
            return [
                {
                    "type": "ERROR",
                    "object": ApiError(
                        410, "Expired", f"too old resource version: {since_rv} ({oldest - 1})"
                    ).status(),
                }
            ]
        events = []
        for rv, key, old, new in self._log:
            if rv > since_rv and key == watcher.key:
                event = watcher.event_for(old, new)
                if event is not None:
                    events.append(event)
        return events

    def subscribe(self, watcher: Watcher) -> None:
        self._watchers.add(watcher)
        self._by_key.setdefault(watcher.key, set()).add(watcher)

    def unsubscribe(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)
        self._by_key.get(watcher.key, set()).discard(watcher)

    def close_all(self) -> int:
        """End every open watch stream (their queues get ``None``); returns how many."""
        count = len(self._watchers)
        for watcher in list(self._watchers):
            watcher.queue.put_nowait(None)
        return count
