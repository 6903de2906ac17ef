"""Amazon S3 (and S3-compatible: MinIO, Ceph, moto) store: ``s3://bucket[/prefix]``.

Credentials come from the standard AWS chain (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, web
identity, instance roles); the region from ``AWS_REGION`` /
``AWS_DEFAULT_REGION`` (default ``us-east-1``); the endpoint from the
``endpoint`` argument, else ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``,
with path-style addressing whenever a custom endpoint is set. The client is
created on first use, so :func:`open_store` itself never touches the network.

Writes are multipart uploads of 5 MiB parts, two in flight at a time (see
:class:`~backupctl.store.backends.base.PartUploadWriter`; ``--part-size`` and
``--concurrency`` change both, :mod:`backupctl.store.backends.transfer`); an
object smaller than one part is a single ``PutObject`` on commit.

Server-side encryption (SSE-S3, SSE-KMS, SSE-C) and Object Lock are decided in
:mod:`backupctl.store.backends.s3_options` and added to every write (and, for
SSE-C, every read); a multipart object also gets its retention set again once
complete (``PutObjectRetention``), so the lock holds on stores that ignore it
on ``CreateMultipartUpload``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, BinaryIO

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
    ResponseStreamingError,
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
from backupctl.store.backends.s3_options import ObjectLock, ServerSideEncryption
from backupctl.store.backends.transfer import Transfer

if TYPE_CHECKING:
    import boto3
    from botocore.config import Config
    from mypy_boto3_s3 import S3Client

_ACCESS_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AllAccessDisabled",
    "403",
}
_TRANSIENT_CODES = {
    "SlowDown",
    "RequestTimeout",
    "Throttling",
    "ThrottlingException",
    "InternalError",
    "ServiceUnavailable",
    "503",
    "500",
}
#: Errors while reading a response body: the read resumes with a Range request.
_STREAM_ERRORS = (ResponseStreamingError, IncompleteReadError, ReadTimeoutError, ConnectionError)
_READ_RESUMES = 3


def _config(attempts: int, path_style: bool) -> Config:
    from botocore.config import Config  # with boto3: see _session

    return Config(
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": attempts, "mode": "standard"},
        s3={"addressing_style": "path"} if path_style else None,
        max_pool_connections=10,
        # S3-compatible stores often reject the CRC headers newer botocore adds
        # by default; backups carry their own sha256 in the manifest.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        user_agent_extra="backupctl",
    )


def profile_not_found(profile: str, env: Mapping[str, str]) -> str:
    """The one line for an ``AWS_PROFILE`` that names no profile (pure): which
    files were read and how to fix it (not the endpoint: no request was made)."""
    files = [
        env.get("AWS_CONFIG_FILE") or "~/.aws/config",
        env.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials",
    ]
    var = "AWS_PROFILE" if env.get("AWS_PROFILE") else "AWS_DEFAULT_PROFILE"
    return (
        f"AWS profile {profile!r} (from {var}) is not in {' or '.join(files)}: "
        f"fix {var} (aws configure list-profiles shows the profiles), or unset it "
        "to use AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the pod's role"
    )


_loader_lock = threading.Lock()
_loader: Any = None


def _session() -> boto3.session.Session:
    """A fresh session (it reads the environment and profiles now) that
    shares one botocore data loader: the S3 service model is parsed once per
    process instead of once per client (~150 ms each).

    boto3 is imported here, at the first client, not with this module
    (0.25-0.45 s): ``run --method replication`` creates its first client on
    the thread that checks the store while the RDB already streams."""
    import boto3
    import botocore.session

    global _loader
    # An empty AWS_PROFILE counts as unset (as every BACKUPCTL_ variable does),
    # not as a profile named "".
    unset = os.environ.get("AWS_PROFILE") == "" and not os.environ.get("AWS_DEFAULT_PROFILE")
    core = botocore.session.Session(
        session_vars={"profile": (None, None, None, None)} if unset else None
    )
    with _loader_lock:
        if _loader is None:
            _loader = core.get_component("data_loader")
        else:
            core.register_component("data_loader", _loader)
    return boto3.session.Session(botocore_session=core)


class S3Backend:
    """A :class:`~backupctl.store.backends.base.Backend` over one bucket (+ prefix)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        sse: ServerSideEncryption | None = None,
        lock: ObjectLock | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        transfer: Transfer | None = None,
    ) -> None:
        self.bucket = bucket
        #: part size and parts in flight of multipart uploads (--part-size, --concurrency)
        self.transfer = transfer or Transfer()
        self.sse, self.lock, self._now = sse, lock, now
        self.root = prefix.strip("/")
        self.url = f"s3://{bucket}" + (f"/{self.root}" if self.root else "")
        self._endpoint_arg = endpoint
        self._lock = threading.Lock()
        self._clients: dict[str, S3Client] = {}
        self._endpoint: str | None = None
        self._region = "us-east-1"

    # -- clients and errors ---------------------------------------------------
    def _client(self, purpose: str = "ops") -> S3Client:
        """``ops`` retries a little (fail fast when the endpoint is down);
        ``upload`` retries more, because a failed part fails the whole backup."""
        with self._lock:
            if purpose not in self._clients:
                # the endpoint first: errors while reading the profile name it
                self._endpoint = (
                    self._endpoint_arg
                    or os.environ.get("AWS_ENDPOINT_URL_S3")
                    or os.environ.get("AWS_ENDPOINT_URL")
                    or None
                )
                session = _session()
                self._region = os.environ.get("AWS_REGION") or session.region_name or "us-east-1"
                attempts = 3 if purpose == "ops" else 6
                self._clients[purpose] = session.client(
                    "s3",
                    region_name=self._region,
                    endpoint_url=self._endpoint,
                    config=_config(attempts, path_style=self._endpoint is not None),
                )
            return self._clients[purpose]

    @property
    def endpoint(self) -> str:
        return self._endpoint or f"https://s3.{self._region}.amazonaws.com"

    def _error(self, err: Exception, key: str | None = None) -> StorageError:
        """Map a botocore exception to a one-line StorageError."""
        if isinstance(err, StorageError):
            return err
        where = f"S3 bucket '{self.bucket}' at {self.endpoint}"
        if isinstance(err, ProfileNotFound):
            return AccessDenied(profile_not_found(str(err.kwargs.get("profile", "")), os.environ))
        if isinstance(err, NoCredentialsError | PartialCredentialsError):
            return AccessDenied(
                "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE, or give the pod an IAM role)"
            )
        if isinstance(err, ClientError):
            info: dict[str, Any] = dict(err.response.get("Error", {}))
            code = str(info.get("Code", ""))
            status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            detail = info.get("Message") or code
            if code == "NoSuchBucket" or (key is None and status == 404):
                return NotFound(
                    f"S3 bucket '{self.bucket}' does not exist at {self.endpoint}: "
                    "create it or fix the store URL"
                )
            if code in ("NoSuchKey", "404", "NotFound"):
                return NotFound(f"object {key!r} not found in {self.url}")
            if code in _ACCESS_CODES or status == 403:
                return AccessDenied(
                    f"access to {where} denied ({code}: {detail}): check AWS_ACCESS_KEY_ID / "
                    "AWS_SECRET_ACCESS_KEY and the bucket policy"
                )
            if code in ("PermanentRedirect", "AuthorizationHeaderMalformed") or status == 301:
                return StorageError(
                    f"{where} is in another region than {self._region}: set AWS_REGION"
                )
            if code in _TRANSIENT_CODES or status >= 500 or status == 429:
                return StorageError(f"{where} failed: {code}: {detail}", transient=True)
            return StorageError(f"{where}: {code}: {detail}")
        if isinstance(err, IncompleteReadError | ResponseStreamingError):
            return StorageError(
                f"download from S3 endpoint {self.endpoint} broke off: {err}", transient=True
            )
        if isinstance(err, ConnectionError | HTTPClientError):
            return StorageError(f"cannot reach S3 endpoint {self.endpoint}: {err}", transient=True)
        if isinstance(err, BotoCoreError):
            return StorageError(f"{where}: {err}")
        return StorageError(f"{where}: unexpected {type(err).__name__}: {err}")

    def _name(self, key: str) -> str:
        return join_key(self.root, check_key(key))

    # -- Backend --------------------------------------------------------------
    def check(self) -> None:
        try:
            self._client().list_objects_v2(
                Bucket=self.bucket, MaxKeys=1, Prefix=join_key(self.root, "")
            )
        except Exception as err:
            raise self._error(err) from err

    def writer(self, key: str) -> ObjectWriter:
        return _S3Writer(self, key, self._name(key))

    def open(self, key: str) -> BinaryIO:
        name = self._name(key)
        try:
            resp = self._client().get_object(Bucket=self.bucket, Key=name, **self._read_args())
        except Exception as err:
            raise self._error(err, key) from err
        bodies = [resp["Body"]]  # the current body, closed with the reader

        def chunks() -> Iterator[bytes]:
            size, etag, offset, resumes = resp["ContentLength"], resp["ETag"], 0, 0
            while True:
                try:
                    for chunk in bodies[0].iter_chunks(1024 * 1024):
                        offset += len(chunk)
                        yield chunk
                    if offset >= size:
                        return
                    raise IncompleteReadError(actual_bytes=offset, expected_bytes=size)
                except _STREAM_ERRORS as err:
                    # Resume where the stream broke, pinned to the same version.
                    resumes += 1
                    if resumes > _READ_RESUMES:
                        raise self._error(err, key) from err
                    bodies[0].close()
                    try:
                        bodies[0] = self._client().get_object(
                            Bucket=self.bucket,
                            Key=name,
                            Range=f"bytes={offset}-",
                            IfMatch=etag,
                            **self._read_args(),
                        )["Body"]
                    except Exception as err2:
                        raise self._error(err2, key) from err2

        return buffered_reader(chunks(), on_close=lambda: bodies[0].close())

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        full = join_key(self.root, check_prefix(prefix))
        try:
            pages = self._client().get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    name = obj["Key"]
                    if name.endswith("/"):
                        continue  # a "folder" marker made by a console, not an object
                    modified = obj["LastModified"].astimezone(UTC)
                    yield ObjectInfo(strip_root(self.root, name), obj["Size"], modified)
        except Exception as err:
            raise self._error(err) from err

    def stat(self, key: str) -> ObjectInfo:
        try:
            head = self._head(key)
        except Exception as err:
            raise self._error(err, key) from err
        return ObjectInfo(key, head["ContentLength"], head["LastModified"].astimezone(UTC))

    def _head(self, key: str) -> Any:
        return self._client().head_object(
            Bucket=self.bucket, Key=self._name(key), **self._read_args()
        )

    def _read_args(self) -> dict[str, Any]:
        return self.sse.read_args() if self.sse else {}

    def retention(self, key: str) -> tuple[str, datetime] | None:
        """``(mode, retain-until)`` of the Object Lock on ``key``, None when unlocked."""
        try:
            head = self._head(key)
        except Exception as err:
            raise self._error(err, key) from err
        until = head.get("ObjectLockRetainUntilDate")
        return (str(head.get("ObjectLockMode", "")), until.astimezone(UTC)) if until else None

    def server_side(self, key: str) -> ServerSideEncryption | None:
        """How S3 encrypts the stored ``key`` (one HeadObject), None when it does not:
        SSE-S3, SSE-KMS with the key id S3 reports, or SSE-C (the key is never read)."""
        try:
            head = self._head(key)
        except Exception as err:
            raise self._error(err, key) from err
        if head.get("SSECustomerAlgorithm") or (self.sse and self.sse.algorithm == "SSE-C"):
            return ServerSideEncryption("SSE-C")
        algorithm = head.get("ServerSideEncryption")
        if not algorithm:
            return None
        return ServerSideEncryption(str(algorithm), kms_key_id=head.get("SSEKMSKeyId") or None)

    def extend_retention(self, key: str, mode: str, until: datetime) -> None:
        """Object Lock ``mode`` on ``key`` until ``until`` (S3 allows extending, never
        shortening, a compliance lock)."""
        try:
            retention: Any = {"Mode": mode, "RetainUntilDate": until}
            self._client().put_object_retention(
                Bucket=self.bucket, Key=self._name(key), Retention=retention
            )
        except Exception as err:
            raise self._error(err, key) from err

    def write_args(self) -> dict[str, Any]:
        """What PutObject / CreateMultipartUpload carry: SSE and the lock from now."""
        args = self.sse.write_args() if self.sse else {}
        return {**args, **(self.lock.write_args(self._now()) if self.lock else {})}

    def delete(self, key: str) -> None:
        try:
            self._client().delete_object(Bucket=self.bucket, Key=self._name(key))
        except Exception as err:  # a missing key is a 204, not an error, on S3
            raise self._error(err, key) from err

    def pending_uploads(self, prefix: str = "") -> Iterator[PendingUpload]:
        full = join_key(self.root, check_prefix(prefix))
        try:
            pages = self._client().get_paginator("list_multipart_uploads")
            for page in pages.paginate(Bucket=self.bucket, Prefix=full):
                for up in page.get("Uploads", []):
                    started: datetime = up["Initiated"]
                    yield PendingUpload(
                        strip_root(self.root, up["Key"]), started.astimezone(UTC), up["UploadId"]
                    )
        except Exception as err:
            raise self._error(err) from err

    def abort_upload(self, upload: PendingUpload) -> None:
        self._abort(self._name(upload.key), upload.upload_id)

    def _abort(self, name: str, upload_id: str) -> None:
        try:
            self._client().abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") != "NoSuchUpload":  # already gone
                raise self._error(err) from err
        except Exception as err:
            raise self._error(err) from err


