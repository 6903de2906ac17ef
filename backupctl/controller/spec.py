"""RedisBackup / RedisRestore specs: parsing, defaults and validation (pure).

The CRDs in ``crds/`` are the first line of defence; this module parses the
``spec`` dict of a custom resource into frozen dataclasses with the CRD's
defaults applied, and re-checks everything the controller relies on, so a
resource that reached the controller without schema validation (an old CRD,
an API emulator) still ends in one clear
:class:`~backupctl.controller.spec_fields.SpecError`
(``spec.storage: set exactly one of s3, azureBlob, gcs``) instead of a crash.
It also checks what a schema cannot: the cron expression parses, the time
zone exists, the backup reference names a backup.

:func:`store_url` gives the store URL the CLI understands; what else a Job
needs from a spec (env from Secrets, volumes, prune flags) is in
:mod:`backupctl.controller.job_env`, the field getters in
:mod:`backupctl.controller.spec_fields`.

No kopf, kubernetes, redis or cloud SDK imports here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

from backupctl.controller.job_limits import DEFAULT_START_TIMEOUT_SECONDS, KINDS
from backupctl.controller.schedule import check_time_zone, parse_cron
from backupctl.controller.spec_crypto import (
    DecryptionSpec,
    EncryptionSpec,
    check_store_fields,
    parse_decryption,
    parse_encryption,
)
from backupctl.controller.spec_fields import (
    DNS_SUBDOMAIN,
    SpecError,
    check_name,
    enum,
    int_default,
    obj,
    opt_bool,
    opt_endpoint,
    opt_int,
    opt_str,
    req_str,
)
from backupctl.controller.spec_verify import VerifySpec, parse_verify
from backupctl.store.catalog import CatalogError, normalize_ref, validate_target

API_GROUP = "backupctl.dev"
API_VERSION = "v1alpha1"
#: ``apiVersion`` of both custom resources.
GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"

BACKUP_PHASES = ("Pending", "Scheduled", "Running", "Succeeded", "Failed", "Suspended")
RESTORE_PHASES = (
    "Pending",
    "Quiescing",
    "Staging",
    "Restarting",
    "Verifying",
    "Completed",
    "Failed",
)
#: Kinds ``spec.target.kind`` accepts; without a kind the name is looked up in this order.
TARGET_KINDS = ("RedisCluster", "RedisReplication", "Redis", "RedisFailover", "StatefulSet")
CONCURRENCY_POLICIES = ("Forbid", "Allow", "Replace")
METHODS = ("bgsave", "replication")
COMPRESSIONS = ("zstd", "gzip", "none")
STORAGE_BACKENDS = ("s3", "azureBlob", "gcs")

#: restic's duration syntax (no weeks), as ``backupctl prune --keep-within`` takes it.
KEEP_WITHIN_PATTERN = re.compile(r"^(?=\d)(\d+y)?(\d+m)?(\d+d)?(\d+h)?$")

# --- dataclasses -------------------------------------------------------------


@dataclass(frozen=True)
class SecretRef:
    """A key of a Secret in the resource's namespace; only ever referenced."""

    name: str
    key: str


@dataclass(frozen=True)
class TLSSpec:
    enabled: bool = True
    ca_secret: SecretRef | None = None
    insecure_skip_verify: bool = False


@dataclass(frozen=True)
class TargetSpec:
    """Which Redis to back up or restore into.

    ``kind`` is None when the controller should look ``name`` up among
    :data:`TARGET_KINDS` (always so for ``redisClusterName``). Exactly one of
    ``name`` and ``selector`` (a metav1.LabelSelector dict) is set. ``port``
    and ``password_secret`` left unset are taken from the operator's resource
    when there is one.
    """

    name: str | None = None
    kind: str | None = None
    selector: Mapping[str, Any] | None = None
    port: int | None = None
    password_secret: SecretRef | None = None
    tls: TLSSpec | None = None


@dataclass(frozen=True)
class S3Storage:
    bucket: str
    region: str | None = None
    endpoint: str | None = None
    prefix: str = ""
    key: str | None = None
    access_key_id_secret: SecretRef | None = None
    secret_access_key_secret: SecretRef | None = None


@dataclass(frozen=True)
class AzureBlobStorage:
    container: str
    storage_account: str | None = None
    storage_account_key_secret: SecretRef | None = None
    connection_string_secret: SecretRef | None = None
    endpoint: str | None = None
    prefix: str = ""
    key: str | None = None


