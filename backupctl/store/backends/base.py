"""The storage contract every backend implements.

A backend is deliberately small (after restic's ``backend.Backend``): it knows
how to write a whole object from a stream, read one back as a stream, list,
stat and delete, and maps its SDK's errors to :class:`NotFound` /
:class:`StorageError` so wrappers (retry, dry-run) and the CLI can react
without knowing which cloud they talk to.

Keys are ``/``-separated paths relative to the store's root (the bucket plus
the prefix taken from the store URL); callers never see the prefix.

Besides the contract this module holds the few helpers backends share: key
validation (:func:`check_key`), the writer state machine
(:class:`ManagedWriter`) and the bounded, concurrent part uploader
(:class:`PartUploadWriter`) that S3, Azure and GCS writers build on.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Protocol, runtime_checkable

log = logging.getLogger(__name__)

#: Size of the blocks/parts backends upload and the chunk size for copies.
CHUNK_SIZE = 8 * 1024 * 1024


class StorageError(Exception):
    """A store operation failed. ``str()`` is one line a user can act on."""

    #: True when retrying the same call can help (timeouts, 5xx, throttling).
    transient: bool = False

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class NotFound(StorageError):
    """The object (or the bucket/container itself) does not exist."""


class AccessDenied(StorageError):
    """The credentials are missing, wrong, or lack a permission."""


class StoreURLError(StorageError):
    """A store URL (or endpoint) that cannot be used: unknown scheme, missing
    or invalid bucket name. The message says what is wrong and shows an
    example of a correct URL."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime  # timezone-aware UTC


@dataclass(frozen=True)
class PendingUpload:
    """An upload that was started and never finished (S3 multipart upload,
    Azure uncommitted blocks). Only backends that have such a thing list them."""

    key: str
    started: datetime  # timezone-aware UTC
    upload_id: str


