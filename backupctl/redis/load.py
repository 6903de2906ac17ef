"""The receiving end of ``restore --to-redis``: check the server or cluster a
backup is loaded into, then write keys into it.

Two kinds of target behind one small interface (:class:`Target`), chosen by
:func:`open_target` from what the node given says about itself:

- :class:`Server`: one standalone primary; databases keep their numbers.
- :class:`Cluster`: every master of a Redis Cluster, discovered from any one
  of its nodes (``CLUSTER SHARDS``). Each key goes to the master that owns its
  slot (CRC16, as ``redis.crc.key_slot``), in one pipeline per master. A
  ``MOVED`` answer (the slot map changed under us) refreshes the map and
  retries; an ``ASK`` answer (the slot is being migrated) sends ``ASKING`` +
  ``RESTORE`` to the importing node. Both a bounded number of times. A cluster
  has database 0 only.

Everything a refusal needs is checked when the target is opened, before the
caller downloads anything; nothing is written until the caller calls
:meth:`Target.flush` or :meth:`Target.write`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import redis
from redis.crc import key_slot

from backupctl.core.slots import CLUSTER_SLOTS
from backupctl.redis import resp_pipeline as rp
from backupctl.redis.address import ConnectionSpec
from backupctl.redis.cluster import cluster_shards
from backupctl.redis.connection import connect, exec_command
from backupctl.redis.errors import RedisNodeError
from backupctl.redis.info import NodeInfo, node_info
from backupctl.redis.load_node import (
    Command,
    Item,
    LoadError,
    PackedRestores,
    binary_client,
    busy_error,
    databases,
    fail,
    pipelined,
    queue_restore,
    run_command,
    same_value,
    select_db,
    shown_key,
)
from backupctl.redis.resp_pipeline import Batch, Packed, RawPipe, pack_command, pack_restore

#: Rounds of MOVED/ASK redirects one batch may take before we give up.
MAX_REDIRECTS = 5


_Tag = Item | bytes  # what a command sent is about: a key's RESTORE, or a key rebuilt


class Target(Protocol):
    """Where keys are loaded; the methods raise :class:`LoadError` with one clear line."""

    display: str  # host:port as given, for messages and results
    cluster: bool
    server: tuple[str, str]  # (flavour, version) of the node given
    databases: int  # how many databases the local reader may need (>= 16)

    def flush(self) -> None:
        """FLUSHALL every master."""

    def restore_functions(self, payload: bytes, *, replace: bool) -> None:
        """FUNCTION RESTORE ``payload`` (REPLACE or APPEND) on every master."""

    def load_function(self, code: str | bytes, *, replace: bool) -> None:
        """FUNCTION LOAD one library on every master."""

    def write(self, db: int, items: Sequence[Item], *, replace: bool) -> int:
        """RESTORE ``items`` into database ``db``; how many keys (of this batch or
        earlier ones) are known written now. Replies may be read later (:meth:`sync`
        reads them all); an earlier batch's error raises then, naming its key."""

    def write_packed(self, db: int, packed: Sequence[Packed], *, replace: bool) -> int:
        """As :meth:`write`, the keys' RESTORE commands already packed (REPLACE
        in them as ``replace`` says: :func:`~backupctl.redis.resp_pipeline.pack_restore`,
        :mod:`~backupctl.redis.restore_strings`)."""

    def sync(self) -> dict[int, int]:
        """Pending replies read and checked; keys written since last told, per database."""

    def execute(self, db: int, key: bytes, commands: Iterable[Command], budget: int) -> None:
        """Send ``commands`` (all about ``key``'s slot) to database ``db``, pipelined
        with at most ``budget`` bytes in flight; the first error raises."""

    def written(self) -> dict[str, int]:
        """Keys written so far per master (host:port)."""

    def close(self) -> None: ...


@contextmanager
def open_target(spec: ConnectionSpec, *, flush: bool, timeout: float) -> Iterator[Target]:
    """Check the server at ``spec`` (a standalone primary, or any node of a
    cluster) and yield a :class:`Target` for it; refusals raise :class:`LoadError`."""
    client = connect(spec)
    try:
        info = node_info(client)
        target: Target = (
            Cluster(spec, client, flush=flush, timeout=timeout)
            if info.cluster_enabled
            else Server(spec, client, info, flush=flush, timeout=timeout)
        )
        target.server = (info.flavour, info.version)
    finally:
        client.close()
    try:
        yield target
    finally:
        target.close()


# --- one standalone server ----------------------------------------------------------


