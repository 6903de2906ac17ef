"""manifests.py: the Jobs the controller creates, checked against the
Kubernetes schemas and for what they must and must not contain."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import kubernetes_validate
import pytest

from backupctl.controller.identity import RootUser, RunAs
from backupctl.controller.job_env import GCS_CREDENTIALS_DIR
from backupctl.controller.job_limits import DEFAULT_DEADLINES
from backupctl.controller.manifests import (
    DATA_DIR,
    TERMINATION_LOG,
    TargetPod,
    backup_job,
    backup_labels,
    label_value,
    owner_reference,
    restore_stage_job,
)
from backupctl.controller.observe import job_view, parse_shard
from backupctl.controller.schedule import job_name, shard_job_name
from backupctl.controller.spec import (
    SecretRef,
    TLSSpec,
    parse_backup,
    parse_restore,
    with_backup_source,
)
from backupctl.controller.spec_fields import SpecError
from backupctl.controller.store_jobs import prune_job

K8S_VERSIONS = ["1.31.0", kubernetes_validate.utils.latest_version()]
SLOT = datetime(2024, 1, 1, 2, tzinfo=UTC)
OWNER = owner_reference("backupctl.dev/v1alpha1", "RedisBackup", "nightly", "1234-5678")
IMAGE = "backupctl:0.1.0"
S3 = {
    "bucket": "my-redis-backups",
    "region": "us-east-1",
    "prefix": "prod",
    "accessKeyIdSecret": {"name": "aws-credentials", "key": "access-key-id"},
    "secretAccessKeySecret": {"name": "aws-credentials", "key": "secret-access-key"},
}
POD = TargetPod(
    name="redis-cluster-leader-0",
    host="redis-cluster-leader-0.redis-cluster-leader-headless.redis.svc",
    port=6379,
    node_name="node-a",
    data_pvc="redis-cluster-leader-redis-cluster-leader-0",
    password_secret=SecretRef("redis-secret", "password"),
)
#: Env a Job may carry as plain values: settings, never credentials.
PLAIN_ENV = {
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AZURE_STORAGE_ACCOUNT",
    "AZURE_STORAGE_ENDPOINT",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "STORAGE_EMULATOR_HOST",
}


def _backup(**spec: Any) -> Any:
    return parse_backup({"redisClusterName": "redis-cluster", "storage": {"s3": S3}, **spec})


def make_backup_job(pod: TargetPod = POD, **spec: Any) -> dict[str, Any]:
    return backup_job(
        _backup(**spec),
        name=job_name("nightly", SLOT),
        namespace="redis",
        backup_name="nightly",
        owner=OWNER,
        target_pod=pod,
        slot=SLOT,
        image=IMAGE,
    )


def container(job: dict[str, Any]) -> dict[str, Any]:
    (c,) = job["spec"]["template"]["spec"]["containers"]
    return c


def pod_spec(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


def env_of(job: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(job)["env"]}


def assert_valid(job: dict[str, Any]) -> None:
    json.dumps(job)  # plain data, ready for the API
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(job, version, strict=True)
    assert len(job["metadata"]["name"]) <= 63
    for value in job["metadata"]["labels"].values():
        assert len(value) <= 63


def assert_no_secret_values(job: dict[str, Any]) -> None:
    """Credentials only as secretKeyRef env or Secret volumes, nowhere else."""
    c = container(job)
    for e in c["env"]:
        if "valueFrom" in e:
            assert set(e["valueFrom"]) == {"secretKeyRef"}, e
            assert set(e["valueFrom"]["secretKeyRef"]) == {"name", "key"}
        else:
            assert e["name"] in PLAIN_ENV, e
    for v in pod_spec(job)["volumes"]:
        assert set(v) - {"name"} <= {"secret", "persistentVolumeClaim", "emptyDir"}, v
        if "secret" in v:
            assert set(v["secret"]) == {"secretName", "items", "defaultMode"}
    assert not any("@" in a for a in c["args"]), "no credentials in URLs"
    text = json.dumps(job)
    assert '"stringData":' not in text and '"data":' not in text


# --- backup Jobs -------------------------------------------------------------


def test_bgsave_job_runs_the_cli_with_the_spec_settings() -> None:
    job = make_backup_job()
    assert_valid(job)
    c = container(job)
    assert c["image"] == IMAGE and c["command"] == ["backupctl"]
    assert c["args"] == [
        "run",
        "--redis", "redis://redis-cluster-leader-0.redis-cluster-leader-headless.redis.svc:6379",
        "--to", "s3://my-redis-backups/prod",
        "--target", "redis/redis-cluster",
        "--node-name", "redis-cluster-leader-0",
        "--method", "bgsave",
        "--compression", "zstd",
        "--data-dir", DATA_DIR,
        "--json", "--termination-log", TERMINATION_LOG,
    ]  # fmt: skip
    assert c["terminationMessagePath"] == TERMINATION_LOG
    assert c["terminationMessagePolicy"] == "File"
    assert job["metadata"]["name"] == "nightly-20240101020000"
    assert job["metadata"]["ownerReferences"] == [OWNER]


def test_bgsave_job_mounts_the_data_pvc_read_only_and_is_pinned_to_the_pods_node() -> None:
    job = make_backup_job()
    volumes = {v["name"]: v for v in pod_spec(job)["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {
        "claimName": "redis-cluster-leader-redis-cluster-leader-0",
        "readOnly": True,
    }
    mounts = {m["name"]: m for m in container(job)["volumeMounts"]}
    assert mounts["data"] == {"name": "data", "mountPath": DATA_DIR, "readOnly": True}
    terms = pod_spec(job)["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert terms == [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-a"]}]}
    ]


def test_bgsave_job_keeps_the_data_mounts_sub_path() -> None:
    pod = TargetPod(**{**POD.__dict__, "data_sub_path": "redis"})
    mounts = {m["name"]: m for m in container(make_backup_job(pod))["volumeMounts"]}
    assert mounts["data"]["subPath"] == "redis"


def test_bgsave_needs_the_node_and_the_pvc() -> None:
    with pytest.raises(ValueError, match="node and data PVC"):
        make_backup_job(TargetPod(name="r-0", host="10.0.0.5"))


def test_replication_job_has_no_volume_and_no_node_pinning() -> None:
    job = make_backup_job(TargetPod(name="r-0", host="10.0.0.5", port=6380), method="replication")
    assert_valid(job)
    assert [v["name"] for v in pod_spec(job)["volumes"]] == ["tmp"]
    assert [m["mountPath"] for m in container(job)["volumeMounts"]] == ["/tmp"]
    assert "affinity" not in pod_spec(job)
    args = container(job)["args"]
    assert "--data-dir" not in args
    assert args[args.index("--redis") + 1] == "redis://10.0.0.5:6380"
    assert args[args.index("--method") + 1] == "replication"
    assert "REDIS_PASSWORD" not in env_of(job)


def test_shard_jobs_back_up_one_shard_each_into_the_slots_backup_id() -> None:
    def shard_job(i: int, **spec: Any) -> dict[str, Any]:
        return backup_job(
            _backup(**spec),
            name=shard_job_name("nightly", SLOT, i),
            namespace="redis",
            backup_name="nightly",
            owner=OWNER,
            target_pod=POD,
            slot=SLOT,
            image=IMAGE,
            cluster=True,
            shard=(i, 3),
        )

    jobs = [shard_job(i, preferReplica=True) for i in (1, 2, 3)]
    for i, job in enumerate(jobs, 1):
        assert_valid(job)
        assert_no_secret_values(job)
        assert job["metadata"]["name"] == f"nightly-20240101020000-shard{i}"
        args = container(job)["args"]
        assert args[args.index("--method") + 1] == "replication"
        assert args[args.index("--cluster") :] == [
            "--cluster", "--prefer-replica", "--shard", f"{i}/3",
            "--id", "backup-20240101-020000", "--owner", "nightly",
            "--json", "--termination-log", TERMINATION_LOG,
        ]  # fmt: skip
        labels = job["metadata"]["labels"]
        assert labels["backupctl.dev/run"] == "nightly-20240101020000"
        assert labels["backupctl.dev/shard"] == f"{i}-of-3"
        assert labels["backupctl.dev/slot"] == "20240101020000"
        view = job_view(job)  # what the controller reads back
        assert (view.name, view.run_name, view.shard, view.shards, view.slot) == (
            f"nightly-20240101020000-shard{i}", "nightly-20240101020000", i, 3, SLOT,
        )  # fmt: skip
    # bgsave is not possible per shard either: no data volume, no node pinning.
    disk = shard_job(1, method="bgsave")
    assert "--data-dir" not in container(disk)["args"] and "affinity" not in pod_spec(disk)
    assert [v["name"] for v in pod_spec(disk)["volumes"]] == ["tmp"]
    with pytest.raises(ValueError, match="cluster=True"):
        backup_job(_backup(), name="x", namespace="redis", backup_name="nightly", owner=None,
                   target_pod=POD, slot=SLOT, image=IMAGE, shard=(1, 3))  # fmt: skip
    single = job_view(make_backup_job())
    assert (single.run_name, single.shard, single.shards) == (single.name, None, None)
    assert [parse_shard(v) for v in ("2-of-3", "0-of-3", "4-of-3", "x", None)] == [
        (2, 3), None, None, None, None,
    ]  # fmt: skip


def test_credentials_reach_the_job_only_by_secret_key_ref() -> None:
    job = make_backup_job()
    assert_no_secret_values(job)
    env = env_of(job)
    assert env["REDIS_PASSWORD"] == {"secretKeyRef": {"name": "redis-secret", "key": "password"}}
    assert env["AWS_ACCESS_KEY_ID"] == {
        "secretKeyRef": {"name": "aws-credentials", "key": "access-key-id"}
    }
    assert env["AWS_SECRET_ACCESS_KEY"] == {
        "secretKeyRef": {"name": "aws-credentials", "key": "secret-access-key"}
    }
    assert env["AWS_REGION"] == "us-east-1"


@pytest.mark.parametrize(
    "storage",
    [
        {"azureBlob": {"container": "backups", "storageAccount": "acct",
                       "storageAccountKeySecret": {"name": "az", "key": "key"}}},
        {"azureBlob": {"container": "backups",
                       "connectionStringSecret": {"name": "az", "key": "conn"},
                       "endpoint": "http://127.0.0.1:10000/devstoreaccount1"}},
        {"gcs": {"bucket": "my-bucket", "credentialsSecret": {"name": "gcs", "key": "sa.json"},
                 "endpoint": "http://127.0.0.1:9023"}},
    ],
)  # fmt: skip
def test_every_store_gives_a_valid_job_without_secret_values(storage: dict[str, Any]) -> None:
    job = make_backup_job(storage=storage)
    assert_valid(job)
    assert_no_secret_values(job)


def test_gcs_job_mounts_the_credentials_file() -> None:
    job = make_backup_job(storage={"gcs": {"bucket": "b", "credentialsSecret": {
        "name": "gcs", "key": "sa.json"}}})  # fmt: skip
    volumes = {v["name"]: v for v in pod_spec(job)["volumes"]}
    mounts = {m["name"]: m for m in container(job)["volumeMounts"]}
    (name,) = set(volumes) - {"tmp", "data"}
    assert volumes[name]["secret"]["secretName"] == "gcs"
    assert mounts[name] == {"name": name, "mountPath": GCS_CREDENTIALS_DIR, "readOnly": True}
    assert env_of(job)["GOOGLE_APPLICATION_CREDENTIALS"] == f"{GCS_CREDENTIALS_DIR}/sa.json"


def test_tls_target_uses_rediss_with_the_ca_from_a_secret_volume() -> None:
    pod = TargetPod(
        name="r-0",
        host="r-0.r",
        tls=TLSSpec(ca_secret=SecretRef("redis-tls", "ca.crt"), insecure_skip_verify=True),
    )
    job = make_backup_job(pod, method="replication")
    assert_valid(job)
    assert_no_secret_values(job)
    args = container(job)["args"]
    url = args[args.index("--redis") + 1]
    assert url.startswith("rediss://r-0.r:6379?")
    assert "ssl_ca_certs=/var/run/secrets/backupctl/redis-tls/ca.crt" in url
    assert "ssl_cert_reqs=none" in url
    assert any(v.get("secret", {}).get("secretName") == "redis-tls"
               for v in pod_spec(job)["volumes"])  # fmt: skip


def test_the_specs_explicit_target_settings_win_over_what_the_controller_found() -> None:
    found = TargetPod(name="r-0", host="r-0.r", port=6379,
                      password_secret=SecretRef("operator-secret", "password"))  # fmt: skip
    job = make_backup_job(found, method="replication")
    assert env_of(job)["REDIS_PASSWORD"]["secretKeyRef"]["name"] == "operator-secret"
    job = backup_job(
        parse_backup({"target": {"name": "r", "port": 7000, "passwordSecret": {
            "name": "mine", "key": "pw"}, "tls": {}}, "storage": {"s3": S3},
            "method": "replication"}),
        name="j", namespace="redis", backup_name="b", owner=None, target_pod=found,
        slot=SLOT, image=IMAGE,
    )  # fmt: skip
    assert env_of(job)["REDIS_PASSWORD"]["secretKeyRef"] == {"name": "mine", "key": "pw"}
    args = container(job)["args"]
    assert args[args.index("--redis") + 1] == "rediss://r-0.r:7000"


def test_ipv6_hosts_are_bracketed() -> None:
    job = make_backup_job(TargetPod(name="r-0", host="fd00::5"), method="replication")
    args = container(job)["args"]
    assert args[args.index("--redis") + 1] == "redis://[fd00::5]:6379"


def test_job_knobs_come_from_the_spec() -> None:
    job = make_backup_job(
        backoffLimit=5,
        activeDeadlineSeconds=900,
        resources={"requests": {"cpu": "250m"}, "limits": {"memory": "2Gi", "cpu": 1}},
        image="example/backupctl:dev",
        nodeSelector={"pool": "backup"},
        tolerations=[{"key": "dedicated", "operator": "Equal", "value": "redis",
                      "effect": "NoSchedule"}],
        serviceAccountName="backup-writer",
    )  # fmt: skip
    assert_valid(job)
    assert job["spec"]["backoffLimit"] == 5 and job["spec"]["activeDeadlineSeconds"] == 900
    c, p = container(job), pod_spec(job)
    assert c["resources"] == {"requests": {"cpu": "250m"}, "limits": {"memory": "2Gi", "cpu": 1}}
    assert c["image"] == "example/backupctl:dev"
    assert p["nodeSelector"] == {"pool": "backup"}
    assert p["tolerations"][0]["key"] == "dedicated"
    assert p["serviceAccountName"] == "backup-writer"


def test_defaults_without_spec_knobs() -> None:
    job = make_backup_job()
    assert job["spec"]["backoffLimit"] == 2
    assert job["spec"]["activeDeadlineSeconds"] == DEFAULT_DEADLINES["backup"]
    assert "ttlSecondsAfterFinished" not in job["spec"]
    assert container(job)["resources"]["limits"]["memory"]
    assert "nodeSelector" not in pod_spec(job) and "serviceAccountName" not in pod_spec(job)


def test_jobs_are_hardened() -> None:
    job = make_backup_job()
    p, c = pod_spec(job), container(job)
    assert p["restartPolicy"] == "Never"
    assert p["automountServiceAccountToken"] is False
    assert p["securityContext"]["runAsNonRoot"] is True
    assert p["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]


def test_labels_select_the_jobs_of_a_backup_and_slot() -> None:
    job = make_backup_job()
    labels = {
        "app.kubernetes.io/name": "backupctl",
        "app.kubernetes.io/managed-by": "backupctl",
        "app.kubernetes.io/component": "backup",
        "backupctl.dev/backup": "nightly",
        "backupctl.dev/slot": "20240101020000",
    }
    assert job["metadata"]["labels"] == labels == job["spec"]["template"]["metadata"]["labels"]
    assert job["metadata"]["annotations"]["backupctl.dev/target-pod"] == POD.name
    assert backup_labels("nightly", "backup", SLOT) == labels


def test_long_resource_names_still_give_valid_label_values() -> None:
    long = "n" * 200
    assert len(label_value(long)) <= 63 and label_value("short") == "short"
    job = backup_job(
        _backup(),
        name=job_name(long, SLOT),
        namespace="redis",
        backup_name=long,
        owner=None,
        target_pod=replace(POD, run_as=RunAs(user=999, group=999)),
        slot=SLOT,
        image=IMAGE,
        ttl_seconds_after_finished=3600,
    )
    assert_valid(job)
    assert "ownerReferences" not in job["metadata"]
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600
    assert pod_spec(job)["securityContext"]["runAsUser"] == 999


# --- prune Jobs ----------------------------------------------------------------


def test_prune_job_applies_the_retention_with_the_spec_time_zone() -> None:
    spec = _backup(timeZone="Europe/Paris", retention={"keepDaily": 7, "keepWeekly": 4,
                                                       "keepWithin": "30d"})  # fmt: skip
    job = prune_job(spec, name=job_name("nightly", SLOT, "prune"), namespace="redis",
                    backup_name="nightly", owner=OWNER, image=IMAGE, slot=SLOT)  # fmt: skip
    assert_valid(job)
    assert_no_secret_values(job)
    assert container(job)["args"] == [
        "prune", "s3://my-redis-backups/prod", "--target", "redis/redis-cluster",
        "--timezone", "Europe/Paris",
        "--keep-daily", "7", "--keep-weekly", "4", "--keep-within", "30d",
        "--json", "--termination-log", TERMINATION_LOG,
    ]  # fmt: skip
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "prune"
    assert [v["name"] for v in pod_spec(job)["volumes"]] == ["tmp"]
    assert "affinity" not in pod_spec(job)


def test_prune_job_refuses_an_empty_policy() -> None:
    with pytest.raises(ValueError, match="no retention"):
        prune_job(_backup(), name="x", namespace="redis", backup_name="nightly", owner=None,
                  image=IMAGE)  # fmt: skip


# --- restore staging Jobs ------------------------------------------------------


def _restore(**spec: Any) -> Any:
    return parse_restore({"redisClusterName": "redis-cluster", **spec})


def test_restore_stage_job_writes_into_the_pvc_on_its_node() -> None:
    spec = _restore(storage={"s3": {**S3, "key": "backup-20240101-120000.tar.gz"}})
    job = restore_stage_job(
        spec,
        name="redis-restore-20240101-stage-0",
        namespace="redis",
        restore_name="redis-restore-20240101",
        owner=owner_reference("backupctl.dev/v1alpha1", "RedisRestore", "r", "uid-1"),
        pvc="redis-data-redis-0",
        node_name="node-b",
        image=IMAGE,
        source_target="redis/redis-cluster",
        source_node="redis-cluster-leader-0",
        run_as=RunAs(user=1000, group=1000),
    )
    assert_valid(job)
    assert_no_secret_values(job)
    assert container(job)["args"] == [
        "restore", "s3://my-redis-backups/prod", "backup-20240101-120000",
        "--target", "redis/redis-cluster", "--node", "redis-cluster-leader-0",
        "--to-dir", DATA_DIR, "--appendonly", "auto",
        "--json", "--termination-log", TERMINATION_LOG,
    ]  # fmt: skip
    volumes = {v["name"]: v for v in pod_spec(job)["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "redis-data-redis-0"}
    mounts = {m["name"]: m for m in container(job)["volumeMounts"]}
    assert mounts["data"]["readOnly"] is False
    assert pod_spec(job)["affinity"]["nodeAffinity"]
    assert pod_spec(job)["securityContext"]["runAsUser"] == 1000
    labels = job["metadata"]["labels"]
    assert labels["backupctl.dev/restore"] == "redis-restore-20240101"
    assert labels["app.kubernetes.io/component"] == "restore"


def test_restore_from_backup_needs_the_storage_resolved_first() -> None:
    spec = _restore(fromBackup="nightly", latest=True)
    kwargs: dict[str, Any] = dict(name="r-stage-0", namespace="redis", restore_name="r",
                                  owner=None, pvc="p", node_name="n", image=IMAGE,
                                  source_target="redis/redis-cluster")  # fmt: skip
    with pytest.raises(ValueError, match="not resolved"):
        restore_stage_job(spec, **kwargs)
    resolved = with_backup_source(spec, _backup(), namespace="redis", backup_name="nightly")
    job = restore_stage_job(resolved, **kwargs)
    assert_valid(job)
    assert container(job)["args"][:3] == ["restore", "s3://my-redis-backups/prod", "latest"]
    assert env_of(job)["AWS_ACCESS_KEY_ID"]["secretKeyRef"]["name"] == "aws-credentials"


def test_no_job_runs_as_root() -> None:
    spec = _restore(storage={"s3": S3}, backupId="backup-20240101-120000")
    with pytest.raises(RootUser, match="runs as root"):
        restore_stage_job(spec, name="r", namespace="redis", restore_name="r", owner=None,
                          pvc="p", node_name="n", image=IMAGE, run_as=RunAs(user=0))  # fmt: skip
    job = restore_stage_job(spec, name="r", namespace="redis", restore_name="r", owner=None,
                            pvc="p", node_name="n", image=IMAGE)  # fmt: skip
    assert pod_spec(job)["securityContext"]["runAsNonRoot"] is True
    args = container(job)["args"]
    assert args[args.index("--target") + 1] == "redis/redis-cluster"


# --- issue 14: users, deadlines, cordoned nodes -------------------------------------


def test_a_bgsave_job_runs_as_the_redis_containers_user_and_groups() -> None:
    pod = replace(POD, run_as=RunAs(user=999, group=998, fs_group=997, supplemental_groups=(5,)))
    job = make_backup_job(pod)
    assert_valid(job)
    assert pod_spec(job)["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
        "runAsUser": 999,
        "runAsGroup": 998,
        "fsGroup": 997,
        "supplementalGroups": [5],
    }


def test_a_replication_backup_runs_as_the_images_user_and_never_as_root() -> None:
    pod = replace(POD, run_as=RunAs(user=0))
    job = make_backup_job(pod, method="replication")
    assert "runAsUser" not in pod_spec(job)["securityContext"]
    with pytest.raises(RootUser, match=f"{POD.name} runs as root"):
        make_backup_job(pod)


@pytest.mark.parametrize(
    ("job_spec", "kind", "expected"),
    [
        ({}, "backup", 6 * 3600),
        ({"activeDeadlineSeconds": 600}, "backup", 600),
        ({"activeDeadlineSeconds": 600, "deadlines": {"backup": 60}}, "backup", 60),
        ({}, "prune", 3600),
        ({"activeDeadlineSeconds": 600}, "prune", 3600),
        ({"deadlines": {"prune": 120}}, "prune", 120),
    ],
)
def test_every_backup_side_job_has_a_deadline(
    job_spec: dict[str, Any], kind: str, expected: int
) -> None:
    spec = _backup(retention={"keepLast": 3}, **job_spec)  # the prune Job's
    if kind == "backup":
        job = make_backup_job(**job_spec)
    else:
        job = prune_job(spec, name="p", namespace="redis", backup_name="nightly", owner=None,
                        image=IMAGE)  # fmt: skip
    assert job["spec"]["activeDeadlineSeconds"] == expected


def test_jobs_pinned_to_a_node_tolerate_a_cordon_and_others_do_not_need_to() -> None:
    cordon = {"key": "node.kubernetes.io/unschedulable", "operator": "Exists",
              "effect": "NoSchedule"}  # fmt: skip
    pinned = make_backup_job()
    assert pinned["spec"]["template"]["spec"]["tolerations"] == [cordon]
    streamed = make_backup_job(method="replication")
    assert "tolerations" not in pod_spec(streamed)
    own = {"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}
    both = make_backup_job(tolerations=[own, cordon])
    assert pod_spec(both)["tolerations"] == [own, cordon]  # not twice


def test_the_spec_refuses_an_unknown_deadline_kind() -> None:
    with pytest.raises(SpecError, match=r"deadlines\.restore.*backup, prune, stage"):
        _backup(deadlines={"restore": 5})
    assert _backup(startTimeoutSeconds=60).job.start_timeout_seconds == 60
    assert _backup().job.start_timeout_seconds == 300
