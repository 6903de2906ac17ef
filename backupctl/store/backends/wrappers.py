"""Wrappers around a backend, as restic's backend wrappers are: each one
changes one behaviour and forwards the rest, so no backend needs flags for
dry runs, progress or retries (:mod:`backupctl.store.backends.retry`).

:class:`ForwardingBackend` forwards every call of the storage interface to
``inner``; a wrapper subclasses it and overrides only what it changes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import BinaryIO

from backupctl.store.backends.base import (
    Backend,
    ManagedWriter,
    ObjectInfo,
    ObjectWriter,
    PendingUpload,
)
from backupctl.store.backends.s3_options import ServerSideEncryption

log = logging.getLogger(__name__)


class ForwardingBackend:
    """Every call goes to ``inner`` unchanged."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.url = inner.url

    def check(self) -> None:
        self.inner.check()

    def writer(self, key: str) -> ObjectWriter:
        return self.inner.writer(key)

    def open(self, key: str) -> BinaryIO:
        return self.inner.open(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def stat(self, key: str) -> ObjectInfo:
        return self.inner.stat(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def pending_uploads(self, prefix: str = "") -> Iterator[PendingUpload]:
        return self.inner.pending_uploads(prefix)

    def abort_upload(self, upload: PendingUpload) -> None:
        self.inner.abort_upload(upload)

    def retention(self, key: str) -> tuple[str, datetime] | None:
        """The inner store's Object Lock on ``key`` (see :func:`retention_of`)."""
        return retention_of(self.inner, key)

    def extend_retention(self, key: str, mode: str, until: datetime) -> None:
        extend_retention(self.inner, key, mode, until)

    def server_side(self, key: str) -> ServerSideEncryption | None:
        """The inner store's server-side encryption of ``key`` (see :func:`server_side_of`)."""
        return server_side_of(self.inner, key)


def retention_of(backend: Backend, key: str) -> tuple[str, datetime] | None:
    """``(mode, retain-until)`` of the Object Lock on ``key`` in stores that
    have one (S3), else None: prune asks before it deletes."""
    ask = getattr(backend, "retention", None)
    result: tuple[str, datetime] | None = ask(key) if ask is not None else None
    return result


def server_side_of(backend: Backend, key: str) -> ServerSideEncryption | None:
    """How the store encrypts ``key`` server-side, as it reports it (S3: one
    HeadObject; Azure, GCS: the object's properties); None when it does not, or
    cannot say (file)."""
    ask = getattr(backend, "server_side", None)
    result: ServerSideEncryption | None = ask(key) if ask is not None else None
    return result


def extend_retention(backend: Backend, key: str, mode: str, until: datetime) -> None:
    """Move the Object Lock on ``key`` out to ``until`` (stores without locks: nothing)."""
    extend = getattr(backend, "extend_retention", None)
    if extend is not None:
        extend(key, mode, until)


class ObservingBackend(ForwardingBackend):
    """Calls ``on_delete(key)`` after each delete (progress output)."""

    def __init__(self, inner: Backend, on_delete: Callable[[str], None]) -> None:
        super().__init__(inner)
        self.on_delete = on_delete

    def delete(self, key: str) -> None:
        self.inner.delete(key)
        self.on_delete(key)


class DryRunBackend(ForwardingBackend):
    """Reads from ``inner`` for real; ``delete`` and ``abort_upload`` only
    record what they would do (``would_delete``: keys, ``would_abort``:
    uploads), and writers discard their data (``would_write``: keys)."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner)
        self.would_delete: list[str] = []
        self.would_abort: list[PendingUpload] = []
        self.would_write: list[str] = []

    def writer(self, key: str) -> ObjectWriter:
        return _DiscardingWriter(self, key)

    def delete(self, key: str) -> None:
        log.info("dry run: would delete %s/%s", self.url, key)
        self.would_delete.append(key)

    def abort_upload(self, upload: PendingUpload) -> None:
        log.info("dry run: would abort the unfinished upload of %s/%s", self.url, upload.key)
        self.would_abort.append(upload)

    def extend_retention(self, key: str, mode: str, until: datetime) -> None:
        log.info("dry run: would lock %s/%s until %s", self.url, key, until)


class _DiscardingWriter(ManagedWriter):
    def __init__(self, backend: DryRunBackend, key: str) -> None:
        super().__init__(f"{backend.url}/{key}")
        self._backend = backend
        self._key = key

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        return None

    def _commit(self) -> None:
        log.info("dry run: would write %s", self.description)
        self._backend.would_write.append(self._key)

    def _abort(self) -> None:
        return None
