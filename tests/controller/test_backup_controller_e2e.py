"""The RedisBackup controller end to end: the real ``backupctl operator`` process.

Everything is real and on 127.0.0.1: the Kubernetes API emulator (CRD schemas and CEL rules),
the kubelet stand-in running each Job's ``backupctl run``/``prune`` as a local process,
``redis-server``, moto's S3, Azurite and the GCS emulator. Redis targets are a StatefulSet
plus its pod created in the emulator, with ``status.podIP: 127.0.0.1`` and the real server's
port; ``method: bgsave`` gets the pod's PVC mapped to the server's data directory.

Time is driven by the operator's test-only fake clock (an offset file): tests move it to just
before a cron slot, then past it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes_validate
import pytest

from backupctl.redis.cluster import cluster_shards

from support.controller_e2e import (
    NS,
    backup_jobs,
    condition,
    events,
    job_done,
    redis_backup,
    s3_storage,
    secret,
    wait,
)
from support.controller_e2e import backup_status as status
from support.controller_e2e import pod_statefulset as redis_statefulset
from support.kube.api_client import ApiStatusError
from support.kube.fixtures import K8sApi
from support.kube.kubelet import Kubelet
from support.kube.operator_process import BACKUPCTL, Operator
from support.object_stores import AzuriteEmulator, GCSEmulator, S3Emulator
from support.redis_cluster import add_replicas, fill_cluster, make_cluster, wait_replicas_in_sync
from support.redis_servers import RedisFactory, RedisServer, populate, wait_for

K8S_VERSION = kubernetes_validate.utils.latest_version()


# --- helpers -------------------------------------------------------------------------


def settled_events(
    op: Operator, api: K8sApi, name: str, reasons: dict[str, int]
) -> list[tuple[str, str, str]]:
    """The Events of ``name`` once they include ``reasons`` (count each); kopf posts
    Events after the status is written, so they can trail it a little. More than
    expected fails at once."""

    def counted() -> list[tuple[str, str, str]] | None:
        story = events(api, name)
        counts = {r: sum(1 for _, e, _ in story if e == r) for r in reasons}
        assert all(counts[r] <= n for r, n in reasons.items()), story
        return story if counts == reasons else None

    return wait(op, counted, 10, f"Events {reasons} for {name}", lambda: events(api, name))


def store_ids(url: str, env: dict[str, str], target: str) -> list[str]:
    """``backupctl list --json`` on a store, as a user would check it."""
    out = subprocess.run(
        [BACKUPCTL, "list", url, "--target", target, "--json"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [b["id"] for b in json.loads(out.stdout)["backups"]]


def assert_valid_jobs(api: K8sApi) -> None:
    """Every Job the controller made validates against the Kubernetes schemas."""
    jobs = api.list("jobs", NS)
    assert jobs
    for job in jobs:
        meta = job["metadata"]
        created = {
            "apiVersion": job["apiVersion"],
            "kind": job["kind"],
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "labels", "annotations", "ownerReferences")
                if k in meta
            },
            "spec": job["spec"],
        }
        kubernetes_validate.validate(created, K8S_VERSION, strict=True)
        assert meta["ownerReferences"][0]["kind"] == "RedisBackup"


def operator_requests(api: K8sApi) -> list[str]:
    """API requests made so far by the operator (kopf and backupctl's client)."""

    def requests() -> list[str]:
        return [
            f"{r.method} {r.url.path}"
            for r in api.emulator.requests
            if str(r.headers.get("User-Agent", "")).startswith(("kopf/", "backupctl/"))
        ]

    return list(api.call(requests))


# --- 1. scheduled backups to S3: replication with retention, and bgsave ------------------


def test_scheduled_backups_run_at_each_cron_slot_upload_to_s3_and_apply_retention(
    api: K8sApi,
    kubelet: Kubelet,
    operator: Operator,
    redis_factory: RedisFactory,
    s3_server: S3Emulator,
) -> None:
    bucket = s3_server.new_bucket()
    stream, disk = redis_factory(), redis_factory()
    keys_stream = populate(stream.client(), 2000)
    keys_disk = populate(disk.client(), 500)
    redis_statefulset(api, "redis-a", stream)
    kubelet.volumes[redis_statefulset(api, "redis-b", disk)] = disk.dir
    secret(api, "s3-creds", **{"access-key-id": "testing", "secret-access-key": "testing"})

    first = datetime(2030, 1, 1, 2, tzinfo=UTC)
    operator.set_time(first - timedelta(seconds=30))
    operator.start()
    api.create(
        redis_backup(
            "nightly",
            target={"kind": "StatefulSet", "name": "redis-a"},
            schedule="0 2 * * *",
            method="replication",
            storage=s3_storage(s3_server, bucket),
            retention={"keepLast": 1},
        ),
        NS,
    )
    api.create(
        redis_backup(
            "disk",
            redisClusterName="redis-b",  # looked up: no RedisCluster/... CRDs, then StatefulSet
            schedule="0 2 * * *",
            storage=s3_storage(s3_server, bucket, prefix="disk"),
        ),
        NS,
    )
    for name in ("nightly", "disk"):

        def scheduled(n: str = name) -> dict[str, Any] | None:
            s = status(api, n)  # "disk" reads its volume's owner first (no runAsUser set)
            return s if s.get("nextScheduleTime") and s.get("target") else None

        st = wait(operator, scheduled, 30, f"{name} scheduled")
        assert st["nextScheduleTime"] == "2030-01-01T02:00:00Z"
        assert st["phase"] == "Scheduled" and condition(st, "Ready")["status"] == "True"
    assert status(api, "disk")["target"] == "StatefulSet/redis-b, pod redis-b-0"
    assert [j for j in api.list("jobs", NS) if not j["metadata"]["name"].endswith("-probe")] == []

    second = first + timedelta(days=1)
    for slot in (first, second):
        operator.set_time(slot + timedelta(seconds=1))
        stamp = slot.strftime("%Y%m%d%H%M%S")
        for name in ("nightly", "disk"):
            job = f"{name}-{stamp}"

            def job_finished(j: str = job) -> dict[str, Any] | None:
                return job_done(api, j)

            def shows_job(n: str = name, j: str = job) -> bool:
                return status(api, n).get("lastSuccessfulBackup", {}).get("jobName") == j

            def status_and_logs(n: str = name, j: str = job) -> tuple[dict[str, Any], str]:
                return status(api, n), kubelet.logs(j)

            wait(operator, job_finished, 60, f"{job} finished")
            wait(operator, shows_job, 20, f"{name}'s status shows {job}", status_and_logs)
        prune = f"nightly-{stamp}-prune"

        def prune_recorded(p: str = prune) -> bool:
            return status(api, "nightly").get("lastRetention", {}).get("jobName") == p

        wait(operator, prune_recorded, 60, f"{prune} recorded")

    # One Job per slot, each of which uploaded; retention (keepLast 1) removed the older one.
    for name in ("nightly", "disk"):
        assert sorted(j["metadata"]["name"] for j in backup_jobs(api, name)) == [
            f"{name}-20300101020000",
            f"{name}-20300102020000",
        ]
    nightly, disk_st = status(api, "nightly"), status(api, "disk")
    ids = store_ids(f"s3://{bucket}", s3_server.env, "ns/redis-a")
    assert ids == [nightly["lastSuccessfulBackup"]["id"]]
    assert len(store_ids(f"s3://{bucket}/disk", s3_server.env, "ns/redis-b")) == 2
    last = nightly["lastSuccessfulBackup"]
    assert last["keys"] == keys_stream and last["size"] > 0 and len(last["sha256"]) == 64
    assert disk_st["lastSuccessfulBackup"]["keys"] == keys_disk
    assert nightly["lastRetention"]["removed"] == 1 and nightly["lastRetention"]["kept"] == 1
    assert nightly["lastScheduleTime"] == "2030-01-02T02:00:00Z"
    assert nightly["nextScheduleTime"] == "2030-01-03T02:00:00Z"
    assert [(h["slot"], h["phase"]) for h in nightly["history"]] == [
        ("2030-01-02T02:00:00Z", "Succeeded"),
        ("2030-01-01T02:00:00Z", "Succeeded"),
    ]
    assert nightly["phase"] == "Scheduled"
    assert condition(nightly, "Failed")["status"] == "False"

    # The Events tell the story.
    story = settled_events(
        operator, api, "nightly", {"JobCreated": 4, "BackupSucceeded": 2, "RetentionApplied": 2}
    )
    created = [m for _, r, m in story if r == "JobCreated"]
    assert len([m for m in created if "-prune " not in m]) == 2, created
    assert len([m for m in created if "-prune " in m and "apply the retention" in m]) == 2
    assert any("removed 1" in m for _, r, m in story if r == "RetentionApplied")

    metrics = operator.metrics()
    size = re.search(
        r'backupctl_backup_last_size_bytes\{name="nightly",namespace="ns"\} (\S+)', metrics
    )
    assert size and float(size.group(1)) == last["size"]
    failed = 'backupctl_backup_failures_total{name="nightly",namespace="ns",reason="JobFailed"}'
    assert f"{failed} 0.0" in metrics
    operator.healthz()  # the Deployment's probes
    assert_valid_jobs(api)
    bgsave = api.get("jobs", NS, "disk-20300101020000")
    assert bgsave is not None
    volumes = bgsave["spec"]["template"]["spec"]["volumes"]
    assert {
        "name": "data",
        "persistentVolumeClaim": {"claimName": "data-redis-b-0", "readOnly": True},
    } in volumes

    # Deleting the RedisBackup: kopf releases it, its Jobs are collected, the backups stay.
    api.delete("redisbackups", NS, "nightly")
    wait(operator, lambda: api.get("redisbackups", NS, "nightly") is None, 20, "nightly deleted")
    wait(operator, lambda: not backup_jobs(api, "nightly"), 20, "nightly's Jobs collected")
    assert store_ids(f"s3://{bucket}", s3_server.env, "ns/redis-a") == ids
    assert 'name="nightly"' not in operator.metrics()
    assert operator.alive
    s3_server.remove_bucket(bucket)


# --- 2. one-off backups to Azurite and the GCS emulator --------------------------------


def test_one_off_backups_run_once_to_azurite_and_to_the_gcs_emulator(
    api: K8sApi,
    kubelet: Kubelet,
    operator: Operator,
    redis_factory: RedisFactory,
    azurite_server: AzuriteEmulator,
    gcs_server: GCSEmulator,
) -> None:
    server = redis_factory()
    keys = populate(server.client(), 1000)
    redis_statefulset(api, "cache", server)
    container, bucket = azurite_server.new_bucket(), gcs_server.new_bucket()
    secret(api, "azure", connection=azurite_server.connection_string)
    operator.start()
    api.create(
        redis_backup(
            "to-azure",
            target={"name": "cache"},
            method="replication",
            storage={
                "azureBlob": {
                    "container": container,
                    "connectionStringSecret": {"name": "azure", "key": "connection"},
                }
            },
        ),
        NS,
    )
    api.create(
        redis_backup(
            "to-gcs",
            target={"name": "cache"},
            method="replication",
            storage={"gcs": {"bucket": bucket, "endpoint": gcs_server.endpoint}},
        ),
        NS,
    )
    done = {}
    for name in ("to-azure", "to-gcs"):

        def finished(n: str = name) -> dict[str, Any] | None:
            s = status(api, n)
            return s if s.get("phase") in ("Succeeded", "Failed") else None

        def job_logs(n: str = name) -> list[str]:
            return [kubelet.logs(j["metadata"]["name"]) for j in backup_jobs(api, n)]

        done[name] = wait(operator, finished, 60, f"{name} finished", job_logs)
        st = done[name]
        assert st["phase"] == "Succeeded", st
        assert st["lastSuccessfulBackup"]["keys"] == keys
        assert condition(st, "Progressing")["status"] == "False"
        assert "nextScheduleTime" not in st
        assert len(backup_jobs(api, name)) == 1
    azure_ids = store_ids(f"az://{container}", azurite_server.env, "ns/cache")
    gcs_ids = store_ids(f"gs://{bucket}", gcs_server.env, "ns/cache")
    assert azure_ids == [done["to-azure"]["lastSuccessfulBackup"]["id"]]
    assert gcs_ids == [done["to-gcs"]["lastSuccessfulBackup"]["id"]]

    # Once means once: a later look (time moved on, a restart) makes no second Job.
    operator.set_time(datetime.now(UTC) + timedelta(days=2))
    operator.stop()
    operator.start()
    time.sleep(3)
    assert len(backup_jobs(api, "to-azure")) == 1 and len(backup_jobs(api, "to-gcs")) == 1
    assert_valid_jobs(api)
    azurite_server.remove_bucket(container)
    gcs_server.remove_bucket(bucket)


# --- 3. the controller is killed while a Job runs -------------------------------------


def test_killing_the_operator_during_a_run_makes_no_duplicate_job_and_loses_no_status(
    api: K8sApi,
    kubelet: Kubelet,
    operator: Operator,
    redis_factory: RedisFactory,
    s3_server: S3Emulator,
) -> None:
    bucket = s3_server.new_bucket()
    server = redis_factory()
    keys = populate(server.client(), 1000)
    server.client().config_set("rdb-key-save-delay", 4000)  # ~4 s per snapshot: a slow run
    redis_statefulset(api, "redis", server)
    secret(api, "s3-creds", **{"access-key-id": "testing", "secret-access-key": "testing"})
    slot = datetime(2030, 3, 1, 6, tzinfo=UTC)
    operator.set_time(slot - timedelta(seconds=20))
    operator.start()
    api.create(
        redis_backup(
            "slow",
            target={"kind": "StatefulSet", "name": "redis"},
            schedule="0 */6 * * *",
            method="replication",
            storage=s3_storage(s3_server, bucket),
        ),
        NS,
    )
    wait(operator, lambda: status(api, "slow").get("nextScheduleTime"), 30, "scheduled")
    operator.set_time(slot + timedelta(seconds=1))
    job = "slow-20300301060000"
    wait(
        operator,
        lambda: kubelet.runs(job),
        20,
        "the Job's pod runs",
        lambda: (status(api, "slow"), api.list("jobs", NS)),
    )
    assert status(api, "slow")["lastScheduleTime"] == "2030-03-01T06:00:00Z"
    operator.kill()  # SIGKILL while the Job runs
    time.sleep(1)
    assert not job_done(api, job)
    operator.start()
    st = wait(
        operator,
        lambda: (s := status(api, "slow")).get("lastSuccessfulBackup") and s,
        60,
        "the result recorded by the restarted operator",
        lambda: kubelet.logs(job),
    )
    assert [j["metadata"]["name"] for j in backup_jobs(api, "slow")] == [job]
    assert len(kubelet.runs(job)) == 1
    assert st["lastSuccessfulBackup"]["jobName"] == job
    assert st["lastSuccessfulBackup"]["keys"] == keys
    assert [(h["jobName"], h["phase"]) for h in st["history"]] == [(job, "Succeeded")]
    assert st["phase"] == "Scheduled"
    assert store_ids(f"s3://{bucket}", s3_server.env, "ns/redis") == [
        st["lastSuccessfulBackup"]["id"]
    ]
    settled_events(operator, api, "slow", {"JobCreated": 1, "BackupSucceeded": 1})
    s3_server.remove_bucket(bucket)


# --- 4. a three-day outage ------------------------------------------------------------


def test_after_a_three_day_outage_exactly_one_catch_up_job_runs(
    api: K8sApi,
    kubelet: Kubelet,
    operator: Operator,
    redis_factory: RedisFactory,
    s3_server: S3Emulator,
) -> None:
    bucket = s3_server.new_bucket()
    server = redis_factory()
    populate(server.client(), 100)
    redis_statefulset(api, "redis", server)
    secret(api, "s3-creds", **{"access-key-id": "testing", "secret-access-key": "testing"})
    first = datetime(2030, 5, 1, 1, tzinfo=UTC)
    operator.set_time(first - timedelta(seconds=20))
    operator.start()
    api.create(
        redis_backup(
            "hourly",
            target={"name": "redis"},
            schedule="0 * * * *",
            method="replication",
            storage=s3_storage(s3_server, bucket),
        ),
        NS,
    )
    wait(operator, lambda: status(api, "hourly").get("nextScheduleTime"), 30, "scheduled")
    operator.set_time(first + timedelta(seconds=1))
    wait(operator, lambda: job_done(api, "hourly-20300501010000"), 60, "the first run")
    wait(operator, lambda: status(api, "hourly").get("lastSuccessfulBackup"), 20, "recorded")

    operator.stop()
    operator.set_time(first + timedelta(days=3, minutes=30))  # 72 hourly slots missed
    operator.start()
    catch_up = "hourly-20300504010000"
    wait(operator, lambda: job_done(api, catch_up), 60, "the catch-up run")
    time.sleep(3)  # a burst would show by now
    names = sorted(j["metadata"]["name"] for j in backup_jobs(api, "hourly"))
    assert names == ["hourly-20300501010000", catch_up]
    st = wait(
        operator,
        lambda: (
            (s := status(api, "hourly")).get("lastSuccessfulBackup", {}).get("jobName") == catch_up
            and s
        ),
        20,
        "catch-up recorded",
    )
    assert st["lastScheduleTime"] == "2030-05-04T01:00:00Z"
    assert st["nextScheduleTime"] == "2030-05-04T02:00:00Z"
    story = settled_events(operator, api, "hourly", {"JobCreated": 2})
    created = sorted(m for _, r, m in story if r == "JobCreated")
    assert created == [
        "Created Job hourly-20300501010000 for the run at 2030-05-01T01:00:00Z",
        "Created Job hourly-20300504010000 for the run at 2030-05-04T01:00:00Z "
        "(72 runs were missed; only the latest is made up for)",
    ]
    assert len(store_ids(f"s3://{bucket}", s3_server.env, "ns/redis")) == 2
    assert_valid_jobs(api)
    s3_server.remove_bucket(bucket)


# --- 5. an OpsTree RedisCluster: one Job per shard ----------------------------------------

OPSTREE_CLUSTER_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "redisclusters.redis.redis.opstreelabs.in"},
    "spec": {
        "group": "redis.redis.opstreelabs.in",
        "scope": "Namespaced",
        "names": {"kind": "RedisCluster", "plural": "redisclusters", "singular": "rediscluster"},
        "versions": [
            {
                "name": "v1beta2",
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": {"x-kubernetes-preserve-unknown-fields": True}},
            }
        ],
    },
}


