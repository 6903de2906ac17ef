"""``RedisBackup.spec.encryption`` and ``RedisRestore.spec.decryption``: parsed,
and turned into the files, volumes and flags of a Job (pure).

Why a module of its own: keys reach a Job only as files from a Secret or
ConfigMap volume, never as environment values (an env value shows in
``kubectl describe``, in crash dumps and in every child process), and which
key goes to which Job (recipients and the signing key to ``run``, the
identity to ``restore --to-dir`` and to restore drills, the verify key to
every reader) is one
decision kept here, beside the parsing, so :mod:`backupctl.controller.manifests`
only appends what this returns. The controller never reads the Secrets.

Secret files are mounted with mode 0440: readable by the Job's own user and its
``fsGroup`` only. (0400 would leave them to root: data Jobs run as the Redis
container's non-root user, and Kubernetes gives secret files to root.)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from backupctl.controller.spec_fields import (
    DNS_SUBDOMAIN,
    SpecError,
    check_name,
    enum,
    obj,
    opt_bool,
    opt_int,
    opt_str,
)

#: Where key files are mounted: ``<KEYS_DIR>/<volume>/<key>``.
KEYS_DIR = "/var/run/secrets/backupctl/keys"
#: Secret key files: readable by the Job's user and fsGroup, nobody else.
SECRET_FILE_MODE = 0o440
#: How inline recipients must start (the CRD's CEL rule says the same).
RECIPIENT_PREFIXES = ("age1", "ssh-")
MAX_RECIPIENTS = 32
#: The lock fields of spec.encryption: the storage each goes with, and its modes.
LOCK_FIELDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "s3ObjectLock": ("s3", ("Governance", "Compliance")),
    "azureImmutability": ("azureBlob", ("Unlocked", "Locked")),
    "gcsRetention": ("gcs", ("Unlocked", "Locked")),
}
#: The server-side encryption fields of spec.encryption and the storage each goes with.
SERVER_SIDE_FIELDS: dict[str, str] = {
    "s3ServerSide": "s3",
    "s3CustomerKeySecret": "s3",
    "azureEncryptionScope": "azureBlob",
    "gcsKmsKeyName": "gcs",
}
#: Azure's rule for encryption scope names (the CRD's pattern says the same).
AZURE_SCOPE = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
#: A Cloud KMS key's resource name (the CRD's pattern says the same).
GCS_KMS_KEY = re.compile(r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+")
#: The variables ``open_store`` reads them from (store.backends, docs/encryption.md).
AZURE_SCOPE_ENV = "BACKUPCTL_AZURE_ENCRYPTION_SCOPE"
GCS_KMS_KEY_ENV = "BACKUPCTL_GCS_KMS_KEY"


@dataclass(frozen=True)
class KeyFileRef:
    """One key of a ConfigMap or Secret in the resource's namespace, as a file."""

    kind: str  # "configMap" | "secret"
    name: str
    key: str


@dataclass(frozen=True)
class EncryptionSpec:
    """``RedisBackup.spec.encryption``: whom backups are encrypted to, how they are signed."""

    recipients: tuple[str, ...] = ()
    recipients_from: KeyFileRef | None = None
    signing_key: KeyFileRef | None = None
    #: for the prune Job: only backups signed by this key count for retention
    verify_key: KeyFileRef | None = None
    require_signatures: bool = False
    #: S3 server-side encryption: "AES256" | "aws:kms" (+ key id), or SSE-C's key file
    sse: str | None = None
    kms_key_id: str | None = None
    sse_customer_key: KeyFileRef | None = None
    #: Azure: the encryption scope every blob is written with
    azure_encryption_scope: str | None = None
    #: GCS: the Cloud KMS key (CMEK) every object is written with
    gcs_kms_key_name: str | None = None
    #: the lock of every object a backup writes: ("GOVERNANCE" | "COMPLIANCE", days)
    #: from ``s3ObjectLock``, ("UNLOCKED" | "LOCKED", days) from ``azureImmutability``
    #: or ``gcsRetention`` (``lock_field`` says which)
    lock: tuple[str, int] | None = None
    lock_field: str = ""


@dataclass(frozen=True)
class DecryptionSpec:
    """``RedisRestore.spec.decryption``: the identity that decrypts, the key that verifies."""

    identity: KeyFileRef | None = None
    verify_key: KeyFileRef | None = None
    require_signatures: bool = False
    sse_customer_key: KeyFileRef | None = None  # S3 SSE-C: needed to read


