"""What a restore says to the live Redis servers: check them, quiesce them, resume them.

The RedisRestore controller holds no Redis password (it lives in a Secret), so
these run in Jobs (``backupctl check-redis`` / ``backupctl quiesce-redis``,
password from ``REDIS_PASSWORD``), and are plain commands for anyone else:

* :func:`check_nodes`: versions, roles, cluster mode (node id, ``cluster_state``
  and the slot ranges of the node's shard: a replica reports its master's),
  whether CONFIG works,
  what each server loaded at its last start (``rdb_last_load_keys_loaded`` +
  ``rdb_last_load_keys_expired``, Redis >= 7.0: exact, and unaffected by
  writes after the load), key counts and ``DEBUG DIGEST`` where DEBUG is
  allowed. With ``expect_keys`` it *verifies a restore*: every primary loaded
  exactly that many keys (expired ones included: they were in the backup),
  every replica is in sync and holds the primary's dataset (same digest, or
  same key count without DEBUG). Waits (bounded) for servers still starting,
  loading or syncing.
* :func:`quiesce`: make a running server write nothing more to its data
  directory, so files swapped in underneath it survive its shutdown:
  ``save ""`` (no snapshot, none on shutdown), ``appendonly no``,
  ``repl-diskless-sync yes`` (a full sync to a replica writes no RDB),
  ``replica-priority 0`` (Sentinel never promotes it), then waits for a
  running BGSAVE to end. The original values are written to a state file
  first, and a rerun reuses that file (it never records the quiesced values
  as originals). :func:`resume` sets them back.
* :func:`shutdown`, :func:`run_id`, :func:`loading`: what a restore that
  restarts the servers itself (``restore --to-cluster --restart``) needs to
  stop one and to see it come back as a new process with its data loaded.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from backupctl.core.slots import normalize_slots
from backupctl.core.timing import Monotonic, Sleep
from backupctl.redis.address import ConnectionSpec
from backupctl.redis.cluster import cluster_shards
from backupctl.redis.connection import as_text, command_error, connect, exec_command, reply_map
from backupctl.redis.errors import RedisNodeError
from backupctl.redis.info import node_info

#: CONFIG settings quiesce changes, and the value it sets.
QUIESCE_SETTINGS: dict[str, str] = {
    "save": "",
    "appendonly": "no",
    "repl-diskless-sync": "yes",
    "replica-priority": "0",
}
#: Errors worth waiting out while a server starts, loads or restarts.
_TRANSIENT = ("unreachable", "timeout", "loading")


class LiveError(Exception):
    """A check failed or a server cannot be quiesced; ``str()`` is one line."""


@dataclass(frozen=True)
class NodeState:
    """One server as :func:`check_nodes` saw it."""

    redis: str  # host:port
    version: str
    role: str  # "master" | "replica"
    keys: int
    cluster: bool
    appendonly: bool
    config: bool  # CONFIG GET/SET works
    loaded: int | None  # keys loaded at the last start (Redis >= 7.0)
    expired: int | None  # keys dropped at load because their TTL had passed
    digest: str | None  # DEBUG DIGEST, when DEBUG is allowed
    master: str | None = None  # a replica's primary, host:port
    link_up: bool = True  # a replica's replication link (and no sync in progress)
    # Cluster mode: this node's id, ``cluster_state``, and the slot ranges its
    # shard serves now (a replica: its master's), as Redis says, not the pod name.
    node_id: str | None = None
    cluster_state: str | None = None
    slots: list[list[int]] | None = None
    #: "redis" or "valkey", and the server's own version (``version`` is its
    #: ``redis_version``: 7.2.4 on every Valkey 8 and 9)
    flavour: str = "redis"
    server_version: str = ""

    def json(self) -> dict[str, Any]:
        return asdict(self)


def check_nodes(
    specs: Sequence[ConnectionSpec],
    *,
    expect_keys: int | None = None,
    wait: float = 0.0,
    clock: Monotonic = time.monotonic,
    sleep: Sleep = time.sleep,
) -> list[NodeState]:
    """Look at every server (see the module docstring); with ``expect_keys``
    raise :class:`LiveError` unless the restore is verified. Waits up to
    ``wait`` seconds for servers to come up, load, sync and agree."""
    deadline = clock() + wait
    while True:
        try:
            nodes = [_node_state(spec) for spec in specs]
            problem = _problem(nodes, expect_keys)
        except RedisNodeError as e:
            if e.reason not in _TRANSIENT or clock() > deadline:
                raise
            problem, nodes = str(e), []
        if problem is None:
            return nodes
        if clock() > deadline:
            raise LiveError(problem)
        sleep(0.5)


def _node_state(spec: ConnectionSpec) -> NodeState:
    client = connect(spec)
    try:
        info = node_info(client)
        raw = _info(client, "persistence") | _info(client, "replication")
        if int(raw.get("loading", 0)) or int(raw.get("async_loading", 0)):
            raise RedisNodeError(f"{spec.display} is still loading its data", reason="loading")
        digest: str | None
        try:
            digest = str(exec_command(client, "DEBUG", "DIGEST"))
        except redis.ResponseError:
            digest = None  # DEBUG not enabled (the default since Redis 7.0)
        master, link_up = None, True
        if info.role == "replica":
            master = f"{raw.get('master_host', '?')}:{raw.get('master_port', '?')}"
            link_up = raw.get("master_link_status") == "up" and not int(
                raw.get("master_sync_in_progress", 0)
            )
        loaded = raw.get("rdb_last_load_keys_loaded")
        expired = raw.get("rdb_last_load_keys_expired")
        node_id = cluster_state = slots = None
        if info.cluster_enabled:
            node_id, cluster_state, slots = _cluster_place(client)
        return NodeState(
            redis=spec.display,
            version=info.redis_version,
            role=info.role,
            keys=info.keys,
            cluster=info.cluster_enabled,
            appendonly=info.appendonly,
            config=info.dir is not None,
            loaded=int(loaded) if loaded is not None else None,
            expired=int(expired) if expired is not None else None,
            digest=digest,
            master=master,
            link_up=link_up,
            node_id=node_id,
            cluster_state=cluster_state,
            slots=slots,
            flavour=info.flavour,
            server_version=info.version,
        )
    except redis.RedisError as e:
        raise RedisNodeError(f"{spec.display}: {e}") from None
    finally:
        client.close()


def _cluster_place(client: redis.Redis) -> tuple[str, str, list[list[int]]]:
    """(node id, cluster_state, the slot ranges of the shard this node is in)."""
    myid = as_text(exec_command(client, "CLUSTER", "MYID"))
    raw = as_text(exec_command(client, "CLUSTER", "INFO"))
    fields = dict(line.split(":", 1) for line in raw.splitlines() if ":" in line)
    state = fields.get("cluster_state", "?").strip()
    shard = next(
        (s for s in cluster_shards(client) if any(n.node_id == myid for n in s.nodes)),
        None,
    )
    slots = [[a, b] for a, b in normalize_slots(shard.slots)] if shard is not None else []
    return myid, state, slots


def _problem(nodes: Sequence[NodeState], expect_keys: int | None) -> str | None:
    """Why the restore is not verified (yet), or None. The servers are one
    replication group: exactly one primary."""
    if expect_keys is None:
        return None
    primaries = [n for n in nodes if n.role == "master"]
    if len(primaries) != 1:
        found = ", ".join(n.redis for n in primaries) or "none"
        return (
            f"expected one primary among {', '.join(n.redis for n in nodes)}, found {found} "
            "(a replica promoted, or a primary not up yet)"
        )
    for p in primaries:
        if p.loaded is not None and p.expired is not None:
            if p.loaded + p.expired != expect_keys:
                return (
                    f"{p.redis} loaded {p.loaded} keys ({p.expired} expired) at its last start, "
                    f"the backup holds {expect_keys}: it did not load the restored data"
                )
        elif p.keys != expect_keys:  # Redis < 7.0: no load counters
            return f"{p.redis} holds {p.keys} keys, the backup holds {expect_keys}"
    for r in (n for n in nodes if n.role != "master"):
        if not r.link_up:
            return f"replica {r.redis} is not in sync with {r.master} yet"
        p = primaries[0]
        if r.digest is not None and p.digest is not None and r.digest != p.digest:
            return f"replica {r.redis} holds other data than {p.redis} (DEBUG DIGEST differs)"
        if (r.digest is None or p.digest is None) and r.keys != p.keys:
            return f"replica {r.redis} holds {r.keys} keys, {p.redis} {p.keys}"
    return None


def restored_keys(nodes: Sequence[NodeState]) -> int:
    """Keys the (first) primary loaded at its last start, else holds."""
    p = next((n for n in nodes if n.role == "master"), nodes[0])
    return p.loaded if p.loaded is not None else p.keys


# --- quiesce / resume --------------------------------------------------------------


def quiesce(
    spec: ConnectionSpec,
    state_file: Path,
    *,
    timeout: float = 600.0,
    clock: Monotonic = time.monotonic,
    sleep: Sleep = time.sleep,
) -> dict[str, str]:
    """Stop ``spec`` from writing to its data directory; returns the original
    settings (also kept in ``state_file``)."""
    client = connect(spec)
    try:
        original = _read_state(state_file)
        if original is None:
            original = {}
            for name in QUIESCE_SETTINGS:
                try:
                    found: Any = exec_command(client, "CONFIG", "GET", name)
                except redis.RedisError as e:
                    raise LiveError(
                        f"{spec.display}: CONFIG GET {name} failed ({e}); the in-place restore "
                        "needs CONFIG GET/SET to stop Redis from overwriting the restored files"
                    ) from None
                values = reply_map(found)
                if name in values:  # unknown to this version: left alone
                    original[name] = as_text(values[name])
            _write_state(state_file, original)  # before anything changes
        for name, value in QUIESCE_SETTINGS.items():
            if name in original:
                _config_set(client, spec, name, value)
        deadline = clock() + timeout
        while True:
            p = _info(client, "persistence")
            if not int(p.get("rdb_bgsave_in_progress", 0)) and not int(
                p.get("aof_rewrite_in_progress", 0)
            ):
                return original
            if clock() > deadline:
                raise LiveError(f"{spec.display}: a background save still runs after {timeout:g} s")
            sleep(0.2)
    finally:
        client.close()


def resume(spec: ConnectionSpec, state_file: Path) -> dict[str, str]:
    """Set back what :func:`quiesce` changed; returns the settings restored
    (empty when there was nothing to resume)."""
    original = _read_state(state_file)
    if original is None:
        return {}
    client = connect(spec)
    try:
        for name, value in original.items():
            _config_set(client, spec, name, value)
    finally:
        client.close()
    state_file.unlink(missing_ok=True)
    return original


# --- restart -----------------------------------------------------------------------


def shutdown(client: redis.Redis, *modifiers: str) -> None:
    """``SHUTDOWN`` with ``modifiers`` (``NOSAVE``, ``NOW``). Returns once the
    server dropped the connection (it is going down); :class:`RedisNodeError`
    with redis-py's words when it refused."""
    try:
        exec_command(client, "SHUTDOWN", *modifiers)
    except (redis.ConnectionError, redis.TimeoutError):
        return  # the server closed the connection: it is going down
    except redis.RedisError as exc:
        raise command_error(exc, client) from None


