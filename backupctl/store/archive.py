"""Streaming tar + compression + sha256, in both directions.

Backups flow ``source files -> tar -> zstd/gzip -> sha256 -> store writer``
and restores flow the other way, in fixed-size chunks: the dataset is never
held in memory and never copied to a second place on disk. Archives are plain
PAX tar compressed with zstd or gzip, so ``zstd -d | tar x`` opens them.

A file whose size is not known when its turn comes (an RDB streamed by a
diskless replication sync) cannot have a tar header up front. It is stored
as consecutive members ``<name>.part-000001``, ``<name>.part-000002``, ...
of at most :data:`PART_SIZE` bytes each (one part is buffered to learn its
size); the manifest lists the file once, with its whole size and sha256 and
the number of parts, and restore joins them. By hand:
``zstd -dc x.tar.zst | tar -xO --wildcards 'dump.rdb.part-*' > dump.rdb``.
A stream that fits in one part is stored as a plain member.

The tar writer is our own few lines on top of :meth:`tarfile.TarInfo.tobuf`
because :mod:`tarfile`'s stream mode re-buffers every write in 10 KiB slices,
which costs more CPU than compression itself.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

import zstandard

from backupctl.store.archive_guard import COPY_CHUNK as COPY_CHUNK
from backupctl.store.archive_guard import PART_SUFFIX as PART_SUFFIX
from backupctl.store.archive_guard import ArchiveError as ArchiveError
from backupctl.store.archive_guard import (
    ExpectedFiles,
    TarBudget,
    member_kind,
    part_name,
    shown,
)
from backupctl.store.catalog import FileEntry
from backupctl.store.encryption import (
    EncryptionError,
    Identities,
    Recipients,
    decrypting_reader,
    encrypting,
)
from backupctl.store.read_ahead import ReadAhead

COMPRESSIONS = ("zstd", "gzip", "none")
#: Level 1 keeps the pipeline as fast as ``zstd -1``/``sha256sum`` on 2 cores
#: (measured on a 609 MiB RDB: level 1 2.6 s, level 3 5.2 s, archives 18%
#: larger); ``--level`` trades speed for size.
ZSTD_DEFAULT_LEVEL = 1
#: An RDB without LZF strings (rdbcompression off, see
#: backupctl.redis.replication.RdbCompressionPause) has long repeats level 2's matcher finds:
#: on the 642 MB benchmark RDB, level 1 gave 270 MB, level 2 198 MB for 10%
#: more CPU (level 3: 194 MB for 60% more), and a smaller upload is what a
#: store's ingest costs. On LZF'd RDBs level 2 gains less (12%) for 20%.
RAW_RDB_ZSTD_LEVEL = 2
ZSTD_JOB_SIZE = 512 * 1024
ZSTD_WRITE_SIZE = 128 * 1024
#: Largest part of a file of unknown size (see the module docstring): the
#: memory one buffered part costs, against one 512-byte header per part.
PART_SIZE = 4 * 1024 * 1024
BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE

#: Called with a byte count as data passes; used for progress bars.
Progress = Callable[[int], None]


class Sink(Protocol):
    def write(self, data: bytes | bytearray | memoryview, /) -> int: ...


@dataclass(frozen=True)
class Member:
    """One file to put in an archive. ``open`` is called when its turn
    comes, and exactly ``size`` bytes are read (a file that grows meanwhile,
    like an AOF being appended, is cut at the size taken when it was listed).
    ``size=None``: a stream of unknown length, read to its end and stored in
    parts."""

    name: str
    size: int | None
    kind: str
    open: Callable[[], BinaryIO]
    mtime: float = 0.0


@dataclass(frozen=True)
class ArchiveResult:
    size: int
    sha256: str
    files: list[FileEntry]


class HashingWriter:
    """Counts and hashes what passes through to ``sink``."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._hash.update(data)
        self._sink.write(data)
        n = len(data)
        self.size += n
        return n

    def flush(self) -> None:
        return None

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class HashingReader(io.RawIOBase):
    """Counts and hashes what is read from ``source``; with ``limit``, reading
    more than ``limit`` bytes raises :class:`ArchiveError` (one byte past it
    is read, to know)."""

    def __init__(
        self, source: BinaryIO, progress: Progress | None = None, *, limit: int | None = None
    ) -> None:
        self._source = source
        self._hash = hashlib.sha256()
        self._progress = progress
        self._limit = limit
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        want = len(b)
        if self._limit is not None:
            want = min(want, self._limit + 1 - self.size)
        data = self._source.read(want)
        n = len(data)
        if self._limit is not None and self.size + n > self._limit:
            raise ArchiveError(
                f"the archive is larger than the {self._limit} bytes its manifest declares: "
                "refused, nothing more is read"
            )
        if n:
            b[:n] = data
            self._hash.update(data)
            self.size += n
            if self._progress:
                self._progress(n)
        return n

    def drain(self) -> None:
        """Read (and hash) whatever is left, so the digest covers the whole object."""
        while self.read(COPY_CHUNK):
            pass

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class _Compressor:
    """A writer that compresses into ``sink``; ``finish()`` ends the frame."""

    def __init__(
        self, sink: HashingWriter, compression: str, level: int | None, threads: int = -1
    ) -> None:
        self._raw: Sink
        if compression == "zstd":
            # Multi-threaded (one worker per core, threads=-1) with 512 KiB
            # jobs: the same ratio for ~7% more CPU than 1 MiB jobs, and 8 MiB
            # of memory instead of 17 (1 MiB jobs) or ~60 (the default job
            # size). threads=0: in the calling thread (GIL released), no jobs.
            level = ZSTD_DEFAULT_LEVEL if level is None else level
            params = (
                zstandard.ZstdCompressionParameters.from_level(level, threads=0)
                if threads == 0
                else zstandard.ZstdCompressionParameters.from_level(
                    level, threads=threads, job_size=ZSTD_JOB_SIZE
                )
            )
            cctx = zstandard.ZstdCompressor(compression_params=params)
            # Output in pieces below the data path's malloc mmap threshold
            # (cli/app.py): heap blocks used again, not a fresh mapping per MiB.
            self._zw = cctx.stream_writer(sink, closefd=False, write_size=ZSTD_WRITE_SIZE)  # type: ignore[arg-type]
            self._raw = self._zw
        elif compression == "gzip":
            self._gz = gzip.GzipFile(
                fileobj=sink,
                mode="wb",
                compresslevel=6 if level is None else level,
                mtime=0,
            )
            self._raw = self._gz
        elif compression == "none":
            self._raw = sink
        else:
            raise ValueError(f"unknown compression {compression!r}; use one of {COMPRESSIONS}")
        self._compression = compression

    def write(self, data: bytes | bytearray | memoryview) -> int:
        return self._raw.write(data)

    def finish(self) -> None:
        if self._compression == "zstd":
            self._zw.flush(zstandard.FLUSH_FRAME)
        elif self._compression == "gzip":
            self._gz.close()


