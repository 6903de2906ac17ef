"""Issue 14 end to end: data Jobs as Redis's own user, pods that cannot start, and backups and
restores of one target waiting for each other.

The real ``backupctl operator`` process against the API emulator; the substrate enforces what
clusters do: each container runs as its effective uid/gid (the official redis image's
entrypoint drops to 999), Jobs pinned to a tainted node stay Unschedulable, an injected mount
failure keeps a pod ``ContainerCreating``. Redis pods are real ``redis-server`` processes of
the StatefulSet stand-in, on PVC folders; moto's S3 is the store. Time past a pod's start
timeout is the operator's fake clock moved forward, only after the controller showed it saw
the pod waiting (its status says so).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from support.controller_e2e import NS, condition, event_reasons, s3_storage, wait
from support.kube.fixtures import K8sApi
from support.kube.kubelet import Kubelet
from support.kube.operator_process import Operator
from support.kube.statefulset_controller import StatefulSets, wait_ready
from support.object_stores import S3Emulator

STS = "redis"
SLOT = datetime(2030, 1, 1, 2, 0, tzinfo=UTC)
REDIS_999 = {"runAsUser": 999, "runAsGroup": 999, "fsGroup": 999}


@pytest.fixture
def operator(operator: Operator) -> Operator:
    """The shared fixture's operator, started at once (on the real clock)."""
    operator.start()
    return operator


# --- helpers ----------------------------------------------------------------------------


def redis_statefulset(pod_security: dict[str, Any] | None = None) -> dict[str, Any]:
    """One official-image Redis pod (``redis-0``) with a ``data`` claim at /data."""
    labels = {"app": STS}
    pod_spec: dict[str, Any] = {
        "containers": [
            {
                "name": "redis",
                "image": "redis:7.0",
                "command": ["redis-server"],
                "args": [
                    "--appendonly",
                    "no",
                    "--save",
                    "900 1",
                    "--enable-debug-command",
                    "local",
                ],
                "ports": [{"name": "redis", "containerPort": 6379}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }
        ]
    }
    if pod_security:
        pod_spec["securityContext"] = pod_security
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": STS},
        "spec": {
            "replicas": 1,
            "serviceName": STS,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                }
            ],
        },
    }


def private_folder(tmp_path: Path, kubelet: Kubelet) -> Path:
    """``data-redis-0``'s folder: a 0700 directory of uid/gid 999."""
    folder = tmp_path / "pvc-redis-0"
    folder.mkdir()
    os.chown(folder, 999, 999)
    folder.chmod(0o700)
    kubelet.volumes[f"data-{STS}-0"] = folder
    return folder


def start_redis(
    api: K8sApi, sts: StatefulSets, pod_security: dict[str, Any] | None = None, keys: int = 500
) -> redis.Redis:
    api.create(redis_statefulset(pod_security), NS)
    wait_ready(api, NS, STS, 1)
    c = redis.Redis(port=sts.port(f"{STS}-0", NS), decode_responses=True, socket_timeout=30)
    c.mset({f"key:{i}": f"value-{i}" for i in range(keys)})
    return c


def storage(s3: S3Emulator, bucket: str) -> dict[str, Any]:
    return s3_storage(s3, bucket, creds="aws")


def resource(kind: str, name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "backupctl.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": {"redisClusterName": STS, **spec},
    }


def status(api: K8sApi, plural: str, name: str) -> dict[str, Any]:
    return dict((api.get(plural, NS, name) or {}).get("status") or {})


def pod_security_of(job: dict[str, Any]) -> dict[str, Any]:
    return dict(job["spec"]["template"]["spec"]["securityContext"])


# --- tests ------------------------------------------------------------------------------