class ObjectWriter(AbstractContextManager["ObjectWriter"]):
    """A write-only stream for one object.

    Nothing is visible under the key until :meth:`commit` returns (local:
    rename of a temp file; S3: complete multipart; Azure: commit block list;
    GCS: final resumable chunk). Leaving the ``with`` block without
    ``commit()`` (an exception) calls :meth:`abort`, which discards what was
    written (abort the multipart upload, delete the temp file).
    """

    def write(self, data: bytes | bytearray | memoryview) -> int:
        raise NotImplementedError

    def commit(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    # io-compatible bits so tarfile / zstandard can write into it.
    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            try:
                self.abort()
            except Exception as err:  # the exception leaving the block matters more
                log.warning("could not discard an unfinished upload: %s", err)


@runtime_checkable
class Backend(Protocol):
    """One object store. All methods raise :class:`StorageError` subclasses only."""

    #: The store URL without credentials, for messages and manifests.
    url: str

    def check(self) -> None:
        """Fail early with a clear error if the bucket/container/directory does
        not exist (:class:`NotFound`) or the credentials do not work
        (:class:`AccessDenied`)."""
        ...

    def writer(self, key: str) -> ObjectWriter:
        """Start a streaming write of ``key`` (see :class:`ObjectWriter`)."""
        ...

    def open(self, key: str) -> BinaryIO:
        """A readable binary stream of the whole object. Raises
        :class:`NotFound`. The caller closes it. Reads are streamed: the
        object is never held whole in memory."""
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (recursive, any
        order). An empty store lists nothing; a missing bucket raises
        :class:`NotFound`."""
        ...

    def stat(self, key: str) -> ObjectInfo:
        """Size and modification time of one object; :class:`NotFound`."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``. Deleting a key that does not exist is not an error."""
        ...

    def pending_uploads(self, prefix: str = "") -> Iterator[PendingUpload]:
        """Unfinished uploads under ``prefix`` (empty for stores without them)."""
        ...

    def abort_upload(self, upload: PendingUpload) -> None:
        """Discard one unfinished upload."""
        ...


def put_bytes(backend: Backend, key: str, data: bytes) -> None:
    """Write a small object (a manifest) in one go."""
    with backend.writer(key) as w:
        w.write(data)
        w.commit()


def put_stream(backend: Backend, key: str, stream: BinaryIO) -> int:
    """Copy a readable stream into ``key``; returns the byte count."""
    total = 0
    with backend.writer(key) as w:
        while chunk := stream.read(CHUNK_SIZE):
            w.write(chunk)
            total += len(chunk)
        w.commit()
    return total


def read_bytes(backend: Backend, key: str) -> bytes:
    """Read a small object whole (one the tool wrote itself and trusts; use
    :func:`read_at_most` for anything a store could have made large)."""
    with backend.open(key) as f:
        return f.read()


def read_at_most(backend: Backend, key: str, limit: int) -> bytes:
    """The first ``limit + 1`` bytes of ``key`` at most: a result longer
    than ``limit`` means the object is larger, and nothing more was read (an
    object a store serves without end, a ``/dev/zero``, costs ``limit`` bytes)."""
    parts: list[bytes] = []
    got = 0
    with backend.open(key) as f:
        for _ in range(limit + 2):  # every read returns at least one byte, or the end
            chunk = f.read(min(CHUNK_SIZE, limit + 1 - got))
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
            if got > limit:
                break
    return b"".join(parts)


class ChunkReader(io.RawIOBase):
    """Turns an iterator of byte chunks (SDK download streams) into a
    readable file object, so every backend's ``open`` looks the same.
    ``on_close`` releases the SDK stream (returns the HTTP connection)."""

    def __init__(self, chunks: Iterator[bytes], on_close: Callable[[], None] | None = None) -> None:
        self._chunks = chunks
        self._buf = memoryview(b"")
        self._on_close = on_close

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed and self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            try:
                on_close()
            except Exception as err:  # closing a half-read HTTP stream is best effort
                log.debug("closing download stream: %s", err)
        super().close()

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buf:
            nxt = next(self._chunks, None)
            if nxt is None:
                return 0
            self._buf = memoryview(nxt)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def buffered_reader(
    chunks: Iterator[bytes], on_close: Callable[[], None] | None = None
) -> BinaryIO:
    """``open()``'s return value for SDK streams: a buffered file object whose
    ``read(n)`` returns ``n`` bytes until the end, like a local file."""
    return io.BufferedReader(ChunkReader(chunks, on_close), buffer_size=256 * 1024)


# --- keys ----------------------------------------------------------------------


def check_key(key: str) -> str:
    """Reject keys that are not plain relative ``/``-paths (empty, absolute,
    ``.``/``..`` or empty segments, NUL), the same way on every backend, so a
    key that works on one store works on all and cannot escape a local root."""
    parts = key.split("/")
    if not key or "\0" in key or any(p in ("", ".", "..") for p in parts):
        raise StorageError(
            f"invalid object key {key!r}: use a relative path like "
            "'redis/backup-20240101-120000/manifest.json'"
        )
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix: like a key, but may be empty or end with ``/``."""
    if prefix:
        check_key(prefix[:-1] if prefix.endswith("/") and len(prefix) > 1 else prefix)
    return prefix


def join_key(root: str, key: str) -> str:
    """The SDK-side name of ``key`` under the URL prefix ``root`` (no slashes
    at either end of ``root``, may be empty)."""
    return f"{root}/{key}" if root else key


def strip_root(root: str, name: str) -> str:
    """Inverse of :func:`join_key` for names listed by an SDK."""
    return name[len(root) + 1 :] if root else name


# --- writers -------------------------------------------------------------------


class ManagedWriter(ObjectWriter):
    """Writer state machine shared by the backends: ``open`` until
    :meth:`commit` succeeds or :meth:`abort` runs. Writing to a finished
    writer is an error, ``abort()`` after ``commit()`` does nothing, and
    leaving the ``with`` block without ``commit()`` (exception or not)
    aborts, so a forgotten commit never leaves half an upload behind."""

    def __init__(self, description: str) -> None:
        self.description = description  # "s3://bucket/key", for messages
        self.state = "open"  # "open" | "committed" | "aborted"

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        raise NotImplementedError

    def _commit(self) -> None:
        raise NotImplementedError

    def _abort(self) -> None:
        raise NotImplementedError

    def _check_open(self) -> None:
        if self.state != "open":
            raise StorageError(f"writer for {self.description} is already {self.state}")

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._check_open()
        n = memoryview(data).nbytes
        if n:
            self._write(data)
        return n

    def commit(self) -> None:
        self._check_open()
        self._commit()  # raises: still "open", so the with block aborts
        self.state = "committed"

    def abort(self) -> None:
        if self.state != "open":
            return
        self.state = "aborted"
        self._abort()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.state != "open":
            return
        if exc_type is None:
            self.abort()  # no commit and no exception: discard, and say so
            log.warning("writer for %s left without commit(): upload discarded", self.description)
        else:
            super().__exit__(exc_type, exc, tb)


class PartUploadWriter(ManagedWriter):
    """Cuts the written stream into parts and uploads them on a small thread
    pool, so the network works while the caller compresses the next part.

    At most ``workers`` parts are in flight (``write`` blocks while they are),
    so memory stays below ``(workers + 1) * part size`` plus the caller's own
    buffer (32-40 MiB with the defaults) whatever the object size. Those
    ``workers + 1`` part buffers are filled again once uploaded, not
    allocated per part: a fresh multi-MiB buffer is faulted in page by page
    (glibc maps big blocks and unmaps them on free), which cost the S3 backup
    0.3 CPU-s per 300 MiB.
    Subclasses implement the SDK calls:

    * :meth:`_begin` (caller's thread, before the first part is queued),
    * :meth:`_upload_part` (worker thread; parts are numbered from 1; with
      ``workers=1`` parts are uploaded one at a time, in order),
    * :meth:`_finish` (caller's thread, after every part succeeded; ``tail``
      is what remains buffered, the whole object when ``parts == 0``; with
      :attr:`tail_as_part` a non-empty tail of a multipart upload is
      uploaded as the last part instead, beside the parts still in flight,
      and ``tail`` is empty),
    * :meth:`_discard` (after in-flight parts have stopped; only called when
      :meth:`_begin` ran),
    * :meth:`_map_error` (SDK exception -> :class:`StorageError`).
    """

    max_parts: int = 10_000
    #: The store takes a short last part like any other (S3): it is queued
    #: at commit() with the parts in flight, not uploaded after them.
    tail_as_part: bool = False

    def __init__(self, description: str, *, workers: int = 3) -> None:
        super().__init__(description)
        self._buf: bytearray | None = None  # the part being filled, of its full size
        self._filled = 0  # bytes of it written so far
        self._spare: list[bytearray] = []  # uploaded parts' buffers, to fill again
        self._parts = 0  # parts queued so far
        self._results: dict[int, object] = {}
        self._error: BaseException | None = None
        self._slots = threading.BoundedSemaphore(workers)
        self._lock = threading.Lock()
        self._futures: list[Future[None]] = []
        self._pool: ThreadPoolExecutor | None = None
        self._workers = workers

    # -- hooks ----------------------------------------------------------------
    def part_size(self, number: int) -> int:
        """Size of part ``number`` (every part but the last has this size)."""
        return CHUNK_SIZE

    def _begin(self) -> None:
        return None

    def _upload_part(self, number: int, data: bytes | bytearray) -> object:
        raise NotImplementedError

    def _finish(self, tail: bytes, parts: int, results: dict[int, object]) -> None:
        raise NotImplementedError

    def _discard(self, parts: int) -> None:
        return None

    def _map_error(self, err: Exception) -> StorageError:
        return StorageError(f"upload of {self.description} failed: {err}")

    # -- machinery ------------------------------------------------------------
    def _raise_if_failed(self) -> None:
        with self._lock:
            err = self._error
        if err is not None:
            if isinstance(err, StorageError):
                raise err
            raise self._map_error(err) if isinstance(err, Exception) else err

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        self._raise_if_failed()
        view = memoryview(data).cast("B")
        while view.nbytes:
            size = self.part_size(self._parts + 1)
            if self._buf is None and view.nbytes >= size:
                self._submit(view[:size])  # a whole part: copied once a slot is free
                view = view[size:]
                continue
            if self._buf is None:
                self._buf = self._part_buffer(size)
                self._filled = 0
            take = min(len(self._buf) - self._filled, view.nbytes)
            self._buf[self._filled : self._filled + take] = view[:take]
            self._filled += take
            view = view[take:]
            if self._filled == len(self._buf):
                full, self._buf = self._buf, None
                self._submit(full)

    def _part_buffer(self, size: int) -> bytearray:
        """An uploaded part's buffer of this size, or a new one."""
        with self._lock:
            while self._spare:
                buf = self._spare.pop()
                if len(buf) == size:
                    return buf
        return bytearray(size)

    def _submit(self, part: bytearray | memoryview) -> None:
        """Queue ``part`` as the next part, once fewer than ``workers`` are in
        flight: a filled buffer as it is, other bytes copied into one then, so
        at most ``workers + 1`` part buffers exist."""
        number = self._parts + 1
        if number > self.max_parts:
            raise StorageError(
                f"{self.description} is too large for this store: more than {self.max_parts} parts"
            )
        if self._pool is None:
            try:
                self._begin()
            except StorageError:
                raise
            except Exception as err:
                raise self._map_error(err) from err
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="upload")
        self._slots.acquire()  # blocks while `workers` parts are in flight
        if self._error is not None:
            self._slots.release()
            self._raise_if_failed()
        self._parts = number
        if not isinstance(part, bytearray):
            buf = self._part_buffer(part.nbytes)
            buf[:] = part
            part = buf
        fut = self._pool.submit(self._run_part, number, part)
        fut.add_done_callback(lambda _f: self._slots.release())
        self._futures.append(fut)

    def _run_part(self, number: int, part: bytearray) -> None:
        try:
            if self.state != "open" or self._error is not None:
                return  # aborted or failed meanwhile: do not start more parts
            result = self._upload_part(number, part)
        except BaseException as err:
            with self._lock:
                if self._error is None:
                    self._error = err
            return
        finally:
            with self._lock:
                self._spare.append(part)  # before the slot is released
        with self._lock:
            self._results[number] = result

    def _drain(self) -> None:
        wait(self._futures)  # _run_part never raises; cancelled parts are done too
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def _commit(self) -> None:
        if self.tail_as_part and self._pool is not None and self._buf is not None:
            last, self._buf = self._buf, None
            del last[self._filled :]  # shortened in place: no copy of up to a part
            if last:
                self._submit(last)  # overlaps the parts in flight: one upload less at the end
        self._drain()
        self._raise_if_failed()
        tail = bytes(memoryview(self._buf)[: self._filled]) if self._buf is not None else b""
        self._buf, self._spare = None, []
        try:
            self._finish(tail, self._parts, dict(self._results))
        except StorageError:
            raise
        except Exception as err:
            raise self._map_error(err) from err

    def _abort(self) -> None:
        for fut in self._futures:
            fut.cancel()
        self._drain()
        self._buf, self._spare = None, []
        if self._pool is None:
            return
        try:
            self._discard(self._parts)
        except StorageError:
            raise
        except Exception as err:
            raise self._map_error(err) from err
