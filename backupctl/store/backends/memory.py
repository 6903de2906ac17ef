"""In-memory store for unit tests: ``memory://name[/prefix]``.

Stores live in a module-level registry keyed by name, so opening the same URL
twice (say, once in the code under test and once in the test) sees the same
objects. It follows the contract like the real backends (nothing visible
before commit, open writers listed as pending uploads) so tests written
against it hold for S3, Azure and GCS too. Data is held whole in memory:
never use it for real backups.
"""

from __future__ import annotations

import io
import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import BinaryIO

from backupctl.store.backends.base import (
    ManagedWriter,
    NotFound,
    ObjectInfo,
    ObjectWriter,
    PendingUpload,
    StorageError,
    check_key,
    check_prefix,
    join_key,
    strip_root,
)


@dataclass
class _Upload:
    key: str
    started: datetime
    aborted: bool = False


@dataclass
class _Store:
    objects: dict[str, tuple[bytes, datetime]] = field(default_factory=dict)
    uploads: dict[str, _Upload] = field(default_factory=dict)  # by upload id


_registry: dict[str, _Store] = {}
_lock = threading.Lock()
_ids = itertools.count(1)


def create(name: str) -> None:
    """Create the store ``name`` if it does not exist yet."""
    with _lock:
        _registry.setdefault(name, _Store())


def drop(name: str) -> None:
    """Forget the store ``name`` and everything in it (a "deleted bucket")."""
    with _lock:
        _registry.pop(name, None)


def reset() -> None:
    """Forget every memory store."""
    with _lock:
        _registry.clear()


class MemoryBackend:
    """A :class:`~backupctl.store.backends.base.Backend` over a registry entry."""

    def __init__(self, name: str, prefix: str = "", *, create_store: bool = True) -> None:
        self.name = name
        self.root = prefix.strip("/")
        self.url = f"memory://{name}" + (f"/{self.root}" if self.root else "")
        if create_store:
            create(name)

    def _store(self) -> _Store:
        store = _registry.get(self.name)
        if store is None:
            raise NotFound(f"memory store {self.name!r} does not exist")
        return store

    def check(self) -> None:
        self._store()

    def writer(self, key: str) -> ObjectWriter:
        check_key(key)
        store = self._store()
        upload_id = f"mem-{next(_ids)}"
        with _lock:
            store.uploads[upload_id] = _Upload(join_key(self.root, key), datetime.now(UTC))
        return _MemoryWriter(self, key, upload_id)

    def open(self, key: str) -> BinaryIO:
        return io.BytesIO(self._get(key)[0])

    def _get(self, key: str) -> tuple[bytes, datetime]:
        check_key(key)
        with _lock:
            found = self._store().objects.get(join_key(self.root, key))
        if found is None:
            raise NotFound(f"object {key!r} not found in {self.url}")
        return found

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        full = join_key(self.root, prefix) if self.root else prefix
        with _lock:
            items = [(k, v) for k, v in self._store().objects.items() if k.startswith(full)]
        for name, (data, modified) in items:
            yield ObjectInfo(strip_root(self.root, name), len(data), modified)

    def stat(self, key: str) -> ObjectInfo:
        data, modified = self._get(key)
        return ObjectInfo(key, len(data), modified)

    def delete(self, key: str) -> None:
        check_key(key)
        with _lock:
            self._store().objects.pop(join_key(self.root, key), None)

    def pending_uploads(self, prefix: str = "") -> Iterator[PendingUpload]:
        check_prefix(prefix)
        full = join_key(self.root, prefix) if self.root else prefix
        with _lock:
            uploads = list(self._store().uploads.items())
        for upload_id, up in uploads:
            if up.key.startswith(full) and not up.aborted:
                yield PendingUpload(strip_root(self.root, up.key), up.started, upload_id)

    def abort_upload(self, upload: PendingUpload) -> None:
        with _lock:
            up = self._store().uploads.pop(upload.upload_id, None)
            if up is not None:
                up.aborted = True


class _MemoryWriter(ManagedWriter):
    def __init__(self, backend: MemoryBackend, key: str, upload_id: str) -> None:
        super().__init__(f"{backend.url}/{key}")
        self._backend = backend
        self._key = key
        self._upload_id = upload_id
        self._buf = io.BytesIO()

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        self._buf.write(data)

    def _commit(self) -> None:
        store = self._backend._store()
        with _lock:
            up = store.uploads.pop(self._upload_id, None)
            if up is None or up.aborted:
                raise StorageError(f"upload of {self.description} was aborted by someone else")
            store.objects[up.key] = (self._buf.getvalue(), datetime.now(UTC))

    def _abort(self) -> None:
        self._buf = io.BytesIO()
        store = _registry.get(self._backend.name)
        if store is not None:
            with _lock:
                store.uploads.pop(self._upload_id, None)
