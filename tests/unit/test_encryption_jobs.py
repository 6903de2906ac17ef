"""``spec.encryption`` / ``spec.decryption`` (controller.spec_crypto): parsed, and
turned into the Jobs' flags and key files. Keys reach a Job only as files from a
Secret (mode 0440) or ConfigMap volume, never as an env value; the identity goes
only to the Job that decrypts (``restore --to-dir``), the verify key to every
Job that picks a backup, and every command line is one the CLI accepts."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import kubernetes_validate
import pytest

from backupctl.cli.restore_modes import mode_of
from backupctl.controller.manifests import (
    TargetPod,
    backup_job,
    owner_reference,
    restore_job,
    restore_stage_job,
)
from backupctl.controller.schedule import job_name
from backupctl.controller.spec import parse_backup, parse_restore
from backupctl.controller.spec_crypto import KEYS_DIR, SECRET_FILE_MODE
from backupctl.controller.spec_fields import SpecError
from backupctl.controller.store_jobs import prune_job

K8S_VERSIONS = ["1.31.0", kubernetes_validate.utils.latest_version()]
SLOT = datetime(2024, 1, 1, 2, tzinfo=UTC)
OWNER = owner_reference("backupctl.dev/v1alpha1", "RedisBackup", "nightly", "1234-5678")
IMAGE = "backupctl:0.1.0"
S3 = {"bucket": "my-redis-backups", "region": "us-east-1"}
POD = TargetPod(name="redis-0", host="redis-0.redis", port=6379, node_name="node-a",
                data_pvc="data-redis-0")  # fmt: skip


def _backup(**spec: Any) -> Any:
    return parse_backup({"redisClusterName": "redis-cluster", "storage": {"s3": S3}, **spec})


def make_backup_job(**spec: Any) -> dict[str, Any]:
    return backup_job(_backup(**spec), name=job_name("nightly", SLOT), namespace="redis",
                      backup_name="nightly", owner=OWNER, target_pod=POD, slot=SLOT,
                      image=IMAGE)  # fmt: skip


def container(job: dict[str, Any]) -> dict[str, Any]:
    (c,) = job["spec"]["template"]["spec"]["containers"]
    return c


def pod_spec(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


def assert_valid(job: dict[str, Any]) -> None:
    json.dumps(job)
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(job, version, strict=True)


OPS = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
SSH = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl dr"
ENCRYPTION = {
    "recipients": [OPS, SSH],
    "recipientsFrom": {"configMap": {"name": "backup-recipients", "key": "recipients.txt"}},
    "signingKeySecret": {"name": "backup-signing", "key": "signing.pem"},
    "verifyKeyFrom": {"configMap": {"name": "backup-signing-pub", "key": "signing.pub.pem"}},
    "requireSignatures": True,
}
DECRYPTION = {
    "identitySecret": {"name": "backup-identity", "key": "key.txt"},
    "verifyKeyFrom": {"secret": {"name": "backup-signing-pub", "key": "signing.pub.pem"}},
    "requireSignatures": True,
}


def _flag_values(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def _mounted(job: dict[str, Any]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """mount path -> (volume, mount) of every key volume."""
    vols = {v["name"]: v for v in pod_spec(job)["volumes"]}
    return {
        m["mountPath"]: (vols[m["name"]], m)
        for m in container(job)["volumeMounts"]
        if m["mountPath"].startswith(KEYS_DIR)
    }


def _no_key_in_env(job: dict[str, Any]) -> None:
    env = json.dumps(container(job).get("env", []))
    for secret in ("backup-identity", "backup-signing", "AGE-SECRET-KEY", OPS):
        assert secret not in env


def test_backup_job_gets_recipients_and_the_signing_key_as_files() -> None:
    job = make_backup_job(encryption=ENCRYPTION)
    assert_valid(job)
    args = container(job)["args"]
    assert _flag_values(args, "--encrypt-to") == [OPS, SSH]
    [recipients] = _flag_values(args, "--encrypt-to-file")
    [signing] = _flag_values(args, "--signing-key")
    assert "--identity" not in args and "--verify-key" not in args  # run reads neither
    mounted = _mounted(job)
    vol, mount = mounted[recipients.rsplit("/", 1)[0]]
    assert vol["configMap"]["name"] == "backup-recipients" and mount["readOnly"]
    vol, mount = mounted[signing.rsplit("/", 1)[0]]
    assert vol["secret"]["secretName"] == "backup-signing"
    assert vol["secret"]["defaultMode"] == SECRET_FILE_MODE == 0o440
    assert vol["secret"]["items"] == [{"key": "signing.pem", "path": "signing.pem"}]
    assert signing.endswith("/signing.pem") and mount["readOnly"]
    _no_key_in_env(job)


def test_a_backup_without_encryption_has_no_key_flags_or_volumes() -> None:
    args = container(make_backup_job())["args"]
    assert not {"--encrypt-to", "--encrypt-to-file", "--signing-key"} & set(args)


def test_prune_job_counts_only_signed_backups() -> None:
    spec = _backup(encryption=ENCRYPTION, retention={"keepDaily": 7})
    job = prune_job(spec, name="nightly-prune", namespace="redis", backup_name="nightly",
                    owner=OWNER, image=IMAGE)  # fmt: skip
    assert_valid(job)
    args = container(job)["args"]
    [verify] = _flag_values(args, "--verify-key")
    assert "--require-signatures" in args
    assert not {"--signing-key", "--encrypt-to"} & set(args)
    assert _mounted(job)[verify.rsplit("/", 1)[0]][0]["configMap"]["name"] == "backup-signing-pub"


def _restore(**extra: Any) -> Any:
    return parse_restore({"redisClusterName": "redis-cluster", "storage": {"s3": S3},
                          "latest": True, **extra})  # fmt: skip


def test_restore_stage_job_gets_the_identity_file_and_the_verify_key() -> None:
    spec = _restore(decryption=DECRYPTION)
    job = restore_stage_job(spec, name="r-stage-0", namespace="redis", restore_name="r",
                            owner=OWNER, pvc="data-redis-0", node_name="node-a",
                            image=IMAGE)  # fmt: skip
    assert_valid(job)
    args = container(job)["args"]
    [identity] = _flag_values(args, "--identity")
    [verify] = _flag_values(args, "--verify-key")
    assert "--require-signatures" in args
    mounted = _mounted(job)
    vol, mount = mounted[identity.rsplit("/", 1)[0]]
    assert vol["secret"] == {
        "secretName": "backup-identity",
        "items": [{"key": "key.txt", "path": "key.txt"}],
        "defaultMode": 0o440,
    }
    assert mount["readOnly"]
    assert mounted[verify.rsplit("/", 1)[0]][0]["secret"]["secretName"] == "backup-signing-pub"
    _no_key_in_env(job)
    assert mode_of({a for a in args if a.startswith("--")}) == "--to-dir"


@pytest.mark.parametrize(
    ("args", "identity"),
    [
        (["restore", "s3://b/p", "latest", "--target", "redis/x", "--dry-run"], False),
        (["restore", "s3://b/p", "backup-20240101-120000", "--target", "redis/x", "--node",
          "redis-0", "--to-dir", "/data", "--appendonly", "auto", "--stage-only"], True),
        (["restore", "s3://b/p", "backup-20240101-120000", "--to-cluster", "redis://r:6379",
          "--verify-only"], False),
    ],
    ids=["resolve", "stage", "cluster-verify"],
)  # fmt: skip
def test_every_restore_job_that_picks_a_backup_checks_its_signature(
    args: list[str], identity: bool
) -> None:
    job = restore_job(_restore(decryption=DECRYPTION), name="r-x", namespace="redis",
                      restore_name="r", owner=OWNER, image=IMAGE, args=args,
                      storage=True)  # fmt: skip
    got = container(job)["args"]
    assert "--verify-key" in got and "--require-signatures" in got
    assert ("--identity" in got) == identity  # only the Job that decrypts holds the key
    mode_of({a for a in got if a.startswith("--")})  # the CLI accepts the combination


def test_jobs_without_the_store_get_no_keys() -> None:
    args = ["restore", "s3://b/p", "backup-20240101-120000", "--to-dir", "/data", "--swap"]
    job = restore_job(_restore(decryption=DECRYPTION), name="r-swap-0", namespace="redis",
                      restore_name="r", owner=OWNER, image=IMAGE, args=args)  # fmt: skip
    got = container(job)["args"]
    assert not {"--identity", "--verify-key"} & set(got)  # a swap reads no store
    assert not _mounted(job)


@pytest.mark.parametrize(
    ("kind", "field", "value", "message"),
    [
        ("backup", "encryption", {"recipients": ["hello"]}, "must be an age recipient"),
        ("backup", "encryption", {"recipients": [OPS], "requireSignatures": True},
         "needs verifyKeyFrom"),
        ("backup", "encryption", {}, "set recipients, recipientsFrom or signingKeySecret"),
        ("backup", "encryption", {"recipientsFrom": {"name": "x", "key": "k"}},
         "set exactly one of configMap and secret"),
        ("backup", "encryption", {"signingKeySecret": {"name": "x"}}, "needs both name and key"),
        ("restore", "decryption", {"identitySecret": {"name": "Bad_Name", "key": "k"}},
         "identitySecret.name"),
        ("restore", "decryption", {"requireSignatures": True}, "needs verifyKeyFrom"),
    ],
)  # fmt: skip
def test_bad_key_specs_are_refused_with_the_field_path(
    kind: str, field: str, value: Any, message: str
) -> None:
    with pytest.raises(SpecError) as err:
        if kind == "backup":
            _backup(**{field: value})
        else:
            _restore(**{field: value})
    assert message in str(err.value)
    assert str(err.value).startswith(f"spec.{field}")


def _env(job: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(job)["env"]}


def test_s3_server_side_encryption_and_object_lock_reach_the_backup_job() -> None:
    job = make_backup_job(encryption={
        "s3ServerSide": {"type": "aws:kms", "kmsKeyId": "arn:aws:kms:eu-west-1:1:key/k"},
        "s3ObjectLock": {"mode": "Compliance", "days": 35},
    })  # fmt: skip
    assert_valid(job)
    env = _env(job)
    assert env["BACKUPCTL_S3_SSE"] == "aws:kms"
    assert env["BACKUPCTL_S3_SSE_KMS_KEY_ID"] == "arn:aws:kms:eu-west-1:1:key/k"
    args = container(job)["args"]
    assert _flag_values(args, "--lock-mode") == ["compliance"]
    assert _flag_values(args, "--lock-days") == ["35"]


def test_an_sse_c_key_is_a_mounted_file_for_every_job_that_reads_or_writes() -> None:
    ref = {"name": "sse-c", "key": "customer.key"}
    backup = make_backup_job(encryption={"s3CustomerKeySecret": ref})
    prune = prune_job(_backup(encryption={"s3CustomerKeySecret": ref}, retention={"keepLast": 3}),
                      name="p", namespace="redis", backup_name="nightly", owner=OWNER,
                      image=IMAGE)  # fmt: skip
    stage = restore_stage_job(_restore(decryption={"s3CustomerKeySecret": ref}), name="s",
                              namespace="redis", restore_name="r", owner=OWNER, pvc="data",
                              node_name="node-a", image=IMAGE)  # fmt: skip
    for job in (backup, prune, stage):
        assert_valid(job)
        path = _env(job)["BACKUPCTL_S3_SSE_C_KEY_FILE"]
        vol, mount = _mounted(job)[path.rsplit("/", 1)[0]]
        assert vol["secret"]["secretName"] == "sse-c" and vol["secret"]["defaultMode"] == 0o440
        assert path.endswith("/customer.key") and mount["readOnly"]
        assert "BACKUPCTL_S3_SSE" not in _env(job)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"s3ServerSide": {"type": "AES256", "kmsKeyId": "k"}}, "goes with type aws:kms"),
        ({"s3ServerSide": {"type": "rot13"}}, "must be one of AES256, aws:kms"),
        ({"s3ServerSide": {"type": "AES256"}, "s3CustomerKeySecret": {"name": "a", "key": "k"}},
         "not both"),
        ({"s3ObjectLock": {"mode": "Governance"}}, "s3ObjectLock.days: is required"),
        ({"s3ObjectLock": {"mode": "Legal", "days": 3}}, "must be one of Governance, Compliance"),
    ],
)  # fmt: skip
def test_bad_server_side_specs_are_refused(value: Any, message: str) -> None:
    with pytest.raises(SpecError, match=re.escape(message)):
        _backup(encryption=value)