def _tar_header(name: str, size: int, mtime: float) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(mtime)
    info.mode = 0o640
    info.type = tarfile.REGTYPE
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def write_archive(
    sink: Sink,
    members: Iterable[Member],
    compression: str = "zstd",
    *,
    level: int | None = None,
    progress: Progress | None = None,
    encrypt_to: Recipients | None = None,
    zstd_threads: int = -1,
) -> ArchiveResult:
    """Write ``members`` as one compressed tar into ``sink`` (then encrypted
    to ``encrypt_to``, age); return the stored object's size and sha256 and
    each file's size and sha256. ``zstd_threads``: zstd's workers (-1: one
    per core; 0: none, zstd runs in the caller's thread)."""
    out = HashingWriter(sink)
    files: list[FileEntry] = []
    with encrypting(out, encrypt_to) as encrypted:
        comp = _Compressor(encrypted, compression, level, zstd_threads)  # type: ignore[arg-type]
        with ThreadPoolExecutor(1, thread_name_prefix="sha256") as hasher:
            tar = _TarStream(comp, hasher)
            for m in members:
                with m.open() as src:
                    if m.size is None:
                        files.append(tar.add_stream(m, src, progress))
                    else:
                        files.append(tar.add_sized(m, src, progress))
            tar.close()
        comp.finish()
    return ArchiveResult(size=out.size, sha256=out.hexdigest(), files=files)


