"""Fuzzing the RDB reader from the real sample files (tests/data/rdb/), mutated:
flipped bytes, truncations, insertions, huge lengths. Whatever the bytes, the
reader returns a report or raises one RdbFormatError whose offset is inside the
file -- never another exception, never a hang, never an allocation far above
the input's size. Each mutated file is read twice: as mutated (the CRC-64
catches most changes at the end) and re-signed with a fresh CRC, so the
structural checks themselves meet the damage."""

from __future__ import annotations

import contextlib
import io
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from backupctl.redis.rdb import crc64_redis
from backupctl.redis.rdb_reader import RdbFormatError, read_rdb

SAMPLES = {
    p.stem: p.read_bytes()
    for p in sorted((Path(__file__).parent.parent / "data" / "rdb").glob("*.rdb"))
}
NAMES = sorted(SAMPLES)
FUZZ = settings(
    max_examples=60,
    deadline=2000,  # ms per example: a hang fails the test
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)


def _resigned(data: bytes) -> bytes:
    if len(data) < 18:
        return data
    return data[:-8] + crc64_redis(data[:-8]).to_bytes(8, "little")


def _check(data: bytes, deep: bool) -> None:
    for variant in (data, _resigned(data)):
        try:
            report = read_rdb(io.BytesIO(variant), deep=deep)
        except RdbFormatError as exc:
            assert 0 <= exc.offset <= len(variant), str(exc)
            assert str(exc).endswith(f"at offset {exc.offset}")
            assert "\n" not in str(exc)
        else:
            assert report.size == len(variant)


positions = hs.floats(min_value=0, max_value=1, exclude_max=True)


@FUZZ
@given(
    name=hs.sampled_from(NAMES),
    flips=hs.lists(hs.tuples(positions, hs.integers(1, 255)), min_size=1, max_size=4),
    deep=hs.booleans(),
)
def test_flipped_bytes(name, flips, deep):
    data = bytearray(SAMPLES[name])
    for where, mask in flips:
        data[int(where * len(data))] ^= mask
    _check(bytes(data), deep)


@FUZZ
@given(name=hs.sampled_from(NAMES), where=positions, deep=hs.booleans())
def test_truncated(name, where, deep):
    data = SAMPLES[name]
    cut = data[: int(where * len(data))]
    with pytest.raises(RdbFormatError) as err:
        read_rdb(io.BytesIO(cut), deep=deep)
    assert 0 <= err.value.offset <= len(cut)


@FUZZ
@given(
    name=hs.sampled_from(NAMES),
    where=positions,
    extra=hs.binary(min_size=1, max_size=16),
    deep=hs.booleans(),
)
def test_inserted_bytes(name, where, extra, deep):
    data = SAMPLES[name]
    at = int(where * len(data))
    _check(data[:at] + extra + data[at:], deep)


HUGE = [
    b"\x81" + (1 << 62).to_bytes(8, "big"),
    b"\x80\xff\xff\xff\xff",
    b"\x81" + (1 << 40).to_bytes(8, "big"),
    b"\xc3\x80\x7f\xff\xff\xff\x80\xff\xff\xff\xff",
]


@FUZZ
@given(name=hs.sampled_from(NAMES), where=positions, huge=hs.sampled_from(HUGE), deep=hs.booleans())
def test_huge_lengths(name, where, huge, deep):
    data = SAMPLES[name]
    at = int(where * len(data))
    _check(data[:at] + huge + data[at + len(huge) :], deep)


@pytest.mark.parametrize("name", NAMES)
def test_memory_stays_near_the_input_size(name):
    data = SAMPLES[name]
    variants = []
    for i in range(12):  # a spread of huge lengths and flips across the file, re-signed
        at = (i * 7919 + 13) % len(data)
        variants.append(_resigned(data[:at] + HUGE[i % len(HUGE)] + data[at + 9 :]))
        flipped = bytearray(data)
        flipped[at] ^= 0xA5
        variants.append(_resigned(bytes(flipped)))
    tracemalloc.start()
    try:
        for variant in variants:
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            with contextlib.suppress(RdbFormatError):
                read_rdb(io.BytesIO(variant))
            peak = tracemalloc.get_traced_memory()[1] - before
            assert peak < 4 * len(variant) + (1 << 20), (
                f"{peak} bytes for a {len(variant)} byte file"
            )
    finally:
        tracemalloc.stop()
