"""Commands packed as RESP by hand, sent on one connection with the replies
of the previous batch still pending, the replies counted from a buffer.

Why it exists: ``restore --to-redis`` sends one ``RESTORE`` per key, hundreds
of thousands of them, and a large value as thousands of ``HSET``/``RPUSH``
chunks; redis-py builds and encodes each argument through its generic
command machinery and parses each reply one at a time, a large share of the
load's CPU time (profiled on 150,000 keys). Here a command is packed with one
join, a batch is written with one ``sendall`` on one connection of the
client's pool (:class:`RawPipe`), and its replies are read later, in bulk,
while the next batch is built and sent: the server works on batch N while we
build N+1. The replies are only counted (``+OK``, integers, bulk strings,
arrays: walked to their end, never decoded); an error reply is kept with its
index in the batch, so the caller names the key.

Bounded: at most ``depth`` batches (each the caller's batch, at most its byte
budget) are in flight; then the oldest one's replies are read before the next
batch is sent. A payload too large to hold (:class:`FileSlice`: a value's
bytes where they lie in the verified RDB file) is never in memory: its
``RESTORE`` is packed with the payload's known length, and the bytes are
read from the file and written to the socket in chunks of :data:`FILE_CHUNK`,
the CRC-64 of the DUMP trailer computed as they pass.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections import deque
from collections.abc import Sequence
from contextlib import suppress
from typing import Any, Generic, NamedTuple, TypeVar, overload

import redis

from backupctl.redis.rdb import crc64_redis

__all__ = [
    "FILE_CHUNK",
    "Batch",
    "FileSlice",
    "Packed",
    "RawPipe",
    "pack_command",
    "pack_restore",
    "reply_end",
    "slice_payload",
]

T = TypeVar("T")

_OK = b"+OK\r\n"
_LINE = frozenset(b"+-:_#,(")  # a reply that is one line
_BULK = frozenset(b"$!=")  # a length line, then that many bytes + CRLF (-1: none)
_AGGREGATE = {ord("*"): 1, ord("~"): 1, ord(">"): 1, ord("%"): 2, ord("|"): 2}
_RECV = 1 << 16
_LOWAT_MAX = 1 << 15  # below any receive buffer: a read never waits for more than fits
#: Bytes of a :class:`FileSlice` read and sent at a time.
FILE_CHUNK = 1 << 20


class FileSlice(NamedTuple):
    """A DUMP payload whose value bytes stay in a file: ``head`` (the type
    byte), then ``length`` bytes of the open file ``fd`` from ``offset``, then
    ``version`` (2 bytes little-endian) and the CRC-64 of all of that."""

    fd: int
    offset: int
    length: int
    head: bytes
    version: int

    @property
    def size(self) -> int:
        """The payload's length in bytes."""
        return len(self.head) + self.length + 10


#: A packed command: bytes, or (bytes before, a payload sent from its file, bytes after).
Packed = bytes | tuple[bytes, FileSlice, bytes]


def _slice_chunks(part: FileSlice) -> Any:
    """``part``'s value bytes in chunks of at most :data:`FILE_CHUNK`; OSError
    when the file ends early (it changed since it was verified)."""
    pos, end = part.offset, part.offset + part.length
    for _ in range(part.length + 1):  # every turn brings a byte or more, or raises
        if pos >= end:
            return
        data = os.pread(part.fd, min(FILE_CHUNK, end - pos), pos)
        if not data:
            raise OSError(f"the RDB file ends at offset {pos}, before the value's end ({end})")
        pos += len(data)
        yield data


def _trailer(part: FileSlice, crc: int) -> bytes:
    version = part.version.to_bytes(2, "little")
    return version + crc64_redis(version, crc).to_bytes(8, "little")


def slice_payload(part: FileSlice) -> bytes:
    """The whole payload in memory (for a rare comparison, never the load)."""
    crc = crc64_redis(part.head)
    pieces = [part.head]
    for data in _slice_chunks(part):
        crc = crc64_redis(data, crc)
        pieces.append(data)
    pieces.append(_trailer(part, crc))
    return b"".join(pieces)


def pack_command(*args: bytes | str) -> bytes:
    """One command as a RESP array of bulk strings (``str`` as UTF-8)."""
    parts = [b"*%d\r\n" % len(args)]
    for item in args:
        arg = item.encode() if isinstance(item, str) else item
        parts.append(b"$%d\r\n" % len(arg))
        parts.append(arg)
        parts.append(b"\r\n")
    return b"".join(parts)


