"""The reader's hot path for runs of plain string records
(``rdb_reader.pass_plain_strings``): it must count, locate and refuse exactly
what the general walk does, whatever the records around it and wherever the
read buffer ends. Expected figures come from the builder, not the reader."""

from __future__ import annotations

import io

import pytest

from backupctl.redis.rdb_reader import (
    LargeValue,
    RdbFormatError,
    pass_plain_strings,
    read_rdb,
)

from support.rdb_build import key, ln, rdb, st

LZF_ABC12 = b"\xc3" + ln(7) + ln(12) + bytes([2]) + b"abc" + bytes([0xE0, 0x00, 0x02])
EXPIRE_MS = b"\xfc" + (1_900_000_000_000).to_bytes(8, "little")


class Trickle(io.RawIOBase):
    """A stream handing out at most ``step`` bytes per read: records straddle
    every refill of the reader's buffer."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data, self._pos, self._step = data, 0, step

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        n = min(len(b), self._step, len(self._data) - self._pos)
        b[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


def _records() -> tuple[bytes, int, int, list[tuple[str, int]]]:
    """Many string keys of every kind the hot path passes or hands back:
    (body, keys, of which expiring, (key, value size) of each)."""
    body = b"\xfe\x00\xfb" + ln(300) + ln(40)
    sizes: list[tuple[str, int]] = []
    expiring = 0
    for i in range(300):
        name = f"user:{i}:profile" if i % 7 else "k" * 64 + str(i)  # 6- and 14-bit key lengths
        if i % 5 == 0:
            value = LZF_ABC12
        elif i % 11 == 0:
            value = b"\xc0\x05"  # an int8: the slow path
        elif i % 13 == 0:
            value = st("v" * (20_000 + i))  # a 32-bit length: the slow path
        else:
            value = st("x" * (i % 90 + 10 * (i % 3)) + "y" * (i // 50) * 70)
        prefix = b""
        if i % 4 == 0:
            prefix = EXPIRE_MS
            expiring += 1
        body += prefix + key(0, name, value)
        sizes.append((name, len(value)))
        if i == 150:
            body += key(2, "a-set", ln(2) + st("a") + st("b"))  # another type between them
    return body, 301, expiring, sizes


@pytest.mark.parametrize("step", [1 << 20, 4093, 61], ids=["one-buffer", "4k", "61-bytes"])
def test_a_run_of_strings_is_counted_as_the_format_says(step):
    body, keys, expiring, sizes = _records()
    report = read_rdb(Trickle(rdb(body), step), deep=False)  # type: ignore[arg-type]
    assert report.keys == {0: keys}
    assert report.expires == {0: expiring}
    assert report.types == {"string": keys - 1, "set": 1}
    top = sorted(sizes, key=lambda kv: kv[1], reverse=True)[:5]
    assert [(v.key, v.size) for v in report.largest[:5]] == top
    assert all(isinstance(v, LargeValue) and v.type == "string" for v in report.largest[:5])


def test_damage_inside_a_run_is_reported_at_its_byte_with_its_key():
    body, _, _, _ = _records()
    bad_value = b"\xc3" + ln(1) + ln(1 << 13) + b"x"  # implausible lengths for 1 byte
    bad_record = key(0, "the-bad-one", bad_value)
    after = b"".join(key(0, f"after{i}", st("z")) for i in range(50))  # the run goes on
    data = rdb(body + key(0, "fine", st("ok")) + bad_record + after)
    at = data.index(bad_record) + 1 + len(st("the-bad-one"))
    with pytest.raises(RdbFormatError, match="implausible LZF") as err:
        read_rdb(io.BytesIO(data), deep=False)
    assert err.value.offset == at + 1  # after the LZF marker, as the slow path reads it
    assert "the-bad-one" in str(err.value)


def test_a_run_cut_short_is_truncated_not_passed():
    body, _, _, _ = _records()
    data = rdb(body)
    with pytest.raises(RdbFormatError, match="truncated"):
        read_rdb(io.BytesIO(data[: len(data) // 2]), deep=False)


RUN = key(0, "a", st("bb")) + EXPIRE_MS + key(0, "c", LZF_ABC12) + key(0, "d", st("e"))
PAD = b"\xff" * 40  # EOF opcodes past the hot path's slack: each record above is "in the buffer"


@pytest.mark.parametrize(
    ("buf", "floor", "want"),
    [
        (RUN + PAD, 100, (len(RUN), 3, 1)),
        (RUN + PAD, 9, (len(key(0, "a", st("bb"))), 1, 0)),  # the LZF value (10 B) may be largest
        (key(0, "a", b"\xc0\x05") + PAD, 100, (0, 0, 0)),  # an integer: the slow path
        (key(1, "l", st("x")) + PAD, 100, (0, 0, 0)),  # another type
        (EXPIRE_MS + key(1, "l", st("x")) + PAD, 100, (0, 0, 0)),  # expiry, then another type
        (b"\xfd" + b"\0" * 4 + key(0, "a", st("b")) + PAD, 100, (0, 0, 0)),  # second expiry
        (key(0, "a", b"\xc3" + ln(0) + ln(0)) + PAD, 100, (0, 0, 0)),  # LZF of 0 bytes
        (key(0, "k" * 40, st("x")) + b"\xff" * 10, 100, (0, 0, 0)),  # its value near the end
        (b"\0\xc0\x01" + st("x") + PAD, 100, (0, 0, 0)),  # an integer key
    ],
    ids=[
        "run",
        "floor",
        "int-value",
        "other-type",
        "expiry-other",
        "expire-s",
        "lzf-empty",
        "near-end",
        "int-key",
    ],
)
def test_pass_plain_strings_passes_only_what_the_walk_would_pass_alike(buf, floor, want):
    assert pass_plain_strings(buf, 0, floor) == want
