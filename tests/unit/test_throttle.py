"""--limit-upload / --limit-download: the token bucket holds the average rate
(on an injected clock), and the wrapper throttles reads and writes."""

from __future__ import annotations

import pytest

from backupctl.store.backends.base import put_bytes, read_bytes
from backupctl.store.backends.memory import MemoryBackend
from backupctl.store.backends.throttle import ThrottledBackend, TokenBucket, limited


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


@pytest.mark.parametrize(
    ("rate", "chunks", "seconds"),
    [
        (1000, [1000], 0.0),  # the first second's worth is a burst
        (1000, [1000, 1000], 1.0),
        (1000, [8000], 7.0),  # one chunk larger than the bucket: debt, slept off
        (1000, [500] * 10, 4.0),
        (1024 * 1024, [8 * 1024 * 1024] * 4, 31.0),
    ],
)
def test_bucket_holds_the_rate(rate: float, chunks: list[int], seconds: float) -> None:
    t = FakeTime()
    bucket = TokenBucket(rate, clock=t.clock, sleep=t.sleep)
    for n in chunks:
        bucket.take(n)
    assert t.now == pytest.approx(seconds)


def test_wrapper_throttles_writes_and_reads_only_where_asked() -> None:
    t = FakeTime()
    inner = MemoryBackend("throttle")
    up = TokenBucket(1000, clock=t.clock, sleep=t.sleep)
    down = TokenBucket(500, clock=t.clock, sleep=t.sleep)
    store = ThrottledBackend(inner, upload=up, download=down)
    put_bytes(store, "a/b", b"x" * 3000)
    assert t.now == pytest.approx(2.0)
    assert read_bytes(store, "a/b") == b"x" * 3000
    assert t.now == pytest.approx(2.0 + 5.0)
    assert limited(inner, None, None) is inner
