"""The RDB over the replication protocol, like ``redis-cli --rdb``: for
nodes whose disk the backup Job cannot mount (``method: replication``).

Why a module of its own: this is the one place backupctl speaks RESP on a
raw socket instead of through redis-py -- the handshake (AUTH, ``REPLCONF
capa eof``, ``REPLCONF rdb-only``, ``PSYNC ? -1``), keepalive newlines while
the master forks, and then a payload that is either ``$<size>`` bytes (a
disk-based sync) or runs until a 40-byte end mark (a diskless one). The
payload is handed out as a plain binary stream, checked (magic + CRC-64) as
it passes; until its first read, a thread receives it ahead
(:mod:`backupctl.redis.replication_receive`), so the master's fork child is
not held up while the caller still sets up its store.
:class:`RdbCompressionPause` switches LZF off for the one fork that makes
that snapshot, because the archive compresses it anyway.
"""

from __future__ import annotations

import errno
import io
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, BinaryIO

import redis

from backupctl.core.timing import Monotonic
from backupctl.redis.address import ConnectionSpec
from backupctl.redis.connection import (
    as_text,
    client_address,
    client_spec,
    error_for,
    exec_command,
    scrub,
)
from backupctl.redis.errors import RedisNodeError
from backupctl.redis.info import config_get
from backupctl.redis.polling import Deadline
from backupctl.redis.rdb import FAST_CRC64, RdbValidator
from backupctl.redis.replication_receive import ReceiveAhead

__all__ = ["RdbCompressionPause", "ReplicationRDB", "replication_rdb"]


#: What the receiving thread may hold until the archive writer's first read
#: (:class:`~backupctl.redis.replication_receive.ReceiveAhead`): 16 MiB, about
#: a third of a second of a fork child's output, in 1 MiB buffers.
RECEIVE_CHUNK = 1024 * 1024
RECEIVE_CHUNKS = 16


def _resp_command(*args: str | bytes) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Wire:
    """A socket with a small read buffer: lines for the handshake, then raw bytes."""

    MAX_LINE = 64 * 1024

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.ahead: ReceiveAhead | None = None

    def send(self, *args: str | bytes) -> None:
        self.sock.sendall(_resp_command(*args))

    def readline(self) -> bytes:
        for _ in range(self.MAX_LINE):  # bounded: each round adds >= 1 byte
            idx = self.buf.find(b"\n")
            if idx >= 0:
                line = bytes(self.buf[: idx + 1])
                del self.buf[: idx + 1]
                return line
            if len(self.buf) > self.MAX_LINE:
                raise RedisNodeError("a reply line is too long", reason="protocol")
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionResetError(errno.ECONNRESET, "Connection closed by server")
            self.buf += chunk
        raise RedisNodeError("a reply line is too long", reason="protocol")  # pragma: no cover

    def readinto(self, view: memoryview) -> int:
        if self.buf:
            n = min(len(view), len(self.buf))
            view[:n] = self.buf[:n]
            del self.buf[:n]
            return n
        if self.ahead is not None:
            return self.ahead.readinto(view)
        return self.sock.recv_into(view)

    def receive_ahead(self, *, chunk: int, chunks: int) -> ReceiveAhead:
        """From now on, the socket is drained by a thread (see :class:`ReceiveAhead`)."""
        self.ahead = ReceiveAhead(self.sock.recv_into, chunk=chunk, chunks=chunks)
        return self.ahead


