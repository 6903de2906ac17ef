"""``backupctl restore --to-redis``: load a backup into a running Redis, key by key.

For a Redis whose disk we cannot (or should not) touch: a managed service,
a server on another host, a server that must stay up, a Redis Cluster. How:

1. check the target first, so a refusal costs no download: a standalone
   primary (reachable, password right, empty unless ``flush``), or, for a
   cluster-enabled node, every master of its cluster (each reachable, a master
   with ``cluster_state:ok``, all 16384 slots served, each empty unless
   ``flush``); see :mod:`backupctl.redis.load`;
2. download the archives into a temporary folder and verify them exactly as
   ``--to-dir`` does (every sha256, the RDB's structure and CRC64; the RDB
   walked while it is unpacked, :mod:`backupctl.ops.restore_unpack`): one node's,
   or into a cluster every shard of a cluster backup set. All of them before
   anything is written. The reader's report says which value types the RDBs
   hold; each gets its route to the target (:func:`backupctl.core.compat.value_route`):
   its own DUMP payload, the payload relabelled with a version the target
   takes, or a rebuild with commands; a type the target cannot take at all
   is refused here, naming it, before anything is written;
3. with ``flush``: ``FLUSHALL`` on the target (every master of a cluster), only
   now: a bad archive never empties it. Then the RDB is read once more, key by
   key (:mod:`backupctl.redis.rdb_keys`; no local ``redis-server``), and each
   key is sent as ``RESTORE key expiry payload [REPLACE] ABSTTL [IDLETIME s |
   FREQ f]``, the payload being the value's own RDB bytes + RDB version +
   CRC64 (:mod:`backupctl.redis.dump_payload`), in pipelines holding at most
   ``batch_bytes``, two of them in flight into a standalone server
   (``REPLACE`` only with ``flush``). Into a cluster each key
   goes to the master owning its slot, whatever the shard count of the
   backup. A value larger than ``large_value_threshold`` is never held: it is
   rebuilt with bounded commands under a temporary name in its slot and
   renamed over the key (:mod:`backupctl.redis.rdb_commands`). A value
   between :data:`VALUE_HOLD` and the threshold is not held either (from
   the unpacked file, into a standalone server): its ``RESTORE`` payload is
   sent from where its bytes lie in the verified RDB file, chunk by chunk
   (:class:`backupctl.redis.resp_pipeline.FileSlice`); into a cluster
   (redis-py's pipeline would need it whole) it is rebuilt with commands. Function
   libraries are loaded from the RDB's function records with ``FUNCTION LOAD``
   (on every master of a cluster).

An encrypted backup (age) needs ``identities`` that can decrypt every
archive to load; that is checked first of all, before the target is even
connected to, so a missing or wrong key is one error and the target is
untouched. The archives are decrypted as they are read, in both routes.

Memory is bounded by :data:`VALUE_HOLD` and the pipeline budget, whatever
the dataset and its largest value (with ``no_tmp``, or into a cluster, a
value over the hold is rebuilt with commands; only a module value, which has
none, is held there, up to the threshold). A cluster has database 0 only: a
backup with keys in another database is refused before anything is written.
Keys whose TTL passed by the time the restore started are not loaded (as a
Redis loading that RDB would) and are counted as ``expired``; the others
keep their absolute expiry time. Writers on the target should be stopped
while loading: a key another client writes meanwhile makes the load fail
(without ``flush``) or is overwritten (with it).
"""

from __future__ import annotations