@dataclass(frozen=True)
class GCSStorage:
    bucket: str
    credentials_secret: SecretRef | None = None
    endpoint: str | None = None
    prefix: str = ""
    key: str | None = None


Storage: TypeAlias = S3Storage | AzureBlobStorage | GCSStorage


@dataclass(frozen=True)
class RetentionSpec:
    """Retention rules; ``None`` means the rule is not used."""

    keep_last: int | None = None
    keep_hourly: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_yearly: int | None = None
    keep_within: str | None = None
    #: Prune on this cron schedule (the RedisBackup's time zone) instead of after
    #: each successful backup: retention that does not wait for a backup to succeed.
    schedule: str | None = None

    @property
    def empty(self) -> bool:
        """True when no rule is set: nothing is ever pruned."""
        return all(getattr(self, f) is None for f in RETENTION_FIELDS.values())


@dataclass(frozen=True)
class JobOptions:
    """Knobs copied onto every Job made for the resource."""

    backoff_limit: int = 2
    active_deadline_seconds: int | None = None
    successful_jobs_history_limit: int = 3
    failed_jobs_history_limit: int = 1
    resources: Mapping[str, Any] = field(default_factory=dict)
    image: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    service_account_name: str | None = None
    #: ``activeDeadlineSeconds`` per Job kind (backup, prune, stage, swap, check,
    #: probe), over :data:`backupctl.controller.job_limits.DEFAULT_DEADLINES`.
    deadlines: Mapping[str, int] = field(default_factory=dict)
    #: A pod that has not started after this long fails its step.
    start_timeout_seconds: int = DEFAULT_START_TIMEOUT_SECONDS


@dataclass(frozen=True)
class BackupSpec:
    target: TargetSpec
    storage: Storage
    schedule: str | None = None  # normalised: macros expanded to 5 fields
    time_zone: str = "UTC"
    suspend: bool = False
    concurrency_policy: str = "Forbid"
    starting_deadline_seconds: int | None = None
    retention: RetentionSpec = field(default_factory=RetentionSpec)
    method: str = "bgsave"
    compression: str = "zstd"
    prefer_replica: bool = False
    job: JobOptions = field(default_factory=JobOptions)
    verify: VerifySpec | None = None  # restore drills
    encryption: EncryptionSpec | None = None  # spec.encryption (controller.spec_crypto)

    @property
    def scheduled(self) -> bool:
        return self.schedule is not None


@dataclass(frozen=True)
class RestoreSpec:
    """``backup`` is a bare backup id or ``latest`` (archive extensions and
    key paths are stripped). ``storage`` is None only while ``from_backup``
    is unresolved (see :func:`with_backup_source`)."""

    target: TargetSpec
    backup: str
    storage: Storage | None = None
    from_backup: str | None = None
    source_target: str | None = None
    job: JobOptions = field(default_factory=JobOptions)
    decryption: DecryptionSpec | None = None  # spec.decryption (controller.spec_crypto)


# --- parsing -----------------------------------------------------------------

#: ``spec.retention`` field -> :class:`RetentionSpec` attribute.
RETENTION_FIELDS = {
    "keepLast": "keep_last",
    "keepHourly": "keep_hourly",
    "keepDaily": "keep_daily",
    "keepWeekly": "keep_weekly",
    "keepMonthly": "keep_monthly",
    "keepYearly": "keep_yearly",
    "keepWithin": "keep_within",
}


def parse_backup(spec: Mapping[str, Any]) -> BackupSpec:
    """Parse a RedisBackup ``spec`` with the CRD's defaults applied."""
    p = "spec"
    spec = obj(spec, p)
    storage = parse_storage(spec.get("storage"), f"{p}.storage")
    if storage.key is not None:
        raise SpecError(
            f"{p}.storage.{_backend_name(storage)}.key",
            "names a backup to restore; it belongs in a RedisRestore, not a RedisBackup",
        )
    schedule = opt_str(spec, "schedule", p)
    tz = opt_str(spec, "timeZone", p) or "UTC"
    check_time_zone(tz, f"{p}.timeZone")
    if schedule is not None:
        schedule = parse_cron(schedule, f"{p}.schedule")
    encryption = parse_encryption(spec.get("encryption"), f"{p}.encryption")
    check_store_fields(encryption, _backend_name(storage), f"{p}.encryption")
    return BackupSpec(
        target=parse_target(spec, p),
        storage=storage,
        schedule=schedule,
        time_zone=tz,
        suspend=opt_bool(spec, "suspend", p, False),
        concurrency_policy=enum(spec, "concurrencyPolicy", p, CONCURRENCY_POLICIES),
        starting_deadline_seconds=opt_int(spec, "startingDeadlineSeconds", p, minimum=1),
        retention=parse_retention(spec.get("retention"), f"{p}.retention"),
        method=enum(spec, "method", p, METHODS),
        compression=enum(spec, "compression", p, COMPRESSIONS),
        prefer_replica=opt_bool(spec, "preferReplica", p, False),
        job=parse_job_options(spec, p),
        verify=parse_verify(spec.get("verify"), f"{p}.verify"),
        encryption=encryption,
    )