class Server:
    """A standalone primary."""

    cluster = False
    server = ("redis", "")

    def __init__(
        self,
        spec: ConnectionSpec,
        client: redis.Redis,
        info: NodeInfo,
        *,
        flush: bool,
        timeout: float,
    ) -> None:
        self.spec = spec
        self.display = spec.display
        if info.role != "master":
            raise LoadError(
                f"{spec.display} is a replica; load into its primary (replicas copy it)"
            )
        if info.keys and not flush:
            raise LoadError(
                f"{spec.display} already holds {info.keys} keys: pass --flush to replace "
                "everything in it with the backup (FLUSHALL first), or load into an empty server"
            )
        self.databases = databases(client)
        self._client = binary_client(spec, timeout)
        self._dbs: dict[int, redis.Redis] = {}
        self._pipes: dict[int, RawPipe[_Tag]] = {}
        self._unreported: dict[int, int] = {}  # db -> keys known written, not yet returned
        self._written = 0

    def flush(self) -> None:
        run_command(self._client, self.spec, "FLUSHALL")

    def restore_functions(self, payload: bytes, *, replace: bool) -> None:
        run_command(self._client, self.spec, "FUNCTION", "RESTORE", payload,
             "REPLACE" if replace else "APPEND")  # fmt: skip

    def load_function(self, code: str | bytes, *, replace: bool) -> None:
        args = ("FUNCTION", "LOAD", "REPLACE", code) if replace else ("FUNCTION", "LOAD", code)
        run_command(self._client, self.spec, *args)

    def _db(self, db: int) -> redis.Redis:
        if db not in self._dbs:
            self._dbs[db] = select_db(self._client, db)
        return self._dbs[db]

    def _send(self, db: int, packed: Sequence[rp.Packed], tags: Sequence[_Tag], what: str,
              keys: int) -> None:  # fmt: skip
        try:
            if db not in self._pipes:  # one connection per database, held while loading
                self._pipes[db] = RawPipe(self._db(db))
            done = self._pipes[db].send(packed, tags, keys)
        except redis.RedisError as exc:
            raise fail(self.spec, what, exc) from None
        self._settle(db, done)

    def write(self, db: int, items: Sequence[Item], *, replace: bool) -> int:
        items = [Item(*item) for item in items]  # plain (key, expiry, payload) tuples too
        packed = [pack_restore(k, e, p, replace, i, f) for k, e, p, i, f in items]
        return self.write_packed(db, packed, replace=replace)

    def write_packed(self, db: int, packed: Sequence[Packed], *, replace: bool) -> int:
        self._send(db, packed, PackedRestores(packed), "RESTORE", len(packed))
        return self._unreported.pop(db, 0)

    def sync(self) -> dict[int, int]:
        for db, pipe in self._pipes.items():
            try:
                done = pipe.drain()
            except redis.RedisError as exc:
                raise fail(self.spec, "RESTORE", exc) from None
            self._settle(db, done)
        counts, self._unreported = {db: n for db, n in self._unreported.items() if n}, {}
        return counts

    def _settle(self, db: int, batches: list[Batch[_Tag]]) -> None:
        """Errors of answered batches raised (a key already holding exactly the
        payload is fine); the keys they wrote counted."""
        written = 0
        for batch in batches:
            for index, text in batch.errors:
                tag = batch.tags[index]
                if isinstance(tag, bytes):  # a command rebuilding the key ``tag``
                    if "no such key" in text:  # every field's TTL had passed: nothing to rename
                        continue
                    what = f"rebuilding key {shown_key(tag)}"
                elif "BUSYKEY" in text:
                    if not same_value(self._db(db), tag.key, tag.payload):
                        raise busy_error(self.spec, tag.key)
                    continue
                else:
                    what = f"RESTORE of key {shown_key(tag.key)}"
                raise fail(self.spec, what, redis.ResponseError(text))
            written += batch.keys
        self._written += written
        self._unreported[db] = self._unreported.get(db, 0) + written

    def execute(self, db: int, key: bytes, commands: Iterable[Command], budget: int) -> None:
        packed: list[bytes] = []
        size = 0
        for command in commands:
            packed.append(pack_command(*command))
            size += len(packed[-1])
            if size >= budget:
                self._send(db, packed, [key] * len(packed), f"rebuilding key {shown_key(key)}", 0)
                packed, size = [], 0
        if packed:
            self._send(db, packed, [key] * len(packed), f"rebuilding key {shown_key(key)}", 0)
        self._written += 1

    def written(self) -> dict[str, int]:
        return {self.display: self._written}

    def close(self) -> None:
        for pipe in self._pipes.values():
            pipe.close()
        self._pipes.clear()
        for client in self._dbs.values():
            client.close()
        self._client.close()


