"""Retry of transient storage errors, as a wrapper around any backend.

It exists so no backend needs retry flags: the CLI wraps whatever
:func:`~backupctl.store.backends.open_store` returned. ``RetryingBackend`` retries
calls that failed with a ``transient`` :class:`StorageError` (timeouts, 5xx,
an endpoint that is briefly down) with exponential backoff and jitter,
bounded in attempts and in total time; it never retries ``NotFound``,
``AccessDenied`` or other permanent errors. Writers are passed through
unretried: a stream cannot be replayed, and the SDKs already retry each
part.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO, TypeVar

from backupctl.store.backends.base import Backend, ObjectInfo, PendingUpload, StorageError
from backupctl.store.backends.wrappers import ForwardingBackend

log = logging.getLogger(__name__)
T = TypeVar("T")


class RetryingBackend(ForwardingBackend):
    """Retries transient failures of ``inner``'s calls (see module doc).

    Delays grow as ``base_delay * 2**n`` capped at ``max_delay``, each drawn
    from its upper half (jitter), and no new attempt starts once
    ``max_elapsed`` seconds have passed since the first one.
    """

    def __init__(
        self,
        inner: Backend,
        attempts: int = 5,
        base_delay: float = 0.5,
        max_delay: float = 10,
        sleep: Callable[[float], None] = time.sleep,
        *,
        max_elapsed: float = 60,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(inner)
        self.attempts = max(1, attempts)
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_elapsed = max_elapsed
        self._sleep = sleep
        self._clock = clock

    def _delay(self, failures: int) -> float:
        cap = min(self.max_delay, self.base_delay * 2.0 ** (failures - 1))
        return cap / 2 + random.uniform(0, cap / 2)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        start = self._clock()
        failures = 0
        while True:
            try:
                return fn()
            except StorageError as err:
                failures += 1
                self._give_up_or_wait(what, err, failures, start)

    def _give_up_or_wait(self, what: str, err: StorageError, failures: int, start: float) -> None:
        """Re-raise ``err`` unless another attempt is allowed; then sleep."""
        if not err.transient:
            raise err
        delay = self._delay(failures)
        if failures >= self.attempts or self._clock() - start + delay > self.max_elapsed:
            if failures > 1:
                err.args = (f"{err} (gave up after {failures} attempts)",)
            raise err
        log.info("%s on %s failed (%s); retrying in %.1fs", what, self.url, err, delay)
        self._sleep(delay)

    def _iter(
        self, what: str, make: Callable[[], Iterator[T]], key: Callable[[T], str]
    ) -> Iterator[T]:
        """Retry a listing; after a failure mid-way, list again and skip
        what was already yielded (listings are not resumable)."""
        start = self._clock()
        failures = 0
        seen: set[str] = set()
        while True:
            try:
                for item in make():
                    k = key(item)
                    if k not in seen:
                        seen.add(k)
                        yield item
                return
            except StorageError as err:
                failures += 1
                self._give_up_or_wait(what, err, failures, start)

    def check(self) -> None:
        self._call("check", self.inner.check)

    def open(self, key: str) -> BinaryIO:
        return self._call(f"open {key}", lambda: self.inner.open(key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self._iter(f"list {prefix}", lambda: self.inner.list(prefix), lambda o: o.key)

    def stat(self, key: str) -> ObjectInfo:
        return self._call(f"stat {key}", lambda: self.inner.stat(key))

    def delete(self, key: str) -> None:
        self._call(f"delete {key}", lambda: self.inner.delete(key))

    def pending_uploads(self, prefix: str = "") -> Iterator[PendingUpload]:
        return self._iter(
            f"list unfinished uploads {prefix}",
            lambda: self.inner.pending_uploads(prefix),
            lambda u: u.upload_id,
        )

    def abort_upload(self, upload: PendingUpload) -> None:
        self._call(f"abort upload {upload.key}", lambda: self.inner.abort_upload(upload))
