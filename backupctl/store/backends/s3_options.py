"""Server-side encryption and Object Lock of an S3 store: what each request carries (pure).

Why a module of its own: these settings change the arguments of every write
(single PUT, multipart start and every part) and, for SSE-C, of every read,
and a missing argument on one of them is a silent hole (an unencrypted part,
an unlocked archive). They are decided here once, from the environment and
the run's flags, as plain keyword arguments the S3 backend adds to its calls;
table tests check them without a server.

- ``BACKUPCTL_S3_SSE``: ``AES256`` (SSE-S3) or ``aws:kms`` (SSE-KMS);
  ``BACKUPCTL_S3_SSE_KMS_KEY_ID`` names the KMS key (and implies ``aws:kms``).
- ``BACKUPCTL_S3_SSE_C_KEY_FILE``: a file holding a 256-bit customer key (32
  raw bytes, or their base64): SSE-C. S3 keeps no copy: every command that
  reads the store (restore, verify) needs the same key, and losing it loses
  the backups.
- Object Lock (``run --lock-mode governance|compliance --lock-days N``): every
  object of a backup is written with retain-until = write time + N days
  (parsed in :mod:`backupctl.store.backends.locks`, shared with Azure and GCS).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backupctl.store.backends.base import StoreURLError
from backupctl.store.backends.locks import LOCK_MODES, MAX_LOCK_DAYS, ObjectLock, parse_lock

SSE_ENV = "BACKUPCTL_S3_SSE"
SSE_KMS_KEY_ENV = "BACKUPCTL_S3_SSE_KMS_KEY_ID"
SSE_C_KEY_FILE_ENV = "BACKUPCTL_S3_SSE_C_KEY_FILE"
SSE_MODES = {"aes256": "AES256", "sse-s3": "AES256", "aws:kms": "aws:kms", "sse-kms": "aws:kms"}
#: How Azure's and GCS's server-side encryption, reported in the same type, reads
#: (``algorithm`` -> words; ``kms_key_id`` holds the scope or key name).
OTHER_STORES = {
    "azure:scope": "Azure encryption scope",
    "azure:account": "Azure account encryption",
    "azure:customer-key": "Azure customer-provided key",
    "gcs:kms": "Cloud KMS key",
    "gcs:customer-key": "GCS customer-supplied key",
}


@dataclass(frozen=True)
class ServerSideEncryption:
    """SSE-S3 (``AES256``), SSE-KMS (``aws:kms`` with an optional key id) or SSE-C;
    as Azure and GCS report theirs, one of :data:`OTHER_STORES`."""

    algorithm: str  # "AES256" | "aws:kms" | "SSE-C"
    kms_key_id: str | None = None
    customer_key: bytes = field(default=b"", repr=False)  # never printed

    def write_args(self) -> dict[str, Any]:
        """Arguments of PutObject, CreateMultipartUpload (and, SSE-C only, UploadPart)."""
        if self.algorithm == "SSE-C":
            return self.read_args()
        args: dict[str, Any] = {"ServerSideEncryption": self.algorithm}
        if self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id
        return args

    def part_args(self) -> dict[str, Any]:
        """Arguments of UploadPart: the customer key (SSE-S3/KMS: none, set at the start)."""
        return self.read_args()

    def read_args(self) -> dict[str, Any]:
        """Arguments of GetObject / HeadObject: the customer key for SSE-C, else none."""
        if self.algorithm != "SSE-C":
            return {}
        return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": self.customer_key}

    def describe(self) -> str:
        if self.algorithm == "SSE-C":
            return "SSE-C (customer key)"
        named = f" ({self.kms_key_id})" if self.kms_key_id else ""
        if self.algorithm == "aws:kms":
            return "SSE-KMS" + named
        if self.algorithm in OTHER_STORES:
            return OTHER_STORES[self.algorithm] + named
        return "SSE-S3"


def sse_from_env(env: Mapping[str, str]) -> ServerSideEncryption | None:
    """The server-side encryption the environment asks for (see the module docstring)."""
    mode = env.get(SSE_ENV, "").strip()
    kms_key = env.get(SSE_KMS_KEY_ENV, "").strip() or None
    key_file = env.get(SSE_C_KEY_FILE_ENV, "").strip()
    if key_file:
        if mode or kms_key:
            raise StoreURLError(
                f"${SSE_C_KEY_FILE_ENV} (SSE-C) excludes ${SSE_ENV} and ${SSE_KMS_KEY_ENV}: "
                "pick one kind of server-side encryption"
            )
        return ServerSideEncryption("SSE-C", customer_key=_customer_key(Path(key_file)))
    if not mode and not kms_key:
        return None
    algorithm = SSE_MODES.get(mode.lower(), "") if mode else "aws:kms"
    if not algorithm:
        raise StoreURLError(
            f"${SSE_ENV} must be AES256 (SSE-S3) or aws:kms (SSE-KMS), not {mode[:40]!r}"
        )
    if kms_key and algorithm != "aws:kms":
        raise StoreURLError(f"${SSE_KMS_KEY_ENV} goes with ${SSE_ENV}=aws:kms, not {algorithm}")
    return ServerSideEncryption(algorithm, kms_key_id=kms_key)


def _customer_key(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            raw = f.read(4097)
    except OSError as e:
        raise StoreURLError(
            f"cannot read ${SSE_C_KEY_FILE_ENV} {path}: {e.strerror or e}"
        ) from None
    if len(raw) == 32:
        return raw
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise StoreURLError(
            f"${SSE_C_KEY_FILE_ENV} {path} must hold a 256-bit key: 32 bytes, or their base64 "
            "(make one with 'openssl rand 32 > sse-c.key')"
        )
    return key


__all__ = [
    "LOCK_MODES",
    "MAX_LOCK_DAYS",
    "ObjectLock",
    "ServerSideEncryption",
    "parse_lock",
    "sse_from_env",
]
