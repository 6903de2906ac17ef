"""Google Cloud Storage store: ``gs://bucket[/prefix]``.

Credentials come from the standard Google chain (``GOOGLE_APPLICATION_CREDENTIALS``
pointing at a service-account key, workload identity, gcloud's application
default credentials); the project from ``GOOGLE_CLOUD_PROJECT`` when set.
A custom ``endpoint`` (Private Service Connect, a proxy, another address of
the service) uses that same chain: credentials are anonymous only for an
emulator (``STORAGE_EMULATOR_HOST`` set, the Google client's own convention)
or when asked for (``BACKUPCTL_GCS_ANONYMOUS=true``, a public bucket or an
emulator given by ``--endpoint``), with a dummy project. The client is created
on first use, so :func:`open_store` itself never touches the network.

Writes are resumable uploads in 8 MiB chunks (``--part-size``). GCS requires the chunks of one
upload in order, so one chunk is in flight while the caller fills the next;
an object smaller than one chunk is a single request on commit. Resumable
sessions cannot be listed, so ``pending_uploads`` is always empty (GCS drops
unfinished sessions after a week; they are never visible as objects).

Object retention (``run --lock-mode unlocked|locked --lock-days N``, the bucket
must have object retention enabled): every object is created with a
retention configuration (mode, retain-until = write time + N days) in its
upload's metadata; ``retention`` reads it (or a temporary / event-based hold)
back for prune and delete, ``extend_retention`` moves it out.

Cloud KMS key (``$BACKUPCTL_GCS_KMS_KEY``, the CRD's ``gcsKmsKeyName``): every
upload names it; ``server_side`` reads it back for ``show``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO

import google.auth.exceptions
import requests
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.cloud.storage.fileio import BlobWriter
from google.cloud.storage.retry import DEFAULT_RETRY

from backupctl.store.backends.base import (
    CHUNK_SIZE,
    AccessDenied,
    NotFound,
    ObjectInfo,
    ObjectWriter,
    PartUploadWriter,
    PendingUpload,
    StorageError,
    buffered_reader,
    check_key,
    check_prefix,
    join_key,
    strip_root,
)
from backupctl.store.backends.locks import HELD, ObjectLock
from backupctl.store.backends.s3_options import ServerSideEncryption
from backupctl.store.backends.transfer import Transfer

log = logging.getLogger(__name__)

#: Metadata calls give up after ~6 s so an unreachable endpoint fails fast
#: (RetryingBackend retries them again); upload chunks retry for a minute,
#: since a failed chunk fails the whole backup.
OPS_RETRY = DEFAULT_RETRY.with_timeout(6.0).with_delay(initial=0.5, maximum=4.0)
UPLOAD_RETRY = DEFAULT_RETRY.with_timeout(60.0).with_delay(initial=0.5, maximum=8.0)
TIMEOUT = (5, 60)  # connect, read (seconds)

_TRANSIENT = (
    gexc.RetryError,
    gexc.ServerError,
    gexc.TooManyRequests,
    requests.ConnectionError,
    requests.Timeout,
    google.auth.exceptions.TransportError,
    ConnectionError,
    TimeoutError,
)


def anonymous_credentials(*, emulator: bool, asked: bool) -> bool:
    """Whether the client goes without credentials (pure): for an emulator
    (``STORAGE_EMULATOR_HOST``) or when asked (``BACKUPCTL_GCS_ANONYMOUS``);
    never because of what an endpoint looks like."""
    return emulator or asked


class GCSBackend:
    """A :class:`~backupctl.store.backends.base.Backend` over one bucket (+ prefix)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        kms_key_name: str | None = None,
        lock: ObjectLock | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        anonymous: bool = False,
        transfer: Transfer | None = None,
    ) -> None:
        #: chunk size of resumable uploads (--part-size; chunks go one at a time)
        self.transfer = transfer or Transfer()
        self.bucket_name = bucket
        #: the retention of every object written (docs/encryption.md)
        self.lock, self._now = lock, now
        #: no credentials at all (``BACKUPCTL_GCS_ANONYMOUS``)
        self.anonymous = anonymous
        #: the Cloud KMS key every write names (``$BACKUPCTL_GCS_KMS_KEY``, docs/encryption.md)
        self.kms_key_name = kms_key_name
        self.root = prefix.strip("/")
        self.url = f"gs://{bucket}" + (f"/{self.root}" if self.root else "")
        self._endpoint_arg = endpoint
        self._lock = threading.Lock()
        self._bucket: storage.Bucket | None = None
        self.endpoint = endpoint or "https://storage.googleapis.com"

    # -- client and errors ----------------------------------------------------
    def _b(self) -> storage.Bucket:
        with self._lock:
            if self._bucket is None:
                self._bucket = self._make_client().bucket(self.bucket_name)
            return self._bucket

    def _make_client(self) -> storage.Client:
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        endpoint = self._endpoint_arg or emulator
        project = os.environ.get("GOOGLE_CLOUD_PROJECT")
        if endpoint and "://" not in endpoint:
            endpoint = "http://" + endpoint  # STORAGE_EMULATOR_HOST is often host:port
        if endpoint:
            self.endpoint = endpoint
        options = {"api_endpoint": endpoint} if endpoint else None
        try:
            if anonymous_credentials(emulator=bool(emulator), asked=self.anonymous):
                return storage.Client(
                    project=project or "backupctl-emulator",
                    credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                    client_options=options,
                )
            return storage.Client(project=project, client_options=options)
        except google.auth.exceptions.DefaultCredentialsError as err:
            emulator_hint = (
                f"; for an emulator set STORAGE_EMULATOR_HOST={endpoint} (or "
                "BACKUPCTL_GCS_ANONYMOUS=true)"
                if endpoint
                else ""
            )
            raise AccessDenied(
                "no Google Cloud credentials found: set GOOGLE_APPLICATION_CREDENTIALS to a "
                "service account key file (or use workload identity, or gcloud auth "
                f"application-default login){emulator_hint}"
            ) from err

    def _error(self, err: Exception, key: str | None = None) -> StorageError:
        """Map a google-cloud exception to a one-line StorageError."""
        if isinstance(err, StorageError):
            return err
        where = f"GCS bucket '{self.bucket_name}' at {self.endpoint}"
        if isinstance(err, gexc.NotFound):
            if key is None:
                return NotFound(f"{where} does not exist: create it or fix the store URL")
            return NotFound(f"object {key!r} not found in {self.url}")
        if isinstance(
            err,
            gexc.Forbidden
            | gexc.Unauthorized
            | google.auth.exceptions.RefreshError
            | google.auth.exceptions.DefaultCredentialsError,
        ):
            return AccessDenied(
                f"access to {where} denied ({_first_line(err)}): check "
                "GOOGLE_APPLICATION_CREDENTIALS and the bucket's IAM permissions"
            )
        if isinstance(err, _TRANSIENT):
            return StorageError(
                f"cannot reach GCS endpoint {self.endpoint}: {_first_line(err)}", transient=True
            )
        if isinstance(err, gexc.GoogleAPIError):
            return StorageError(f"{where}: {_first_line(err)}")
        return StorageError(f"{where}: unexpected {type(err).__name__}: {_first_line(err)}")

    def _name(self, key: str) -> str:
        return join_key(self.root, check_key(key))

    # -- Backend --------------------------------------------------------------
    def check(self) -> None:
        # Listing needs only storage.objects.list, which a backup needs anyway
        # (bucket metadata would need storage.buckets.get).
        try:
            bucket = self._b()
            blobs = bucket.client.list_blobs(
                bucket,
                prefix=join_key(self.root, "") or None,
                max_results=1,
                retry=OPS_RETRY,
                timeout=TIMEOUT,
            )
            next(iter(blobs), None)
        except Exception as err:
            raise self._error(err) from err

    def writer(self, key: str) -> ObjectWriter:
        return _GCSWriter(self, key, self._name(key))

    def open(self, key: str) -> BinaryIO:
        name = self._name(key)
        try:
            blob = self._b().blob(name)
            blob.reload(retry=OPS_RETRY, timeout=TIMEOUT)
        except Exception as err:
            raise self._error(err, key) from err
        size, generation = int(blob.size or 0), blob.generation
        # A fresh Blob: downloads then go to the configured endpoint, not to
        # the server-reported mediaLink (which may name another host).
        media = self._b().blob(name)

        def chunks() -> Iterator[bytes]:
            # Ranged reads pinned to the generation stat saw: a concurrent
            # overwrite fails the read instead of mixing two objects.
            for start in range(0, size, CHUNK_SIZE):
                try:
                    yield media.download_as_bytes(
                        start=start,
                        end=min(start + CHUNK_SIZE, size) - 1,
                        if_generation_match=generation,
                        raw_download=True,
                        checksum=None,
                        retry=UPLOAD_RETRY,
                        timeout=TIMEOUT,
                    )
                except Exception as err:
                    raise self._error(err, key) from err

        return buffered_reader(chunks())

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        full = join_key(self.root, check_prefix(prefix))
        try:
            bucket = self._b()
            for blob in bucket.client.list_blobs(
                bucket, prefix=full or None, retry=OPS_RETRY, timeout=TIMEOUT
            ):
                if blob.name.endswith("/"):
                    continue  # a "folder" marker, not an object
                yield ObjectInfo(strip_root(self.root, blob.name), int(blob.size), blob.updated)
        except Exception as err:
            raise self._error(err) from err

    def stat(self, key: str) -> ObjectInfo:
        try:
            blob = self._b().blob(self._name(key))
            blob.reload(retry=OPS_RETRY, timeout=TIMEOUT)
        except Exception as err:
            raise self._error(err, key) from err
        return ObjectInfo(key, int(blob.size or 0), blob.updated)

    def delete(self, key: str) -> None:
        try:
            self._b().blob(self._name(key)).delete(retry=OPS_RETRY, timeout=TIMEOUT)
        except gexc.NotFound:
            return  # GCS does not say whether the object or the bucket is missing
        except Exception as err:
            raise self._error(err, key) from err

    def retention(self, key: str) -> tuple[str, datetime] | None:
        """``(mode, retain-until)`` of the object retention on ``key`` (a temporary
        or event-based hold: until :data:`HELD`), None when it has none."""
        try:
            blob = self._b().blob(self._name(key))
            blob.reload(retry=OPS_RETRY, timeout=TIMEOUT)
        except Exception as err:
            raise self._error(err, key) from err
        if blob.temporary_hold:
            return ("temporary hold", HELD)
        if blob.event_based_hold:
            return ("event-based hold", HELD)
        until = blob.retention.retain_until_time
        return (str(blob.retention.mode or ""), until.astimezone(UTC)) if until else None

    def server_side(self, key: str) -> ServerSideEncryption | None:
        """How GCS encrypts ``key`` as its metadata says (:func:`server_side_of_blob`)."""
        try:
            blob = self._b().blob(self._name(key))
            blob.reload(retry=OPS_RETRY, timeout=TIMEOUT)
        except Exception as err:
            raise self._error(err, key) from err
        return server_side_of_blob(blob)

    def extend_retention(self, key: str, mode: str, until: datetime) -> None:
        """The retention of ``key`` (``Unlocked`` / ``Locked``) until ``until``
        (GCS allows extending, never shortening, a locked one)."""
        if until >= HELD:
            return
        try:
            blob = self._b().blob(self._name(key))
            blob.retention.mode = mode.capitalize()
            blob.retention.retain_until_time = until
            blob.patch(retry=OPS_RETRY, timeout=TIMEOUT)
        except Exception as err:
            raise self._error(err, key) from err

    def new_blob(self, name: str, until: datetime | None, **kwargs: Any) -> storage.Blob:
        """A blob to upload to ``name``: the KMS key and, with a lock, its retention
        until ``until`` (sent in the upload's metadata)."""
        blob = self._b().blob(name, kms_key_name=self.kms_key_name, **kwargs)
        if self.lock is not None and until is not None:
            blob.retention.mode = self.lock.service_mode
            blob.retention.retain_until_time = until
        return blob

    def pending_uploads(self, prefix: str = "") -> Iterator[PendingUpload]:
        check_prefix(prefix)
        return iter(())  # GCS has no API to list resumable upload sessions

    def abort_upload(self, upload: PendingUpload) -> None:
        return None  # nothing is ever listed, so nothing to abort


