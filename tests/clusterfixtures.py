"""Local Redis Clusters for tests: real ``redis-server`` processes in cluster mode on 127.0.0.1.

``make_cluster(redis_factory, 3)`` gives 3 masters serving all 16384 slots;
``add_replicas(redis_factory, masters)`` gives each master one replica (3 + 3 is the
"clusterSize 6" topology of the seed examples); ``fill_cluster`` writes keys through a
cluster client, so they spread over every shard.
"""

from __future__ import annotations

import redis
from redisfixtures import RedisFactory, RedisServer, wait_for

from backupctl.redisnode import cluster_shards

#: ``repl-ping-replica-period 1``: a master sees a new replica "online" in CLUSTER SHARDS once
#: its replication offset moved, which an idle master does only by this ping (default 10 s).
CLUSTER_ARGS = [
    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
    "--repl-ping-replica-period", "1",
]  # fmt: skip


def make_cluster(redis_factory: RedisFactory, n: int = 3) -> list[RedisServer]:
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


def add_replicas(redis_factory: RedisFactory, masters: list[RedisServer]) -> list[RedisServer]:
    """One replica per master (``replicas[i]`` replicates ``masters[i]``), in sync and seen
    online by every master; returns the replicas."""
    replicas = [redis_factory(extra_args=CLUSTER_ARGS) for _ in masters]
    for replica in replicas:  # meeting every master at once is faster than gossip
        for master in masters:
            replica.client().execute_command("CLUSTER", "MEET", "127.0.0.1", master.port)
    ids = [m.client().execute_command("CLUSTER", "MYID") for m in masters]
    for replica, master_id in zip(replicas, ids, strict=True):
        wait_for(
            lambda r=replica, m=master_id: m in r.client().execute_command("CLUSTER", "NODES"),
            timeout=20,
            what="the replica to learn its master",
        )
        replica.client().execute_command("CLUSTER", "REPLICATE", master_id)

    def all_online() -> bool:
        ports = {r.port for r in replicas}
        for m in masters:
            shards = cluster_shards(m.client())
            seen = {r.port for s in shards for r in s.replicas if r.health == "online"}
            if not ports <= seen:
                return False
        return all(
            r.client().info("replication").get("master_link_status") == "up" for r in replicas
        )

    wait_for(all_online, timeout=30, what="every replica linked and seen online")
    return replicas


def fill_cluster(nodes: list[RedisServer], n_keys: int) -> None:
    rc = redis.RedisCluster(host="127.0.0.1", port=nodes[0].port)
    try:
        for start in range(0, n_keys, 5000):
            pipe = rc.pipeline()
            for i in range(start, min(start + 5000, n_keys)):
                pipe.set(f"key:{i}", f"value-{i}")
            pipe.execute()
    finally:
        rc.close()


def wait_replicas_in_sync(masters: list[RedisServer], replicas: list[RedisServer]) -> None:
    for master, replica in zip(masters, replicas, strict=True):
        wait_for(
            lambda m=master, r=replica: r.dbsize() == m.dbsize(),
            timeout=20,
            what="replica in sync",
        )