class _PayloadStream(io.RawIOBase):
    """Exactly ``size`` bytes of RDB from the wire, then EOF; checked as it passes."""

    def __init__(self, wire: _Wire, size: int, where: str, validator: RdbValidator | None) -> None:
        super().__init__()
        self.wire = wire
        self.size = size
        self.remaining = size
        self.where = where
        self.validator = validator

    def readable(self) -> bool:
        return True

    def _received(self) -> str:
        return f"{self.size - self.remaining} of {self.size} bytes"

    def _recv(self, view: memoryview) -> int:
        """One socket read into ``view``; every failure becomes a RedisNodeError."""
        try:
            n = self.wire.readinto(view)
        except TimeoutError:
            raise RedisNodeError(
                f"the RDB stream from Redis at {self.where} stalled after {self._received()}",
                reason="timeout",
            ) from None
        except OSError as exc:
            raise RedisNodeError(
                f"the RDB stream from Redis at {self.where} broke after "
                f"{self._received()}: {exc.strerror or exc}",
                reason="replication",
            ) from None
        if n == 0:
            raise RedisNodeError(
                f"Redis at {self.where} closed the replication connection after "
                f"{self._received()} of the RDB",
                reason="replication",
            )
        return n

    def _check(self, data: memoryview, last: bool) -> None:
        if self.validator is None:
            return
        self.validator.update(data)
        if last:
            ok, message = self.validator.finish()
            if not ok:
                raise RedisNodeError(
                    f"the RDB received from Redis at {self.where} is damaged: {message}",
                    reason="rdb",
                )

    def readinto(self, buffer: Any) -> int:
        if self.remaining <= 0:
            return 0
        view = memoryview(buffer).cast("B")
        n = self._recv(view[: min(len(view), self.remaining)])
        self.remaining -= n
        self._check(view[:n], last=self.remaining == 0)
        return n


class _EofPayloadStream(_PayloadStream):
    """A diskless RDB: bytes until the 40-byte end mark the master announced
    with ``$EOF:<mark>``, then EOF.

    As in Redis's own replica code (and redis-cli), the mark is looked for
    only at the end of what has arrived: the master sends nothing after it
    until the replica acknowledges the load (``REPLCONF ACK``), which we never
    do; with ``REPLCONF rdb-only`` it closes the connection. The last 40 bytes
    received are held back until more arrive, so the mark is never handed
    out. Bytes are received straight into the caller's buffer."""

    MARK_LEN = 40
    SCRATCH = 64 * 1024  # for callers asking for tiny reads

    def __init__(
        self, wire: _Wire, mark: bytes, where: str, validator: RdbValidator | None
    ) -> None:
        super().__init__(wire, 0, where, validator)
        self.mark = mark
        self.received = 0
        self.done = False
        self._tail = b""  # received, maybe the start of the mark: not handed out yet
        self._ready = b""  # checked RDB bytes a tiny read left over

    def _received(self) -> str:
        return f"{self.received} bytes"

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if not len(view):
            return 0
        if self._ready:
            n = min(len(view), len(self._ready))
            view[:n] = self._ready[:n]
            self._ready = self._ready[n:]
            return n
        if self.done:
            return 0
        if len(view) <= 2 * self.MARK_LEN:
            scratch = bytearray(self.SCRATCH)
            self._ready = bytes(scratch[: self._receive(memoryview(scratch))])
            return self.readinto(view)
        return self._receive(view)

    def _receive(self, view: memoryview) -> int:
        """Fill ``view`` (longer than the mark) with the next RDB bytes."""
        mark_len = self.MARK_LEN
        for _ in range(1 << 40):  # bounded by the stream: each round reads >= 1 byte
            held = len(self._tail)
            view[:held] = self._tail
            total = held + self._recv(view[held:])
            out = max(total - mark_len, 0)
            if total >= mark_len and view[out:total] == self.mark:
                self.done = True
                self._tail = b""
            else:
                self._tail = bytes(view[out:total])
            self.received += out
            self._check(view[:out], last=self.done)
            if out or self.done:
                return out
        raise AssertionError("unreachable")  # pragma: no cover


