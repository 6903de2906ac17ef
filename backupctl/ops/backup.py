"""``backupctl run``: take one backup of a Redis node, or of every shard of
a Redis Cluster, into a store -- which nodes, under which id, and the manifest.

The order of operations is the safety argument:

1. snapshot (BGSAVE, or a replication-stream dump),
2. stream ``tar -> compress -> sha256`` into ``<target>/<id>/<node>.tar.*``,
3. write ``manifest.json`` last.

Until step 3 returns, the backup is incomplete and nothing lists it as
restorable; a crash anywhere leaves at worst an incomplete folder (swept by
``prune``) or an aborted multipart upload.

A Redis Cluster is backed up whole by one process (:func:`run_backup` with
``cluster``: every shard in parallel threads), or by one process per shard
(:func:`run_shard_backup`, what the Kubernetes controller's Jobs run): each
backs up its shard and leaves a record, and the set's manifest is written by
whichever finds all records there (:mod:`backupctl.store.backup_set`).

This module decides which nodes are backed up and writes the manifest; the
snapshot and archive of one node are :func:`backupctl.ops.backup_node.backup_node`.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from backupctl import __version__
from backupctl.core.slots import CLUSTER_SLOTS, slot_count
from backupctl.ops.backup_node import backup_node
from backupctl.ops.backup_options import BackupError, RunOptions
from backupctl.redis.address import ConnectionSpec, default_node_name
from backupctl.redis.cluster import Shard, cluster_shards
from backupctl.redis.connection import Redis, connect
from backupctl.redis.info import NodeInfo, node_info
from backupctl.store import backup_set, catalog
from backupctl.store.archive import Progress
from backupctl.store.backup_set import ShardOutcome, ShardRecord
from backupctl.store.catalog import Manifest, NodeEntry
from backupctl.store.signing import write_signed_manifest

__all__ = ["run_backup", "run_shard_backup"]

#: Shards backed up at once; each is mostly waiting on its node and the store.
MAX_PARALLEL_NODES = 8


def run_backup(
    opts: RunOptions,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    progress: Progress | None = None,
    on_size: Callable[[int], None] | None = None,
) -> Manifest:
    """Take a backup and return its manifest (already written to the store).

    With ``opts.cluster`` every shard of a Redis Cluster is backed up (one
    node each, in parallel) into one backup set; the manifest is written
    only when every shard succeeded, so a partial set is never complete.
    """
    assert opts.shard is None, "one shard of a set is backed up by run_shard_backup"
    if opts.method == "replication" and not opts.cluster:
        # The store is checked and the backup id picked while the master
        # forks and starts streaming (the receiving thread holds what comes
        # meanwhile): its set-up is no longer ahead of the snapshot.
        pool = ThreadPoolExecutor(1, thread_name_prefix="store")
        store_ready = pool.submit(_store_ready, opts, now)
        pool.shutdown(wait=False)  # its thread ends with this one task (stack freed)
        try:
            client, info = _connect(opts, check_store=False)
        except BaseException:
            store_ready.result()  # a store error first, as without the overlap
            raise
        name = opts.node_name or default_node_name(opts.redis)
        entry = backup_node(
            opts, opts.redis, client, info, store_ready, name, now, progress, on_size
        )
        entries, backup_id = [entry], store_ready.result()
    else:
        client, info = _connect(opts)
        backup_id = _store_ready(opts, now, checked=True)
        if opts.cluster:
            nodes = _cluster_nodes(client, opts)
            entries = _backup_in_parallel(opts, backup_id, nodes, now, progress, on_size)
        else:
            name = opts.node_name or default_node_name(opts.redis)
            entries = [
                backup_node(opts, opts.redis, client, info, backup_id, name, now, progress, on_size)
            ]
    manifest = Manifest(
        id=backup_id,
        target=opts.target,
        created=max(e.snapshot_time for e in entries),
        tool_version=__version__,
        redis_version=info.redis_version,
        flavour=info.flavour,
        server_version=catalog.own_version(info.version, info.redis_version),
        method=opts.method,
        compression=opts.compression,
        mode="cluster" if opts.cluster else "standalone",
        nodes=entries,
    )
    opts.hooks.on_step("manifest")
    write_signed_manifest(opts.store, manifest, opts.signer)
    return manifest


def _store_ready(opts: RunOptions, now: Callable[[], datetime], *, checked: bool = False) -> str:
    """Check the store (unless ``checked``) and pick the backup's id: the one
    given, unless a backup by that id is complete, or a new one."""
    if not checked:
        opts.store.check()
    if opts.backup_id is not None:
        if backup_set.has_manifest(opts.store, opts.target, opts.backup_id):
            raise BackupError(
                f"backup {opts.backup_id} of {opts.target} is already complete: pick another "
                "--id (or leave it out for a new one)"
            )
        return opts.backup_id
    existing = {e.id for e in catalog.scan(opts.store, opts.target, load_manifests=False)}
    return catalog.new_backup_id(now(), existing)


def _connect(opts: RunOptions, *, check_store: bool = True) -> tuple[Redis, NodeInfo]:
    """Check the target name, the store (unless told not to: the caller
    checks it beside) and the server's mode against the options."""
    catalog.validate_target(opts.target)
    if opts.backup_id is not None:
        catalog.validate_id(opts.backup_id)
    if check_store:
        opts.store.check()
    client = connect(opts.redis)
    info = node_info(client)
    if info.cluster_enabled and not opts.cluster:
        raise BackupError(
            f"Redis at {opts.redis.display} is a Redis Cluster node: pass --cluster to back up "
            "every shard as one backup set (a single node holds only its own slots)"
        )
    if opts.cluster and not info.cluster_enabled:
        raise BackupError(
            f"--cluster given, but Redis at {opts.redis.display} is not in cluster mode"
        )
    if opts.cluster and opts.data_dir is not None:
        raise BackupError(
            "--data-dir names one directory, but a cluster has one per node: leave it out "
            "(each node's CONFIG GET dir is used) or use --method replication"
        )
    return client, info


