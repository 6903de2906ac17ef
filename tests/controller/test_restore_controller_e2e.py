"""RedisRestore end to end: the real ``backupctl operator`` process restores a primary with two
replicas whose pods are real ``redis-server`` processes.

On 127.0.0.1: the Kubernetes API emulator (CRD schemas, GC), the Job kubelet stand-in running
each Job's ``backupctl`` command, the StatefulSet stand-in
(:mod:`support.kube.statefulset_controller`: pods
``redis-<i>`` as ``redis-server`` processes on their PVC folders, ``-1``/``-2`` replicas of
``-0``, graceful deletion, restarts) and moto's S3. Backups are taken with the CLI
(``backupctl run``) on the primary; equality is ``DEBUG DIGEST`` on all three servers.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from backupctl.core.slots import normalize_slots
from backupctl.redis.cluster import cluster_shards

from support.controller_e2e import NS, condition, s3_storage, wait
from support.controller_e2e import event_reasons as events
from support.kube.fixtures import K8sApi
from support.kube.kubelet import Kubelet
from support.kube.operator_process import BACKUPCTL, Operator
from support.kube.statefulset_controller import StatefulSets, wait_ready
from support.object_stores import S3Emulator

STS = "redis"
OPSTREE_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "redisreplications.redis.redis.opstreelabs.in"},
    "spec": {
        "group": "redis.redis.opstreelabs.in",
        "scope": "Namespaced",
        "names": {"kind": "RedisReplication", "plural": "redisreplications",
                  "singular": "redisreplication", "listKind": "RedisReplicationList"},
        "versions": [{"name": "v1beta2", "served": True, "storage": True, "schema": {
            "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}],
    },
}  # fmt: skip


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def operator(operator: Operator) -> Operator:
    """The shared fixture's operator, started at once."""
    operator.start()
    return operator


# --- helpers ----------------------------------------------------------------------------


def redis_statefulset(name: str, appendonly: str, replicas: int = 3) -> dict[str, Any]:
    """A primary (``-0``) with replicas, ``appendonly`` and save points as in the seed."""
    args = ["--appendonly", appendonly, "--appendfsync", "everysec", "--save", "900 1 300 10",
            "--enable-debug-command", "local", "--repl-diskless-sync-delay", "0"]  # fmt: skip
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "annotations": {"test.backupctl.dev/replicaof": "0"}},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "redis",
                            "image": "redis:7.0",
                            "command": ["redis-server"],
                            "args": args,
                            "ports": [{"name": "redis", "containerPort": 6379}],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        }
                    ]
                },
            },
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