def parse_encryption(raw: Any, p: str) -> EncryptionSpec | None:
    if raw is None:
        return None
    d = obj(raw, p)
    recipients = d.get("recipients") or []
    if not isinstance(recipients, list) or len(recipients) > MAX_RECIPIENTS:
        raise SpecError(f"{p}.recipients", f"must be a list of at most {MAX_RECIPIENTS} keys")
    for i, r in enumerate(recipients):
        if not isinstance(r, str) or not r.strip().startswith(RECIPIENT_PREFIXES):
            raise SpecError(
                f"{p}.recipients[{i}]",
                "must be an age recipient: an X25519 key (age1...) or an SSH public key "
                "(ssh-ed25519 ... / ssh-rsa ...)",
            )
    spec = EncryptionSpec(
        recipients=tuple(r.strip() for r in recipients),
        recipients_from=_key_ref(d, "recipientsFrom", p, config_map=True),
        signing_key=_key_ref(d, "signingKeySecret", p),
        verify_key=_key_ref(d, "verifyKeyFrom", p, config_map=True),
        require_signatures=opt_bool(d, "requireSignatures", p, False),
        **_server_side(d, p),
    )
    if spec == EncryptionSpec():
        raise SpecError(p, "set recipients, recipientsFrom or signingKeySecret (or leave it out)")
    _check_require(spec.require_signatures, spec.verify_key, p)
    return spec


def parse_decryption(raw: Any, p: str) -> DecryptionSpec | None:
    if raw is None:
        return None
    d = obj(raw, p)
    spec = DecryptionSpec(
        identity=_key_ref(d, "identitySecret", p),
        verify_key=_key_ref(d, "verifyKeyFrom", p, config_map=True),
        require_signatures=opt_bool(d, "requireSignatures", p, False),
        sse_customer_key=_key_ref(d, "s3CustomerKeySecret", p),
    )
    _check_require(spec.require_signatures, spec.verify_key, p)
    return spec


def _server_side(d: Mapping[str, Any], p: str) -> dict[str, Any]:
    """``s3ServerSide: {type, kmsKeyId}``, ``s3CustomerKeySecret``,
    ``azureEncryptionScope``, ``gcsKmsKeyName`` and ``s3ObjectLock`` /
    ``azureImmutability`` / ``gcsRetention: {mode, days}`` as :class:`EncryptionSpec`
    fields."""
    out: dict[str, Any] = {"sse_customer_key": _key_ref(d, "s3CustomerKeySecret", p)}
    if d.get("s3ServerSide") is not None:
        sp = f"{p}.s3ServerSide"
        sse = obj(d["s3ServerSide"], sp)
        out["sse"] = enum(sse, "type", sp, ("AES256", "aws:kms"))
        out["kms_key_id"] = opt_str(sse, "kmsKeyId", sp)
        if out["kms_key_id"] and out["sse"] != "aws:kms":
            raise SpecError(f"{sp}.kmsKeyId", "goes with type aws:kms")
        if out["sse_customer_key"] is not None:
            raise SpecError(sp, "set s3ServerSide or s3CustomerKeySecret (SSE-C), not both")
    scope = out["azure_encryption_scope"] = opt_str(d, "azureEncryptionScope", p)
    if scope is not None and not (3 <= len(scope) <= 63 and AZURE_SCOPE.fullmatch(scope)):
        raise SpecError(
            f"{p}.azureEncryptionScope",
            "must be an encryption scope name: 3-63 lower-case letters, digits and single "
            "dashes between them (az storage account encryption-scope list shows yours)",
        )
    kms = out["gcs_kms_key_name"] = opt_str(d, "gcsKmsKeyName", p)
    if kms is not None and not GCS_KMS_KEY.fullmatch(kms):
        raise SpecError(
            f"{p}.gcsKmsKeyName",
            "must be a Cloud KMS key name: projects/PROJECT/locations/LOCATION/keyRings/RING/"
            "cryptoKeys/KEY (gcloud kms keys list --format='value(name)' prints it)",
        )
    locks = [k for k in LOCK_FIELDS if d.get(k) is not None]
    if len(locks) > 1:
        raise SpecError(p, f"set one of {', '.join(locks)}, not both")
    for k in locks:
        sp = f"{p}.{k}"
        lock = obj(d[k], sp)
        mode = enum(lock, "mode", sp, LOCK_FIELDS[k][1])
        days = opt_int(lock, "days", sp, minimum=1, maximum=36_500)
        if days is None:
            raise SpecError(f"{sp}.days", "is required")
        out["lock"], out["lock_field"] = (mode.upper(), days), k
    return out


