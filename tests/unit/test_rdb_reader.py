"""The RDB reader on the files real servers wrote (tests/data/rdb/, made by
tests/support/make_rdb_samples.py) and on hand-built RDBs for every encoding,
including the old ones no server we run still writes, and for errors."""

from __future__ import annotations

import io
import json
import re
import struct
import subprocess
from pathlib import Path

import pytest

from backupctl.redis.rdb_reader import (
    LargeValue,
    RdbFormatError,
    RdbVersionError,
    read_rdb,
    read_rdb_file,
)

from support.rdb_build import (
    intset,
    key,
    listpack,
    ln,
    rdb,
    st,
    stream_node,
    stream_value,
    ziplist,
    zipmap,
)
from support.server_versions import SERVERS

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "rdb"
SAMPLE_FILES = sorted(SAMPLES.glob("*.rdb"))


def test_there_is_a_sample_from_every_server_we_support():
    names = {p.stem for p in SAMPLE_FILES}
    assert {"redis-7.0.15", "redis-8.0.2", "valkey-8.1.1", "valkey-9.1.2"} <= names


@pytest.mark.parametrize("deep", [True, False], ids=["deep", "shallow"])
@pytest.mark.parametrize("path", SAMPLE_FILES, ids=[p.stem for p in SAMPLE_FILES])
def test_sample_counts_are_what_the_server_was_given(path, deep):
    want = json.loads(path.with_suffix(".json").read_text())
    report = read_rdb_file(path, deep=deep)
    assert f"{report.magic}{report.version:04d}"[:9] == want["header"] or (
        report.magic == "VALKEY" and want["header"] == f"VALKEY{report.version:03d}"
    )
    assert report.keys == {int(k): v for k, v in want["keys"].items()}
    assert report.expires == {int(k): v for k, v in want["expires"].items()}
    assert report.types == want["types"]
    assert report.functions == want["functions"]
    assert report.total_keys == sum(want["keys"].values())
    assert report.size == path.stat().st_size
    assert report.checksum  # the servers save with rdbchecksum yes
    flavour, version = want["server"].split()
    assert report.aux[f"{flavour}-ver"] == version
    assert report.largest[0].key == "hash:big"
    assert [v.size for v in report.largest] == sorted(
        (v.size for v in report.largest), reverse=True
    )


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=[p.stem for p in SAMPLE_FILES])
def test_a_flipped_byte_in_a_sample_is_an_error_with_its_offset(path, tmp_path):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle] ^= 0x55
    bad = tmp_path / "bad.rdb"
    bad.write_bytes(bytes(data))
    with pytest.raises(RdbFormatError) as err:
        read_rdb_file(bad)
    assert 0 <= err.value.offset <= len(data)
    assert str(err.value).endswith(f"at offset {err.value.offset}")


# -- hand-built files: every type id and encoding ------------------------------

