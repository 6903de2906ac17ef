"""``backupctl restore --to-redis``: load a backup into a running Redis, key by key.

For a Redis whose disk we cannot (or should not) touch: a managed service,
a server on another host, a server that must stay up. How:

1. check the target first (reachable, password right, not cluster-enabled,
   empty unless ``flush``), so a refusal costs no download;
2. download the node's archive into a temporary folder and verify it exactly
   as ``--to-dir`` does (every sha256, the RDB's CRC64, ``redis-check-rdb``);
3. start a throwaway local ``redis-server`` on that RDB (a unix socket in a
   private temp folder, no TCP port, ``--save ''``, ``--appendonly no``,
   active expiry off) -- Redis itself is the only complete RDB parser;
4. with ``flush``: ``FLUSHALL`` on the target (only now: a bad archive never
   empties it); then, database by database, ``SCAN`` the local server and
   copy each key with ``DUMP`` + ``PTTL`` -> ``RESTORE`` in pipelined
   batches (``REPLACE`` only with ``flush``). Memory stays bounded by a batch:
   batches shrink when their payloads get large. Redis Functions libraries
   are copied with ``FUNCTION DUMP``/``FUNCTION RESTORE``.

Keys whose TTL passed since the backup are not loaded (the local server
drops them, as any Redis loading that RDB would) and are counted as
``expired``. Databases keep their numbers. Writers on the target should be
stopped while loading: a key another client writes meanwhile makes the load
fail (without ``flush``) or is overwritten (with it).
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

from backupctl import redisnode
from backupctl.archive import Progress
from backupctl.catalog import BackupEntry
from backupctl.redisnode import ConnectionSpec
from backupctl.restore import RestoreError, download_node, pick_node
from backupctl.storage.base import Backend

#: Keys per DUMP/RESTORE pipeline (the first batch; later ones adapt to payload size).
BATCH_KEYS = 512
#: Payload bytes a batch should stay under; a bigger batch halves the next one.
BATCH_BYTES = 16 * 1024 * 1024
#: Longest unix socket path Linux accepts (sun_path is 108 bytes with the NUL).
_MAX_SOCKET_PATH = 100
_KEYSPACE_DB = re.compile(r"^db(\d+)$")
_LOG_TAIL = 3


class LoadError(RestoreError):
    """The load was refused or failed; ``str()`` is one line."""


@dataclass(frozen=True)
class LoadResult:
    id: str
    target: str
    node: str
    redis: str  # host:port of the server loaded into
    keys: int  # keys written
    expired: int  # keys in the backup whose TTL had passed
    databases: dict[int, int] = field(default_factory=dict)  # db -> keys written
    functions: int = 0  # Redis Functions libraries copied
    flushed: bool = False


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
    """Load one node of ``entry`` into the running server ``target``."""
    manifest = entry.manifest
    if manifest is None:
        raise LoadError(f"backup {entry.id} is incomplete and cannot be restored")
    n = pick_node(manifest, node)
    rdb = n.rdb_file
    if rdb is None:
        raise LoadError(f"backup {manifest.id} node {n.name} has no RDB file")
    server_bin = redis_server or shutil.which("redis-server")
    if server_bin is None:
        raise LoadError(
            "--to-redis reads the backup with a local redis-server, which is not installed: "
            "install redis-server (Debian/Ubuntu: apt-get install redis-server) or restore "
            "with --to-dir"
        )

    client = redisnode.connect(target)
    try:
        info = redisnode.node_info(client)
        if info.cluster_enabled:
            raise LoadError(
                f"{target.display} is cluster-enabled; --to-redis loads a standalone server "
                "only (cluster targets are not supported yet)"
            )
        if info.role != "master":
            raise LoadError(
                f"{target.display} is a replica; load into its primary (replicas copy it)"
            )
        if info.keys and not flush:
            raise LoadError(
                f"{target.display} already holds {info.keys} keys: pass --flush to replace "
                "everything in it with the backup (FLUSHALL first), or load into an empty server"
            )
        databases = _databases(client)
    finally:
        client.close()

    with tempfile.TemporaryDirectory(prefix="backupctl-load-", dir=tmp_dir) as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        download_node(store, manifest, n, data, progress=progress)
        rdb_path = data / rdb.path
        with _local_server(server_bin, rdb_path, databases, timeout) as local:
            expected = _keyspace(local)
            with _binary_client(target, timeout) as dest:
                if flush:
                    _run(dest, target, "FLUSHALL")
                functions = _copy_functions(local, dest, target, flush)
                written: dict[int, int] = {}
                for db in sorted(expected):
                    written[db] = _copy_db(
                        local, dest, target, db, flush, batch_keys, batch_bytes, timeout
                    )
    keys = sum(written.values())
    return LoadResult(
        id=manifest.id,
        target=manifest.target,
        node=n.name,
        redis=target.display,
        keys=keys,
        expired=max(0, n.keys - keys),
        databases={db: c for db, c in written.items() if c},
        functions=functions,
        flushed=flush,
    )


# --- the target ------------------------------------------------------------------


def _databases(client: redis.Redis) -> int:
    """How many databases the target has (16 when CONFIG is not allowed)."""
    try:
        raw: Any = client.config_get("databases")
        return max(16, int(raw.get("databases", 16)))
    except (redis.RedisError, ValueError, TypeError):
        return 16


@contextmanager
def _binary_client(spec: ConnectionSpec, timeout: float) -> Iterator[redis.Redis]:
    """A redis-py client for ``spec`` returning bytes (keys may be any bytes)."""
    decoded = redisnode.connect(spec, timeout=min(timeout, 60.0))
    pool = decoded.connection_pool
    kwargs = {**pool.connection_kwargs, "decode_responses": False}
    binary = redis.Redis(
        connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    )
    decoded.close()
    try:
        yield binary
    finally:
        binary.close()


def _fail(spec: ConnectionSpec, what: str, exc: BaseException) -> LoadError:
    text = str(exc)
    if spec.password:
        text = text.replace(spec.password, "***")
    text = " ".join(text.split())
    if "DUMP payload version" in text:
        text += (
            " (the target is an older Redis than the local redis-server that read the backup; "
            "use a redis-server no newer than the target)"
        )
    return LoadError(f"{spec.display}: {what} failed: {text}")


def _exec(client: redis.Redis, *args: Any) -> Any:
    """``execute_command`` (untyped in redis-py) with an Any result."""
    command: Any = client.execute_command
    return command(*args)


def _run(client: redis.Redis, spec: ConnectionSpec, *args: Any) -> Any:
    try:
        return _exec(client, *args)
    except redis.RedisError as exc:
        raise _fail(spec, str(args[0]), exc) from None


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
        _exec(client, "DEBUG", "SET-ACTIVE-EXPIRE", "0")
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


def _copy_functions(
    local: redis.Redis, dest: redis.Redis, spec: ConnectionSpec, flush: bool
) -> int:
    """Copy Redis Functions libraries (Redis >= 7); returns how many."""
    try:
        libraries: Any = _exec(local, "FUNCTION", "LIST")
    except redis.ResponseError:
        return 0  # a local server older than 7.0 has no functions
    if not libraries:
        return 0
    payload = _exec(local, "FUNCTION", "DUMP")
    _run(dest, spec, "FUNCTION", "RESTORE", payload, "REPLACE" if flush else "APPEND")
    return len(libraries)


def _select(client: redis.Redis, db: int) -> redis.Redis:
    """The same server's database ``db``, through a new pool (SELECT is per connection)."""
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "db": db}
    return redis.Redis(
        connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    )


