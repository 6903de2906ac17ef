"""Operating it, end to end with the real ``backupctl operator``: run-now, restore drills
and the metrics.

The same substrate as test_backup_controller_e2e.py (API emulator, kubelet stand-in
running each Job's ``backupctl run`` as a local process, ``redis-server``, moto's S3),
whose helpers this module uses.

- run-now: each new value of the ``backupctl.dev/run-now`` annotation makes exactly one
  Job, also across a controller restart (the handled value is in the status);
- restore drills (``spec.verify``): an hourly drill passes on a good backup, and fails
  on the same backup once its archive is damaged in the store, with status, a Warning
  Event and the metric, leaving the backups' own ``Failed`` condition alone;
- /metrics: a RedisBackup has its series (last success 0) before its first run, they
  follow the run; a RedisRestore has its phase series; every metric name the alerts and
  the dashboard of manifests/components/monitoring use is served by the running
  controller (but the leader gauge, which the leader election defines).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from unit.test_monitoring import OTHERS, used_metric_names

from support.controller_e2e import (
    NS,
    backup_jobs,
    events,
    job_done,
    redis_backup,
    s3_storage,
    secret,
    wait,
)
from support.controller_e2e import backup_status as status
from support.controller_e2e import pod_statefulset as redis_statefulset
from support.kube.fixtures import K8sApi
from support.kube.kubelet import Kubelet
from support.kube.operator_process import Operator
from support.object_stores import S3Emulator
from support.redis_servers import RedisFactory, populate

RUN_NOW = "backupctl.dev/run-now"


def served(metrics: str) -> dict[str, float]:
    """``name{labels}`` -> value of every sample on /metrics."""
    out = {}
    for line in metrics.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def sample(op: Operator, metric: str, **labels: str) -> float | None:
    """One sample; None also while the endpoint does not answer (a starting controller)."""
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    try:
        text = op.metrics()
    except OSError:  # URLError: connection refused
        return None
    return served(text).get(f"{metric}{{{inner}}}")


def annotate(client: K8sApi, name: str, value: str) -> None:
    client.patch("redisbackups", NS, name, {"metadata": {"annotations": {RUN_NOW: value}}})


def test_run_now_makes_one_job_per_value_across_a_restart_and_metrics_follow(
    api: K8sApi,
    kubelet: Kubelet,
    operator: Operator,
    redis_factory: RedisFactory,
    s3_server: S3Emulator,
) -> None:
    bucket = s3_server.new_bucket()
    server = redis_factory()
    keys = populate(server.client(), 300)
    redis_statefulset(api, "redis-a", server)
    secret(api, "s3-creds", **{"access-key-id": "testing", "secret-access-key": "testing"})
    operator.set_time(datetime(2030, 1, 1, 10, tzinfo=UTC))  # the nightly slot is 16 h away
    operator.start()
    api.create(
        redis_backup(
            "nightly",
            target={"kind": "StatefulSet", "name": "redis-a"},
            schedule="0 2 * * *",
            method="replication",
            storage=s3_storage(s3_server, bucket),
        ),
        NS,
    )
    labels = {"namespace": NS, "name": "nightly"}
    wait(operator, lambda: status(api, "nightly").get("nextScheduleTime"), 30, "scheduled")

    # Before any run: the series exist, the last success is 0, the interval is a day.
    def first_metrics() -> float | None:
        return sample(operator, "backupctl_backup_schedule_interval_seconds", **labels)

    assert wait(operator, first_metrics, 10, "metrics of nightly") == 86400.0
    assert sample(operator, "backupctl_backup_last_success_timestamp_seconds", **labels) == 0.0
    assert sample(operator, "backupctl_backup_created_timestamp_seconds", **labels)
    assert backup_jobs(api, "nightly") == []

    # Run now, value "one": exactly one Job, recorded with its value.
    annotate(api, "nightly", "one")
    (job,) = wait(operator, lambda: backup_jobs(api, "nightly"), 30, "the run-now Job")
    name = job["metadata"]["name"]
    wait(operator, lambda: job_done(api, name), 120, f"Job {name} done")

    def recorded() -> dict[str, Any] | None:
        st = status(api, "nightly")
        done = st.get("lastSuccessfulBackup", {}).get("jobName") == name
        return st if done and st.get("lastRunNow") == "one" else None

    st = wait(operator, recorded, 30, "the run-now backup recorded")
    assert st["history"][0]["trigger"] == "run-now" and st["history"][0]["jobName"] == name
    # Events are posted behind the passes (controller/event_poster.py): soon, not at once
    wait(
        operator,
        lambda: any(r == "RunNow" and "run-now=one" in m for _, r, m in events(api, "nightly")),
        40,
        "the RunNow Event",
    )

    def success_metric() -> float | None:
        value = sample(operator, "backupctl_backup_last_success_timestamp_seconds", **labels)
        return value if value else None

    assert wait(operator, success_metric, 10, "last success in /metrics") > 0
    assert sample(operator, "backupctl_backup_last_keys", **labels) == keys

    # A restart: the same value makes nothing. Positive sign first: the new process
    # has made a pass (it serves the RedisBackup's series again).
    operator.stop()
    operator.start()
    wait(operator, lambda: operator.alive and first_metrics(), 30, "restarted controller")
    wait(operator, success_metric, 10, "gauges from the status after the restart")
    assert len(backup_jobs(api, "nightly")) == 1

    # A new value: exactly one more Job.
    annotate(api, "nightly", "two")

    def two_jobs() -> list[dict[str, Any]] | None:
        jobs = backup_jobs(api, "nightly")
        return jobs if len(jobs) >= 2 else None

    jobs = wait(operator, two_jobs, 30, "the second run-now Job")
    for job_name in [str(j["metadata"]["name"]) for j in jobs]:

        def finished(n: str = job_name) -> dict[str, Any] | None:
            return job_done(api, n)

        wait(operator, finished, 120, f"Job {job_name} done")
    wait(operator, lambda: status(api, "nightly").get("lastRunNow") == "two", 30, "two handled")
    assert len(backup_jobs(api, "nightly")) == 2

    # A RedisRestore gets its phase series (its target does not exist: it fails).
    api.create(
        {
            "apiVersion": "backupctl.dev/v1alpha1",
            "kind": "RedisRestore",
            "metadata": {"name": "r1"},
            "spec": {"redisClusterName": "missing", "fromBackup": "nightly", "latest": True},
        },
        NS,
    )

    def restore_series() -> dict[str, float] | None:
        found = {
            k: v
            for k, v in served(operator.metrics()).items()
            if k.startswith("backupctl_restore_phase{") and 'name="r1"' in k
        }
        return found or None

    phases = wait(operator, restore_series, 30, "the RedisRestore's series")
    assert sum(phases.values()) == 1.0

    # Every metric the alerts and the dashboard use is served (the leader gauge is the
    # leader election's, `up` Prometheus's own).
    names = {re.split(r"[{ ]", k)[0] for k in served(operator.metrics())}
    missing = used_metric_names() - names - OTHERS
    assert missing == set(), f"not on /metrics: {sorted(missing)}"


def verify_jobs(api: K8sApi, name: str) -> list[dict[str, Any]]:
    return backup_jobs(api, name, component="verify")


def test_a_restore_drill_passes_then_fails_on_a_corrupted_archive(
    api: K8sApi,
    kubelet: Kubelet,
    operator: Operator,
    redis_factory: RedisFactory,
    s3_server: S3Emulator,
) -> None:
    bucket = s3_server.new_bucket()
    server = redis_factory()
    keys = populate(server.client(), 200)
    redis_statefulset(api, "redis-a", server)
    secret(api, "s3-creds", **{"access-key-id": "testing", "secret-access-key": "testing"})
    operator.set_time(datetime(2030, 1, 1, 10, 0, 30, tzinfo=UTC))
    operator.start()
    api.create(
        redis_backup(
            "drilled",
            target={"kind": "StatefulSet", "name": "redis-a"},
            schedule="0 2 * * *",
            method="replication",
            storage=s3_storage(s3_server, bucket),
            verify={"schedule": "0 * * * *"},  # hourly drills
        ),
        NS,
    )
    labels = {"namespace": NS, "name": "drilled"}
    wait(operator, lambda: status(api, "drilled").get("nextScheduleTime"), 30, "scheduled")
    annotate(api, "drilled", "first-backup")
    (job,) = wait(operator, lambda: backup_jobs(api, "drilled"), 30, "the backup Job")
    wait(operator, lambda: job_done(api, job["metadata"]["name"]), 120, "the backup")
    backup = wait(
        operator,
        lambda: status(api, "drilled").get("lastSuccessfulBackup"),
        30,
        "the backup recorded",
    )
    assert verify_jobs(api, "drilled") == []  # the 10:00 slot was before the resource

    def drill(result: str) -> dict[str, Any] | None:
        last = status(api, "drilled").get("lastVerification") or {}
        return last if last.get("result") == result else None

    # 11:00: the drill reads the backup back and passes.
    operator.set_time(datetime(2030, 1, 1, 11, 0, 5, tzinfo=UTC))
    passed = wait(operator, lambda: drill("Passed"), 120, "a passing drill")
    assert passed["jobName"] == "drilled-20300101110000-verify"
    assert passed["backupId"] == backup["id"] and passed["bytes"] > 0
    assert passed["keys"] == keys == sum(passed["types"].values())
    wait(
        operator,
        lambda: any(r == "VerificationPassed" for _, r, _ in events(api, "drilled")),
        40,
        "the VerificationPassed Event",
    )
    stamp = wait(
        operator,
        lambda: sample(operator, "backupctl_verification_last_timestamp_seconds", **labels),
        10,
        "the drill's metric",
    )
    assert stamp > 0
    assert sample(operator, "backupctl_verification_last_failed", **labels) == 0.0

    # Damage the archive in the store; the 12:00 drill fails and says why.
    s3 = s3_server.client()
    objects = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    (archive,) = [k for k in objects if backup["id"] in k and not k.endswith("manifest.json")]
    body = s3.get_object(Bucket=bucket, Key=archive)["Body"].read()
    damaged = body[: len(body) // 2] + bytes(b ^ 0xFF for b in body[len(body) // 2 :])
    s3.put_object(Bucket=bucket, Key=archive, Body=damaged)
    operator.set_time(datetime(2030, 1, 1, 12, 0, 5, tzinfo=UTC))
    failed = wait(operator, lambda: drill("Failed"), 180, "a failing drill")
    assert failed["jobName"] == "drilled-20300101120000-verify"
    assert "sha256" in failed["message"] or "archive" in failed["message"], failed

    def warnings() -> list[str]:
        return [
            m for t, r, m in events(api, "drilled") if (t, r) == ("Warning", "VerificationFailed")
        ]

    wait(operator, warnings, 40, "the VerificationFailed Event")
    assert failed["jobName"] in warnings()[-1]

    def failed_metric() -> float | None:
        value = sample(operator, "backupctl_verification_last_failed", **labels)
        return value if value == 1.0 else None

    wait(operator, failed_metric, 10, "the failed drill in /metrics")
    # The backups themselves are not marked failed by the drill.
    conditions = {c["type"]: c for c in status(api, "drilled")["conditions"]}
    assert conditions["Failed"]["status"] == "False"