@dataclass
class ReplicationRDB:
    """An RDB being received over replication.

    ``stream`` is a buffered binary reader giving the RDB's bytes, then EOF;
    ``read(n)`` returns n bytes except at the end. ``size`` is the byte count
    the master announced for a disk-based sync, or None for a diskless one
    (the size is known only at the end: ``received``).
    ``replid``/``offset`` come from ``+FULLRESYNC`` (the replication position
    the snapshot corresponds to).
    """

    size: int | None
    stream: BinaryIO
    replid: str | None = None
    offset: int | None = None
    verified: bool = False  # True when magic + CRC64 are checked as the stream is read

    @property
    def _raw(self) -> _PayloadStream | None:
        raw = getattr(self.stream, "raw", None)
        return raw if isinstance(raw, _PayloadStream) else None

    @property
    def diskless(self) -> bool:
        return self.size is None

    @property
    def rdb_version(self) -> int | None:
        raw = self._raw
        return raw.validator.version if raw is not None and raw.validator is not None else None

    @property
    def received(self) -> int:
        raw = self._raw
        if isinstance(raw, _EofPayloadStream):
            return raw.received
        return 0 if raw is None else raw.size - raw.remaining


def _simple_reply(wire: _Wire, spec: ConnectionSpec) -> str:
    line = wire.readline()
    if not line[:1] or line[:1] not in b"+-:$*":
        raise RedisNodeError(
            f"the server at {spec.display} did not answer like a Redis server"
            f" (got {line[:20]!r}): is the port right?",
            reason="protocol",
        )
    return scrub(line.decode("utf-8", "replace").strip(), spec)


@contextmanager
def replication_rdb(
    spec: ConnectionSpec,
    *,
    timeout: float = 3600,
    io_timeout: float = 60,
    connect_timeout: float = 10,
    verify: bool | None = None,
    diskless: bool = True,
    on_fork: Callable[[], None] | None = None,
    clock: Monotonic = time.monotonic,
    announce_version: str | None = None,
) -> Iterator[ReplicationRDB]:
    """Stream the node's RDB over the replication protocol (like ``redis-cli --rdb``).

    Handshake, as redis-cli does it (no ``REPLCONF listening-port``: the
    master lists us as ``<unknown-replica-port>``): AUTH (if a password is
    set), PING, ``REPLCONF capa eof`` (with ``diskless``), ``REPLCONF
    rdb-only 1`` (Redis >= 7.0: the master drops us right after the RDB and
    keeps no replication buffer for us; older servers answer an error,
    ignored), with ``announce_version`` ``REPLCONF version X.Y.Z`` (Valkey
    9: the master writes the RDB format of that replica version; without it
    Valkey 9.1 sends ``REDIS0011`` and fails the sync when a key needs its
    own ``VALKEY080``: "Can't store key (db 0) in RDB version 11"; Redis
    answers an error, ignored), then ``PSYNC ? -1``.

    With ``capa eof`` a master running ``repl-diskless-sync yes`` (the 7.0
    default) forks a child that writes the RDB straight to us: nothing
    touches the node's disk, and the transfer overlaps the serialisation.
    It announces ``$EOF:<40-byte mark>`` and ends the RDB with that mark, so
    the size is known only at the end (``ReplicationRDB.size`` is None). A
    master with ``repl-diskless-sync no`` (or without ``diskless``) BGSAVEs
    to its own RDB file (replacing its dump.rdb, like a BGSAVE) and sends
    ``$<size>`` plus exactly size bytes.

    ``on_fork`` is called once the master has forked the child producing the
    snapshot (``+FULLRESYNC`` is sent after the fork): settings the child
    reads, like ``rdbcompression``, can be put back from then on.

    ``timeout`` bounds the wait for the master to start sending (it sends a
    newline every second meanwhile); ``io_timeout`` bounds every socket
    read. ``verify`` (default: when fast CRC64 is available) checks the magic
    and CRC-64 trailer as the stream is read; a mismatch raises
    RedisNodeError from the final ``read``. The socket is closed on exit.
    """
    where = spec.display
    deadline = Deadline(timeout, clock)
    sock: socket.socket | None = None
    ahead: ReceiveAhead | None = None
    try:
        try:
            raw_sock = socket.create_connection((spec.host, spec.port), timeout=connect_timeout)
            sock = raw_sock
            if spec.tls:
                sock = spec.ssl_context().wrap_socket(raw_sock, server_hostname=spec.host)
            sock.settimeout(min(io_timeout, max(deadline.left(), 0.001)))
            wire = _Wire(sock)
            if spec.password:
                auth = (spec.username, spec.password) if spec.username else (spec.password,)
                wire.send("AUTH", *auth)
                reply = _simple_reply(wire, spec)
                if reply.startswith("-"):
                    raise redis.AuthenticationError(reply[1:])
            wire.send("PING")
            reply = _simple_reply(wire, spec)
            if reply.startswith("-"):
                raise redis.ResponseError(reply[1:])
            replconf = [("capa", "eof")] if diskless else []
            replconf.append(("rdb-only", "1"))
            if announce_version:
                replconf.append(("version", announce_version))
            for name, value in replconf:
                wire.send("REPLCONF", name, value)
                reply = _simple_reply(wire, spec)
                if reply.startswith(("-NOAUTH", "-NOPERM")):
                    raise redis.ResponseError(reply[1:])
            wire.send("PSYNC", "?", "-1")
            replid, offset, size, mark = _read_sync_header(
                wire, spec, deadline, io_timeout, on_fork
            )
            sock.settimeout(io_timeout)
            ahead = wire.receive_ahead(chunk=RECEIVE_CHUNK, chunks=RECEIVE_CHUNKS)
        except RedisNodeError:
            raise
        except Exception as exc:
            raise error_for(exc, spec, connect_timeout) from None
        check = FAST_CRC64 if verify is None else verify
        validator = RdbValidator() if check else None
        raw: _PayloadStream
        if mark is not None:
            raw = _EofPayloadStream(wire, mark, where, validator)
        else:
            assert size is not None
            raw = _PayloadStream(wire, size, where, validator)
        # Reads of a part's size go straight into the caller's buffer; this one
        # serves only small reads.
        stream = io.BufferedReader(raw, buffer_size=64 * 1024)
        yield ReplicationRDB(size=size, stream=stream, replid=replid, offset=offset, verified=check)
    finally:
        if ahead is not None:
            ahead.stop()
        if sock is not None:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the receiving thread's recv
            with suppress(OSError):
                sock.close()
        if ahead is not None:
            ahead.join(timeout=5)


