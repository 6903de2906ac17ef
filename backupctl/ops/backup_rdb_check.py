"""Checking the RDB while it streams into the archive: its header from the
first bytes, and backupctl's own reader walking it to the CRC64 trailer.

Why a module of its own: the check must cost (almost) no time and no extra
copy of the data, and a snapshot nobody can restore must never be kept. The
reader runs in a process of its own (:mod:`backupctl.redis.rdb_worker`,
``deep=False`` to keep pace with zstd): in a thread it held the GIL the
archive writer needs between its zstd and sha256 calls. A snapshot file on
disk (bgsave) is read again by path from the page cache
(:class:`FileChecker`); a replication stream has no file, so its bytes go to
the reader's stdin from a thread through a small bounded queue
(:class:`StreamChecker`), overlapping compression. :func:`watch_rdb` picks
one and wraps the RDB member so the archive writer's reads drive both. An
error of the reader fails the backup with its offset.

``redis-check-rdb`` is not run here (it was, before the reader): a third
consumer of the RDB on a two-core node cost the pipeline 0.8-1.2 s on a
609 MiB RDB (0.65x the speed of ``zstd -1`` instead of 0.8-0.9x), and the
reader decides anyway. It stays the second opinion of ``verify`` and every
restore; when it is too old for the RDB, the backup says so once
(:func:`~backupctl.redis.rdb_tool.second_opinion`), so the note comes where
the snapshot is taken.
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
from backupctl.redis.rdb import rdb_header
from backupctl.redis.rdb_tool import second_opinion
from backupctl.redis.rdb_worker import ReaderProcess, WorkerResult
from backupctl.store.archive import Member

__all__ = ["FileChecker", "RdbHeader", "RdbVerdict", "StreamChecker", "watch_rdb"]

#: The queue between the archive writer and the feeding thread, in chunks of CHUNK bytes.
QUEUE_CHUNKS = 4
CHUNK = 256 * 1024


@dataclass(frozen=True)
class RdbVerdict:
    """What the checks found: ``problem`` is None when the RDB is valid."""

    problem: str | None
    keys: int | None = None


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


def _verdict(found: WorkerResult) -> RdbVerdict:
    if found.error is not None:
        return RdbVerdict(problem=f"backupctl's RDB reader: {found.error}")
    return RdbVerdict(problem=None, keys=found.keys)


class StreamChecker:
    """Feeds the reader process from a thread through a small bounded queue,
    so writing to its pipe overlaps compression instead of adding to it.

    The bytes are copied into one of ``QUEUE_CHUNKS + 1`` buffers that go
    round (the caller may reuse its own at once): no buffer is allocated per
    chunk, which faulted each MiB in afresh (see backupctl.core.malloc)."""

    def __init__(self, timeout: float) -> None:
        self._queue: queue.Queue[tuple[bytearray, int] | None] = queue.Queue(maxsize=QUEUE_CHUNKS)
        self._free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(QUEUE_CHUNKS + 1):
            self._free.put(bytearray(CHUNK))
        self._chunk: bytearray | None = None  # being filled by write()
        self._filled = 0
        self._reader = ReaderProcess(None, deep=False, timeout=timeout)
        self._head = b""
        self._thread = threading.Thread(target=self._run, name="rdb-check", daemon=True)
        self._thread.start()
        self._stopped = False

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            chunk, n = item
            if len(self._head) < 9:
                self._head += chunk[: min(n, 9 - len(self._head))]
                if len(self._head) == 9:
                    _note_old_tool(self._head)
            self._reader.write(memoryview(chunk)[:n])
            self._free.put(chunk)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` for the reader (queued once a buffer is full)."""
        view = memoryview(data).cast("B")
        while view.nbytes:
            if self._chunk is None:
                self._chunk, self._filled = self._free.get(), 0
            take = min(CHUNK - self._filled, view.nbytes)
            self._chunk[self._filled : self._filled + take] = view[:take]
            self._filled += take
            view = view[take:]
            if self._filled == CHUNK:
                self._send()

    def _send(self) -> None:
        if self._chunk is not None and self._filled:
            self._queue.put((self._chunk, self._filled))
        self._chunk = None

    def stop(self, *, keep: bool = False) -> None:
        """End the stream; the reader is killed unless ``keep`` (close() asks
        it for its verdict)."""
        if not self._stopped:
            self._stopped = True
            self._send()
            self._queue.put(None)
            self._thread.join()
        if not keep:
            self._reader.kill()

    def close(self) -> RdbVerdict:
        self.stop(keep=True)
        return _verdict(self._reader.close())


def _note_old_tool(head: bytes) -> None:
    """One note on stderr when the installed redis-check-rdb cannot read this RDB."""
    try:
        magic, version = rdb_header(head)
    except ValueError:
        return  # the reader says why
    second_opinion(magic, version)


def _file_descriptor(members: list[Member]) -> int | None:
    """The open descriptor of the RDB member when it is a file on disk."""
    for m in members:
        if m.kind == "rdb":
            fh = m.open()
            if isinstance(getattr(fh, "raw", None), io.FileIO):
                return int(fh.fileno())
    return None


class FileChecker:
    """Runs the reader process on the snapshot file while it is archived;
    same interface as :class:`StreamChecker`."""

    def __init__(self, fd: int, timeout: float) -> None:
        # Our own descriptor: the archive writer closes the member's file when
        # it is done with it, possibly before the reader has opened the path.
        self._fd = os.dup(fd)
        path = f"/proc/{os.getpid()}/fd/{self._fd}"  # opens the inode afresh
        self._reader = ReaderProcess(path, deep=False, timeout=timeout)
        _note_old_tool(os.pread(self._fd, 9, 0))

    def stop(self, *, keep: bool = False) -> None:
        if not keep:
            self._reader.kill()
            self._close_fd()

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def close(self) -> RdbVerdict:
        verdict = _verdict(self._reader.close())
        self._close_fd()
        return verdict


class _Tap:
    """Shows the RDB bytes to the header reader and the checker as they pass."""

    def __init__(self, f: BinaryIO, header: RdbHeader, checker: StreamChecker | None) -> None:
        self._f = f
        self._header = header
        self._checker = checker

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._seen(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """Read straight into the caller's buffer (no bytes object per read)."""
        n = self._f.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            self._seen(memoryview(buffer)[:n])
        return int(n or 0)

    def _seen(self, data: bytes | memoryview) -> None:
        if self._header.version is None:
            self._header.feed(bytes(data[:9]))
        if self._checker is not None and len(data):
            self._checker.write(data)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> _Tap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
