"""Resolve a RedisBackup's target to the pod to back up (the reads from the cluster).

``redisClusterName``/``target.name`` is looked up as (``target.kind`` or, in
this order) an OpsTree ``RedisCluster`` (StatefulSets ``<name>-leader`` and
``<name>-follower``; its shard count is read from the leader StatefulSet, see
:func:`backupctl.controller.topology.opstree_shards`), ``RedisReplication`` or ``Redis``
(StatefulSet ``<name>``), a Spotahome ``RedisFailover`` (StatefulSet
``rfr-<name>``), or a plain ``StatefulSet``; ``target.selector`` selects pods
directly. The pods
come from each StatefulSet's own selector. Choosing the pod, its address,
port, data PVC and password Secret is pure (:mod:`backupctl.controller.topology`).

A missing custom resource type (the Redis operator is not installed) reads
as "not found", like a missing object. Only metadata, specs and pod status
are read: never a Secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backupctl.controller.kube import Kube
from backupctl.controller.spec import TARGET_KINDS, TargetSpec
from backupctl.controller.topology import (
    TargetError,
    Workload,
    label_selector,
    opstree_shards,
    owned_by,
)

OPSTREE = ("redis.redis.opstreelabs.in", "v1beta2")
SPOTAHOME = ("databases.spotahome.com", "v1")
#: kind -> (group, version, plural) of the Redis operators' resources.
OPERATOR_RESOURCES: Mapping[str, tuple[str, str, str]] = {
    "RedisCluster": (*OPSTREE, "redisclusters"),
    "RedisReplication": (*OPSTREE, "redisreplications"),
    "Redis": (*OPSTREE, "redis"),
    "RedisFailover": (*SPOTAHOME, "redisfailovers"),
}


async def resolve(kube: Kube, namespace: str, target: TargetSpec) -> Workload:
    """The workload ``target`` names, with its pods; raises
    :class:`~backupctl.controller.topology.TargetError` (``TargetNotFound``,
    ``TargetNotReady``)."""
    if target.selector is not None:
        selector = label_selector(target.selector)
        pods = await kube.list("", "v1", "pods", namespace, selector)
        if not pods:
            raise TargetError(
                "TargetNotFound", f"no pod in namespace {namespace} matches the selector {selector}"
            )
        return Workload(kind="Selector", name=selector, pods=pods)
    assert target.name is not None
    kinds = [target.kind] if target.kind else list(TARGET_KINDS)
    for kind in kinds:
        workload = await _lookup(kube, namespace, kind, target.name)
        if workload is not None:
            return workload
    raise TargetError(
        "TargetNotFound",
        f"no {' or '.join(kinds)} named {target.name} in namespace {namespace}",
    )


async def _lookup(kube: Kube, namespace: str, kind: str, name: str) -> Workload | None:
    if kind == "StatefulSet":
        sts = await kube.get("apps", "v1", "statefulsets", namespace, name)
        if sts is None:
            return None
        return Workload(
            kind=kind,
            name=name,
            pods=await _pods(kube, namespace, sts),
            service_name=_service(sts),
        )
    group, version, plural = OPERATOR_RESOURCES[kind]
    resource = await kube.get(group, version, plural, namespace, name)
    if resource is None:
        return None
    sets: list[tuple[str, str | None]] = [(name, None)]
    if kind == "RedisCluster":
        sets = [(f"{name}-leader", "primary"), (f"{name}-follower", "replica")]
    elif kind == "RedisFailover":
        sets = [(f"rfr-{name}", None)]
    pods: list[dict[str, Any]] = []
    roles: dict[str, str] = {}
    service = None
    shards = None
    for sts_name, role in sets:
        sts = await kube.get("apps", "v1", "statefulsets", namespace, sts_name)
        if sts is None:
            if role != "replica":  # followers are optional
                raise TargetError(
                    "TargetNotReady",
                    f"{kind}/{name} exists, but its StatefulSet {sts_name} was not found (yet)",
                )
            continue
        found = await _pods(kube, namespace, sts)
        pods += found
        service = service or _service(sts)
        if role is not None:
            roles.update({str(p["metadata"]["name"]): role for p in found})
        if kind == "RedisCluster" and role == "primary":
            shards = opstree_shards(resource, sts, len(found))
    return Workload(
        kind=kind,
        name=name,
        pods=pods,
        roles=roles,
        resource=resource,
        service_name=service,
        shards=shards,
    )


async def _pods(kube: Kube, namespace: str, sts: Mapping[str, Any]) -> list[dict[str, Any]]:
    name = str(sts["metadata"]["name"])
    selector = label_selector((sts.get("spec") or {}).get("selector") or {})
    if not selector:
        raise TargetError("TargetNotReady", f"StatefulSet {name} has no pod selector")
    pods = await kube.list("", "v1", "pods", namespace, selector)
    return [p for p in pods if owned_by(p, "StatefulSet", name)]


def _service(sts: Mapping[str, Any]) -> str | None:
    value = (sts.get("spec") or {}).get("serviceName")
    return str(value) if value else None


__all__ = ["OPERATOR_RESOURCES", "resolve"]
