"""``restore --to-redis``'s hot path for plain string records
(``restore_strings.pack_string_run``): every command it packs must be, byte
for byte, the one the general route packs for that record (``pack_restore``
of ``dump_payload`` of the value's RDB bytes: what the target checks and
restores), and it must stop exactly before what it does not take, leaving
that record to the general route. Expected commands come from the general
route, not from the hot path; the walk's ``strings`` hook must yield the
same keys and counts with and without it."""

from __future__ import annotations

import io

import pytest

from backupctl.redis.dump_payload import dump_payload
from backupctl.redis.rdb_keys import KeyValue, RdbKeys
from backupctl.redis.resp_pipeline import FileSlice, pack_restore
from backupctl.redis.restore_strings import Restore, pack_string_run, restore_parts

from support.rdb_build import key, ln, rdb, st

LZF_ABC12 = b"\xc3" + ln(7) + ln(12) + bytes([2]) + b"abc" + bytes([0xE0, 0x00, 0x02])
NOW = 1_800_000_000_000
LATER = 1_900_000_000_000
PAD = b"\xff" * 64  # what follows a run in the buffer (an EOF opcode, then room)


def _expire(ms: int) -> bytes:
    return b"\xfc" + ms.to_bytes(8, "little", signed=True)


# (record bytes, key, expiry, value's RDB bytes, idle, freq)
RECORDS = [
    (key(0, "plain", st("hello")), b"plain", 0, st("hello"), None, None),
    (_expire(LATER) + key(0, "ttl", st("v" * 100)), b"ttl", LATER, st("v" * 100), None, None),
    (key(0, "k" * 70, st("x" * 300)), b"k" * 70, 0, st("x" * 300), None, None),  # 14-bit
    (key(0, "big", b"\x80" + (70_000).to_bytes(4, "big") + b"b" * 70_000), b"big", 0,
     b"\x80" + (70_000).to_bytes(4, "big") + b"b" * 70_000, None, None),  # 32-bit length
    (key(0, "lzf", LZF_ABC12), b"lzf", 0, LZF_ABC12, None, None),
    (key(0, "i8", b"\xc0\x05"), b"i8", 0, b"\xc0\x05", None, None),
    (key(0, "i16", b"\xc1\x05\x01"), b"i16", 0, b"\xc1\x05\x01", None, None),
    (key(0, "i32", b"\xc2\x05\x01\x00\x00"), b"i32", 0, b"\xc2\x05\x01\x00\x00", None, None),
    (b"\xf8" + ln(42) + key(0, "idle", st("i")), b"idle", 0, st("i"), 42, None),
    (b"\xf8" + ln(9000) + key(0, "idle2", st("i")), b"idle2", 0, st("i"), 9000, None),
    (b"\xf9\x07" + key(0, "freq", st("f")), b"freq", 0, st("f"), None, 7),
    (_expire(LATER) + b"\xf9\xff" + key(0, "both", st("")), b"both", LATER, st(""), None, 255),
]  # fmt: skip


def _general(rec: tuple, version: int, replace: bool) -> bytes:  # type: ignore[type-arg]
    _, name, expire, value, idle, freq = rec
    return pack_restore(name, expire, dump_payload(b"\x00" + value, version), replace, idle, freq)


@pytest.mark.parametrize("replace", [False, True])
@pytest.mark.parametrize("version", [9, 12])
def test_every_record_is_packed_as_the_general_route_packs_it(version: int, replace: bool) -> None:
    buf = b"".join(r[0] for r in RECORDS) + PAD
    out: list = []  # type: ignore[type-arg]
    run = pack_string_run(buf, 0, now_ms=NOW, version=version, replace=replace, hold=1 << 20,
                          room=1 << 30, most=1000, out=out)  # fmt: skip
    assert run.records == len(RECORDS)
    assert run.end == len(buf) - len(PAD)
    assert out == [_general(r, version, replace) for r in RECORDS]
    assert run.size == sum(len(c) for c in out)


def _stops_before(record: bytes, **kw: int) -> int:
    first = RECORDS[0][0]
    buf = first + record + RECORDS[1][0] + PAD
    out: list = []  # type: ignore[type-arg]
    args = {"now_ms": NOW, "version": 12, "replace": False, "hold": 1 << 20, "room": 1 << 30,
            "most": 1000, **kw}  # fmt: skip
    run = pack_string_run(buf, 0, out=out, **args)  # type: ignore[arg-type]
    assert out == [_general(RECORDS[0], 12, False)]  # the record before it, and no more
    assert run.end == len(first)
    return run.records


