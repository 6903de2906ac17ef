"""Azure Blob Storage store: ``az://container[/prefix]``.

Credentials, first match wins:

1. ``AZURE_STORAGE_CONNECTION_STRING`` (what ``az storage account
   show-connection-string`` prints, or Azurite's well-known one);
2. ``AZURE_STORAGE_ACCOUNT`` with ``AZURE_STORAGE_KEY``, or ``AZURE_STORAGE_SAS_TOKEN``
   with ``AZURE_STORAGE_ACCOUNT`` or an endpoint (a leading ``?`` is dropped);
3. ``DefaultAzureCredential`` (an environment service principal, AKS workload
   identity, managed identity, ``az login``...) when the account is known
   (``AZURE_STORAGE_ACCOUNT`` or an endpoint).

A SAS token is a secret like a key: it is never part of a message (errors
name the variable it came from, :attr:`AzureBackend.credential_source`).

The endpoint is the ``endpoint`` argument, else ``AZURE_STORAGE_ENDPOINT``,
else the connection string's ``BlobEndpoint``, else
``https://<account>.blob.core.windows.net``. For Azurite it includes the
account: ``http://127.0.0.1:10000/devstoreaccount1``. The client is created
on first use, so :func:`open_store` itself never touches the network.

Writes stage 8 MiB blocks, three in flight at a time (``--part-size``,
``--concurrency``: :mod:`backupctl.store.backends.transfer`), and commit the block
list on commit; an object smaller than one block is a single ``Put Blob``.
Staged but uncommitted blocks are Azure's "unfinished upload": listed by
``pending_uploads`` (blobs that exist only as uncommitted blocks) and purged
by ``abort_upload`` (Azure would otherwise drop them after a week).

Immutability (``run --lock-mode unlocked|locked --lock-days N``, the container
or account must have version-level immutability enabled): every blob is
written with a version-level immutability policy, expiry = write time + N
days, on its ``Put Blob`` or ``Put Block List``; ``retention`` reads the policy
(or a legal hold) back for prune and delete, ``extend_retention`` moves it out.

Encryption scope (``$BACKUPCTL_AZURE_ENCRYPTION_SCOPE``, the CRD's
``azureEncryptionScope``): every ``Put Blob``, ``Put Block`` and ``Put Block
List`` names it; ``server_side`` reads it back for ``show``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import (
    BlobBlock,
    BlobProperties,
    BlobServiceClient,
    ContainerClient,
    ExponentialRetry,
    ImmutabilityPolicy,
)

from backupctl.store.backends.base import (
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

READ_RANGE = 2 * 1024 * 1024
#: The name Azure reports for the account's default encryption scope.
ACCOUNT_SCOPE = "$account-encryption-key"
_CREDENTIALS_HINT = (
    "set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY or "
    "AZURE_STORAGE_SAS_TOKEN, or AZURE_STORAGE_ACCOUNT alone for workload / managed identity "
    "or az login; see docs/stores.md"
)
#: What each credential source needs to be fixed, for "access denied" messages.
_FIX = {
    "AZURE_STORAGE_CONNECTION_STRING": "check AZURE_STORAGE_KEY or AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_KEY": "check AZURE_STORAGE_KEY or AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_SAS_TOKEN": "check AZURE_STORAGE_SAS_TOKEN: its expiry, permissions "
    "(racwdl; rl for read-only commands) and container",
    "DefaultAzureCredential": "the identity DefaultAzureCredential found needs the Storage "
    "Blob Data Contributor role (Reader for read-only commands) on the container",
}


def _parse_connection_string(conn: str) -> dict[str, str]:
    parts = {}
    for item in conn.split(";"):
        if "=" in item:
            name, _, value = item.partition("=")
            parts[name.strip().lower()] = value.strip()
    return parts


def _block_id(number: int) -> str:
    # Block ids must all have the same length within a blob.
    return base64.b64encode(f"backupctl-{number:08d}".encode()).decode()


class AzureBackend:
    """A :class:`~backupctl.store.backends.base.Backend` over one container (+ prefix)."""

    def __init__(
        self,
        container: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        encryption_scope: str | None = None,
        lock: ObjectLock | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        transfer: Transfer | None = None,
    ) -> None:
        self.container = container
        #: the immutability policy of every blob written (docs/encryption.md)
        self.lock, self._now = lock, now
        #: block size and blocks in flight (--part-size, --concurrency)
        self.transfer = transfer or Transfer()
        #: every write names it (``$BACKUPCTL_AZURE_ENCRYPTION_SCOPE``, docs/encryption.md)
        self.scope: dict[str, Any] = (
            {"encryption_scope": encryption_scope} if encryption_scope else {}
        )
        self.root = prefix.strip("/")
        self.url = f"az://{container}" + (f"/{self.root}" if self.root else "")
        self._endpoint_arg = endpoint
        self._lock = threading.Lock()
        self._clients: dict[str, ContainerClient] = {}
        #: which credential the client uses (a variable's name, never its value)
        self.credential_source = "AZURE_STORAGE_CONNECTION_STRING"
        self._identity: Any = None  # DefaultAzureCredential, made on first use
        self.endpoint = endpoint or os.environ.get("AZURE_STORAGE_ENDPOINT") or "(Azure Blob)"

    # -- clients and errors ---------------------------------------------------
    def _client(self, purpose: str = "ops") -> ContainerClient:
        """``ops`` retries a little (fail fast when the endpoint is down);
        ``upload`` retries more, because a failed block fails the whole backup."""
        with self._lock:
            if purpose not in self._clients:
                service = self._service(retries=2 if purpose == "ops" else 5)
                self.endpoint = service.url.rstrip("/")
                self._clients[purpose] = service.get_container_client(self.container)
            return self._clients[purpose]

    def _service(self, retries: int) -> BlobServiceClient:
        options: dict[str, Any] = {
            # Waits of 2, 4, 8... s (+-1): "ops" gives up after ~6 s.
            "retry_policy": ExponentialRetry(
                initial_backoff=0, increment_base=2, retry_total=retries, random_jitter_range=1
            ),
            "connection_timeout": 5,
            "read_timeout": 60,
            # Reads stream in 2 MiB ranges: the SDK briefly allocates ~9x a
            # range while reading one (it calls list() on a response stream
            # whose __len__ is its byte count), so bigger ranges cost memory.
            "max_single_get_size": READ_RANGE,
            "max_chunk_get_size": READ_RANGE,
            "max_single_put_size": self.transfer.part("az"),
            "max_block_size": self.transfer.part("az"),
        }
        endpoint = self._endpoint_arg or os.environ.get("AZURE_STORAGE_ENDPOINT")
        conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
        account = os.environ.get("AZURE_STORAGE_ACCOUNT")
        credential: Any = None
        sas = os.environ.get("AZURE_STORAGE_SAS_TOKEN", "").strip()
        try:
            if conn:
                if not endpoint:
                    return BlobServiceClient.from_connection_string(conn, **options)
                parsed = _parse_connection_string(conn)
                account = parsed.get("accountname", account)
                if "accountkey" in parsed and account:
                    credential = {"account_name": account, "account_key": parsed["accountkey"]}
                else:
                    credential = parsed.get("sharedaccesssignature")
            elif account and os.environ.get("AZURE_STORAGE_KEY"):
                key = os.environ["AZURE_STORAGE_KEY"]
                credential = {"account_name": account, "account_key": key}
                self.credential_source = "AZURE_STORAGE_KEY"
            elif (account or endpoint) and sas:
                # a SAS as the portal or `az ... generate-sas` prints it, with or without "?"
                credential = sas.lstrip("?")
                self.credential_source = "AZURE_STORAGE_SAS_TOKEN"
            elif account or endpoint:
                # one credential for both clients: one token, refreshed once
                self._identity = self._identity or _identity_credential()
                credential = self._identity
                self.credential_source = "DefaultAzureCredential"
            else:
                raise AccessDenied(f"no Azure credentials found: {_CREDENTIALS_HINT}")
            url = endpoint or f"https://{account}.blob.core.windows.net"
            return BlobServiceClient(url, credential=credential, **options)
        except ValueError as err:  # malformed connection string or endpoint
            raise StorageError(f"cannot use the Azure storage settings: {err}") from err

    def _error(self, err: Exception, key: str | None = None) -> StorageError:
        """Map an azure-core exception to a one-line StorageError."""
        if isinstance(err, StorageError):
            return err
        where = f"Azure container '{self.container}' at {self.endpoint}"
        if isinstance(err, ServiceRequestError | ServiceResponseError):
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            return StorageError(
                f"cannot reach Azure Blob endpoint {self.endpoint}: {first}", transient=True
            )
        code = str(getattr(err, "error_code", "") or "")
        status = int(getattr(err, "status_code", 0) or 0)
        if code == "ContainerNotFound" or (isinstance(err, ResourceNotFoundError) and key is None):
            return NotFound(f"{where} does not exist: create it or fix the store URL")
        if isinstance(err, ResourceNotFoundError) or code == "BlobNotFound":
            return NotFound(f"object {key!r} not found in {self.url}")
        if isinstance(err, ClientAuthenticationError) and not status:
            # DefaultAzureCredential found no identity, or its token request failed
            return AccessDenied(
                f"no Azure credentials found for {where}: DefaultAzureCredential got no "
                f"token ({type(err).__name__}); {_CREDENTIALS_HINT}"
            )
        if isinstance(err, ClientAuthenticationError) or status in (401, 403):
            return AccessDenied(
                f"access to {where} denied ({code or status}, credentials from "
                f"{self.credential_source}): {_FIX[self.credential_source]}"
            )
        message = str(getattr(err, "message", "") or err).splitlines()[0]
        if isinstance(err, HttpResponseError) and (status >= 500 or status in (408, 429)):
            return StorageError(f"{where} failed: {code or status}: {message}", transient=True)
        if isinstance(err, AzureError):
            return StorageError(f"{where}: {code or type(err).__name__}: {message}")
        return StorageError(f"{where}: unexpected {type(err).__name__}: {err}")

    def _name(self, key: str) -> str:
        return join_key(self.root, check_key(key))

    def _purge_uncommitted(self, name: str) -> None:
        """Drop the uncommitted blocks of a blob that has no committed data:
        committing an empty block list discards them, then the (empty) blob
        is deleted. A committed blob is left alone (its stray blocks are
        dropped by its next commit or by Azure's one-week cleanup)."""
        blob = self._client("upload").get_blob_client(name)
        try:
            blob.commit_block_list([], match_condition=MatchConditions.IfMissing)
        except ResourceExistsError:
            return
        with contextlib.suppress(ResourceNotFoundError):
            blob.delete_blob()

    # -- Backend --------------------------------------------------------------
    def check(self) -> None:
        try:
            pages = (
                self._client()
                .list_blobs(name_starts_with=join_key(self.root, "") or None, results_per_page=1)
                .by_page()
            )
            next(pages, None)
        except Exception as err:
            raise self._error(err) from err

    def writer(self, key: str) -> ObjectWriter:
        return _AzureWriter(self, key, self._name(key))

    def open(self, key: str) -> BinaryIO:
        try:
            stream = self._client().download_blob(self._name(key), max_concurrency=1)
        except Exception as err:
            raise self._error(err, key) from err

        def chunks() -> Iterator[bytes]:
            try:
                yield from stream.chunks()
            except Exception as err:
                raise self._error(err, key) from err

        return buffered_reader(chunks())

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        full = join_key(self.root, check_prefix(prefix))
        try:
            for blob in self._client().list_blobs(name_starts_with=full or None):
                if blob.name.endswith("/"):
                    continue  # a "folder" marker, not an object
                yield ObjectInfo(strip_root(self.root, blob.name), blob.size, blob.last_modified)
        except Exception as err:
            raise self._error(err) from err

    def stat(self, key: str) -> ObjectInfo:
        try:
            props = self._client().get_blob_client(self._name(key)).get_blob_properties()
        except Exception as err:
            raise self._error(err, key) from err
        return ObjectInfo(key, props.size, props.last_modified)

    def delete(self, key: str) -> None:
        try:
            self._client().delete_blob(self._name(key), delete_snapshots="include")
        except ResourceNotFoundError as err:
            if getattr(err, "error_code", None) == "ContainerNotFound":
                raise self._error(err) from err
        except Exception as err:
            raise self._error(err, key) from err

    def retention(self, key: str) -> tuple[str, datetime] | None:
        """``(mode, expiry)`` of the immutability policy on ``key`` (``legal hold``
        until :data:`HELD` when it has one), None when it has neither."""
        try:
            props = self._client().get_blob_client(self._name(key)).get_blob_properties()
        except Exception as err:
            raise self._error(err, key) from err
        if props.has_legal_hold:
            return ("legal hold", HELD)
        policy = props.immutability_policy
        if policy is None or policy.expiry_time is None:
            return None
        mode = str(getattr(policy.policy_mode, "value", policy.policy_mode) or "")
        return (mode, policy.expiry_time.astimezone(UTC))

    def server_side(self, key: str) -> ServerSideEncryption | None:
        """How Azure encrypts ``key`` as its properties say (:func:`server_side_of_blob`)."""
        try:
            props = self._client().get_blob_client(self._name(key)).get_blob_properties()
        except Exception as err:
            raise self._error(err, key) from err
        return server_side_of_blob(props)

    def extend_retention(self, key: str, mode: str, until: datetime) -> None:
        """The immutability policy of ``key`` (``Unlocked`` / ``Locked``) until
        ``until`` (Azure allows extending, never shortening, a locked one)."""
        if until >= HELD:
            return
        policy = ImmutabilityPolicy(expiry_time=until, policy_mode=mode.capitalize())
        try:
            self._client().get_blob_client(self._name(key)).set_immutability_policy(policy)
        except Exception as err:
            raise self._error(err, key) from err

    def write_args(self) -> dict[str, Any]:
        """What ``Put Blob`` / ``Put Block List`` carry: the encryption scope and
        the immutability policy from now."""
        if self.lock is None:
            return dict(self.scope)
        until = self.lock.retain_until(self._now())
        policy = ImmutabilityPolicy(expiry_time=until, policy_mode=self.lock.service_mode)
        return {**self.scope, "immutability_policy": policy}

    def pending_uploads(self, prefix: str = "") -> Iterator[PendingUpload]:
        # The listing with uncommitted blobs also has the committed ones;
        # the difference is the blobs that exist only as staged blocks.
        full = join_key(self.root, check_prefix(prefix))
        try:
            client = self._client()
            committed = {b.name for b in client.list_blobs(name_starts_with=full or None)}
            for blob in client.list_blobs(
                name_starts_with=full or None, include=["uncommittedblobs"]
            ):
                if blob.name not in committed:
                    started = blob.creation_time or blob.last_modified
                    yield PendingUpload(strip_root(self.root, blob.name), started, blob.name)
        except Exception as err:
            raise self._error(err) from err

    def abort_upload(self, upload: PendingUpload) -> None:
        try:
            self._purge_uncommitted(self._name(upload.key))
        except Exception as err:
            raise self._error(err, upload.key) from err


def server_side_of_blob(props: BlobProperties) -> ServerSideEncryption | None:
    """A blob's server-side encryption from its properties (pure): a customer-provided
    key, an encryption scope (the account's default, ``$account-encryption-key``,
    reads as the account's), the account's encryption, or None when the service
    says the blob is not encrypted."""
    if props.encryption_key_sha256:
        return ServerSideEncryption("azure:customer-key")
    scope = props.encryption_scope
    if scope and scope != ACCOUNT_SCOPE:
        return ServerSideEncryption("azure:scope", kms_key_id=scope)
    if props.server_encrypted:
        return ServerSideEncryption("azure:account")
    return None


def _identity_credential() -> Any:
    """``DefaultAzureCredential``, imported when used: azure-identity and msal
    take ~0.3 s to import, which the other credential sources do not pay."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


class _AzureWriter(PartUploadWriter):
    """Stage blocks concurrently, commit the block list on commit."""

    max_parts = 50_000  # Azure's block limit: ~390 GiB with 8 MiB blocks (the default)

    def __init__(self, backend: AzureBackend, key: str, name: str) -> None:
        super().__init__(f"{backend.url}/{key}", workers=backend.transfer.workers("az"))
        self._block = backend.transfer.part("az")
        self._b = backend
        self._key = key
        self._name = name
        self._args = backend.write_args()  # the lock counts from the start of the write

    def part_size(self, number: int) -> int:
        return self._block

    def _map_error(self, err: Exception) -> StorageError:
        return self._b._error(err, self._key)

    def _upload_part(self, number: int, data: bytes | bytearray) -> object:
        # The SDK sends a bytearray as it is (no copy); its stubs say bytes only.
        block: Any = data
        self._b._client("upload").get_blob_client(self._name).stage_block(
            _block_id(number), block, **self._b.scope
        )
        return None

    def _finish(self, tail: bytes, parts: int, results: dict[int, object]) -> None:
        blob = self._b._client("upload").get_blob_client(self._name)
        if parts == 0:
            blob.upload_blob(tail, overwrite=True, **self._args)
            return
        if tail:
            parts += 1
            self._upload_part(parts, tail)
        blob.commit_block_list([BlobBlock(_block_id(n)) for n in range(1, parts + 1)], **self._args)

    def _discard(self, parts: int) -> None:
        self._b._purge_uncommitted(self._name)