import io
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from backupctl.core.compat import ValueRoute, display, value_route
from backupctl.ops.restore_dir import pick_node
from backupctl.ops.restore_stream import rdb_again, verify_streaming
from backupctl.ops.restore_unpack import download_node
from backupctl.ops.scratch import scratch_dir
from backupctl.redis.address import ConnectionSpec
from backupctl.redis.dump_payload import dump_payload
from backupctl.redis.load import LoadError, Target, open_target
from backupctl.redis.load_node import Command
from backupctl.redis.rdb_commands import RebuildRefused, rebuild, temp_name
from backupctl.redis.rdb_keys import Function, KeyValue, LargeKey, RdbKeys, SpannedKey
from backupctl.redis.rdb_reader import RdbFormatError, RdbReport, printable_key
from backupctl.redis.rdb_source import FileAt, RdbSource
from backupctl.redis.rdb_values import value_type
from backupctl.redis.resp_pipeline import FileSlice, Packed, pack_restore
from backupctl.redis.restore_strings import pack_string_run, restore_parts
from backupctl.store.archive import ArchiveError, Progress
from backupctl.store.backends.base import Backend
from backupctl.store.catalog import BackupEntry, Manifest, NodeEntry
from backupctl.store.encryption import Identities, require_keys

#: Keys per RESTORE pipeline at most.
BATCH_KEYS = 512
#: Payload bytes a pipeline holds at most (in flight to the target).
BATCH_BYTES = 4 * 1024 * 1024
#: A value whose RDB bytes are larger is rebuilt with commands, never held whole.
LARGE_VALUE_THRESHOLD = 64 * 1024 * 1024
#: A value whose RDB bytes are larger is not held in memory: sent from the unpacked file.
VALUE_HOLD = 4 * 1024 * 1024
#: Name starts of the temp folders (unpacked archives),
#: ``<prefix><pid>-<random>``: see backupctl.ops.scratch.
SCRATCH_PREFIX = "backupctl-load-"

#: Hears (keys written, RDB bytes read, RDB bytes in all) as the load goes.
LoadProgress = Callable[[int, int, int], None]

_FIELD_TTL_TYPES = {"redis": (22, 23, 24, 25), "valkey": (22,)}


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
    functions: int = 0  # Redis Functions libraries loaded
    flushed: bool = False
    cluster: bool = False  # the target is a Redis Cluster
    rebuilt: int = 0  # keys written with commands (large, or a type the target lacks)
    relabelled: int = 0  # keys whose payload carries the target's RDB version


def restore_to_redis(
    store: Backend,
    entry: BackupEntry,
    target: ConnectionSpec,
    *,
    flush: bool = False,
    node: str | None = None,
    tmp_dir: Path | None = None,
    timeout: float = 3600.0,
    progress: Progress | None = None,
    batch_keys: int = BATCH_KEYS,
    batch_bytes: int = BATCH_BYTES,
    large_value_threshold: int = LARGE_VALUE_THRESHOLD,
    note: Callable[[str], None] | None = None,
    load_progress: LoadProgress | None = None,
    now_ms: int | None = None,
    no_tmp: bool = False,
    identities: Identities | None = None,
) -> LoadResult:
    """Load ``entry`` into the running server ``target``: one node of the
    backup, or into a Redis Cluster every node of it (``node`` picks one).
    The archives are unpacked under ``tmp_dir`` (default: the system temp
    folder) in a folder a later run removes if this one is killed; ``note``
    hears of such leftovers removed. ``now_ms`` (default: now) is the time
    against which expiries are judged. With ``no_tmp`` nothing is written to
    disk: each archive is streamed from the store twice
    (:mod:`backupctl.ops.restore_stream`). Encrypted archives are decrypted
    with ``identities``, checked before the target is connected to."""
    manifest = entry.manifest
    if manifest is None:
        raise LoadError(f"backup {entry.id} is incomplete and cannot be restored")
    # The nodes this restore may load (all of them into a cluster): keys checked first.
    require_keys(manifest, identities, None if node is None else [pick_node(manifest, node)])
    start_ms = int(time.time() * 1000) if now_ms is None else now_ms
    with open_target(target, flush=flush, timeout=timeout) as dest:
        nodes = _source_nodes(manifest, node, dest.cluster)
        args = (batch_keys, batch_bytes, large_value_threshold, start_ms, load_progress)
        if no_tmp:
            copy = _load_streaming(store, manifest, nodes, dest, flush, progress, args,
                                   identities)  # fmt: skip
        else:
            copy = _load_unpacked(store, manifest, nodes, dest, flush, tmp_dir, progress, note,
                                  args, identities)  # fmt: skip
        masters = dest.written()
    keys = sum(copy.databases.values())
    return LoadResult(
        id=manifest.id,
        target=manifest.target,
        nodes=tuple(n.name for n in nodes),
        redis=target.display,
        keys=keys,
        expired=copy.expired,
        databases={db: c for db, c in sorted(copy.databases.items()) if c},
        masters=masters,
        functions=len(copy.functions),
        flushed=flush,
        cluster=dest.cluster,
        rebuilt=copy.rebuilt,
        relabelled=copy.relabelled,
    )


