"""Local Redis Clusters for tests: real ``redis-server`` processes in cluster
mode on 127.0.0.1 (started by ``redis_factory``), slots split evenly between
masters, optional replicas; helpers that write through redis-py's
``RedisCluster``; and a :class:`Supervisor` that plays systemd/kubelet by
starting again any of the nodes that exited."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import redis

from backupctl.core.slots import Ranges, normalize_slots
from backupctl.redis.cluster import cluster_shards

from support.redis_servers import RedisFactory, RedisServer, wait_for
from support.server_versions import ServerVersion

#: ``repl-ping-replica-period 1``: a master sees a new replica "online" in CLUSTER SHARDS once
#: its replication offset moved, which an idle master does only by this ping (default 10 s).
CLUSTER_ARGS = [
    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
    "--repl-ping-replica-period", "1",
]  # fmt: skip
TEN_YEARS = 10 * 365 * 24 * 3600


def make_cluster(
    redis_factory: RedisFactory,
    n: int = 3,
    *,
    replicas: int = 0,
    appendonly: bool = False,
    server: str | ServerVersion | None = None,
) -> list[RedisServer]:
    """``n`` masters with the 16384 slots split evenly, then ``replicas``
    replicas per master (the list holds the masters first, then master 0's
    replicas, master 1's...), all of ``server`` (default: Debian 12's Redis 7.0).
    Returns when every node sees every other, reports cluster_state:ok, and
    every replica is in sync."""

    def start() -> RedisServer:
        return redis_factory(extra_args=CLUSTER_ARGS, appendonly=appendonly, server=server)

    masters = [start() for _ in range(n)]
    followers = [start() for _ in range(n * replicas)]
    nodes = masters + followers
    step = 16384 // n
    for i, node in enumerate(masters):
        end = 16383 if i == n - 1 else (i + 1) * step - 1
        _call(node, "CLUSTER", "ADDSLOTSRANGE", i * step, end)
    for node in nodes[1:]:
        _call(nodes[0], "CLUSTER", "MEET", "127.0.0.1", node.port)
    wait_for(
        lambda: all(_call(x, "CLUSTER", "NODES").count("\n") >= len(nodes) for x in nodes),
        timeout=30,
        what="every node to know every other",
    )
    for i, node in enumerate(followers):
        master = masters[i // replicas]
        _call(node, "CLUSTER", "REPLICATE", _call(master, "CLUSTER", "MYID"))
    wait_healthy(nodes, masters=n)
    return nodes


def wait_healthy(nodes: Sequence[RedisServer], *, masters: int, timeout: float = 30) -> None:
    """cluster_state:ok with ``masters`` masters on every node, replicas'
    links up, and every master seeing its replicas online."""

    def ok() -> bool:
        for node in nodes:
            info = node.info("replication")
            if _call(node, "CLUSTER", "INFO").find("cluster_state:ok") < 0:
                return False
            if _call(node, "CLUSTER", "NODES").count("master") != masters:
                return False
            if info["role"] == "slave" and info.get("master_link_status") != "up":
                return False
        with nodes[0].client() as c:
            shards = cluster_shards(c)
        return all(x.health == "online" for s in shards for x in s.nodes)

    wait_for(ok, timeout=timeout, poll=0.1, what="a healthy cluster")


def cluster_client(nodes: list[RedisServer], **kwargs: object) -> redis.RedisCluster:
    return redis.RedisCluster(host="127.0.0.1", port=nodes[0].port, **kwargs)  # type: ignore[arg-type]


def fill_cluster(
    nodes: list[RedisServer], n_keys: int, *, varied: bool = False, prefix: str = "key"
) -> int:
    """Write ``n_keys`` strings ``<prefix>:i`` through RedisCluster; with
    ``varied`` also n_keys // 50 each of hashes, lists and strings with a TTL
    ten years out. Returns the number of keys written."""
    rc = cluster_client(nodes)
    extra = n_keys // 50 if varied else 0
    try:
        for start in range(0, n_keys, 5000):
            pipe = rc.pipeline()
            for i in range(start, min(start + 5000, n_keys)):
                pipe.set(f"{prefix}:{i}", f"value-{i}")
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


def failover(replica: RedisServer, nodes: Sequence[RedisServer], *, masters: int) -> None:
    """``CLUSTER FAILOVER`` on ``replica``: it becomes its shard's master."""
    _call(replica, "CLUSTER", "FAILOVER")
    wait_for(
        lambda: replica.info("replication")["role"] == "master",
        timeout=30,
        what=f"{replica.port} to take over",
    )
    wait_healthy(nodes, masters=masters)


def shards(nodes: Sequence[RedisServer]) -> dict[Ranges, list[RedisServer]]:
    """The live cluster: slot ranges -> [master, *replicas] (by port)."""
    by_port = {n.port: n for n in nodes}
    with nodes[0].client() as c:
        live = cluster_shards(c)
    return {normalize_slots(s.slots): [by_port[x.port] for x in s.nodes] for s in live if s.slots}


def _call(node: RedisServer, *args: Any) -> Any:
    with node.client() as c:
        return c.execute_command(*args)


class Supervisor:
    """Plays the supervisor (systemd, kubelet) for a test: while the
    ``with`` block runs, and at most ``limit`` seconds, any of ``servers``
    whose process exited is started again with the same arguments."""

    def __init__(self, servers: Sequence[RedisServer], *, limit: float = 120.0) -> None:
        self.servers = list(servers)
        self.limit = limit
        self.restarts: dict[int, int] = {s.port: 0 for s in self.servers}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    def __enter__(self) -> Supervisor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the supervisor thread did not stop"
        assert not self.errors, self.errors

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self._stop.wait(0.05) and time.monotonic() < deadline:
            for server in self.servers:
                proc = server.proc
                if proc is None or proc.poll() is None:
                    continue  # running, or stopped by the test itself
                try:
                    server.start()
                    self.restarts[server.port] += 1
                except Exception as e:  # reported at the end of the with block
                    self.errors.append(f"restarting {server.port}: {e}")


__all__ = [
    "CLUSTER_ARGS",
    "Supervisor",
    "cluster_client",
    "failover",
    "fill_cluster",
    "make_cluster",
    "shards",
    "wait_healthy",
]


def add_replicas(
    redis_factory: RedisFactory,
    masters: list[RedisServer],
    *,
    server: str | ServerVersion | None = None,
) -> list[RedisServer]:
    """One replica per master (``replicas[i]`` replicates ``masters[i]``), in sync and seen
    online by every master; returns the replicas (``server``: as the masters' by default)."""
    chosen = server if server is not None else masters[0].server
    replicas = [redis_factory(extra_args=CLUSTER_ARGS, server=chosen) for _ in masters]
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


def wait_replicas_in_sync(masters: list[RedisServer], replicas: list[RedisServer]) -> None:
    for master, replica in zip(masters, replicas, strict=True):
        wait_for(
            lambda m=master, r=replica: r.dbsize() == m.dbsize(),
            timeout=20,
            what="replica in sync",
        )
