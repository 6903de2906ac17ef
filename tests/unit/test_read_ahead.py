"""ReadAhead: the archive's reading on a thread of its own, in order, bounded."""

from __future__ import annotations

import io
import threading
import time

import pytest

from backupctl.store.archive_guard import TarBudget
from backupctl.store.read_ahead import ReadAhead


class _Chunks:
    """A source that returns at most one of its chunks per read, then raises ``fail`` if set."""

    def __init__(self, chunks: list[bytes], fail: Exception | None = None) -> None:
        self.chunks = list(chunks)
        self.fail = fail
        self.reads = 0
        self.lock = threading.Lock()

    def read(self, n: int = -1) -> bytes:
        with self.lock:
            self.reads += 1
            if self.chunks:
                head = self.chunks[0]
                take = len(head) if n < 0 else min(n, len(head))
                if take == len(head):
                    self.chunks.pop(0)
                else:
                    self.chunks[0] = head[take:]
                return head[:take]
            if self.fail is not None:
                raise self.fail
            return b""


def test_bytes_come_out_in_order_whatever_the_read_sizes() -> None:
    data = bytes(range(256)) * 300
    ahead = ReadAhead(io.BytesIO(data), chunk=1000, depth=2)  # type: ignore[arg-type]
    got = bytearray()
    sizes = [1, 7, 999, 1000, 1001, 4096]
    for i in range(len(data)):  # bounded: each turn reads at least a byte until the end
        piece = ahead.read(sizes[i % len(sizes)])
        if not piece:
            break
        got += piece
    ahead.stop()
    assert bytes(got) == data
    assert ahead.read() == b""


def test_a_source_error_is_raised_after_the_bytes_before_it() -> None:
    source = _Chunks([b"abc", b"def"], fail=OSError("disk on fire"))
    ahead = ReadAhead(source, chunk=3)  # type: ignore[arg-type]
    assert ahead.read() == b"abc"
    assert ahead.read() == b"def"
    with pytest.raises(OSError, match="disk on fire"):
        ahead.read()
    ahead.stop()


def test_it_reads_at_most_depth_chunks_ahead_and_nothing_after_stop() -> None:
    source = _Chunks([bytes([i]) * 10 for i in range(50)])
    ahead = ReadAhead(source, chunk=10, depth=3)  # type: ignore[arg-type]
    assert ahead.read() == bytes([0]) * 10  # the thread runs: a positive sign first
    deadline = time.monotonic() + 5
    while source.reads < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # room to overrun, if it could
    assert source.reads <= 1 + 3 + 1  # the one read, the queue, one waiting to be queued
    ahead.stop()
    after = source.reads
    time.sleep(0.2)
    assert source.reads == after


def test_the_tar_budget_gathers_short_reads() -> None:
    source = _Chunks([b"ab", b"c", b"defg", b"h"])
    budget = TarBudget(source)  # type: ignore[arg-type]
    assert budget.read(6) == b"abcdef"
    assert budget.read(6) == b"gh"
    assert budget.read(6) == b""