def _copy_db(
    local: redis.Redis,
    dest: redis.Redis,
    spec: ConnectionSpec,
    db: int,
    flush: bool,
    batch_keys: int,
    batch_bytes: int,
    timeout: float,
) -> int:
    src, dst = _select(local, db), _select(dest, db)
    try:
        copied, cursor, size = 0, 0, max(1, batch_keys)
        deadline = time.monotonic() + timeout
        while True:
            cursor, found = src.scan(cursor, count=size)
            keys = [k if isinstance(k, bytes) else k.encode() for k in found]
            for start in range(0, len(keys), size):
                chunk = keys[start : start + size]
                n, payload_bytes = _copy_batch(src, dst, spec, chunk, flush)
                copied += n
                if payload_bytes > batch_bytes and size > 1:
                    size = max(1, size // 2)
                elif payload_bytes < batch_bytes // 4 and size < batch_keys:
                    size = min(batch_keys, size * 2)
            if cursor == 0:
                return copied
            if time.monotonic() > deadline:
                raise LoadError(f"loading database {db} took longer than {timeout:g} s")
    finally:
        src.close()
        dst.close()


def _copy_batch(
    src: redis.Redis,
    dst: redis.Redis,
    spec: ConnectionSpec,
    keys: list[bytes],
    flush: bool,
) -> tuple[int, int]:
    """DUMP+PTTL ``keys`` from ``src``, RESTORE them on ``dst``: (written, payload bytes)."""
    read = src.pipeline(transaction=False)
    for key in keys:
        read.dump(key)
        read.pttl(key)
    values = read.execute()
    write = dst.pipeline(transaction=False)
    todo: list[tuple[bytes, bytes]] = []
    size = 0
    for i, key in enumerate(keys):
        payload, pttl = values[2 * i], values[2 * i + 1]
        if payload is None or pttl == -2:
            continue  # expired since the server loaded it
        write.restore(key, max(0, int(pttl)), payload, replace=flush)
        todo.append((key, payload))
        size += len(payload)
    if not todo:
        return 0, 0
    try:
        results = write.execute(raise_on_error=False)
    except redis.RedisError as exc:
        raise _fail(spec, "RESTORE", exc) from None
    for (key, payload), result in zip(todo, results, strict=True):
        if isinstance(result, Exception):
            _restore_failed(dst, spec, key, payload, result)
    return len(todo), size


def _restore_failed(
    dst: redis.Redis,
    spec: ConnectionSpec,
    key: bytes,
    payload: bytes,
    error: Exception,
) -> None:
    """A RESTORE answered an error: fine only when the key already holds exactly
    this value (SCAN may return a key twice); otherwise one clear error."""
    shown = key[:80].decode("utf-8", "replace")
    if "BUSYKEY" in str(error):
        with suppress(redis.RedisError):
            if dst.dump(key) == payload:
                return
        raise LoadError(
            f"{spec.display}: key {shown!r} already exists with other data (written by another "
            "client while loading?); stop writers and load again with --flush"
        )
    raise _fail(spec, f"RESTORE of key {shown!r}", error)


__all__ = ["LoadError", "LoadResult", "restore_to_redis"]
