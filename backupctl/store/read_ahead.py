"""A reader that runs its source a few chunks ahead, on a thread of its own.

Why a module of its own: unpacking an archive is a chain of C calls -- read
the stored object, sha256 it, zstd-decompress it, parse the tar, sha256 each
file, write it -- that each release the GIL but ran one after the other on
one core: 5 of a 1 GiB ``restore --to-redis``'s 11 s on two cores.
Reading, hashing and decompressing on this thread, at most ``depth`` chunks
ahead of the tar reader, lets the two halves share two cores. Memory: at
most ``depth`` chunks; a hostile archive gets that much further decompressed
before a budget upstream refuses it, no more.
"""

from __future__ import annotations

import queue
import threading
from typing import BinaryIO

__all__ = ["ReadAhead"]

#: How long a stop waits for the thread to let go of the source (seconds).
JOIN_TIMEOUT = 120.0


class ReadAhead:
    """``source.read(chunk)`` on a thread, up to ``depth`` results ahead.

    :meth:`read` hands out what the thread read, in order; an exception the
    source raised is raised there, once the chunks before it are read.
    :meth:`stop` ends the thread and waits for it: after it, nothing reads
    ``source`` any more (the caller may go on reading it itself)."""

    def __init__(
        self, source: BinaryIO, chunk: int, depth: int = 4, join_timeout: float | None = None
    ) -> None:
        self._source = source
        self._join_timeout = JOIN_TIMEOUT if join_timeout is None else join_timeout
        self._chunk = chunk
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(depth)
        self._stopping = threading.Event()
        self._item = b""
        self._pos = 0
        self._ended = False
        self._thread = threading.Thread(target=self._run, name="read-ahead", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        item: bytes | BaseException
        while not self._stopping.is_set():
            try:
                item = self._source.read(self._chunk)
            except BaseException as e:  # handed to the reader, raised there
                item = e
            self._put(item)
            if not isinstance(item, bytes) or not item:
                return

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (the rest of the current chunk when ``n`` < 0); b"" at the end."""
        if self._pos >= len(self._item):
            if self._ended:
                return b""
            item = self._queue.get()
            if isinstance(item, BaseException):
                self._ended = True
                raise item
            if not item:
                self._ended = True
                return b""
            self._item, self._pos = item, 0
        end = len(self._item) if n < 0 else min(len(self._item), self._pos + n)
        out = (
            self._item if self._pos == 0 and end == len(self._item) else self._item[self._pos : end]
        )
        self._pos = end
        return out

    def stop(self, *, check: bool = True) -> None:
        """End the thread; with ``check``, raise RuntimeError if it still holds the
        source after ``join_timeout`` (a source read that never returns). Without it
        (cleaning up after another error, which must not be masked) a hung thread is
        left behind: it is a daemon thread."""
        self._stopping.set()
        self._thread.join(self._join_timeout)
        if check and self._thread.is_alive():
            raise RuntimeError("the read-ahead thread did not stop: its source read hangs")
