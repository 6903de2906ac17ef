"""``backupctl restore --to-redis``: load a backup into a running Redis, key by key.

For a Redis whose disk we cannot (or should not) touch: a managed service,
a server on another host, a server that must stay up, a Redis Cluster. How:

1. check the target first, so a refusal costs no download: a standalone
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
   ``--appendonly no``, active expiry off) -- Redis itself is the only
   complete RDB parser;
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

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from backupctl.ops.restore_dir import download_node, pick_node
from backupctl.redis.load import Item, LoadError, Target, open_target, select_db
from backupctl.redis.node import ConnectionSpec, as_text, exec_command
from backupctl.store.archive import Progress
from backupctl.store.backends.base import Backend
from backupctl.store.catalog import BackupEntry, Manifest, NodeEntry

#: Keys per DUMP/RESTORE pipeline (the first batch; later ones adapt to payload size).
BATCH_KEYS = 512
#: Payload bytes a batch should stay under; a bigger batch halves the next one.
BATCH_BYTES = 16 * 1024 * 1024
#: Longest unix socket path Linux accepts (sun_path is 108 bytes with the NUL).
_MAX_SOCKET_PATH = 100
_KEYSPACE_DB = re.compile(r"^db(\d+)$")
_LOG_TAIL = 3


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
) -> LoadResult:
    """Load ``entry`` into the running server ``target``: one node of the
    backup, or into a Redis Cluster every node of it (``node`` picks one)."""
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
        with tempfile.TemporaryDirectory(prefix="backupctl-load-", dir=tmp_dir) as tmp:
            rdbs: list[Path] = []
            for i, n in enumerate(nodes):  # every archive verified before anything is written
                data = Path(tmp) / f"node-{i}"
                data.mkdir()
                download_node(store, manifest, n, data, progress=progress)
                rdb = n.rdb_file
                assert rdb is not None  # _source_nodes checked
                rdbs.append(data / rdb.path)
            copy = _Copy(dest, flush, batch_keys, batch_bytes, timeout)
            for n, rdb_path in zip(nodes, rdbs, strict=True):
                with _local_server(server_bin, rdb_path, dest.databases, timeout) as local:
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


def _source_nodes(manifest: Manifest, node: str | None, cluster: bool) -> list[NodeEntry]:
    """The backup's nodes to load: into a cluster all of them (``node`` picks one),
    into one server exactly one."""
    nodes = manifest.nodes if cluster and node is None else [pick_node(manifest, node)]
    for n in nodes:
        if n.rdb_file is None:
            raise LoadError(f"backup {manifest.id} node {n.name} has no RDB file")
    return nodes


# --- the throwaway server that reads the RDB ---------------------------------------


def _socket_dir() -> str:
    """A private folder for the unix socket, with a path short enough for one."""
    base = tempfile.gettempdir()
    if len(base) > _MAX_SOCKET_PATH - 30:
        base = "/tmp"
    return tempfile.mkdtemp(prefix="bkctl-", dir=base)


@contextmanager
def _local_server(
    server_bin: str, rdb_path: Path, databases: int, timeout: float
) -> Iterator[redis.Redis]:
    """``redis-server`` on ``rdb_path``, reachable only through a unix socket;
    yields a bytes client once the RDB is loaded; always stopped."""
    sock_dir = _socket_dir()
    sock = os.path.join(sock_dir, "redis.sock")
    log = rdb_path.parent / "local-redis.log"
    args = [
        server_bin,
        "--port", "0",
        "--unixsocket", sock,
        "--unixsocketperm", "700",
        "--dir", str(rdb_path.parent),
        "--dbfilename", rdb_path.name,
        "--save", "",
        "--appendonly", "no",
        "--databases", str(databases),
        "--daemonize", "no",
        "--logfile", str(log),
        "--loglevel", "warning",
        "--enable-debug-command", "local",
        "--maxmemory", "0",
    ]  # fmt: skip
    setpriv = shutil.which("setpriv")
    if setpriv is not None:  # util-linux: the server goes when we do, even on SIGKILL
        args = [setpriv, "--pdeathsig", "TERM", "--", *args]
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C reaches us; we stop it ourselves
    )
    client = redis.Redis(unix_socket_path=sock, socket_timeout=60, decode_responses=False)
    try:
        _wait_loaded(client, proc, log, timeout)
        # No key may vanish while we SCAN it (a rehash could repeat keys).
        exec_command(client, "DEBUG", "SET-ACTIVE-EXPIRE", "0")
        yield client
    finally:
        client.close()
        _stop(proc)
        shutil.rmtree(sock_dir, ignore_errors=True)


def _wait_loaded(
    client: redis.Redis, proc: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise LoadError(_why_local_failed(log))
        try:
            client.ping()
            return
        except (redis.ConnectionError, redis.BusyLoadingError):
            pass
        if time.monotonic() > deadline:
            raise LoadError(f"the local redis-server did not load the backup within {timeout:g} s")
        time.sleep(0.05)


def _why_local_failed(log: Path) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    lines = [ln.split(" # ", 1)[-1].strip() for ln in text.splitlines() if ln.strip()]
    tail = "; ".join(lines[-_LOG_TAIL:]) or "no log output"
    hint = ""
    if "RDB format version" in text:
        hint = " (the backup was written by a newer Redis: install a newer redis-server here)"
    return f"the local redis-server could not read the backup's RDB: {tail}{hint}"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)  # --save '': nothing is written on the way out
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _keyspace(client: redis.Redis) -> dict[int, int]:
    """db number -> keys, for the databases that hold any."""
    raw: Any = client.info("keyspace")
    out: dict[int, int] = {}
    for name, value in raw.items():
        m = _KEYSPACE_DB.match(name.decode() if isinstance(name, bytes) else str(name))
        if m and isinstance(value, dict) and int(value.get("keys", 0)):
            out[int(m.group(1))] = int(value["keys"])
    return out


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

    def node(self, local: redis.Redis, node: NodeEntry) -> None:
        keyspace = _keyspace(local)
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
            self.databases[db] = self.databases.get(db, 0) + self._db(local, db)

    def _functions(self, local: redis.Redis) -> None:
        """Redis Functions libraries (Redis >= 7): the first node's with FUNCTION
        DUMP/RESTORE; a later node's other libraries (a cluster's shards normally
        all hold the same) with FUNCTION LOAD."""
        libraries = _libraries(local)
        new = {name: code for name, code in libraries.items() if self.functions.get(name) != code}
        if not new:
            return
        if not self.functions:
            payload = exec_command(local, "FUNCTION", "DUMP")
            self.dest.restore_functions(payload, replace=self.flush)
        else:
            for name, code in new.items():
                self.dest.load_function(code, replace=self.flush or name in self.functions)
        self.functions.update(libraries)

    def _db(self, local: redis.Redis, db: int) -> int:
        src = select_db(local, db)
        try:
            copied, cursor, size = 0, 0, self.batch_keys
            deadline = time.monotonic() + self.timeout
            while True:
                cursor, found = src.scan(cursor, count=size)
                keys = [k if isinstance(k, bytes) else k.encode() for k in found]
                for start in range(0, len(keys), size):
                    items, payload_bytes = _dump(src, keys[start : start + size])
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
        finally:
            src.close()


def _libraries(local: redis.Redis) -> dict[str, str]:
    """name -> code of the Redis Functions libraries on the local server."""
    try:
        raw: Any = exec_command(local, "FUNCTION", "LIST", "WITHCODE")
    except redis.ResponseError:
        return {}  # a local server older than 7.0 has no functions
    out: dict[str, str] = {}
    for entry in raw or []:
        if isinstance(entry, list):
            entry = dict(zip(entry[::2], entry[1::2], strict=False))
        fields = {as_text(k): v for k, v in entry.items()}
        out[as_text(fields.get("library_name", ""))] = as_text(fields.get("library_code", ""))
    return out


def _dump(src: redis.Redis, keys: list[bytes]) -> tuple[list[Item], int]:
    """DUMP + PTTL of ``keys``: the items still there, and their payload bytes."""
    read = src.pipeline(transaction=False)
    for key in keys:
        read.dump(key)
        read.pttl(key)
    values = read.execute()
    items: list[Item] = []
    size = 0
    for i, key in enumerate(keys):
        payload, pttl = values[2 * i], values[2 * i + 1]
        if payload is None or pttl == -2:
            continue  # expired since the server loaded it
        items.append((key, max(0, int(pttl)), payload))
        size += len(payload)
    return items, size


__all__ = ["LoadError", "LoadResult", "restore_to_redis"]