def _read_sync_header(
    wire: _Wire,
    spec: ConnectionSpec,
    deadline: Deadline,
    io_timeout: float,
    on_fork: Callable[[], None] | None = None,
) -> tuple[str | None, int | None, int | None, bytes | None]:
    """Read up to ``$<size>\r\n`` or ``$EOF:<mark>\r\n``: skip keepalive
    newlines, note +FULLRESYNC. Returns (replid, offset, size, mark)."""
    where = spec.display
    replid: str | None = None
    offset: int | None = None
    forked = False

    def fork_seen() -> None:
        nonlocal forked
        if not forked:
            forked = True
            if on_fork is not None:
                on_fork()

    max_lines = int(deadline.timeout * 10) + 1000  # keepalives come about once a second
    for _ in range(max_lines):
        if deadline.expired():
            break
        wire.sock.settimeout(min(io_timeout, max(deadline.left(), 0.001)))
        try:
            line = wire.readline()
        except TimeoutError:
            if deadline.expired():
                break
            raise RedisNodeError(
                f"Redis at {where} sent nothing for {io_timeout:g} s while preparing"
                " the replication RDB",
                reason="timeout",
            ) from None
        text = line.decode("utf-8", "replace").strip()
        if not text:
            continue  # keepalive newline while the master waits or runs its BGSAVE
        if text.startswith("+FULLRESYNC"):
            fork_seen()
            fields = text.split()
            if len(fields) >= 3 and fields[2].isdigit():
                replid, offset = fields[1], int(fields[2])
            continue
        if text.startswith("$EOF:"):
            fork_seen()
            mark = text[5:].encode()
            if len(mark) != _EofPayloadStream.MARK_LEN:
                raise RedisNodeError(
                    f"Redis at {where} announced a diskless RDB with a malformed end mark",
                    reason="protocol",
                )
            return replid, offset, None, mark
        if text.startswith("$") and text[1:].isdigit():
            fork_seen()
            return replid, offset, int(text[1:]), None
        if text.startswith("-"):
            msg = scrub(text[1:], spec)
            if "unknown command" in msg.lower():
                raise RedisNodeError(
                    f"Redis at {where} does not allow replication commands (PSYNC is renamed"
                    " or disabled, as on many managed services): use method bgsave",
                    reason="replication",
                )
            if msg.upper().startswith(("NOPERM", "NOAUTH")):
                raise redis.ResponseError(msg)
            raise RedisNodeError(
                f"Redis at {where} refused to start a replication sync: {msg}",
                reason="replication",
            )
        raise RedisNodeError(
            f"unexpected reply from Redis at {where} during the replication handshake:"
            f" {text[:60]!r}",
            reason="protocol",
        )
    raise RedisNodeError(
        f"Redis at {where} did not start sending the RDB within {deadline.timeout:g} s:"
        " raise the timeout for large datasets, or look at the Redis log",
        reason="timeout",
    )


