"""Every key of an RDB stream, one at a time, with its value's raw RDB bytes.

Why it exists: ``restore --to-redis`` writes keys straight from the archive
(``RESTORE`` with a DUMP payload built from the value's own bytes) instead of
starting a local ``redis-server`` that holds the whole dataset. This module
walks the RDB with the reader's primitives (:class:`RdbSource`, the value
type table, the same offsets and :class:`RdbFormatError`) and yields, per
key: database, key bytes, type id, absolute expiry, LRU idle / LFU
frequency, and the value's bytes (type byte + encoded value), recorded while
the reader walks it. Function libraries (both FUNCTION opcodes) are yielded
as they come; module aux records are counted.

Memory is bounded: a value whose bytes grow past ``threshold`` is not held.
Its record is a :class:`LargeKey` whose ``source`` starts again at the
value's first byte; the consumer decodes it from there, streaming
(:mod:`backupctl.redis.rdb_commands`), and the walk goes on after it. When
the stream is a file (``fd``), a value is held only up to ``hold`` bytes: a
larger one (up to the threshold) is a :class:`SpannedKey` saying where its
bytes lie in the file, which the load sends from there. Keys whose expiry is
before ``now_ms`` are skipped and counted, as a loading Redis does.

``strings`` (optional) takes over the commonest records in bulk: after each
string key, it is handed the reader's buffer and position (and the
database) and passes the plain string records that follow there itself
(``restore --to-redis`` packs them as commands at once,
:mod:`backupctl.redis.restore_strings`), returning where it stopped and how
many it passed; they are counted as keys and not yielded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from backupctl.redis.rdb_reader import printable_key, read_header
from backupctl.redis.rdb_source import RdbFormatError, RdbSource, TeeOverflow
from backupctl.redis.rdb_values import ValueType, module_opcodes, value_type

__all__ = [
    "Function",
    "KeyValue",
    "LargeKey",
    "RdbKeys",
    "SpannedKey",
    "StringsHook",
]

# Opcodes, from redis/redis and valkey-io/valkey src/rdb.h (as in rdb_reader).
_SLOT_INFO, _FUNCTION2, _FUNCTION_PRE_GA, _MODULE_AUX = 244, 245, 246, 247
_IDLE, _FREQ, _AUX, _RESIZEDB = 248, 249, 250, 251
_EXPIRETIME_MS, _EXPIRETIME, _SELECTDB, _EOF = 252, 253, 254, 255
_MODULE_OPCODE_UINT = 2
_CHECKSUM_SINCE = 5


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key whose value's bytes are held (at most the threshold)."""

    db: int
    key: bytes
    type_id: int
    kind: str  # "string" "list" "set" "zset" "hash" "stream" "module"
    expire_ms: int | None  # absolute Unix time in ms; None: no expiry
    idle: int | None  # LRU idle seconds
    freq: int | None  # LFU frequency
    raw: bytes  # type byte + encoded value, as in the RDB


@dataclass(frozen=True, slots=True)
class SpannedKey:
    """One key whose value's bytes (larger than the hold, at most the threshold)
    are not held: they lie in the file from ``offset`` on, ``length`` bytes
    (after the type byte)."""

    db: int
    key: bytes
    type_id: int
    kind: str
    expire_ms: int | None
    idle: int | None
    freq: int | None
    offset: int
    length: int


@dataclass(slots=True)
class LargeKey:
    """One key whose value is larger than the threshold: ``source`` is at the
    value's first byte (after the type byte and the key); read it from there
    before asking for the next record (else it is skipped)."""

    db: int
    key: bytes
    type_id: int
    kind: str
    expire_ms: int | None
    idle: int | None
    freq: int | None
    source: RdbSource
    vtype: ValueType
    start: int  # file offset of the value


@dataclass(frozen=True, slots=True)
class Function:
    """A function library (``FUNCTION LOAD`` code); ``code`` is None for the
    pre-release 7.0 RC format, which no released server loads."""

    code: bytes | None
    name: str


#: ``strings(buffer, position, db) -> (position after, records passed)``.
StringsHook = Callable[[bytes, int, int], tuple[int, int]]