def redis_pods(api: K8sApi, sts_name: str, servers: list[RedisServer]) -> None:
    """A StatefulSet ``sts_name`` whose ready pods ``<sts_name>-<i>`` are ``servers``."""
    labels = {"app": sts_name}
    sts = api.create(
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": sts_name},
            "spec": {
                "replicas": len(servers),
                "serviceName": f"{sts_name}-headless",
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "redis", "image": "redis:7"}]},
                },
            },
        },
        NS,
    )
    owner = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": sts_name,
             "uid": sts["metadata"]["uid"], "controller": True}  # fmt: skip
    for i, server in enumerate(servers):
        container = {
            "name": "redis",
            "image": "redis:7",
            "args": ["--cluster-enabled", "yes"],
            "ports": [{"name": "redis", "containerPort": server.port}],
        }
        name = f"{sts_name}-{i}"
        api.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": labels, "ownerReferences": [owner]},
                "spec": {"nodeName": "node-a", "containers": [container]},
            },
            NS,
        )
        api.patch(
            "pods",
            NS,
            name,
            {
                "status": {
                    "phase": "Running",
                    "podIP": "127.0.0.1",
                    "conditions": [{"type": "Ready", "status": "True"}],
                }
            },
            subresource="status",
        )


def test_an_opstree_cluster_of_size_6_is_backed_up_by_one_job_per_shard_into_one_set(
    api: K8sApi,
    kubelet: Kubelet,
    operator: Operator,
    redis_factory: RedisFactory,
    s3_server: S3Emulator,
) -> None:
    leaders = make_cluster(redis_factory)
    followers = add_replicas(redis_factory, leaders)
    fill_cluster(leaders, 20_000)
    wait_replicas_in_sync(leaders, followers)
    # A failover moved shard 2's primary to its follower pod: pod names say nothing about
    # which node serves which slots now, and each shard Job must find out from Redis.
    followers[1].client().execute_command("CLUSTER", "FAILOVER")
    wait_for(lambda: followers[1].info("replication")["role"] == "master", timeout=20,
             what="the failover")  # fmt: skip
    primaries = [leaders[0], followers[1], leaders[2]]
    wait_for(
        lambda: all(
            [(s.master.port if s.master else None) for s in cluster_shards(n.client())]
            == [p.port for p in primaries]
            for n in leaders + followers
        ),
        timeout=20,
        what="every node to see the new primary",
    )
    total = sum(p.dbsize() for p in primaries)
    assert total == 20_000

    api.apply([OPSTREE_CLUSTER_CRD])
    api.create(
        {
            "apiVersion": "redis.redis.opstreelabs.in/v1beta2",
            "kind": "RedisCluster",
            "metadata": {"name": "redis-cluster"},
            # The seed's "clusterSize 6 = 3 primaries + 3 replicas", spelled as OpsTree reads
            # it: clusterSize is each StatefulSet's default size; the leader count says 3.
            "spec": {
                "clusterSize": 6,
                "redisLeader": {"replicas": 3},
                "redisFollower": {"replicas": 3},
            },
        },
        NS,
    )
    redis_pods(api, "redis-cluster-leader", leaders)
    redis_pods(api, "redis-cluster-follower", followers)
    bucket = s3_server.new_bucket()
    secret(api, "s3-creds", **{"access-key-id": "testing", "secret-access-key": "testing"})
    operator.start()
    api.create(
        redis_backup(
            "rc-backup",
            redisClusterName="redis-cluster",  # method: bgsave (default) -> replication per shard
            storage=s3_storage(s3_server, bucket),
            retention={"keepLast": 2},
        ),
        NS,
    )

    def logs() -> Any:
        return (status(api, "rc-backup"),
                {j["metadata"]["name"]: kubelet.logs(j["metadata"]["name"])
                 for j in api.list("jobs", NS)})  # fmt: skip

    st = wait(
        operator,
        lambda: (s := status(api, "rc-backup")).get("lastRetention") and s,
        60,
        "the run and its prune recorded",
        logs,
    )
    run = st["history"][0]["jobName"]
    assert re.fullmatch(r"rc-backup-\d{14}", run), run
    jobs = sorted(j["metadata"]["name"] for j in backup_jobs(api, "rc-backup"))
    assert jobs == [f"{run}-shard{i}" for i in (1, 2, 3)]
    assert all(job_done(api, j)["status"].get("succeeded") == 1 for j in jobs)  # type: ignore[index]
    assert st["phase"] == "Succeeded" and condition(st, "Ready")["status"] == "True"
    assert st["target"] == (
        "RedisCluster/redis-cluster, 3 shards, one Job each, from pod redis-cluster-leader-0"
    )
    assert [(h["jobName"], h["phase"], h["keys"]) for h in st["history"]] == [
        (run, "Succeeded", total)
    ]
    last = st["lastSuccessfulBackup"]
    assert (last["jobName"], last["keys"], last["id"]) == (run, total, st["history"][0]["backupId"])
    assert st["lastRetention"]["jobName"] == f"{run}-prune" and st["lastRetention"]["kept"] == 1

    out = subprocess.run(
        [BACKUPCTL, "list", f"s3://{bucket}", "--all", "--json"],
        env={**os.environ, **s3_server.env}, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    (listed,) = json.loads(out.stdout)["backups"]  # one set, complete; no stray folder
    assert (listed["id"], listed["target"], listed["complete"], listed["keys"]) == (
        last["id"], "ns/redis-cluster", True, total,
    )  # fmt: skip
    assert [n["name"] for n in listed["nodes"]] == [f"127.0.0.1-{p.port}" for p in primaries]
    assert listed["id"] == "backup-" + run.rsplit("-", 1)[1][:8] + "-" + run[-6:]

    settled_events(
        operator, api, "rc-backup", {"JobCreated": 4, "BackupSucceeded": 1, "RetentionApplied": 1}
    )
    assert_valid_jobs(api)
    s3_server.remove_bucket(bucket)


# --- 6. invalid resources -------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"storage": {"s3": {"bucket": "b"}, "gcs": {"bucket": "bbb"}}},
            "set exactly one of s3, azureBlob, gcs",
        ),
        ({}, "spec.storage: Required value"),
        ({"storage": {"s3": {"bucket": "b"}}, "retention": {"keepLast": -1}}, "keepLast"),
        (
            {"storage": {"s3": {"bucket": "b"}}, "schedule": "every day"},
            "must be a 5-field cron expression",
        ),
    ],
    ids=["two-storages", "no-storage", "negative-keep", "cron-words"],
)
def test_the_schema_refuses_invalid_resources_with_a_readable_message(
    api: K8sApi, spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(ApiStatusError) as refused:
        api.create(redis_backup("bad", redisClusterName="redis", **spec), NS)
    assert refused.value.status == 422
    assert message in refused.value.message, refused.value.message


def test_invalid_specs_end_in_ready_false_with_the_reason_and_no_hot_loop(
    api: K8sApi,
    kubelet: Kubelet,
    operator: Operator,
    redis_factory: RedisFactory,
    s3_server: S3Emulator,
) -> None:
    server = redis_factory()
    redis_statefulset(api, "redis", server)
    bucket = s3_server.new_bucket()
    operator.start()
    storage = s3_storage(s3_server, bucket, creds="missing")
    cases = {
        "bad-cron": ({"schedule": "61 * * * *"}, "InvalidSpec", "'61 * * * *'"),
        "bad-zone": (
            {"schedule": "0 2 * * *", "timeZone": "Mars/Olympus_Mons"},
            "InvalidSpec",
            "unknown time zone 'Mars/Olympus_Mons'",
        ),
        "ghost": (
            {"redisClusterName": "ghost"},
            "TargetNotFound",
            "no RedisCluster or RedisReplication or Redis or RedisFailover or StatefulSet "
            "named ghost in namespace ns",
        ),
        "no-secret": ({"method": "replication"}, "CreateContainerConfigError", 'secret "missing"'),
    }
    for name, (extra, _, _) in cases.items():
        spec = {"target": {"name": "redis"}, "storage": storage, **extra}
        if "redisClusterName" in extra:
            del spec["target"]
        api.create(redis_backup(name, **spec), NS)
    for name, (_, reason, text) in cases.items():

        def ready_reason(n: str = name, r: str = reason) -> dict[str, Any] | None:
            s = status(api, n)
            return s if condition(s, "Ready").get("reason") == r else None

        def current_status(n: str = name) -> dict[str, Any]:
            return status(api, n)

        def warned(n: str = name, r: str = reason, x: str = text) -> bool:
            return any(t == "Warning" and e == r and x in m for t, e, m in events(api, n))

        st = wait(operator, ready_reason, 30, f"{name}: Ready=False {reason}", current_status)
        ready = condition(st, "Ready")
        assert ready["status"] == "False" and text in ready["message"], ready
        # posted after the status is written, by kopf's Event poster
        wait(operator, warned, 10, f"a Warning Event {reason} for {name}")
    assert status(api, "bad-cron")["phase"] == "Failed"
    assert status(api, "ghost")["phase"] == "Pending"
    assert status(api, "no-secret")["phase"] == "Running"

    # Alive, and quiet: a few requests per second at most, whatever is wrong.
    before = len(operator_requests(api))
    time.sleep(4)
    made = operator_requests(api)[before:]
    assert operator.alive
    assert len(made) < 30, f"{len(made)} API requests in 4 s: {sorted(made)}"
    assert api.list("jobs", NS, labels="backupctl.dev/backup=ghost") == []

    # Fixing the problem is picked up: the Secret appears, the Job runs, Ready again.
    secret(api, "missing", **{"access-key-id": "testing", "secret-access-key": "testing"})
    st = wait(
        operator,
        lambda: (s := status(api, "no-secret")).get("phase") == "Succeeded" and s,
        60,
        "no-secret succeeded once its Secret exists",
    )
    assert condition(st, "Ready")["status"] == "True"
    # ... and so is a fixed spec.
    api.patch("redisbackups", NS, "bad-cron", {"spec": {"schedule": "1 * * * *"}})
    wait(
        operator,
        lambda: condition(status(api, "bad-cron"), "Ready").get("status") == "True",
        20,
        "bad-cron fixed",
    )
    s3_server.remove_bucket(bucket)
