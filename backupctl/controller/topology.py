"""Which Redis pod a backup reads, chosen from objects the controller observed (pure).

:mod:`backupctl.controller.targets` fetches a :class:`Workload` (the operator's resource,
its StatefulSets' pods); :func:`choose` picks one pod and describes how to
reach it as a :class:`~backupctl.controller.manifests.TargetPod`.

The controller cannot ask Redis who is the primary (it holds no Secrets, and
Redis passwords live in Secrets), so the choice uses what Kubernetes shows:

1. only pods that are Running and Ready;
2. the pod's role from the labels the Redis operators set: ``redis-role``
   (OpsTree RedisReplication), ``role`` (OpsTree RedisCluster and others),
   ``redisfailovers-role`` (Spotahome), ``app.kubernetes.io/role`` -- values
   ``master``/``leader``/``primary`` or ``slave``/``replica``/``follower``;
   else what the workload implies (pods of an OpsTree ``<name>-leader``
   StatefulSet are primaries, of ``<name>-follower`` replicas);
3. the primary by default (a replica with ``preferReplica``), then the
   lowest StatefulSet ordinal.

The Job then connects to that pod. A Redis Cluster (an OpsTree
RedisCluster, or pods whose Redis runs with ``cluster-enabled yes``) is
sharded and backed up whole, over the replication protocol (one Job cannot
mount every shard's volume; :attr:`Choice.cluster`):

- an OpsTree RedisCluster, whose shard count the controller can read
  (:func:`opstree_shards`), gets one Job per shard (:attr:`Choice.shards`):
  Job I runs ``backupctl run --cluster --shard I/N`` from the chosen pod,
  asks Redis which node serves the I-th slot range now, and backs up that
  one (primaries move on failover: pod names say nothing about shards);
- any other cluster (a StatefulSet of ``cluster-enabled`` pods: the shard
  count is only known to Redis, which needs the password the controller does
  not hold) gets one Job running ``backupctl run --cluster``, which backs up
  every shard in parallel from one process.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from backupctl.controller.identity import effective_run_as
from backupctl.controller.manifests import TargetPod
from backupctl.controller.spec import SecretRef

PRIMARY_ROLES = frozenset({"master", "leader", "primary"})
REPLICA_ROLES = frozenset({"slave", "replica", "follower"})
ROLE_LABELS = (
    "redis-role",
    "role",
    "redisfailovers-role",
    "app.kubernetes.io/role",
    "redis.opstreelabs.in/role",
)
PASSWORD_ENV = ("REDIS_PASSWORD", "REDIS_AUTH", "REDISCLI_AUTH")
DEFAULT_PORT = 6379
DATA_PATH = "/data"
_ORDINAL = re.compile(r"-(\d+)$")


class TargetError(Exception):
    """The target cannot be backed up now; ``reason`` is a condition reason
    (``TargetNotFound``, ``TargetNotReady``, ``DataVolumeNotFound``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Workload:
    """A resolved target: what it is, and its pods.

    ``roles`` maps pod names to ``primary``/``replica`` where the workload's
    shape says so; ``resource`` is the Redis operator's custom resource (its
    port and password Secret), ``service_name`` the pods' headless Service;
    ``shards`` the number of shards of a Redis Cluster when the workload
    says it (:func:`opstree_shards`).
    """

    kind: str
    name: str
    pods: Sequence[Mapping[str, Any]] = ()
    roles: Mapping[str, str] = field(default_factory=dict)
    resource: Mapping[str, Any] | None = None
    service_name: str | None = None
    shards: int | None = None

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class Choice:
    """The pod a backup starts from; ``cluster``: back up every shard from it
    (``shards``: with one Job per shard, this many); ``note``: something the
    user should know (posted once as an Event)."""

    pod: TargetPod
    role: str | None
    description: str
    cluster: bool = False
    note: str | None = None
    shards: int | None = None


def choose(
    workload: Workload,
    *,
    method: str = "bgsave",
    prefer_replica: bool = False,
    tls: bool = False,
) -> Choice:
    """The pod to back up (see the module docstring); raises
    :class:`TargetError` when no pod can be used."""
    if not workload.pods:
        raise TargetError("TargetNotReady", f"{workload.label} has no pods")
    ready = [p for p in workload.pods if is_ready(p)]
    if not ready:
        states = ", ".join(f"{_name(p)} ({_phase(p)})" for p in workload.pods[:5])
        raise TargetError("TargetNotReady", f"{workload.label} has no ready pod: {states}")
    wanted = "replica" if prefer_replica else "primary"

    def rank(pod: Mapping[str, Any]) -> tuple[int, int, str]:
        role = pod_role(pod, workload.roles)
        order = 0 if role == wanted else 1 if role is None else 2
        return order, _ordinal(_name(pod)), _name(pod)

    pod = min(ready, key=rank)
    role = pod_role(pod, workload.roles)
    target = target_pod(pod, workload, tls=tls)
    cluster = workload.kind == "RedisCluster" or cluster_enabled(redis_container(pod))
    if cluster:
        shards = workload.shards if workload.kind == "RedisCluster" else None
        jobs = f"one Job for each of its {shards} shards" if shards else "one Job"
        note = None
        if method == "bgsave":
            note = (
                f"{workload.label} is a Redis Cluster: every shard is backed up over the "
                f"replication protocol, {jobs} (method bgsave would need each shard's volume)"
            )
        what = f"{shards} shards, one Job each" if shards else "every shard"
        description = f"{workload.label}, {what}, from pod {target.name}"
        return Choice(target, role, description, cluster=True, note=note, shards=shards)
    if method == "bgsave" and (not target.node_name or not target.data_pvc):
        raise TargetError(
            "DataVolumeNotFound",
            f"pod {target.name} of {workload.label} has no PersistentVolumeClaim mounted at its "
            "data directory (or is not on a node yet); method: bgsave reads the RDB from it, "
            "method: replication needs no volume",
        )
    description = f"{workload.label}, pod {target.name}" + (f" ({role})" if role else "")
    return Choice(pod=target, role=role, description=description)


def opstree_shards(
    resource: Mapping[str, Any] | None,
    leader_sts: Mapping[str, Any] | None,
    leader_pods: int = 0,
) -> int | None:
    """How many shards an OpsTree RedisCluster has: its leader count.

    What this relies on (OT-CONTAINER-KIT/redis-operator, api/rediscluster/
    v1beta2 ``GetReplicaCounts`` and k8sutils ``CreateMultipleLeaderRedisCommand``):
    the operator runs ``<name>-leader`` with ``spec.redisLeader.replicas``
    pods (default ``spec.clusterSize``) and creates the cluster from exactly
    those leaders (``redis-cli --cluster create leader-0 ... leader-(L-1)``);
    followers only replicate. So the shard count is the leader StatefulSet's
    ``spec.replicas`` -- what the operator made of the spec, read first -- else
    the number of leader pods there are (``leader_pods``), else
    ``redisLeader.replicas``, else ``clusterSize``. ``clusterSize`` counts the
    pods of *each* StatefulSet in OpsTree's code; the seed examples' "clusterSize
    6 = 3 primaries + 3 replicas" is the same cluster only when the leader and
    follower replicas are set to 3, and the leader StatefulSet says which. The
    shard Jobs check the count against Redis itself and refuse a mismatch.
    """
    candidates = [
        ((leader_sts or {}).get("spec") or {}).get("replicas"),
        leader_pods,
        (((resource or {}).get("spec") or {}).get("redisLeader") or {}).get("replicas"),
        ((resource or {}).get("spec") or {}).get("clusterSize"),
    ]
    for value in candidates:
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def target_pod(pod: Mapping[str, Any], workload: Workload, *, tls: bool = False) -> TargetPod:
    """How to reach ``pod``: address, port, node, data PVC, password Secret."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    name = _name(pod)
    container = redis_container(pod)
    host = str(status.get("podIP") or "")
    namespace = (pod.get("metadata") or {}).get("namespace")
    if (tls or not host) and workload.service_name and namespace:
        host = f"{name}.{workload.service_name}.{namespace}.svc"
    claim, sub_path = data_volume(pod, container)
    return TargetPod(
        name=name,
        host=host or name,
        port=redis_port(workload.resource, container),
        node_name=spec.get("nodeName"),
        data_pvc=claim,
        data_sub_path=sub_path,
        password_secret=password_secret(workload.resource, container),
        run_as=effective_run_as(pod, container),
    )


def check_bgsave_claim(target: TargetPod, claim: Mapping[str, Any] | None) -> TargetPod:
    """``target`` for ``method: bgsave``, whose Job mounts the data PVC beside
    the Redis pod; :class:`TargetError` when the claim's access mode is
    ``ReadWriteOncePod`` (no second pod can ever mount it)."""
    modes = ((claim or {}).get("spec") or {}).get("accessModes") or []
    if "ReadWriteOncePod" not in modes:
        return target
    raise TargetError(
        "ReadWriteOncePod",
        f"PersistentVolumeClaim {target.data_pvc} of pod {target.name} is ReadWriteOncePod, so "
        "no Job can mount it beside Redis for method: bgsave; use method: replication (the RDB "
        "is streamed over the network, no volume is mounted)",
    )


def is_ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def pod_role(pod: Mapping[str, Any], hints: Mapping[str, str] | None = None) -> str | None:
    """``primary``, ``replica`` or None (unknown)."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    for key in ROLE_LABELS:
        value = str(labels.get(key, "")).lower()
        if value in PRIMARY_ROLES:
            return "primary"
        if value in REPLICA_ROLES:
            return "replica"
    return (hints or {}).get(_name(pod))


def redis_container(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    """The Redis server container: named ``redis``, else one whose name
    contains ``redis`` (not an exporter or sentinel), else one exposing
    6379, else the first."""
    containers: list[Mapping[str, Any]] = list((pod.get("spec") or {}).get("containers") or [])
    if not containers:
        return {}

    def named_redis(c: Mapping[str, Any]) -> bool:
        name = str(c.get("name", ""))
        return "redis" in name and not any(x in name for x in ("exporter", "sentinel"))

    def serves_6379(c: Mapping[str, Any]) -> bool:
        return any(p.get("containerPort") == DEFAULT_PORT for p in c.get("ports") or [])

    tests: list[Callable[[Mapping[str, Any]], bool]] = [
        lambda c: c.get("name") == "redis",
        named_redis,
        serves_6379,
    ]
    for test in tests:
        found = [c for c in containers if test(c)]
        if found:
            return found[0]
    return containers[0]


def cluster_enabled(container: Mapping[str, Any]) -> bool:
    """Whether the container starts Redis with ``cluster-enabled yes`` on its
    command line (a config file is not visible to the controller)."""
    words = [str(w) for w in [*(container.get("command") or []), *(container.get("args") or [])]]
    return re.search(r"cluster-enabled[\s=]+yes", " ".join(words)) is not None


def redis_port(resource: Mapping[str, Any] | None, container: Mapping[str, Any]) -> int:
    """The operator resource's port (OpsTree ``spec.port``, Spotahome
    ``spec.redis.port``), else the container's redis port, else 6379."""
    spec = (resource or {}).get("spec") or {}
    for value in (spec.get("port"), (spec.get("redis") or {}).get("port")):
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536:
            return value
    ports = [p for p in container.get("ports") or [] if isinstance(p.get("containerPort"), int)]
    named = [p for p in ports if "redis" in str(p.get("name", "")) or p.get("name") == "tcp"]
    for p in named + ports:
        return int(p["containerPort"])
    return DEFAULT_PORT


def password_secret(
    resource: Mapping[str, Any] | None, container: Mapping[str, Any]
) -> SecretRef | None:
    """Where the Redis password is: OpsTree ``kubernetesConfig.redisSecret``,
    Spotahome ``auth.secretPath`` (key ``password``), else the container's
    ``REDIS_PASSWORD``-like env from a Secret."""
    spec = (resource or {}).get("spec") or {}
    secret = (spec.get("kubernetesConfig") or {}).get("redisSecret") or {}
    if secret.get("name") and secret.get("key"):
        return SecretRef(str(secret["name"]), str(secret["key"]))
    path = (spec.get("auth") or {}).get("secretPath")
    if path:
        return SecretRef(str(path), "password")
    for env in container.get("env") or []:
        ref = ((env.get("valueFrom") or {}).get("secretKeyRef")) or {}
        if env.get("name") in PASSWORD_ENV and ref.get("name") and ref.get("key"):
            return SecretRef(str(ref["name"]), str(ref["key"]))
    return None


def data_volume(
    pod: Mapping[str, Any], container: Mapping[str, Any]
) -> tuple[str | None, str | None]:
    """The claim (and subPath) mounted at the Redis data directory: a
    PVC-backed mount at ``/data``, else one whose path or volume name says
    ``data``, else the only PVC-backed mount."""
    spec = pod.get("spec") or {}
    claims: dict[str, str] = {}
    for volume in spec.get("volumes") or []:
        if (volume.get("persistentVolumeClaim") or {}).get("claimName"):
            claims[volume["name"]] = volume["persistentVolumeClaim"]["claimName"]
        elif "ephemeral" in volume:  # generic ephemeral volume: claim <pod>-<volume>
            claims[volume["name"]] = f"{_name(pod)}-{volume['name']}"
    mounts: list[Mapping[str, Any]] = [
        m for m in container.get("volumeMounts") or [] if m.get("name") in claims
    ]
    tests: list[Callable[[Mapping[str, Any]], bool]] = [
        lambda m: str(m.get("mountPath", "")).rstrip("/") == DATA_PATH,
        lambda m: "data" in str(m.get("mountPath", "")) or "data" in str(m.get("name", "")),
        lambda _m: len(mounts) == 1,
    ]
    for test in tests:
        found = [m for m in mounts if test(m)]
        if found:
            return claims[found[0]["name"]], found[0].get("subPath") or None
    return None, None


def label_selector(selector: Mapping[str, Any]) -> str:
    """A metav1.LabelSelector as the ``labelSelector`` query string."""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op = expr.get("key"), expr.get("operator")
        values = ",".join(str(v) for v in expr.get("values") or [])
        if op == "In":
            parts.append(f"{key} in ({values})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({values})")
        elif op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def owned_by(pod: Mapping[str, Any], kind: str, name: str) -> bool:
    """True when ``pod`` has no controller owner or its controller is ``kind/name``."""
    owners = [
        o for o in (pod.get("metadata") or {}).get("ownerReferences") or [] if o.get("controller")
    ]
    return not owners or any(o.get("kind") == kind and o.get("name") == name for o in owners)


def _name(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("name", ""))


def _phase(pod: Mapping[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "Pending")


def _ordinal(name: str) -> int:
    m = _ORDINAL.search(name)
    return int(m.group(1)) if m else 1 << 30


__all__ = [
    "Choice",
    "TargetError",
    "Workload",
    "check_bgsave_claim",
    "choose",
    "cluster_enabled",
    "data_volume",
    "is_ready",
    "label_selector",
    "opstree_shards",
    "owned_by",
    "password_secret",
    "pod_role",
    "redis_container",
    "redis_port",
    "target_pod",
]
