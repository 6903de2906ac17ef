"""Receiving a replication stream ahead of its reader, while the reader is
still getting ready.

Why a module of its own: it is the one piece of the replication path that
runs beside the caller's thread, with its own locking and memory bound;
:mod:`backupctl.redis.replication` speaks the protocol on top of it.

The master's fork child writes the RDB as fast as it can serialise it and
stalls as soon as the socket is full. ``backupctl run`` asks for the RDB
first and sets up the store (SDK client, store check, backup id) while the
child works: :class:`ReceiveAhead` holds what arrives meanwhile, in at most
``chunks`` buffers, so the child is not held up by our start-up. From the
reader's first read on, the thread stops and the reader takes the held
bytes, then reads the socket itself: once streaming, the kernel's socket
buffer (auto-tuned) smooths the reader's bursts, and a thread of our own
beside it measured +8 MiB of peak RSS (its buffers stayed full behind a
busy pipeline) for no gain in wall time. The held buffers are freed as they
are read, so the start-up burst does not stay in the peak RSS.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

__all__ = ["ReceiveAhead"]


class ReceiveAhead:
    """Drains a socket (``recv_into``) on a thread until the first
    :meth:`readinto`, into at most ``chunks`` buffers of ``chunk`` bytes
    (then it waits: the stream is back-pressured as without it).

    A socket error, or the end of the stream (0 bytes), met by the thread is
    handed out in its turn after the bytes before it, and again on every
    later read.
    """

    def __init__(self, recv_into: Callable[[memoryview], int], *, chunk: int, chunks: int) -> None:
        self._recv_into = recv_into
        self._chunk = chunk
        self._max = max(1, chunks)
        self._cond = threading.Condition()
        self._held: deque[tuple[bytearray, int]] = deque()
        self._end: BaseException | None = None  # the error the thread met
        self._eof = False  # the thread met the end of the stream
        self._pos = 0  # how much of the first held buffer was handed out
        self._handover = False  # the reader has come: the thread stops
        self._done = False  # the thread has stopped receiving
        #: The most buffers held at once (what the start-up burst cost).
        self.peak_buffers = 0
        self._thread = threading.Thread(target=self._run, name="repl-recv", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._receive()
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def _receive(self) -> None:
        for _ in range(self._max):
            with self._cond:
                if self._handover:
                    return
            buf = bytearray(self._chunk)
            filled = 0
            for _ in range(self._chunk):  # bounded: each round receives >= 1 byte
                try:
                    n = self._recv_into(memoryview(buf)[filled:])
                except BaseException as exc:  # handed to the reader in its turn
                    self._hold(buf, filled, error=exc)
                    return
                filled += n
                with self._cond:
                    handover = self._handover
                if n == 0 or filled == len(buf) or handover:
                    break
            self._hold(buf, filled, eof=filled < len(buf) and not handover)
            if filled < len(buf):
                return
        with self._cond:  # full: wait for the reader, receive nothing more
            for _ in range(1 << 40):  # bounded: readinto() sets _handover
                if self._handover:
                    return
                self._cond.wait()

    def _hold(
        self, buf: bytearray, filled: int, *, error: BaseException | None = None, eof: bool = False
    ) -> None:
        with self._cond:
            if filled:
                self._held.append((buf, filled))
                self.peak_buffers = max(self.peak_buffers, len(self._held))
            self._end = error
            self._eof = eof
            self._cond.notify_all()

    def readinto(self, view: memoryview) -> int:
        """The next bytes into ``view``: held ones first, then straight from
        the socket; 0 at the end of the stream; the socket's error in its turn."""
        if not self._done:
            with self._cond:
                self._handover = True
                self._cond.notify_all()
                for _ in range(1 << 40):  # bounded: the thread's recv returns or fails
                    if self._done:
                        break
                    self._cond.wait()
        if self._held:
            buf, filled = self._held[0]
            n = min(len(view), filled - self._pos)
            view[:n] = memoryview(buf)[self._pos : self._pos + n]
            self._pos += n
            if self._pos == filled:
                self._held.popleft()  # freed: the burst does not stay in the RSS
                self._pos = 0
            return n
        if self._end is not None:
            raise self._end
        if self._eof:
            return 0
        return self._recv_into(view)

    def stop(self) -> None:
        """No more receiving; the thread ends once its ``recv_into`` returns
        (shut the socket down to make it return)."""
        with self._cond:
            self._handover = True
            self._cond.notify_all()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