def check_store_fields(enc: EncryptionSpec | None, storage: str, p: str) -> None:
    """The lock field and the server-side encryption fields must be those of the
    store (``storage``: s3, azureBlob, gcs); worded as the CRD's CEL rules."""
    if enc is None:
        return
    if enc.lock_field and LOCK_FIELDS[enc.lock_field][0] != storage:
        raise SpecError(
            f"{p}.{enc.lock_field}",
            "the lock must match the store: s3ObjectLock with storage.s3, azureImmutability "
            "with storage.azureBlob, gcsRetention with storage.gcs",
        )
    set_fields = {
        "s3ServerSide": enc.sse is not None,
        "s3CustomerKeySecret": enc.sse_customer_key is not None,
        "azureEncryptionScope": enc.azure_encryption_scope is not None,
        "gcsKmsKeyName": enc.gcs_kms_key_name is not None,
    }
    for field, kind in SERVER_SIDE_FIELDS.items():
        if set_fields[field] and kind != storage:
            raise SpecError(
                f"{p}.{field}",
                "the server-side encryption must match the store: s3ServerSide and "
                "s3CustomerKeySecret with storage.s3, azureEncryptionScope with "
                "storage.azureBlob, gcsKmsKeyName with storage.gcs",
            )


def _check_require(required: bool, verify_key: KeyFileRef | None, p: str) -> None:
    if required and verify_key is None:
        raise SpecError(f"{p}.requireSignatures", "needs verifyKeyFrom (the public key)")


def _key_ref(
    d: Mapping[str, Any], k: str, p: str, *, config_map: bool = False
) -> KeyFileRef | None:
    """``{name, key}`` (a Secret), or with ``config_map`` ``{configMap: {name, key}}`` /
    ``{secret: {name, key}}``."""
    v = d.get(k)
    if v is None:
        return None
    sp = f"{p}.{k}"
    v = obj(v, sp)
    kind = "secret"
    if config_map:
        kinds = [c for c in ("configMap", "secret") if c in v]
        if len(kinds) != 1:
            raise SpecError(sp, "set exactly one of configMap and secret ({name, key})")
        kind, sp, v = kinds[0], f"{sp}.{kinds[0]}", obj(v[kinds[0]], f"{sp}.{kinds[0]}")
    name, key = opt_str(v, "name", sp), opt_str(v, "key", sp)
    if name is None or key is None:
        raise SpecError(sp, "a key reference needs both name and key")
    check_name(name, f"{sp}.name", DNS_SUBDOMAIN)
    if "/" in key or key in (".", ".."):
        raise SpecError(f"{sp}.key", "must be a plain key name")
    return KeyFileRef(kind=kind, name=name, key=key)


# --- into a Job ---------------------------------------------------------------------


@dataclass(frozen=True)
class JobKeys:
    """What a Job gets for its keys: extra CLI flags, pod volumes, container mounts."""

    args: tuple[str, ...] = ()
    volumes: tuple[dict[str, Any], ...] = ()
    mounts: tuple[dict[str, Any], ...] = ()
    #: plain settings and key file *paths*, never a key
    env: tuple[dict[str, Any], ...] = ()

    def __add__(self, other: JobKeys) -> JobKeys:
        return JobKeys(
            self.args + other.args,
            self.volumes + other.volumes,
            self.mounts + other.mounts,
            self.env + other.env,
        )


def _file(volume: str, ref: KeyFileRef, flag: str) -> JobKeys:
    source: dict[str, Any] = {"items": [{"key": ref.key, "path": ref.key}]}
    if ref.kind == "secret":
        vol = {"name": volume, "secret": {"secretName": ref.name, **source,
                                          "defaultMode": SECRET_FILE_MODE}}  # fmt: skip
    else:
        vol = {"name": volume, "configMap": {"name": ref.name, **source, "defaultMode": 0o444}}
    mount = {"name": volume, "mountPath": f"{KEYS_DIR}/{volume}", "readOnly": True}
    return JobKeys((flag, f"{KEYS_DIR}/{volume}/{ref.key}"), (vol,), (mount,))


def _trust(verify_key: KeyFileRef | None, required: bool) -> JobKeys:
    if verify_key is None:
        return JobKeys()
    keys = _file("verify-key", verify_key, "--verify-key")
    return keys + JobKeys(("--require-signatures",)) if required else keys


