"""Redis Cluster topology: which shards exist, which nodes serve them, and
the slot ranges each serves (CLUSTER SHARDS, or CLUSTER NODES before 7.0).

Why a module of its own: a cluster backup, a file-level cluster restore and
the key-by-key loader all start from "the shards serving slots now", as
Redis says, never from pod names or ordinals (primaries move on failover).
:class:`Shard` and :class:`ClusterNode` are that answer; :func:`cluster_info`
and :func:`cluster_myid` are the per-node questions a restore asks before it
trusts it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from backupctl.redis.connection import (
    as_text,
    client_spec,
    command_error,
    error_for,
    exec_command,
    reply_map,
)
from backupctl.redis.errors import RedisNodeError

__all__ = ["ClusterNode", "Shard", "cluster_info", "cluster_myid", "cluster_shards"]


@dataclass(frozen=True)
class ClusterNode:
    node_id: str
    host: str
    port: int
    role: str  # "master" | "replica"
    health: str = "online"  # "online" | "failed" | "loading" | other as reported


@dataclass(frozen=True)
class Shard:
    """One master with its replicas and the slot ranges it serves."""

    slots: tuple[tuple[int, int], ...]
    nodes: tuple[ClusterNode, ...]

    @property
    def master(self) -> ClusterNode | None:
        return next((n for n in self.nodes if n.role == "master"), None)

    @property
    def replicas(self) -> tuple[ClusterNode, ...]:
        return tuple(n for n in self.nodes if n.role != "master")


def _shards_from_cluster_shards(raw: Sequence[Any], default_host: str = "") -> list[Shard]:
    shards: list[Shard] = []
    for item in raw:
        entry = reply_map(item)
        flat = [int(as_text(s)) for s in entry.get("slots", [])]
        slots = tuple((flat[i], flat[i + 1]) for i in range(0, len(flat) - 1, 2))
        nodes: list[ClusterNode] = []
        for node_raw in entry.get("nodes", []):
            node = reply_map(node_raw)
            # A node that has met no peer does not know its own IP: it is the one we asked.
            host = as_text(
                node.get("ip") or node.get("endpoint") or node.get("hostname") or default_host
            )
            port = int(as_text(node.get("port") or node.get("tls-port") or 0))
            role = as_text(node.get("role", "master"))
            nodes.append(
                ClusterNode(
                    node_id=as_text(node.get("id", "")),
                    host=host,
                    port=port,
                    role="replica" if role in ("replica", "slave") else role,
                    health=as_text(node.get("health", "online")),
                )
            )
        nodes.sort(key=lambda n: (n.role != "master", n.node_id))
        shards.append(Shard(slots=slots, nodes=tuple(nodes)))
    return _sorted_shards(shards)


def _sorted_shards(shards: list[Shard]) -> list[Shard]:
    def key(shard: Shard) -> tuple[int, str]:
        first = shard.slots[0][0] if shard.slots else 1 << 20
        return first, shard.nodes[0].node_id if shard.nodes else ""

    return sorted(shards, key=key)


def _shards_from_cluster_nodes(text: str, default_host: str = "") -> list[Shard]:
    """Parse CLUSTER NODES (Redis < 7.0) into shards."""
    masters: dict[str, tuple[ClusterNode, list[tuple[int, int]]]] = {}
    replicas: dict[str, list[ClusterNode]] = {}
    for line in text.splitlines()[:100_000]:
        fields = line.split()
        if len(fields) < 8:
            continue
        node_id, addr, flags_s, master_id = fields[0], fields[1], fields[2], fields[3]
        flags = set(flags_s.split(","))
        if flags & {"handshake", "noaddr"}:
            continue
        hostport = addr.split("@", 1)[0]
        host, _, port_s = hostport.rpartition(":")
        host = host.strip("[]") or default_host
        health = "failed" if flags & {"fail", "fail?"} else "online"
        if "master" in flags:
            ranges: list[tuple[int, int]] = []
            for slot in fields[8:]:
                if slot.startswith("["):
                    continue  # migrating/importing marker, not an owned range
                lo, _, hi = slot.partition("-")
                ranges.append((int(lo), int(hi or lo)))
            node = ClusterNode(node_id, host, int(port_s or 0), "master", health)
            masters[node_id] = (node, sorted(ranges))
        elif "slave" in flags or "replica" in flags:
            node = ClusterNode(node_id, host, int(port_s or 0), "replica", health)
            replicas.setdefault(master_id, []).append(node)
    shards = [
        Shard(
            slots=tuple(ranges),
            nodes=(node, *sorted(replicas.get(node_id, []), key=lambda n: n.node_id)),
        )
        for node_id, (node, ranges) in masters.items()
    ]
    return _sorted_shards(shards)


def cluster_shards(client: redis.Redis) -> list[Shard]:
    """Shards of the cluster ``client`` is connected to, sorted by first slot.

    Uses CLUSTER SHARDS (Redis >= 7.0) and falls back to CLUSTER NODES.
    Masters without slots appear as shards with no slot ranges.
    """
    spec = client_spec(client)
    try:
        raw = exec_command(client, "CLUSTER SHARDS")
        if isinstance(raw, list | tuple):
            return _shards_from_cluster_shards(raw, spec.host)
    except redis.ResponseError as exc:
        msg = as_text(exc).lower()
        if "cluster support disabled" in msg or "cluster mode" in msg:
            raise RedisNodeError(
                f"Redis at {spec.display} is not in cluster mode", reason="config"
            ) from None
        if "unknown subcommand" not in msg and "unknown command" not in msg:
            raise error_for(exc, spec, 0) from None
    except redis.RedisError as exc:
        raise error_for(exc, spec, 0) from None
    try:
        # "CLUSTER", "NODES" as separate words: redis-py's parser for
        # "CLUSTER NODES" drops fields we need, this gets the raw text.
        text = exec_command(client, "CLUSTER", "NODES")
    except redis.RedisError as exc:
        raise error_for(exc, spec, 0) from None
    return _shards_from_cluster_nodes(as_text(text), spec.host)


def cluster_info(client: redis.Redis) -> dict[str, str]:
    """CLUSTER INFO as ``field -> value`` (``cluster_state``, ``cluster_slots_ok``,
    ...). Failure: :class:`RedisNodeError` with redis-py's words
    (:func:`~backupctl.redis.connection.command_error`)."""
    try:
        raw = as_text(exec_command(client, "CLUSTER", "INFO"))
    except redis.RedisError as exc:
        raise command_error(exc, client) from None
    pairs = (line.split(":", 1) for line in raw.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def cluster_myid(client: redis.Redis) -> str:
    """The node id of the node ``client`` talks to (CLUSTER MYID). Failure:
    :class:`RedisNodeError` with redis-py's words."""
    try:
        return as_text(exec_command(client, "CLUSTER", "MYID"))
    except redis.RedisError as exc:
        raise command_error(exc, client) from None