# --- a Redis Cluster -----------------------------------------------------------------


def _addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Cluster:
    """Every master of a Redis Cluster, keys routed by slot."""

    cluster = True
    server = ("redis", "")

    def __init__(
        self, spec: ConnectionSpec, client: redis.Redis, *, flush: bool, timeout: float
    ) -> None:
        self.spec = spec
        self.display = spec.display
        self.timeout = timeout
        if spec.db:
            raise LoadError(
                f"{spec.display} is a Redis Cluster node and a cluster has database 0 only: "
                f"drop the database number ({spec.db}) from --to-redis"
            )
        self.databases = databases(client)
        masters = self._slot_map(client)
        self._specs: dict[str, ConnectionSpec] = {}
        self._clients: dict[str, redis.Redis] = {}
        self._written: dict[str, int] = {}
        try:
            for addr, master in masters.items():
                self._specs[addr] = master
                self._check_master(master, flush)
                self._written[addr] = 0
        except BaseException:
            self.close()
            raise

    # The slot map -----------------------------------------------------------------

    def _slot_map(self, client: redis.Redis) -> dict[str, ConnectionSpec]:
        """Read the shards from ``client``'s node, fill ``self._owner`` (slot ->
        master address) and return the masters that serve slots."""
        owner: list[str | None] = [None] * CLUSTER_SLOTS
        masters: dict[str, ConnectionSpec] = {}
        for shard in cluster_shards(client):
            if not shard.slots:
                continue
            master = shard.master
            ranges = ", ".join(f"{a}-{b}" for a, b in shard.slots)
            if master is None or master.health != "online":
                raise LoadError(
                    f"the cluster of {self.spec.display}: the shard serving slots {ranges} has "
                    "no healthy master; wait for the cluster to recover (redis-cli --cluster "
                    "check)"
                )
            addr = _addr(master.host, master.port)
            masters[addr] = dataclasses.replace(self.spec, host=master.host, port=master.port)
            for a, b in shard.slots:
                owner[a : b + 1] = [addr] * (b - a + 1)
        covered = sum(1 for o in owner if o is not None)
        if covered != CLUSTER_SLOTS:
            raise LoadError(
                f"the cluster of {self.spec.display} serves {covered} of {CLUSTER_SLOTS} slots: "
                "keys of the others would have nowhere to go; assign every slot first "
                "(redis-cli --cluster fix)"
            )
        self._owner: list[str] = [o for o in owner if o is not None]
        return masters

    def _refresh(self, hints: Sequence[tuple[int, str]]) -> None:
        """Read the slot map again, from the first master that answers; then
        apply what MOVED answers said (a node knows its own slots best)."""
        last: Exception | None = None
        for spec in list(self._specs.values()):
            try:
                client = connect(spec, timeout=min(self.timeout, 10.0))
            except RedisNodeError as exc:
                last = exc
                continue
            try:
                masters = self._slot_map(client)
            finally:
                client.close()
            for addr, master in masters.items():
                self._specs.setdefault(addr, master)
                self._written.setdefault(addr, 0)
            for slot, addr in hints:
                self._owner[slot] = addr
            return
        raise LoadError(f"the slot map of the cluster of {self.display} could not be read: {last}")

    def _check_master(self, spec: ConnectionSpec, flush: bool) -> None:
        client = connect(spec)
        try:
            info = node_info(client)
            raw = run_command(client, spec, "CLUSTER", "INFO")
            text = raw.decode() if isinstance(raw, bytes) else str(raw)  # name:value lines
            state = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        finally:
            client.close()
        if info.role != "master":
            raise LoadError(
                f"cluster node {spec.display} serves slots but reports role {info.role}: a "
                "failover is in progress; retry when the cluster is stable"
            )
        if state.get("cluster_state", "").strip() != "ok":
            raise LoadError(
                f"cluster master {spec.display} says cluster_state:"
                f"{state.get('cluster_state', '?').strip()}: fix the cluster (redis-cli "
                "--cluster check) before loading into it"
            )
        if info.keys and not flush:
            raise LoadError(
                f"cluster master {spec.display} already holds {info.keys} keys: pass --flush to "
                "replace everything in the cluster with the backup (FLUSHALL on every master "
                "first), or load into an empty cluster"
            )

    def _client(self, addr: str) -> redis.Redis:
        if addr not in self._clients:
            self._clients[addr] = binary_client(self._specs[addr], self.timeout)
        return self._clients[addr]

    def _known(self, host: str, port: int, via: str) -> str:
        """The address a redirect names (a node may leave its host out: then it is
        the host of the node that answered)."""
        host = host or self._specs[via].host
        addr = _addr(host, port)
        if addr not in self._specs:
            self._specs[addr] = dataclasses.replace(self.spec, host=host, port=port)
            self._written[addr] = 0
        return addr

    # Writing -----------------------------------------------------------------------

    def _each_master(self, *args: Any) -> None:
        for addr in sorted(self._written):
            run_command(self._client(addr), self._specs[addr], *args)

    def flush(self) -> None:
        self._each_master("FLUSHALL")

    def restore_functions(self, payload: bytes, *, replace: bool) -> None:
        self._each_master("FUNCTION", "RESTORE", payload, "REPLACE" if replace else "APPEND")

    def load_function(self, code: str | bytes, *, replace: bool) -> None:
        args = ("FUNCTION", "LOAD", "REPLACE", code) if replace else ("FUNCTION", "LOAD", code)
        self._each_master(*args)

    def write(self, db: int, items: Sequence[Item], *, replace: bool) -> int:
        if db != 0:
            raise LoadError(
                f"the backup has keys in database {db}, but a Redis Cluster has database 0 only"
            )
        pending = [Item(*item) for item in items]  # plain (key, expiry, payload) tuples too
        written = 0
        for _ in range(MAX_REDIRECTS + 1):
            groups: dict[str, list[Item]] = {}
            for item in pending:
                groups.setdefault(self._owner[key_slot(item[0])], []).append(item)
            moved: list[Item] = []
            hints: list[tuple[int, str]] = []
            for addr, group in groups.items():
                written += self._send(addr, group, replace, moved, hints, asking=False)
            if not moved:
                return written
            self._refresh(hints)
            pending = moved
        raise LoadError(
            f"the cluster of {self.display} kept redirecting keys (MOVED/ASK) after "
            f"{MAX_REDIRECTS} slot map refreshes: is it being resharded? load again when it is "
            "done"
        )

    def write_packed(self, db: int, packed: Sequence[Packed], *, replace: bool) -> int:
        return self.write(db, PackedRestores(packed), replace=replace)  # through redis-py

    def _send(
        self,
        addr: str,
        items: list[Item],
        replace: bool,
        moved: list[Item],
        hints: list[tuple[int, str]],
        *,
        asking: bool,
    ) -> int:
        """RESTORE ``items`` on one node; returns how many were written. Keys
        answered with MOVED go to ``moved`` (their new owner to ``hints``); keys
        answered with ASK are sent on at once, with ASKING."""
        spec, client = self._specs[addr], self._client(addr)
        pipe = client.pipeline(transaction=False)
        for item in items:
            if asking:
                exec_command(pipe, "ASKING")
            queue_restore(pipe, item, replace)
        try:
            results = pipe.execute(raise_on_error=False)
        except redis.RedisError as exc:
            raise fail(spec, "RESTORE", exc) from None
        if asking:
            results = results[1::2]
        written = 0
        asked: dict[str, list[Item]] = {}
        for item, result in zip(items, results, strict=True):
            if not isinstance(result, Exception):
                written += 1
            elif isinstance(result, redis.exceptions.MovedError):
                hints.append((result.slot_id, self._known(result.host, result.port, addr)))
                moved.append(item)
            elif isinstance(result, redis.exceptions.AskError):
                if asking:  # asked twice: the migration moved on; route it afresh
                    moved.append(item)
                else:
                    asked.setdefault(self._known(result.host, result.port, addr), []).append(item)
            elif "BUSYKEY" in str(result):
                if not same_value(client, item[0], item[2], asking=asking):
                    raise busy_error(spec, item[0])
                written += 1
            else:
                raise fail(spec, f"RESTORE of key {shown_key(item[0])}", result)
        self._written[addr] += written
        for other, group in asked.items():
            written += self._send(other, group, replace, moved, hints, asking=True)
        return written

    def sync(self) -> dict[int, int]:
        return {}  # write and execute read their replies before they return

    def execute(self, db: int, key: bytes, commands: Iterable[Command], budget: int) -> None:
        if db != 0:
            raise LoadError(
                f"the backup has keys in database {db}, but a Redis Cluster has database 0 only"
            )
        addr = self._owner[key_slot(key)]
        pipelined(self._client(addr), self._specs[addr], key, commands, budget)
        self._written[addr] += 1

    def written(self) -> dict[str, int]:
        return dict(sorted(self._written.items()))

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()


__all__ = ["Cluster", "Item", "LoadError", "Server", "Target", "open_target", "select_db"]
