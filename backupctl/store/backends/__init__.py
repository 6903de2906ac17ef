"""Object stores behind one small contract (see :mod:`backupctl.store.backends.base`).

:func:`open_store` turns a store URL into a backend:

=============================  ==============================================
``file:///abs/path``, a path   :class:`~backupctl.store.backends.local.LocalBackend`
``s3://bucket[/prefix]``       :class:`~backupctl.store.backends.s3.S3Backend`
``az://container[/prefix]``    :class:`~backupctl.store.backends.azure.AzureBackend`
``gs://bucket[/prefix]``       :class:`~backupctl.store.backends.gcs.GCSBackend`
``memory://name[/prefix]``     :class:`~backupctl.store.backends.memory.MemoryBackend`
=============================  ==============================================

It only parses and validates: no network, no credentials (those are read
when the backend is first used; call ``check()`` to fail early). Cloud SDKs
are imported only for the scheme in use, so ``file://`` needs none of them.
"""

from __future__ import annotations

import ipaddress
import os
import re
from urllib.parse import unquote, urlsplit

from backupctl.store.backends.base import (
    CHUNK_SIZE,
    AccessDenied,
    Backend,
    NotFound,
    ObjectInfo,
    ObjectWriter,
    PendingUpload,
    StorageError,
    StoreURLError,
    put_bytes,
    put_stream,
    read_bytes,
)
from backupctl.store.backends.locks import ObjectLock, lock_for_store
from backupctl.store.backends.retry import RetryingBackend
from backupctl.store.backends.s3_options import sse_from_env
from backupctl.store.backends.wrappers import DryRunBackend

#: Server-side encryption of the other clouds (docs/encryption.md): the Azure
#: encryption scope and the GCS Cloud KMS key every write names.
AZURE_SCOPE_ENV = "BACKUPCTL_AZURE_ENCRYPTION_SCOPE"
GCS_KMS_KEY_ENV = "BACKUPCTL_GCS_KMS_KEY"

__all__ = [
    "CHUNK_SIZE",
    "AccessDenied",
    "Backend",
    "DryRunBackend",
    "NotFound",
    "ObjectInfo",
    "ObjectWriter",
    "PendingUpload",
    "RetryingBackend",
    "StorageError",
    "StoreURLError",
    "open_store",
    "put_bytes",
    "put_stream",
    "read_bytes",
]

EXAMPLES = (
    "file:///var/backups/redis, s3://my-bucket/redis, az://my-container/redis, gs://my-bucket/redis"
)
_SUGGEST = {
    "azure": "az",
    "wasb": "az",
    "wasbs": "az",
    "abfs": "az",
    "abfss": "az",
    "https": "az",
    "gcs": "gs",
    "google": "gs",
    "s3a": "s3",
    "s3n": "s3",
    "aws": "s3",
    "minio": "s3",
}
_CLOUD = {"s3": "S3 bucket", "az": "Azure container", "gs": "GCS bucket"}

_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_AZ_CONTAINER = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$")
_GS_COMPONENT = re.compile(r"^[a-z0-9]([a-z0-9_-]*[a-z0-9])?$")
_ENDPOINT = re.compile(r"^https?://[^/\s?#]+(/[^\s?#]*)?$")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _bucket_problem(scheme: str, name: str) -> str | None:
    """Why ``name`` is not a valid bucket/container name there, or None."""
    if scheme == "s3":
        if not _S3_BUCKET.match(name) or ".." in name or _is_ip(name):
            return (
                "S3 bucket names are 3-63 lowercase letters, digits, '.' and '-', "
                "starting and ending with a letter or digit"
            )
        if name.startswith(("xn--", "sthree-")) or name.endswith(("-s3alias", "--ol-s3")):
            return "S3 reserves that bucket name prefix/suffix"
    elif scheme == "az":
        if name not in ("$root", "$web") and not _AZ_CONTAINER.match(name):
            return (
                "Azure container names are 3-63 lowercase letters, digits and single "
                "'-' between them, starting with a letter or digit"
            )
    elif scheme == "gs":
        parts = name.split(".")
        if (
            not 3 <= len(name) <= (222 if len(parts) > 1 else 63)
            or not all(_GS_COMPONENT.match(p) and len(p) <= 63 for p in parts)
            or _is_ip(name)
        ):
            return (
                "GCS bucket names are 3-63 lowercase letters, digits, '-', '_' and '.', "
                "starting and ending with a letter or digit"
            )
        if name.startswith("goog") or "google" in name or "g00gle" in name:
            return "GCS bucket names cannot start with 'goog' or contain 'google'"
    return None


def _check_endpoint(endpoint: str) -> str:
    if not _ENDPOINT.match(endpoint):
        raise StoreURLError(
            f"invalid endpoint {endpoint!r}: use a URL like https://minio.example.com:9000 "
            "or http://127.0.0.1:10000/devstoreaccount1"
        )
    return endpoint.rstrip("/")


