"""Job manifests for backups, pruning and restore staging (pure).

Every function returns a plain ``dict`` ready for the Kubernetes API (never
YAML text), built from a parsed spec and the facts the controller resolved
(which pod, which node, which PVC). The Jobs run the same image's CLI;
credentials reach them only as ``secretKeyRef`` env or Secret volumes, so
no secret value is ever part of a manifest. Ownership is passed in as an
ownerReference dict (or added later with ``kopf.adopt``).

The CLI contract these Jobs rely on::

    backupctl run --redis redis://HOST:PORT --to STORE --target NS/NAME
        --node-name POD --method bgsave|replication --compression zstd|gzip|none
        [--data-dir /data] --json --termination-log /dev/termination-log
    backupctl run ... --method replication --cluster [--prefer-replica]
        [--shard I/N --id backup-YYYYMMDD-HHMMSS --owner NAME]
    backupctl prune STORE --target NS/NAME --timezone TZ [--keep-last N ...
        --keep-within D] --json --termination-log /dev/termination-log
    backupctl restore STORE ID|latest --target NS/NAME [--node POD]
        --to-dir /data --appendonly auto --json --termination-log /dev/termination-log
    backupctl restore STORE ID|latest --target NS/NAME --dry-run ...
    backupctl restore STORE ID --to-dir /data --stage-only | --swap | --discard-staged ...
    backupctl check-redis --redis URL [--redis URL...] [--expect-keys N --wait S] ...
    backupctl quiesce-redis --redis URL --state-file FILE [--resume] ...

with ``REDIS_PASSWORD`` and the store's variables (see
:func:`backupctl.controller.spec.storage_env`) in the environment; TLS is
``rediss://HOST:PORT?ssl_ca_certs=FILE`` (``&ssl_cert_reqs=none`` to skip
verification). ``--termination-log`` receives the JSON result, which the
controller reads from the pod's termination message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from backupctl.controller.identity import RunAs, probe_args
from backupctl.controller.job_env import (
    secret_volume,
    storage_env,
    storage_mounts,
    storage_volumes,
)
from backupctl.controller.job_limits import BACKUP, PROBE, STAGE
from backupctl.controller.job_pod import (
    CONTAINER_NAME,
    DATA_DIR,
    DEFAULT_RESOURCES,
    TERMINATION_LOG,
    data_mount,
    job,
    pin_to_node,
)
from backupctl.controller.schedule import bounded_name, job_name, slot_stamp
from backupctl.controller.spec import (
    BackupSpec,
    JobOptions,
    RestoreSpec,
    SecretRef,
    TLSSpec,
    catalog_target,
    restore_source_target,
    store_url,
)
from backupctl.controller.spec_crypto import backup_keys, restore_keys
from backupctl.store.catalog import new_backup_id

TLS_CA_DIR = "/var/run/secrets/backupctl/redis-tls"
TLS_CA_VOLUME = "redis-tls-ca"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_BACKUP = "backupctl.dev/backup"
LABEL_RESTORE = "backupctl.dev/restore"
LABEL_SLOT = "backupctl.dev/slot"
#: On the Jobs of a cluster backed up one Job per shard: the run they belong
#: to (its name, :func:`backupctl.controller.schedule.job_name`) and ``<I>-of-<N>``.
LABEL_RUN = "backupctl.dev/run"
LABEL_SHARD = "backupctl.dev/shard"
ANNOTATION_TARGET_POD = "backupctl.dev/target-pod"


@dataclass(frozen=True)
class TargetPod:
    """One Redis pod as the controller found it.

    ``port``, ``password_secret`` and ``tls`` are what the pod or the
    operator resource running it says; what the spec's ``target`` sets
    explicitly wins over them (:func:`backup_job`). ``node_name`` and
    ``data_pvc`` are needed for ``method: bgsave``; ``data_sub_path`` is the
    subPath of the data mount in the Redis container, if any; ``run_as`` the
    Redis container's effective user and groups (Jobs reading its volume run
    as them); ``read_write_once_pod``: the data PVC's access mode is
    ``ReadWriteOncePod`` (no second pod can mount it).
    """

    name: str
    host: str
    port: int = 6379
    node_name: str | None = None
    data_pvc: str | None = None
    data_sub_path: str | None = None
    password_secret: SecretRef | None = None
    tls: TLSSpec | None = None
    run_as: RunAs | None = None
    read_write_once_pod: bool = False


def owner_reference(api_version: str, kind: str, name: str, uid: str) -> dict[str, Any]:
    """An ownerReference that makes the owner's deletion remove the Job."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def label_value(value: str) -> str:
    """``value`` as a valid label value (at most 63 characters)."""
    return value if len(value) <= 63 else bounded_name(value)


