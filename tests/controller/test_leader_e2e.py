"""Two controller replicas and sharded controllers, end to end (issue 15).

Real ``backupctl operator`` processes (support.kube.run_operator, on one shared test
clock) against the API emulator, each with its own identity ($POD_NAME) and token, with
short Lease timings (6 s / 4 s / 0.5 s) so a failover fits in a test:

- the leader SIGKILLed just before a slot: the standby, which until then made no request
  but its Lease's, takes over within the lease duration and creates the slot's Job once,
  with one status update and one JobCreated Event;
- the leader partitioned from the API (the emulator drops its requests): it stops and
  exits 1 before its Lease expires, and only then does the standby take over;
- shards: each controller handles only the RedisBackups of its shard label (or the
  unlabelled ones); two controllers that both handle one RedisBackup at a slot (a move
  between shards half done) both try to create its Job and one Job exists.

No kubelet runs the Jobs: these tests are about who creates them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest

from support.kube.fixtures import K8sApi
from support.kube.operator_process import Operator

REPO = Path(__file__).resolve().parents[2]
NS = "ns"
LEASE = (6.0, 4.0, 0.5)  # lease duration, renew deadline, retry period (seconds)
ELECT = (
    "--leader-elect",
    "--leader-elect-lease-duration=6",
    "--leader-elect-renew-deadline=4",
    "--leader-elect-retry-period=0.5",
)
SLOT = datetime(2030, 1, 1, 2, tzinfo=UTC)
T = TypeVar("T")


@pytest.fixture
def api(k8s_api: K8sApi) -> K8sApi:
    k8s_api.apply(REPO / "crds" / "redisbackup.yaml")
    k8s_api.apply(REPO / "crds" / "redisrestore.yaml")
    k8s_api.create_namespace(NS)
    redis_target(k8s_api)
    return k8s_api


@pytest.fixture
def operators(api: K8sApi, tmp_path: Path) -> Iterator[Callable[..., Operator]]:
    """Make controller processes on one clock: ``make("ctl-a", "--shard=x")``."""
    made: list[Operator] = []

    def make(pod_name: str, *flags: str) -> Operator:
        clock = made[0].clock if made else None
        op = Operator(api, tmp_path, NS, flags=flags, pod_name=pod_name, clock=clock)
        made.append(op)
        return op

    try:
        yield make
    finally:
        for op in made:
            op.stop()
            if os.environ.get("BACKUPCTL_SHOW_OPERATOR_LOG"):
                print(op.log(100_000))


def redis_target(api: K8sApi) -> None:
    labels = {"app": "redis"}
    container = {"name": "redis", "image": "redis:7", "ports": [{"containerPort": 6379}]}
    api.create(
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "redis"},
            "spec": {
                "serviceName": "redis",
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
            },
        },
        NS,
    )
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "redis-0", "labels": labels},
            "spec": {"nodeName": "node-a", "containers": [container]},
        },
        NS,
    )
    ready = {"phase": "Running", "podIP": "127.0.0.1"}
    ready["conditions"] = [{"type": "Ready", "status": "True"}]  # type: ignore[assignment]
    api.patch("pods", NS, "redis-0", {"status": ready}, subresource="status")


def redis_backup(name: str, shard: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if shard is not None:
        meta["labels"] = {"backupctl.dev/shard": shard}
    return {
        "apiVersion": "backupctl.dev/v1alpha1",
        "kind": "RedisBackup",
        "metadata": meta,
        "spec": {
            "target": {"kind": "StatefulSet", "name": "redis"},
            "schedule": "0 2 * * *",
            "method": "replication",
            "storage": {"s3": {"bucket": "b", "endpoint": "http://127.0.0.1:9"}},
        },
    }


SHARD_LABEL = "backupctl.dev/controller-shard"


def old_job(name: str, owner: dict[str, Any]) -> dict[str, Any]:
    """A volume-owner probe Job of ``owner`` as a version without the Jobs' shard label
    made it (not a backup Job: the test's slots stay the only runs)."""
    meta = owner["metadata"]
    labels = {"app.kubernetes.io/managed-by": "backupctl", "backupctl.dev/probe": meta["name"]}
    ref = {"apiVersion": "backupctl.dev/v1alpha1", "kind": "RedisBackup", "name": meta["name"],
           "uid": meta["uid"], "controller": True}  # fmt: skip
    container = {"name": "backup", "image": "backupctl:test"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels, "ownerReferences": [ref]},
        "spec": {
            "template": {"spec": {"containers": [container], "restartPolicy": "Never"}},
        },
    }