def open_store(url: str, *, endpoint: str | None = None, lock: ObjectLock | None = None) -> Backend:
    """The backend for ``url`` (see the module doc for the forms).

    ``endpoint`` overrides the service endpoint of ``s3://``, ``az://`` and
    ``gs://`` stores (MinIO, Azurite, an emulator...). Raises
    :class:`StoreURLError` with one line saying what is wrong and what a
    correct URL looks like. ``lock``: S3 Object Lock, Azure immutability or GCS
    object retention on every object written (:mod:`.locks`); S3 server-side
    encryption comes from the environment (:mod:`.s3_options`).
    """
    url = url.strip()
    if not url:
        raise StoreURLError(f"empty store URL: use one like {EXAMPLES}")
    lock = lock_for_store(lock, url.split("://", 1)[0] if "://" in url else "file")
    if "://" not in url:
        scheme = url.split(":", 1)[0].lower()
        if ":" in url and scheme in {"file", "memory", *_CLOUD, *_SUGGEST}:
            # file URLs hold an absolute path: file:///x (file://x names a host)
            slashes = ":///" if scheme == "file" else "://"
            fixed = _SUGGEST.get(scheme, scheme) + slashes + url.split(":", 1)[1].lstrip("/")
            raise StoreURLError(f"store URL {url!r} lacks '//': did you mean {fixed}?")
        if endpoint:
            raise StoreURLError("an endpoint only applies to s3://, az:// and gs:// stores")
        from backupctl.store.backends.local import LocalBackend

        return LocalBackend(url)

    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if parts.query or parts.fragment:
        raise StoreURLError(
            f"store URL {url!r} has a query or fragment: settings come from the environment "
            f"and options, not the URL (e.g. {_example(scheme)})"
        )
    if "@" in parts.netloc:
        raise StoreURLError(
            f"store URL {url!r} contains credentials: pass them in the environment "
            "(e.g. AWS_ACCESS_KEY_ID, AZURE_STORAGE_KEY, GOOGLE_APPLICATION_CREDENTIALS)"
        )
    if endpoint is not None and scheme not in _CLOUD:
        raise StoreURLError("an endpoint only applies to s3://, az:// and gs:// stores")

    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise StoreURLError(
                f"store URL {url!r} is not an absolute file URL: use three slashes, "
                "e.g. file:///var/backups/redis"
            )
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise StoreURLError(f"store URL {url!r} needs an absolute path: file:///var/backups")
        from backupctl.store.backends.local import LocalBackend

        return LocalBackend(path)

    if scheme == "memory":
        if not parts.netloc:
            raise StoreURLError(f"store URL {url!r} names no store: use memory://name")
        from backupctl.store.backends.memory import MemoryBackend

        return MemoryBackend(parts.netloc, unquote(parts.path))

    if scheme not in _CLOUD:
        hint = f"did you mean {_SUGGEST[scheme]}://? " if scheme in _SUGGEST else ""
        raise StoreURLError(
            f"unsupported store URL scheme {scheme + '://'!r} in {url!r}: {hint}"
            f"use one of {EXAMPLES} (or a plain directory path)"
        )
    bucket = parts.netloc
    if not bucket:
        raise StoreURLError(f"store URL {url!r} names no {_CLOUD[scheme]}: use {_example(scheme)}")
    problem = _bucket_problem(scheme, bucket)
    if problem:
        raise StoreURLError(
            f"invalid {_CLOUD[scheme]} name {bucket!r} in {url!r}: {problem} "
            f"(e.g. {_example(scheme)})"
        )
    prefix = "/".join(p for p in unquote(parts.path).split("/") if p)
    if any(p in (".", "..") for p in prefix.split("/")):
        raise StoreURLError(f"store URL {url!r} has '.' or '..' in its prefix")
    if endpoint is not None:
        endpoint = _check_endpoint(endpoint)
    if scheme == "s3":
        from backupctl.store.backends.s3 import S3Backend

        return S3Backend(bucket, prefix, endpoint=endpoint, sse=sse_from_env(os.environ), lock=lock)
    if scheme == "az":
        from backupctl.store.backends.azure import AzureBackend

        scope = os.environ.get(AZURE_SCOPE_ENV, "").strip() or None
        return AzureBackend(bucket, prefix, endpoint=endpoint, encryption_scope=scope, lock=lock)
    from backupctl.store.backends.gcs import GCSBackend

    kms_key = os.environ.get(GCS_KMS_KEY_ENV, "").strip() or None
    return GCSBackend(bucket, prefix, endpoint=endpoint, kms_key_name=kms_key, lock=lock)


def _example(scheme: str) -> str:
    return {
        "s3": "s3://my-bucket/redis",
        "az": "az://my-container/redis",
        "gs": "gs://my-bucket/redis",
        "file": "file:///var/backups/redis",
        "memory": "memory://test",
    }.get(scheme, EXAMPLES)
