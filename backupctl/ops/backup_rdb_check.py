"""Checking the RDB while it streams into the archive: its header from the
first bytes, backupctl's own reader walking it to the CRC64 trailer, and
``redis-check-rdb`` beside them when it reads that version.

Why a module of its own: the check must cost (almost) no time and no extra
copy of the data, and a snapshot nobody can restore must never be kept. A
snapshot file on disk (bgsave) is read again by path from the page cache in
threads (:class:`FileChecker`); a replication stream has no file, so its
bytes go to a thread through a small bounded queue (:class:`StreamChecker`),
overlapping compression. :func:`watch_rdb` picks one and wraps the RDB
member so the archive writer's reads drive both. The reader
(:func:`~backupctl.redis.rdb_reader.read_rdb`, ``deep=False`` to keep pace
with zstd) decides; an ``RdbFormatError`` fails the backup with its offset.
"""

from __future__ import annotations

import io
import os
import queue
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from typing import BinaryIO

from backupctl.ops.backup_options import BackupError
from backupctl.redis.errors import RedisNodeError
from backupctl.redis.rdb import rdb_header
from backupctl.redis.rdb_reader import RdbFormatError, RdbReport, read_rdb, read_rdb_file
from backupctl.redis.rdb_tool import RdbStreamChecker, count_rdb_keys, second_opinion
from backupctl.store.archive import Member

__all__ = ["FileChecker", "RdbHeader", "RdbVerdict", "StreamChecker", "watch_rdb"]

#: The queue between the archive writer and the reader thread, in chunks (~1 MiB each).
QUEUE_CHUNKS = 4


@dataclass(frozen=True)
class RdbVerdict:
    """What the checks found: ``problem`` is None when the RDB is valid."""

    problem: str | None
    keys: int | None = None
    report: RdbReport | None = None


def watch_rdb(
    members: list[Member], *, check: bool, timeout: float, stack: ExitStack
) -> tuple[list[Member], RdbHeader, StreamChecker | FileChecker | None]:
    """``members`` with the RDB wrapped so its header is read as it passes;
    with ``check`` also the running checks, stopped when ``stack`` closes. Ask
    the checker's ``close()`` for the verdict once the archive is written."""
    header = RdbHeader()
    checker: StreamChecker | FileChecker | None = None
    fed: StreamChecker | None = None
    rdb_fd = _file_descriptor(members)
    if check:
        if rdb_fd is not None:
            # bgsave: the checks read the same inode from the page cache
            # beside us; no bytes are copied through a pipe.
            checker = FileChecker(rdb_fd, timeout)
        else:
            checker = fed = StreamChecker(timeout)
        stack.callback(checker.stop)
    wrapped = [header.wrap(m, fed) if m.kind == "rdb" else m for m in members]
    return wrapped, header, checker


class RdbHeader:
    """Captures the RDB magic and version from the first bytes as they stream past."""

    def __init__(self) -> None:
        self.magic: str | None = None
        self.version: int | None = None
        self._head = b""

    def wrap(self, m: Member, checker: StreamChecker | None = None) -> Member:
        def opener() -> BinaryIO:
            return _Tap(m.open(), self, checker)  # type: ignore[return-value]

        return Member(name=m.name, size=m.size, kind=m.kind, open=opener, mtime=m.mtime)

    def feed(self, data: bytes) -> None:
        if self.version is None and len(self._head) < 9:
            self._head += data[: 9 - len(self._head)]
            if len(self._head) == 9:
                try:
                    self.magic, self.version = rdb_header(self._head)
                except ValueError as e:
                    raise BackupError(f"the snapshot is not an RDB file: {e}") from e


def _reader_problem(e: Exception) -> str:
    if isinstance(e, RdbFormatError):
        return f"backupctl's RDB reader: {e}"
    return f"backupctl's RDB reader failed: {e!r}"


def _tool_problem(summary: str) -> str:
    last = summary.splitlines()[-1] if summary else "no output"
    return f"redis-check-rdb rejects it: {last}"


class _QueueStream:
    """The reader's side of the queue: a read-only binary stream of the
    chunks put into it (None ends it). Feeds each chunk to the tool too."""

    def __init__(self, chunks: queue.Queue[bytes | None]) -> None:
        self._chunks = chunks
        self._buf = b""
        self._pos = 0
        self._eof = False
        self.tool: RdbStreamChecker | None = None
        self.head = b""

    def _next(self) -> bool:
        if self._eof:
            return False
        chunk = self._chunks.get()
        if chunk is None:
            self._eof = True
            return False
        if len(self.head) < 9:
            self.head += chunk[: 9 - len(self.head)]
            if len(self.head) == 9:
                self._start_tool()
        if self.tool is not None:
            self.tool.write(chunk)
        self._buf, self._pos = chunk, 0
        return True

    def _start_tool(self) -> None:
        try:
            magic, version = rdb_header(self.head)
        except ValueError:
            return  # the reader says why
        if second_opinion(magic, version):
            self.tool = RdbStreamChecker().__enter__()

    def read(self, n: int = -1) -> bytes:
        parts: list[bytes] = []
        want = n if n is not None and n >= 0 else 1 << 62
        while want > 0:
            if self._pos >= len(self._buf) and not self._next():
                break
            piece = self._buf[self._pos : self._pos + want]
            self._pos += len(piece)
            want -= len(piece)
            parts.append(piece)
        return b"".join(parts)

    def readinto(self, b: bytearray | memoryview) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        """Take (and drop) what is still put in, until the end."""
        while self._next():
            pass