def run_id(client: redis.Redis) -> str:
    """The server process's ``run_id`` (INFO server): another one means it
    restarted. :class:`RedisNodeError` with redis-py's words on failure."""
    try:
        return str(_info(client, "server").get("run_id", ""))
    except redis.RedisError as exc:
        raise command_error(exc, client) from None


def loading(client: redis.Redis) -> bool:
    """The server is still loading its dataset (INFO persistence ``loading``).
    :class:`RedisNodeError` with redis-py's words on failure."""
    try:
        return bool(int(_info(client, "persistence").get("loading", 0)))
    except redis.RedisError as exc:
        raise command_error(exc, client) from None


def _config_set(client: redis.Redis, spec: ConnectionSpec, name: str, value: str) -> None:
    try:
        exec_command(client, "CONFIG", "SET", name, value)
    except redis.RedisError as e:
        raise LiveError(f"{spec.display}: CONFIG SET {name} failed: {e}") from None


def _info(client: redis.Redis, section: str) -> dict[str, Any]:
    raw: Any = client.info(section)
    return dict(raw)


def _read_state(path: Path) -> dict[str, str] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise LiveError(f"cannot read the quiesce state file {path}: {e}") from None
    if not isinstance(data, dict):
        raise LiveError(f"the quiesce state file {path} is not a JSON object")
    return {str(k): str(v) for k, v in data.items()}


def _write_state(path: Path, data: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


__all__ = [
    "QUIESCE_SETTINGS",
    "LiveError",
    "NodeState",
    "check_nodes",
    "loading",
    "quiesce",
    "restored_keys",
    "resume",
    "run_id",
    "shutdown",
]