def parse_restore(spec: Mapping[str, Any]) -> RestoreSpec:
    """Parse a RedisRestore ``spec``. Exactly one of ``backupId``,
    ``latest: true`` and ``storage.<backend>.key`` chooses the backup."""
    p = "spec"
    spec = obj(spec, p)
    from_backup = opt_str(spec, "fromBackup", p)
    raw_storage = spec.get("storage")
    if (raw_storage is None) == (from_backup is None):
        raise SpecError(p, "set exactly one of storage or fromBackup (a RedisBackup's name)")
    if from_backup is not None:
        check_name(from_backup, f"{p}.fromBackup", DNS_SUBDOMAIN)
    storage = parse_storage(raw_storage, f"{p}.storage") if raw_storage is not None else None

    backup_id = opt_str(spec, "backupId", p)
    latest = opt_bool(spec, "latest", p, False)
    refs = [(f"{p}.backupId", backup_id), (f"{p}.latest", "latest" if latest else None)]
    if storage is not None:
        refs.append((f"{p}.storage.{_backend_name(storage)}.key", storage.key))
    chosen = [(path, ref) for path, ref in refs if ref is not None]
    if len(chosen) != 1:
        raise SpecError(
            p,
            "choose the backup to restore: set exactly one of backupId, latest: true, "
            "or storage.<backend>.key",
        )
    path, ref = chosen[0]
    try:
        backup = normalize_ref(ref)
    except CatalogError as e:
        raise SpecError(path, str(e)) from None

    target = parse_target(spec, p)
    source_target = opt_str(spec, "sourceTarget", p)
    if source_target is not None:
        try:
            validate_target(source_target)
        except CatalogError as e:
            raise SpecError(f"{p}.sourceTarget", str(e)) from None
    elif target.name is None and from_backup is None:
        raise SpecError(
            f"{p}.sourceTarget",
            "is required with a target selector: the <namespace>/<name> folder of the "
            "backups in the store",
        )
    return RestoreSpec(
        target=target,
        backup=backup,
        storage=storage,
        from_backup=from_backup,
        source_target=source_target,
        job=parse_job_options(spec, p),
        decryption=parse_decryption(spec.get("decryption"), f"{p}.decryption"),
    )


def with_backup_source(
    restore: RestoreSpec, backup: BackupSpec, *, namespace: str, backup_name: str
) -> RestoreSpec:
    """Fill a ``fromBackup`` restore's storage (and, unless set, the store
    path of the backed-up target) from the RedisBackup it names."""
    return replace(
        restore,
        storage=restore.storage or backup.storage,
        source_target=restore.source_target
        or catalog_target(namespace, backup.target, backup_name),
    )


def restore_source_target(restore: RestoreSpec, namespace: str) -> str:
    """The store folder a restore reads from: ``sourceTarget``, else this
    namespace and the target's name (call :func:`with_backup_source` first
    for a ``fromBackup`` restore)."""
    if restore.source_target is not None:
        return restore.source_target
    if restore.target.name is None:
        raise SpecError("spec.sourceTarget", "is required with a target selector")
    return validate_target(f"{namespace}/{restore.target.name}")


def catalog_target(namespace: str, target: TargetSpec, resource_name: str) -> str:
    """The ``<namespace>/<name>`` path a target's backups live under in the
    store: the Redis target's name, or the resource's own name when the
    target is a label selector."""
    return validate_target(f"{namespace}/{target.name or resource_name}")