@pytest.mark.parametrize(
    "record",
    [
        _expire(NOW - 1) + key(0, "expired", st("x")),  # the walk skips and counts it
        key(2, "a-set", ln(1) + st("m")),  # another type
        b"\x00\xc3" + ln(4) + ln(3) + b"\x02abc" + st("v"),  # an LZF key
        key(0, "v", b"\xc3" + ln(1) + ln(200) + b"\x00"),  # implausible LZF lengths
        key(0, "v", b"\xc3" + b"\x80" + (5).to_bytes(4, "big") + ln(5) + b"\x04abcde"),
        b"\xf8\x80" + (1 << 20).to_bytes(4, "big") + key(0, "idle", st("x")),  # 32-bit idle
        b"\xfe\x01" + key(0, "db1", st("x")),  # SELECTDB: the walk's
    ],
    ids=["expired", "set", "lzf-key", "implausible-lzf", "lzf-32bit", "idle-32bit", "selectdb"],
)
def test_it_stops_before_a_record_it_does_not_take(record: bytes) -> None:
    assert _stops_before(record) == 1


def test_it_stops_before_a_value_over_the_hold_and_when_the_batch_is_full() -> None:
    assert _stops_before(key(0, "v", st("x" * 300)), hold=300) == 1  # 302 bytes > hold
    out: list = []  # type: ignore[type-arg]
    buf = b"".join(r[0] for r in RECORDS) + PAD
    run = pack_string_run(buf, 0, now_ms=NOW, version=12, replace=False, hold=1 << 20,
                          room=1 << 30, most=3, out=out)  # fmt: skip
    assert run.records == 3 and run.end == sum(len(r[0]) for r in RECORDS[:3])
    out.clear()
    first = len(_general(RECORDS[0], 12, False))
    run = pack_string_run(buf, 0, now_ms=NOW, version=12, replace=False, hold=1 << 20,
                          room=first, most=1000, out=out)  # fmt: skip
    assert run.records == 1  # the room is full after the first


def test_a_record_cut_by_the_buffers_end_is_left_for_the_general_route() -> None:
    whole = b"".join(r[0] for r in RECORDS[:3])
    for cut in range(len(whole) - 40, len(whole) + 1):
        buf = whole[:cut]  # the stream goes on after it: the buffer ends in a record
        out: list = []  # type: ignore[type-arg]
        run = pack_string_run(buf, 0, now_ms=NOW, version=12, replace=False, hold=1 << 20,
                              room=1 << 30, most=1000, out=out)  # fmt: skip
        ends = [sum(len(r[0]) for r in RECORDS[: i + 1]) for i in range(3)]
        assert run.end in (0, *ends) and run.end <= cut  # only records wholly in the buffer
        assert out == [_general(r, 12, False) for r in RECORDS[: run.records]]


@pytest.mark.parametrize("rec", RECORDS, ids=[r[1][:8].decode() for r in RECORDS])
def test_a_packed_restore_reads_back_as_what_it_was_packed_from(rec: tuple) -> None:  # type: ignore[type-arg]
    _, name, expire, value, idle, freq = rec
    payload = dump_payload(b"\x00" + value, 12)
    assert restore_parts(_general(rec, 12, True)) == Restore(name, expire, payload, idle, freq)
    part = FileSlice(3, 100, 5000, b"\x00", 12)
    packed = pack_restore(name, expire, part, False, idle, freq)
    assert restore_parts(packed) == Restore(name, expire, part, idle, freq)


def test_the_walk_with_the_hook_counts_and_yields_the_same_keys_as_without() -> None:
    body = b"\xfe\x00\xfb" + ln(30) + ln(3)
    for i in range(300):
        rec = RECORDS[i % len(RECORDS)]
        body += rec[0].replace(b"\x00" + st(rec[1]), b"\x00" + st(rec[1] + b"%d" % i), 1)
        if i % 50 == 7:
            body += key(2, f"set{i}", ln(1) + st("m")) + _expire(NOW - 5) + key(0, "gone", st("x"))
    data = rdb(body)
    plain = RdbKeys(io.BytesIO(data), NOW, 1 << 20)
    want = [(r.db, r.key) for r in plain.records() if isinstance(r, KeyValue)]
    packed: list = []  # type: ignore[type-arg]

    def hook(buf: bytes, pos: int, db: int) -> tuple[int, int]:
        run = pack_string_run(buf, pos, now_ms=NOW, version=12, replace=False, hold=1 << 20,
                              room=1 << 30, most=7, out=packed)  # fmt: skip
        return run.end, run.records

    fast = RdbKeys(io.BytesIO(data), NOW, 1 << 20, strings=hook)
    yielded = [(r.db, r.key) for r in fast.records() if isinstance(r, KeyValue)]
    got = sorted(yielded + [(0, restore_parts(p).key) for p in packed])
    assert packed and got == sorted(want)
    assert fast.keys == plain.keys and fast.expired == plain.expired == {0: 6}
    assert fast.size == plain.size == len(data)
