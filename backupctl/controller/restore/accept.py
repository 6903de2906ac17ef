"""Whether the resolved backup can go into the checked target, and how (pure).

After the ``resolve`` and ``check`` Jobs, :func:`accept` compares what they
reported -- the backup's manifest (mode, nodes, versions, key counts) and
each server's version, role, cluster mode, CONFIG and slots -- records the
backup in the status, and refuses, with a :class:`Failure` naming what to do
instead, everything a file restore cannot do safely: a backup the target
cannot load (:func:`backupctl.core.compat.load_problem`, both sides named),
a target without exactly one primary, a server without CONFIG on the
in-place route, a single server's backup into a cluster or a cluster backup
set into anything but an operator-managed Redis Cluster of the same slot
layout (:func:`cluster_sources`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from backupctl.controller.restore.draft import Failure
from backupctl.controller.restore.model import IN_PLACE
from backupctl.core.compat import load_problem
from backupctl.core.slots import CLUSTER_SLOTS, Ranges, format_slots, normalize_slots, slot_count


def accept(status: dict[str, Any], resolved: Mapping[str, Any], checked: Mapping[str, Any]) -> None:
    """Record the resolved backup in ``status`` and refuse what cannot work."""
    if not resolved.get("id"):
        error = resolved.get("error") or "the result names no backup"
        raise Failure("BackupNotFound", f"resolving the backup failed: {error}")
    nodes = list(resolved.get("nodes") or [])
    if not nodes:
        raise Failure("BackupNotFound", "the backup's manifest lists no node")
    servers = list(checked.get("nodes") or [])
    pods = status["pods"]
    if len(servers) != len(pods):
        raise Failure("TargetCheckFailed", "the target check did not report every pod")
    if resolved.get("mode") == "cluster":
        _accept_cluster(status, resolved, nodes, servers)
        return
    if resolved.get("mode", "standalone") != "standalone":
        raise Failure(
            "Unsupported",
            f"a {resolved.get('mode')} backup cannot be restored by RedisRestore: use "
            "`backupctl restore STORE ID --to-redis redis://<primary>`",
        )
    cluster_pods = [p["name"] for p, s in zip(pods, servers, strict=True) if s.get("cluster")]
    if cluster_pods:
        raise Failure(
            "Unsupported",
            f"backup {resolved['id']} is a single server's backup and pods "
            f"{', '.join(cluster_pods)} run cluster mode: its keys belong to every shard, "
            "which a file restore cannot split; load it through the cluster with "
            f"`backupctl restore STORE {resolved['id']} --to-redis redis://<any node>`",
        )
    source = next((n for n in nodes if n.get("role") == "master"), nodes[0])
    for pod, server in zip(pods, servers, strict=True):
        _accept_server(status, pod, server, source, resolved)
    primaries = [p["name"] for p in pods if p["role"] == "primary"]
    if len(primaries) != 1:
        raise Failure(
            "Unsupported",
            f"the target has {len(primaries)} primaries ({', '.join(primaries) or 'none'}); "
            "one primary with replicas (or a single server) is supported",
        )
    status.update(
        backupId=str(resolved["id"]),
        expectedKeys=int(source.get("keys", resolved.get("keys", 0))),
        sourceNode=str(source["name"]),
        backupRedisVersion=str(source.get("redisVersion") or ""),
        redisVersion=str(servers[0].get("version") or ""),
    )


def _accept_cluster(
    status: dict[str, Any],
    resolved: Mapping[str, Any],
    nodes: Sequence[Mapping[str, Any]],
    servers: Sequence[Mapping[str, Any]],
) -> None:
    """A cluster backup set into a Redis Cluster: each pod gets the archive
    of the backup shard whose slots its shard serves now (Redis said so in
    the check Job), whatever its name or current role."""
    backup_id = str(resolved["id"])
    pods = status["pods"]
    if status.get("route") != IN_PLACE:
        raise Failure(
            "Unsupported",
            f"{status['target']} is a plain StatefulSet: RedisRestore restores a cluster backup "
            "set into an operator-managed Redis Cluster (OpsTree RedisCluster) only; use "
            f"`backupctl restore STORE {backup_id} --to-cluster redis://<any node> "
            "--restart`",
        )
    not_cluster = [p["name"] for p, s in zip(pods, servers, strict=True) if not s.get("cluster")]
    if not_cluster:
        raise Failure(
            "Unsupported",
            f"backup {backup_id} is a cluster backup set, but pods {', '.join(not_cluster)} "
            "do not run cluster mode: load it key by key with `backupctl restore STORE "
            f"{backup_id} --to-redis redis://<primary>`",
        )
    sources = cluster_sources(backup_id, nodes, [p["name"] for p in pods], servers)
    for pod, server, source in zip(pods, servers, sources, strict=True):
        pod["sourceNode"] = str(source["name"])
        pod["slots"] = format_slots(normalize_slots(source.get("slots") or []))
        _accept_server(status, pod, server, source, resolved)
    status.update(
        backupId=backup_id,
        cluster=True,
        shards=len(nodes),
        expectedKeys=sum(int(n.get("keys") or 0) for n in nodes),
        backupRedisVersion=str(resolved.get("redisVersion") or ""),
        redisVersion=str(servers[0].get("version") or ""),
    )


def _accept_server(
    status: Mapping[str, Any],
    pod: dict[str, Any],
    server: Mapping[str, Any],
    source: Mapping[str, Any],
    resolved: Mapping[str, Any],
) -> None:
    """Record the pod's role; refuse a server that cannot take ``source``'s
    archive (newer Redis or RDB format; no CONFIG to quiesce it in place)."""
    pod["role"] = "primary" if server.get("role") == "master" else "replica"
    if status.get("route") == IN_PLACE and not server.get("config"):
        raise Failure(
            "ConfigDisabled",
            f"pod {pod['name']}: CONFIG is disabled or renamed, so Redis cannot be kept "
            "from overwriting the restored files while it runs (in-place route)",
        )
    flavour = str(source.get("flavour") or resolved.get("flavour") or "redis")
    own = source.get("serverVersion") or resolved.get("serverVersion")
    version = (own if flavour != "redis" else None) or (
        source.get("redisVersion") or resolved.get("redisVersion") or ""
    )
    problem = load_problem(
        flavour,
        str(version),
        source.get("rdbMagic"),
        source.get("rdbVersion"),
        str(server.get("flavour") or "redis"),
        str(server.get("server_version") or server.get("version") or ""),
    )
    if problem is not None:
        raise Failure("IncompatibleVersion", f"pod {pod['name']}: {problem}")


def cluster_sources(
    backup_id: str,
    nodes: Sequence[Mapping[str, Any]],
    pods: Sequence[str],
    servers: Sequence[Mapping[str, Any]],
) -> list[Mapping[str, Any]]:
    """The backup node (a shard of the set: ``name``, ``slots``) whose archive
    each pod gets: the one with exactly the slot ranges the pod's shard serves
    now (``servers[i]["slots"]``, from Redis: a replica reports its master's).
    :class:`Failure` (nothing touched) for an unhealthy cluster, a backup set
    that does not cover every slot, or another shard count or slot layout."""
    redo = (
        "a file restore needs the same shards serving the same slots: reshard the cluster to "
        "the backup's layout, or load the backup key by key through the cluster with "
        f"`backupctl restore STORE {backup_id} --to-redis redis://<any node>` (any layout)"
    )
    for pod, server in zip(pods, servers, strict=True):
        if server.get("cluster_state") != "ok":
            raise Failure(
                "ClusterNotHealthy",
                f"pod {pod} reports cluster_state:{server.get('cluster_state') or '?'}: restore "
                "into a healthy cluster only (redis-cli --cluster check; wait for failovers to "
                "end)",
            )
    ours: dict[Ranges, Mapping[str, Any]] = {}
    for node in nodes:
        ranges = normalize_slots(node.get("slots") or [])
        if not ranges or ranges in ours:
            raise Failure(
                "InvalidBackup",
                f"backup {backup_id}: node {node.get('name')} has no or the same slot ranges as "
                "another: not a complete cluster backup set",
            )
        ours[ranges] = node
    covered = sum(slot_count(r) for r in ours)
    if covered != CLUSTER_SLOTS:
        raise Failure(
            "InvalidBackup",
            f"backup {backup_id}'s shards cover {covered} of {CLUSTER_SLOTS} slots: not a "
            "complete cluster backup set",
        )
    theirs = [normalize_slots(s.get("slots") or []) for s in servers]
    live = {r for r in theirs if r}
    if set(ours) != live or not all(theirs):
        idle = [p for p, r in zip(pods, theirs, strict=True) if not r]
        if idle:
            detail = f"pods {', '.join(idle)} belong to no shard serving slots"
        elif len(ours) != len(live):
            detail = f"the backup holds {len(ours)} shards, the cluster has {len(live)}"
        else:
            detail = "the cluster's slot layout differs from the backup's"
        raise Failure(
            "TopologyMismatch",
            f"{detail} (backup: {_layout(ours)}; cluster: {_layout(live)}): {redo}",
        )
    return [ours[r] for r in theirs]


def _layout(keys: Iterable[Ranges], limit: int = 8) -> str:
    items = sorted(keys)
    shown = "; ".join(format_slots(k) for k in items[:limit])
    return shown + (f"; ... ({len(items) - limit} more)" if len(items) > limit else "")


__all__ = ["accept", "cluster_sources"]