class _S3Writer(PartUploadWriter):
    """Multipart upload, started lazily when the first full part is ready."""

    tail_as_part = True  # S3's last part may be shorter than the others

    def __init__(self, backend: S3Backend, key: str, name: str) -> None:
        super().__init__(f"{backend.url}/{key}", workers=backend.transfer.workers("s3"))
        self._base = backend.transfer.part("s3")
        self._b = backend
        self._key = key
        self._name = name
        self._upload_id = ""
        self._args: dict[str, Any] = {}

    def part_size(self, number: int) -> int:
        # S3 allows 10,000 parts of at least 5 MiB: 5 MiB parts (the default
        # --part-size) up to 20 GiB, then bigger ones, so objects up to ~210 GiB
        # fit while common sizes keep memory low (measured: peak RSS of a run
        # 125 -> ~110 MiB).
        mib = 1024 * 1024
        if number <= 4000:
            return self._base
        return max(self._base, 16 * mib if number <= 8000 else 64 * mib)

    def _map_error(self, err: Exception) -> StorageError:
        return self._b._error(err, self._key)

    def _begin(self) -> None:
        self._args = self._b.write_args()
        resp = self._b._client("upload").create_multipart_upload(
            Bucket=self._b.bucket, Key=self._name, **self._args
        )
        self._upload_id = resp["UploadId"]

    def _upload_part(self, number: int, data: bytes | bytearray) -> object:
        resp = self._b._client("upload").upload_part(
            Bucket=self._b.bucket,
            Key=self._name,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=data,  # type: ignore[arg-type]  # botocore takes bytearray; stubs omit it
            **(self._b.sse.part_args() if self._b.sse else {}),
            **self._md5(data),
        )
        return resp["ETag"]

    def _finish(self, tail: bytes, parts: int, results: dict[int, object]) -> None:
        client = self._b._client("upload")
        if parts == 0:
            client.put_object(
                Bucket=self._b.bucket,
                Key=self._name,
                Body=tail,
                **self._b.write_args(),
                **self._md5(tail),
            )
            return
        if tail:
            results[parts + 1] = self._upload_part(parts + 1, tail)
        client.complete_multipart_upload(
            Bucket=self._b.bucket,
            Key=self._name,
            UploadId=self._upload_id,
            MultipartUpload={
                "Parts": [{"PartNumber": n, "ETag": str(results[n])} for n in sorted(results)]
            },
            **self._b._read_args(),
        )
        if "ObjectLockMode" in self._args:  # again: some stores ignore it on the start
            client.put_object_retention(
                Bucket=self._b.bucket,
                Key=self._name,
                Retention={
                    "Mode": self._args["ObjectLockMode"],
                    "RetainUntilDate": self._args["ObjectLockRetainUntilDate"],
                },
            )

    def _md5(self, data: bytes | bytearray) -> dict[str, Any]:
        """Content-MD5, which S3 requires of every upload to a locked object."""
        if self._b.lock is None:
            return {}
        digest = hashlib.md5(data, usedforsecurity=False).digest()
        return {"ContentMD5": base64.b64encode(digest).decode()}

    def _discard(self, parts: int) -> None:
        self._b._abort(self._name, self._upload_id)
