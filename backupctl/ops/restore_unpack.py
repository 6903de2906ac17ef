"""A node's archive downloaded, unpacked and verified, its RDB walked while it
is being unpacked: the first pass of ``restore --to-dir``, ``--to-redis`` and
``verify``.

Why it exists: a restore writes nothing before the archive is verified
(the archive's and every file's size and sha256, the RDB's structure and
CRC-64 with our reader, and ``redis-check-rdb``'s opinion where it reads that
version). Done one after the other, the unpacking (zstd, sha256, the disk: C
code that lets go of the GIL) and our reader's walk (pure Python) each wait
for the other. Here the walk runs in a thread that follows the RDB file as the
unpacking writes it (:class:`_Growing`), and ``redis-check-rdb`` (a process
that wants the whole file) starts as soon as the file is complete, beside the
rest of the walk. Errors come in this order: an archive error first
(checksum, size, a file missing or extra), then our reader's, then the
tool's.

``restore --to-redis`` skips ``redis-check-rdb`` (``tool_check=False``): the
file never lands on a server's disk; every value reaches the target as a
``RESTORE`` payload whose RDB version and CRC-64 the target checks itself,
after our reader has walked every value of the file deeply here. The tool
would only add its memory (it holds a large value whole while it reads it:
458 MiB on a 300 MiB hash) and CPU. ``--to-dir`` and ``verify`` keep it.

Memory: the reader's own buffer; the file is read as it is written, never
held.
"""

from __future__ import annotations

import io
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from backupctl.redis.rdb import rdb_header
from backupctl.redis.rdb_reader import RdbFormatError, RdbReport, read_rdb
from backupctl.redis.rdb_tool import check_rdb, second_opinion
from backupctl.store import catalog
from backupctl.store.archive import ArchiveError, Progress, extract_verified
from backupctl.store.backends.base import Backend
from backupctl.store.catalog import Manifest, NodeEntry
from backupctl.store.encryption import Identities, require_keys

__all__ = ["download_node"]

#: How long the walk waits for more bytes before it looks again (the unpacking
#: also wakes it each time it reads a chunk of the archive).
_POLL = 0.05


class _Growing(io.RawIOBase):
    """The bytes of ``path`` as another thread writes them; the end of the file
    is the end only once ``done`` is set (then nothing more is written)."""

    def __init__(self, path: Path, done: threading.Event, wake: threading.Condition) -> None:
        self._path = path
        self._done = done
        self._wake = wake
        self._fh: io.FileIO | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        for _ in range(1 << 40):  # each turn reads, ends, or waits _POLL: bounded by the writer
            finished = self._done.is_set()  # before reading: what was written by then is there
            if self._fh is None and self._path.exists():
                self._fh = io.FileIO(self._path, "r")
            if self._fh is not None:
                n = self._fh.readinto(b)
                if n:
                    return n
            if finished:
                return 0
            with self._wake:
                self._wake.wait(_POLL)
        return 0

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        super().close()


def _walk(path: Path, size: int, done: threading.Event, wake: threading.Condition) -> RdbReport:
    with _Growing(path, done, wake) as stream:
        return read_rdb(stream, deep=True, size=size)  # type: ignore[arg-type]


def download_node(
    store: Backend,
    manifest: Manifest,
    node: NodeEntry,
    dest: Path,
    *,
    progress: Progress | None = None,
    identities: Identities | None = None,
    tool_check: bool = True,
) -> RdbReport | None:
    """Download and unpack ``node``'s archive into ``dest``, verifying it (see
    the module docstring); the RDB's report (None for a node without an RDB).
    :class:`ArchiveError` naming the first problem. An encrypted archive needs
    ``identities`` (checked before it is opened). Without ``tool_check`` no
    ``redis-check-rdb`` is run and no note printed (``--to-redis``: the target's
    own RESTORE checks every payload's version and CRC-64, see the module
    docstring)."""
    require_keys(manifest, identities, [node])
    rdb = node.rdb_file
    path = dest / rdb.path if rdb is not None else None
    done, wake = threading.Event(), threading.Condition()

    def tick(read: int) -> None:
        if progress is not None:
            progress(read)
        with wake:
            wake.notify_all()

    key = catalog.backup_dir(manifest.target, manifest.id) + node.archive.key
    with ThreadPoolExecutor(max_workers=2) as pool:
        walk: Future[RdbReport] | None = None
        if rdb is not None and path is not None:  # a node without an RDB: the archive's checks only
            walk = pool.submit(_walk, path, rdb.size, done, wake)
        try:
            with store.open(key) as src:
                size, sha = extract_verified(
                    src, node.archive.compression, node.files, dest, progress=tick,
                    archive_size=node.archive.size,
                    identities=identities if node.archive.encrypted else None,
                )  # fmt: skip
        finally:  # the walk ends at what was written (a failed unpacking: its error wins)
            done.set()
            with wake:
                wake.notify_all()
        if size != node.archive.size or sha != node.archive.sha256:
            raise ArchiveError(
                f"{node.archive.key}: archive checksum mismatch (sha256 {sha[:12]}… size "
                f"{size}, manifest says {node.archive.sha256[:12]}… size {node.archive.size}): "
                "the stored object is corrupt"
            )
        if walk is None or path is None:
            return None
        opinion: Future[tuple[bool, str]] | None = None
        if tool_check and (not walk.done() or walk.exception() is None):
            opinion = _second_opinion(pool, path)
        try:
            report = walk.result()
        except RdbFormatError as e:
            raise ArchiveError(f"{path.name}: the RDB is corrupt: {e}") from e
        except OSError as e:
            raise ArchiveError(f"{path.name}: cannot read the RDB: {e}") from e
    if opinion is None:
        if tool_check:
            second_opinion(report.magic, report.version)  # its note, when the tool cannot read it
    elif not (result := opinion.result())[0]:
        raise ArchiveError(f"{path.name}: redis-check-rdb rejects it: {result[1]}")
    return report


def _second_opinion(pool: ThreadPoolExecutor, path: Path) -> Future[tuple[bool, str]] | None:
    """``redis-check-rdb`` on the complete file, started now, when it reads its
    magic and version (else None: the note comes once the walk is done)."""
    try:
        with open(path, "rb") as fh:
            if not second_opinion(*rdb_header(fh.read(9)), note=False):
                return None
    except (OSError, ValueError):  # our reader says what is wrong with it
        return None
    return pool.submit(check_rdb, str(path))
