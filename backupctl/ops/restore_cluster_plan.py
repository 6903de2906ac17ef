"""``restore --to-cluster``, steps 1 and 2: which node of the live cluster
gets which shard of the backup set, checked before anything is downloaded.

Why a module of its own: the mapping is the correctness argument of a
file-level cluster restore -- a master that loads keys of slots it does not
serve does not serve them, so each shard's archive must go to the nodes
that serve *the same slots now*. :func:`match_shards` decides that from
slot ranges alone (pure); :func:`prepare` then looks at the live cluster,
read only, for everything that would stop the restore half-way: cluster
state, every node reachable and who the cluster says it is, a Redis version
that reads the backup's RDB, and each data directory on this machine.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from backupctl.core.compat import load_problem
from backupctl.core.slots import CLUSTER_SLOTS, Ranges, format_slots, normalize_slots, slot_count
from backupctl.ops.restore_dir import APPENDONLY_MODES, RestoreError
from backupctl.redis.address import ConnectionSpec
from backupctl.redis.cluster import ClusterNode, Shard, cluster_info, cluster_myid, cluster_shards
from backupctl.redis.connection import Redis, connect
from backupctl.redis.errors import RedisNodeError
from backupctl.redis.info import config_value, node_info
from backupctl.redis.live import run_id
from backupctl.store.catalog import Manifest, NodeEntry

__all__ = [
    "Member",
    "ShardMatch",
    "ShardPlan",
    "check_cluster_backup",
    "match_shards",
    "members_of",
    "node_run_id",
    "prepare",
    "read_cluster_info",
]


@dataclass(frozen=True)
class ShardMatch:
    """A shard of the backup set and the live shard serving the same slots."""

    backup: NodeEntry
    live: Shard

    @property
    def slots(self) -> Ranges:
        return normalize_slots(self.live.slots)


def check_cluster_backup(manifest: Manifest) -> None:
    """Refuse a backup that is not a complete cluster backup set."""
    if manifest.mode != "cluster":
        raise RestoreError(
            f"backup {manifest.id} is a {manifest.mode} backup, not a cluster backup set: "
            "restore it with --to-dir DIR (a stopped server's data directory) or "
            "--to-redis URL (a running server)"
        )
    covered = sum(slot_count(normalize_slots(n.slots)) for n in manifest.nodes)
    if covered != CLUSTER_SLOTS or any(not n.slots for n in manifest.nodes):
        raise RestoreError(
            f"backup {manifest.id}'s shards cover {covered} of {CLUSTER_SLOTS} slots "
            "(a shard without slot ranges, or overlapping ones): the manifest is not a "
            "complete cluster backup set"
        )


def match_shards(manifest: Manifest, live: Sequence[Shard]) -> list[ShardMatch]:
    """Pair every shard of the backup set with the live shard serving exactly
    its slots. Live masters that serve no slots are not part of the mapping
    (they hold no data of the set). Raises :class:`RestoreError` saying what
    differs and what to do."""
    check_cluster_backup(manifest)
    ours = {normalize_slots(n.slots): n for n in manifest.nodes}
    theirs = {normalize_slots(s.slots): s for s in live if s.slots}
    if set(ours) == set(theirs):
        return [ShardMatch(ours[k], theirs[k]) for k in sorted(ours)]
    what_to_do = (
        "a file-level restore needs the same shards with the same slot ranges: reshard the "
        "cluster to the backup's layout, or load the backup through the cluster with "
        "--to-redis URL (key by key, slot-routed, any number of shards)"
    )
    if len(ours) != len(theirs):
        return _refuse(
            f"backup {manifest.id} holds {len(ours)} shards, the cluster has {len(theirs)} "
            f"(masters serving slots): {what_to_do}. Backup: {_layout(ours)}; "
            f"cluster: {_layout(theirs)}"
        )
    missing = sorted(set(ours) - set(theirs))
    return _refuse(
        f"the cluster's slot layout differs from backup {manifest.id}'s: no live shard serves "
        f"exactly {_layout(missing)} (cluster: {_layout(theirs)}); {what_to_do}"
    )


def _refuse(message: str) -> list[ShardMatch]:
    raise RestoreError(message)


def _layout(keys: Iterable[Ranges], limit: int = 8) -> str:
    items = sorted(keys)
    shown = "; ".join(format_slots(k) for k in items[:limit])
    return shown + (f"; ... ({len(items) - limit} more)" if len(items) > limit else "")


@dataclass(frozen=True)
class Member:
    """One live node that gets its shard's archive."""

    spec: ConnectionSpec
    node_id: str
    role: str
    dir: Path
    dbfilename: str
    appendonly: bool
    appenddirname: str
    appendfilename: str
    version: str

    @property
    def display(self) -> str:
        return self.spec.display


@dataclass(frozen=True)
class ShardPlan:
    backup: NodeEntry
    slots: Ranges
    members: tuple[Member, ...]  # master first

    @property
    def label(self) -> str:
        return f"the shard serving slots {format_slots(self.slots)}"


