"""Watching the RDB while it streams into the archive: its format version
from the first bytes, and ``redis-check-rdb`` running beside the upload.

Why a module of its own: the check must cost (almost) no time and no extra
copy of the data. A snapshot file on disk (bgsave) is handed to the tool by
path and read from the page cache in a thread (:class:`FileChecker`); a
replication stream has no file, so its bytes are fed to the tool's pipe
from a thread through a small bounded queue (:class:`BackgroundChecker`),
overlapping compression. :func:`watch_rdb` picks one and wraps the RDB
member so the archive writer's reads drive both.
"""

from __future__ import annotations

import io
import os
import queue
import threading
from contextlib import ExitStack
from typing import BinaryIO

from backupctl.ops.backup_options import BackupError
from backupctl.redis.errors import RedisNodeError
from backupctl.redis.rdb import rdb_version_from_header
from backupctl.redis.rdb_tool import RdbStreamChecker, count_rdb_keys
from backupctl.store.archive import Member

__all__ = ["BackgroundChecker", "FileChecker", "RdbHeader", "watch_rdb"]


def watch_rdb(
    members: list[Member], *, check: bool, timeout: float, stack: ExitStack
) -> tuple[list[Member], RdbHeader, BackgroundChecker | FileChecker | None]:
    """``members`` with the RDB wrapped so its version is read as it passes;
    with ``check`` (and the tool installed) also the running redis-check-rdb,
    stopped when ``stack`` closes. Ask the checker's ``close()`` for the
    verdict once the archive is written."""
    header = RdbHeader()
    checker: BackgroundChecker | FileChecker | None = None
    fed: BackgroundChecker | None = None
    rdb_fd = _file_descriptor(members)
    if check and RdbStreamChecker.available():
        if rdb_fd is not None:
            # bgsave: redis-check-rdb reads the same inode from the page
            # cache beside us; no bytes are copied through a pipe.
            checker = FileChecker(rdb_fd, timeout)
        else:
            checker = fed = BackgroundChecker(
                stack.enter_context(RdbStreamChecker(timeout=timeout))
            )
        stack.callback(checker.stop)
    wrapped = [header.wrap(m, fed) if m.kind == "rdb" else m for m in members]
    return wrapped, header, checker


class RdbHeader:
    """Captures the RDB version from the first bytes as they stream past."""

    def __init__(self) -> None:
        self.version: int | None = None
        self._head = b""

    def wrap(self, m: Member, checker: BackgroundChecker | None = None) -> Member:
        def opener() -> BinaryIO:
            return _Tap(m.open(), self, checker)  # type: ignore[return-value]

        return Member(name=m.name, size=m.size, kind=m.kind, open=opener, mtime=m.mtime)

    def feed(self, data: bytes) -> None:
        if self.version is None and len(self._head) < 9:
            self._head += data[: 9 - len(self._head)]
            if len(self._head) == 9:
                try:
                    self.version = rdb_version_from_header(self._head)
                except ValueError as e:
                    raise BackupError(f"the snapshot is not an RDB file: {e}") from e


class BackgroundChecker:
    """Feeds ``redis-check-rdb`` from a thread through a small bounded queue,
    so writing to its pipe overlaps compression instead of adding to it
    (measured: +1.5 s on a 600 MiB RDB when fed inline, ~0 in a thread)."""

    QUEUE_CHUNKS = 2  # x 1 MiB chunks: the most this adds to memory

    def __init__(self, checker: RdbStreamChecker) -> None:
        self._checker = checker
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=self.QUEUE_CHUNKS)
        self._thread = threading.Thread(target=self._run, name="rdb-check", daemon=True)
        self._thread.start()
        self._stopped = False

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            self._checker.write(chunk)

    def write(self, data: bytes) -> None:
        self._queue.put(data)

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._queue.put(None)
            self._thread.join()

    def close(self) -> tuple[bool, int | None]:
        self.stop()
        return self._checker.close()

    @property
    def summary(self) -> str:
        return self._checker.summary


def _file_descriptor(members: list[Member]) -> int | None:
    """The open descriptor of the RDB member when it is a file on disk."""
    for m in members:
        if m.kind == "rdb":
            fh = m.open()
            if isinstance(getattr(fh, "raw", None), io.FileIO):
                return int(fh.fileno())
    return None


class FileChecker:
    """Runs ``redis-check-rdb`` on the snapshot file in a thread while it is
    archived; same interface as :class:`BackgroundChecker`."""

    def __init__(self, fd: int, timeout: float) -> None:
        self._result: tuple[bool, int | None] = (False, None)
        self.summary = ""
        # Our own descriptor: the archive writer closes the member's file when
        # it is done with it, possibly before the tool has opened the path.
        self._fd = os.dup(fd)
        path = f"/proc/{os.getpid()}/fd/{self._fd}"  # opens the inode afresh
        self._thread = threading.Thread(
            target=self._run, args=(path, timeout), name="rdb-check", daemon=True
        )
        self._thread.start()

    def _run(self, path: str, timeout: float) -> None:
        try:
            self._result = (True, count_rdb_keys(path, timeout=timeout))
        except RedisNodeError as e:
            self.summary = str(e)

    def stop(self) -> None:
        self._thread.join()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def close(self) -> tuple[bool, int | None]:
        self.stop()
        return self._result


class _Tap:
    """Shows the RDB bytes to the header reader and the checker as they pass."""

    def __init__(self, f: BinaryIO, header: RdbHeader, checker: BackgroundChecker | None) -> None:
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