def _sse(
    customer_key: KeyFileRef | None, sse: str | None = None, kms: str | None = None
) -> JobKeys:
    """S3 server-side encryption as the CLI reads it: ``BACKUPCTL_S3_SSE*``
    variables (SSE-C: the path of the key file, mounted from its Secret)."""
    keys = JobKeys()
    if customer_key is not None:
        f = _file("s3-sse-c", customer_key, "")
        path = {"name": "BACKUPCTL_S3_SSE_C_KEY_FILE", "value": f.args[1]}
        keys = JobKeys((), f.volumes, f.mounts, (path,))
    if sse is not None:
        keys += JobKeys(env=({"name": "BACKUPCTL_S3_SSE", "value": sse},))
    if kms is not None:
        keys += JobKeys(env=({"name": "BACKUPCTL_S3_SSE_KMS_KEY_ID", "value": kms},))
    return keys


def _store_encryption(enc: EncryptionSpec) -> JobKeys:
    """Azure's encryption scope and GCS's KMS key as the CLI reads them: plain
    names (not secrets) in ``BACKUPCTL_AZURE_ENCRYPTION_SCOPE`` / ``BACKUPCTL_GCS_KMS_KEY``."""
    env = []
    if enc.azure_encryption_scope is not None:
        env.append({"name": AZURE_SCOPE_ENV, "value": enc.azure_encryption_scope})
    if enc.gcs_kms_key_name is not None:
        env.append({"name": GCS_KMS_KEY_ENV, "value": enc.gcs_kms_key_name})
    return JobKeys(env=tuple(env))


def backup_keys(enc: EncryptionSpec | None) -> JobKeys:
    """``run``: recipients inline and from their file, the signing key, S3
    server-side encryption, Azure's encryption scope, GCS's KMS key and the lock."""
    if enc is None:
        return JobKeys()
    keys = JobKeys(tuple(a for r in enc.recipients for a in ("--encrypt-to", r)))
    keys += _sse(enc.sse_customer_key, enc.sse, enc.kms_key_id) + _store_encryption(enc)
    if enc.lock is not None:
        keys += JobKeys(("--lock-mode", enc.lock[0].lower(), "--lock-days", str(enc.lock[1])))
    if enc.recipients_from is not None:
        keys += _file("age-recipients", enc.recipients_from, "--encrypt-to-file")
    if enc.signing_key is not None:
        keys += _file("signing-key", enc.signing_key, "--signing-key")
    return keys


def prune_keys(enc: EncryptionSpec | None) -> JobKeys:
    """``prune``: only backups signed by the verify key count (when one is set); an
    SSE-C key to read the manifests and locks; the Azure scope and GCS KMS key, so
    whatever prune writes is encrypted as the backups are."""
    if enc is None:
        return JobKeys()
    keys = _trust(enc.verify_key, enc.require_signatures) + _sse(enc.sse_customer_key)
    return keys + _store_encryption(enc)


def drill_keys(enc: EncryptionSpec | None, dec: DecryptionSpec | None) -> JobKeys:
    """A restore drill's ``verify`` (``spec.verify.decryption``): the identity
    that decrypts; the verify key and SSE-C key of ``dec``, else those of the
    backups' own ``spec.encryption`` (a drill checks what the prune Job trusts)."""
    dec = dec or DecryptionSpec()
    verify_key, required = dec.verify_key, dec.require_signatures
    if verify_key is None and enc is not None:
        verify_key, required = enc.verify_key, enc.require_signatures
    customer_key = dec.sse_customer_key or (enc.sse_customer_key if enc else None)
    keys = _trust(verify_key, required) + _sse(customer_key)
    if dec.identity is not None:
        keys += _file("age-identity", dec.identity, "--identity")
    return keys


def has_secret_file(keys: JobKeys) -> bool:
    """Whether ``keys`` mount a Secret: its files are root's, mode 0440, so the
    Job needs an ``fsGroup`` for its non-root user to read them."""
    return any("secret" in v for v in keys.volumes)


def restore_keys(dec: DecryptionSpec | None, *, to_dir: bool) -> JobKeys:
    """``restore``: the verify key in every mode; the identity with ``--to-dir``
    (the mode that decrypts: resolving and verifying read only the manifest)."""
    if dec is None:
        return JobKeys()
    keys = _trust(dec.verify_key, dec.require_signatures) + _sse(dec.sse_customer_key)
    if to_dir and dec.identity is not None:
        keys += _file("age-identity", dec.identity, "--identity")
    return keys


__all__ = [
    "KEYS_DIR",
    "SECRET_FILE_MODE",
    "DecryptionSpec",
    "EncryptionSpec",
    "JobKeys",
    "KeyFileRef",
    "backup_keys",
    "check_store_fields",
    "drill_keys",
    "has_secret_file",
    "parse_decryption",
    "parse_encryption",
    "prune_keys",
    "restore_keys",
]
