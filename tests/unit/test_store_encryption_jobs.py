"""Issue 18, server-side options on Azure and GCS: ``spec.encryption.azureEncryptionScope``
and ``gcsKmsKeyName`` (controller.spec_crypto) parsed, checked against the store,
and passed to the backup and prune Jobs as the variables ``open_store`` reads
(plain names, not secrets); a field of another store is refused with the CRD's
wording."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from unit.test_encryption_jobs import assert_valid, container

from backupctl.controller.manifests import TargetPod, backup_job
from backupctl.controller.spec import parse_backup
from backupctl.controller.spec_crypto import AZURE_SCOPE_ENV, GCS_KMS_KEY_ENV
from backupctl.controller.spec_fields import SpecError
from backupctl.controller.store_jobs import prune_job, verify_job
from backupctl.store import backends

KMS = "projects/p1/locations/europe-west1/keyRings/backups/cryptoKeys/redis"
STORAGE = {
    "s3": {"s3": {"bucket": "b", "region": "us-east-1"}},
    "azureBlob": {"azureBlob": {"container": "backups", "storageAccount": "acct",
                                "storageAccountKeySecret": {"name": "az", "key": "key"}}},
    "gcs": {"gcs": {"bucket": "b", "credentialsSecret": {"name": "gcs", "key": "sa.json"}}},
}  # fmt: skip
POD = TargetPod(name="redis-0", host="redis-0.redis", port=6379, node_name="node-a",
                data_pvc="data-redis-0")  # fmt: skip
ALL = (AZURE_SCOPE_ENV, GCS_KMS_KEY_ENV)
SLOT = datetime(2024, 1, 1, 2, tzinfo=UTC)


def _spec(storage: str, **encryption: Any) -> Any:
    return parse_backup({"redisClusterName": "rc", "storage": STORAGE[storage],
                         "retention": {"keepLast": 3}, "verify": {"afterEachBackup": True},
                         "encryption": encryption})  # fmt: skip


def _env(job: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(job)["env"]}


def _jobs(spec: Any) -> dict[str, dict[str, Any]]:
    ns, owner, image = "redis", None, "backupctl:0"
    return {
        "backup": backup_job(spec, name="b", namespace=ns, backup_name="nightly", owner=owner,
                             target_pod=POD, slot=SLOT, image=image),
        "prune": prune_job(spec, name="p", namespace=ns, backup_name="nightly", owner=owner,
                           image=image),
        "drill": verify_job(spec, name="v", namespace=ns, backup_name="nightly", owner=owner,
                            backup_id="20240101T020000Z", image=image),
    }  # fmt: skip


def test_the_variables_are_the_ones_open_store_reads() -> None:
    assert AZURE_SCOPE_ENV == backends.AZURE_SCOPE_ENV
    assert GCS_KMS_KEY_ENV == backends.GCS_KMS_KEY_ENV


@pytest.mark.parametrize(
    ("storage", "encryption", "want"),
    [
        ("azureBlob", {"azureEncryptionScope": "backups-cmk"}, {AZURE_SCOPE_ENV: "backups-cmk"}),
        ("gcs", {"gcsKmsKeyName": KMS}, {GCS_KMS_KEY_ENV: KMS}),
        # beside age encryption and a lock: each still reaches the Job
        ("gcs", {"gcsKmsKeyName": KMS, "recipients": ["age1abc"],
                 "gcsRetention": {"mode": "Locked", "days": 3}}, {GCS_KMS_KEY_ENV: KMS}),
        # none set: neither variable
        ("azureBlob", {"recipients": ["age1abc"]}, {}),
    ],
)  # fmt: skip
def test_the_scope_and_the_kms_key_reach_the_backup_and_prune_jobs(
    storage: str, encryption: dict[str, Any], want: dict[str, str]
) -> None:
    jobs = _jobs(_spec(storage, **encryption))
    for kind in ("backup", "prune"):
        assert_valid(jobs[kind])
        env = _env(jobs[kind])
        assert {k: env[k] for k in ALL if k in env} == want, kind
    # a drill only reads: it writes nothing the store would encrypt
    assert not set(ALL) & set(_env(jobs["drill"]))


@pytest.mark.parametrize(
    ("storage", "encryption", "message"),
    [
        ("s3", {"azureEncryptionScope": "scope1"},
         "spec.encryption.azureEncryptionScope: the server-side encryption must match the "
         "store: s3ServerSide and s3CustomerKeySecret with storage.s3, azureEncryptionScope "
         "with storage.azureBlob, gcsKmsKeyName with storage.gcs"),
        ("azureBlob", {"gcsKmsKeyName": KMS},
         "spec.encryption.gcsKmsKeyName: the server-side encryption must match the store"),
        ("gcs", {"s3ServerSide": {"type": "AES256"}},
         "spec.encryption.s3ServerSide: the server-side encryption must match the store"),
        ("azureBlob", {"s3CustomerKeySecret": {"name": "c", "key": "k"}},
         "spec.encryption.s3CustomerKeySecret: the server-side encryption must match the store"),
        ("azureBlob", {"azureEncryptionScope": "Backups_CMK"},
         "spec.encryption.azureEncryptionScope: must be an encryption scope name: 3-63 "
         "lower-case letters, digits and single dashes"),
        ("azureBlob", {"azureEncryptionScope": "ab"}, "must be an encryption scope name"),
        ("azureBlob", {"azureEncryptionScope": "a--b"}, "must be an encryption scope name"),
        ("gcs", {"gcsKmsKeyName": "redis"},
         "spec.encryption.gcsKmsKeyName: must be a Cloud KMS key name: projects/PROJECT/"
         "locations/LOCATION/keyRings/RING/cryptoKeys/KEY"),
        ("gcs", {"gcsKmsKeyName": KMS + "/cryptoKeyVersions/1"}, "must be a Cloud KMS key name"),
        ("gcs", {"gcsKmsKeyName": 7}, "gcsKmsKeyName"),
    ],
)  # fmt: skip
def test_bad_or_mismatched_server_side_fields_are_refused(
    storage: str, encryption: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError, match=re.escape(message)):
        _spec(storage, **encryption)
