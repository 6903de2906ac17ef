"""spec.py: parsing RedisBackup/RedisRestore specs, defaults, errors, helpers."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from backupctl.controller import spec as specmod
from backupctl.controller.job_env import (
    GCS_CREDENTIALS_DIR,
    retention_args,
    storage_env,
    storage_mounts,
    storage_volumes,
)
from backupctl.controller.spec import (
    AzureBlobStorage,
    GCSStorage,
    RetentionSpec,
    S3Storage,
    SecretRef,
    parse_backup,
    parse_restore,
    store_url,
)
from backupctl.controller.spec_fields import SpecError

S3 = {
    "bucket": "my-redis-backups",
    "region": "us-east-1",
    "endpoint": "https://s3.amazonaws.com",
    "accessKeyIdSecret": {"name": "aws-credentials", "key": "access-key-id"},
    "secretAccessKeySecret": {"name": "aws-credentials", "key": "secret-access-key"},
}


def backup(**spec: Any) -> dict[str, Any]:
    return {"redisClusterName": "redis-cluster", "storage": {"s3": dict(S3)}, **spec}


def test_pure_module_imports_no_kopf_kubernetes_redis_or_cloud_sdk() -> None:
    for name in ("spec", "spec_fields", "job_env", "schedule", "manifests"):
        source = Path(specmod.__file__).with_name(f"{name}.py").read_text()
        imported = {
            (n.module or "") if isinstance(n, ast.ImportFrom) else a.name
            for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.Import | ast.ImportFrom)
            for a in n.names
        }
        roots = {m.split(".")[0] for m in imported}
        assert not roots & {"kopf", "kubernetes", "redis", "boto3", "botocore", "azure", "google"}


def test_seed_backup_parses_with_the_crd_defaults() -> None:
    b = parse_backup(backup(schedule="0 2 * * *", retention={"keepDaily": 7, "keepWeekly": 4}))
    assert b.target == specmod.TargetSpec(name="redis-cluster")
    assert b.storage == S3Storage(
        bucket="my-redis-backups",
        region="us-east-1",
        endpoint="https://s3.amazonaws.com",
        access_key_id_secret=SecretRef("aws-credentials", "access-key-id"),
        secret_access_key_secret=SecretRef("aws-credentials", "secret-access-key"),
    )
    assert b.schedule == "0 2 * * *" and b.scheduled
    assert (b.time_zone, b.suspend, b.concurrency_policy) == ("UTC", False, "Forbid")
    assert (b.method, b.compression, b.prefer_replica) == ("bgsave", "zstd", False)
    assert b.starting_deadline_seconds is None
    assert b.retention == RetentionSpec(keep_daily=7, keep_weekly=4)
    assert b.job == specmod.JobOptions()
    assert b.job.backoff_limit == 2


def test_a_backup_without_schedule_is_one_off() -> None:
    assert not parse_backup(backup()).scheduled


def test_cron_macros_are_expanded_and_whitespace_normalised() -> None:
    assert parse_backup(backup(schedule="@daily")).schedule == "0 0 * * *"
    assert parse_backup(backup(schedule="@HOURLY")).schedule == "0 * * * *"
    assert parse_backup(backup(schedule="  0  2 * *   MON-FRI ")).schedule == "0 2 * * MON-FRI"


def test_spec_values_override_defaults() -> None:
    b = parse_backup(
        backup(
            schedule="*/5 * * * *",
            timeZone="Europe/Paris",
            suspend=True,
            concurrencyPolicy="Replace",
            startingDeadlineSeconds=300,
            method="replication",
            compression="none",
            preferReplica=True,
            backoffLimit=0,
            activeDeadlineSeconds=600,
            successfulJobsHistoryLimit=0,
            failedJobsHistoryLimit=5,
            resources={"limits": {"memory": "1Gi"}},
            image="example/backupctl:dev",
            nodeSelector={"pool": "backup"},
            tolerations=[{"key": "backup", "operator": "Exists"}],
            serviceAccountName="backup-sa",
        )
    )
    assert (b.time_zone, b.suspend, b.concurrency_policy) == ("Europe/Paris", True, "Replace")
    assert b.starting_deadline_seconds == 300
    assert (b.method, b.compression, b.prefer_replica) == ("replication", "none", True)
    j = b.job
    assert (j.backoff_limit, j.active_deadline_seconds) == (0, 600)
    assert (j.successful_jobs_history_limit, j.failed_jobs_history_limit) == (0, 5)
    assert j.resources == {"limits": {"memory": "1Gi"}} and j.image == "example/backupctl:dev"
    assert j.node_selector == {"pool": "backup"} and j.service_account_name == "backup-sa"
    assert j.tolerations == ({"key": "backup", "operator": "Exists"},)


def test_target_forms() -> None:
    t = parse_backup(
        {
            "target": {
                "kind": "RedisFailover",
                "name": "rf",
                "port": 6380,
                "passwordSecret": {"name": "redis", "key": "pw"},
                "tls": {"caSecret": {"name": "ca", "key": "ca.crt"}},
            },
            "storage": {"s3": S3},
        }
    ).target
    assert (t.kind, t.name, t.port) == ("RedisFailover", "rf", 6380)
    assert t.password_secret == SecretRef("redis", "pw")
    assert t.tls == specmod.TLSSpec(enabled=True, ca_secret=SecretRef("ca", "ca.crt"))
    sel = parse_backup(
        {"target": {"selector": {"matchLabels": {"app": "redis"}}}, "storage": {"s3": S3}}
    ).target
    assert sel.name is None and sel.selector == {"matchLabels": {"app": "redis"}}
    assert sel.port is None and sel.password_secret is None


@pytest.mark.parametrize(
    "storage, url",
    [
        ({"s3": {"bucket": "b"}}, "s3://b"),
        ({"s3": {"bucket": "b", "prefix": "/prod/redis/"}}, "s3://b/prod/redis"),
        ({"azureBlob": {"container": "c", "storageAccount": "acct"}}, "az://c"),
        ({"azureBlob": {"container": "c", "storageAccount": "a", "prefix": "x"}}, "az://c/x"),
        ({"gcs": {"bucket": "g"}}, "gs://g"),
        ({"gcs": {"bucket": "g", "prefix": "p/q"}}, "gs://g/p/q"),
    ],
)
def test_store_url(storage: dict[str, Any], url: str) -> None:
    assert store_url(parse_backup({"redisClusterName": "r", "storage": storage}).storage) == url


def _refs(env: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in env}


def test_s3_env_takes_credentials_by_secret_key_ref_only() -> None:
    env = storage_env(parse_backup(backup()).storage)
    assert _refs(env) == {
        "AWS_ACCESS_KEY_ID": {"secretKeyRef": {"name": "aws-credentials", "key": "access-key-id"}},
        "AWS_SECRET_ACCESS_KEY": {
            "secretKeyRef": {"name": "aws-credentials", "key": "secret-access-key"}
        },
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": "https://s3.amazonaws.com",
    }


def test_s3_without_secrets_uses_the_pods_identity() -> None:
    assert storage_env(S3Storage(bucket="b")) == []


def test_azure_env_with_account_key_or_connection_string() -> None:
    key = AzureBlobStorage(
        container="c",
        storage_account="acct",
        storage_account_key_secret=SecretRef("az", "key"),
        endpoint="http://127.0.0.1:10000/acct",
    )
    assert _refs(storage_env(key)) == {
        "AZURE_STORAGE_ACCOUNT": "acct",
        "AZURE_STORAGE_KEY": {"secretKeyRef": {"name": "az", "key": "key"}},
        "AZURE_STORAGE_ENDPOINT": "http://127.0.0.1:10000/acct",
    }
    conn = AzureBlobStorage(container="c", connection_string_secret=SecretRef("az", "conn"))
    assert _refs(storage_env(conn)) == {
        "AZURE_STORAGE_CONNECTION_STRING": {"secretKeyRef": {"name": "az", "key": "conn"}}
    }


def test_gcs_credentials_come_as_a_mounted_secret_file() -> None:
    gcs = GCSStorage(
        bucket="g", credentials_secret=SecretRef("gcs", "sa.json"), endpoint="http://127.0.0.1:9023"
    )
    assert _refs(storage_env(gcs)) == {
        "GOOGLE_APPLICATION_CREDENTIALS": f"{GCS_CREDENTIALS_DIR}/sa.json",
        "STORAGE_EMULATOR_HOST": "http://127.0.0.1:9023",
    }
    (volume,) = storage_volumes(gcs)
    assert volume["secret"]["secretName"] == "gcs"
    assert volume["secret"]["items"] == [{"key": "sa.json", "path": "sa.json"}]
    assert storage_mounts(gcs) == [
        {"name": volume["name"], "mountPath": GCS_CREDENTIALS_DIR, "readOnly": True}
    ]
    assert storage_volumes(GCSStorage(bucket="g")) == storage_mounts(GCSStorage(bucket="g")) == []


def test_retention_args_for_backupctl_prune() -> None:
    r = RetentionSpec(keep_last=3, keep_daily=7, keep_weekly=4, keep_yearly=0, keep_within="30d")
    assert retention_args(r) == [
        "--keep-last",
        "3",
        "--keep-daily",
        "7",
        "--keep-weekly",
        "4",
        "--keep-yearly",
        "0",
        "--keep-within",
        "30d",
    ]
    assert retention_args(RetentionSpec()) == [] and RetentionSpec().empty
    assert not r.empty


def test_restore_backup_reference_forms() -> None:
    base = {"redisClusterName": "redis-cluster"}
    with_key = {**S3, "key": "backup-20240101-120000.tar.gz"}
    assert parse_restore({**base, "storage": {"s3": with_key}}).backup == "backup-20240101-120000"
    r = parse_restore({**base, "storage": {"s3": S3}, "backupId": "backup-20240101-120000"})
    assert r.backup == "backup-20240101-120000" and r.from_backup is None
    latest = parse_restore({**base, "fromBackup": "nightly", "latest": True})
    assert latest.backup == "latest" and latest.storage is None
    nested = {**S3, "key": "redis/redis-cluster/backup-20240101-120000/"}
    assert parse_restore({**base, "storage": {"s3": nested}}).backup == "backup-20240101-120000"


def test_from_backup_takes_storage_and_store_path_from_the_backup() -> None:
    restore = parse_restore(
        {"redisClusterName": "new-cluster", "fromBackup": "nightly", "latest": True}
    )
    b = parse_backup(backup())
    resolved = specmod.with_backup_source(restore, b, namespace="redis", backup_name="nightly")
    assert resolved.storage == b.storage
    assert resolved.source_target == "redis/redis-cluster"
    explicit = parse_restore(
        {
            "redisClusterName": "x",
            "fromBackup": "nightly",
            "latest": True,
            "sourceTarget": "prod/redis-cluster",
        }
    )
    again = specmod.with_backup_source(explicit, b, namespace="redis", backup_name="nightly")
    assert again.source_target == "prod/redis-cluster"


def test_restore_source_target_defaults_to_this_namespace_and_target_name() -> None:
    r = parse_restore({"redisClusterName": "redis-cluster", "storage": {"s3": S3}, "latest": True})
    assert specmod.restore_source_target(r, "redis") == "redis/redis-cluster"
    moved = parse_restore(
        {
            "redisClusterName": "copy",
            "storage": {"s3": S3},
            "latest": True,
            "sourceTarget": "prod/redis-cluster",
        }
    )
    assert specmod.restore_source_target(moved, "staging") == "prod/redis-cluster"
    with pytest.raises(SpecError, match="sourceTarget: is required with a target selector"):
        parse_restore(
            {
                "target": {"selector": {"matchLabels": {"app": "r"}}},
                "storage": {"s3": S3},
                "latest": True,
            }
        )


def test_catalog_target_uses_the_resource_name_for_selector_targets() -> None:
    named = parse_backup(backup()).target
    selected = specmod.TargetSpec(selector={"matchLabels": {"app": "r"}})
    assert specmod.catalog_target("redis", named, "nightly") == "redis/redis-cluster"
    assert specmod.catalog_target("redis", selected, "nightly") == "redis/nightly"


@pytest.mark.parametrize(
    "spec, path, words",
    [
        ({"storage": {"s3": S3}}, "spec", "set exactly one of redisClusterName or target"),
        (backup(storage=None), "spec.storage", "is required"),
        (backup(storage={"s3": S3, "gcs": {"bucket": "g"}}), "spec.storage", "exactly one"),
        (backup(storage={"s3": {}}), "spec.storage.s3.bucket", "is required"),
        (backup(storage={"s3": "bucket"}), "spec.storage.s3", "must be an object"),
        (backup(schedule="0 2 * *"), "spec.schedule", "5-field"),
        (backup(schedule="61 * * * *"), "spec.schedule", "not a valid cron"),
        (backup(schedule="H 2 * * *"), "spec.schedule", "hashed (H)"),
        (backup(schedule=5), "spec.schedule", "must be a string"),
        (backup(timeZone="Europe/Nowhere"), "spec.timeZone", "unknown time zone"),
        (backup(timeZone="../../etc/passwd"), "spec.timeZone", "unknown time zone"),
        (backup(retention={"keepDaily": -1}), "spec.retention.keepDaily", "0 or more"),
        (backup(retention={"keepDaily": "7"}), "spec.retention.keepDaily", "whole number"),
        (backup(retention={"keepLast": True}), "spec.retention.keepLast", "whole number"),
        (backup(retention={"keepWithin": "2w"}), "spec.retention.keepWithin", "not a duration"),
        (backup(method="rsync"), "spec.method", "bgsave, replication"),
        (backup(suspend="yes"), "spec.suspend", "true or false"),
        (backup(startingDeadlineSeconds=0), "spec.startingDeadlineSeconds", "1 or more"),
        (backup(redisClusterName="Redis_Cluster"), "spec.redisClusterName", "Kubernetes name"),
        (
            backup(storage={"s3": {**S3, "accessKeyIdSecret": {"name": "aws"}}}),
            "spec.storage.s3.accessKeyIdSecret",
            "both name and key",
        ),
        (
            backup(storage={"s3": {**S3, "endpoint": "s3.amazonaws.com"}}),
            "spec.storage.s3.endpoint",
            "http(s) URL",
        ),
        (
            backup(
                redisClusterName=None,
                target={"selector": {"matchLabels": {"a": "b"}}, "kind": "Redis"},
            ),
            "spec.target.kind",
            "goes with target.name",
        ),
        (
            backup(redisClusterName=None, target={"name": "r", "port": 70000}),
            "spec.target.port",
            "65535 or less",
        ),
        (backup(tolerations={"key": "x"}), "spec.tolerations", "list"),
        (backup(nodeSelector={"a": 1}), "spec.nodeSelector", "strings"),
    ],
)
def test_backup_errors_name_the_field(spec: dict[str, Any], path: str, words: str) -> None:
    spec = {k: v for k, v in spec.items() if v is not None}
    with pytest.raises(SpecError) as err:
        parse_backup(spec)
    assert err.value.path == path
    assert words in err.value.message
    assert str(err.value) == f"{path}: {err.value.message}"


@pytest.mark.parametrize(
    "spec, path, words",
    [
        ({"redisClusterName": "r", "latest": True}, "spec", "storage or fromBackup"),
        ({"redisClusterName": "r", "fromBackup": "b"}, "spec", "choose the backup"),
        (
            {"redisClusterName": "r", "fromBackup": "b", "latest": True, "backupId": "backup-1"},
            "spec",
            "choose the backup",
        ),
        (
            {"redisClusterName": "r", "fromBackup": "b", "backupId": "yesterday"},
            "spec.backupId",
            "not a backup id",
        ),
        (
            {"redisClusterName": "r", "fromBackup": "b", "latest": True, "sourceTarget": "a//b"},
            "spec.sourceTarget",
            "not valid",
        ),
        ({"fromBackup": "b", "latest": True}, "spec", "redisClusterName or target"),
    ],
)
def test_restore_errors_name_the_field(spec: dict[str, Any], path: str, words: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_restore(spec)
    assert (err.value.path, words in err.value.message) == (path, True)


def test_latest_false_counts_as_not_chosen() -> None:
    r = parse_restore(
        {
            "redisClusterName": "r",
            "fromBackup": "b",
            "latest": False,
            "backupId": "backup-20240101-120000",
        }
    )
    assert r.backup == "backup-20240101-120000"


def test_spec_must_be_an_object() -> None:
    with pytest.raises(SpecError, match=r"^spec: must be an object$"):
        parse_backup(None)  # type: ignore[arg-type]


def test_the_crds_deadlines_and_start_timeout_match_spec_py() -> None:
    import yaml

    from backupctl.controller.job_limits import DEFAULT_START_TIMEOUT_SECONDS, KINDS

    root = Path(__file__).resolve().parents[2] / "crds"
    sections = []
    for name in ("redisbackup.yaml", "redisrestore.yaml"):
        crd = yaml.safe_load((root / name).read_text())
        props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        deadlines = props["properties"]["deadlines"]
        assert tuple(deadlines["properties"]) == KINDS
        start = props["properties"]["startTimeoutSeconds"]
        assert start["default"] == DEFAULT_START_TIMEOUT_SECONDS
        sections.append((deadlines, start))
    assert sections[0] == sections[1]