def test_backup_and_restore_of_a_uid_999_redis_with_a_0700_data_dir(
    api: K8sApi,
    statefulsets: StatefulSets,
    kubelet: Kubelet,
    operator: Operator,
    s3_server: S3Emulator,
    bucket: str,
    tmp_path: Path,
) -> None:
    folder = private_folder(tmp_path, kubelet)
    c = start_redis(api, statefulsets)  # no runAsUser anywhere: the image drops to 999
    digest = c.execute_command("DEBUG", "DIGEST-VALUE", "key:1")
    api.create(resource("RedisBackup", "once", storage=storage(s3_server, bucket)), NS)

    def backed_up() -> dict[str, Any] | None:
        return status(api, "redisbackups", "once").get("lastSuccessfulBackup")

    last = wait(operator, backed_up, 90, "the backup of the 0700 data dir")
    assert last["keys"] == 500
    job = api.get("jobs", NS, last["jobName"])
    assert job is not None
    security = pod_security_of(job)
    assert (security["runAsUser"], security["runAsGroup"], security["runAsNonRoot"]) == (
        999, 999, True,
    )  # fmt: skip
    assert api.get("jobs", NS, "once-probe") is None  # the owner probe is gone once read

    c.flushall()
    c.set("written-after-the-backup", "x")
    api.create(
        resource("RedisRestore", "back", storage=storage(s3_server, bucket), backupId=last["id"]),
        NS,
    )

    def finished() -> dict[str, Any] | None:
        st = status(api, "redisrestores", "back")
        return st if st.get("phase") in ("Completed", "Failed") else None

    st = wait(operator, finished, 180, "the restore into the 0700 data dir")
    assert st["phase"] == "Completed", st
    assert st["pods"][0]["runAsUser"] == 999 and st["pods"][0]["runAsGroup"] == 999
    for step in ("stage-0", "swap-0"):
        swap = api.get("jobs", NS, f"back-{step}")
        assert swap is not None and pod_security_of(swap)["runAsUser"] == 999
    c = redis.Redis(port=statefulsets.port(f"{STS}-0", NS), decode_responses=True)
    assert c.dbsize() == 500 and c.get("written-after-the-backup") is None
    assert c.execute_command("DEBUG", "DIGEST-VALUE", "key:1") == digest
    assert (folder.stat().st_uid, folder.stat().st_mode & 0o777) == (999, 0o700)
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in folder.iterdir() if p.is_file()}
    assert owners == {(999, 999)}


def test_a_backup_job_stuck_in_container_creating_fails_and_the_next_slot_runs(
    api: K8sApi,
    statefulsets: StatefulSets,
    kubelet: Kubelet,
    operator: Operator,
    s3_server: S3Emulator,
    bucket: str,
    tmp_path: Path,
) -> None:
    private_folder(tmp_path, kubelet)
    start_redis(api, statefulsets, REDIS_999)
    operator.set_time(SLOT - timedelta(minutes=5))
    api.create(
        resource("RedisBackup", "nightly", schedule="0 2 * * *",
                 storage=storage(s3_server, bucket)),
        NS,
    )  # fmt: skip

    def scheduled() -> dict[str, Any] | None:
        st = status(api, "redisbackups", "nightly")
        return st if st.get("nextScheduleTime") and st.get("target") else None

    wait(operator, scheduled, 30, "nightly scheduled")
    kubelet.failing_mounts[f"data-{STS}-0"] = "mount failed: exit status 32"
    operator.set_time(SLOT + timedelta(seconds=1))
    first = "nightly-20300101020000"

    def waits_for_its_volume() -> str | None:
        message = str(
            condition(status(api, "redisbackups", "nightly"), "Progressing").get("message")
        )
        return message if f"{first} (its pod waits" in message else None

    assert "ContainerCreating" in wait(operator, waits_for_its_volume, 60, "the pod seen waiting")
    operator.set_time(SLOT + timedelta(minutes=6))  # past startTimeoutSeconds (300)

    def failed() -> dict[str, Any] | None:
        history = status(api, "redisbackups", "nightly").get("history") or []
        entry: dict[str, Any] = next((h for h in history if h.get("jobName") == first), {})
        return entry if entry.get("phase") == "Failed" else None

    entry = wait(operator, failed, 30, "the stuck run failed")
    assert "could not start within 300 s: ContainerCreating" in entry["message"]
    wait(operator, lambda: api.get("jobs", NS, first) is None, 30, "the stuck Job deleted")
    assert "BackupFailed" in event_reasons(api, "nightly")

    del kubelet.failing_mounts[f"data-{STS}-0"]
    operator.set_time(SLOT + timedelta(days=1, seconds=1))  # Forbid: nothing blocks it now

    def second_ran() -> dict[str, Any] | None:
        last = status(api, "redisbackups", "nightly").get("lastSuccessfulBackup") or {}
        return last if last.get("jobName") == "nightly-20300102020000" else None

    assert wait(operator, second_ran, 90, "the next slot's backup")["keys"] == 500


def test_a_scheduled_backup_during_a_restore_waits_and_runs_when_it_ends(
    api: K8sApi,
    statefulsets: StatefulSets,
    kubelet: Kubelet,
    operator: Operator,
    s3_server: S3Emulator,
    bucket: str,
    tmp_path: Path,
) -> None:
    private_folder(tmp_path, kubelet)
    start_redis(api, statefulsets, REDIS_999)
    operator.set_time(SLOT - timedelta(minutes=5))
    # A restore that cannot get on (its store's Secret is missing) and keeps waiting.
    held = storage(s3_server, bucket)
    held["s3"]["accessKeyIdSecret"] = {"name": "missing", "key": "k"}
    api.create(
        resource("RedisRestore", "restoring", storage=held, backupId="backup-20300101-000000",
                 startTimeoutSeconds=10**8),
        NS,
    )  # fmt: skip

    def started() -> dict[str, Any] | None:
        st = status(api, "redisrestores", "restoring")
        return st if st.get("startTime") else None

    wait(operator, started, 30, "the restore started")
    api.create(
        resource("RedisBackup", "nightly", schedule="0 2 * * *",
                 storage=storage(s3_server, bucket)),
        NS,
    )  # fmt: skip
    operator.set_time(SLOT + timedelta(seconds=1))

    def waiting() -> dict[str, Any] | None:
        ready = condition(status(api, "redisbackups", "nightly"), "Ready")
        return ready if ready.get("reason") == "WaitingForRestore" else None

    ready = wait(operator, waiting, 30, "the backup waits for the restore")
    assert "RedisRestore restoring" in ready["message"]
    assert "WaitingForRestore" in event_reasons(api, "nightly")
    assert api.list("jobs", NS, "backupctl.dev/backup=nightly") == []

    api.delete("redisrestores", NS, "restoring")

    def ran() -> dict[str, Any] | None:
        last = status(api, "redisbackups", "nightly").get("lastSuccessfulBackup") or {}
        return last if last.get("jobName") == "nightly-20300101020000" else None

    assert wait(operator, ran, 90, "the slot's backup after the restore")["keys"] == 500