@overload
def pack_restore(
    key: bytes | str,
    expire_ms: int,
    payload: bytes,
    replace: bool,
    idle: int | None,
    freq: int | None,
) -> bytes: ...
@overload
def pack_restore(
    key: bytes | str,
    expire_ms: int,
    payload: FileSlice,
    replace: bool,
    idle: int | None,
    freq: int | None,
) -> tuple[bytes, FileSlice, bytes]: ...
def pack_restore(
    key: bytes | str,
    expire_ms: int,
    payload: bytes | FileSlice,
    replace: bool,
    idle: int | None,
    freq: int | None,
) -> Packed:
    """``RESTORE key expire payload [REPLACE] ABSTTL [IDLETIME s | FREQ f]``
    (a :class:`FileSlice` payload between the bytes before and after it)."""
    if isinstance(key, str):
        key = key.encode()
    expire = b"%d" % expire_ms
    tail = [b"$7\r\nREPLACE\r\n"] if replace else []
    tail.append(b"$6\r\nABSTTL\r\n")
    if idle is not None:
        tail.append(b"$8\r\nIDLETIME\r\n$%d\r\n%d\r\n" % (len(b"%d" % idle), idle))
    elif freq is not None:
        tail.append(b"$4\r\nFREQ\r\n$%d\r\n%d\r\n" % (len(b"%d" % freq), freq))
    head = b"*%d\r\n$7\r\nRESTORE\r\n$%d\r\n" % (
        4 + len(tail) + (idle is not None or freq is not None),
        len(key),
    )
    if isinstance(payload, FileSlice):
        before = b"%s%s\r\n$%d\r\n%s\r\n$%d\r\n" % (head, key, len(expire), expire, payload.size)
        return before, payload, b"".join((b"\r\n", *tail))
    return b"".join(
        (
            head,
            key,
            b"\r\n$%d\r\n%s\r\n$%d\r\n" % (len(expire), expire, len(payload)),
            payload,
            b"\r\n",
            *tail,
        )
    )


def reply_end(buf: bytes, pos: int) -> int:
    """Where the reply starting at ``buf[pos]`` ends (RESP2 or RESP3), or -1
    when ``buf`` does not hold all of it yet. :class:`redis.ResponseError`
    for bytes that are not a reply."""
    todo = 1
    for _ in range(len(buf) - pos + 1):  # every element takes 3 bytes or more
        if todo == 0:
            return pos
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return -1
        kind = buf[pos]
        todo -= 1
        if kind in _LINE:
            pos = eol + 2
        elif kind in _BULK:
            n = int(buf[pos + 1 : eol])
            pos = eol + 2 + (n + 2 if n >= 0 else 0)
            if pos > len(buf):
                return -1
        elif kind in _AGGREGATE:
            n = int(buf[pos + 1 : eol])
            todo += max(0, n) * _AGGREGATE[kind] + (kind == ord("|"))
            pos = eol + 2
        else:
            raise redis.ResponseError(f"unexpected reply byte {kind!r} from the server")
    return pos if todo == 0 else -1


class Batch(Generic[T]):
    """One sent batch: ``tags`` (one per command, e.g. the key), ``keys`` (what
    the caller counts it as, e.g. keys it writes) and, once its replies are
    read, ``errors`` as (index, the server's message)."""

    __slots__ = ("errors", "keys", "tags")

    def __init__(self, tags: Sequence[T], keys: int = 0) -> None:
        self.tags = tags
        self.keys = keys
        self.errors: list[tuple[int, str]] = []