_CopyArgs = tuple[int, int, int, int, "LoadProgress | None"]


def _load_unpacked(
    store: Backend, manifest: Manifest, nodes: list[NodeEntry], dest: Target, flush: bool,
    tmp_dir: Path | None, progress: Progress | None, note: Callable[[str], None] | None,
    args: _CopyArgs, identities: Identities | None,
) -> _Copy:  # fmt: skip
    """Every archive unpacked into a temp folder and verified, then loaded."""
    need = sum(f.size for n in nodes for f in n.files)
    with scratch_dir(tmp_dir, SCRATCH_PREFIX, need=need, note=note) as tmp:
        rdbs: list[tuple[NodeEntry, Path, RdbReport]] = []
        for i, n in enumerate(nodes):  # every archive verified before anything is written
            data = tmp / f"node-{i}"
            data.mkdir()
            report = download_node(store, manifest, n, data, progress=progress,
                                   identities=identities, tool_check=False)  # fmt: skip
            rdb = n.rdb_file
            assert rdb is not None and report is not None  # _source_nodes checked
            rdbs.append((n, data / rdb.path, report))
        copy = _prepare(dest, [(n, r) for n, _, r in rdbs], flush, args)
        for n, rdb_path, report in rdbs:
            with open(rdb_path, "rb", buffering=0) as fh:  # values over VALUE_HOLD: from here
                copy.node(n, fh, report, copy.routes[n.name], fd=fh.fileno())
    return copy


def _load_streaming(
    store: Backend, manifest: Manifest, nodes: list[NodeEntry], dest: Target, flush: bool,
    progress: Progress | None, args: _CopyArgs, identities: Identities | None,
) -> _Copy:  # fmt: skip
    """``--no-tmp``: every archive streamed and verified (block digests kept),
    then streamed again and loaded, block by verified block."""
    verified: list[tuple[NodeEntry, list[bytes], RdbReport]] = []
    for n in nodes:
        digests: list[bytes] = []
        verified.append((n, digests, verify_streaming(store, manifest, n, digests,
                                                      progress=progress,
                                                      identities=identities)))  # fmt: skip
    copy = _prepare(dest, [(n, r) for n, _, r in verified], flush, args)
    for n, digests, report in verified:
        with rdb_again(store, manifest, n, digests, identities) as stream:
            copy.node(n, stream, report, copy.routes[n.name])
    return copy


def _prepare(
    dest: Target, reports: list[tuple[NodeEntry, RdbReport]], flush: bool, args: _CopyArgs
) -> _Copy:
    """Routes planned and refusals made (nothing written yet), then FLUSHALL with ``flush``."""
    batch_keys, batch_bytes, threshold, start_ms, load_progress = args
    routes = plan_routes(reports, dest.server, threshold)
    if dest.cluster:
        _refuse_other_databases(reports)
    copy = _Copy(dest, flush, batch_keys, batch_bytes, threshold, start_ms, load_progress,
                 sum(r.size for _, r in reports))  # fmt: skip
    copy.routes = routes
    if load_progress is not None:
        load_progress(0, 0, copy.total_bytes)  # the load is shown as begun before it writes
    if flush:
        dest.flush()
    return copy