LZF_ABC12 = b"\xc3" + ln(7) + ln(12) + bytes([2]) + b"abc" + bytes([0xE0, 0x00, 0x02])
MODULE_ID = ln((0x1234567 << 10) | 1)
MODULE_OPS = ln(1) + ln(5) + ln(2) + ln(7) + ln(3) + b"\0" * 4 + ln(4) + b"\0" * 8
MODULE_OPS += ln(5) + st("payload") + ln(0)
ENCODINGS = [
    # id, case, RDB version, magic, kind, value bytes
    ("raw string", 0, 1, "REDIS", "string", st("hello")),
    ("int8 string", 0, 3, "REDIS", "string", b"\xc0\x05"),
    ("int16 string", 0, 3, "REDIS", "string", b"\xc1\x34\x12"),
    ("int32 string", 0, 3, "REDIS", "string", b"\xc2\x78\x56\x34\x12"),
    ("LZF string", 0, 6, "REDIS", "string", LZF_ABC12),
    ("linked list", 1, 6, "REDIS", "list", ln(2) + st("a") + st("b")),
    ("hashtable set", 2, 6, "REDIS", "set", ln(2) + st("a") + b"\xc0\x07"),
    ("zset text scores", 3, 6, "REDIS", "zset", ln(3) + st("a") + st("1.5") + st("b") + b"\xfd"
     + st("c") + b"\xfe"),
    ("hashtable hash", 4, 6, "REDIS", "hash", ln(1) + st("f") + st("v")),
    ("zset binary scores", 5, 8, "REDIS", "zset", ln(1) + st("m") + struct.pack("<d", 2.5)),
    ("module v2", 7, 9, "REDIS", "module", MODULE_ID + MODULE_OPS),
    ("zipmap", 9, 3, "REDIS", "hash", st(zipmap([(b"f", b"v"), (b"name", b"redis")]))),
    ("list ziplist", 10, 6, "REDIS", "list", st(ziplist(["a", 1, 300, -70000, 1 << 40, "b" * 70]))),
    ("intset 16", 11, 6, "REDIS", "set", st(intset([-5, 1, 9]))),
    ("intset 64", 11, 6, "REDIS", "set", st(intset([-(1 << 40), 1 << 40], width=8))),
    ("zset ziplist", 12, 6, "REDIS", "zset", st(ziplist(["a", 1, "b", "2.5"]))),
    ("hash ziplist", 13, 6, "REDIS", "hash", st(ziplist(["f", "v", "g", 7]))),
    ("quicklist", 14, 8, "REDIS", "list", ln(2) + st(ziplist(["a", "b"])) + st(ziplist([1]))),
    ("stream v1", 15, 9, "REDIS", "stream",
     stream_value(1, stream_node([{"a": "1"}, {"a": "2"}]))),
    ("hash listpack", 16, 10, "REDIS", "hash", st(listpack(["f", "v", "n", -3]))),
    ("zset listpack", 17, 10, "REDIS", "zset", st(listpack(["m", 1, "n", "1.5"]))),
    ("quicklist 2", 18, 10, "REDIS", "list", ln(2) + ln(2) + st(listpack(["a", 5000, 1 << 33]))
     + ln(1) + st("x" * 300)),
    ("stream v2", 19, 10, "REDIS", "stream",
     stream_value(2, stream_node([{"a": "1"}, {"b": "2", "c": "3"}]))),
    ("set listpack", 20, 11, "REDIS", "set", st(listpack(["a", "b", 3, "é" * 40]))),
    ("stream v3", 21, 11, "REDIS", "stream",
     stream_value(3, stream_node([{"t": "1"}, {"t": "2"}]), groups=2)),
    ("hash metadata 7.4 RC", 22, 12, "REDIS", "hash", ln(2) + ln(0) + st("f") + st("v")
     + ln(1_800_000_000_000) + st("g") + st("w")),
    ("hash listpack TTL 7.4 RC", 23, 12, "REDIS", "hash",
     st(listpack(["f", "v", 0, "g", "w", 1_800_000_000_000]))),
    ("hash metadata", 24, 12, "REDIS", "hash", (1_800_000_000_000).to_bytes(8, "little")
     + ln(2) + ln(0) + st("f") + st("v") + ln(5) + st("g") + st("w")),
    ("hash listpack TTL", 25, 12, "REDIS", "hash", (1_800_000_000_000).to_bytes(8, "little")
     + st(listpack(["f", "v", 0, "g", "w", 1_800_000_000_000]))),
    ("valkey hash with field TTLs", 22, 80, "VALKEY", "hash", ln(2) + st("f") + st("v")
     + (-1).to_bytes(8, "little", signed=True) + st("g") + st("w")
     + (1_800_000_000_000).to_bytes(8, "little")),
]  # fmt: skip