def fill(c: redis.Redis, n: int, prefix: str = "") -> None:
    """``n`` strings and a mix of other types, written so replicas get them (DEBUG POPULATE
    is not replicated)."""
    pipe = c.pipeline(transaction=False)
    for start in range(0, n, 1000):
        pipe.mset(
            {f"{prefix}key:{i}": f"value-{i}" * 3 for i in range(start, min(n, start + 1000))}
        )
    for i in range(max(1, n // 100)):
        pipe.hset(f"{prefix}hash:{i}", mapping={f"f{j}": j for j in range(5)})
        pipe.rpush(f"{prefix}list:{i}", *range(5))
        pipe.zadd(f"{prefix}zset:{i}", {f"m{j}": j for j in range(5)})
        pipe.set(f"{prefix}ttl:{i}", "x", ex=86400)
    pipe.execute()


def client(sts: StatefulSets, pod: str) -> redis.Redis:
    return redis.Redis(port=sts.port(pod, NS), decode_responses=True, socket_timeout=30)


def digests(sts: StatefulSets, name: str = STS) -> list[str]:
    return [str(client(sts, f"{name}-{i}").execute_command("DEBUG", "DIGEST")) for i in range(3)]


def in_sync(sts: StatefulSets, name: str = STS) -> list[str]:
    """Wait until the replicas hold the primary's data; returns the three digests."""
    deadline = time.monotonic() + 30
    while True:
        d = digests(sts, name)
        if len(set(d)) == 1 or time.monotonic() > deadline:
            return d
        time.sleep(0.1)


def start_redis(api: K8sApi, sts: StatefulSets, name: str = STS, appendonly: str = "yes") -> None:
    api.create(redis_statefulset(name, appendonly), NS)
    wait_ready(api, NS, name, 3)
    primary = client(sts, f"{name}-0")
    fill(primary, 20_000)
    assert len(set(in_sync(sts, name))) == 1


def take_backup(
    s3: S3Emulator, bucket: str, sts: StatefulSets, name: str = STS
) -> tuple[str, str, int]:
    """``backupctl run`` on the primary: (backup id, its digest, its key count)."""
    primary = client(sts, f"{name}-0")
    digest, keys = str(primary.execute_command("DEBUG", "DIGEST")), int(primary.dbsize())
    out = subprocess.run(
        [BACKUPCTL, "run", "--redis", sts.url(f"{name}-0", NS), "--to", f"s3://{bucket}",
         "--target", f"{NS}/{name}", "--node-name", f"{name}-0", "--json"],
        env={**os.environ, **s3.env}, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    manifest = json.loads(out.stdout)
    assert manifest["keys"] == keys
    return str(manifest["id"]), digest, keys


def restore(
    name: str, s3: S3Emulator, bucket: str, target: str = STS, **ref: Any
) -> dict[str, Any]:
    extra = {"key": ref.pop("key")} if "key" in ref else {}
    spec: dict[str, Any] = {
        "redisClusterName": target,
        "storage": s3_storage(s3, bucket, creds="aws", **extra),
    }
    spec.update(ref)
    return {
        "apiVersion": "backupctl.dev/v1alpha1",
        "kind": "RedisRestore",
        "metadata": {"name": name},
        "spec": spec,
    }


def status(api: K8sApi, name: str) -> dict[str, Any]:
    return dict((api.get("redisrestores", NS, name) or {}).get("status") or {})


def finished(api: K8sApi, op: Operator, name: str, timeout: float = 120) -> dict[str, Any]:
    """Completed, or Failed with its rollback done."""

    def done() -> dict[str, Any] | None:
        st = status(api, name)
        if st.get("phase") == "Completed":
            return st
        if st.get("phase") == "Failed" and condition(st, "Progressing").get("status") == "False":
            return st
        return None

    return wait(op, done, timeout, f"restore {name} to finish (last: {status(api, name)})")


def restore_jobs(api: K8sApi, name: str) -> list[str]:
    return sorted(
        j["metadata"]["name"] for j in api.list("jobs", NS, f"backupctl.dev/restore={name}")
    )


def volume_files(folder: Path) -> dict[str, str]:
    """What Redis loads from a volume (hidden folders excluded)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.relative_to(folder).parts[0].startswith(".")
    }


# --- tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("appendonly", ["yes", "no"])
def test_restore_primary_and_replicas_equals_the_backup_and_never_runs_again(
    appendonly: str,
    api: K8sApi,
    kubelet: Kubelet,
    statefulsets: StatefulSets,
    s3_server: S3Emulator,
    bucket: str,
    operator: Operator,
) -> None:
    start_redis(api, statefulsets, appendonly=appendonly)
    backup_id, digest, keys = take_backup(s3_server, bucket, statefulsets)
    fill(client(statefulsets, "redis-0"), 3_000, prefix="after-backup:")
    assert len(set(in_sync(statefulsets))) == 1 and digests(statefulsets)[0] != digest

    started = time.monotonic()
    api.create(restore("r1", s3_server, bucket, key=f"{backup_id}.tar.gz"), NS)  # the seed's key
    st = finished(api, operator, "r1")
    elapsed = time.monotonic() - started
    assert st["phase"] == "Completed", st
    assert in_sync(statefulsets) == [digest] * 3
    assert st["backupId"] == backup_id and st["expectedKeys"] == keys
    assert st["restoredKeys"] == keys and st["route"] == "ScaleDown"
    assert condition(st, "Ready")["status"] == "True"
    assert [p["phase"] for p in st["pods"]] == ["Verified"] * 3
    assert [p["role"] for p in st["pods"]] == ["primary", "replica", "replica"]
    assert st["statefulSets"] == [{"name": STS, "replicas": 3, "scaledDown": False}]
    for i, pod in enumerate(st["pods"]):  # the old data, kept beside the restored
        previous = statefulsets.folder(f"data-redis-{i}") / pod["previousData"]
        assert previous.is_dir() and (previous / "dump.rdb").exists()
    expected = {"Started", "Staging", "Quiescing", "Restarting", "Verifying", "Completed"}
    wait(
        operator,
        lambda: expected <= set(events(api, "r1")),
        10,
        f"an Event per phase: {events(api, 'r1')}",
    )
    jobs = restore_jobs(api, "r1")
    assert all(len(kubelet.runs(j, NS)) == 1 for j in jobs), jobs

    # After the restore: writes persist, a pod restart restores nothing again.
    client(statefulsets, "redis-0").set("written-after-restore", "1")
    time.sleep(1.1)  # appendfsync everysec
    uid = api.get("pods", NS, "redis-0")["metadata"]["uid"]  # type: ignore[index]
    api.delete("pods", NS, "redis-0")
    wait(operator, lambda: (p := api.get("pods", NS, "redis-0")) and p["metadata"]["uid"] != uid,
         20, "redis-0 recreated")  # fmt: skip
    wait_ready(api, NS, STS, 3)
    time.sleep(1.0)  # the controller had every chance to act
    assert client(statefulsets, "redis-0").get("written-after-restore") == "1"
    assert restore_jobs(api, "r1") == jobs
    assert status(api, "r1") == st
    print(f"restore with appendonly {appendonly}: {elapsed:.1f} s")


def test_in_place_restore_of_an_operator_managed_target(
    api: K8sApi,
    kubelet: Kubelet,
    statefulsets: StatefulSets,
    s3_server: S3Emulator,
    bucket: str,
    operator: Operator,
) -> None:
    """An OpsTree RedisReplication: its operator would undo a scale-down, so the restore
    quiesces each server, swaps underneath it and deletes its pod (primary first)."""
    api.apply([OPSTREE_CRD])
    api.create(
        {
            "apiVersion": "redis.redis.opstreelabs.in/v1beta2",
            "kind": "RedisReplication",
            "metadata": {"name": "cache"},
            "spec": {"clusterSize": 3},
        },
        NS,
    )
    start_redis(api, statefulsets, name="cache", appendonly="yes")
    backup_id, digest, keys = take_backup(s3_server, bucket, statefulsets, name="cache")
    fill(client(statefulsets, "cache-0"), 2_000, prefix="later:")
    uids = [api.get("pods", NS, f"cache-{i}")["metadata"]["uid"] for i in range(3)]  # type: ignore[index]

    api.create(restore("r-in-place", s3_server, bucket, target="cache", backupId=backup_id), NS)
    st = finished(api, operator, "r-in-place")
    assert st["phase"] == "Completed", st
    assert st["route"] == "InPlace" and st["target"] == "RedisReplication/cache"
    assert in_sync(statefulsets, "cache") == [digest] * 3
    assert st["restoredKeys"] == keys
    sts = api.get("statefulsets", NS, "cache")
    assert sts is not None and sts["spec"]["replicas"] == 3 and sts["metadata"]["generation"] == 1
    new_uids = [api.get("pods", NS, f"cache-{i}")["metadata"]["uid"] for i in range(3)]  # type: ignore[index]
    assert all(a != b for a, b in zip(uids, new_uids, strict=True))  # each pod restarted once
    assert [statefulsets.starts[(NS, f"cache-{i}")] for i in range(3)] == [2, 2, 2]
    with client(statefulsets, "cache-0") as c:  # back to its own persistence settings
        assert c.config_get("appendonly") == {"appendonly": "yes"}
        assert c.config_get("save") == {"save": "900 1 300 10"}
    jobs = restore_jobs(api, "r-in-place")
    assert {j.rsplit("-", 1)[0] for j in jobs if j[-1].isdigit()} >= {
        "r-in-place-stage", "r-in-place-quiesce", "r-in-place-swap"}  # fmt: skip


def test_failed_restores_leave_live_data_untouched_and_wait_for_each_other(
    api: K8sApi,
    kubelet: Kubelet,
    statefulsets: StatefulSets,
    s3_server: S3Emulator,
    bucket: str,
    operator: Operator,
) -> None:
    start_redis(api, statefulsets, appendonly="yes")
    ids = [take_backup(s3_server, bucket, statefulsets)[0] for _ in range(4)]
    s3 = s3_server.client()
    prefix = f"{NS}/{STS}"
    archive = [f"{prefix}/{bid}/redis-0.tar.zst" for bid in ids]
    # 0: corrupt archive (a flipped byte), 1: archive missing, 2: wrong checksum in the
    # manifest, 3: taken by a newer Redis; 4: a backup id that does not exist.
    body = bytearray(s3.get_object(Bucket=bucket, Key=archive[0])["Body"].read())
    body[len(body) // 2] ^= 0xFF
    s3.put_object(Bucket=bucket, Key=archive[0], Body=bytes(body))
    s3.delete_object(Bucket=bucket, Key=archive[1])
    for bid, change in ((ids[2], "sha"), (ids[3], "version")):
        key = f"{prefix}/{bid}/manifest.json"
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        if change == "sha":
            manifest["nodes"][0]["archive"]["sha256"] = "0" * 64
        else:
            manifest["redis"]["version"] = manifest["nodes"][0]["redisVersion"] = "99.0.0"
        s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(manifest).encode())

    fill(client(statefulsets, "redis-0"), 1_000, prefix="live:")
    live = in_sync(statefulsets)
    assert len(set(live)) == 1
    volumes = {i: volume_files(statefulsets.folder(f"data-redis-{i}")) for i in range(3)}
    cases = [
        ("bad-corrupt", {"backupId": ids[0]}, "StagingFailed", "corrupt"),
        ("bad-missing", {"backupId": ids[1]}, "StagingFailed", "not found"),
        ("bad-checksum", {"backupId": ids[2]}, "StagingFailed", "checksum"),
        ("bad-version", {"backupId": ids[3]}, "IncompatibleVersion", "99.0.0"),
        ("bad-unknown", {"backupId": "backup-20000101-000000"}, "BackupNotFound", "not found"),
    ]
    for name, ref, _, _ in cases:  # all at once: they run one after another
        api.create(restore(name, s3_server, bucket, **ref), NS)
    orphan = restore("from-missing", s3_server, bucket, target="elsewhere", latest=True)
    del orphan["spec"]["storage"]
    orphan["spec"]["fromBackup"] = "nightly"  # a RedisBackup that does not exist
    api.create(orphan, NS)
    for name, _, reason, needle in cases:
        st = finished(api, operator, name)
        assert st["phase"] == "Failed", (name, st)
        failed = condition(st, "Failed")
        assert failed["reason"] == reason and needle in failed["message"].lower(), (name, failed)
        assert "not touched" in st["message"] or reason == "BackupNotFound", st["message"]
        assert all(p.get("rollback") in (None, "Done") for p in st.get("pods") or [])
    assert any("WaitingForRestore" in events(api, n) for n, *_ in cases)
    runs = sorted(
        (status(api, n)["startTime"], status(api, n)["completionTime"]) for n, *_ in cases
    )
    for (_, end), (begin, _) in itertools.pairwise(runs):
        assert end <= begin  # one at a time on the same target

    waiting = status(api, "from-missing")
    assert waiting["phase"] == "Pending" and not waiting.get("startTime")
    assert condition(waiting, "Ready")["reason"] == "BackupSourceNotFound"
    assert "nightly" in waiting["message"]

    assert in_sync(statefulsets) == live  # the live data never changed
    assert [statefulsets.starts[(NS, f"redis-{i}")] for i in range(3)] == [1, 1, 1]
    sts = api.get("statefulsets", NS, STS)
    assert sts is not None and sts["spec"]["replicas"] == 3
    for i in range(3):
        folder = statefulsets.folder(f"data-redis-{i}")
        assert not [p.name for p in folder.iterdir() if p.name.startswith(".backupctl-")]
        assert volume_files(folder).keys() == volumes[i].keys()


def test_controller_killed_mid_restore_finishes_it_once(
    api: K8sApi,
    kubelet: Kubelet,
    statefulsets: StatefulSets,
    s3_server: S3Emulator,
    bucket: str,
    operator: Operator,
) -> None:
    start_redis(api, statefulsets, appendonly="yes")
    backup_id, digest, keys = take_backup(s3_server, bucket, statefulsets)
    fill(client(statefulsets, "redis-0"), 2_000, prefix="later:")

    api.create(restore("r-kill", s3_server, bucket, latest=True), NS)
    killed = []
    for phase in ("Staging", "Quiescing", "Restarting"):
        wait(operator, lambda p=phase: status(api, "r-kill").get("phase") in (p, "Completed"),  # type: ignore[misc]
             60, f"phase {phase}")  # fmt: skip
        if status(api, "r-kill").get("phase") == "Completed":
            break
        operator.stop(signal.SIGKILL)
        killed.append(phase)
        time.sleep(0.5)
        operator.start()
    st = finished(api, operator, "r-kill")
    assert st["phase"] == "Completed", st
    assert killed, "the restore finished before the controller could be killed"
    print("KILLED", killed)
    assert st["backupId"] == backup_id and st["restoredKeys"] == keys
    assert in_sync(statefulsets) == [digest] * 3
    jobs = restore_jobs(api, "r-kill")
    assert all(len(kubelet.runs(j, NS)) == 1 for j in jobs), {
        j: len(kubelet.runs(j, NS)) for j in jobs
    }
    assert [statefulsets.starts[(NS, f"redis-{i}")] for i in range(3)] == [2, 2, 2]


# --- an OpsTree RedisCluster -------------------------------------------------------------

OPSTREE_CLUSTER_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "redisclusters.redis.redis.opstreelabs.in"},
    "spec": {
        "group": "redis.redis.opstreelabs.in",
        "scope": "Namespaced",
        "names": {"kind": "RedisCluster", "plural": "redisclusters",
                  "singular": "rediscluster", "listKind": "RedisClusterList"},
        "versions": [{"name": "v1beta2", "served": True, "storage": True, "schema": {
            "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}],
    },
}  # fmt: skip
CLUSTER = "redis-cluster"


def cluster_statefulset(name: str) -> dict[str, Any]:
    """``<name>`` of 3 cluster-mode pods, AOF on as in the seed; nodes.conf on the volume."""
    sts = redis_statefulset(name, "yes")
    del sts["metadata"]["annotations"]  # no --replicaof: the cluster says who replicates whom
    sts["spec"]["podManagementPolicy"] = "Parallel"
    container = sts["spec"]["template"]["spec"]["containers"][0]
    container["args"] += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                          "--repl-ping-replica-period", "1"]  # fmt: skip
    return sts


def cluster_pods() -> list[str]:
    return [f"{CLUSTER}-{role}-{i}" for role in ("leader", "follower") for i in range(3)]


def cluster_call(sts: StatefulSets, pod: str, *args: Any) -> Any:
    with client(sts, pod) as c:
        return c.execute_command(*args)


def cluster_view(sts: StatefulSets) -> dict[tuple[tuple[int, int], ...], list[str]]:
    """Slot ranges -> [master pod, replica pods] as CLUSTER SHARDS says, seen from every pod
    (None unless all agree and each shard has its master and one replica online)."""
    by_port = {sts.port(p, NS): p for p in cluster_pods()}
    views = []
    for pod in cluster_pods():
        with client(sts, pod) as c:
            if "cluster_state:ok" not in c.execute_command("CLUSTER", "INFO"):
                return {}
            live = cluster_shards(c)
        views.append(
            {
                normalize_slots(s.slots): [by_port[n.port] for n in s.nodes]
                for s in live
                if s.slots and len(s.nodes) == 2 and all(n.health == "online" for n in s.nodes)
            }
        )
    first = views[0]
    return first if len(first) == 3 and all(v == first for v in views) else {}


def start_cluster(api: K8sApi, sts: StatefulSets) -> None:
    """leader-i serves a third of the slots; follower-i replicates leader-(i+1)%3, so no pod
    ordinal says which shard a follower belongs to."""
    api.apply([OPSTREE_CLUSTER_CRD])
    api.create(
        {
            "apiVersion": "redis.redis.opstreelabs.in/v1beta2",
            "kind": "RedisCluster",
            "metadata": {"name": CLUSTER},
            "spec": {"clusterSize": 3, "redisLeader": {"replicas": 3},
                     "redisFollower": {"replicas": 3}},
        },
        NS,
    )  # fmt: skip
    for role in ("leader", "follower"):
        api.create(cluster_statefulset(f"{CLUSTER}-{role}"), NS)
    for role in ("leader", "follower"):
        wait_ready(api, NS, f"{CLUSTER}-{role}", 3)
    leaders = [f"{CLUSTER}-leader-{i}" for i in range(3)]
    for i, pod in enumerate(leaders):
        end = 16383 if i == 2 else (i + 1) * (16384 // 3) - 1
        cluster_call(sts, pod, "CLUSTER", "ADDSLOTSRANGE", i * (16384 // 3), end)
    for pod in cluster_pods()[1:]:
        cluster_call(sts, leaders[0], "CLUSTER", "MEET", "127.0.0.1", sts.port(pod, NS))
    ids = [cluster_call(sts, p, "CLUSTER", "MYID") for p in leaders]
    for i in range(3):
        master_id, follower = ids[(i + 1) % 3], f"{CLUSTER}-follower-{i}"
        deadline = time.monotonic() + 30
        while master_id not in cluster_call(sts, follower, "CLUSTER", "NODES"):
            assert time.monotonic() < deadline, "the follower never learned its leader"
            time.sleep(0.1)
        cluster_call(sts, follower, "CLUSTER", "REPLICATE", master_id)


def wait_cluster(
    sts: StatefulSets, masters: list[str], timeout: float = 60
) -> dict[Any, list[str]]:
    """The three shards healthy with these masters, every replica holding its master's data."""
    deadline = time.monotonic() + timeout
    while True:
        view: dict[Any, list[str]] = {}
        with contextlib.suppress(redis.RedisError):
            view = cluster_view(sts)
            if view and sorted(v[0] for v in view.values()) == sorted(masters):
                digests = {p: cluster_call(sts, p, "DEBUG", "DIGEST") for p in cluster_pods()}
                if all(digests[m] == digests[r] for m, r in view.values()):
                    return view
        assert time.monotonic() < deadline, f"cluster not healthy with masters {masters}: {view}"
        time.sleep(0.2)


def fill_cluster_pods(sts: StatefulSets, n: int, prefix: str) -> None:
    rc = redis.RedisCluster(host="127.0.0.1", port=sts.port(f"{CLUSTER}-leader-0", NS))
    try:
        for start in range(0, n, 5000):
            pipe = rc.pipeline()
            for i in range(start, min(n, start + 5000)):
                pipe.set(f"{prefix}:{i}", f"value-{i}" * 3)
            pipe.execute()
    finally:
        rc.close()


def shard_digests(sts: StatefulSets, view: dict[Any, list[str]]) -> dict[Any, tuple[str, int]]:
    return {
        slots: (cluster_call(sts, pods[0], "DEBUG", "DIGEST"), cluster_call(sts, pods[0], "DBSIZE"))
        for slots, pods in view.items()
    }


def test_an_opstree_redis_cluster_is_restored_shard_by_shard_in_place(
    api: K8sApi,
    kubelet: Kubelet,
    statefulsets: StatefulSets,
    s3_server: S3Emulator,
    bucket: str,
    operator: Operator,
) -> None:
    """The seed's RedisRestore (``redisClusterName: redis-cluster``) into 3 leaders + 3 followers
    after a failover made follower-1 a primary: each pod gets the archive of the shard whose
    slots it serves, all pods restart at once, every shard equals the backup's."""
    sts = statefulsets
    start_cluster(api, sts)
    leaders = [f"{CLUSTER}-leader-{i}" for i in range(3)]
    wait_cluster(sts, leaders)
    fill_cluster_pods(sts, 30_000, "key")
    cluster_call(sts, f"{CLUSTER}-follower-1", "CLUSTER", "FAILOVER")
    masters = [leaders[0], leaders[1], f"{CLUSTER}-follower-1"]  # follower-1 took leader-2's
    view = wait_cluster(sts, masters)
    backed_up = shard_digests(sts, view)
    out = subprocess.run(
        [BACKUPCTL, "run", "--redis", sts.url(leaders[0], NS), "--cluster", "--method",
         "replication", "--to", f"s3://{bucket}", "--target", f"{NS}/{CLUSTER}", "--json"],
        env={**os.environ, **s3_server.env}, capture_output=True, text=True, timeout=120,
        check=True,
    )  # fmt: skip
    manifest = json.loads(out.stdout)
    backup_id, keys = str(manifest["id"]), int(manifest["keys"])
    assert keys == 30_000 == sum(k for _, k in backed_up.values())
    fill_cluster_pods(sts, 5_000, "after-backup")
    assert shard_digests(sts, wait_cluster(sts, masters)) != backed_up
    uids = {p: api.get("pods", NS, p)["metadata"]["uid"] for p in cluster_pods()}  # type: ignore[index]

    started = time.monotonic()
    api.create(restore("rc-restore", s3_server, bucket, target=CLUSTER,
                       key=f"{backup_id}.tar.gz"), NS)  # fmt: skip
    st = finished(api, operator, "rc-restore", timeout=90)
    elapsed = time.monotonic() - started
    assert st["phase"] == "Completed", st
    assert st["route"] == "InPlace" and st["target"] == f"RedisCluster/{CLUSTER}"
    assert st["backupId"] == backup_id and st["restoredKeys"] == keys and st["cluster"] is True
    after = wait_cluster(sts, masters)  # same primaries, replicas equal to their masters
    assert shard_digests(sts, after) == backed_up
    for pod in cluster_pods():
        assert "cluster_state:ok" in cluster_call(sts, pod, "CLUSTER", "INFO")
        assert "cluster_slots_ok:16384" in cluster_call(sts, pod, "CLUSTER", "INFO")
    # Each pod got its shard's archive, found by slots: follower-1 (now a primary) and
    # leader-2 (its replica) the same node of the set.
    node_of = {p["name"]: p["sourceNode"] for p in st["pods"]}
    by_slots = {tuple(tuple(r) for r in n["slots"]): n["name"] for n in manifest["nodes"]}
    for slots, pods in after.items():
        assert {node_of[p] for p in pods} == {by_slots[slots]}
    roles = {p["name"]: p["role"] for p in st["pods"]}
    assert [roles[p] for p in masters] == ["primary"] * 3
    assert node_of[f"{CLUSTER}-follower-1"] == node_of[leaders[2]] != node_of[leaders[1]]
    # Every pod restarted exactly once, all in one go.
    new_uids = {p: api.get("pods", NS, p)["metadata"]["uid"] for p in cluster_pods()}  # type: ignore[index]
    assert all(new_uids[p] != uids[p] for p in uids)
    assert all(sts.starts[(NS, p)] == 2 for p in cluster_pods())
    jobs = restore_jobs(api, "rc-restore")
    assert all(len(kubelet.runs(j, NS)) == 1 for j in jobs), jobs
    assert "rc-restore-verify" in jobs
    with client(sts, masters[1]) as c:  # back to its own persistence settings
        assert c.config_get("appendonly") == {"appendonly": "yes"}
    print(f"cluster restore: {elapsed:.1f} s")