@dataclass
class RdbKeys:
    """Walks one RDB stream: ``for rec in RdbKeys(stream, ...).records()``.

    After the walk: ``magic``, ``version``, ``aux``, ``keys`` and ``expired``
    per database, ``functions`` and ``module_aux`` counts, ``size``.
    ``fd`` (the stream is that open file, from offset 0) and ``hold``: see the
    module docstring, as for ``strings``.
    """

    stream: BinaryIO
    now_ms: int
    threshold: int
    size_hint: int | None = None
    fd: int | None = None
    hold: int | None = None
    strings: StringsHook | None = None
    magic: str = ""
    version: int = 0
    aux: dict[str, str] = field(default_factory=dict)
    keys: dict[int, int] = field(default_factory=dict)  # db -> keys yielded
    expired: dict[int, int] = field(default_factory=dict)  # db -> keys skipped as expired
    functions: int = 0
    module_aux: int = 0
    size: int = 0
    large: int = 0  # values over the threshold
    offset: int = 0  # RDB bytes walked so far (at the last record's start)

    def records(self) -> Iterator[KeyValue | SpannedKey | LargeKey | Function]:
        """Every key (and function library) in file order; RdbFormatError at the
        first structural error, the CRC-64 trailer checked at the end."""
        src = RdbSource(self.stream, self.size_hint, fd=self.fd)
        hold = self.threshold if self.hold is None else min(self.hold, self.threshold)
        self.magic, self.version = read_header(src)
        table = [value_type(t, self.magic == "VALKEY") for t in range(256)]
        db = 0
        expire: int | None = None
        idle: int | None = None
        freq: int | None = None
        for _ in range(1 << 62):  # every record consumes input: bounded by the file
            at = self.offset = src.offset
            op = src.u8("an opcode")
            if op < _SLOT_INFO:
                vtype = table[op]
                if vtype is None:
                    raise RdbFormatError(f"unknown value type or opcode {op}", at)
                key = src.string("a key")
                raw_string = None
                if op == 0 and (expire is None or expire >= self.now_ms):
                    raw_string = src.raw_string(hold)  # most keys: no tee, no walk
                if raw_string is not None:
                    yield KeyValue(db, key, op, "string", expire, idle, freq, b"\x00" + raw_string)
                    self.keys[db] = self.keys.get(db, 0) + 1
                elif expire is not None and expire < self.now_ms:
                    self._skip(src, vtype, key)
                    self.expired[db] = self.expired.get(db, 0) + 1
                else:
                    start = src.offset
                    src.tee_start(self.threshold, hold)
                    try:
                        self._walk_value(src, vtype, key)
                        held = src.tee_stop()
                    except TeeOverflow as over:
                        src = over.source
                        self.large += 1
                        rec = LargeKey(db, key, op, vtype.kind, expire, idle, freq, src, vtype,
                                       start)  # fmt: skip
                        yield rec
                        if src.offset == start:  # the consumer did not read it
                            self._skip(src, vtype, key)
                    else:
                        if held is None:  # over the hold: where it lies in the file
                            yield SpannedKey(db, key, op, vtype.kind, expire, idle, freq, start,
                                             src.offset - start)  # fmt: skip
                        else:
                            yield KeyValue(db, key, op, vtype.kind, expire, idle, freq,
                                           bytes((op,)) + held)  # fmt: skip
                    self.keys[db] = self.keys.get(db, 0) + 1
                expire = idle = freq = None
                if op == 0 and self.strings is not None:
                    buf, pos = src.window()
                    end, count = self.strings(buf, pos, db)
                    if count:
                        src.advance(end)
                        self.keys[db] = self.keys.get(db, 0) + count
            elif op == _EOF:
                break
            elif op == _SELECTDB:
                db = src.length("a database number")
            elif op == _EXPIRETIME_MS:
                expire = src.ms_time("an expire time")
            elif op == _EXPIRETIME:
                expire = int.from_bytes(src.take(4, "an expire time"), "little", signed=True) * 1000
            elif op == _IDLE:
                idle = src.length("an LRU idle time")
            elif op == _FREQ:
                freq = src.u8("an LFU frequency")
            elif op == _AUX:
                name = src.string("an aux field name")
                self.aux[printable_key(name)] = printable_key(src.string("an aux field value"))
            elif op == _FUNCTION2:
                code = src.string("a function library")
                self.functions += 1
                yield Function(code, _library_name(code))
            elif op == _FUNCTION_PRE_GA:
                name = src.string("a function name")
                src.skip_string("a function engine")
                if src.length("a function description flag"):
                    src.skip_string("a function description")
                src.skip_string("a function body")
                self.functions += 1
                yield Function(None, printable_key(name))
            else:
                self._other(src, op, at)
        self._trailer(src)

    def _walk_value(self, src: RdbSource, vtype: ValueType, key: bytes) -> None:
        if vtype.since > self.version:
            raise RdbFormatError(
                f"value type ({vtype.kind} {vtype.encoding}) needs RDB {vtype.since}, "
                f"the file is RDB {self.version}",
                src.offset,
            )
        try:
            vtype.read(src, False)
        except RdbFormatError as exc:
            raise exc.located(f"key '{printable_key(key)}' ({vtype.kind})") from None

    def _skip(self, src: RdbSource, vtype: ValueType, key: bytes) -> None:
        self._walk_value(src, vtype, key)

    def _other(self, src: RdbSource, op: int, at: int) -> None:
        if op == _RESIZEDB:
            src.length("a resize hint")
            src.length("a resize hint")
        elif op == _SLOT_INFO:
            for _ in range(3):
                src.length("slot info")
        elif op == _MODULE_AUX:
            src.length("a module id")
            if src.length("a module aux 'when' opcode") != _MODULE_OPCODE_UINT:
                raise RdbFormatError("bad module aux 'when' opcode", at)
            src.length("a module aux 'when'")
            module_opcodes(src, "module aux")
            self.module_aux += 1
        else:
            raise RdbFormatError(f"unknown value type or opcode {op}", at)

    def _trailer(self, src: RdbSource) -> None:
        crc = src.crc_through_here()
        if self.version >= _CHECKSUM_SINCE:
            at = src.offset
            checksum = int.from_bytes(src.take(8, "the CRC-64 trailer"), "little")
            if checksum and checksum != crc:
                raise RdbFormatError(
                    f"CRC-64 mismatch: the trailer says {checksum:016x}, the data gives {crc:016x}",
                    at,
                )
        if not src.at_end():
            raise RdbFormatError("data after the end of the RDB", src.offset)
        self.size = src.offset


def _library_name(code: bytes) -> str:
    """``name=`` of a library's shebang line (``#!lua name=mylib``)."""
    first = code.split(b"\n", 1)[0]
    for part in first.split():
        if part.startswith(b"name="):
            return printable_key(part[5:])
    return "?"
