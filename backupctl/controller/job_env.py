"""What a Job container needs from a spec (pure): env, volumes and flags.

The CLI in a Job reaches the store through environment variables: plain
settings (region, endpoint, account) as values, credentials only as
``valueFrom.secretKeyRef`` (:func:`storage_env`) or, for GCS, as a Secret
volume (:func:`storage_volumes`, :func:`storage_mounts`); the controller
never reads a Secret. :func:`retention_args` turns ``spec.retention`` into
``backupctl prune`` flags. :mod:`backupctl.controller.manifests` puts these
into the Jobs it builds.
"""

from __future__ import annotations

import re
from typing import Any

from backupctl.controller.spec import (
    RETENTION_FIELDS,
    AzureBlobStorage,
    GCSStorage,
    RetentionSpec,
    S3Storage,
    SecretRef,
    Storage,
)

#: Where a GCS credentials Secret is mounted in Job containers.
GCS_CREDENTIALS_DIR = "/var/run/secrets/backupctl/gcs"
GCS_CREDENTIALS_VOLUME = "gcs-credentials"


def storage_env(storage: Storage) -> list[dict[str, Any]]:
    """Container env for the CLI to reach the store. Credentials come only as
    ``valueFrom.secretKeyRef``; plain settings (region, endpoint, account)
    are values."""
    env: list[dict[str, Any]] = []
    if isinstance(storage, S3Storage):
        _secret_env(env, "AWS_ACCESS_KEY_ID", storage.access_key_id_secret)
        _secret_env(env, "AWS_SECRET_ACCESS_KEY", storage.secret_access_key_secret)
        if storage.region:
            # boto3 reads AWS_DEFAULT_REGION, other AWS tools AWS_REGION.
            env.append({"name": "AWS_REGION", "value": storage.region})
            env.append({"name": "AWS_DEFAULT_REGION", "value": storage.region})
        if storage.endpoint:
            env.append({"name": "AWS_ENDPOINT_URL", "value": storage.endpoint})
    elif isinstance(storage, AzureBlobStorage):
        if storage.storage_account:
            env.append({"name": "AZURE_STORAGE_ACCOUNT", "value": storage.storage_account})
        _secret_env(env, "AZURE_STORAGE_KEY", storage.storage_account_key_secret)
        _secret_env(env, "AZURE_STORAGE_CONNECTION_STRING", storage.connection_string_secret)
        if storage.endpoint:
            env.append({"name": "AZURE_STORAGE_ENDPOINT", "value": storage.endpoint})
    else:
        if storage.credentials_secret is not None:
            path = f"{GCS_CREDENTIALS_DIR}/{storage.credentials_secret.key}"
            env.append({"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": path})
        if storage.endpoint:
            env.append({"name": "STORAGE_EMULATOR_HOST", "value": storage.endpoint})
    return env


def storage_volumes(storage: Storage) -> list[dict[str, Any]]:
    """Pod volumes a storage needs: the GCS credentials Secret, nothing else."""
    if isinstance(storage, GCSStorage) and storage.credentials_secret is not None:
        return [secret_volume(GCS_CREDENTIALS_VOLUME, storage.credentials_secret)]
    return []


def secret_volume(name: str, ref: SecretRef) -> dict[str, Any]:
    """A pod volume holding one key of a Secret as a file named after the key."""
    return {
        "name": name,
        "secret": {
            "secretName": ref.name,
            "items": [{"key": ref.key, "path": ref.key}],
            "defaultMode": 0o440,
        },
    }


def storage_mounts(storage: Storage) -> list[dict[str, Any]]:
    """Container volumeMounts matching :func:`storage_volumes`."""
    return [
        {"name": v["name"], "mountPath": GCS_CREDENTIALS_DIR, "readOnly": True}
        for v in storage_volumes(storage)
    ]


def retention_args(retention: RetentionSpec) -> list[str]:
    """``backupctl prune`` flags: ``--keep-daily 7 --keep-weekly 4 ...``."""
    args: list[str] = []
    for camel, snake in RETENTION_FIELDS.items():
        value = getattr(retention, snake)
        if value is not None:
            flag = "--" + re.sub(r"(?<!^)([A-Z])", r"-\1", camel).lower()
            args += [flag, str(value)]
    return args


def _secret_env(env: list[dict[str, Any]], name: str, ref: SecretRef | None) -> None:
    if ref is not None:
        env.append(
            {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
        )


__all__ = [
    "GCS_CREDENTIALS_DIR",
    "retention_args",
    "secret_volume",
    "storage_env",
    "storage_mounts",
    "storage_volumes",
]
