"""Finding the Redis pod to back up: topology.py (pure) and targets.py (against the API emulator).

The emulator gets minimal CRDs for the Redis operators (OpsTree ``redis.redis.opstreelabs.in``,
Spotahome ``databases.spotahome.com``) and StatefulSets + pods shaped like those operators make
them; :func:`backupctl.controller.targets.resolve` reads them over HTTP with the controller's
own client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import kubernetes_validate
import pytest

from backupctl.controller.kube import Kube
from backupctl.controller.manifests import backup_job
from backupctl.controller.spec import SecretRef, TargetSpec, parse_backup
from backupctl.controller.targets import resolve
from backupctl.controller.topology import (
    TargetError,
    Workload,
    choose,
    cluster_enabled,
    data_volume,
    label_selector,
    opstree_shards,
    password_secret,
    redis_container,
    redis_port,
)

from support.kube.fixtures import K8sApi

NS = "ns"


def pod(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    ready: bool = True,
    claim: str | None = "data",
    port: int = 6379,
    node: str = "node-a",
    ip: str = "10.0.0.1",
    **container: Any,
) -> dict[str, Any]:
    volumes = (
        [{"name": "data", "persistentVolumeClaim": {"claimName": f"{claim}-{name}"}}]
        if claim
        else []
    )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels or {}},
        "spec": {
            "nodeName": node,
            "containers": [
                {"name": "exporter", "image": "exporter", "ports": [{"containerPort": 9121}]},
                {
                    "name": "redis",
                    "image": "redis:7",
                    "ports": [{"name": "redis", "containerPort": port}],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}] if claim else [],
                    **container,
                },
            ],
            "volumes": volumes,
        },
        "status": {
            "phase": "Running" if ready else "Pending",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


# --- topology (pure) ------------------------------------------------------------------


def test_the_primary_by_role_label_wins_over_the_ordinal() -> None:
    pods = [
        pod("r-0", labels={"redis-role": "slave"}),
        pod("r-1", labels={"redis-role": "master"}),
    ]
    choice = choose(Workload("RedisReplication", "r", pods))
    assert choice.pod.name == "r-1" and choice.role == "primary"
    assert choice.description == "RedisReplication/r, pod r-1 (primary)"
    assert choose(Workload("RedisReplication", "r", pods), prefer_replica=True).pod.name == "r-0"


@pytest.mark.parametrize(
    "key", ["role", "redis-role", "redisfailovers-role", "app.kubernetes.io/role"]
)
def test_the_role_labels_of_the_redis_operators_are_read(key: str) -> None:
    pods = [pod("a-0", labels={key: "replica"}), pod("a-1", labels={key: "leader"})]
    assert choose(Workload("StatefulSet", "a", pods)).pod.name == "a-1"


def test_without_roles_the_first_ready_pod_by_ordinal() -> None:
    pods = [pod("r-10"), pod("r-2"), pod("r-0", ready=False), pod("r-1")]
    choice = choose(Workload("StatefulSet", "r", pods))
    assert choice.pod.name == "r-1" and choice.role is None


def test_no_ready_pod_is_target_not_ready_with_the_pod_states() -> None:
    with pytest.raises(TargetError) as e:
        choose(Workload("StatefulSet", "r", [pod("r-0", ready=False)]))
    assert e.value.reason == "TargetNotReady"
    assert e.value.message == "StatefulSet/r has no ready pod: r-0 (Pending)"
    with pytest.raises(TargetError, match="has no pods"):
        choose(Workload("StatefulSet", "r", []))


def test_bgsave_needs_the_data_pvc_and_node_replication_does_not() -> None:
    bare = [pod("r-0", claim=None)]
    with pytest.raises(TargetError) as e:
        choose(Workload("StatefulSet", "r", bare), method="bgsave")
    assert e.value.reason == "DataVolumeNotFound" and "method: replication" in e.value.message
    assert choose(Workload("StatefulSet", "r", bare), method="replication").pod.data_pvc is None


def test_the_target_pod_has_address_port_node_claim_and_password() -> None:
    p = pod(
        "r-0",
        port=7000,
        env=[
            {
                "name": "REDIS_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "auth", "key": "pw"}},
            }
        ],
    )
    target = choose(Workload("StatefulSet", "r", [p])).pod
    assert (target.host, target.port, target.node_name) == ("10.0.0.1", 7000, "node-a")
    assert target.data_pvc == "data-r-0" and target.data_sub_path is None
    assert target.password_secret == SecretRef("auth", "pw")
    # With TLS the pod's DNS name (what certificates name), through the headless Service.
    tls = choose(Workload("StatefulSet", "r", [p], service_name="r-headless"), tls=True).pod
    assert tls.host == "r-0.r-headless.ns.svc"


def test_the_data_volume_is_the_claim_mounted_at_the_data_dir() -> None:
    p = pod("r-0", claim=None)
    p["spec"]["volumes"] = [
        {"name": "conf", "persistentVolumeClaim": {"claimName": "conf-r-0"}},
        {"name": "redis-data", "persistentVolumeClaim": {"claimName": "redis-data-r-0"}},
    ]
    container = p["spec"]["containers"][1]
    container["volumeMounts"] = [
        {"name": "conf", "mountPath": "/etc/redis"},
        {"name": "redis-data", "mountPath": "/data", "subPath": "redis"},
    ]
    assert data_volume(p, container) == ("redis-data-r-0", "redis")
    p["spec"]["volumes"] = [{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {}}}]
    container["volumeMounts"] = [{"name": "scratch", "mountPath": "/var/lib/redis"}]
    assert data_volume(p, container) == ("r-0-scratch", None)


def test_port_and_password_come_from_the_operator_resource_first() -> None:
    container = redis_container(pod("r-0", port=7001))
    assert container["name"] == "redis"
    opstree = {
        "spec": {"port": 6380, "kubernetesConfig": {"redisSecret": {"name": "s", "key": "k"}}}
    }
    spotahome = {"spec": {"redis": {"port": 6381}, "auth": {"secretPath": "rf-auth"}}}
    assert redis_port(opstree, container) == 6380
    assert redis_port(spotahome, container) == 6381
    assert redis_port(None, container) == 7001
    assert redis_port(None, {}) == 6379
    assert password_secret(opstree, container) == SecretRef("s", "k")
    assert password_secret(spotahome, container) == SecretRef("rf-auth", "password")
    assert password_secret(None, container) is None


def test_label_selector_strings() -> None:
    selector = {
        "matchLabels": {"b": "2", "a": "1"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["cache", "db"]},
            {"key": "x", "operator": "NotIn", "values": ["y"]},
            {"key": "e", "operator": "Exists"},
            {"key": "d", "operator": "DoesNotExist"},
        ],
    }
    assert label_selector(selector) == "a=1,b=2,tier in (cache,db),x notin (y),e,!d"


def test_a_redis_cluster_is_backed_up_whole_from_one_node() -> None:
    leaders = [pod(f"c-leader-{i}") for i in range(3)]
    followers = [pod(f"c-follower-{i}") for i in range(3)]
    roles = {p["metadata"]["name"]: "primary" for p in leaders} | {
        p["metadata"]["name"]: "replica" for p in followers
    }
    choice = choose(Workload("RedisCluster", "c", followers + leaders, roles))
    assert choice.cluster and choice.pod.name == "c-leader-0"
    assert choice.description == "RedisCluster/c, every shard, from pod c-leader-0"
    assert choice.note and "replication protocol" in choice.note
    assert choose(Workload("RedisCluster", "c", leaders), method="replication").note is None
    assert cluster_enabled({"args": ["--cluster-enabled", "yes", "--port", "6379"]})
    assert cluster_enabled({"command": ["sh", "-c", "redis-server --cluster-enabled yes"]})
    assert not cluster_enabled({"args": ["--cluster-enabled", "no"]})

    spec = parse_backup({"redisClusterName": "c", "storage": {"s3": {"bucket": "b"}}})
    job = backup_job(
        spec,
        name="c-20300101020000",
        namespace=NS,
        backup_name="nightly",
        owner=None,
        target_pod=choice.pod,
        slot=datetime(2030, 1, 1, 2, tzinfo=UTC),
        image="backupctl:test",
        cluster=choice.cluster,
    )
    kubernetes_validate.validate(job, kubernetes_validate.utils.latest_version(), strict=True)
    container = job["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert "--cluster" in args and args[args.index("--method") + 1] == "replication"
    assert "--data-dir" not in args
    assert "affinity" not in job["spec"]["template"]["spec"]


def test_the_shard_count_of_an_opstree_cluster_is_its_leader_count() -> None:
    def sts(replicas: int | None) -> dict[str, Any]:
        return {"spec": {} if replicas is None else {"replicas": replicas}}

    # The seed's "clusterSize: 6 = 3 primaries + 3 replicas": the leader StatefulSet says 3.
    seed = {"spec": {"clusterSize": 6, "redisLeader": {"replicas": 3}}}
    assert opstree_shards(seed, sts(3)) == 3
    assert opstree_shards({"spec": {"clusterSize": 6}}, sts(3)) == 3  # what the operator made
    # Without the StatefulSet's count: the leader pods there are, else OpsTree's own
    # rule (redisLeader.replicas, else clusterSize).
    assert opstree_shards({"spec": {"clusterSize": 6}}, sts(None), leader_pods=3) == 3
    assert opstree_shards({"spec": {"clusterSize": 6}}, sts(4), leader_pods=3) == 4
    assert opstree_shards(seed, sts(None)) == 3
    assert opstree_shards({"spec": {"clusterSize": 3}}, None) == 3
    assert opstree_shards({"spec": {"clusterSize": 0}}, sts(None)) is None
    assert opstree_shards(None, sts(True)) is None  # type: ignore[arg-type]


def test_an_opstree_cluster_gets_one_job_per_shard_a_plain_cluster_statefulset_one() -> None:
    leaders = [pod(f"c-leader-{i}") for i in range(3)]
    roles = {p["metadata"]["name"]: "primary" for p in leaders}
    choice = choose(Workload("RedisCluster", "c", leaders, roles, shards=3))
    assert (choice.cluster, choice.shards, choice.pod.name) == (True, 3, "c-leader-0")
    assert choice.description == "RedisCluster/c, 3 shards, one Job each, from pod c-leader-0"
    assert choice.note and "one Job for each of its 3 shards" in choice.note
    plain = [pod(f"s-{i}", args=["--cluster-enabled", "yes"]) for i in range(6)]
    choice = choose(Workload("StatefulSet", "s", plain, shards=6))
    assert (choice.cluster, choice.shards) == (True, None)  # one `run --cluster` Job
    assert choice.description == "StatefulSet/s, every shard, from pod s-0"


# --- targets.resolve against the API emulator -------------------------------------------


def crd(group: str, version: str, kind: str, plural: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


@pytest.fixture
def api(k8s_api: K8sApi) -> K8sApi:
    k8s_api.create_namespace(NS)
    return k8s_api


@pytest.fixture
def kube(api: K8sApi, monkeypatch: pytest.MonkeyPatch) -> Iterator[Kube]:
    monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig))
    client = Kube.connect()
    yield client
    client.close()


def statefulset(
    api: K8sApi, name: str, pods: list[dict[str, Any]], replicas: int | None = None
) -> None:
    labels = {"app": name}
    sts = api.create(
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": name},
            "spec": {
                **({"replicas": replicas} if replicas is not None else {}),
                "serviceName": f"{name}-headless",
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "redis", "image": "redis"}]},
                },
            },
        },
        NS,
    )
    owner = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": name,
        "uid": sts["metadata"]["uid"],
        "controller": True,
    }
    for p in pods:
        status = p.pop("status")
        p["metadata"]["labels"] = {**labels, **p["metadata"]["labels"]}
        p["metadata"]["ownerReferences"] = [owner]
        api.create(p, NS)
        api.patch("pods", NS, p["metadata"]["name"], {"status": status}, subresource="status")


def run(kube: Kube, target: TargetSpec) -> Workload:
    async def go() -> Workload:
        try:
            return await resolve(kube, NS, target)
        finally:
            await kube.aclose()

    return asyncio.run(go())


def test_a_name_is_looked_up_as_the_operators_resources_then_a_statefulset(
    api: K8sApi, kube: Kube
) -> None:
    statefulset(api, "cache", [pod("cache-0"), pod("cache-1")])
    # Another StatefulSet's pod with overlapping labels is not taken.
    stray = pod("stray-0", labels={"app": "cache"})
    stray.pop("status")
    stray["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "name": "other",
            "uid": "u",
            "controller": True,
        }
    ]
    api.create(stray, NS)
    workload = run(kube, TargetSpec(name="cache"))
    assert (workload.kind, workload.service_name) == ("StatefulSet", "cache-headless")
    assert sorted(p["metadata"]["name"] for p in workload.pods) == ["cache-0", "cache-1"]
    assert choose(workload).pod.name == "cache-0"


def test_an_opstree_redis_cluster_resolves_to_its_leader_and_follower_pods(
    api: K8sApi, kube: Kube
) -> None:
    api.apply([crd("redis.redis.opstreelabs.in", "v1beta2", "RedisCluster", "redisclusters")])
    api.create(
        {
            "apiVersion": "redis.redis.opstreelabs.in/v1beta2",
            "kind": "RedisCluster",
            "metadata": {"name": "rc"},
            "spec": {
                "clusterSize": 2,
                "port": 6390,
                "kubernetesConfig": {"redisSecret": {"name": "rc-auth", "key": "password"}},
            },
        },
        NS,
    )
    statefulset(api, "rc-leader", [pod("rc-leader-0"), pod("rc-leader-1")])
    statefulset(api, "rc-follower", [pod("rc-follower-0"), pod("rc-follower-1")])
    workload = run(kube, TargetSpec(name="rc"))
    assert workload.kind == "RedisCluster"
    assert (
        workload.roles["rc-leader-1"] == "primary" and workload.roles["rc-follower-0"] == "replica"
    )
    choice = choose(workload)
    assert choice.cluster and choice.pod.name == "rc-leader-0"
    assert choice.pod.port == 6390 and choice.pod.password_secret == SecretRef(
        "rc-auth", "password"
    )
    assert workload.shards == choice.shards == 2  # clusterSize: no replicas on the StatefulSet


def test_an_opstree_cluster_of_size_6_with_3_leaders_is_3_shards(api: K8sApi, kube: Kube) -> None:
    api.apply([crd("redis.redis.opstreelabs.in", "v1beta2", "RedisCluster", "redisclusters")])
    api.create(
        {
            "apiVersion": "redis.redis.opstreelabs.in/v1beta2",
            "kind": "RedisCluster",
            "metadata": {"name": "redis-cluster"},
            "spec": {"clusterSize": 6},
        },
        NS,
    )
    for role in ("leader", "follower"):
        name = f"redis-cluster-{role}"
        statefulset(api, name, [pod(f"{name}-{i}") for i in range(3)], replicas=3)
    workload = run(kube, TargetSpec(name="redis-cluster"))
    assert (workload.kind, workload.shards, len(workload.pods)) == ("RedisCluster", 3, 6)
    assert choose(workload).shards == 3


def test_a_spotahome_redis_failover_resolves_to_rfr_pods_and_their_master(
    api: K8sApi, kube: Kube
) -> None:
    api.apply([crd("databases.spotahome.com", "v1", "RedisFailover", "redisfailovers")])
    api.create(
        {
            "apiVersion": "databases.spotahome.com/v1",
            "kind": "RedisFailover",
            "metadata": {"name": "rf"},
            "spec": {"auth": {"secretPath": "rf-auth"}},
        },
        NS,
    )
    statefulset(
        api,
        "rfr-rf",
        [
            pod("rfr-rf-0", labels={"redisfailovers-role": "slave"}),
            pod("rfr-rf-1", labels={"redisfailovers-role": "master"}),
        ],
    )
    choice = choose(run(kube, TargetSpec(name="rf", kind="RedisFailover")), method="replication")
    assert choice.pod.name == "rfr-rf-1" and choice.role == "primary"
    assert choice.pod.password_secret == SecretRef("rf-auth", "password")
    assert choice.description == "RedisFailover/rf, pod rfr-rf-1 (primary)"


def test_a_selector_target_and_the_errors(api: K8sApi, kube: Kube) -> None:
    statefulset(api, "sel", [pod("sel-0", labels={"tier": "cache"})])
    workload = run(kube, TargetSpec(selector={"matchLabels": {"tier": "cache"}}))
    assert workload.kind == "Selector" and [p["metadata"]["name"] for p in workload.pods] == [
        "sel-0"
    ]
    with pytest.raises(TargetError) as e:
        run(kube, TargetSpec(name="ghost"))
    assert e.value.reason == "TargetNotFound"
    assert e.value.message == (
        "no RedisCluster or RedisReplication or Redis or RedisFailover or StatefulSet "
        "named ghost in namespace ns"
    )
    with pytest.raises(TargetError, match="no pod in namespace ns matches"):
        run(kube, TargetSpec(selector={"matchLabels": {"tier": "none"}}))
    # The operator's resource exists, its StatefulSet not yet: not ready (retried), not missing.
    api.apply(
        [crd("redis.redis.opstreelabs.in", "v1beta2", "RedisReplication", "redisreplications")]
    )
    api.create(
        {
            "apiVersion": "redis.redis.opstreelabs.in/v1beta2",
            "kind": "RedisReplication",
            "metadata": {"name": "young"},
            "spec": {},
        },
        NS,
    )
    with pytest.raises(TargetError) as e:
        run(kube, TargetSpec(name="young"))
    assert e.value.reason == "TargetNotReady"
    assert "RedisReplication/young exists, but its StatefulSet young" in e.value.message