@pytest.mark.parametrize("deep", [True, False], ids=["deep", "shallow"])
@pytest.mark.parametrize(
    ("type_id", "version", "magic", "kind", "value"),
    [case[1:] for case in ENCODINGS],
    ids=[case[0] for case in ENCODINGS],
)
def test_every_type_id_and_encoding_is_walked(type_id, version, magic, kind, value, deep):
    data = rdb(key(type_id, "k", value) + key(0, "after", st("x")), version=version, magic=magic)
    report = read_rdb(io.BytesIO(data), deep=deep)
    assert (report.magic, report.version) == (magic, version)
    assert report.types == {kind: 1, "string": 2} if kind == "string" else {kind: 1, "string": 1}
    assert report.keys == {0: 2}
    assert report.size == len(data)
    assert report.checksum == (None if version < 5 else int.from_bytes(data[-8:], "little"))
    assert {v.key for v in report.largest} == {"k", "after"}


def test_every_opcode_is_understood():
    body = (
        b"\xfa" + st("redis-ver") + st("7.4.1")
        + b"\xfa" + st("redis-bits") + b"\xc0\x40"
        + b"\xf5" + st("#!lua name=lib\nredis.register_function('f', function() end)")
        + b"\xf6" + st("oldlib") + st("LUA") + ln(1) + st("desc") + st("code")
        + b"\xf7" + MODULE_ID + ln(2) + ln(2) + MODULE_OPS
        + b"\xfe" + ln(0) + b"\xfb" + ln(3) + ln(1) + b"\xf4" + ln(100) + ln(2) + ln(1)
        + b"\xfc" + (1_800_000_000_000).to_bytes(8, "little") + key(0, "ms", st("1"))
        + b"\xf8" + ln(77) + key(0, "idle", st("1"))
        + b"\xf9" + b"\x05" + key(0, "freq", st("1"))
        + b"\xfe" + ln(5) + b"\xfd" + (2_000_000_000).to_bytes(4, "little") + key(0, "s", st("1"))
        + b"\xfe" + ln(300) + key(0, "far", st("1"))
    )  # fmt: skip
    report = read_rdb(io.BytesIO(rdb(body)))
    assert report.aux == {"redis-ver": "7.4.1", "redis-bits": "64"}
    assert report.functions == 2
    assert report.module_aux == 1
    assert report.keys == {0: 3, 5: 1, 300: 1}
    assert report.expires == {0: 1, 5: 1}
    assert report.total_keys == 5


def test_rdb_before_5_has_no_checksum_and_zero_means_disabled():
    old = rdb(key(0, "k", st("v")), version=4)
    assert read_rdb(io.BytesIO(old)).checksum is None
    disabled = rdb(key(0, "k", st("v")), version=10, checksum=False)
    assert read_rdb(io.BytesIO(disabled)).checksum == 0


def test_largest_values_come_largest_first_with_printable_keys():
    body = b"".join(key(0, f"k{i}", st("x" * i)) for i in range(1, 30))
    body += key(0, b"bin\x00\xff\n", st("y" * 500))
    report = read_rdb(io.BytesIO(rdb(body)))
    assert len(report.largest) == 10
    assert report.largest[0] == LargeValue(db=0, key="bin\\x00\\xff\\x0a", type="string", size=502)
    assert [v.key for v in report.largest[1:4]] == ["k29", "k28", "k27"]


def test_a_stream_that_returns_short_reads_is_read_the_same():
    data = (SAMPLES / "redis-8.0.2.rdb").read_bytes()

    class Trickle(io.RawIOBase):
        def __init__(self) -> None:
            self.pos = 0

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            chunk = data[self.pos : self.pos + min(n if n >= 0 else len(data), 333)]
            self.pos += len(chunk)
            return chunk

    assert read_rdb(Trickle()) == read_rdb(io.BytesIO(data))  # type: ignore[arg-type]


