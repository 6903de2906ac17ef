"""Signed manifests: ed25519 signatures that make a planted or edited backup visible.

Why a module of its own: anyone who can write the bucket can otherwise plant
a backup that ``restore latest`` loads, or edit a manifest's checksums to
match archives of their own. A run given a signing key writes, just before
the manifest (which stays the last object, so its presence still means
complete), a detached signature beside it::

    <target>/<backup-id>/manifest.json.sig
    {"format": "backupctl.dev/signature/v1", "algorithm": "ed25519",
     "key": "SHA256:<fingerprint>", "signature": "<base64>"}

The signature is over ``backupctl.dev/signature/v1\\n`` followed by the exact
bytes of ``manifest.json`` (no canonical JSON to get wrong: the bytes read are
the bytes checked). The manifest names its folder, and the sha256 of every
archive, so the one signature covers the whole backup; a signed manifest
copied into another folder is refused by the folder check that already
exists (:func:`backupctl.store.catalog.check_folder`).

Readers given ``--verify-key`` check every manifest they read before parsing
it (:class:`Trust`): a signature by another key, or one that does not match
(the manifest was edited), makes the backup INVALID with the reason, never
restorable and never counted by retention. An unsigned manifest is accepted
unless ``--require-signatures``, so a store can move to signed backups
gradually; with it, a planted unsigned backup is INVALID too and never
``latest``. Keys are the usual files: an ed25519 private key from
``openssl genpkey -algorithm ed25519`` (PEM) or ``ssh-keygen -t ed25519``
(OpenSSH, without passphrase); public keys as PEM or an ``ssh-ed25519 ...``
line. Fingerprints are OpenSSH's (``ssh-keygen -lf key.pub`` prints the same).
The cryptography is the ``cryptography`` package's; nothing here is home-made.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: ~10 MiB a backup without a key need not hold
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

from backupctl.store.backends.base import Backend, NotFound, put_bytes, read_at_most
from backupctl.store.catalog import (
    CatalogError,
    ForeignManifest,
    Manifest,
    manifest_key,
    write_manifest,
)
from backupctl.store.manifest_checks import MAX_MANIFEST_BYTES

SIGNATURE_FORMAT = "backupctl.dev/signature/v1"
#: The signature's key: beside the manifest.
SIGNATURE_SUFFIX = ".sig"
#: The environment variable ``run`` reads the signing key's path from.
SIGNING_KEY_ENV = "BACKUPCTL_SIGNING_KEY_FILE"
#: The environment variable readers take verify keys' paths from (space-separated).
VERIFY_KEY_ENV = "BACKUPCTL_VERIFY_KEY_FILE"
_DOMAIN = SIGNATURE_FORMAT.encode() + b"\n"
_MAX_KEY_FILE = 64 * 1024
_MAX_SIGNATURE_FILE = 4096


class SigningKeyError(CatalogError):
    """A signing or verify key file that cannot be used; one line, never the key."""


class SignatureError(ForeignManifest):
    """A manifest whose signature is missing (when required), foreign or wrong:
    not this folder's genuine manifest, so it is treated like a copied one."""


def signature_key(target: str, backup_id: str) -> str:
    return manifest_key(target, backup_id) + SIGNATURE_SUFFIX


def write_signed_manifest(
    backend: Backend, manifest: Manifest, signer: Signer | None = None
) -> None:
    """:func:`~backupctl.store.catalog.write_manifest`, its signature (when a
    ``signer`` is given) just before it: the manifest stays the last object."""
    if signer is not None:
        put_bytes(backend, signature_key(manifest.target, manifest.id), signer(manifest.dumps()))
    write_manifest(backend, manifest)