def backup_labels(backup_name: str, component: str, slot: datetime | None = None) -> dict[str, str]:
    """Labels on Jobs made for a RedisBackup; select them with
    ``backupctl.dev/backup=<name>`` (and ``app.kubernetes.io/component``)."""
    labels = _base_labels(component)
    labels[LABEL_BACKUP] = label_value(backup_name)
    if slot is not None:
        labels[LABEL_SLOT] = slot_stamp(slot)
    return labels


def backup_job(
    spec: BackupSpec,
    *,
    name: str,
    namespace: str,
    backup_name: str,
    owner: Mapping[str, Any] | None,
    target_pod: TargetPod,
    slot: datetime,
    image: str,
    ttl_seconds_after_finished: int | None = None,
    cluster: bool = False,
    shard: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The Job that backs up ``target_pod`` for ``slot``.

    ``name`` comes from :func:`backupctl.controller.schedule.job_name`. ``image`` is the
    controller's own image, used unless the spec sets one. With ``method:
    bgsave`` the pod's data PVC is mounted read-only at ``/data`` and the Job
    is pinned to the pod's node; ``method: replication`` mounts no data.
    ``cluster``: ``target_pod`` is one node of a Redis Cluster; the Job backs
    up every shard from it (``run --cluster``) over the replication protocol,
    since one Job cannot mount every shard's volume. ``shard`` ``(I, N)``
    (with ``cluster``): the Job backs up only shard I of N (named with
    :func:`backupctl.controller.schedule.shard_job_name`); the N Jobs of a slot write
    one backup, whose id is the slot's (``backup-<slot>``), owned by the
    RedisBackup's name, and carry the labels ``backupctl.dev/run`` and
    ``backupctl.dev/shard``. Which node serves shard I is found out by the
    Job from Redis (primaries move on failover), never from pod names.
    A Job that mounts the data volume runs as ``target_pod.run_as``.
    """
    if shard is not None and not cluster:
        raise ValueError("a shard Job backs up one shard of a Redis Cluster: pass cluster=True")
    target = spec.target
    pod = replace(
        target_pod,
        port=target.port or target_pod.port,
        password_secret=target.password_secret or target_pod.password_secret,
        tls=target.tls or target_pod.tls,
    )
    args = [
        "run",
        "--redis",
        _redis_url(pod),
        "--to",
        store_url(spec.storage),
        "--target",
        catalog_target(namespace, spec.target, backup_name),
        "--node-name",
        pod.name,
        "--method",
        "replication" if cluster else spec.method,
        "--compression",
        spec.compression,
    ]
    if cluster:
        args += ["--cluster", *(["--prefer-replica"] if spec.prefer_replica else [])]
    labels = backup_labels(backup_name, "backup", slot)
    if shard is not None:
        index, count = shard
        args += ["--shard", f"{index}/{count}", "--id", new_backup_id(slot), "--owner", backup_name]
        labels[LABEL_RUN] = job_name(backup_name, slot)
        labels[LABEL_SHARD] = f"{index}-of-{count}"
    env: list[dict[str, Any]] = []
    if pod.password_secret is not None:
        ref = pod.password_secret
        env.append(
            {
                "name": "REDIS_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
            }
        )
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    affinity: dict[str, Any] | None = None
    run_as: RunAs | None = None
    if spec.method == "bgsave" and not cluster:
        if not pod.node_name or not pod.data_pvc:
            raise ValueError(f"method bgsave needs the node and data PVC of pod {pod.name}")
        run_as = pod.run_as
        volumes.append(
            {"name": "data", "persistentVolumeClaim": {"claimName": pod.data_pvc, "readOnly": True}}
        )
        mounts.append(data_mount(pod.data_sub_path, read_only=True))
        args += ["--data-dir", DATA_DIR]
        affinity = pin_to_node(pod.node_name)
    if pod.tls is not None and pod.tls.enabled and pod.tls.ca_secret is not None:
        volumes.append(secret_volume(TLS_CA_VOLUME, pod.tls.ca_secret))
        mounts.append({"name": TLS_CA_VOLUME, "mountPath": TLS_CA_DIR, "readOnly": True})
    keys = backup_keys(spec.encryption)
    args, volumes, mounts = [*args, *keys.args], [*volumes, *keys.volumes], [*mounts, *keys.mounts]
    env += keys.env
    return job(
        name=name,
        namespace=namespace,
        owner=owner,
        labels=labels,
        annotations={ANNOTATION_TARGET_POD: pod.name},
        options=spec.job,
        image=spec.job.image or image,
        args=args,
        env=env + storage_env(spec.storage),
        volumes=volumes + storage_volumes(spec.storage),
        mounts=mounts + storage_mounts(spec.storage),
        affinity=affinity,
        node_selector=spec.job.node_selector,
        ttl_seconds_after_finished=ttl_seconds_after_finished,
        kind=BACKUP,
        deadline_fallback=spec.job.active_deadline_seconds,
        run_as=run_as,
        run_as_of=pod.name,
    )


def restore_stage_job(
    spec: RestoreSpec,
    *,
    name: str,
    namespace: str,
    restore_name: str,
    owner: Mapping[str, Any] | None,
    pvc: str,
    node_name: str,
    image: str,
    source_target: str | None = None,
    backup: str | None = None,
    source_node: str | None = None,
    to_dir: str = DATA_DIR,
    data_sub_path: str | None = None,
    run_as: RunAs | None = None,
    ttl_seconds_after_finished: int | None = None,
) -> dict[str, Any]:
    """The Job that downloads, verifies and stages a backup into one data
    PVC, mounted read-write at ``/data`` and pinned to ``node_name``
    (``backupctl restore --to-dir``: the archive is verified before the
    directory is touched, and the previous data is kept beside it).

    ``spec.storage`` must be resolved (see
    :func:`backupctl.controller.spec.with_backup_source`); ``source_target`` defaults
    to :func:`backupctl.controller.spec.restore_source_target`. ``backup`` defaults to the
    spec's (an id or ``latest``); ``source_node`` picks the archive of that
    node in a multi-node backup. Run it as the Redis container's user and
    groups (``run_as``) so Redis can later write the files.
    """
    if spec.storage is None:
        raise ValueError("the restore's storage is not resolved (fromBackup)")
    args = [
        "restore",
        store_url(spec.storage),
        backup or spec.backup,
        "--target",
        source_target or restore_source_target(spec, namespace),
    ]
    if source_node is not None:
        args += ["--node", source_node]
    args += ["--to-dir", to_dir, "--appendonly", "auto"]
    keys = restore_keys(spec.decryption, to_dir=True)
    args += keys.args
    env = [*storage_env(spec.storage), *keys.env]
    labels = _base_labels("restore")
    labels[LABEL_RESTORE] = label_value(restore_name)
    return job(
        name=name,
        namespace=namespace,
        owner=owner,
        labels=labels,
        annotations={},
        options=spec.job,
        image=spec.job.image or image,
        args=args,
        env=env,
        volumes=[
            {"name": "data", "persistentVolumeClaim": {"claimName": pvc}},
            *storage_volumes(spec.storage),
            *keys.volumes,
        ],
        mounts=[
            data_mount(data_sub_path, read_only=False),
            *storage_mounts(spec.storage),
            *keys.mounts,
        ],
        affinity=pin_to_node(node_name),
        node_selector={},
        ttl_seconds_after_finished=ttl_seconds_after_finished,
        kind=STAGE,
        deadline_fallback=spec.job.active_deadline_seconds,
        run_as=run_as,
    )


def restore_job(
    spec: RestoreSpec,
    *,
    name: str,
    namespace: str,
    restore_name: str,
    owner: Mapping[str, Any] | None,
    image: str,
    args: list[str],
    storage: bool = False,
    redis: TargetPod | None = None,
    data: TargetPod | None = None,
    run_as: RunAs | None = None,
    kind: str = STAGE,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """Any other Job of a RedisRestore (resolving the backup, checking,
    quiescing and verifying Redis, swapping or discarding a staged copy):
    ``backupctl <args>`` with the store's env and volumes when ``storage``,
    the Redis password (``REDIS_PASSWORD`` by ``secretKeyRef``) and TLS CA
    of ``redis`` when given (build its URLs with :func:`redis_url`), and
    ``data``'s PVC at ``/data``, pinned to its node, when given (run it as
    the Redis container's user and groups, ``run_as``, so Redis can write the
    files it leaves). ``kind`` picks the deadline
    (:mod:`backupctl.controller.job_limits`); ``command`` replaces the whole
    command line (the volume-owner probe), with no ``--json`` added."""
    env: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    affinity = None
    if storage:
        if spec.storage is None:
            raise ValueError("the restore's storage is not resolved (fromBackup)")
        env += storage_env(spec.storage)
        volumes += storage_volumes(spec.storage)
        mounts += storage_mounts(spec.storage)
        if args[:1] == ["restore"] and command is None:  # which backup, and its identity
            keys = restore_keys(spec.decryption, to_dir="--to-dir" in args)
            args = [*args, *keys.args]
            volumes, mounts = [*volumes, *keys.volumes], [*mounts, *keys.mounts]
            env += keys.env
    if redis is not None:
        pod = _with_target(redis, spec)
        if pod.password_secret is not None:
            ref = pod.password_secret
            env.append(
                {
                    "name": "REDIS_PASSWORD",
                    "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
                }
            )
        if pod.tls is not None and pod.tls.enabled and pod.tls.ca_secret is not None:
            volumes.append(secret_volume(TLS_CA_VOLUME, pod.tls.ca_secret))
            mounts.append({"name": TLS_CA_VOLUME, "mountPath": TLS_CA_DIR, "readOnly": True})
    if data is not None:
        if not data.node_name or not data.data_pvc:
            raise ValueError(f"pod {data.name} has no data PVC or node")
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": data.data_pvc}})
        mounts.append(data_mount(data.data_sub_path, read_only=False))
        affinity = pin_to_node(data.node_name)
    labels = _base_labels("restore")
    labels[LABEL_RESTORE] = label_value(restore_name)
    return job(
        name=name,
        namespace=namespace,
        owner=owner,
        labels=labels,
        annotations={},
        options=spec.job,
        image=spec.job.image or image,
        args=args,
        env=env,
        volumes=volumes,
        mounts=mounts,
        affinity=affinity,
        node_selector={} if data is not None else spec.job.node_selector,
        ttl_seconds_after_finished=None,
        kind=kind,
        deadline_fallback=spec.job.active_deadline_seconds if kind == STAGE else None,
        run_as=run_as,
        command=command,
    )


def probe_job(
    options: JobOptions,
    *,
    name: str,
    namespace: str,
    owner: Mapping[str, Any] | None,
    labels: dict[str, str],
    pod: TargetPod,
    image: str,
) -> dict[str, Any]:
    """The tiny Job that reads the owner of ``pod``'s data directory (its
    termination message: ``{"ok":true,"uid":U,"gid":G}``), for a Redis whose
    user no manifest sets. It runs as the image's non-root user (a stat()
    needs no rights on the folder), mounts the volume read-only, pinned to
    the pod's node."""
    if not pod.node_name or not pod.data_pvc:
        raise ValueError(f"pod {pod.name} has no data PVC or node")
    return job(
        name=name,
        namespace=namespace,
        owner=owner,
        labels=labels,
        annotations={ANNOTATION_TARGET_POD: pod.name},
        options=options,
        image=options.image or image,
        args=[],
        env=[],
        volumes=[
            {"name": "data", "persistentVolumeClaim": {"claimName": pod.data_pvc, "readOnly": True}}
        ],
        mounts=[data_mount(pod.data_sub_path, read_only=True)],
        affinity=pin_to_node(pod.node_name),
        node_selector={},
        ttl_seconds_after_finished=None,
        kind=PROBE,
        command=probe_args(DATA_DIR, TERMINATION_LOG),
    )