def server_side_of_blob(blob: storage.Blob) -> ServerSideEncryption | None:
    """An object's server-side encryption from its metadata (pure): its Cloud KMS
    key (``kmsKeyName``, with the key version that encrypted it) or a customer-supplied
    key (``customerEncryption``); None otherwise (GCS then encrypts with Google-managed
    keys, which its metadata does not report)."""
    if blob.kms_key_name:
        return ServerSideEncryption("gcs:kms", kms_key_id=blob.kms_key_name)
    # the SDK has no property for the resource's customerEncryption
    if blob._properties.get("customerEncryption"):
        return ServerSideEncryption("gcs:customer-key")
    return None


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class _GCSWriter(PartUploadWriter):
    """A resumable upload fed one chunk (8 MiB, or --part-size) at a time, in order."""

    max_parts = 1 << 40  # no part limit on resumable uploads

    def __init__(self, backend: GCSBackend, key: str, name: str) -> None:
        super().__init__(f"{backend.url}/{key}", workers=1)
        self._chunk = backend.transfer.part("gs")
        self._gb = backend
        self._key = key
        self._name = name
        self._upload: BlobWriter | None = None
        # the lock counts from the start of the write
        self._until = backend.lock.retain_until(backend._now()) if backend.lock else None

    def part_size(self, number: int) -> int:
        return self._chunk

    def _map_error(self, err: Exception) -> StorageError:
        return self._gb._error(err)  # a 404 while writing means the bucket is missing

    def _begin(self) -> None:
        blob = self._gb.new_blob(self._name, self._until, chunk_size=self._chunk)
        upload: Any = blob.open(
            "wb", chunk_size=self._chunk, ignore_flush=True, retry=UPLOAD_RETRY, timeout=TIMEOUT
        )
        self._upload = upload

    def _upload_part(self, number: int, data: bytes | bytearray) -> object:
        assert self._upload is not None
        self._upload.write(data)  # exactly one chunk: sent now, not buffered
        return None

    def _finish(self, tail: bytes, parts: int, results: dict[int, object]) -> None:
        if self._upload is None:
            self._gb.new_blob(self._name, self._until).upload_from_string(
                tail, content_type="application/octet-stream", retry=UPLOAD_RETRY, timeout=TIMEOUT
            )
            return
        self._upload.write(tail)
        self._upload.close()  # sends the final chunk: the object appears now

    def _discard(self, parts: int) -> None:
        if self._upload is None:
            return
        try:
            self._upload.terminate()  # cancels the resumable session
        except Exception as err:
            log.debug("cancelling resumable upload of %s: %s", self.description, err)
        finally:
            # Never let BlobWriter.close() run later (IOBase.__del__ calls it)
            # and finalize half an object: close its buffer if terminate did not.
            buffer = getattr(self._upload, "_buffer", None)
            if buffer is not None and not buffer.closed:
                buffer.close()