class RawPipe(Generic[T]):
    """Batches of packed commands on one connection of ``client``'s pool,
    held out of the pool until :meth:`close`; at most ``depth`` batches in
    flight. A connection error or a timeout raises :class:`redis.RedisError`
    and drops the connection."""

    def __init__(self, client: redis.Redis, depth: int = 2) -> None:
        self._pool = client.connection_pool
        self._conn: Any = self._pool.get_connection()  # connected: AUTH, SELECT done
        self._sock: Any = self._conn._sock  # redis-py keeps its socket here
        self._depth = max(1, depth)
        self._pending: deque[Batch[T]] = deque()
        self._buf = b""
        self._pos = 0
        self._low = 1  # the socket's SO_RCVLOWAT
        # TCP only: TLS reads records ahead (a low mark could outwait the last bytes)
        self._lowat = not isinstance(self._sock, ssl.SSLSocket) and getattr(
            self._sock, "family", None
        ) in (socket.AF_INET, socket.AF_INET6)

    def send(self, packed: Sequence[Packed], tags: Sequence[T], keys: int = 0) -> list[Batch[T]]:
        """Send ``packed`` (one command per tag; ``keys`` kept on its
        :class:`Batch`); returns the batches whose replies were read to make
        room (oldest first)."""
        done = []
        while len(self._pending) >= self._depth:
            done.append(self._complete())
        batch: Batch[T] = Batch(tags, keys)
        self._pending.append(batch)
        try:
            try:
                data = b"".join(packed)  # type: ignore[arg-type]
            except TypeError:  # a payload sent from its file
                self._send_parts(packed)
            else:
                self._sock.sendall(data)
        except (OSError, ValueError) as exc:
            self._broken()
            raise redis.ConnectionError(f"sending to the server failed: {exc}") from None
        return done

    def _send_parts(self, packed: Sequence[Packed]) -> None:
        """Commands some of which carry a payload sent from its file, chunk by chunk."""
        held: list[bytes] = []
        for command in packed:
            if isinstance(command, bytes):
                held.append(command)
                continue
            before, part, after = command
            held += (before, part.head)
            self._sock.sendall(b"".join(held))
            crc = crc64_redis(part.head)
            for data in _slice_chunks(part):
                crc = crc64_redis(data, crc)
                self._sock.sendall(data)
            held = [_trailer(part, crc), after]
        self._sock.sendall(b"".join(held))

    def drain(self) -> list[Batch[T]]:
        """Every pending batch's replies read (oldest first)."""
        return [self._complete() for _ in range(len(self._pending))]

    def _complete(self) -> Batch[T]:
        batch = self._pending.popleft()
        want = len(batch.tags)
        got = 0
        buf, pos = self._buf, self._pos
        for _ in range(1 << 40):  # each turn reads a reply or more bytes: bounded by the replies
            if got == want:
                break
            oks = min(want - got, (len(buf) - pos) // 5)  # a run of +OK: counted at once
            if oks > 1 and buf.startswith(_OK * oks, pos):
                pos += 5 * oks
                got += oks
                continue
            if buf.startswith(_OK, pos):
                pos += 5
                got += 1
                continue
            end = reply_end(buf, pos) if pos < len(buf) else -1
            if end < 0:
                self._wait_for(3 * (want - got) - (len(buf) - pos))  # a reply: 3 bytes or more
                buf, pos = buf[pos:] + self._recv(), 0
                continue
            if buf[pos] in b"-!":
                batch.errors.append((got, _error_text(buf, pos, end)))
            pos = end
            got += 1
        self._buf, self._pos = buf, pos
        return batch

    def _wait_for(self, least: int) -> None:
        """Let the next read wait until at least ``least`` bytes are there
        (what the replies still due take at the least), not wake up for
        every few replies (SO_RCVLOWAT; best effort: a socket without it
        wakes up more often)."""
        low = max(1, min(least, _LOWAT_MAX))
        if low != self._low and self._lowat:
            with suppress(OSError, AttributeError):
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, low)
            self._low = low

    def _recv(self) -> bytes:
        try:
            data: bytes = self._sock.recv(_RECV)
        except (OSError, ValueError) as exc:
            self._broken()
            raise redis.ConnectionError(f"reading from the server failed: {exc}") from None
        if not data:
            self._broken()
            raise redis.ConnectionError("the server closed the connection")
        return bytes(data)

    def _broken(self) -> None:
        self._pending.clear()
        self._conn.disconnect()

    def close(self) -> None:
        """Back to the pool (dropped first when replies are still pending)."""
        if self._pending or self._pos < len(self._buf):
            self._conn.disconnect()
        elif self._low != 1:
            self._wait_for(1)  # redis-py reads one reply at a time on it again
        self._pending.clear()
        self._pool.release(self._conn)


def _error_text(buf: bytes, pos: int, end: int) -> str:
    start = buf.find(b"\r\n", pos) + 2 if buf[pos] == ord("!") else pos + 1  # RESP3 !len
    return buf[start : end - 2].decode("utf-8", "replace")