def plan_routes(
    rdbs: list[tuple[NodeEntry, RdbReport]], server: tuple[str, str], threshold: int
) -> dict[str, dict[int, ValueRoute]]:
    """Per node, per value type id its RDB holds: how it reaches the target
    (flavour, version). A type the target cannot take, or a value over the
    threshold that cannot be rebuilt, is refused here, before anything is
    written, naming the type."""
    target = display(*server)
    plans: dict[str, dict[int, ValueRoute]] = {}
    for n, report in rdbs:
        valkey = report.magic == "VALKEY"
        ttl_types = _FIELD_TTL_TYPES["valkey" if valkey else "redis"]
        plan: dict[int, ValueRoute] = {}
        for type_id in sorted(report.type_ids):
            vtype = value_type(type_id, valkey)
            assert vtype is not None  # the reader checked every type id
            route = value_route(report.magic, report.version, type_id, vtype.since, vtype.kind,
                                type_id in ttl_types, *server)  # fmt: skip
            if route.how == "refuse":
                source = display(n.flavour or "redis", n.version)
                raise LoadError(
                    f"refused, nothing was written: node {n.name} of the backup ({source}) holds "
                    f"{vtype.kind} values ({vtype.encoding}, RDB type {type_id}) that {target} "
                    f"cannot take: {route.reason}"
                )
            plan[type_id] = route
        for big in report.largest:
            if big.size > threshold and big.type == "module":
                raise LoadError(
                    f"refused, nothing was written: node {n.name} of the backup holds the "
                    f"module key '{big.key}' of {big.size} bytes, over "
                    f"--large-value-threshold ({threshold} bytes), and a module value is not "
                    "rebuilt with commands: raise --large-value-threshold above its size"
                )
        plans[n.name] = plan
    return plans