def wait(
    ops: list[Operator],
    condition: Callable[[], T | Literal[False] | None],
    timeout: float,
    what: str,
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {op.pod_name} ---\n{op.log()}" for op in ops)
            raise AssertionError(f"timed out after {timeout}s: {what}\n{logs}")
        time.sleep(0.05)


def lease(api: K8sApi, name: str = "backupctl-controller") -> dict[str, Any]:
    return dict((api.get("leases", NS, name) or {}).get("spec") or {})


def status(api: K8sApi, name: str) -> dict[str, Any]:
    return dict((api.get("redisbackups", NS, name) or {}).get("status") or {})


def jobs(api: K8sApi) -> list[str]:
    return sorted(j["metadata"]["name"] for j in api.list("jobs", NS))


def events(api: K8sApi, name: str, reason: str) -> int:
    return sum(
        1
        for e in api.list("events", NS)
        if e.get("involvedObject", {}).get("name") == name and e["reason"] == reason
    )


def _method(request: Any) -> str:
    return str(getattr(request.method, "value", request.method)).upper()


def requests_of(api: K8sApi, token: str | None) -> list[str]:
    """``METHOD path`` of every request the client with ``token`` made."""

    def collect() -> list[str]:
        return [
            f"{_method(r)} {r.url.path}"
            for r in api.emulator.requests
            if str(r.headers.get("Authorization", "")) == f"Bearer {token}"
        ]

    return list(api.call(collect))


def selectors_of(api: K8sApi, token: str | None, plural: str) -> set[str]:
    """The label selectors of the client's watches of ``plural`` (kopf's, and the
    controller's own watch of Jobs; its plain reads, such as the running restores of a
    target, are not watches)."""

    def collect() -> set[str]:
        return {
            str(r.url.query.get("labelSelector"))
            for r in api.emulator.requests
            if str(r.headers.get("Authorization", "")) == f"Bearer {token}"
            and _method(r) == "GET"
            and r.url.query.get("watch") in ("true", "1")
            and r.url.path.endswith(f"/{plural}")
        }

    return set(api.call(collect))


def leader_gauge(op: Operator, shard: str = "all") -> float:
    for line in op.metrics().splitlines():
        if line.startswith(f'backupctl_controller_leader{{shard="{shard}"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"no leader gauge for shard {shard!r} in {op.pod_name}'s metrics")


def test_the_standby_takes_over_a_killed_leader_and_the_slot_runs_once(
    api: K8sApi, operators: Callable[..., Operator]
) -> None:
    a, b = operators("ctl-a", *ELECT), operators("ctl-b", *ELECT)
    a.set_time(SLOT - timedelta(seconds=120))
    a.start()
    wait([a], lambda: lease(api).get("holderIdentity") == "ctl-a", 30, "ctl-a leads")
    b.start()
    # The standby is up (health and metrics answer) and not leading.
    wait([b], lambda: b.alive and _answers(b), 30, "ctl-b serves health and metrics")
    assert leader_gauge(b) == 0 and leader_gauge(a) == 1
    api.create(redis_backup("rb"), NS)
    wait([a, b], lambda: status(api, "rb").get("nextScheduleTime"), 30, "the leader schedules rb")
    # A standby watches nothing and creates nothing: it only reads and renews its Lease.
    wait([b], lambda: len(requests_of(api, b.token)) >= 3, 10, "ctl-b polls the Lease")
    assert {r for r in requests_of(api, b.token)} == {
        f"GET /apis/coordination.k8s.io/v1/namespaces/{NS}/leases/backupctl-controller"
    }
    assert lease(api)["holderIdentity"] == "ctl-a"

    a.set_time(SLOT - timedelta(seconds=1))
    a.kill()  # SIGKILL just before the slot
    killed = time.monotonic()
    wait([b], lambda: lease(api).get("holderIdentity") == "ctl-b", 20, "ctl-b takes over")
    took = time.monotonic() - killed
    duration, _, retry = LEASE
    assert took <= duration + 3 * retry, f"failover took {took:.1f} s"
    assert lease(api)["leaseTransitions"] == 1
    job = "rb-20300101020000"
    wait([b], lambda: job in jobs(api), 30, "the standby creates the slot's Job")
    wait([b], lambda: status(api, "rb").get("lastScheduleTime"), 10, "status of the run")
    wait([b], lambda: leader_gauge(b) == 1, 10, "ctl-b's gauge says it leads")
    assert "backupctl_backup_jobs_created_total" in b.metrics()  # the controller's own
    assert _answers(b)  # kopf's health check took the standby's port over
    # A positive sign the new leader has settled: its Event for the Job is there.
    wait([b], lambda: events(api, "rb", "JobCreated"), 10, "the JobCreated Event")
    time.sleep(2)
    assert jobs(api) == [job]
    assert status(api, "rb")["lastScheduleTime"] == "2030-01-01T02:00:00Z"
    assert events(api, "rb", "JobCreated") == 1
    assert not [r for r in requests_of(api, a.token) if r.startswith("POST") and "/jobs" in r]

    # A standby stopped by SIGTERM just ends; a leader stopped by SIGTERM (a rollout, a
    # drain) releases the Lease, so the next candidate need not wait for it to expire.
    c = operators("ctl-c", *ELECT)
    c.start()
    wait([c], lambda: _answers(c), 30, "ctl-c stands by")
    c.stop()
    assert c.proc is not None and c.proc.returncode == 0, c.log()
    assert "stopped while standing by" in c.log()
    b.stop()
    assert b.proc is not None and b.proc.returncode == 0, b.log()
    assert lease(api).get("holderIdentity") is None
    assert lease(api)["leaseDurationSeconds"] == 1


def _answers(op: Operator) -> bool:
    try:
        op.healthz()
        op.metrics()
    except OSError:
        return False
    return True


def test_a_partitioned_leader_stops_before_its_lease_expires(
    api: K8sApi, operators: Callable[..., Operator]
) -> None:
    a, b = operators("ctl-a", *ELECT), operators("ctl-b", *ELECT)
    a.set_time(SLOT - timedelta(seconds=120))
    a.start()
    wait([a], lambda: lease(api).get("holderIdentity") == "ctl-a", 30, "ctl-a leads")
    b.start()
    api.create(redis_backup("rb"), NS)
    wait([a, b], lambda: status(api, "rb").get("nextScheduleTime"), 30, "the leader schedules rb")
    wait([b], lambda: _answers(b), 30, "ctl-b is up")
    renewed = lease(api)["renewTime"]
    wait([a], lambda: lease(api)["renewTime"] != renewed, 5, "ctl-a renews")

    assert a.token is not None
    api.partition(a.token)
    cut = time.monotonic()
    a.set_time(SLOT + timedelta(seconds=1))  # the slot passes while ctl-a is cut off
    wait([a], lambda: api.partitioned_requests() > 0, 5, "ctl-a's requests are held")
    assert a.proc is not None
    wait([a], lambda: a.proc.poll() is not None, 10, "ctl-a exits")  # type: ignore[union-attr]
    stopped = time.monotonic() - cut
    duration, _, retry = LEASE
    assert a.proc.returncode == 1, a.log()
    # It renewed at most a retry period before the cut; its Lease expires for the others
    # lease_duration after that renewal at the earliest.
    assert stopped < duration - retry, f"ctl-a stopped {stopped:.1f} s after the cut"
    assert "stops leading" in a.log()
    assert lease(api)["holderIdentity"] == "ctl-a"  # nobody took it while ctl-a could act
    api.partition(a.token, cut=False)
    wait([b], lambda: lease(api).get("holderIdentity") == "ctl-b", 20, "ctl-b takes over")
    job = "rb-20300101020000"
    wait([b], lambda: job in jobs(api), 30, "the standby creates the slot's Job")
    wait([b], lambda: events(api, "rb", "JobCreated"), 10, "the JobCreated Event")
    time.sleep(1)
    assert jobs(api) == [job]
    assert events(api, "rb", "JobCreated") == 1


def test_shards_handle_only_their_label_and_a_double_create_is_harmless(
    api: K8sApi, operators: Callable[..., Operator]
) -> None:
    one = operators("ctl-1", "--shard=1", *ELECT)
    default = operators("ctl-default", "--shard=", *ELECT)
    one.set_time(SLOT - timedelta(seconds=120))
    # A Job an older version made for a RedisBackup of shard 1, without the Jobs' shard
    # label: the shard labels it at start-up, so its Job watch sees it.
    owner = api.create(redis_backup("in-one", shard="1"), NS)
    api.create(old_job("in-one-probe", owner), NS)
    one.start()
    default.start()
    api.create(redis_backup("unlabelled"), NS)
    api.create(redis_backup("moving", shard="1"), NS)
    for name in ("in-one", "unlabelled", "moving"):
        wait([one, default], lambda n=name: status(api, n).get("nextScheduleTime"), 30, name)  # type: ignore[misc]
    # Each shard has its own Lease, held by its controller.
    assert lease(api, "backupctl-controller-shard-1")["holderIdentity"] == "ctl-1"
    assert lease(api, "backupctl-controller-shard-default")["holderIdentity"] == "ctl-default"
    assert leader_gauge(one, "1") == 1 and leader_gauge(default, "default") == 1
    # Each controller watches only its shard's resources (server-side selector).
    assert selectors_of(api, one.token, "redisbackups") == {"backupctl.dev/shard=1"}
    assert selectors_of(api, default.token, "redisbackups") == {"!backupctl.dev/shard"}
    assert selectors_of(api, one.token, "redisrestores") == {"backupctl.dev/shard=1"}
    # ... and only its own Jobs (labelled by the shard that created them): kopf the
    # RedisRestores', the controller's own watch the RedisBackups'.
    managed = "app.kubernetes.io/managed-by=backupctl"
    kinds = ("backupctl.dev/restore", "backupctl.dev/backup")
    assert selectors_of(api, one.token, "jobs") == {
        f"{managed},{kind},{SHARD_LABEL}=1" for kind in kinds
    }
    assert selectors_of(api, default.token, "jobs") == {
        f"{managed},{kind},!{SHARD_LABEL}" for kind in kinds
    }
    old = api.get("jobs", NS, "in-one-probe") or {}
    assert old["metadata"]["labels"].get(SHARD_LABEL) == "1"

    # A third controller for every RedisBackup, as while a move between shards is half
    # done: two controllers handle "moving" (and the others). A slow network (every
    # create lands 2 s after it is sent) lets both decide to create each slot's Job
    # before either create lands: the deterministic Job name makes one of the two
    # succeed; the other is refused (AlreadyExists) and ignored.
    everything = operators("ctl-all")
    everything.start()
    names = ("in-one", "moving", "unlabelled")
    wait([everything], lambda: _answers(everything), 30, "ctl-all is up")
    wait([everything], lambda: "Daemon 'backup_daemon' is invoked" in everything.log(100_000),
         30, "ctl-all runs a daemon per RedisBackup")  # fmt: skip
    time.sleep(2)
    for op in (one, default, everything):
        assert op.token is not None
        api.delay_creates(op.token, 2.0)
    one.set_time(SLOT + timedelta(seconds=1))
    expected = sorted([*(f"{n}-20300101020000" for n in names), "in-one-probe"])
    wait([one, default, everything], lambda: jobs(api) == expected, 30, "one Job per backup")
    wait([everything], lambda: len(job_posts(api, everything)) == 3, 30, "ctl-all creates too")
    assert len(job_posts(api, one)) == 2 and len(job_posts(api, default)) == 1
    for name in names:
        wait([everything], lambda n=name: events(api, n, "JobCreated"), 10, f"{name}'s Event")  # type: ignore[misc]
    time.sleep(3)
    assert jobs(api) == expected
    for name in names:
        assert status(api, name)["lastScheduleTime"] == "2030-01-01T02:00:00Z"
        assert events(api, name, "JobCreated") == 1, name  # only the create that succeeded


def job_posts(api: K8sApi, op: Operator) -> list[str]:
    return [r for r in requests_of(api, op.token) if r.startswith("POST") and "/jobs" in r]
