"""The RedisRestore state machine (:mod:`backupctl.controller.restore.plan`), pure and fast.

A small simulated world runs each plan the way the operator does (status first, then Jobs,
scaling, pod deletions) and lets Jobs finish; the tests check the order of the steps that
keeps data safe, the refusals, the rollback after failures, and that replanning from any
stored status (a restarted controller) never makes a Job twice or acts on a finished restore.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes_validate
import pytest

from backupctl.controller.identity import RunAs
from backupctl.controller.jobs import JobView, PodProblem
from backupctl.controller.manifests import TargetPod
from backupctl.controller.restore.model import (
    IN_PLACE,
    SCALE_DOWN,
    Observed,
    OtherRestore,
    Plan,
    PodView,
    TargetView,
    is_finished,
    job_name,
    target_key,
)
from backupctl.controller.restore.plan import plan
from backupctl.controller.spec import parse_restore
from backupctl.controller.spec_fields import SpecError

T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
NS = "redis"
BACKUP_ID = "backup-20240101-120000"
SPEC: dict[str, Any] = {
    "redisClusterName": "redis",
    "storage": {"s3": {"bucket": "b", "region": "us-east-1", "key": f"{BACKUP_ID}.tar.gz",
                       "accessKeyIdSecret": {"name": "aws", "key": "id"},
                       "secretAccessKeySecret": {"name": "aws", "key": "secret"}}},
}  # fmt: skip
RESOLVED: dict[str, Any] = {
    "ok": True,
    "id": BACKUP_ID,
    "keys": 1000,
    "redisVersion": "7.0.15",
    "mode": "standalone",
    "nodes": [{"name": "redis-0", "role": "master", "keys": 1000, "redisVersion": "7.0.15",
               "rdbVersion": 10, "aofEnabled": True}],
}  # fmt: skip
NODE = RESOLVED["nodes"][0]


def server(role: str, version: str = "7.0.15", **extra: Any) -> dict[str, Any]:
    return {"role": role, "version": version, "cluster": False, "config": True, **extra}


CHECKED = {"ok": True, "nodes": [server("master"), server("replica"), server("replica")]}


@dataclass
class World:
    """What the operator would observe, and what its actions change."""

    kind: str = "StatefulSet"
    replicas: int = 3
    pods: dict[str, PodView] = field(default_factory=dict)
    jobs: dict[str, JobView] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)  # every Job creation, in order
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)  # actions, in order
    uids: itertools.count[int] = field(default_factory=itertools.count)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # job step -> result
    fail: set[str] = field(default_factory=set)  # job names that fail
    hold: set[str] = field(default_factory=set)  # job names that keep running
    run_as: RunAs | None = field(default_factory=lambda: RunAs(user=999, group=999, fs_group=999))
    stuck: dict[str, PodProblem] = field(default_factory=dict)  # job name -> why its pod waits
    spec_extra: dict[str, Any] = field(default_factory=dict)
    backups: tuple[str, ...] = ()  # running backup Jobs of the target

    def __post_init__(self) -> None:
        for i in range(self.replicas):
            self.add_pod(i)

    def add_pod(self, i: int) -> None:
        name = f"redis-{i}"
        self.pods[name] = PodView(
            name=name,
            uid=f"uid-{next(self.uids)}",
            ready=True,
            target=TargetPod(name=name, host=f"10.0.0.{i}", port=6379, node_name="node-a",
                             data_pvc=f"data-{name}", run_as=self.run_as),
        )  # fmt: skip

    def target(self) -> TargetView:
        sts = {"redis": self.replicas} if self.kind == "StatefulSet" else {}
        return TargetView(self.kind, "redis", tuple(self.pods.values()), sts)

    def apply(self, p: Plan) -> None:
        for name in p.delete_jobs:
            self.log.append(f"delete job {name}")
            self.jobs.pop(name, None)
        for job in p.jobs:
            name = job["metadata"]["name"]
            assert name not in self.jobs, f"Job {name} created twice"
            self.created.append(name)
            self.manifests[name] = job
            self.jobs[name] = JobView(name, "Running", waiting=self.stuck.get(name))
            self.log.append(f"create {name}")
        for sts, n in ((s.name, s.replicas) for s in p.scale):
            self.log.append(f"scale {sts} {n}")
            self.replicas = n
            self.pods = {k: v for k, v in self.pods.items() if int(k.rsplit("-", 1)[1]) < n}
            for i in range(n):
                if f"redis-{i}" not in self.pods:
                    self.add_pod(i)
        for pod, uid in ((d.name, d.uid) for d in p.delete_pods):
            if pod in self.pods and self.pods[pod].uid == uid:
                self.log.append(f"delete {pod}")
                idx = int(pod.rsplit("-", 1)[1])
                del self.pods[pod]
                self.add_pod(idx)

    def finish_jobs(self) -> None:
        for name, view in list(self.jobs.items()):
            if view.state != "Running" or name in self.hold or name in self.stuck:
                continue
            step = name.split("-")[1]
            if name in self.fail:
                self.jobs[name] = JobView(
                    name, "Failed", result={"ok": False, "error": f"{name} broke"}
                )
            else:
                result = {"ok": True, **self.results.get(step, {})}
                self.jobs[name] = JobView(name, "Succeeded", result=result)


def observed(world: World, status: dict[str, Any], **kw: Any) -> Observed:
    spec = kw.pop("spec", {**SPEC, **world.spec_extra})
    parsed: Any
    try:
        parsed = parse_restore(spec)
    except SpecError as e:
        parsed = e
    return Observed(
        name="r1",
        namespace=NS,
        uid="restore-uid",
        created=T0,
        spec=parsed,
        status=status,
        jobs=dict(world.jobs),
        target=kw.pop("target", world.target()),
        image="backupctl:test",
        backups=kw.pop("backups", world.backups),
        **kw,
    )


def default_results() -> dict[str, dict[str, Any]]:
    return {
        "resolve": RESOLVED,
        "check": CHECKED,
        "stage": {"id": BACKUP_ID, "keys": 1000},
        "swap": {"id": BACKUP_ID, "previous": "/data/.backupctl-previous-20240101-120500"},
        "verify": {"restoredKeys": 1000},
    }


def run(
    world: World,
    status: dict[str, Any] | None = None,
    *,
    steps: int = 200,
    until: Callable[[dict[str, Any]], bool] = is_finished,
    invariant: Callable[[World, Plan], None] | None = None,
) -> dict[str, Any]:
    """Plan, apply, let Jobs finish, replan ... like the operator, with a restart check:
    every status is planned twice (a restarted controller) before acting once."""
    status = dict(status or {})
    now = T0
    for _ in range(steps):
        p = plan(observed(world, status), now)
        again = plan(observed(world, copy.deepcopy(status)), now)  # same input, same plan
        assert again.status == p.status and again.jobs == p.jobs
        if invariant is not None:
            invariant(world, p)
        status = p.status
        world.apply(p)
        if until(status):
            return status
        world.finish_jobs()
        now += timedelta(seconds=2)
    raise AssertionError(f"did not finish: {status}")


def condition(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions") or [] if c["type"] == type_), {})


# --- the happy paths ------------------------------------------------------------------------


def scale_down_is_safe(world: World, p: Plan) -> None:
    """No swap Job while a Redis pod exists; no scale-up before every swap succeeded."""
    for job in p.jobs:
        if "-swap-" in job["metadata"]["name"]:
            assert not world.pods, "swap while Redis runs"
    scaled_to = {s.name: s.replicas for s in p.scale}
    if scaled_to.get("redis", 0) > 0 and p.status.get("phase") != "Failed":
        swaps = [j for n, j in world.jobs.items() if "-swap-" in n]
        assert len(swaps) == 3 and all(j.state == "Succeeded" for j in swaps)


def test_plain_statefulset_stages_live_then_scales_to_zero_swaps_scales_back_and_verifies() -> None:
    world = World(results=default_results())
    st = run(world, invariant=scale_down_is_safe)
    assert st["phase"] == "Completed" and st["restoredKeys"] == 1000
    assert st["route"] == SCALE_DOWN and st["backupId"] == BACKUP_ID
    assert st["statefulSets"] == [{"name": "redis", "replicas": 3, "scaledDown": False}]
    assert [p["phase"] for p in st["pods"]] == ["Verified"] * 3
    assert {p["previousData"] for p in st["pods"]} == {".backupctl-previous-20240101-120500"}
    order = [re.sub(r"^create (.*?)(-\d+)?$", r"\1", line) for line in world.log]
    first = {step: order.index(step) for step in dict.fromkeys(order)}
    assert first["r1-resolve"] < first["r1-stage"] < first["scale redis 0"] < first["r1-swap"]
    assert first["r1-swap"] < first["scale redis 3"] < first["r1-verify"]
    assert condition(st, "Ready")["status"] == "True"
    assert is_finished(st)


def test_every_replica_gets_the_primarys_archive_and_jobs_are_valid_and_secret_free() -> None:
    world = World(results=default_results())
    run(world)
    stages = [m for n, m in world.manifests.items() if "-stage-" in n]
    assert len(stages) == 3
    for job in stages:
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[:3] == ["restore", "s3://b", BACKUP_ID]
        assert args[args.index("--node") + 1] == "redis-0" and "--stage-only" in args
    claims = [
        m["spec"]["template"]["spec"]["volumes"][-1]["persistentVolumeClaim"]["claimName"]
        for n, m in world.manifests.items()
        if "-stage-" in n
    ]
    assert sorted(claims) == ["data-redis-0", "data-redis-1", "data-redis-2"]
    resolve = world.manifests["r1-resolve"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert resolve[:3] == ["restore", "s3://b", BACKUP_ID] and "--dry-run" in resolve
    for name, job in world.manifests.items():
        kubernetes_validate.validate(job, kubernetes_validate.utils.latest_version(), strict=True)
        assert len(name) <= 63 and job["metadata"]["ownerReferences"][0]["uid"] == "restore-uid"
        env = job["spec"]["template"]["spec"]["containers"][0]["env"]
        assert all("value" not in e or "secret" not in e["name"].lower() for e in env)


def in_place_is_safe(world: World, p: Plan) -> None:
    """Swap only after every server was quiesced; the primary restarts before replicas."""
    for job in p.jobs:
        if "-swap-" in job["metadata"]["name"]:
            quiesced = [j for n, j in world.jobs.items() if "-quiesce-" in n]
            assert len(quiesced) == 3 and all(j.state == "Succeeded" for j in quiesced)
    assert not p.scale, "an operator-managed StatefulSet is never scaled"
    if any(d.name != "redis-0" for d in p.delete_pods):
        assert "delete redis-0" in world.log


def test_operator_managed_target_goes_in_place_primary_first() -> None:
    world = World(kind="RedisReplication", results=default_results())
    uids = {n: p.uid for n, p in world.pods.items()}
    st = run(world, invariant=in_place_is_safe)
    assert st["phase"] == "Completed" and st["route"] == IN_PLACE
    deletes = [line for line in world.log if line.startswith("delete")]
    assert deletes[0] == "delete redis-0" and sorted(deletes) == [
        "delete redis-0", "delete redis-1", "delete redis-2"]  # fmt: skip
    assert all(world.pods[n].uid != uid for n, uid in uids.items())
    quiesce = world.manifests["r1-quiesce-1"]["spec"]["template"]["spec"]["containers"][0]
    assert quiesce["args"][:3] == ["quiesce-redis", "--redis", "redis://10.0.0.1:6379"]
    assert quiesce["args"][quiesce["args"].index("--state-file") + 1] == (
        f"/data/.backupctl-staging-{BACKUP_ID}/quiesce.json"
    )


def test_a_finished_restore_plans_nothing_ever_again() -> None:
    world = World(results=default_results())
    st = run(world)
    world.pods["redis-0"] = replace(world.pods["redis-0"], uid="restarted", ready=False)
    p = plan(observed(world, st), T0 + timedelta(days=3))
    assert p.done and not p.events and p.status == {**st, "observedGeneration": 1}


def test_status_is_written_before_the_first_job() -> None:
    world = World(results=default_results())
    first = plan(observed(world, {}), T0)
    assert first.status["startTime"] and first.status["pods"] and not first.jobs
    second = plan(observed(world, first.status), T0)
    assert sorted(j["metadata"]["name"] for j in second.jobs) == ["r1-check", "r1-resolve"]


# --- waiting and refusing ---------------------------------------------------------------


def test_waits_for_a_missing_target_or_backup_source_with_a_reason() -> None:
    world = World()
    p = plan(observed(world, {}, target=None, target_problem=("TargetNotFound", "no redis")), T0)
    assert p.done and p.status["phase"] == "Pending"
    assert condition(p.status, "Ready")["reason"] == "TargetNotFound"
    spec = {**SPEC, "fromBackup": "nightly"}
    spec.pop("storage")
    spec["latest"] = True
    p = plan(observed(world, {}, spec=spec, source_problem="RedisBackup nightly not found"), T0)
    assert condition(p.status, "Ready")["reason"] == "BackupSourceNotFound" and p.done


def test_a_second_restore_of_the_same_target_waits_for_the_running_one() -> None:
    world = World()
    running = OtherRestore("r0", T0 - timedelta(hours=1), "name:redis", started=True, active=True)
    p = plan(observed(world, {}, others=[running]), T0)
    assert condition(p.status, "Ready")["reason"] == "WaitingForRestore" and p.done
    older = OtherRestore("r0", T0 - timedelta(seconds=1), "name:redis", started=False, active=False)
    assert condition(plan(observed(world, {}, others=[older]), T0).status, "Ready")[
        "reason"] == "WaitingForRestore"  # fmt: skip
    newer = replace(older, name="r9", created=T0 + timedelta(seconds=1))
    other_target = replace(running, target_key="name:other")
    done = replace(running, active=False)
    for others in ([newer], [other_target], [done]):
        assert plan(observed(world, {}, others=others), T0).status.get("startTime")


def test_a_valkey_8_backup_goes_into_valkey_9_pods() -> None:
    resolved = {**RESOLVED, "nodes": [{**NODE, "flavour": "valkey", "serverVersion": "8.1.1",
                                       "redisVersion": "7.2.4", "rdbMagic": "REDIS",
                                       "rdbVersion": 11}]}  # fmt: skip
    valkey9 = {"flavour": "valkey", "server_version": "9.1.2"}
    checked = {"nodes": [server(r, "7.2.4", **valkey9) for r in ("master", "replica", "replica")]}
    st = run(World(results={"resolve": resolved, "check": checked}))
    assert st.get("phase") != "Failed", st.get("message")


@pytest.mark.parametrize(
    ("resolved", "checked", "reason", "needle"),
    [
        ({**RESOLVED, "nodes": [{**NODE, "redisVersion": "7.2.4", "rdbVersion": 11}]},
         CHECKED, "IncompatibleVersion", "newer than Redis 7.0.15"),
        ({**RESOLVED, "nodes": [{**NODE, "redisVersion": "8.0.0"}]},
         CHECKED, "IncompatibleVersion", "newer major"),
        # Valkey 9's VALKEY080 into Redis 8 pods (check-redis reports the flavour)
        ({**RESOLVED, "nodes": [{**NODE, "flavour": "valkey", "serverVersion": "9.1.2",
                                 "redisVersion": "7.2.4", "rdbMagic": "VALKEY",
                                 "rdbVersion": 80}]},
         {"nodes": [server("master", "8.0.2", flavour="redis", server_version="8.0.2")] * 3},
         "IncompatibleVersion", "(VALKEY080, written by Valkey 9.1.2) is a format Redis 8.0.2"),
        # Redis 8's REDIS0012 into Valkey 9 pods, whose redis_version says 7.2.4
        ({**RESOLVED, "nodes": [{**NODE, "redisVersion": "8.0.2", "rdbMagic": "REDIS",
                                 "rdbVersion": 12}]},
         {"nodes": [server("master", "7.2.4", flavour="valkey", server_version="9.1.2")] * 3},
         "IncompatibleVersion", "rdb-version-check relaxed"),
        ({**RESOLVED, "mode": "cluster"}, CHECKED, "Unsupported", "cluster"),
        (RESOLVED, {"nodes": [server("master"), server("master"), server("replica")]},
         "Unsupported", "2 primaries"),
        (RESOLVED, {"nodes": [server("master", cluster=True)] * 3}, "Unsupported", "cluster"),
    ],
)  # fmt: skip
def test_refusals_before_anything_is_staged(
    resolved: dict[str, Any], checked: dict[str, Any], reason: str, needle: str
) -> None:
    world = World(results={"resolve": resolved, "check": checked})
    st = run(world)
    assert st["phase"] == "Failed" and condition(st, "Failed")["reason"] == reason
    assert needle in st["message"]
    assert not [n for n in world.created if n.split("-")[1] not in ("resolve", "check")]
    assert not any(line.startswith(("scale", "delete")) for line in world.log)


def test_in_place_refuses_servers_without_config() -> None:
    checked = {"nodes": [server("master", config=False), server("replica"), server("replica")]}
    world = World(kind="Redis", results={**default_results(), "check": checked})
    st = run(world)
    assert condition(st, "Failed")["reason"] == "ConfigDisabled"


def test_invalid_spec_fails_at_once() -> None:
    world = World()
    bad = {"redisClusterName": "redis", "storage": {"s3": {"bucket": "b"}}}  # no backup chosen
    st = plan(observed(world, {}, spec=bad), T0).status
    assert st["phase"] == "Failed" and condition(st, "Failed")["reason"] == "InvalidSpec"
    assert is_finished(st)


# --- a Redis Cluster ------------------------------------------------------------------------

SHARDS = [[[0, 5460]], [[5461, 10922]], [[10923, 16383]]]
CLUSTER_RESOLVED: dict[str, Any] = {
    "ok": True,
    "id": BACKUP_ID,
    "keys": 3000,
    "redisVersion": "7.0.15",
    "mode": "cluster",
    "nodes": [{"name": f"node-{i}", "role": "master", "keys": 1000 + i, "redisVersion": "7.0.15",
               "rdbVersion": 10, "aofEnabled": True, "slots": slots}
              for i, slots in enumerate(SHARDS)],
}  # fmt: skip


def cluster_server(role: str, slots: list[list[int]], **extra: Any) -> dict[str, Any]:
    return server(role, **{"cluster": True, "cluster_state": "ok", "slots": slots, **extra})


# Pods redis-0..2 are the leader StatefulSet's, redis-3..5 the follower's (redis-3 replicates
# redis-0 ...). A failover made redis-4 the primary of the second shard; shard 2's slots are
# reported in two ranges by its replica.
AFTER_FAILOVER = {"nodes": [
    cluster_server("master", SHARDS[0]),
    cluster_server("replica", SHARDS[1]),
    cluster_server("master", SHARDS[2]),
    cluster_server("replica", SHARDS[0]),
    cluster_server("master", SHARDS[1]),
    cluster_server("replica", [[12000, 16383], [10923, 11999]]),
]}  # fmt: skip


def cluster_results(**changes: Any) -> dict[str, dict[str, Any]]:
    verify = {"verified": True, "keys": 3003, "restoredKeys": 3003}
    return {**default_results(), "resolve": CLUSTER_RESOLVED, "check": AFTER_FAILOVER,
            "verify": verify, **changes}  # fmt: skip


def args_of(world: World, job: str) -> list[str]:
    return list(world.manifests[job]["spec"]["template"]["spec"]["containers"][0]["args"])


def cluster_is_safe(world: World, p: Plan) -> None:
    """No swap before every node is quiesced; every pod deleted in the same pass, only after
    every swap succeeded."""
    swaps = [j for n, j in world.jobs.items() if "-swap-" in n]
    for job in p.jobs:
        if "-swap-" in job["metadata"]["name"]:
            quiesced = [j for n, j in world.jobs.items() if "-quiesce-" in n]
            assert len(quiesced) == 6 and all(j.state == "Succeeded" for j in quiesced)
    if p.delete_pods:
        assert len(swaps) == 6 and all(j.state == "Succeeded" for j in swaps)
        assert sorted(d.name for d in p.delete_pods) == [f"redis-{i}" for i in range(6)]
    assert not p.scale


def test_a_redis_cluster_gets_each_shards_archive_by_slots_and_restarts_all_pods_at_once() -> None:
    world = World(kind="RedisCluster", replicas=6, results=cluster_results())
    uids = {n: p.uid for n, p in world.pods.items()}
    st = run(world, invariant=cluster_is_safe)
    assert st["phase"] == "Completed" and st["route"] == IN_PLACE and st["cluster"] is True
    assert st["restoredKeys"] == 3003 and st["expectedKeys"] == 3003 and st["shards"] == 3
    nodes = [args_of(world, f"r1-stage-{i}") for i in range(6)]
    assert [a[a.index("--node") + 1] for a in nodes] == [
        "node-0", "node-1", "node-2", "node-0", "node-1", "node-2"]  # fmt: skip
    assert [p["role"] for p in st["pods"]] == ["primary", "replica", "primary",
                                                "replica", "primary", "replica"]  # fmt: skip
    assert st["pods"][5]["slots"] == "10923-16383"
    deletes = [line for line in world.log if line.startswith("delete")]
    assert sorted(deletes) == [f"delete redis-{i}" for i in range(6)]
    assert all(world.pods[n].uid != uid for n, uid in uids.items())
    verify = args_of(world, "r1-verify")
    assert verify[:3] == ["restore", "s3://b", BACKUP_ID]  # the resolved id, not latest
    assert verify[verify.index("--to-cluster") + 1] == "redis://10.0.0.0:6379"
    assert "--verify-only" in verify and "check-redis" not in verify
    check = args_of(world, "r1-check")
    assert check.count("--redis") == 6
    order = [re.sub(r"^create (.*?)(-\d+)?$", r"\1", line) for line in world.log]
    assert order.index("r1-stage") < order.index("r1-quiesce") < order.index("r1-swap")
    assert order.index("r1-swap") < order.index("delete redis-0") < order.index("r1-verify")


@pytest.mark.parametrize(
    ("resolved", "checked", "reason", "needle"),
    [
        ({**CLUSTER_RESOLVED, "nodes": [
            {**CLUSTER_RESOLVED["nodes"][0], "slots": [[0, 8191]]},
            {**CLUSTER_RESOLVED["nodes"][1], "name": "node-1", "slots": [[8192, 16383]]}]},
         AFTER_FAILOVER, "TopologyMismatch", "the backup holds 2 shards, the cluster has 3"),
        (CLUSTER_RESOLVED, {"nodes": [
            cluster_server(role, slots) for role, slots in zip(
                ["master", "replica", "master", "replica", "master", "replica"],
                [[[0, 5000]], [[5001, 10922]], SHARDS[2]] * 2, strict=True)]},
         "TopologyMismatch", "slot layout differs"),
        (CLUSTER_RESOLVED, {"nodes": [*AFTER_FAILOVER["nodes"][:5],
                                      cluster_server("replica", SHARDS[2], cluster_state="fail")]},
         "ClusterNotHealthy", "cluster_state:fail"),
        (CLUSTER_RESOLVED, {"nodes": [server("master")] * 6}, "Unsupported", "--to-redis"),
        (RESOLVED, AFTER_FAILOVER, "Unsupported", "--to-redis"),
    ],
)  # fmt: skip
def test_a_cluster_restore_that_cannot_map_every_pod_fails_before_staging(
    resolved: dict[str, Any], checked: dict[str, Any], reason: str, needle: str
) -> None:
    world = World(kind="RedisCluster", replicas=6, results={"resolve": resolved,
                                                          "check": checked})  # fmt: skip
    st = run(world)
    assert st["phase"] == "Failed" and condition(st, "Failed")["reason"] == reason
    assert needle in st["message"] and is_finished(st)
    if reason == "TopologyMismatch":
        assert "reshard" in st["message"] and "--to-redis" in st["message"]
    assert not [n for n in world.created if n.split("-")[1] not in ("resolve", "check")]
    assert not any(line.startswith(("scale", "delete")) for line in world.log)


def test_a_cluster_set_into_a_plain_statefulset_is_refused() -> None:
    world = World(replicas=6, results={"resolve": CLUSTER_RESOLVED, "check": AFTER_FAILOVER})
    st = run(world)
    assert condition(st, "Failed")["reason"] == "Unsupported" and "--to-cluster" in st["message"]


def test_a_cluster_quiesce_failure_resumes_and_discards_on_every_pod() -> None:
    world = World(kind="RedisCluster", replicas=6, results=cluster_results(),
                  fail={"r1-quiesce-4"})  # fmt: skip
    st = run(world)
    assert condition(st, "Failed")["reason"] == "QuiesceFailed"
    assert {f"r1-discard-{i}" for i in range(6)} <= set(world.created)
    assert not any(n.startswith("r1-swap") for n in world.created)
    assert not any(line.startswith("delete") for line in world.log)


# --- failures and rollback -----------------------------------------------------------------


def test_staging_failure_discards_staged_copies_after_running_stages_end() -> None:
    world = World(results=default_results(), fail={"r1-stage-1"}, hold={"r1-stage-2"})
    st = run(world, until=lambda s: s.get("phase") == "Failed")
    assert (
        condition(st, "Failed")["reason"] == "StagingFailed" and "r1-stage-1 broke" in st["message"]
    )
    assert condition(st, "Progressing")["reason"] == "RollingBack" and not is_finished(st)
    assert "not touched" in st["message"]
    # While stage-2 still runs, nothing is discarded.
    world.finish_jobs()
    p = plan(observed(world, st), T0)
    assert not p.jobs
    world.hold.clear()
    st = run(world, p.status)
    assert is_finished(st) and [p["rollback"] for p in st["pods"]] == ["Done"] * 3
    assert sorted(n for n in world.created if "discard" in n) == [
        "r1-discard-0", "r1-discard-1", "r1-discard-2"]  # fmt: skip
    assert not any(line.startswith(("scale", "delete")) for line in world.log)


def test_swap_failure_after_scaling_down_scales_back_up() -> None:
    world = World(results=default_results(), fail={"r1-swap-2"})
    st = run(world)
    assert st["phase"] == "Failed" and condition(st, "Failed")["reason"] == "SwapFailed"
    assert "scale redis 0" in world.log and world.log[-1] == "scale redis 3"
    assert st["statefulSets"][0]["scaledDown"] is False
    assert ".backupctl-previous-" in st["message"]  # two volumes were swapped
    assert [p.get("rollback") for p in st["pods"]] == [None, None, "Done"]


def test_in_place_quiesce_failure_resumes_the_quiesced_servers_then_discards() -> None:
    world = World(kind="RedisReplication", results=default_results(), fail={"r1-quiesce-2"})
    st = run(world)
    assert condition(st, "Failed")["reason"] == "QuiesceFailed"
    created = world.created
    assert {"r1-resume-0", "r1-resume-1"} <= set(created) and "r1-resume-2" not in created
    assert created.index("r1-resume-0") < created.index("r1-discard-0")
    resume = world.manifests["r1-resume-0"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--resume" in resume
    assert not any(line.startswith(("scale", "delete")) for line in world.log)


def test_a_pod_restarted_while_quiesced_stops_the_restore_before_the_swap() -> None:
    world = World(kind="RedisReplication", results=default_results(), hold={"r1-swap-0"})
    st = run(world, until=lambda s: s.get("phase") == "Restarting")
    world.pods["redis-1"] = replace(world.pods["redis-1"], restarts=1)  # container restart
    st = run(world, st)
    assert condition(st, "Failed")["reason"] == "TargetRestarted" and "redis-1" in st["message"]


def test_verification_failure_keeps_the_restored_data_and_says_where_the_old_is() -> None:
    world = World(results=default_results(), fail={"r1-verify"})
    st = run(world)
    assert condition(st, "Failed")["reason"] == "VerificationFailed"
    assert ".backupctl-previous-20240101-120500" in st["message"]
    assert "docs/kubernetes.md" in st["message"]
    assert is_finished(st) and not any(p.get("rollback") for p in st["pods"])


def test_pods_that_never_come_back_time_out() -> None:
    world = World(results=default_results())
    st = run(world, until=lambda s: s.get("phase") == "Restarting")
    world.jobs = {n: replace(j, state="Succeeded", result={"ok": True, **default_results().get(
        n.split("-")[1], {})}) for n, j in world.jobs.items()}  # fmt: skip
    p = plan(observed(world, st, target=replace(world.target(), pods=())), T0 + timedelta(hours=1))
    assert p.status["phase"] == "Failed" and condition(p.status, "Failed")["reason"] == "Timeout"


# --- small pure pieces ---------------------------------------------------------------------


def test_target_key_and_job_names() -> None:
    assert target_key({"redisClusterName": "a"}) == target_key(
        {"target": {"name": "a", "kind": "Redis"}}
    )
    assert target_key({"target": {"selector": {"matchLabels": {"b": "1", "a": "2"}}}}) == (
        target_key({"target": {"selector": {"matchLabels": {"a": "2", "b": "1"}}}})
    )
    assert job_name("r1", "stage", 2) == "r1-stage-2"
    long = job_name("x" * 200, "discard", 11)
    assert len(long) <= 63 and long.endswith("-discard-11")


# --- issue 14: users, stuck pods, backups of the same target ----------------------------------


def test_data_jobs_run_as_the_user_recorded_at_the_start_also_after_the_pods_are_gone() -> None:
    world = World(results=default_results())
    st = run(world)
    assert st["phase"] == "Completed"
    assert st["pods"][0]["runAsUser"] == 999 and st["pods"][0]["fsGroup"] == 999
    for step in ("stage-0", "swap-0", "swap-2"):
        security = world.manifests[f"r1-{step}"]["spec"]["template"]["spec"]["securityContext"]
        assert (security["runAsUser"], security["runAsGroup"], security["fsGroup"]) == (999,) * 3
    assert not any("-probe-" in n for n in world.created)


def test_an_unknown_user_is_read_from_the_data_volumes_owner_first() -> None:
    results = {**default_results(), "probe": {"uid": 999, "gid": 1000}}
    world = World(results=results, run_as=RunAs(fs_group=1000))
    st = run(world)
    assert st["phase"] == "Completed"
    assert {"r1-probe-0", "r1-probe-1", "r1-probe-2"} <= set(world.created)
    assert max(world.created.index(f"r1-probe-{i}") for i in range(3)) < world.created.index(
        "r1-stage-0"
    )
    probe = world.manifests["r1-probe-0"]["spec"]["template"]["spec"]
    assert probe["containers"][0]["command"][0] == "python3"
    assert "runAsUser" not in probe["securityContext"]  # the image's non-root user
    swap = world.manifests["r1-swap-1"]["spec"]["template"]["spec"]["securityContext"]
    assert (swap["runAsUser"], swap["runAsGroup"], swap["fsGroup"]) == (999, 1000, 1000)


@pytest.mark.parametrize(
    ("run_as", "results"),
    [
        (RunAs(user=0), {}),
        (RunAs(), {"probe": {"uid": 0, "gid": 0}}),
    ],
)
def test_a_root_redis_is_refused_before_anything_is_touched(
    run_as: RunAs, results: dict[str, Any]
) -> None:
    world = World(results={**default_results(), **results}, run_as=run_as)
    st = run(world)
    assert condition(st, "Failed")["reason"] == "RunsAsRoot"
    assert "runAsUser" in st["message"]
    assert not any("-stage-" in n for n in world.created)


def test_a_swap_job_that_cannot_be_scheduled_fails_and_scales_back_within_the_grace() -> None:
    unschedulable = PodProblem(
        "Unschedulable", "0/3 nodes are available: 1 node(s) were unschedulable", since=T0
    )
    world = World(
        results=default_results(),
        stuck={"r1-swap-1": unschedulable, "r1-discard-1": unschedulable},
        spec_extra={"startTimeoutSeconds": 60},
    )
    st = run(world)
    failed = condition(st, "Failed")
    assert st["phase"] == "Failed" and failed["reason"] == "Unschedulable"
    assert "r1-swap-1" in failed["message"] and "unschedulable" in failed["message"]
    assert "delete job r1-swap-1" in world.log and "delete job r1-discard-1" in world.log
    assert world.log.index("delete job r1-swap-1") < world.log.index("scale redis 3")
    assert st["statefulSets"][0]["scaledDown"] is False
    # pod 1 was never swapped: its discard Job cannot start either and is given up
    assert "stays on data-redis-1" in st["pods"][1]["message"]
    assert condition(st, "Progressing")["status"] == "False"


def test_a_stuck_pod_is_not_failed_before_the_grace() -> None:
    creating = PodProblem("ContainerCreating", "Multi-Attach error", since=T0, hard=False)
    world = World(results=default_results(), stuck={"r1-stage-0": creating})
    st = run(world, until=lambda s: s.get("phase") == "Staging", steps=5)
    p = plan(observed(world, st), T0 + timedelta(seconds=299))
    assert p.status["phase"] == "Staging" and not p.delete_jobs
    p = plan(observed(world, st), T0 + timedelta(seconds=301))
    assert condition(p.status, "Failed")["reason"] == "ContainerCreating"
    assert p.delete_jobs == ("r1-stage-0",) and "Multi-Attach" in p.status["message"]


def test_a_restore_waits_for_a_running_backup_job_of_its_target() -> None:
    world = World(results=default_results(), backups=("nightly-20240101120000",))
    p = plan(observed(world, {}), T0)
    assert p.status["phase"] == "Pending" and not p.jobs
    ready = condition(p.status, "Ready")
    assert ready["reason"] == "WaitingForBackup" and "nightly-20240101120000" in ready["message"]
    assert [e.reason for e in p.events] == ["WaitingForBackup"]
    world.backups = ()
    st = run(world)
    assert st["phase"] == "Completed"