def prepare(manifest: Manifest, seed: ConnectionSpec, *, appendonly: str) -> list[ShardPlan]:
    """Look at the cluster behind ``seed`` (read only) and return what goes
    where; :class:`RestoreError` for anything that would stop the restore
    half-way (see the module docstring), before anything is downloaded."""
    if appendonly not in APPENDONLY_MODES:
        raise RestoreError(f"--appendonly must be one of {', '.join(APPENDONLY_MODES)}")
    check_cluster_backup(manifest)
    client = connect(seed)
    try:
        if not node_info(client).cluster_enabled:
            raise RestoreError(
                f"Redis at {seed.display} is not in cluster mode: --to-cluster restores into a "
                "Redis Cluster; for a standalone server use --to-dir or --to-redis"
            )
        _require_state_ok(client, seed)
        matches = match_shards(manifest, cluster_shards(client))
    finally:
        client.close()
    plans = [
        ShardPlan(
            backup=m.backup,
            slots=m.slots,
            members=tuple(_member(m, node, seed) for node in m.live.nodes),
        )
        for m in matches
    ]
    seen: dict[str, str] = {}
    for p in plans:
        for mem in p.members:
            real = os.path.realpath(mem.dir)
            if real in seen:
                raise RestoreError(
                    f"cluster nodes {seen[real]} and {mem.display} both report the data "
                    f"directory {real}: each node needs its own"
                )
            seen[real] = mem.display
            if appendonly == "no" and mem.appendonly:
                raise RestoreError(
                    f"{mem.display} runs with appendonly yes, so at its restart it loads its AOF "
                    "folder, not dump.rdb: use --appendonly auto (stages both)"
                )
    return plans


def _require_state_ok(client: Redis, spec: ConnectionSpec) -> None:
    info = read_cluster_info(client, spec)
    if info.get("cluster_state") != "ok":
        raise RestoreError(
            f"{spec.display} reports cluster_state:{info.get('cluster_state', '?')}: restore "
            "into a healthy cluster only (redis-cli --cluster check; wait for failovers to end)"
        )


def _member(match: ShardMatch, node: ClusterNode, seed: ConnectionSpec) -> Member:
    where = f"{node.host}:{node.port} ({node.role} of slots {format_slots(match.slots)})"
    if node.health != "online":
        raise RestoreError(
            f"cluster node {where} is {node.health}: every node of the cluster must be up "
            "before a restore starts"
        )
    spec = dataclasses.replace(seed, host=node.host, port=node.port)
    try:
        client = connect(spec)
    except RedisNodeError as e:
        raise RestoreError(
            f"cluster node {where} does not answer: {e}; every node must answer before a "
            "restore starts"
        ) from None
    try:
        try:
            myid = cluster_myid(client)
        except RedisNodeError as e:
            raise RestoreError(f"cluster node {where}: {e}") from None
        if myid != node.node_id:
            raise RestoreError(
                f"{spec.display} is node {myid[:12]}, the cluster lists {node.node_id[:12]} "
                "there: the addresses the cluster announces do not reach its nodes from here"
            )
        _require_state_ok(client, spec)
        info = node_info(client)
        if info.dir is None:
            raise RestoreError(
                f"{where}: cannot read its data directory (CONFIG GET dir: "
                f"{'; '.join(info.missing)}); --to-cluster needs CONFIG GET/SET on every node"
            )
        b = match.backup
        problem = load_problem(
            b.flavour, b.version, b.rdb_magic, b.rdb_version, info.flavour, info.version
        )
        if problem is not None:
            raise RestoreError(f"{where}: {problem}")
        try:
            config_file = config_value(client, "cluster-config-file", "nodes.conf")
            appendfilename = config_value(client, "appendfilename", "appendonly.aof")
        except RedisNodeError as e:
            raise RestoreError(f"cluster node {where}: {e}") from None
    finally:
        client.close()
    data = Path(info.dir)
    _require_local_dir(data, config_file, node.node_id, where, match.backup.name)
    return Member(
        spec=spec,
        node_id=node.node_id,
        role=node.role,
        dir=data,
        dbfilename=info.dbfilename,
        appendonly=info.appendonly,
        appenddirname=info.appenddirname,
        appendfilename=appendfilename,
        version=info.redis_version,
    )


def _require_local_dir(data: Path, config_file: str, node_id: str, where: str, name: str) -> None:
    """``data`` is this node's directory on this machine: it holds the
    node's own nodes.conf (the ``myself`` line names its id), and we may
    write to it."""
    conf = data / config_file  # a relative cluster-config-file is relative to dir
    try:
        lines = conf.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    mine = any(
        len(f) > 2 and f[0] == node_id and "myself" in f[2].split(",")
        for f in (line.split() for line in lines)
    )
    if not mine:
        raise RestoreError(
            f"{where} keeps its data in {data}, which is not a directory on this machine holding "
            f"that node's {config_file}: run backupctl where every node's data directory is "
            f"mounted, or per node on its host (restore --node {name} --stage-only --to-dir DIR, "
            "quiesce-redis, restore --swap; docs/restore.md: cluster restore by hand)"
        )
    if not os.access(data, os.W_OK | os.X_OK):
        raise RestoreError(f"{where}: no permission to write to its data directory {data}")


def members_of(plans: Sequence[ShardPlan]) -> list[Member]:
    return [m for p in plans for m in p.members]


def read_cluster_info(client: Redis, spec: ConnectionSpec) -> dict[str, str]:
    """CLUSTER INFO of ``spec``; :class:`RestoreError` when it fails."""
    try:
        return cluster_info(client)
    except RedisNodeError as e:
        raise RestoreError(f"{spec.display}: CLUSTER INFO failed: {e}") from None


def node_run_id(spec: ConnectionSpec) -> str:
    """The ``run_id`` of the server at ``spec`` (a new one: it restarted)."""
    client = connect(spec)
    try:
        return run_id(client)
    except RedisNodeError as e:
        raise RestoreError(f"{spec.display}: INFO failed: {e}") from None
    finally:
        client.close()