def parse_target(spec: Mapping[str, Any], p: str) -> TargetSpec:
    cluster = opt_str(spec, "redisClusterName", p)
    raw = spec.get("target")
    if (cluster is None) == (raw is None):
        raise SpecError(p, "set exactly one of redisClusterName or target")
    if cluster is not None:
        check_name(cluster, f"{p}.redisClusterName", DNS_SUBDOMAIN)
        return TargetSpec(name=cluster)
    tp = f"{p}.target"
    raw = obj(raw, tp)
    name = opt_str(raw, "name", tp)
    selector = raw.get("selector")
    if (name is None) == (selector is None):
        raise SpecError(tp, "set exactly one of name or selector")
    if name is not None:
        check_name(name, f"{tp}.name", DNS_SUBDOMAIN)
    if selector is not None:
        selector = obj(selector, f"{tp}.selector")
        if not selector.get("matchLabels") and not selector.get("matchExpressions"):
            raise SpecError(f"{tp}.selector", "set matchLabels or matchExpressions")
    kind = raw.get("kind")
    if kind is not None:
        kind = enum(raw, "kind", tp, TARGET_KINDS)
        if name is None:
            raise SpecError(f"{tp}.kind", "kind goes with target.name, not with a selector")
    tls = None
    if raw.get("tls") is not None:
        tlp = f"{tp}.tls"
        raw_tls = obj(raw["tls"], tlp)
        tls = TLSSpec(
            enabled=opt_bool(raw_tls, "enabled", tlp, True),
            ca_secret=_opt_secret(raw_tls, "caSecret", tlp),
            insecure_skip_verify=opt_bool(raw_tls, "insecureSkipVerify", tlp, False),
        )
    return TargetSpec(
        name=name,
        kind=kind,
        selector=dict(selector) if selector is not None else None,
        port=opt_int(raw, "port", tp, minimum=1, maximum=65535),
        password_secret=_opt_secret(raw, "passwordSecret", tp),
        tls=tls,
    )


def parse_storage(raw: Any, p: str) -> Storage:
    if raw is None:
        raise SpecError(p, "is required: set one of s3, azureBlob, gcs")
    raw = obj(raw, p)
    present = [b for b in STORAGE_BACKENDS if raw.get(b) is not None]
    if len(present) != 1:
        raise SpecError(p, "set exactly one of s3, azureBlob, gcs")
    backend = present[0]
    bp = f"{p}.{backend}"
    d = obj(raw[backend], bp)
    endpoint = opt_endpoint(d, bp)
    prefix = (opt_str(d, "prefix", bp) or "").strip("/")
    key = opt_str(d, "key", bp)
    if backend == "s3":
        ak = _opt_secret(d, "accessKeyIdSecret", bp)
        sk = _opt_secret(d, "secretAccessKeySecret", bp)
        if (ak is None) != (sk is None):
            raise SpecError(
                bp,
                "set both accessKeyIdSecret and secretAccessKeySecret, or neither "
                "(to use the pod's own identity)",
            )
        return S3Storage(
            bucket=req_str(d, "bucket", bp),
            region=opt_str(d, "region", bp),
            endpoint=endpoint,
            prefix=prefix,
            key=key,
            access_key_id_secret=ak,
            secret_access_key_secret=sk,
        )
    if backend == "azureBlob":
        key_secret = _opt_secret(d, "storageAccountKeySecret", bp)
        conn = _opt_secret(d, "connectionStringSecret", bp)
        account = opt_str(d, "storageAccount", bp)
        if key_secret is not None and conn is not None:
            raise SpecError(bp, "set storageAccountKeySecret or connectionStringSecret, not both")
        if conn is None and account is None:
            raise SpecError(bp, "storageAccount is required unless connectionStringSecret is set")
        return AzureBlobStorage(
            container=req_str(d, "container", bp),
            storage_account=account,
            storage_account_key_secret=key_secret,
            connection_string_secret=conn,
            endpoint=endpoint,
            prefix=prefix,
            key=key,
        )
    return GCSStorage(
        bucket=req_str(d, "bucket", bp),
        credentials_secret=_opt_secret(d, "credentialsSecret", bp),
        endpoint=endpoint,
        prefix=prefix,
        key=key,
    )


def parse_retention(raw: Any, p: str) -> RetentionSpec:
    if raw is None:
        return RetentionSpec()
    raw = obj(raw, p)
    values: dict[str, Any] = {}
    for camel, snake in RETENTION_FIELDS.items():
        if camel == "keepWithin":
            within = opt_str(raw, camel, p)
            if within is not None and not KEEP_WITHIN_PATTERN.match(within):
                raise SpecError(
                    f"{p}.keepWithin",
                    f"{within!r} is not a duration: use y, m, d, h as in 30d, 36h, 1y6m",
                )
            values[snake] = within
        else:
            values[snake] = opt_int(raw, camel, p, minimum=0)
    schedule = opt_str(raw, "schedule", p)
    retention = RetentionSpec(**values)
    if schedule is not None:
        if retention.empty:
            raise SpecError(f"{p}.schedule", "needs at least one keep rule: nothing to prune")
        retention = replace(retention, schedule=parse_cron(schedule, f"{p}.schedule"))
    return retention


