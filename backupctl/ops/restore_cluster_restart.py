"""``restore --to-cluster --restart``, step 5: stop every node, wait for its
supervisor to start it again, and verify the cluster serves the backup set.

Why a module of its own: restarting a cluster safely is about order and
timing -- all nodes down within moments so no replica starts a failover,
masters first so no replica resyncs from a master still serving old data --
and "restored" is only said after a check of every node against the
backup's numbers (:func:`verify`, also ``restore --verify-only``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass

from backupctl.core.compat import parse_version
from backupctl.core.slots import CLUSTER_SLOTS, Ranges, format_slots
from backupctl.core.timing import Monotonic, Sleep
from backupctl.ops.restore_cluster_plan import (
    Member,
    ShardPlan,
    check_cluster_backup,
    match_shards,
    members_of,
    node_run_id,
    read_cluster_info,
)
from backupctl.ops.restore_dir import RestoreError
from backupctl.redis.address import ConnectionSpec
from backupctl.redis.cluster import cluster_shards
from backupctl.redis.connection import connect
from backupctl.redis.errors import RedisNodeError
from backupctl.redis.live import LiveError, NodeState, check_nodes, loading, run_id, shutdown
from backupctl.store.catalog import Manifest

__all__ = ["ShardCheck", "restart", "verify"]


def restart(
    plans: Sequence[ShardPlan],
    *,
    timeout: float,
    clock: Monotonic = time.monotonic,
    sleep: Sleep = time.sleep,
) -> None:
    """``SHUTDOWN NOSAVE`` every node, then wait until each answers again as
    a new process that finished loading. Something else must start them.

    All go down within moments, so no replica starts a failover (that takes
    ``cluster-node-timeout``), masters first, so no replica that its
    supervisor restarts at once syncs from a master still serving the old
    data."""
    members = sorted(members_of(plans), key=lambda m: m.role != "master")
    before = {m.display: node_run_id(m.spec) for m in members}
    for m in members:
        _shutdown(m)
    deadline = clock() + timeout
    waiting = list(members)
    while waiting:
        waiting = [m for m in waiting if not _back(m, before[m.display])]
        if not waiting:
            return
        if clock() > deadline:
            raise RestoreError(
                f"{len(waiting)} of {len(members)} nodes did not come back within {timeout:g} s "
                f"after SHUTDOWN: {', '.join(m.display for m in waiting)}. --restart needs a "
                "supervisor (systemd, Kubernetes, a container restart policy) that starts them "
                "again: start them yourself (they load the restored files), then verify with "
                "--verify-only"
            )
        sleep(0.2)


def _shutdown(m: Member) -> None:
    major, _ = parse_version(m.version) or (0, 0)
    modifiers = ["NOSAVE"] + (["NOW"] if major >= 7 else [])
    client = connect(m.spec)
    try:
        shutdown(client, *modifiers)
    except RedisNodeError as e:
        raise RestoreError(
            f"{m.display} refused SHUTDOWN {' '.join(modifiers)}: {e}; restart every node "
            "yourself, then verify with --verify-only"
        ) from None
    finally:
        client.close()


def _back(m: Member, old_run_id: str) -> bool:
    try:
        client = connect(m.spec, timeout=2)
    except RedisNodeError:
        return False
    try:
        return run_id(client) != old_run_id and not loading(client)
    except RedisNodeError:
        return False
    finally:
        client.close()


@dataclass(frozen=True)
class ShardCheck:
    slots: Ranges
    backup_node: str
    keys: int
    nodes: list[NodeState]


def verify(
    manifest: Manifest,
    seed: ConnectionSpec,
    *,
    wait: float = 0.0,
    clock: Monotonic = time.monotonic,
    sleep: Sleep = time.sleep,
) -> list[ShardCheck]:
    """Is the cluster serving the backup set? ``cluster_state:ok`` and all
    slots served on every node, the backup's slot layout, and per shard
    :func:`restore_live.check_nodes` with the shard's key count (its master
    loaded exactly that many keys at its last start; replicas in sync with
    the same digest). Waits up to ``wait`` seconds; :class:`RestoreError`
    naming the node and the numbers otherwise."""
    check_cluster_backup(manifest)
    deadline = clock() + wait
    while True:
        try:
            return _verify_once(manifest, seed)
        except (RestoreError, LiveError, RedisNodeError) as e:
            if clock() > deadline:
                raise RestoreError(f"verification failed: {e}") from None
        sleep(0.5)


def _verify_once(manifest: Manifest, seed: ConnectionSpec) -> list[ShardCheck]:
    client = connect(seed, timeout=5)
    try:
        matches = match_shards(manifest, cluster_shards(client))
    finally:
        client.close()
    checks = []
    for m in matches:
        specs = [dataclasses.replace(seed, host=n.host, port=n.port) for n in m.live.nodes]
        for spec in specs:
            c = connect(spec, timeout=5)
            try:
                info = read_cluster_info(c, spec)
            finally:
                c.close()
            state, served = info.get("cluster_state"), int(info.get("cluster_slots_ok", 0))
            if state != "ok" or served != CLUSTER_SLOTS:
                raise RestoreError(
                    f"{spec.display} reports cluster_state:{state}, {served} of "
                    f"{CLUSTER_SLOTS} slots served"
                )
        try:
            nodes = check_nodes(specs, expect_keys=m.backup.keys)
        except LiveError as e:
            raise RestoreError(
                f"slots {format_slots(m.slots)} (backup node {m.backup.name}, "
                f"{m.backup.keys} keys): {e}"
            ) from None
        checks.append(ShardCheck(m.slots, m.backup.name, m.backup.keys, nodes))
    return checks
