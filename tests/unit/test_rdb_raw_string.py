"""``RdbSource.raw_string``: the fast path ``--to-redis`` takes for string values
hands on exactly the bytes the slow path (tee + walk) records, or declines."""

from __future__ import annotations

import io

import pytest

from backupctl.redis.rdb import crc64_redis
from backupctl.redis.rdb_keys import KeyValue, RdbKeys
from backupctl.redis.rdb_source import RdbSource


def _src(data: bytes) -> RdbSource:
    return RdbSource(io.BytesIO(data + b"\xfe" * 8), len(data) + 8)  # what follows the string


LZF = b"\xc3\x05\x08\x01ab\x80\x01"  # LZF: 5 compressed -> 8 bytes ("ab" + a 6-byte back-reference)

CASES = [
    (b"\x03abc", True),  # 6-bit length
    (b"\x41\x00" + b"x" * 256, True),  # 14-bit length
    (b"\x80\x00\x00\x40\x00" + b"y" * 16384, True),  # 32-bit length
    (LZF, True),
    (b"\xc0\x7f", False),  # an integer: the slow path renders it
    (b"\xc3\x40\x10\x40\x10" + b"z" * 16, True),  # 14-bit LZF lengths (body not decoded)
    (b"\xc3\x80\x00\x00\x00\x10\x10" + b"z" * 16, False),  # 32-bit LZF length: the slow path
    (b"\xc3\x05\x7f\x01ab\x80\x01", False),  # implausible LZF lengths: the slow path says so
]


@pytest.mark.parametrize(("encoded", "fast"), CASES)
def test_a_string_in_the_buffer_is_handed_on_as_is_or_declined(encoded: bytes, fast: bool) -> None:
    src = _src(encoded)
    src._fill(len(encoded) + 8, "the test")
    got = src.raw_string(1 << 20)
    if fast:
        assert got == encoded and src.offset == len(encoded)
    else:
        assert got is None and src.offset == 0


def test_over_the_limit_it_is_declined_and_nothing_is_consumed() -> None:
    src = _src(b"\x41\x00" + b"x" * 256)
    src._fill(266, "the test")
    assert src.raw_string(257) is None and src.offset == 0
    assert src.raw_string(258) is not None


def _rdb(*records: bytes) -> bytes:
    body = b"REDIS0010" + b"".join(records) + b"\xff"
    return body + crc64_redis(body).to_bytes(8, "little")


def test_the_walk_yields_the_same_records_with_and_without_the_fast_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rdb = _rdb(
        b"\x00\x01a\x03abc",
        b"\x00\x01b" + LZF,
        b"\x00\x01c\xc0\x07",
        b"\xfc" + (2_000_000_000_000).to_bytes(8, "little") + b"\x00\x01d\x02hi",
        b"\x00\x01e\x41\x00" + b"x" * 256,
    )

    def walk() -> list[KeyValue]:
        keys = RdbKeys(io.BytesIO(rdb), 0, 1 << 20, len(rdb))
        return [r for r in keys.records() if isinstance(r, KeyValue)]

    fast = walk()
    monkeypatch.setattr(RdbSource, "raw_string", lambda self, limit: None)
    slow = walk()
    assert fast == slow and len(fast) == 5
    assert fast[1].raw == b"\x00" + LZF and fast[3].expire_ms == 2_000_000_000_000
