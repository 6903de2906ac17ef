"""Options several commands share, and turning their values into a store or
a Redis connection.

Declared once so ``--endpoint``, ``--json``, ``--termination-log`` and friends
read (and parse) the same in every command.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from backupctl.redis.address import ConnectionSpec, parse_redis_url
from backupctl.store.backends import open_store
from backupctl.store.backends.base import Backend
from backupctl.store.backends.retry import RetryingBackend
from backupctl.store.backends.s3_options import ObjectLock
from backupctl.store.encryption import Identities, Recipients, load_identities, parse_recipients
from backupctl.store.signing import (
    SIGNING_KEY_ENV,
    VERIFY_KEY_ENV,
    Trust,
    load_trust,
)

StoreArg = Annotated[
    str,
    typer.Argument(
        help="Store URL: /path or file:///path, s3://bucket/prefix, az://container/prefix, "
        "gs://bucket/prefix",
        show_default=False,
    ),
]
EndpointOpt = Annotated[
    str | None,
    typer.Option(
        "--endpoint",
        help="Object-store endpoint for S3-compatible stores, Azurite or a GCS emulator "
        "(default: AWS_ENDPOINT_URL / AZURE_STORAGE_ENDPOINT / STORAGE_EMULATOR_HOST).",
    ),
]
TargetOpt = Annotated[
    str | None,
    typer.Option("--target", help="Which target's backups (a name like 'redis/redis-cluster')."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
TermLogOpt = Annotated[
    Path | None,
    typer.Option(
        "--termination-log",
        help="Also write the result (or the error) as compact JSON to this file "
        "(Kubernetes: /dev/termination-log).",
    ),
]
PasswordFileOpt = Annotated[
    Path | None, typer.Option("--password-file", help="File holding the Redis password.")
]


def get_store(url: str, endpoint: str | None, *, lock: ObjectLock | None = None) -> Backend:
    """The store behind ``url``, with the storage package's retry wrapper."""
    return RetryingBackend(open_store(url, endpoint=endpoint, lock=lock))


def redis_spec(url: str, password_file: Path | None) -> ConnectionSpec:
    """``--redis URL`` with ``--password-file`` (else REDIS_PASSWORD) applied."""
    return parse_redis_url(url, password_file=str(password_file) if password_file else None)


# --- encryption (docs/encryption.md) ---------------------------------------------

EncryptToOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--encrypt-to",
        help="Encrypt the archives (age) to this recipient: an age1... key or an SSH public "
        "key. Repeat for more (an operations key and an offline recovery key).",
        rich_help_panel="Encryption",
    ),
]
EncryptToFileOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--encrypt-to-file",
        help="Encrypt to the recipients in this file (one a line, # comments, as age -R).",
        rich_help_panel="Encryption",
    ),
]
IdentityOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--identity",
        help="age identity file (or unencrypted SSH private key) that decrypts encrypted "
        "backups (default: $BACKUPCTL_AGE_IDENTITY_FILE, or the key in $BACKUPCTL_AGE_IDENTITY).",
        rich_help_panel="Encryption",
    ),
]


def recipients(values: list[str] | None, files: list[Path] | None) -> Recipients | None:
    """``--encrypt-to`` and ``--encrypt-to-file`` parsed (EncryptionError: one line)."""
    return parse_recipients(values or [], files or [])


def identities(files: list[Path] | None) -> Identities | None:
    """``--identity`` files, else the environment's (see load_identities)."""
    return load_identities(files or [])


# --- signed manifests (docs/encryption.md) ----------------------------------------

SigningKeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--signing-key",
        envvar=SIGNING_KEY_ENV,
        help="Sign the manifest with this ed25519 private key (PEM from 'openssl genpkey "
        "-algorithm ed25519', or an unencrypted OpenSSH key): manifest.json.sig beside it.",
        rich_help_panel="Encryption",
        show_default=False,
    ),
]
VerifyKeyOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--verify-key",
        envvar=VERIFY_KEY_ENV,
        help="Check manifest signatures with this ed25519 public key (repeatable): a backup "
        "signed by another key, or edited after signing, is INVALID and never used.",
        rich_help_panel="Encryption",
        show_default=False,
    ),
]
RequireSignaturesOpt = Annotated[
    bool,
    typer.Option(
        "--require-signatures",
        help="With --verify-key: an unsigned backup is INVALID too (never 'latest', never "
        "counted by retention).",
        rich_help_panel="Encryption",
    ),
]


def trust(verify_keys: Sequence[Path] | None, required: bool) -> Trust | None:
    """``--verify-key`` / ``--require-signatures`` (SigningKeyError: one line)."""
    return load_trust(list(verify_keys or ()), required=required)


# --- Object Lock, Azure immutability, GCS retention (docs/encryption.md) -------------

LockModeOpt = Annotated[
    str | None,
    typer.Option(
        "--lock-mode",
        metavar="governance|compliance|unlocked|locked",
        help="Lock every object of the backup: S3 Object Lock (governance|compliance; the "
        "bucket must have Object Lock enabled), Azure version-level immutability or GCS "
        "object retention (unlocked|locked; enabled on the container / bucket); with "
        "--lock-days.",
        rich_help_panel="Encryption",
        show_default=False,
    ),
]
LockDaysOpt = Annotated[
    int | None,
    typer.Option(
        "--lock-days",
        metavar="N",
        help="Retain-until = write time + N days: set it to how long retention keeps a backup "
        "(prune skips a backup until its lock has passed).",
        rich_help_panel="Encryption",
        show_default=False,
    ),
]