def test_deep_finds_what_shallow_skips():
    lp = bytearray(listpack(["f", "v"]))
    lp[-1] = 0xFE
    data = rdb(key(16, "foo", st(bytes(lp))), version=10)
    assert read_rdb(io.BytesIO(data), deep=False).keys == {0: 1}
    with pytest.raises(RdbFormatError) as err:
        read_rdb(io.BytesIO(data))
    blob_at = data.index(bytes(lp))
    assert str(err.value) == (
        f"bad listpack terminator in key 'foo' (hash) at offset {blob_at + len(lp) - 1}"
    )


# -- errors: what, where, at which offset --------------------------------------

GOOD = rdb(key(0, "k", st("value")) + key(16, "h", st(listpack(["f", "v"]))), version=10)


def _error(data: bytes, *, deep: bool = True, file: Path | None = None) -> RdbFormatError:
    with pytest.raises(RdbFormatError) as err:
        if file is not None:
            file.write_bytes(data)
            read_rdb_file(file, deep=deep)
        else:
            read_rdb(io.BytesIO(data), deep=deep)
    assert str(err.value).endswith(f" at offset {err.value.offset}")
    assert "\n" not in str(err.value)
    return err.value


def _lp_with(at: int, byte: int) -> bytes:
    lp = bytearray(listpack(["f", "v"]))
    lp[at] = byte
    return bytes(lp)


ERRORS = [
    # id, file bytes, offset, words in the message
    ("truncated value", GOOD[:14], 14, "truncated"),
    ("truncated trailer", GOOD[:-3], len(GOOD) - 3, "truncated"),
    ("CRC mismatch", GOOD[:-1] + bytes([GOOD[-1] ^ 1]), len(GOOD) - 8, "CRC-64 mismatch"),
    ("unknown type", rdb(key(30, "k", st("v")), version=10), 9, "unknown value type or opcode 30"),
    ("type newer than the RDB", rdb(key(20, "k", st(listpack(["a"]))), version=10), 9,
     "needs RDB 11"),
    ("pre-release module", rdb(key(6, "m", MODULE_ID), version=9), 12, "pre-release"),
    ("data after the end", GOOD + b"junk", len(GOOD), "after the end"),
    ("bad listpack entry", rdb(key(16, "h", st(_lp_with(6, 0xF7))), version=10), 13 + 6,
     "bad listpack entry encoding 0xf7 in key 'h' (hash)"),
    ("bad listpack back-length", rdb(key(16, "h", st(_lp_with(8, 9))), version=10), 13 + 8,
     "back-length"),
    ("odd pairs", rdb(key(16, "h", st(listpack(["f"]))), version=10), 12, "multiple of 2"),
    ("bad ziplist prevlen", rdb(key(13, "h", st(ziplist(["a", "b"])[:13] + b"\x07"
     + ziplist(["a", "b"])[14:])), version=6), 13 + 13, "previous is 7"),
    ("unsorted intset", rdb(key(11, "s", st(intset([3, 1]))), version=6), 13 + 10, "sorted"),
    ("bad zipmap end", rdb(key(9, "z", st(zipmap([(b"f", b"v")])[:-1] + b"\xfe")), version=3),
     13 + 6, "bad zipmap length"),
    ("bad quicklist container", rdb(key(18, "l", ln(1) + ln(3) + st("x")), version=10), 13,
     "quicklist container 3"),
    ("bad stream node key", rdb(key(21, "s", ln(1) + st("short") + st(b"")), version=11), 13,
     "128-bit"),
    ("bad module opcode", rdb(key(7, "m", MODULE_ID + ln(9)), version=9), 12 + len(MODULE_ID),
     "unknown module value opcode 9"),
    ("bad module aux when", rdb(b"\xf7" + MODULE_ID + ln(1) + ln(2) + ln(0), version=9), 9,
     "'when' opcode 1"),
    ("bad LZF reference", rdb(key(13, "h", b"\xc3" + ln(3) + ln(5) + bytes([0x20, 0x09, 0])),
     version=6), 15, "back-reference before the start"),
    ("implausible LZF length", rdb(key(0, "k", b"\xc3" + ln(1) + ln(1 << 30) + b"x"), version=6),
     13, "implausible LZF"),
    ("bad length encoding", rdb(key(2, "k", b"\x82"), version=6), 12, "bad length encoding"),
    ("not an RDB", b"GIF89a\x00\x00\x00\x00", 0, "not an RDB file"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "offset", "words"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS]
)
def test_errors_name_the_problem_and_its_offset(data, offset, words):
    error = _error(data)
    assert words in str(error)
    assert error.offset == offset
    assert not isinstance(error, RdbVersionError)


