"""Local Redis Clusters for tests: ``redis-server`` processes in cluster mode on
127.0.0.1 (started by ``redis_factory``), slots split evenly between masters,
and helpers that write through redis-py's ``RedisCluster``."""

from __future__ import annotations

import redis
from redisfixtures import RedisFactory, RedisServer, wait_for

CLUSTER_ARGS = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
TEN_YEARS = 10 * 365 * 24 * 3600


def make_cluster(redis_factory: RedisFactory, n: int = 3) -> list[RedisServer]:
    """``n`` masters, no replicas, all 16384 slots assigned; returns once every
    node says ``cluster_state:ok`` and knows ``n`` masters (at most 30 s)."""
    nodes = [redis_factory(extra_args=CLUSTER_ARGS) for _ in range(n)]
    step = 16384 // n
    for i, node in enumerate(nodes):
        end = 16383 if i == n - 1 else (i + 1) * step - 1
        node.client().execute_command("CLUSTER", "ADDSLOTSRANGE", i * step, end)
    first = nodes[0].client()
    for node in nodes[1:]:
        first.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)

    def ok() -> bool:
        return all(
            node.client().cluster("info")["cluster_state"] == "ok"
            and node.client().execute_command("CLUSTER", "NODES").count("master") == n
            for node in nodes
        )

    wait_for(ok, timeout=30, what="cluster_state:ok")
    return nodes


def cluster_client(nodes: list[RedisServer], **kwargs: object) -> redis.RedisCluster:
    return redis.RedisCluster(host="127.0.0.1", port=nodes[0].port, **kwargs)  # type: ignore[arg-type]


def fill_cluster(nodes: list[RedisServer], n_keys: int, *, varied: bool = False) -> int:
    """Write ``n_keys`` strings ``key:i`` through RedisCluster; with ``varied``
    also n_keys // 50 each of hashes, lists and strings with a TTL ten years out.
    Returns the number of keys written."""
    rc = cluster_client(nodes)
    extra = n_keys // 50 if varied else 0
    try:
        for start in range(0, n_keys, 5000):
            pipe = rc.pipeline()
            for i in range(start, min(start + 5000, n_keys)):
                pipe.set(f"key:{i}", f"value-{i}")
            pipe.execute()
        pipe = rc.pipeline()
        for i in range(extra):
            pipe.hset(f"hash:{i}", mapping={f"f{j}": f"v{i}-{j}" for j in range(4)})
            pipe.rpush(f"list:{i}", *[f"item{j}" for j in range(4)])
            pipe.set(f"ttl:{i}", f"expires-{i}", ex=TEN_YEARS)
        pipe.execute()
    finally:
        rc.close()
    return n_keys + 3 * extra


__all__ = ["CLUSTER_ARGS", "cluster_client", "fill_cluster", "make_cluster"]
