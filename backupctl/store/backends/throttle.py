"""Bandwidth limits (``--limit-upload`` / ``--limit-download``, KiB/s, as
restic's): a token bucket, and a backend wrapper (in the style of
:mod:`backupctl.store.backends.wrappers`) that makes every object read or
written take from it, so no backend needs to know about limits.

The bucket is pure given its clock and sleep (tests inject both); the
wrapper only counts bytes, so the limit is on payload bytes, not on HTTP
overhead, and holds on average over any few seconds (a burst of up to one
second's worth is allowed first).
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from typing import BinaryIO

from backupctl.store.backends.base import Backend, ObjectWriter
from backupctl.store.backends.wrappers import ForwardingBackend


class TokenBucket:
    """``rate`` bytes per second on average, bursts up to ``burst`` bytes.
    A take larger than what is available goes into debt and sleeps it off,
    so large chunks (8 MiB) work with small rates. Thread-safe: a multipart
    upload's parts share one bucket."""

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else rate
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._last = clock()
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= n
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)


class _ThrottledReader(io.RawIOBase):
    def __init__(self, inner: BinaryIO, bucket: TokenBucket) -> None:
        self._inner = inner
        self._bucket = bucket

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(len(b))
        n = len(data)
        if n:
            b[:n] = data
            self._bucket.take(n)
        return n

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            super().close()


class _ThrottledWriter(ObjectWriter):
    def __init__(self, inner: ObjectWriter, bucket: TokenBucket) -> None:
        self._inner = inner
        self._bucket = bucket

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._bucket.take(memoryview(data).nbytes)
        return self._inner.write(data)

    def commit(self) -> None:
        self._inner.commit()

    def abort(self) -> None:
        self._inner.abort()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._inner.__exit__(exc_type, exc, tb)


class ThrottledBackend(ForwardingBackend):
    """Reads take from ``download``, writes from ``upload`` (None: no limit)."""

    def __init__(
        self, inner: Backend, *, upload: TokenBucket | None, download: TokenBucket | None
    ) -> None:
        super().__init__(inner)
        self.upload = upload
        self.download = download

    def open(self, key: str) -> BinaryIO:
        f = self.inner.open(key)
        if self.download is None:
            return f
        return io.BufferedReader(_ThrottledReader(f, self.download), 1024 * 1024)

    def writer(self, key: str) -> ObjectWriter:
        w = self.inner.writer(key)
        return w if self.upload is None else _ThrottledWriter(w, self.upload)


def limited(backend: Backend, upload_kib: float | None, download_kib: float | None) -> Backend:
    """``backend`` with the given KiB/s limits (None or 0: unlimited)."""
    if not upload_kib and not download_kib:
        return backend
    up = TokenBucket(upload_kib * 1024) if upload_kib else None
    down = TokenBucket(download_kib * 1024) if download_kib else None
    return ThrottledBackend(backend, upload=up, download=down)


__all__ = ["ThrottledBackend", "TokenBucket", "limited"]
