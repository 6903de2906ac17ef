"""An RDB's own integrity marks, checked in Python as the bytes stream past:
the ``REDIS0011`` / ``VALKEY080`` header (format version), the EOF opcode and the CRC-64
trailer.

Why a module of its own: a backup must never commit a truncated or damaged
snapshot, and a restore must refuse one before Redis loads it, with or without
``redis-check-rdb`` installed. The checks here need no server and no tool;
they hold back only the last 9 bytes, so an RDB of any size is checked
without being buffered. The CRC runs at GB/s with the optional ``anycrc``
package and falls back to a table-driven pure-Python loop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FAST_CRC64",
    "Crc64",
    "RdbTrailerCheck",
    "RdbValidator",
    "crc64_redis",
    "rdb_header",
    "rdb_trailer_check",
    "rdb_trailer_ok",
    "rdb_version_from_header",
]

try:  # anycrc: C (PCLMUL) implementation of the CRC-64/REDIS catalogue model
    import anycrc as _anycrc

    _ANYCRC: Any = _anycrc.Model("CRC64-REDIS")
    if _ANYCRC.calc(b"123456789") != 0xE9C6D914C4B8D9CA:  # pragma: no cover
        _ANYCRC = None
except Exception:  # pragma: no cover - optional dependency
    _ANYCRC = None

#: True when CRC-64 runs at GB/s (anycrc installed); the fallback does ~10 MB/s.
FAST_CRC64: bool = _ANYCRC is not None

_CRC64_POLY_REFLECTED = 0x95AC9329AC4BC9B5  # 0xad93d23594c935a9 bit-reversed


def _crc64_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ (_CRC64_POLY_REFLECTED if crc & 1 else 0)
        table.append(crc)
    return table


_CRC64_TABLE = _crc64_table()


def crc64_redis(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-64/Jones as Redis computes it (reflected, init 0, xorout 0).

    ``crc`` continues a previous result, so data can be fed in chunks.
    """
    if _ANYCRC is not None:
        return int(_ANYCRC.calc(data, crc)) if len(data) else crc
    table = _CRC64_TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


class Crc64:
    """Streaming :func:`crc64_redis`."""

    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self.value = crc64_redis(data, self.value)


#: The two magics: Redis (and Valkey up to 8) write ``REDIS`` + 4 digits,
#: Valkey 9 ``VALKEY`` + 3 digits; nine bytes either way.
_RDB_MAGICS = (b"REDIS", b"VALKEY")
_RDB_OPCODE_EOF = 0xFF


def rdb_header(first9: bytes) -> tuple[str, int]:
    """``b"REDIS0010"`` -> ("REDIS", 10); ``b"VALKEY080"`` -> ("VALKEY", 80).
    Raises ValueError when it is not an RDB header."""
    head = bytes(first9[:9])
    for magic in _RDB_MAGICS:
        digits = head[len(magic) : 9]
        if len(head) == 9 and head.startswith(magic) and digits.isdigit():
            return magic.decode(), int(digits)
    raise ValueError(f"not an RDB header: {head!r}")


def rdb_version_from_header(first9: bytes) -> int:
    """``b"REDIS0010"`` -> 10, ``b"VALKEY080"`` -> 80. Raises ValueError when it
    is not an RDB header."""
    return rdb_header(first9)[1]


class RdbValidator:
    """Checks magic and CRC-64 trailer of an RDB seen as a stream of chunks.

    Holds back the last 8 bytes (the trailer) so nothing is buffered beyond
    one chunk. ``finish()`` returns (ok, message).
    """

    def __init__(self, crc: bool = True) -> None:
        self.crc = Crc64() if crc else None
        self.head = b""
        self.tail = b""
        self.total = 0

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        if not chunk:
            return
        self.total += len(chunk)
        if len(self.head) < 9:
            self.head += bytes(chunk[: 9 - len(self.head)])
        if self.crc is None:
            self.tail = (self.tail + bytes(chunk[-9:]))[-9:]
            return
        if len(chunk) >= 9:  # the held-back bytes are not the trailer: CRC them, no copy
            self.crc.update(self.tail)
            self.crc.update(memoryview(chunk)[:-9])
            self.tail = bytes(chunk[-9:])
            return
        data = self.tail + bytes(chunk)
        self.crc.update(data[:-9])
        self.tail = data[-9:]

    @property
    def version(self) -> int | None:
        try:
            return rdb_version_from_header(self.head)
        except ValueError:
            return None

    def finish(self) -> tuple[bool, str]:
        version = self.version
        if version is None:
            return False, f"not an RDB file (starts with {self.head[:9]!r})"
        if version < 5:  # no checksum before RDB 5
            ok = len(self.tail) >= 1 and self.tail[-1] == _RDB_OPCODE_EOF
            return ok, "RDB ends with EOF opcode" if ok else "RDB is truncated (no EOF opcode)"
        if self.total < 18 or self.tail[0] != _RDB_OPCODE_EOF:
            return False, "RDB is truncated (no EOF opcode before the checksum)"
        expected = int.from_bytes(self.tail[1:], "little")
        if expected == 0:
            return True, "checksum disabled on the server (rdbchecksum no): trailer not checked"
        if self.crc is None:
            return True, "CRC64 not computed"
        self.crc.update(self.tail[:1])  # the EOF opcode is covered by the CRC
        if self.crc.value != expected:
            return False, (
                f"CRC64 mismatch: trailer says {expected:016x}, data gives {self.crc.value:016x}"
            )
        return True, "CRC64 OK"


@dataclass(frozen=True)
class RdbTrailerCheck:
    ok: bool
    version: int | None
    message: str


def rdb_trailer_check(
    path: str | os.PathLike[str], *, chunk_size: int = 4 << 20
) -> RdbTrailerCheck:
    """Check an RDB file's magic, EOF opcode and CRC-64 trailer, streaming it."""
    validator = RdbValidator()
    with open(path, "rb") as fh:
        for _ in range(1 << 40):  # bounded by the file size
            chunk = fh.read(chunk_size)
            if not chunk:
                break
            validator.update(chunk)
    ok, message = validator.finish()
    return RdbTrailerCheck(ok=ok, version=validator.version, message=message)


def rdb_trailer_ok(path: str | os.PathLike[str]) -> bool:
    """True when the RDB at ``path`` has a valid magic and CRC-64 trailer."""
    return rdb_trailer_check(path).ok
