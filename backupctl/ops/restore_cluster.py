"""``backupctl restore --to-cluster``: put a cluster backup set back into a
running Redis Cluster, file by file, into every node's data directory.

A cluster node keeps its identity and its slots in ``nodes.conf`` (left
alone), and a master that loads keys of slots it does not serve does not
serve them (Redis 7.0 marks the slots importing, 7.2 deletes the keys). So
each shard's archive goes to the nodes that serve *the same slots now*,
whatever their names, ordinals or current roles:

1. :func:`match_shards` (pure) pairs each shard of the backup set with the
   live shard whose slot ranges are identical; a different number of shards
   or another slot layout is refused (reshard, or ``--to-redis``).
2. :func:`prepare` looks at the live cluster, read only: ``cluster_state:ok``,
   every node reachable, a Redis version that reads the backup's RDB, and
   each node's data directory a directory *on this machine* holding that
   node's own ``nodes.conf``.
3. :func:`stage` downloads each shard's archive once, into one node's
   directory, verifies it, and copies it (sha256 checked again) to the
   shard's other nodes: replicas too, so no node can come back with old
   data. Nothing Redis loads changes until every node is staged.
4. :func:`quiesce_and_swap`: every node is quiesced (:func:`restore_live.
   quiesce`: it writes nothing more to its directory), then the staged files
   are swapped in on every node; the old ones go to ``.backupctl-previous-*``.
   The nodes keep serving the old data from memory until they restart.
5. :func:`restart` (``--restart``): ``SHUTDOWN NOSAVE`` every node at once,
   masters first, and wait for its supervisor to start it again (a new
   ``run_id``). :func:`verify` then checks
   ``cluster_state:ok``, all 16384 slots served, the same slot layout, each
   shard's master loaded exactly the backup's key count for that shard, and
   its replicas are in sync with the same ``DEBUG DIGEST``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from backupctl.core.slots import CLUSTER_SLOTS as CLUSTER_SLOTS
from backupctl.core.slots import Ranges as Ranges
from backupctl.core.slots import format_slots as format_slots
from backupctl.core.slots import normalize_slots as normalize_slots
from backupctl.core.slots import slot_count
from backupctl.core.versions import version_problem
from backupctl.ops.restore_dir import (
    APPENDONLY_MODES,
    RestoreError,
    discard_staged,
    stage_to_dir,
    staged_dir,
    swap_staged,
)
from backupctl.redis import node as redisnode
from backupctl.redis.live import LiveError, NodeState, check_nodes, quiesce, resume
from backupctl.redis.node import (
    ClusterNode,
    ConnectionSpec,
    RedisNodeError,
    Shard,
    as_text,
    exec_command,
)
from backupctl.store.archive import Progress
from backupctl.store.backends.base import Backend
from backupctl.store.catalog import BackupEntry, Manifest, NodeEntry

#: In each node's data directory while it is quiesced: its original settings.
QUIESCE_STATE = ".backupctl-quiesce.json"
MAX_PARALLEL_SHARDS = 8

Clock = Callable[[], float]
Sleep = Callable[[float], None]


# --- the mapping (pure) -------------------------------------------------------------


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


# --- the live cluster -----------------------------------------------------------------


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
    client = redisnode.connect(seed)
    try:
        if not redisnode.node_info(client).cluster_enabled:
            raise RestoreError(
                f"Redis at {seed.display} is not in cluster mode: --to-cluster restores into a "
                "Redis Cluster; for a standalone server use --to-dir or --to-redis"
            )
        _require_state_ok(client, seed)
        matches = match_shards(manifest, redisnode.cluster_shards(client))
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


def _require_state_ok(client: redis.Redis, spec: ConnectionSpec) -> None:
    info = _cluster_info(client, spec)
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
        client = redisnode.connect(spec)
    except RedisNodeError as e:
        raise RestoreError(
            f"cluster node {where} does not answer: {e}; every node must answer before a "
            "restore starts"
        ) from None
    try:
        myid = as_text(exec_command(client, "CLUSTER", "MYID"))
        if myid != node.node_id:
            raise RestoreError(
                f"{spec.display} is node {myid[:12]}, the cluster lists {node.node_id[:12]} "
                "there: the addresses the cluster announces do not reach its nodes from here"
            )
        _require_state_ok(client, spec)
        info = redisnode.node_info(client)
        if info.dir is None:
            raise RestoreError(
                f"{where}: cannot read its data directory (CONFIG GET dir: "
                f"{'; '.join(info.missing)}); --to-cluster needs CONFIG GET/SET on every node"
            )
        problem = version_problem(
            match.backup.redis_version, match.backup.rdb_version, info.redis_version
        )
        if problem is not None:
            raise RestoreError(f"{where}: {problem}")
        config_file = _config(client, "cluster-config-file", "nodes.conf")
        appendfilename = _config(client, "appendfilename", "appendonly.aof")
    except redis.RedisError as e:
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
            "quiesce-redis, restore --swap; README: cluster restore by hand)"
        )
    if not os.access(data, os.W_OK | os.X_OK):
        raise RestoreError(f"{where}: no permission to write to its data directory {data}")


# --- stage ----------------------------------------------------------------------------


def stage(
    store: Backend,
    entry: BackupEntry,
    plans: Sequence[ShardPlan],
    *,
    appendonly: str,
    progress: Progress | None = None,
) -> None:
    """Download each shard's archive once (shards in parallel), verify it,
    copy it to the shard's other nodes. On any failure every staged copy is
    removed and :class:`RestoreError` says which shard failed."""

    def one(plan: ShardPlan) -> None:
        source: Path | None = None
        for m in plan.members:
            stage_to_dir(
                store,
                entry,
                m.dir,
                appendonly=appendonly,
                node=plan.backup.name,
                dbfilename=m.dbfilename,
                aof_dirname=m.appenddirname,
                aof_filename=m.appendfilename,
                progress=progress if source is None else None,
                source=source,
            )
            source = source or staged_dir(m.dir, entry.id)

    errors: list[str] = []
    try:
        with ThreadPoolExecutor(max_workers=min(len(plans), MAX_PARALLEL_SHARDS)) as pool:
            futures = [pool.submit(one, p) for p in plans]
            for p, fut in zip(plans, futures, strict=True):
                try:
                    fut.result()
                except Exception as e:  # every shard's outcome first, then one error
                    errors.append(f"{p.label} (backup node {p.backup.name}): {e}")
    except BaseException:
        discard(plans, entry.id)
        raise
    if errors:
        discard(plans, entry.id)
        raise RestoreError(
            f"staging failed, no node was changed (staged copies removed): {'; '.join(errors)}"
        )


def discard(plans: Sequence[ShardPlan], backup_id: str) -> None:
    for p in plans:
        for m in p.members:
            discard_staged(m.dir, backup_id)


# --- quiesce + swap ---------------------------------------------------------------------


def members_of(plans: Sequence[ShardPlan]) -> list[Member]:
    return [m for p in plans for m in p.members]


def quiesce_and_swap(
    plans: Sequence[ShardPlan],
    seed: ConnectionSpec,
    manifest: Manifest,
    *,
    timeout: float,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dict[str, Path | None]:
    """Quiesce every node, check nothing moved meanwhile, then swap on every
    node; returns each node's previous-data folder. Before the first swap
    any failure resumes the quiesced nodes and removes the staged copies."""
    members = members_of(plans)
    quiesced: list[Member] = []
    try:
        run_ids: dict[str, str] = {}
        for m in members:
            quiesced.append(m)  # resume() of a node that has no state file does nothing
            try:
                quiesce(m.spec, m.dir / QUIESCE_STATE, timeout=timeout)
            except (LiveError, RedisNodeError) as e:
                raise RestoreError(f"cannot quiesce {m.display}: {e}") from None
            run_ids[m.display] = _run_id(m.spec)
        _require_same_topology(plans, seed, manifest)
        for m in members:  # one restarted since it was quiesced would write over the swap
            if _run_id(m.spec) != run_ids[m.display]:
                raise RestoreError(
                    f"{m.display} restarted while the restore was quiescing the cluster: nothing "
                    "was swapped (staged copies removed); run the restore again"
                )
    except BaseException as e:
        problems = _resume(quiesced)
        discard(plans, manifest.id)
        if problems:
            raise RestoreError(
                f"{e}; nothing was swapped, but setting back what quiesce changed failed on "
                f"{'; '.join(problems)} (restart those nodes to get their configuration back)"
            ) from None
        raise
    previous: dict[str, Path | None] = {}
    for m in members:
        try:
            result = swap_staged(m.dir, manifest.id, now=now)
        except (OSError, RestoreError) as e:
            done = ", ".join(previous) or "none"
            raise RestoreError(
                f"swap failed on {m.display} ({m.dir}): {e}. Swapped so far: {done} (their old "
                "files are in .backupctl-previous-*); every node is still quiesced and serves "
                "its old data: fix the cause and swap the rest with restore --swap --to-dir DIR, "
                "then restart every node"
            ) from None
        previous[m.display] = result.previous
        (m.dir / QUIESCE_STATE).unlink(missing_ok=True)  # from now on only a restart is safe
    return previous


def _resume(members: Sequence[Member]) -> list[str]:
    problems = []
    for m in members:
        try:
            resume(m.spec, m.dir / QUIESCE_STATE)
        except (LiveError, RedisNodeError) as e:
            problems.append(f"{m.display}: {e}")
    return problems


def _require_same_topology(
    plans: Sequence[ShardPlan], seed: ConnectionSpec, manifest: Manifest
) -> None:
    """The slots and node sets still are what :func:`prepare` saw (a
    resharding or a node added meanwhile would make the mapping wrong)."""
    client = redisnode.connect(seed)
    try:
        matches = match_shards(manifest, redisnode.cluster_shards(client))
    finally:
        client.close()
    now = {m.slots: {n.node_id for n in m.live.nodes} for m in matches}
    for p in plans:
        if now.get(p.slots) != {m.node_id for m in p.members}:
            raise RestoreError(
                f"the nodes of {p.label} changed during the restore: nothing was swapped "
                "(staged copies removed); run the restore again"
            )


# --- restart + verify -------------------------------------------------------------------


def restart(
    plans: Sequence[ShardPlan],
    *,
    timeout: float,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
) -> None:
    """``SHUTDOWN NOSAVE`` every node, then wait until each answers again as
    a new process that finished loading. Something else must start them.

    All go down within moments, so no replica starts a failover (that takes
    ``cluster-node-timeout``), masters first, so no replica that its
    supervisor restarts at once syncs from a master still serving the old
    data."""
    members = sorted(members_of(plans), key=lambda m: m.role != "master")
    before = {m.display: _run_id(m.spec) for m in members}
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
    args = ["SHUTDOWN", "NOSAVE"] + (["NOW"] if _major(m.version) >= 7 else [])
    client = redisnode.connect(m.spec)
    try:
        exec_command(client, *args)
    except (redis.ConnectionError, redis.TimeoutError):
        return  # the server closed the connection: it is going down
    except redis.RedisError as e:
        raise RestoreError(
            f"{m.display} refused {' '.join(args)}: {e}; restart every node yourself, then "
            "verify with --verify-only"
        ) from None
    finally:
        client.close()


def _back(m: Member, old_run_id: str) -> bool:
    try:
        client = redisnode.connect(m.spec, timeout=2)
    except RedisNodeError:
        return False
    try:
        info: Any = client.info("server")
        persistence: Any = client.info("persistence")
        return bool(info.get("run_id") != old_run_id and not int(persistence.get("loading", 0)))
    except redis.RedisError:
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
    clock: Clock = time.monotonic,
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
    client = redisnode.connect(seed, timeout=5)
    try:
        matches = match_shards(manifest, redisnode.cluster_shards(client))
    finally:
        client.close()
    checks = []
    for m in matches:
        specs = [dataclasses.replace(seed, host=n.host, port=n.port) for n in m.live.nodes]
        for spec in specs:
            c = redisnode.connect(spec, timeout=5)
            try:
                info = _cluster_info(c, spec)
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


# --- the whole restore ---------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterRestoreResult:
    id: str
    target: str
    keys: int
    shards: list[ShardPlan]
    previous: dict[str, Path | None]  # node host:port -> its previous-data folder
    restarted: bool
    checks: list[ShardCheck] | None  # with restart: the verification


def restore_to_cluster(
    store: Backend,
    entry: BackupEntry,
    seed: ConnectionSpec,
    *,
    appendonly: str = "auto",
    restart_nodes: bool = False,
    timeout: float = 600.0,
    progress: Progress | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
) -> ClusterRestoreResult:
    """Steps 1-4 of the module docstring, and with ``restart_nodes`` step 5.
    Without it the nodes are left quiesced with the restored files in place:
    the caller must tell the user to restart every node now."""
    manifest = entry.manifest
    if manifest is None:
        raise RestoreError(f"backup {entry.id} is incomplete and cannot be restored")
    plans = prepare(manifest, seed, appendonly=appendonly)
    stage(store, entry, plans, appendonly=appendonly, progress=progress)
    previous = quiesce_and_swap(plans, seed, manifest, timeout=timeout, now=now)
    checks = None
    if restart_nodes:
        started = clock()
        try:
            restart(plans, timeout=timeout, clock=clock, sleep=sleep)
            left = max(0.0, timeout - (clock() - started))
            checks = verify(manifest, seed, wait=left, clock=clock, sleep=sleep)
        except (RestoreError, RedisNodeError) as e:
            raise RestoreError(
                f"{e}. The restored files are in place on every node; each node's previous "
                "data is in its dir's .backupctl-previous-*"
            ) from None
    return ClusterRestoreResult(
        id=manifest.id,
        target=manifest.target,
        keys=manifest.keys,
        shards=list(plans),
        previous=previous,
        restarted=restart_nodes,
        checks=checks,
    )


# --- small helpers ---------------------------------------------------------------------------



def _cluster_info(client: redis.Redis, spec: ConnectionSpec) -> dict[str, str]:
    try:
        raw = as_text(exec_command(client, "CLUSTER", "INFO"))
    except redis.RedisError as e:
        raise RestoreError(f"{spec.display}: CLUSTER INFO failed: {e}") from None
    pairs = (line.split(":", 1) for line in raw.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def _config(client: redis.Redis, name: str, default: str) -> str:
    try:
        raw = exec_command(client, "CONFIG", "GET", name)
    except redis.ResponseError:
        return default
    if isinstance(raw, dict):
        items = {as_text(k): as_text(v) for k, v in raw.items()}
    else:
        seq = list(raw or [])
        items = {as_text(seq[i]): as_text(seq[i + 1]) for i in range(0, len(seq) - 1, 2)}
    return items.get(name) or default



def _run_id(spec: ConnectionSpec) -> str:
    client = redisnode.connect(spec)
    try:
        info: Any = client.info("server")
        return str(info.get("run_id", ""))
    except redis.RedisError as e:
        raise RestoreError(f"{spec.display}: INFO failed: {e}") from None
    finally:
        client.close()


def _major(version: str) -> int:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else 0
