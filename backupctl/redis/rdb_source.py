"""The byte source the RDB reader walks: a buffered, forward-only reader of a
binary stream that knows its file offset, computes the CRC-64 as bytes pass,
and decodes RDB's length and string encodings.

Why a module of its own: every structure in an RDB is built from the same few
primitives (a type byte, a length, a string that may be an integer or LZF
compressed), and the reader must stay fast (hundreds of MiB/s on payloads it
only skips) and bounded (a hostile length never becomes an allocation). Both
concerns live here, once; the errors carry the byte offset of the problem.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import BinaryIO, NoReturn, cast

from backupctl.redis.lzf import LzfError, lzf_decompress, lzf_pieces
from backupctl.redis.rdb import crc64_redis

__all__ = [
    "MAX_MATERIALISED",
    "FileAt",
    "RdbBuffer",
    "RdbFormatError",
    "RdbSource",
    "RdbVersionError",
    "TeeOverflow",
]

#: The largest blob (listpack, ziplist, decompressed LZF, key) the reader will
#: hold in memory: Redis's own proto-max-bulk-len default.
MAX_MATERIALISED = 512 << 20

_CHUNK = 1 << 20  # what one refill asks the stream for
#: An LZF string declaring more is decompressed in pieces (pure Python, slower)
#: by :meth:`RdbSource.string_pieces`, never held whole with its compressed form.
LZF_STREAM_ABOVE = 4 << 20
_MAX_READ = 16 << 20  # the most one read() call asks for (a hostile length never reaches read())

_ENC_INT8, _ENC_INT16, _ENC_INT32, _ENC_LZF = 0, 1, 2, 3


class RdbFormatError(Exception):
    """A structural error; str() is one line ending in 'at offset N'."""

    def __init__(self, what: str, offset: int, where: str = "") -> None:
        self.what = what
        self.offset = offset
        self.where = where
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f" in {self.where}" if self.where else ""
        return f"{self.what}{where} at offset {self.offset}"

    def located(self, where: str) -> RdbFormatError:
        """The same error, saying which key (or record) it is in."""
        if self.where:
            return self
        return type(self)(self.what, self.offset, where)


class RdbVersionError(RdbFormatError):
    """The magic/version is one this reader does not know (e.g. a future RDB)."""


class TeeOverflow(Exception):
    """The bytes recorded since :meth:`RdbSource.tee_start` grew past its limit.

    ``source`` continues at the recorded start (``prefix`` then the rest of the
    stream; same offsets and CRC), so the value can be read again, streaming.
    """

    def __init__(self, source: RdbSource) -> None:
        super().__init__("teed value over its limit")
        self.source = source


class FileAt:
    """The bytes of the open file ``fd`` from ``offset`` on, read with ``pread``
    (the descriptor's own position is left alone; the caller closes it)."""

    def __init__(self, fd: int, offset: int) -> None:
        self._fd = fd
        self._pos = offset

    def read(self, n: int = -1) -> bytes:
        data = os.pread(self._fd, n if n >= 0 else _MAX_READ, self._pos)
        self._pos += len(data)
        return data


class _Chain:
    """A stream of held byte strings followed by another stream (read once)."""

    def __init__(self, parts: list[bytes], rest: BinaryIO) -> None:
        self._parts = [p for p in parts if p]
        self._parts.reverse()  # popped from the end
        self._rest = rest

    def read(self, n: int = -1) -> bytes:
        if not self._parts:
            return self._rest.read(n)
        part = self._parts.pop()
        if 0 <= n < len(part):
            self._parts.append(part[n:])
            return part[:n]
        return part


class RdbBuffer:
    """Forward-only reader over ``stream`` with offsets, CRC-64 and a tee;
    :class:`RdbSource` decodes RDB's encodings on top of it.

    ``limit`` (the file size, when known) lets a declared length that cannot
    fit in what is left fail at once, before anything is read or allocated.
    ``base`` and ``crc`` start it in the middle of a file (the offset and the
    CRC-64 of everything before the stream's first byte).

    :meth:`tee_start` / :meth:`tee_stop` record the bytes read in between (one
    value's raw RDB bytes) without a copy per read; past the tee's limit
    :class:`TeeOverflow` hands over a source that starts again at the tee's
    start, so memory stays bounded by the limit whatever the value's size.

    ``fd`` says the stream is that open file, offset for offset (``base``
    included): a tee then holds at most its ``hold`` bytes; past it the bytes
    are let go (counted, not kept; :meth:`tee_stop` returns None and the
    value is read again from the file where it lies) and an overflow starts
    again from the file (:class:`FileAt`), so memory stays bounded by
    ``hold`` whatever the limit.
    """

    __slots__ = (
        "_base",
        "_buf",
        "_crc",
        "_fd",
        "_limit",
        "_pos",
        "_stream",
        "_tee",
        "_tee_at",
        "_tee_base",
        "_tee_crc",
        "_tee_hold",
        "_tee_let_go",
        "_tee_limit",
        "_tee_size",
    )

    def __init__(
        self,
        stream: BinaryIO,
        limit: int | None = None,
        *,
        base: int = 0,
        crc: int = 0,
        fd: int | None = None,
    ) -> None:
        self._stream = stream
        self._buf = b""
        self._pos = 0
        self._base = base  # file offset of _buf[0]
        self._crc = crc  # CRC-64 of everything before _buf[0]
        self._limit = limit
        self._fd = fd
        self._tee: list[bytes] | None = None
        self._tee_at = 0  # where the tee starts in _buf (0 once part of it was dropped)
        self._tee_base = 0  # file offset of the tee's first byte
        self._tee_crc: int | None = None  # CRC-64 before the tee's first byte, once needed
        self._tee_limit = 0
        self._tee_hold = 0
        self._tee_let_go = False  # past the hold: the bytes are counted, not kept
        self._tee_size = 0

    # -- tee -----------------------------------------------------------------

    def tee_start(self, limit: int, hold: int | None = None) -> None:
        """Record the bytes read from here on (up to ``limit``; with ``fd``
        holding at most ``hold`` of them, see the class docstring)."""
        self._tee = []
        self._tee_at = self._pos
        self._tee_base = self.offset
        self._tee_crc = None
        self._tee_limit = limit
        self._tee_hold = limit if hold is None or self._fd is None else min(hold, limit)
        self._tee_let_go = False
        self._tee_size = 0

    @property
    def tee_base(self) -> int:
        """The file offset of the last tee's first byte."""
        return self._tee_base

    def tee_stop(self) -> bytes | None:
        """The bytes read since :meth:`tee_start` (None when they were more than
        its ``hold``: they are in the file from :attr:`tee_base` to :attr:`offset`);
        stops recording."""
        tee = self._tee
        assert tee is not None, "tee_stop without tee_start"
        if self._tee_size + self._pos - self._tee_at > self._tee_limit:
            self._overflow()  # the whole value was read before a refill noticed
        self._tee = None
        if self._tee_let_go or self._tee_size + self._pos - self._tee_at > self._tee_hold:
            return None
        last = self._buf[self._tee_at : self._pos]
        if not tee:
            return last
        tee.append(last)
        return b"".join(tee)

    def tee_cancel(self) -> None:
        self._tee = None

    def _tee_drop(self, data: bytes | memoryview) -> None:
        """``data`` (the tee's bytes leaving the buffer) recorded; overflow checked
        by the caller once the source's state is whole again."""
        assert self._tee is not None
        self._tee_size += len(data)
        self._tee_at = 0
        if self._tee_let_go:
            return
        if self._fd is not None and self._tee_size > self._tee_hold:  # the file has them
            self._tee_let_go = True
            self._tee.clear()
            return
        self._tee.append(bytes(data))

    def _tee_check(self) -> None:
        if self._tee is not None and self._tee_size > self._tee_limit:
            self._overflow()

    def _overflow(self) -> NoReturn:
        """Hand over a source that starts again at the tee's first byte."""
        parts, crc = self._tee, self._tee_crc
        assert parts is not None
        self._tee = None
        if crc is None:  # nothing of the tee left the buffer yet
            crc = crc64_redis(memoryview(self._buf)[: self._tee_at], self._crc)
        rest: object
        if self._tee_let_go:  # (only with fd)
            rest = FileAt(cast(int, self._fd), self._tee_base)
        else:
            rest = _Chain([*parts, self._buf[self._tee_at :]], self._stream)
        again = type(self)(cast(BinaryIO, rest), self._limit, base=self._tee_base, crc=crc,
                           fd=self._fd)  # fmt: skip
        raise TeeOverflow(cast("RdbSource", again))  # (made only by an RdbSource)

    @property
    def offset(self) -> int:
        return self._base + self._pos

    # -- buffer management -------------------------------------------------

    def _drop_consumed(self) -> None:
        if self._pos:
            if self._tee is not None:
                if self._tee_crc is None:
                    self._tee_crc = crc64_redis(memoryview(self._buf)[: self._tee_at], self._crc)
                self._tee_drop(memoryview(self._buf)[self._tee_at : self._pos])
            self._crc = crc64_redis(memoryview(self._buf)[: self._pos], self._crc)
            self._base += self._pos
            self._buf = self._buf[self._pos :]
            self._pos = 0
            self._tee_check()

    def _fill(self, need: int, what: str) -> None:
        """Make ``need`` bytes available at the current position or raise 'truncated'."""
        self._drop_consumed()
        parts = [self._buf]
        have = len(self._buf)
        for _ in range(need + 1):  # every read that returns data brings a byte or more
            if have >= need:
                break
            data = self._stream.read(min(max(_CHUNK, need - have), _MAX_READ))
            if not data:
                break
            parts.append(data)
            have += len(data)
        self._buf = b"".join(parts) if len(parts) > 1 else self._buf
        if have < need:
            raise RdbFormatError(
                f"truncated: {what} needs {need} bytes, the file ends after {have}",
                self._base + have,
            )

    def check_fits(self, n: int, what: str) -> None:
        """Refuse a declared length that cannot be in the rest of the file."""
        if self._limit is None:
            return  # a stream of unknown size: a short one shows as 'truncated' at its end
        left = self._limit - self.offset
        if n > left:
            raise RdbFormatError(
                f"{what} declares {n} bytes but only {left} are left in the file", self.offset
            )

    def crc_through_here(self) -> int:
        """The CRC-64 of every byte before the current position."""
        self._drop_consumed()
        return self._crc

    def at_end(self) -> bool:
        """True when the stream has no byte after the current position."""
        if self._pos < len(self._buf):
            return False
        self._drop_consumed()
        data = self._stream.read(1)
        if data:
            self._buf = data
            return False
        return True

    # -- raw bytes ----------------------------------------------------------

    def u8(self, what: str = "a type byte") -> int:
        pos = self._pos
        if pos >= len(self._buf):
            self._fill(1, what)
            pos = self._pos
        self._pos = pos + 1
        return self._buf[pos]

    def take(self, n: int, what: str) -> bytes:
        """The next ``n`` bytes (held in memory: callers cap ``n`` first)."""
        pos = self._pos
        end = pos + n
        if end > len(self._buf):
            if n > MAX_MATERIALISED:
                raise RdbFormatError(
                    f"{what} of {n} bytes is over the {MAX_MATERIALISED} byte limit", self.offset
                )
            self.check_fits(n, what)
            self._fill(n, what)
            pos, end = 0, n
        self._pos = end
        return self._buf[pos:end]

    def skip(self, n: int, what: str) -> None:
        """Pass ``n`` bytes without holding them (they still go into the CRC)."""
        end = self._pos + n
        if end <= len(self._buf):
            self._pos = end
            return
        self.check_fits(n, what)
        start = self.offset
        left = n - (len(self._buf) - self._pos)
        self._pos = len(self._buf)
        self._drop_consumed()
        if self._tee is not None and self._tee_crc is None:
            self._tee_crc = self._crc  # nothing dropped yet: the tee starts at _buf[0]
        for _ in range(left + 1):  # every read that returns data brings a byte or more
            if left <= 0:
                break
            data = self._stream.read(min(left, _CHUNK))  # a skip holds no more than a refill
            if not data:
                break
            if len(data) > left:  # a stream that ignores the size asked for
                self._buf, data = data[left:], data[:left]
            self._crc = crc64_redis(data, self._crc)
            self._base += len(data)
            left -= len(data)
            if self._tee is not None:
                self._tee_drop(data)
                if left > 0:
                    self._tee_check()
        if left > 0:
            raise RdbFormatError(
                f"truncated: {what} of {n} bytes from offset {start} is cut short", self.offset
            )

    def window(self) -> tuple[bytes, int]:
        """The buffered bytes and the current position in them, for a tight
        loop over records wholly in the buffer (rdb_reader.pass_plain_strings);
        :meth:`advance` then moves past what it passed."""
        return self._buf, self._pos

    def advance(self, pos: int) -> None:
        """Move to ``pos`` of :meth:`window`'s bytes (never back, never past them)."""
        assert self._pos <= pos <= len(self._buf)
        self._pos = pos


class RdbSource(RdbBuffer):
    """:class:`RdbBuffer` with RDB's encodings on top: lengths, strings (raw,
    integer-encoded, LZF-compressed; held, streamed in pieces or passed), times."""

    __slots__ = ()

    # -- RDB primitives -------------------------------------------------------

    def length(self, what: str = "a length") -> int:
        """An RDB length (6, 14, 32 or 64 bits); an encoded-string marker is an error."""
        b = self.u8(what)
        kind = b >> 6
        if kind == 0:
            return b
        if kind == 1:
            return ((b & 0x3F) << 8) | self.u8(what)
        if b == 0x80:
            return int.from_bytes(self.take(4, what), "big")
        if b == 0x81:
            return int.from_bytes(self.take(8, what), "big")
        raise RdbFormatError(f"bad length encoding 0x{b:02x} for {what}", self.offset - 1)

    def _string_header(self, what: str) -> tuple[int, int]:
        """(kind, n): kind -1 is a raw string of n bytes, else the special encoding."""
        b = self.u8(what)
        kind = b >> 6
        if kind == 0:
            return -1, b
        if kind == 1:
            return -1, ((b & 0x3F) << 8) | self.u8(what)
        if b == 0x80:
            return -1, int.from_bytes(self.take(4, what), "big")
        if b == 0x81:
            return -1, int.from_bytes(self.take(8, what), "big")
        if kind == 3 and (b & 0x3F) <= _ENC_LZF:
            return b & 0x3F, 0
        raise RdbFormatError(f"bad string encoding 0x{b:02x} for {what}", self.offset - 1)

    def _lzf_header(self, what: str) -> tuple[int, int]:
        start = self.offset
        clen = self.length(what)
        ulen = self.length(what)
        if clen == 0 or ulen > MAX_MATERIALISED or ulen > clen * 90 + 64:
            raise RdbFormatError(
                f"implausible LZF lengths for {what} ({clen} compressed, {ulen} declared)", start
            )
        return clen, ulen

    def string(self, what: str) -> bytes:
        """A whole string, integers rendered as ASCII and LZF decompressed."""
        buf = self._buf
        pos = self._pos
        if pos + 2 <= len(buf):  # fast path: a short raw string wholly in the buffer
            b = buf[pos]
            if b < 0x40:
                end = pos + 1 + b
                if end <= len(buf):
                    self._pos = end
                    return buf[pos + 1 : end]
            elif b < 0x80:
                end = pos + 2 + (((b & 0x3F) << 8) | buf[pos + 1])
                if end <= len(buf):
                    self._pos = end
                    return buf[pos + 2 : end]
        kind, n = self._string_header(what)
        if kind == -1:
            return self.take(n, what)
        if kind == _ENC_INT8:
            return str(int.from_bytes(self.take(1, what), "little", signed=True)).encode()
        if kind == _ENC_INT16:
            return str(int.from_bytes(self.take(2, what), "little", signed=True)).encode()
        if kind == _ENC_INT32:
            return str(int.from_bytes(self.take(4, what), "little", signed=True)).encode()
        return self.string_after_lzf_marker(what)

    def string_pieces(self, what: str, chunk: int) -> Iterator[bytes]:
        """A string in pieces of at most ``chunk`` bytes (a raw string is never
        held whole; an LZF one is decompressed, up to MAX_MATERIALISED)."""
        kind, n = self._string_header(what)
        if kind == -1:
            self.check_fits(n, what)
            left = n
            for _ in range(n // max(1, chunk) + 1):
                if left <= 0:
                    break
                piece = self.take(min(left, chunk), what)
                left -= len(piece)
                yield piece
        elif kind == _ENC_LZF:
            clen, ulen = self._lzf_header(what)
            if ulen <= LZF_STREAM_ABOVE:
                data = self._lzf_body(clen, ulen, what)
                for i in range(0, len(data), max(1, chunk)):
                    yield data[i : i + chunk]
                return
            start = self.offset
            try:
                yield from lzf_pieces(self._pieces(clen, what), clen, ulen, max(1, chunk))
            except LzfError as exc:
                raise RdbFormatError(f"bad LZF data in {what}: {exc}", start + exc.pos) from None
        else:
            width = {_ENC_INT8: 1, _ENC_INT16: 2, _ENC_INT32: 4}[kind]
            yield str(int.from_bytes(self.take(width, what), "little", signed=True)).encode()

    def skip_string(self, what: str) -> None:
        """Pass a string without decoding it (LZF lengths are still checked)."""
        buf = self._buf
        pos = self._pos
        if pos + 5 <= len(buf):  # fast path: a raw string wholly in the buffer
            b = buf[pos]
            end = -1
            if b < 0x40:
                end = pos + 1 + b
            elif b < 0x80:
                end = pos + 2 + (((b & 0x3F) << 8) | buf[pos + 1])
            elif b == 0x80:
                end = pos + 5 + int.from_bytes(buf[pos + 1 : pos + 5], "big")
            elif b == 0xC3:  # LZF (the default rdbcompression): skipped, never decompressed
                end = self._lzf_end(buf, pos + 1)
            if 0 <= end <= len(buf):
                self._pos = end
                return
        kind, n = self._string_header(what)
        if kind == -1:
            self.skip(n, what)
        elif kind == _ENC_INT8:
            self.skip(1, what)
        elif kind == _ENC_INT16:
            self.skip(2, what)
        elif kind == _ENC_INT32:
            self.skip(4, what)
        else:
            clen, _ = self._lzf_header(what)
            self.skip(clen, what)

    def raw_string(self, limit: int) -> bytes | None:
        """The next string's RDB bytes as they are (header and body; LZF left
        compressed), passed, when they are wholly in the buffer and at most
        ``limit`` bytes, with the checks :meth:`skip_string` makes; else None
        and nothing is consumed (the caller walks it the slow way)."""
        buf = self._buf
        pos = self._pos
        if pos + 5 > len(buf):
            return None
        b = buf[pos]
        if b < 0x40:
            end = pos + 1 + b
        elif b < 0x80:
            end = pos + 2 + (((b & 0x3F) << 8) | buf[pos + 1])
        elif b == 0x80:
            end = pos + 5 + int.from_bytes(buf[pos + 1 : pos + 5], "big")
        elif b == 0xC3:  # LZF: its lengths checked as skip_string checks them
            end = self._lzf_end(buf, pos + 1)
        else:
            return None
        if end < 0 or end > len(buf) or end - pos > limit:
            return None
        self._pos = end
        return buf[pos:end]

    @staticmethod
    def _lzf_end(buf: bytes, pos: int) -> int:
        """Where an LZF string whose two lengths start at ``buf[pos]`` ends, when
        both lengths are 6 or 14 bits, wholly in ``buf`` and plausible; else -1
        (the slow path then reads them, and says what is wrong)."""
        if pos + 4 > len(buf):
            return -1
        lengths = []
        for _ in range(2):
            b = buf[pos]
            if b < 0x40:
                lengths.append(b)
                pos += 1
            elif b < 0x80:
                lengths.append(((b & 0x3F) << 8) | buf[pos + 1])
                pos += 2
            else:
                return -1
        clen, ulen = lengths
        if clen == 0 or ulen > clen * 90 + 64:
            return -1
        return pos + clen

    def blob(self, what: str) -> tuple[bytes, int, bool]:
        """A string that holds an encoded structure: (bytes, file offset, was compressed)."""
        kind, n = self._string_header(what)
        start = self.offset
        if kind == -1:
            return self.take(n, what), start, False
        if kind != _ENC_LZF:
            raise RdbFormatError(f"{what} is an integer, not an encoded blob", start - 1)
        return self.string_after_lzf_marker(what), start, True

    def _pieces(self, n: int, what: str) -> Iterator[bytes]:
        """The next ``n`` bytes, in reads of at most :data:`_CHUNK`."""
        left = n
        for _ in range(n // _CHUNK + 2):
            if left <= 0:
                return
            piece = self.take(min(left, _CHUNK), what)
            left -= len(piece)
            yield piece

    def string_after_lzf_marker(self, what: str) -> bytes:
        clen, ulen = self._lzf_header(what)
        return self._lzf_body(clen, ulen, what)

    def _lzf_body(self, clen: int, ulen: int, what: str) -> bytes:
        start = self.offset
        data = self.take(clen, what)
        try:
            return lzf_decompress(data, ulen)
        except LzfError as exc:
            raise RdbFormatError(f"bad LZF data in {what}: {exc}", start + exc.pos) from None

    def ms_time(self, what: str) -> int:
        return int.from_bytes(self.take(8, what), "little", signed=True)
