"""``RdbSource.raw_string``: the fast path ``--to-redis`` takes for string values
hands on exactly the bytes the slow path (tee + walk) records, or declines.
And the tee's hold: with the RDB file's descriptor, a value over the hold is
named by where it lies in the file (the same bytes), never held."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from backupctl.redis.rdb import crc64_redis
from backupctl.redis.rdb_commands import rebuild
from backupctl.redis.rdb_keys import KeyValue, LargeKey, RdbKeys, SpannedKey
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


# -- a value over the hold, when the stream is a file -------------------------------------


def _hash(key: bytes, fields: int, size: int) -> bytes:
    """A hash of type 4 (a field/value string per entry) of ``fields`` fields."""
    out = [b"\x04", bytes((len(key),)), key, bytes((0x40 | fields >> 8, fields & 0xFF))]
    for i in range(fields):
        value = (b"%06d" % i) * (size // 6)
        out += [b"\x06", b"f%05d" % i, bytes((0x40 | len(value) >> 8, len(value) & 0xFF)), value]
    return b"".join(out)


def _file(tmp_path: Path, data: bytes) -> int:
    path = tmp_path / "dump.rdb"
    path.write_bytes(data)
    return os.open(path, os.O_RDONLY)


def test_a_value_over_the_hold_is_named_where_it_lies_in_the_file_not_held(
    tmp_path: Path,
) -> None:
    """With ``fd``, values up to the hold come as bytes, larger ones as their
    place in the file (the same bytes), whether they were still in the reader's
    buffer (40 KB) or passed out of it (3 MB); the walk goes on and checks the
    CRC-64 at the end."""
    big, mid = _hash(b"big", 3000, 1000), _hash(b"mid", 40, 1000)
    rdb = _rdb(b"\x00\x01a\x03abc", big, mid, b"\x00\x01z\x02hi")
    held = [r for r in RdbKeys(io.BytesIO(rdb), 0, 8 << 20, len(rdb)).records()]
    assert [type(r).__name__ for r in held] == ["KeyValue"] * 4
    fd = _file(tmp_path, rdb)
    try:
        with open(fd, "rb", buffering=0, closefd=False) as fh:
            walk = RdbKeys(fh, 0, 8 << 20, len(rdb), fd=fd, hold=16 << 10)  # type: ignore[arg-type]
            spanned = list(walk.records())
        assert [type(r).__name__ for r in spanned] == [
            "KeyValue", "SpannedKey", "SpannedKey", "KeyValue"
        ]  # fmt: skip
        for whole, where in zip(held[1:3], spanned[1:3], strict=True):
            assert isinstance(whole, KeyValue) and isinstance(where, SpannedKey)
            assert (where.key, where.type_id) == (whole.key, whole.type_id)
            assert os.pread(fd, where.length, where.offset) == whole.raw[1:]
        assert spanned[3] == held[3] and walk.size == len(rdb)
    finally:
        os.close(fd)


def test_a_value_over_the_threshold_starts_again_from_the_file_with_the_same_commands(
    tmp_path: Path,
) -> None:
    """Past the threshold the consumer reads the value from its first byte:
    from the held bytes without ``fd``, from the file with it (nothing held
    past the hold); the same commands either way, and the walk ends checked."""
    rdb = _rdb(_hash(b"big", 3000, 1000), b"\x00\x01z\x02hi")

    def commands(rec: object) -> object:
        if isinstance(rec, LargeKey):
            return list(rebuild(rec.source, rec.type_id, rec.kind, rec.key, b"tmp"))
        return rec

    plain = RdbKeys(io.BytesIO(rdb), 0, 1 << 20, len(rdb))
    want = [commands(r) for r in plain.records()]
    fd = _file(tmp_path, rdb)
    try:
        with open(fd, "rb", buffering=0, closefd=False) as fh:
            walk = RdbKeys(fh, 0, 1 << 20, len(rdb), fd=fd, hold=16 << 10)  # type: ignore[arg-type]
            got = [commands(r) for r in walk.records()]
    finally:
        os.close(fd)
    assert got == want and walk.large == 1 and walk.size == len(rdb)
    first = got[0]
    assert isinstance(first, list)
    assert sum((len(c) - 2) // 2 for c in first if c[0] == b"HSET") == 3000  # every field