def _refuse_other_databases(rdbs: list[tuple[NodeEntry, RdbReport]]) -> None:
    for n, report in rdbs:
        other = sorted(db for db, count in report.keys.items() if db != 0 and count)
        if other:
            raise LoadError(
                f"node {n.name} of the backup has keys in database "
                f"{', '.join(map(str, other))} ({sum(report.keys[db] for db in other)} keys), "
                "but a Redis Cluster has database 0 only (nothing was written): load it into a "
                "standalone Redis, or move those keys to database 0 first"
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
    """Copies node after node into ``dest``, key by key from each RDB."""

    def __init__(
        self,
        dest: Target,
        flush: bool,
        batch_keys: int,
        batch_bytes: int,
        threshold: int,
        now_ms: int,
        progress: LoadProgress | None,
        total_bytes: int,
    ) -> None:
        self.dest = dest
        self.replace = flush
        self.batch_keys = max(1, batch_keys)
        self.batch_bytes = max(1, batch_bytes)
        self.threshold = threshold
        self.now_ms = now_ms
        self.progress = progress
        self.total_bytes = total_bytes
        self.done_bytes = 0  # RDB bytes of the nodes already loaded
        self.databases: dict[int, int] = {}  # db -> keys written
        self.functions: dict[str, bytes] = {}  # library name -> code, as loaded
        self.expired = 0
        self.rebuilt = 0
        self.relabelled = 0
        self.nonce = secrets.token_hex(6).encode()
        self.routes: dict[str, dict[int, ValueRoute]] = {}  # node -> type id -> route
        self.last_key: bytes | None = None  # the last key written
        self._pending: list[Packed] = []  # RESTORE commands not sent yet
        self._pending_db = 0
        self._pending_bytes = 0
        self.fd: int | None = None  # the RDB file being loaded, when it is one
        self._walk: RdbKeys | None = None  # the node's walk, while it runs
        self._hold = VALUE_HOLD
        self._string_version = 0  # the RDB version string payloads carry

    def node(
        self,
        node: NodeEntry,
        fh: BinaryIO,
        report: RdbReport,
        routes: dict[int, ValueRoute],
        fd: int | None = None,
    ) -> None:
        """``fh``'s keys loaded; ``fd`` (``fh`` is that verified file) lets a
        value over :data:`VALUE_HOLD` be sent from the file, never held.
        Without it (``--no-tmp``) such a value is rebuilt with commands, unless
        the RDB has module values (no command form: held up to the threshold)."""
        threshold = self.threshold
        valkey = report.magic == "VALKEY"
        if fd is None and all(_kind(t, valkey) != "module" for t in report.type_ids):
            threshold = min(threshold, VALUE_HOLD)
        walk = RdbKeys(fh, self.now_ms, threshold, report.size, fd=fd, hold=VALUE_HOLD)
        string = routes.get(0)
        if string is not None and string.how != "rebuild":  # plain strings: packed in bulk
            walk.strings = self._strings
            self._string_version = string.version
            self._hold = min(threshold, VALUE_HOLD)
        self._walk = walk
        self.fd = fd
        name = node.rdb_file.path if node.rdb_file is not None else "the RDB"
        try:
            for count, rec in enumerate(walk.records(), 1):
                self._record(rec, walk, routes)
                if self.progress is not None and count % 1024 == 0:
                    self._tell(walk.offset)
            self._send()
            self._sync()
        except (RdbFormatError, ArchiveError) as exc:  # verified a moment ago: it changed
            self._sync()
            raise LoadError(f"{name} of node {node.name}: {exc}; stopped, "
                            f"{self._so_far()}") from None  # fmt: skip
        except RebuildRefused as exc:
            self._sync()
            raise LoadError(f"node {node.name}: {exc} ({self._so_far()})") from None
        self.expired += sum(walk.expired.values())
        self.done_bytes += report.size
        self._tell(0)

    def _tell(self, at: int) -> None:
        if self.progress is not None:
            keys = sum(self.databases.values()) + len(self._pending)
            self.progress(keys, self.done_bytes + at, self.total_bytes)

    def _record(self, rec: KeyValue | SpannedKey | LargeKey | Function, walk: RdbKeys,
                routes: dict[int, ValueRoute]) -> None:  # fmt: skip
        if isinstance(rec, Function):
            self._function(rec)
        elif isinstance(rec, LargeKey):
            self._send()
            self._rebuild(rec.db, rec.key, rec.source, rec.type_id, rec.kind, rec.expire_ms,
                          walk.magic == "VALKEY")  # fmt: skip
        else:
            route = routes[rec.type_id]
            spanned = isinstance(rec, SpannedKey)  # over the hold: not held, into a cluster either
            if route.how == "rebuild" or (spanned and self.dest.cluster and rec.kind != "module"):
                self._send()
                source = self._value_source(rec)
                self._rebuild(rec.db, rec.key, source, rec.type_id, rec.kind, rec.expire_ms,
                              walk.magic == "VALKEY")  # fmt: skip
                return
            if route.version != walk.version:
                self.relabelled += 1
            if rec.db != self._pending_db:
                self._send()
                self._pending_db = rec.db
            expire = rec.expire_ms or 0
            if isinstance(rec, SpannedKey):
                assert self.fd is not None  # spanned only with fd
                part = FileSlice(self.fd, rec.offset, rec.length, bytes((rec.type_id,)),
                                 route.version)  # fmt: skip
                self._pending.append(pack_restore(rec.key, expire, part, self.replace, rec.idle,
                                                  rec.freq))  # fmt: skip
                self._pending_bytes += part.size + len(rec.key)
            else:
                command = pack_restore(rec.key, expire, dump_payload(rec.raw, route.version),
                                       self.replace, rec.idle, rec.freq)  # fmt: skip
                self._pending.append(command)
                self._pending_bytes += len(command)
            if len(self._pending) >= self.batch_keys or self._pending_bytes >= self.batch_bytes:
                self._send()

    def _strings(self, buf: bytes, pos: int, db: int) -> tuple[int, int]:
        """The walk's ``strings`` hook: the plain string records at ``buf[pos]``
        packed as RESTOREs (:func:`pack_string_run`) into the pending batch,
        sent as it fills; (where it stopped, how many)."""
        if db != self._pending_db:
            self._send()
            self._pending_db = db
        walk = self._walk
        assert walk is not None
        total = 0
        for _ in range(len(buf)):  # every turn packs a record or more, or returns
            run = pack_string_run(buf, pos, now_ms=self.now_ms, version=self._string_version,
                                  replace=self.replace, hold=self._hold,
                                  room=self.batch_bytes - self._pending_bytes,
                                  most=self.batch_keys - len(self._pending),
                                  out=self._pending)  # fmt: skip
            total += run.records
            pos = run.end
            self._pending_bytes += run.size
            if len(self._pending) < self.batch_keys and self._pending_bytes < self.batch_bytes:
                break  # stopped at a record it does not take
            self._send()
            self._tell(walk.offset)
        if self._string_version != walk.version:
            self.relabelled += total
        return pos, total

    def _value_source(self, rec: KeyValue | SpannedKey) -> RdbSource:
        """A source at the first byte of ``rec``'s value (after the type byte)."""
        if isinstance(rec, SpannedKey):
            assert self.fd is not None  # spanned only with fd
            stream = FileAt(self.fd, rec.offset)
            return RdbSource(stream, rec.offset + rec.length, base=rec.offset)  # type: ignore[arg-type]
        return RdbSource(io.BytesIO(rec.raw[1:]), len(rec.raw) - 1)

    def _sync(self) -> None:
        """The replies of the batches still in flight read: every key sent is
        written (or its error raised) and counted."""
        for db, written in self.dest.sync().items():
            self.databases[db] = self.databases.get(db, 0) + written

    def _so_far(self) -> str:
        keys = sum(self.databases.values())
        last = f", the last {printable_key(self.last_key)!r}" if self.last_key is not None else ""
        return f"keys written so far: {keys}{last}"

    def _send(self) -> None:
        if not self._pending:
            return
        db = self._pending_db
        written = self.dest.write_packed(db, self._pending, replace=self.replace)
        self.databases[db] = self.databases.get(db, 0) + written
        self.last_key = restore_parts(self._pending[-1]).key
        self._pending = []
        self._pending_bytes = 0

    def _rebuild(self, db: int, key: bytes, source: RdbSource, type_id: int, kind: str,
                 expire_ms: int | None, valkey: bool) -> None:  # fmt: skip
        tmp = temp_name(key, self.nonce)
        commands: Iterable[Command] = rebuild(
            source, type_id, kind, key, tmp, valkey=valkey, expire_ms=expire_ms,
            now_ms=self.now_ms, replace=self.replace,
        )  # fmt: skip
        self.dest.execute(db, key, _first_checked(commands), self.batch_bytes)
        self.databases[db] = self.databases.get(db, 0) + 1
        self.last_key = key
        self.rebuilt += 1

    def _function(self, fn: Function) -> None:
        """A library of the RDB: FUNCTION LOAD (REPLACE with flush); a later
        node's copy of a library already loaded (a cluster's shards all hold
        the same) is skipped."""
        if fn.code is None:
            raise LoadError(
                f"function library {fn.name!r} is in the format of Redis 7.0's release "
                "candidates, which no released server loads; load it by hand"
            )
        if self.functions.get(fn.name) == fn.code:
            return
        replace = self.replace or fn.name in self.functions
        self.dest.load_function(fn.code, replace=replace)
        self.functions[fn.name] = fn.code


def _kind(type_id: int, valkey: bool) -> str:
    vtype = value_type(type_id, valkey)
    return vtype.kind if vtype is not None else "?"


def _first_checked(commands: Iterable[Command]) -> Iterator[Command]:
    """The commands, with a refusal (raised by the generator before its first
    command) surfacing before anything is sent."""
    it = iter(commands)
    first = next(it, None)
    if first is None:
        return iter(())
    return _chain_first(first, it)


def _chain_first(first: Command, rest: Iterator[Command]) -> Iterator[Command]:
    yield first
    yield from rest


__all__ = ["LoadError", "LoadResult", "plan_routes", "restore_to_redis"]
