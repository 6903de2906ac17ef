"""The storage contract every backend implements.

A backend is deliberately small (after restic's ``backend.Backend``): it knows
how to write a whole object from a stream, read one back as a stream, list,
stat and delete, and maps its SDK's errors to :class:`NotFound` /
:class:`StorageError` so wrappers (retry, dry-run) and the CLI can react
without knowing which cloud they talk to.

Keys are ``/``-separated paths relative to the store's root (the bucket plus
the prefix taken from the store URL); a backend never sees the prefix.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Protocol, runtime_checkable

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
            self.abort()


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
    """Read a small object (a manifest) whole."""
    with backend.open(key) as f:
        return f.read()


class ChunkReader(io.RawIOBase):
    """Turns an iterator of byte chunks (SDK download streams) into a
    readable file object, so every backend's ``open`` looks the same."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

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