class _Sha256Beside:
    """sha256 of a file's bytes, computed on a helper thread while the caller
    compresses the same bytes (hashlib drops the GIL on large updates): the
    main thread was the pipeline's bottleneck. One update is in flight at a
    time, in order; :meth:`wait` returns once the last one is done, before the
    caller reuses that buffer."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self._hash = hashlib.sha256()
        self._pool = pool
        self._pending: Future[None] | None = None

    def update(self, data: bytes | memoryview) -> None:
        self.wait()
        self._pending = self._pool.submit(self._hash.update, data)

    def wait(self) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending = None

    def hexdigest(self) -> str:
        self.wait()
        return self._hash.hexdigest()


class _TarStream:
    """The tar framing: headers, padding, end-of-archive records."""

    def __init__(self, out: _Compressor, hasher: ThreadPoolExecutor) -> None:
        self._out = out
        self._hasher = hasher
        self._written = 0

    def _member(
        self, name: str, data: Iterable[bytes | memoryview], size: int, mtime: float
    ) -> None:
        header = _tar_header(name, size, mtime)
        self._out.write(header)
        for chunk in data:
            self._out.write(chunk)
        pad = -size % BLOCK
        if pad:
            self._out.write(b"\0" * pad)
        self._written += len(header) + size + pad

    def add_sized(self, m: Member, src: BinaryIO, progress: Progress | None) -> FileEntry:
        size = m.size
        assert size is not None
        digest = _Sha256Beside(self._hasher)  # chunks are fresh bytes: safe to queue

        def chunks() -> Iterator[bytes]:
            remaining = size
            while remaining > 0:
                chunk = src.read(min(COPY_CHUNK, remaining))
                if not chunk:
                    raise ArchiveError(
                        f"{m.name} ended after {size - remaining} of {size} bytes while it "
                        "was being archived (was it truncated or replaced?)"
                    )
                digest.update(chunk)
                remaining -= len(chunk)
                if progress:
                    progress(len(chunk))
                yield chunk

        self._member(m.name, chunks(), size, m.mtime)
        return FileEntry(path=m.name, size=size, sha256=digest.hexdigest(), kind=m.kind)

    def add_stream(self, m: Member, src: BinaryIO, progress: Progress | None) -> FileEntry:
        """Read ``src`` to its end in parts of at most PART_SIZE bytes."""
        digest = _Sha256Beside(self._hasher)
        buf = bytearray(PART_SIZE)
        view = memoryview(buf)
        readinto = getattr(src, "readinto", None)
        total = parts = 0
        split = False
        for _ in range(1 << 40):  # bounded by the stream's length
            filled = _fill(src, readinto, view)
            if filled == 0 and parts > 0:
                break
            part = view[:filled]
            digest.update(part)
            total += filled
            if progress and filled:
                progress(filled)
            last = filled < PART_SIZE
            split = not (last and parts == 0)  # a stream that fits one part: a plain member
            self._member(part_name(m.name, parts + 1) if split else m.name, [part], filled, m.mtime)
            digest.wait()  # before _fill reuses the buffer
            parts += 1
            if last:
                break
        return FileEntry(
            path=m.name,
            size=total,
            sha256=digest.hexdigest(),
            kind=m.kind,
            parts=parts if split else 0,
        )

    def close(self) -> None:
        end = b"\0" * (2 * BLOCK)
        self._written += len(end)
        end += b"\0" * (-self._written % RECORD)
        self._out.write(end)


def _fill(src: BinaryIO, readinto: Callable[[memoryview], int] | None, view: memoryview) -> int:
    """Fill ``view`` from ``src`` unless it ends first; the byte count."""
    filled = 0
    while filled < len(view):
        want = min(len(view) - filled, COPY_CHUNK)  # what one read may hand to a tap
        if readinto is not None:
            n = readinto(view[filled : filled + want]) or 0
        else:
            data = src.read(want)
            n = len(data)
            view[filled : filled + n] = data
        if n == 0:
            break
        filled += n
    return filled


def file_member(path: Path, name: str, kind: str) -> Member:
    """A member for a file on disk. The file is opened NOW and its size
    taken now, so a later rename or unlink (the next BGSAVE, an AOF rewrite)
    does not change what is archived: the open descriptor keeps the inode."""
    fh = open(path, "rb")  # noqa: SIM115 - closed by the archive writer
    st = os.fstat(fh.fileno())
    return Member(name=name, size=st.st_size, kind=kind, open=lambda: fh, mtime=st.st_mtime)


# --- reading -------------------------------------------------------------------


def decompressing_reader(source: BinaryIO, compression: str) -> BinaryIO:
    if compression == "zstd":
        dctx = zstandard.ZstdDecompressor()
        return dctx.stream_reader(source, read_size=COPY_CHUNK, read_across_frames=True)
    if compression == "gzip":
        return gzip.GzipFile(fileobj=source, mode="rb")  # type: ignore[return-value]
    if compression == "none":
        return source
    raise ArchiveError(f"unknown compression {compression!r} in manifest")


def iter_members(stream: BinaryIO) -> Iterator[tuple[tarfile.TarInfo, BinaryIO]]:
    """Yield each regular file of a tar stream with a reader for its bytes.
    The reader must be consumed before advancing. Directory entries are
    skipped; links, devices and FIFOs are refused (never created, never
    followed): backupctl writes none, so one means the archive is not ours."""
    try:
        with tarfile.open(fileobj=stream, mode="r:") as tar:
            for info in tar:
                if info.isdir():
                    continue
                if not info.isfile():
                    raise ArchiveError(
                        f"archive member {shown(info.name)} is {member_kind(info)}, not a "
                        "regular file: refused (backupctl archives hold regular files only)"
                    )
                name = PurePosixPath(info.name)
                if name.is_absolute() or ".." in name.parts:
                    raise ArchiveError(f"archive member {shown(info.name)} has an unsafe path")
                f = tar.extractfile(info)
                assert f is not None
                yield info, f  # type: ignore[misc]
    except (tarfile.TarError, zstandard.ZstdError, EOFError, gzip.BadGzipFile, OSError) as e:
        raise ArchiveError(f"archive is corrupt or truncated: {e}") from e


def extract_verified(
    source: BinaryIO,
    compression: str,
    expected: list[FileEntry],
    dest: Path | None,
    *,
    on_file: Callable[[FileEntry, Path | None], None] | None = None,
    progress: Progress | None = None,
    archive_size: int | None = None,
    identities: Identities | None = None,
) -> tuple[int, str]:
    """Stream an archive, check every file against ``expected`` (size and
    sha256), and write the files under ``dest`` (or only check them when
    ``dest`` is None); a file stored in parts is joined back. Returns the
    archive's byte count and sha256 (the whole object is read, trailing
    padding included). Raises :class:`ArchiveError` on any mismatch; files
    already written are left for the caller to discard.

    Nothing beyond what the manifest declares is written or read: a member
    larger than its file's declared size is refused before its first byte, a
    file listed twice or a member not listed at once, and with
    ``archive_size`` (the manifest's archive size) the stored object is read
    no further than one byte past it. With ``identities`` the stored object
    is an age stream, decrypted as it is read (the size and sha256 returned
    are the stored, encrypted bytes')."""
    by_name = ExpectedFiles(expected)
    seen: set[str] = set()
    current: _FileOut | None = None
    hashed = HashingReader(source, progress, limit=archive_size)
    plain: BinaryIO = hashed  # type: ignore[assignment]
    if identities is not None:
        plain = decrypting_reader(plain, identities, "the archive")
    ahead = ReadAhead(decompressing_reader(plain, compression), COPY_CHUNK)
    tar_stream = TarBudget(ahead)  # type: ignore[arg-type]
    try:
        for info, reader in iter_members(tar_stream):  # type: ignore[arg-type]
            want, number = by_name.get(info.name)
            if want is None:
                raise ArchiveError(
                    f"archive holds {shown(info.name)}, which the manifest does not list"
                )
            if want.path in seen:
                raise ArchiveError(f"archive holds {want.path} twice: the archive is corrupt")
            if number <= 1:
                if current is not None:
                    raise ArchiveError(
                        f"{current.want.path}: only {current.parts} of {current.want.parts} "
                        "parts before the next file: the archive is corrupt"
                    )
                current = _FileOut(want, dest)
            elif current is None or current.want is not want or current.parts != number - 1:
                raise ArchiveError(f"{info.name}: part out of order: the archive is corrupt")
            if current.size + info.size > want.size:
                raise ArchiveError(
                    f"{want.path}: the archive holds at least {current.size + info.size} bytes "
                    f"of it, the manifest declares {want.size}: refused before writing more "
                    "(the archive is corrupt or was tampered with)"
                )
            tar_stream.allow(info.size)
            current.copy(reader)
            if number == want.parts:  # the file's last (or only) member
                current.finish()
                seen.add(want.path)
                if on_file is not None:
                    on_file(want, current.path)
                current = None
        ahead.stop()  # nothing else reads the stored object now
        hashed.drain()
    except tarfile.TarError as e:  # raised while a member's bytes are read
        raise ArchiveError(f"archive is corrupt or truncated: {_tar_reason(e)}") from e
    except (zstandard.ZstdError, EOFError, gzip.BadGzipFile, OSError) as e:
        raise ArchiveError(f"archive is corrupt or truncated: {e}") from e
    except EncryptionError as e:
        raise ArchiveError(str(e)) from e
    finally:
        ahead.stop(check=False)  # already stopped and checked unless an error is on its way
        if current is not None:
            current.close()
        if identities is not None:
            plain.close()
    missing = sorted({f.path for f in expected} - seen)
    if missing:
        raise ArchiveError(f"archive is missing {', '.join(missing)} listed in the manifest")
    return hashed.size, hashed.hexdigest()


def _tar_reason(e: tarfile.TarError) -> str:
    text = str(e)
    return "it ends in the middle of a file" if text == "unexpected end of data" else text


class _FileOut:
    """One file being extracted (from one member, or from its parts in order)."""

    def __init__(self, want: FileEntry, dest: Path | None) -> None:
        self.want = want
        self.parts = 0
        self.size = 0
        self.digest = hashlib.sha256()
        self.path = dest / want.path if dest is not None else None
        self.out: BinaryIO | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.out = open(self.path, "wb")  # noqa: SIM115 - closed by finish/close

    def copy(self, reader: BinaryIO) -> None:
        while chunk := reader.read(min(COPY_CHUNK, self.want.size - self.size + 1)):
            if self.size + len(chunk) > self.want.size:  # tarfile reads only the header's size
                raise ArchiveError(
                    f"{self.want.path}: longer than the {self.want.size} bytes the manifest "
                    "declares: the archive is corrupt"
                )
            self.digest.update(chunk)
            self.size += len(chunk)
            if self.out is not None:
                self.out.write(chunk)
        self.parts += 1

    def close(self) -> None:
        if self.out is not None:
            self.out.close()
            self.out = None

    def finish(self) -> None:
        if self.out is not None:
            self.out.flush()
            os.fsync(self.out.fileno())
        self.close()
        want = self.want
        if self.size != want.size or self.digest.hexdigest() != want.sha256:
            raise ArchiveError(
                f"{want.path}: content does not match the manifest "
                f"(size {self.size} vs {want.size}, sha256 {self.digest.hexdigest()[:12]}… vs "
                f"{want.sha256[:12]}…): the archive is corrupt"
            )