def test_a_restore_whose_swap_cannot_be_scheduled_fails_and_scales_back_on_the_old_data(
    api: K8sApi,
    statefulsets: StatefulSets,
    kubelet: Kubelet,
    operator: Operator,
    s3_server: S3Emulator,
    bucket: str,
    tmp_path: Path,
) -> None:
    private_folder(tmp_path, kubelet)
    c = start_redis(api, statefulsets, REDIS_999)
    api.create(resource("RedisBackup", "once", storage=storage(s3_server, bucket)), NS)

    def backed_up() -> dict[str, Any] | None:
        return status(api, "redisbackups", "once").get("lastSuccessfulBackup")

    backup_id = wait(operator, backed_up, 90, "the backup")["id"]
    c.set("newer-than-the-backup", "kept")
    node = (api.get("pods", NS, f"{STS}-0") or {})["spec"]["nodeName"]
    api.create(
        resource("RedisRestore", "r", storage=storage(s3_server, bucket), backupId=backup_id),
        NS,
    )

    def started() -> dict[str, Any] | None:
        st = status(api, "redisrestores", "r")
        return st if st.get("startTime") else None

    wait(operator, started, 30, "the restore started")
    # Now a backup Job of the target runs: the restore stages, then waits for it before
    # Redis stops; meanwhile the node becomes unusable for anything without a toleration.
    api.create(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": "manual-backup",
                "labels": {"app.kubernetes.io/component": "backup", "backupctl.dev/backup": "x"},
                "annotations": {"backupctl.dev/target-pod": f"{STS}-0"},
            },
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "120"]}],
            }}},
        },
        NS,
    )  # fmt: skip

    def waits_for_backup() -> dict[str, Any] | None:
        st = status(api, "redisrestores", "r")
        return st if "manual-backup" in str(st.get("message")) else None

    st = wait(operator, waits_for_backup, 90, "the restore staged, waiting for the backup Job")
    assert st["phase"] == "Staging" and st["pods"][0]["phase"] == "Staged"
    taint = {"key": "maintenance", "value": "true", "effect": "NoSchedule"}
    api.patch("nodes", None, node, {"spec": {"taints": [taint]}})
    api.delete("jobs", NS, "manual-backup")

    def swap_waits() -> dict[str, Any] | None:
        st = status(api, "redisrestores", "r")
        return st if "r-swap-0 cannot start: Unschedulable" in str(st.get("message")) else None

    swapping = wait(operator, swap_waits, 60, "the swap Job seen Unschedulable")
    assert (api.get("statefulsets", NS, STS) or {})["spec"]["replicas"] == 0
    operator.set_time(datetime.now(UTC) + timedelta(minutes=6))  # past startTimeoutSeconds

    def rolled_back() -> dict[str, Any] | None:
        st = status(api, "redisrestores", "r")
        return st if st.get("phase") == "Failed" and condition(st, "Failed") else None

    st = wait(operator, rolled_back, 60, "the restore failed")
    failed = condition(st, "Failed")
    assert failed["reason"] == "Unschedulable" and "untolerated taint" in failed["message"]
    assert "the data Redis loads was not touched" in st["message"]
    step = datetime.fromisoformat(swapping["stepStartTime"].replace("Z", "+00:00"))
    ended = datetime.fromisoformat(st["completionTime"].replace("Z", "+00:00"))
    assert (ended - step).total_seconds() < 900  # the swap step's deadline

    def scaled_back() -> bool:
        return bool((api.get("statefulsets", NS, STS) or {})["spec"]["replicas"] == 1)

    wait(operator, scaled_back, 30, "the StatefulSet scaled back")
    wait_ready(api, NS, STS, 1)  # rescheduled on an untainted node, on its own volume
    back = redis.Redis(port=statefulsets.port(f"{STS}-0", NS), decode_responses=True)
    assert back.get("newer-than-the-backup") == "kept" and back.dbsize() == 501