class StreamChecker:
    """Reads a stream of chunks in a thread with :func:`read_rdb` (and feeds
    ``redis-check-rdb`` when it reads that version); ``write`` hands a chunk
    over through a small bounded queue, so the check overlaps compression."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=QUEUE_CHUNKS)
        self._stream = _QueueStream(self._queue)
        self._verdict = RdbVerdict(problem="the RDB check did not run")
        self._thread = threading.Thread(target=self._run, name="rdb-check", daemon=True)
        self._thread.start()
        self._stopped = False
        self.summary = ""

    def _run(self) -> None:
        try:
            report = read_rdb(self._stream, deep=False)  # type: ignore[arg-type]
            self._verdict = RdbVerdict(problem=None, keys=report.total_keys, report=report)
        except Exception as e:  # any failure of the reader keeps the snapshot out
            self._verdict = RdbVerdict(problem=_reader_problem(e))
        finally:
            self._stream.drain()  # the writer never blocks on a reader that stopped

    def write(self, data: bytes) -> None:
        self._queue.put(data)

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._queue.put(None)
            self._thread.join()

    def close(self) -> RdbVerdict:
        self.stop()
        tool = self._stream.tool
        if tool is None or self._verdict.problem is not None:
            if tool is not None:
                tool.__exit__(None, None, None)
            return self._verdict
        tool.timeout = self._timeout
        ok, _ = tool.close()
        self.summary = tool.summary
        if not ok:
            return RdbVerdict(problem=_tool_problem(tool.summary))
        return self._verdict


def _file_descriptor(members: list[Member]) -> int | None:
    """The open descriptor of the RDB member when it is a file on disk."""
    for m in members:
        if m.kind == "rdb":
            fh = m.open()
            if isinstance(getattr(fh, "raw", None), io.FileIO):
                return int(fh.fileno())
    return None


class FileChecker:
    """Reads the snapshot file with :func:`read_rdb_file` in a thread (and
    runs ``redis-check-rdb`` on it in another when it reads that version)
    while it is archived; same interface as :class:`StreamChecker`."""

    def __init__(self, fd: int, timeout: float) -> None:
        self._verdict = RdbVerdict(problem="the RDB check did not run")
        self._tool: tuple[bool, int | None] | None = None
        self.summary = ""
        # Our own descriptor: the archive writer closes the member's file when
        # it is done with it, possibly before the checks have opened the path.
        self._fd = os.dup(fd)
        path = f"/proc/{os.getpid()}/fd/{self._fd}"  # opens the inode afresh
        self._threads = [
            threading.Thread(target=self._read, args=(path,), name="rdb-read", daemon=True)
        ]
        try:
            magic, version = rdb_header(os.pread(self._fd, 9, 0))
        except ValueError:
            magic, version = "", 0  # the reader says why
        if magic and second_opinion(magic, version):
            self._threads.append(
                threading.Thread(
                    target=self._check, args=(path, timeout), name="rdb-check", daemon=True
                )
            )
        for t in self._threads:
            t.start()

    def _read(self, path: str) -> None:
        try:
            report = read_rdb_file(path, deep=False)
            self._verdict = RdbVerdict(problem=None, keys=report.total_keys, report=report)
        except Exception as e:  # any failure of the reader keeps the snapshot out
            self._verdict = RdbVerdict(problem=_reader_problem(e))

    def _check(self, path: str, timeout: float) -> None:
        try:
            self._tool = (True, count_rdb_keys(path, timeout=timeout))
        except RedisNodeError as e:
            self._tool = (False, None)
            self.summary = str(e)

    def stop(self) -> None:
        for t in self._threads:
            t.join()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def close(self) -> RdbVerdict:
        self.stop()
        if self._verdict.problem is None and self._tool is not None and not self._tool[0]:
            return RdbVerdict(problem=_tool_problem(self.summary))
        return self._verdict


class _Tap:
    """Shows the RDB bytes to the header reader and the checker as they pass."""

    def __init__(self, f: BinaryIO, header: RdbHeader, checker: StreamChecker | None) -> None:
        self._f = f
        self._header = header
        self._checker = checker

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._header.feed(data)
        if self._checker is not None and data:
            self._checker.write(data)
        return data

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> _Tap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