@dataclass(frozen=True)
class _ClusterMember:
    spec: ConnectionSpec
    name: str
    node_id: str
    slots: list[list[int]]


def _cluster_nodes(client: Redis, opts: RunOptions) -> list[_ClusterMember]:
    """One node per shard that serves slots: the master, or with
    ``prefer_replica`` a healthy replica (falling back to the master)."""
    return [_pick_member(shard, opts) for shard in _slot_shards(client)]


def _slot_shards(client: Redis) -> list[Shard]:
    """The shards that serve slots, sorted by first slot; refused unless
    together they serve all 16384."""
    shards = [s for s in cluster_shards(client) if s.slots]
    covered = sum(slot_count(s.slots) for s in shards)
    if covered != CLUSTER_SLOTS:
        raise BackupError(
            f"the cluster serves {covered} of {CLUSTER_SLOTS} slots: a backup would miss data; "
            "fix the cluster (redis-cli --cluster check) first"
        )
    return shards


def _pick_member(shard: Shard, opts: RunOptions) -> _ClusterMember:
    replicas = [n for n in shard.replicas if n.health == "online"]
    node = replicas[0] if opts.prefer_replica and replicas else shard.master
    if node is None or node.health != "online":
        ranges = ", ".join(f"{a}-{b}" for a, b in shard.slots)
        raise BackupError(
            f"the shard serving slots {ranges} has no healthy master: wait for the cluster to "
            "recover (or use --prefer-replica)"
        )
    spec = dataclasses.replace(opts.redis, host=node.host, port=node.port)
    return _ClusterMember(
        spec=spec,
        name=default_node_name(spec),
        node_id=node.node_id,
        slots=[[a, b] for a, b in shard.slots],
    )