def redis_url(pod: TargetPod, spec: RestoreSpec | BackupSpec | None = None) -> str:
    """``redis://HOST:PORT`` (``rediss://...`` with TLS) of ``pod`` inside a Job;
    the spec's explicit ``target`` port/TLS win over what the pod says."""
    return _redis_url(_with_target(pod, spec) if spec is not None else pod)


def _with_target(pod: TargetPod, spec: RestoreSpec | BackupSpec | None) -> TargetPod:
    if spec is None:
        return pod
    target = spec.target
    return replace(
        pod,
        port=target.port or pod.port,
        password_secret=target.password_secret or pod.password_secret,
        tls=target.tls or pod.tls,
    )


# --- shared pieces -----------------------------------------------------------


def _base_labels(component: str) -> dict[str, str]:
    return {
        LABEL_NAME: "backupctl",
        LABEL_COMPONENT: component,
        LABEL_MANAGED_BY: "backupctl",
    }


def _redis_url(pod: TargetPod) -> str:
    host = f"[{pod.host}]" if ":" in pod.host and not pod.host.startswith("[") else pod.host
    tls = pod.tls if pod.tls is not None and pod.tls.enabled else None
    if tls is None:
        return f"redis://{host}:{pod.port}"
    query = []
    if tls.ca_secret is not None:
        query.append(f"ssl_ca_certs={TLS_CA_DIR}/{tls.ca_secret.key}")
    if tls.insecure_skip_verify:
        query.append("ssl_cert_reqs=none")
    return f"rediss://{host}:{pod.port}" + ("?" + "&".join(query) if query else "")


__all__ = [
    "CONTAINER_NAME",
    "DATA_DIR",
    "DEFAULT_RESOURCES",
    "TERMINATION_LOG",
    "TargetPod",
    "backup_job",
    "backup_labels",
    "label_value",
    "owner_reference",
    "probe_job",
    "redis_url",
    "restore_job",
    "restore_stage_job",
]
