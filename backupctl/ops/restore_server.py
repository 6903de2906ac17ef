"""``backupctl restore --to-redis``: load a backup into a running Redis, key by key.

For a Redis whose disk we cannot (or should not) touch: a managed service,
a server on another host, a server that must stay up, a Redis Cluster. How:

1. check the target first, so a refusal costs no download: a backup that
   the target or the local ``redis-server`` cannot load is refused, both
   sides named (:func:`backupctl.core.compat.load_problem`); a standalone
   primary (reachable, password right, empty unless ``flush``), or, for a
   cluster-enabled node, every master of its cluster (each reachable, a master
   with ``cluster_state:ok``, all 16384 slots served, each empty unless
   ``flush``); see :mod:`backupctl.redis.load`;
2. download the archives into a temporary folder and verify them exactly as
   ``--to-dir`` does (every sha256, the RDB's CRC64, ``redis-check-rdb``): one
   node's, or into a cluster every shard of a cluster backup set. All of them
   before anything is written;
3. node by node, start a throwaway local ``redis-server`` on its RDB (a unix
   socket in a private temp folder, no TCP port, ``--save ''``,
   ``--appendonly no``, active expiry off; :mod:`backupctl.redis.local_server`)
   -- Redis itself is the only complete RDB parser;
4. with ``flush``: ``FLUSHALL`` on the target (every master of a cluster), only
   now: a bad archive never empties it. Then, database by database, ``SCAN``
   the local server and copy each key with ``DUMP`` + ``PTTL`` -> ``RESTORE``
   in pipelined batches (``REPLACE`` only with ``flush``); into a cluster each
   key goes to the master owning its slot, whatever the shard count of the
   backup. Memory stays bounded by a batch: batches shrink when their payloads
   get large. Redis Functions libraries are copied with ``FUNCTION DUMP`` /
   ``FUNCTION RESTORE`` (on every master of a cluster).

A cluster has database 0 only: a backup with keys in another database is
refused before anything is written (a cluster backup set never has any,
its nodes cannot hold them). Keys whose TTL passed since the backup are not
loaded (the local server drops them, as any Redis loading that RDB would)
and are counted as ``expired``; the others keep their expiry time (the TTL
left is read from the local server just before the key is written).
Writers on the target should be stopped while loading: a key another
client writes meanwhile makes the load fail (without ``flush``) or is
overwritten (with it).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from backupctl.core.compat import display, load_problem, reads, writes
from backupctl.ops.restore_dir import download_node, pick_node
from backupctl.ops.scratch import scratch_dir
from backupctl.redis.address import ConnectionSpec
from backupctl.redis.load import LoadError, Target, open_target
from backupctl.redis.local_server import (
    LocalDatabase,
    LocalServer,
    local_server,
    server_version,
    socket_parent,
)
from backupctl.store.archive import Progress
from backupctl.store.backends.base import Backend
from backupctl.store.catalog import BackupEntry, Manifest, NodeEntry

#: Keys per DUMP/RESTORE pipeline (the first batch; later ones adapt to payload size).
BATCH_KEYS = 512
#: Payload bytes a batch should stay under; a bigger batch halves the next one.
BATCH_BYTES = 16 * 1024 * 1024
#: Name starts of the temp folders (unpacked archives; the local server's
#: socket), ``<prefix><pid>-<random>``: see backupctl.ops.scratch.
SCRATCH_PREFIX = "backupctl-load-"
SOCKET_PREFIX = "bkctl-sock-"


@dataclass(frozen=True)
class LoadResult:
    id: str
    target: str
    nodes: tuple[str, ...]  # the backup's nodes that were loaded
    redis: str  # host:port of the server (or cluster node) given
    keys: int  # keys written
    expired: int  # keys in the backup whose TTL had passed
    databases: dict[int, int] = field(default_factory=dict)  # db -> keys written
    masters: dict[str, int] = field(default_factory=dict)  # master host:port -> keys written
    functions: int = 0  # Redis Functions libraries copied
    flushed: bool = False
    cluster: bool = False  # the target is a Redis Cluster


def restore_to_redis(
    store: Backend,
    entry: BackupEntry,
    target: ConnectionSpec,
    *,
    flush: bool = False,
    node: str | None = None,
    tmp_dir: Path | None = None,
    redis_server: str | None = None,
    timeout: float = 3600.0,
    progress: Progress | None = None,
    batch_keys: int = BATCH_KEYS,
    batch_bytes: int = BATCH_BYTES,
    note: Callable[[str], None] | None = None,
) -> LoadResult:
    """Load ``entry`` into the running server ``target``: one node of the
    backup, or into a Redis Cluster every node of it (``node`` picks one).
    The archives are unpacked under ``tmp_dir`` (default: the system temp
    folder) in a folder a later run removes if this one is killed; ``note``
    hears of such leftovers removed."""
    manifest = entry.manifest
    if manifest is None:
        raise LoadError(f"backup {entry.id} is incomplete and cannot be restored")
    server_bin = redis_server or shutil.which("redis-server")
    if server_bin is None:
        raise LoadError(
            "--to-redis reads the backup with a local redis-server, which is not installed: "
            "install redis-server (Debian/Ubuntu: apt-get install redis-server) or restore "
            "with --to-dir"
        )

    with open_target(target, flush=flush, timeout=timeout) as dest:
        nodes = _source_nodes(manifest, node, dest.cluster)
        _check_versions(nodes, dest.server, server_bin)
        need = sum(f.size for n in nodes for f in n.files)
        with (
            scratch_dir(tmp_dir, SCRATCH_PREFIX, need=need, note=note) as tmp,
            scratch_dir(socket_parent(), SOCKET_PREFIX, note=note, option="temp folder") as sock,
        ):
            rdbs: list[Path] = []
            for i, n in enumerate(nodes):  # every archive verified before anything is written
                data = tmp / f"node-{i}"
                data.mkdir()
                download_node(store, manifest, n, data, progress=progress)
                rdb = n.rdb_file
                assert rdb is not None  # _source_nodes checked
                rdbs.append(data / rdb.path)
            copy = _Copy(dest, flush, batch_keys, batch_bytes, timeout)
            for n, rdb_path in zip(nodes, rdbs, strict=True):
                with local_server(server_bin, rdb_path, dest.databases, timeout, sock) as local:
                    copy.node(local, n)
            masters = dest.written()
    keys = sum(copy.databases.values())
    return LoadResult(
        id=manifest.id,
        target=manifest.target,
        nodes=tuple(n.name for n in nodes),
        redis=target.display,
        keys=keys,
        expired=max(0, sum(n.keys for n in nodes) - keys),
        databases={db: c for db, c in sorted(copy.databases.items()) if c},
        masters=masters,
        functions=len(copy.functions),
        flushed=flush,
        cluster=dest.cluster,
    )


def _check_versions(nodes: list[NodeEntry], target: tuple[str, str], server_bin: str) -> None:
    """Refuse, before anything is downloaded or written, a backup that the
    local server cannot read, or whose keys (DUMP payloads of the local
    server's RDB version) the target cannot take; both sides named."""
    local = server_version(server_bin)
    for n in nodes:
        problem = load_problem(n.flavour, n.version, n.rdb_magic, n.rdb_version, *target)
        if problem is not None:
            raise LoadError(f"refused, nothing was touched: {problem}")
        if local is None:
            continue
        problem = load_problem(n.flavour, n.version, n.rdb_magic, n.rdb_version, *local)
        if problem is not None:
            raise LoadError(
                f"refused, nothing was touched: --to-redis reads the backup with the local "
                f"{server_bin}, and {problem}; pass --redis-server with a server that reads it"
            )
    dump = writes(*local) if local is not None else None
    if local is not None and dump is not None and reads(*target, *dump) is False:
        raise LoadError(
            f"refused, nothing was touched: keys are copied as DUMP payloads in the format "
            f"of the local {display(*local)} (RDB {dump[1]}), which {display(*target)} does "
            "not read; pass --redis-server with a server no newer than the target"
        )


def _source_nodes(manifest: Manifest, node: str | None, cluster: bool) -> list[NodeEntry]:
    """The backup's nodes to load: into a cluster all of them (``node`` picks one),
    into one server exactly one."""
    nodes = manifest.nodes if cluster and node is None else [pick_node(manifest, node)]
    for n in nodes:
        if n.rdb_file is None:
            raise LoadError(f"backup {manifest.id} node {n.name} has no RDB file")
    return nodes


# --- copying ---------------------------------------------------------------------


class _Copy:
    """Copies node after node into ``dest``; flushes before the first key."""

    def __init__(
        self, dest: Target, flush: bool, batch_keys: int, batch_bytes: int, timeout: float
    ) -> None:
        self.dest = dest
        self.flush = flush
        self.batch_keys = max(1, batch_keys)
        self.batch_bytes = batch_bytes
        self.timeout = timeout
        self.flushed = False
        self.databases: dict[int, int] = {}  # db -> keys written
        self.functions: dict[str, str] = {}  # library name -> code, as copied

    def node(self, local: LocalServer, node: NodeEntry) -> None:
        keyspace = local.keyspace()
        if self.dest.cluster:
            other = sorted(db for db in keyspace if db != 0)
            if other:
                touched = self.flushed or self.functions or any(self.databases.values())
                written = "" if touched else " (nothing was written)"
                raise LoadError(
                    f"node {node.name} of the backup has keys in database "
                    f"{', '.join(map(str, other))} ({sum(keyspace[db] for db in other)} keys), "
                    f"but a Redis Cluster has database 0 only{written}: load it into a "
                    "standalone Redis, or move those keys to database 0 first"
                )
        if self.flush and not self.flushed:
            self.dest.flush()
            self.flushed = True
        self._functions(local)
        for db in sorted(keyspace):
            with local.database(db) as src:
                self.databases[db] = self.databases.get(db, 0) + self._db(src, db)

    def _functions(self, local: LocalServer) -> None:
        """Redis Functions libraries (Redis >= 7): the first node's with FUNCTION
        DUMP/RESTORE; a later node's other libraries (a cluster's shards normally
        all hold the same) with FUNCTION LOAD."""
        libraries = local.libraries()
        new = {name: code for name, code in libraries.items() if self.functions.get(name) != code}
        if not new:
            return
        if not self.functions:
            payload = local.function_dump()
            self.dest.restore_functions(payload, replace=self.flush)
        else:
            for name, code in new.items():
                self.dest.load_function(code, replace=self.flush or name in self.functions)
        self.functions.update(libraries)

    def _db(self, src: LocalDatabase, db: int) -> int:
        copied, cursor, size = 0, 0, self.batch_keys
        deadline = time.monotonic() + self.timeout
        while True:
            cursor, keys = src.scan(cursor, size)
            for start in range(0, len(keys), size):
                items, payload_bytes = src.dump(keys[start : start + size])
                if items:
                    copied += self.dest.write(db, items, replace=self.flush)
                if payload_bytes > self.batch_bytes and size > 1:
                    size = max(1, size // 2)
                elif payload_bytes < self.batch_bytes // 4 and size < self.batch_keys:
                    size = min(self.batch_keys, size * 2)
            if cursor == 0:
                return copied
            if time.monotonic() > deadline:
                raise LoadError(f"loading database {db} took longer than {self.timeout:g} s")


__all__ = ["LoadError", "LoadResult", "restore_to_redis"]
