"""The Jobs of a RedisBackup that only talk to the store: prune and restore drills.

Why its own module: they share one shape (the store's credentials and any key
files, no Redis, no data volume, any node), which :func:`_store_job` builds once;
the Jobs that touch Redis or its data stay in :mod:`.manifests`.

Key files from a Secret are root's with mode 0440 (:mod:`.spec_crypto`); these
Jobs run as the image's non-root user, so a Job mounting one gets the pod
``fsGroup`` :data:`KEY_FILES_GROUP`: the kubelet gives the files that group
and adds it to the Job's groups, so the Job (and nobody else) reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from backupctl.controller.identity import RunAs
from backupctl.controller.job_env import (
    retention_args,
    storage_env,
    storage_mounts,
    storage_volumes,
)
from backupctl.controller.job_limits import BACKUP, PRUNE
from backupctl.controller.job_pod import job
from backupctl.controller.manifests import backup_labels
from backupctl.controller.spec import BackupSpec, catalog_target, store_url
from backupctl.controller.spec_crypto import JobKeys, drill_keys, has_secret_file, prune_keys

#: The ``fsGroup`` of a store Job that mounts a Secret key file: the image's
#: group (the Dockerfile's ``USER 10001:10001``); any gid would do, it is
#: added to the Job's groups.
KEY_FILES_GROUP = 10001


def prune_job(
    spec: BackupSpec,
    *,
    name: str,
    namespace: str,
    backup_name: str,
    owner: Mapping[str, Any] | None,
    image: str,
    slot: datetime | None = None,
    ttl_seconds_after_finished: int | None = None,
) -> dict[str, Any]:
    """The Job that applies ``spec.retention`` to the target's backups.
    Name it ``job_name(backup_name, slot, "prune")``. With a lock in
    ``spec.encryption``, each kept backup's lock is extended to now + its days
    (``--extend-lock-days``): a backup stays locked as long as retention keeps it."""
    if spec.retention.empty:
        raise ValueError("the spec has no retention rules: nothing to prune")
    args = [
        "prune",
        store_url(spec.storage),
        "--target",
        catalog_target(namespace, spec.target, backup_name),
        "--timezone",
        spec.time_zone,
        *retention_args(spec.retention),
        *_extend_lock_args(spec),
    ]
    return _store_job(
        spec,
        name=name,
        namespace=namespace,
        owner=owner,
        image=image,
        labels=backup_labels(backup_name, "prune", slot),
        args=args,
        kind=PRUNE,
        ttl_seconds_after_finished=ttl_seconds_after_finished,
        keys=prune_keys(spec.encryption),
    )


def _extend_lock_args(spec: BackupSpec) -> list[str]:
    lock = spec.encryption.lock if spec.encryption is not None else None
    return ["--extend-lock-days", str(lock[1])] if lock is not None else []


def verify_job(
    spec: BackupSpec,
    *,
    name: str,
    namespace: str,
    backup_name: str,
    backup_id: str,
    owner: Mapping[str, Any] | None,
    image: str,
    slot: datetime | None = None,
    ttl_seconds_after_finished: int | None = None,
) -> dict[str, Any]:
    """A restore drill: ``backupctl verify`` of backup ``backup_id`` of the
    target (every archive downloaded, every sha256 and RDB checked), with the
    keys of ``spec.verify.decryption`` as files (:func:`drill_keys`). Name it
    ``job_name(backup_name, slot, "verify")``; it has a backup Job's deadline."""
    args = [
        "verify",
        store_url(spec.storage),
        backup_id,
        "--target",
        catalog_target(namespace, spec.target, backup_name),
    ]
    return _store_job(
        spec,
        name=name,
        namespace=namespace,
        owner=owner,
        image=image,
        labels=backup_labels(backup_name, "verify", slot),
        args=args,
        kind=BACKUP,
        ttl_seconds_after_finished=ttl_seconds_after_finished,
        keys=drill_keys(spec.encryption, spec.verify.decryption if spec.verify else None),
    )


def _store_job(
    spec: BackupSpec,
    *,
    name: str,
    namespace: str,
    owner: Mapping[str, Any] | None,
    image: str,
    labels: dict[str, str],
    args: list[str],
    kind: str,
    ttl_seconds_after_finished: int | None,
    keys: JobKeys | None = None,
) -> dict[str, Any]:
    keys = keys or JobKeys()
    run_as = RunAs(fs_group=KEY_FILES_GROUP) if has_secret_file(keys) else None
    return job(
        name=name,
        namespace=namespace,
        owner=owner,
        labels=labels,
        annotations={},
        options=spec.job,
        image=spec.job.image or image,
        args=[*args, *keys.args],
        env=[*storage_env(spec.storage), *keys.env],
        volumes=[*storage_volumes(spec.storage), *keys.volumes],
        mounts=[*storage_mounts(spec.storage), *keys.mounts],
        affinity=None,
        node_selector=spec.job.node_selector,
        ttl_seconds_after_finished=ttl_seconds_after_finished,
        kind=kind,
        run_as=run_as,
    )


__all__ = ["prune_job", "verify_job"]