def run_shard_backup(
    opts: RunOptions,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    progress: Progress | None = None,
    on_size: Callable[[int], None] | None = None,
) -> ShardOutcome:
    """Back up shard I of the N shards of a Redis Cluster (``opts.shard``)
    into backup ``opts.backup_id``; the manifest is written by the shard run
    that finds all N records (see :mod:`backupctl.store.backup_set` for the order of
    writes and why it is safe).

    The shards are discovered from Redis each time (never from pod names:
    primaries move on failover), sorted by first slot; the run is refused
    when the cluster does not have exactly N shards serving slots now.
    """
    assert opts.shard is not None and opts.cluster
    index, count = opts.shard
    if opts.backup_id is None:
        raise BackupError("--shard needs --id: all shards must write into one backup")
    backup_set.validate_owner(opts.owner)
    client, _ = _connect(opts)  # any node: it tells the topology
    store, target, backup_id = opts.store, opts.target, opts.backup_id
    own = backup_set.own_record(store, target, backup_id, index, opts.owner)
    if own is not None and own.shards != count:
        raise BackupError(
            f"shard {index} of backup {backup_id} was stored as one of {own.shards} shards, not "
            f"{count}: pick another --id"
        )
    complete = backup_set.existing_manifest(store, target, backup_id)
    if complete is not None:
        if own is not None and own.node in complete.nodes:
            return ShardOutcome(own, len(complete.nodes), manifest=complete, reused=True)
        raise BackupError(
            f"backup {backup_id} of {target} is already complete without this shard's record: "
            "pick another --id"
        )
    if own is not None:  # a retried run: the archive behind the record is stored
        backup_set.claim(store, target, backup_id, opts.owner)
        return backup_set.commit(store, own, reused=True, signer=opts.signer)

    shards = _slot_shards(client)
    if len(shards) != count:
        raise BackupError(
            f"the cluster has {len(shards)} shards serving slots, not {count} (--shard "
            f"{index}/{count}): it was resized or is being resharded; the backup set needs the "
            "shard count the cluster has now"
        )
    member = _pick_member(shards[index - 1], opts)
    backup_set.claim(store, target, backup_id, opts.owner)  # before anything is uploaded
    node_client = connect(member.spec)
    entry = backup_node(
        opts,
        member.spec,
        node_client,
        node_info(node_client),
        backup_id,
        member.name,
        now,
        progress,
        on_size,
    )
    record = ShardRecord(
        id=backup_id,
        target=target,
        shard=index,
        shards=count,
        owner=opts.owner,
        tool_version=__version__,
        method=opts.method,
        compression=opts.compression,
        node=dataclasses.replace(entry, node_id=member.node_id, slots=member.slots),
    )
    opts.hooks.on_step("manifest")
    return backup_set.commit(store, record, signer=opts.signer)


def _backup_in_parallel(
    opts: RunOptions,
    backup_id: str,
    members: list[_ClusterMember],
    now: Callable[[], datetime],
    progress: Progress | None,
    on_size: Callable[[int], None] | None,
) -> list[NodeEntry]:
    sizes: dict[str, int] = {}
    lock = threading.Lock()

    def add_size(name: str, n: int) -> None:
        if on_size is not None:
            with lock:
                sizes[name] = n
                on_size(sum(sizes.values()))

    def one(m: _ClusterMember) -> NodeEntry:
        client = connect(m.spec)
        info = node_info(client)
        entry = backup_node(
            opts,
            m.spec,
            client,
            info,
            backup_id,
            m.name,
            now,
            progress,
            lambda n: add_size(m.name, n),
        )
        return dataclasses.replace(entry, node_id=m.node_id, slots=m.slots)

    with ThreadPoolExecutor(max_workers=min(len(members), MAX_PARALLEL_NODES)) as pool:
        futures = [pool.submit(one, m) for m in members]
        results, errors = [], []
        for m, fut in zip(members, futures, strict=True):
            try:
                results.append(fut.result())
            except Exception as e:  # collect every shard's outcome first
                errors.append(f"{m.name}: {e}")
    if errors:
        raise BackupError(
            f"{len(errors)} of {len(members)} shards failed, so the backup set is incomplete "
            f"(not listed as restorable): {'; '.join(errors)}"
        )
    return results