def key_fingerprint(key: Ed25519PublicKey) -> str:
    """``SHA256:...`` as ``ssh-keygen -l`` prints it for the same key."""
    from cryptography.hazmat.primitives import serialization

    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    blob = base64.b64decode(line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


@dataclass(frozen=True)
class Signer:
    """Signs manifests with one private key (``run --signing-key``)."""

    key: Ed25519PrivateKey

    @property
    def fingerprint(self) -> str:
        return key_fingerprint(self.key.public_key())

    def __call__(self, manifest: bytes) -> bytes:
        """The ``manifest.json.sig`` for the manifest bytes ``manifest``."""
        doc = {
            "format": SIGNATURE_FORMAT,
            "algorithm": "ed25519",
            "key": self.fingerprint,
            "signature": base64.b64encode(self.key.sign(_DOMAIN + manifest)).decode(),
        }
        return (json.dumps(doc, indent=2) + "\n").encode()


@dataclass(frozen=True)
class Trust:
    """The keys a reader accepts manifests from, and whether unsigned ones are refused."""

    keys: tuple[Ed25519PublicKey, ...]
    required: bool = False

    @property
    def fingerprints(self) -> tuple[str, ...]:
        return tuple(key_fingerprint(k) for k in self.keys)

    def __call__(self, backend: Backend, target: str, backup_id: str, manifest: bytes) -> None:
        """Check the signature of ``<target>/<backup_id>/manifest.json`` (its bytes:
        ``manifest``); :class:`SignatureError` with the reason when it fails."""
        if len(manifest) > MAX_MANIFEST_BYTES:
            return  # not a manifest: the parser refuses it unread, with that reason
        try:
            raw = read_at_most(backend, signature_key(target, backup_id), _MAX_SIGNATURE_FILE)
        except NotFound:
            if self.required:
                raise SignatureError(
                    "the manifest is not signed and signatures are required "
                    "(--require-signatures): a backup written without --signing-key, or planted"
                ) from None
            return
        self.check(manifest, raw)

    def check(self, manifest: bytes, signature_file: bytes) -> None:
        """The pure part of :meth:`__call__`: ``signature_file`` against ``manifest``."""
        fp, sig = _parse_signature(signature_file)
        by_print = dict(zip(self.fingerprints, self.keys, strict=True))
        key = by_print.get(fp)
        if key is None:
            raise SignatureError(
                f"the manifest is signed by key {fp}, which is not a --verify-key "
                f"({', '.join(by_print)}): re-signed by someone else, or pass that key"
            )
        from cryptography.exceptions import InvalidSignature

        try:
            key.verify(sig, _DOMAIN + manifest)
        except InvalidSignature:
            raise SignatureError(
                f"the manifest's signature (key {fp}) does not match it: the manifest was "
                "changed after it was signed"
            ) from None


def _parse_signature(raw: bytes) -> tuple[str, bytes]:
    bad = "manifest.json.sig is not a backupctl signature"
    if len(raw) > _MAX_SIGNATURE_FILE:
        raise SignatureError(f"{bad} (larger than {_MAX_SIGNATURE_FILE} bytes)")
    try:
        doc: Any = json.loads(raw)
    except (ValueError, RecursionError):
        raise SignatureError(f"{bad} (not JSON)") from None
    if not isinstance(doc, dict) or doc.get("format") != SIGNATURE_FORMAT:
        raise SignatureError(f"{bad} (format is not {SIGNATURE_FORMAT})")
    if doc.get("algorithm") != "ed25519":
        raise SignatureError(f"{bad} (algorithm {str(doc.get('algorithm'))[:40]!r}, not ed25519)")
    fp, sig = doc.get("key"), doc.get("signature")
    if not isinstance(fp, str) or not isinstance(sig, str):
        raise SignatureError(f"{bad} (key and signature must be strings)")
    try:
        return fp[:80], base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{bad} (signature is not base64)") from None


# --- key files ------------------------------------------------------------------


def load_signer(path: Path | None) -> Signer | None:
    """The signing key in ``path`` (PEM or OpenSSH ed25519 private key); None without one."""
    if path is None:
        return None
    data = _read(path, "signing key")
    key = _private_key(data)
    if key is None:
        raise SigningKeyError(
            f"signing key {path} is not an unencrypted ed25519 private key: make one with "
            "'openssl genpkey -algorithm ed25519 -out signing.pem' (or ssh-keygen -t ed25519 -N '')"
        )
    return Signer(key)


def load_trust(paths: Sequence[Path], *, required: bool = False) -> Trust | None:
    """The verify keys in ``paths`` (public keys, PEM or ``ssh-ed25519 ...``; a
    private key file works too); None when none is given. ``required`` without
    keys is refused: nothing could be verified."""
    if not paths:
        if required:
            raise SigningKeyError(
                "--require-signatures needs --verify-key FILE (the public key the runs sign with)"
            )
        return None
    keys = []
    for path in paths:
        key = _public_key(_read(path, "verify key"))
        if key is None:
            raise SigningKeyError(
                f"verify key {path} is not an ed25519 public key: export it with 'openssl pkey "
                "-in signing.pem -pubout' (or use the ssh-ed25519 line of key.pub)"
            )
        keys.append(key)
    return Trust(keys=tuple(keys), required=required)


def _private_key(data: bytes) -> Ed25519PrivateKey | None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    for load in (serialization.load_pem_private_key, serialization.load_ssh_private_key):
        try:
            key = load(data, password=None)
        except (ValueError, TypeError, binascii.Error):
            continue
        return key if isinstance(key, Ed25519PrivateKey) else None
    return None


def _public_key(data: bytes) -> Ed25519PublicKey | None:
    private = _private_key(data)
    if private is not None:
        return private.public_key()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    for load in (serialization.load_pem_public_key, serialization.load_ssh_public_key):
        try:
            key = load(data.strip())
        except (ValueError, TypeError, binascii.Error):
            continue
        return key if isinstance(key, Ed25519PublicKey) else None
    return None


def _read(path: Path, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_KEY_FILE + 1)
    except OSError as e:
        raise SigningKeyError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if len(data) > _MAX_KEY_FILE:
        raise SigningKeyError(f"{what} {path} is larger than 64 KiB: not a key file")
    return data


__all__ = [
    "SIGNATURE_FORMAT",
    "SIGNING_KEY_ENV",
    "VERIFY_KEY_ENV",
    "SignatureError",
    "Signer",
    "SigningKeyError",
    "Trust",
    "key_fingerprint",
    "load_signer",
    "load_trust",
    "signature_key",
    "write_signed_manifest",
]