def parse_job_options(spec: Mapping[str, Any], p: str) -> JobOptions:
    tolerations = spec.get("tolerations") or []
    if not isinstance(tolerations, list) or not all(isinstance(t, Mapping) for t in tolerations):
        raise SpecError(f"{p}.tolerations", "must be a list of tolerations")
    node_selector = spec.get("nodeSelector") or {}
    if not isinstance(node_selector, Mapping) or not all(
        isinstance(v, str) for v in node_selector.values()
    ):
        raise SpecError(f"{p}.nodeSelector", "must map label names to strings")
    resources = obj(spec.get("resources") or {}, f"{p}.resources")
    sa = opt_str(spec, "serviceAccountName", p)
    if sa is not None:
        check_name(sa, f"{p}.serviceAccountName", DNS_SUBDOMAIN)
    return JobOptions(
        backoff_limit=int_default(spec, "backoffLimit", p, JobOptions.backoff_limit),
        active_deadline_seconds=opt_int(spec, "activeDeadlineSeconds", p, minimum=1),
        successful_jobs_history_limit=int_default(
            spec, "successfulJobsHistoryLimit", p, JobOptions.successful_jobs_history_limit
        ),
        failed_jobs_history_limit=int_default(
            spec, "failedJobsHistoryLimit", p, JobOptions.failed_jobs_history_limit
        ),
        resources=dict(resources),
        image=opt_str(spec, "image", p),
        node_selector=dict(node_selector),
        tolerations=tuple(dict(t) for t in tolerations),
        service_account_name=sa,
        deadlines=_deadlines(spec, p),
        start_timeout_seconds=opt_int(spec, "startTimeoutSeconds", p, minimum=1)
        or DEFAULT_START_TIMEOUT_SECONDS,
    )


def _deadlines(spec: Mapping[str, Any], p: str) -> dict[str, int]:
    raw = obj(spec.get("deadlines") or {}, f"{p}.deadlines")
    unknown = sorted(set(raw) - set(KINDS))
    if unknown:
        raise SpecError(
            f"{p}.deadlines.{unknown[0]}",
            f"is not a Job kind: use {', '.join(KINDS)}",
        )
    out: dict[str, int] = {}
    for kind in KINDS:
        value = opt_int(raw, kind, f"{p}.deadlines", minimum=1)
        if value is not None:
            out[kind] = value
    return out


# --- store URL, secret references ---------------------------------------------


def _backend_name(storage: Storage) -> str:
    if isinstance(storage, S3Storage):
        return "s3"
    if isinstance(storage, AzureBlobStorage):
        return "azureBlob"
    return "gcs"


def store_url(storage: Storage) -> str:
    """``s3://bucket/prefix``, ``az://container/prefix`` or ``gs://bucket/prefix``."""
    if isinstance(storage, S3Storage):
        base = f"s3://{storage.bucket}"
    elif isinstance(storage, AzureBlobStorage):
        base = f"az://{storage.container}"
    else:
        base = f"gs://{storage.bucket}"
    return f"{base}/{storage.prefix}" if storage.prefix else base


def _opt_secret(d: Mapping[str, Any], k: str, p: str) -> SecretRef | None:
    v = d.get(k)
    if v is None:
        return None
    sp = f"{p}.{k}"
    v = obj(v, sp)
    name, key = opt_str(v, "name", sp), opt_str(v, "key", sp)
    if name is None or key is None:
        raise SpecError(sp, "a secret reference needs both name and key")
    check_name(name, f"{sp}.name", DNS_SUBDOMAIN)
    return SecretRef(name=name, key=key)


__all__ = [
    "BACKUP_PHASES",
    "COMPRESSIONS",
    "CONCURRENCY_POLICIES",
    "GROUP_VERSION",
    "METHODS",
    "RESTORE_PHASES",
    "RETENTION_FIELDS",
    "TARGET_KINDS",
    "AzureBlobStorage",
    "BackupSpec",
    "GCSStorage",
    "JobOptions",
    "RestoreSpec",
    "RetentionSpec",
    "S3Storage",
    "SecretRef",
    "Storage",
    "TLSSpec",
    "TargetSpec",
    "catalog_target",
    "parse_backup",
    "parse_restore",
    "parse_storage",
    "restore_source_target",
    "store_url",
    "with_backup_source",
]