@pytest.mark.parametrize(
    ("header", "offset"),
    [(b"REDIS0013", 5), (b"VALKEY081", 6), (b"VALKEY011", 6), (b"KEYDB0010", 0)],
)
def test_an_unknown_magic_or_version_is_a_version_error(header, offset):
    error = _error(header + b"\xff" + b"\0" * 8)
    assert isinstance(error, RdbVersionError)
    assert error.offset == offset


def test_a_length_beyond_the_file_fails_before_anything_is_read(tmp_path):
    data = rdb(key(0, "k", ln(1 << 40) + b"x"), version=10)
    error = _error(data, file=tmp_path / "huge.rdb")
    assert "declares 1099511627776 bytes but only" in str(error)
    assert error.offset == 21  # where the 2**40 bytes would start
    streamed = _error(data)  # no size known: the walk runs into the end of the data
    assert "truncated" in str(streamed)
    assert streamed.offset == len(data)


# -- a second opinion: the servers' own checkers, where this machine has them ----


def _checker(sample: str) -> list[str]:
    """The check-rdb of the server that wrote ``sample`` (``redis-8.0.2`` is
    ``redis-8.0`` of the registry); a server the bootstrap did not install fails."""
    flavour, version = sample.split("-", 1)
    server = SERVERS[f"{flavour}-{'.'.join(version.split('.')[:2])}"]
    assert server.version == version, (sample, server.version)
    return server.check_rdb_argv()


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=[p.stem for p in SAMPLE_FILES])
def test_the_servers_own_checker_counts_the_same(path, tmp_path):
    checker = _checker(path.stem)
    out = subprocess.run(
        [*checker, str(path)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "RDB looks OK" in out
    keys = int(re.search(r"\[info\] (\d+) keys read", out).group(1))  # type: ignore[union-attr]
    expires = int(re.search(r"\[info\] (\d+) expires", out).group(1))  # type: ignore[union-attr]
    report = read_rdb_file(path)
    assert (report.total_keys, sum(report.expires.values())) == (keys, expires)


@pytest.mark.parametrize("accelerated", [True, False], ids=["python-lzf", "pure-python"])
def test_lzf_decodes_and_locates_damage_with_and_without_the_c_library(accelerated, monkeypatch):
    from backupctl.redis import lzf

    if not accelerated:
        monkeypatch.setattr(lzf, "_C_LZF", None)
    elif lzf._C_LZF is None:
        pytest.skip("python-lzf is not installed")
    assert lzf.lzf_decompress(bytes([2]) + b"abc" + bytes([0xE0, 0x00, 0x02]), 12) == b"abc" * 4
    assert lzf.lzf_decompress(bytes([1]) + b"ab" + bytes([0x20, 0x01]), 5) == b"ababa"
    with pytest.raises(lzf.LzfError, match="before the start") as err:
        lzf.lzf_decompress(bytes([0x20, 0x09, 0]), 5)
    assert err.value.pos == 0
    with pytest.raises(lzf.LzfError, match="longer than declared"):
        lzf.lzf_decompress(bytes([2]) + b"abc" + bytes([0xE0, 0x00, 0x02]), 11)
    with pytest.raises(lzf.LzfError, match="4 bytes, 6 declared"):
        lzf.lzf_decompress(bytes([3]) + b"abcd", 6)
    with pytest.raises(lzf.LzfError, match="more than LZF can expand"):
        lzf.lzf_decompress(b"\x00a", 10_000)