class RdbCompressionPause:
    """Switch a server's ``rdbcompression`` off for the one fork that makes a
    diskless replication snapshot, and back on as soon as the child exists.

    Why: the child's LZF pass is most of the cost of serialising an RDB
    (measured on a 609 MiB RDB: 4.9 s with LZF, 1.9 s without) and LZF'd
    strings compress worse with zstd afterwards (376 vs 270 MB), so an RDB
    that is zstd-compressed anyway is cheaper and smaller without it.

    Only done when it touches nothing on disk and nothing lasting:
    ``repl-diskless-sync yes`` (the snapshot is streamed, never written to the
    node's disk), ``rdbcompression`` currently ``yes`` (a concurrent backupctl
    that already switched it off is left to put it back itself), and CONFIG
    allowed. :meth:`restore` is idempotent and also runs on every exit path.
    A BGSAVE the server starts on its own inside that window writes an
    uncompressed dump.rdb: as valid, a little larger.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self.active = False
        #: The snapshot will hold no LZF strings: switched off here, or the
        #: server runs with ``rdbcompression no`` anyway.
        self.uncompressed = False
        self.restore_error: str | None = None

    def observe(self) -> None:
        """Only note whether the server runs ``rdbcompression no`` anyway."""
        current, _ = config_get(self._client, "rdbcompression")
        self.uncompressed = current == "no"

    def start(self) -> None:
        """Switch it off if allowed (see the class); ``active`` says whether it did."""
        diskless, _ = config_get(self._client, "repl-diskless-sync")
        current, _ = config_get(self._client, "rdbcompression")
        self.uncompressed = current == "no"
        if diskless != "yes" or current != "yes":
            return
        try:
            exec_command(self._client, "CONFIG", "SET", "rdbcompression", "no")
        except redis.ResponseError:
            return  # CONFIG SET denied (ACL, protected config): keep LZF
        except redis.RedisError as exc:
            raise error_for(exc, client_spec(self._client), 0) from None
        self.active = self.uncompressed = True

    def restore(self) -> None:
        if not self.active:
            return
        self.active = False
        try:
            exec_command(self._client, "CONFIG", "SET", "rdbcompression", "yes")
        except redis.RedisError as exc:
            self.restore_error = (
                f"could not set rdbcompression back to yes on Redis at "
                f"{client_address(self._client)} ({as_text(exc)}): "
                "run CONFIG SET rdbcompression yes"
            )
