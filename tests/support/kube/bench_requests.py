"""Micro-benchmark: the API emulator's CPU per request at a backup slot.

Why: at a slot of 10,000 RedisBackups the emulator (one Python process, one event loop) is
the floor of ``bench/controller_scale.py``: every Job costs it a Job POST, a status merge
patch of the RedisBackup and an Event POST, each fanned out to the watches of four controller
shards and the bench. This replays that traffic without controllers, so the emulator's own
CPU per Job is measured alone and repeatably: N RedisBackups in four shards, nine open watch
streams (per shard: its RedisBackups and its Jobs, by label selector; plus one watch of every
Job), then per RedisBackup the three writes from four client threads (one per shard, keep-alive
connections), until every watch has seen every event it should. Prints the emulator process's
CPU (user + system) per Job and per request.

``--baseline DIR`` runs the same traffic first against the emulator found in DIR (another
checkout's ``tests`` folder, e.g. main's), so before/after come from one invocation. Run it
as a module from ``tests`` (as a script, this folder's ``selectors`` would shadow the standard
library's)::

    cd tests && ../.venv/bin/python -m support.kube.bench_requests --count 2000 --baseline DIR
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from support.kube.emulator_process import start_emulator, stop

TESTS = Path(__file__).resolve().parents[2]
REPO = TESTS.parent
NS = "bench"
SHARDS = 4
PLURAL_PATH = f"/apis/backupctl.dev/v1alpha1/namespaces/{NS}/redisbackups"
JOBS_PATH = f"/apis/batch/v1/namespaces/{NS}/jobs"
EVENTS_PATH = f"/api/v1/namespaces/{NS}/events"
JOB_POD_SPEC: dict[str, Any] = {
    "restartPolicy": "Never",
    "automountServiceAccountToken": False,
    "enableServiceLinks": False,
    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [
        {
            "name": "backupctl",
            "image": "backupctl:bench",
            "imagePullPolicy": "IfNotPresent",
            "command": ["backupctl"],
            "args": [
                *("run", "--redis", "redis://127.0.0.1:6379", "--to", "s3://bench"),
                *("--target", "bench/redis", "--node-name", "redis-0", "--method", "replication"),
                *("--compression", "zstd", "--json", "--termination-log", "/dev/termination-log"),
            ],
            "env": [{"name": "AWS_ENDPOINT_URL", "value": "http://127.0.0.1:9"}],
            "resources": {
                "requests": {"cpu": "100m", "memory": "128Mi"},
                "limits": {"memory": "1Gi"},
            },
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            "securityContext": {
                "runAsNonRoot": True,
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
        }
    ],
    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
}


class Client:
    """One keep-alive connection (as kopf's and backupctl's aiohttp sessions keep theirs)."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=60)

    def send(
        self, method: str, path: str, body: Any = None, ctype: str = "application/json"
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": ctype, "Accept": "application/json"}
        self.conn.request(method, path, body=data, headers=headers)
        response = self.conn.getresponse()
        payload = response.read()
        if response.status >= 300:
            raise SystemExit(f"{method} {path}: {response.status} {payload[:300]!r}")
        return json.loads(payload)


class WatchReader(threading.Thread):
    """Reads one watch stream to its end, counting events by type."""

    def __init__(self, url: str, path: str) -> None:
        super().__init__(daemon=True)
        self.client = Client(url)
        self.path = path
        self.events: dict[str, int] = {}
        self.opened = threading.Event()

    def run(self) -> None:
        self.client.conn.request("GET", self.path, headers={"Accept": "application/json"})
        response = self.client.conn.getresponse()
        self.opened.set()
        for line in response:
            if line.strip():
                kind = json.loads(line)["type"]
                self.events[kind] = self.events.get(kind, 0) + 1

    def seen(self) -> int:
        return sum(self.events.values())


def setup(url: str, count: int) -> None:
    import yaml

    client = Client(url)
    crd = yaml.safe_load((REPO / "crds" / "redisbackup.yaml").read_text())
    client.send("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    client.send("POST", "/api/v1/namespaces", {"metadata": {"name": NS}})
    deadline = time.monotonic() + 10
    while True:  # the CRD's resource is served once the emulator registered it
        client.conn.request("GET", PLURAL_PATH)
        response = client.conn.getresponse()
        response.read()
        if response.status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for i in range(count):
        client.send("POST", PLURAL_PATH, backup(i))


#: The Ready condition every RedisBackup of the slot shows (before and after its Job).
READY = {
    "type": "Ready",
    "status": "True",
    "reason": "Ready",
    "message": "target StatefulSet/redis, pod redis-0",
    "lastTransitionTime": "2030-01-01T01:50:08Z",
    "observedGeneration": 1,
}


def backup(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "backupctl.dev/v1alpha1",
        "kind": "RedisBackup",
        "metadata": {
            "name": f"rb-{i:05d}",
            "labels": {"backupctl.dev/shard": str(i % SHARDS)},
            "finalizers": ["backupctl.dev/finalizer"],
        },
        "spec": {
            "target": {"kind": "StatefulSet", "name": "redis"},
            "schedule": "0 2 * * *",
            "method": "replication",
            "storage": {"s3": {"bucket": "bench", "endpoint": "http://127.0.0.1:9"}},
            "retention": {"keepLast": 3},
        },
        "status": {
            "conditions": [dict(READY)],
            "observedGeneration": 1,
            "nextScheduleTime": "2030-01-01T02:00:00Z",
        },
    }


def job(i: int, owner_uid: str) -> dict[str, Any]:
    name, slot = f"rb-{i:05d}", "20300101020000"
    labels = {
        "app.kubernetes.io/name": "backupctl",
        "app.kubernetes.io/component": "backup",
        "app.kubernetes.io/managed-by": "backupctl",
        "backupctl.dev/backup": name,
        "backupctl.dev/slot": slot,
        "backupctl.dev/controller-shard": str(i % SHARDS),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"{name}-{slot}",
            "labels": labels,
            "annotations": {"backupctl.dev/target-pod": "redis-0"},
            "ownerReferences": [
                {
                    "apiVersion": "backupctl.dev/v1alpha1",
                    "kind": "RedisBackup",
                    "name": name,
                    "uid": owner_uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "backoffLimit": 2,
            "activeDeadlineSeconds": 21600,
            "template": {"metadata": {"labels": dict(labels)}, "spec": JOB_POD_SPEC},
        },
    }


def status(i: int) -> dict[str, Any]:
    job_name = f"rb-{i:05d}-20300101020000"
    return {
        "status": {
            "history": [{"slot": "2030-01-01T02:00:00Z", "jobName": job_name, "phase": "Running"}],
            "conditions": [
                dict(READY),
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "JobRunning",
                    "message": f"running: {job_name}",
                    "lastTransitionTime": "2030-01-01T02:00:05Z",
                    "observedGeneration": 1,
                },
            ],
            "phase": "Running",
            "message": f"running: {job_name}",
            "lastScheduleTime": "2030-01-01T02:00:00Z",
            "nextScheduleTime": "2030-01-02T02:00:00Z",
            "activeJobs": [job_name],
        }
    }


def event(i: int, owner_uid: str) -> dict[str, Any]:
    name = f"rb-{i:05d}"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{name}."},
        "involvedObject": {
            "apiVersion": "backupctl.dev/v1alpha1",
            "kind": "RedisBackup",
            "name": name,
            "namespace": NS,
            "uid": owner_uid,
        },
        "type": "Normal",
        "reason": "JobCreated",
        "message": f"Created Job {name}-20300101020000 for the run at 2030-01-01T02:00:00Z",
        "source": {"component": "backupctl"},
        "reportingComponent": "backupctl",
        "firstTimestamp": "2030-01-01T02:00:01Z",
        "lastTimestamp": "2030-01-01T02:00:01Z",
        "count": 1,
    }


def slot(url: str, shard: int, count: int, uids: dict[str, str]) -> None:
    client = Client(url)
    for i in range(shard, count, SHARDS):
        uid = uids[f"rb-{i:05d}"]
        client.send("POST", JOBS_PATH, job(i, uid))
        client.send(
            "PATCH", f"{PLURAL_PATH}/rb-{i:05d}/status", status(i), "application/merge-patch+json"
        )
        client.send("POST", EVENTS_PATH, event(i, uid))


def measure(tests: Path, count: int, profile: Path | None = None) -> dict[str, float]:
    """One run on a fresh emulator from ``tests``: its CPU over the slot's traffic
    (with ``profile``, a cProfile of the emulator's loop over that traffic is saved there)."""
    emulator, url = start_emulator(tests, profile)
    try:
        setup(url, count)
        listing = Client(url).send("GET", PLURAL_PATH)
        uids = {b["metadata"]["name"]: b["metadata"]["uid"] for b in listing["items"]}
        rv = listing["metadata"]["resourceVersion"]
        watch = f"?watch=true&resourceVersion={rv}&timeoutSeconds=600&labelSelector="
        paths = [f"{JOBS_PATH}?watch=true&resourceVersion={rv}&timeoutSeconds=600"]
        for shard in range(SHARDS):
            paths.append(f"{PLURAL_PATH}{watch}backupctl.dev/shard%3D{shard}")
            paths.append(
                f"{JOBS_PATH}{watch}app.kubernetes.io/managed-by%3Dbackupctl,"
                f"backupctl.dev/controller-shard%3D{shard}"
            )
        readers = [WatchReader(url, p) for p in paths]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.opened.wait(10)
        process = psutil.Process(emulator.pid)
        if profile:
            emulator.send_signal(signal.SIGUSR1)
            time.sleep(0.5)
        print(
            f"the slot's requests begin (emulator pid {emulator.pid})", file=sys.stderr, flush=True
        )
        before = process.cpu_times()
        started = time.monotonic()
        workers = [threading.Thread(target=slot, args=(url, s, count, uids)) for s in range(SHARDS)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(600)
        expected = 3 * count  # every Job twice (all, its shard), every status patch once
        deadline = time.monotonic() + 60
        while sum(r.seen() for r in readers) < expected and time.monotonic() < deadline:
            time.sleep(0.01)
        wall = time.monotonic() - started
        after = process.cpu_times()
        user, system = after.user - before.user, after.system - before.system
        seen = sum(r.seen() for r in readers)
        if profile:
            emulator.send_signal(signal.SIGUSR2)
            deadline = time.monotonic() + 30
            while not profile.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)
        if seen != expected:
            raise SystemExit(f"the watches saw {seen} events, not {expected}")
        return {"cpu": user + system, "user": user, "system": system, "wall": wall}
    finally:
        stop(emulator)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="RedisBackups (default 2000)")
    parser.add_argument("--baseline", type=Path, help="a tests folder to compare against")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each (default 1)")
    parser.add_argument(
        "--profile", type=Path, help="save a cProfile of this tree's emulator here (slower)"
    )
    args = parser.parse_args()
    trees = ([("baseline", args.baseline.resolve())] if args.baseline else []) + [
        ("this tree", TESTS)
    ]
    results: dict[str, list[dict[str, float]]] = {label: [] for label, _ in trees}
    for _ in range(args.rounds):
        for label, tests in trees:
            result = measure(tests, args.count, args.profile if tests == TESTS else None)
            results[label].append(result)
            print(
                f"{label:10} {tests}: CPU {result['cpu']:.2f} s (user {result['user']:.2f}, "
                f"system {result['system']:.2f}), wall {result['wall']:.2f} s, "
                f"{result['cpu'] / args.count * 1000:.3f} ms per Job "
                f"({result['cpu'] / (3 * args.count) * 1000:.3f} ms per request)",
                flush=True,
            )
    best = {label: min(r["cpu"] for r in runs) for label, runs in results.items()}
    summary = ", ".join(f"{label} {cpu / args.count * 1000:.3f}" for label, cpu in best.items())
    print(f"emulator CPU per Job (best of {args.rounds}, ms): {summary}")
    if args.baseline:
        print(f"ratio this/baseline: {best['this tree'] / best['baseline']:.2f}")


if __name__ == "__main__":
    main()
