"""Archive layout and manifest format: the contract with users' buckets.

::

    <store root>/<target>/<backup-id>/
        <node>.tar.zst          one archive per Redis node backed up
        shards/                 only in a cluster backup written by one process per shard
                                (see backupctl.store.backup_set): each shard's record, and who
                                writes the set
        manifest.json           written LAST: its presence means complete

``<target>`` is a ``/``-separated path (the controller uses
``<namespace>/<name>``); ``<backup-id>`` is sortable UTC time,
``backup-YYYYMMDD-HHMMSS``. Every key below ``<backup-id>/`` belongs to that
backup: listing, pruning and deleting treat the folder as a whole. This
module decides names and parses listings; it does no I/O of its own beyond
calling the :class:`Backend` it is given.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from backupctl.core.timefmt import parse_time
from backupctl.store import manifest_checks as checks
from backupctl.store.backends.base import (
    AccessDenied,
    Backend,
    ObjectInfo,
    PendingUpload,
    StorageError,
    put_bytes,
    read_at_most,
)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "backupctl.dev/manifest/v1"
ID_PATTERN = re.compile(r"^backup-(\d{8})-(\d{6})(?:-(\d+))?$")
TARGET_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
ARCHIVE_SUFFIXES = (".tar.zst", ".tar.gz", ".tgz", ".tar", ".zst", ".gz")


class CatalogError(Exception):
    """A backup reference that does not resolve, or a manifest that is unreadable."""


class BackupNotFound(CatalogError):
    """No backup (or no complete one) matches the id or 'latest' asked for."""


class InvalidReference(CatalogError):
    """A backup id or target that is not well formed (the user's typo)."""


class ForeignManifest(CatalogError):
    """A manifest not this folder's own: it names another folder, or fails its signature."""


#: Checks a manifest's bytes before parsing, raising ForeignManifest (signing.Trust).
ManifestCheck = Callable[[Backend, str, str, bytes], None]


@dataclass(frozen=True)
class FileEntry:
    path: str  # path inside the archive, e.g. "dump.rdb", "appendonlydir/appendonly.aof.1.incr.aof"
    size: int
    sha256: str
    kind: str  # "rdb" | "aof" | "aof-manifest"
    #: > 0: stored as that many tar members ``<path>.part-000001``... (a file
    #: streamed without a known size, see archive.py); 0: one member ``<path>``.
    parts: int = 0


@dataclass(frozen=True)
class ArchiveEntry:
    key: str  # object name relative to the backup folder, e.g. "redis-0.tar.zst"
    size: int
    sha256: str
    compression: str  # "zstd" | "gzip" | "none"
    #: fingerprints of the age recipients the stored object is encrypted to
    #: (backupctl.store.encryption.fingerprint); empty: not encrypted. The
    #: manifest holds ``"encryption": {"format": "age", "recipients": [...]}``.
    encrypted_to: list[str] = field(default_factory=list)

    @property
    def encrypted(self) -> bool:
        return bool(self.encrypted_to)


@dataclass(frozen=True)
class NodeEntry:
    name: str  # pod name or host-port
    role: str  # "master" | "replica"
    redis_version: str
    rdb_version: int | None
    snapshot_time: str  # RFC 3339 UTC
    keys: int
    archive: ArchiveEntry
    files: list[FileEntry]
    node_id: str | None = None  # cluster node id
    slots: list[list[int]] = field(default_factory=list)  # [[start, end], ...] inclusive
    aof_enabled: bool = False
    #: "redis" | "valkey" (manifests before these fields: Redis)
    flavour: str = "redis"
    #: the server's own version (Valkey: valkey_version); "" = ``redis_version``
    server_version: str = ""
    #: the RDB header's magic, "REDIS" or "VALKEY"; None when not recorded
    rdb_magic: str | None = None

    @property
    def version(self) -> str:
        """The server's own version (``valkey_version`` for Valkey; for Redis
        ``redis_version``, the field restores have always read)."""
        return (self.flavour != "redis" and self.server_version) or self.redis_version

    @property
    def rdb_file(self) -> FileEntry | None:
        return next((f for f in self.files if f.kind == "rdb"), None)


@dataclass(frozen=True)
class Manifest:
    id: str
    target: str
    created: str  # RFC 3339 UTC, the time list and retention use
    tool_version: str
    redis_version: str
    method: str
    compression: str
    nodes: list[NodeEntry]
    mode: str = "standalone"  # "standalone" | "cluster"
    format: str = MANIFEST_FORMAT
    flavour: str = "redis"  # "redis" | "valkey"
    server_version: str = ""  # the server's own version; "" = redis_version

    @property
    def version(self) -> str:
        """The server's own version (``valkey_version`` for Valkey, else ``redis_version``)."""
        return (self.flavour != "redis" and self.server_version) or self.redis_version

    @property
    def keys(self) -> int:
        return sum(n.keys for n in self.nodes)

    @property
    def size(self) -> int:
        return sum(n.archive.size for n in self.nodes)

    @property
    def created_at(self) -> datetime:
        t = parse_time(self.created)
        if t is None:
            raise CatalogError(
                f"backup {self.id}: 'created' is not an RFC 3339 time: {self.created!r}"
            )
        return t

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        return {
            "format": d.pop("format"),
            "id": d.pop("id"),
            "target": d.pop("target"),
            "created": d.pop("created"),
            "tool": {"name": "backupctl", "version": d.pop("tool_version")},
            "redis": {
                "version": d.pop("redis_version"),
                "mode": d.pop("mode"),
                "flavour": d.pop("flavour"),
                "serverVersion": d.pop("server_version") or self.redis_version,
            },
            "method": d.pop("method"),
            "compression": d.pop("compression"),
            "keys": self.keys,
            "size": self.size,
            "nodes": [_node_to_json(n) for n in d.pop("nodes")],
        }

    def dumps(self) -> bytes:
        return (json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n").encode()

    @classmethod
    def from_json(cls, d: Any) -> Manifest:
        """Parse and bound-check a manifest (see :mod:`backupctl.store.manifest_checks`);
        :class:`CatalogError` with one line when anything is wrong."""
        try:
            d = checks.mapping(d, "the manifest")
            if d.get("format") != MANIFEST_FORMAT:
                raise CatalogError(f"unsupported manifest format {checks.clip(d.get('format'))}")
            tool = checks.mapping(checks.field(d, "tool", "the manifest"), "tool")
            redis = checks.mapping(checks.field(d, "redis", "the manifest"), "redis")
            redis_version = checks.text(checks.field(redis, "version", "redis"), "redis.version")
            created = checks.text(checks.field(d, "created", "the manifest"), "created")
            if parse_time(created) is None:
                raise CatalogError(f"'created' is not an RFC 3339 time: {checks.clip(created)}")
            nodes = checks.items(
                checks.field(d, "nodes", "the manifest"), "nodes", checks.MAX_NODES
            )
            return cls(
                id=checks.text(checks.field(d, "id", "the manifest"), "id"),
                target=checks.text(checks.field(d, "target", "the manifest"), "target"),
                created=created,
                tool_version=checks.text(checks.field(tool, "version", "tool"), "tool.version"),
                redis_version=redis_version,
                mode=checks.text(redis.get("mode", "standalone"), "redis.mode"),
                flavour=checks.text(redis.get("flavour", "redis"), "redis.flavour"),
                server_version=own_version(
                    checks.optional_text(redis.get("serverVersion"), "redis.serverVersion"),
                    redis_version,
                ),
                method=checks.text(checks.field(d, "method", "the manifest"), "method"),
                compression=checks.text(
                    checks.field(d, "compression", "the manifest"), "compression"
                ),
                nodes=[_node_from_json(n, f"nodes[{i}]") for i, n in enumerate(nodes)],
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CatalogError(f"malformed manifest: {checks.reason(e)}") from e

    @classmethod
    def loads(cls, raw: bytes) -> Manifest:
        if len(raw) > checks.MAX_MANIFEST_BYTES:
            raise CatalogError(
                f"manifest is larger than {checks.MAX_MANIFEST_BYTES} bytes: not a manifest "
                "backupctl wrote"
            )
        try:
            return cls.from_json(json.loads(raw))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CatalogError(f"manifest is not valid JSON: {e}") from e
        except RecursionError as e:
            raise CatalogError("manifest is not valid JSON: nested too deeply") from e


def node_to_json(node: NodeEntry) -> dict[str, Any]:
    """One ``nodes[]`` entry of the manifest."""
    return _node_to_json(asdict(node))


def node_from_json(d: Any) -> NodeEntry:
    """The inverse of :func:`node_to_json`; :class:`CatalogError` when malformed."""
    try:
        return _node_from_json(d)
    except (KeyError, TypeError, ValueError) as e:
        raise CatalogError(f"malformed node entry: {checks.reason(e)}") from e


def _node_to_json(n: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": n["name"],
        "role": n["role"],
        "nodeId": n["node_id"],
        "slots": n["slots"],
        "flavour": n["flavour"],
        "serverVersion": n["server_version"] or n["redis_version"],
        "redisVersion": n["redis_version"],
        "rdbMagic": n["rdb_magic"],
        "rdbVersion": n["rdb_version"],
        "snapshotTime": n["snapshot_time"],
        "aofEnabled": n["aof_enabled"],
        "keys": n["keys"],
        "archive": _archive_to_json(n["archive"]),
        "files": [_file_to_json(f) for f in n["files"]],
    }


def _archive_to_json(a: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in a.items() if k != "encrypted_to"}
    if a.get("encrypted_to"):
        out["encryption"] = {"format": "age", "recipients": list(a["encrypted_to"])}
    return out


def _file_to_json(f: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in f.items() if k != "parts" or v}


def own_version(server_version: str | None, redis_version: str) -> str:
    """The server's own version as the dataclasses hold it: "" when it is
    ``redis_version`` (Redis), so a manifest reads back equal to what wrote it."""
    return "" if not server_version or server_version == redis_version else str(server_version)


def _node_from_json(value: Any, what: str = "node") -> NodeEntry:
    n = checks.mapping(value, what)
    redis_version = checks.text(checks.field(n, "redisVersion", what), f"{what}.redisVersion")
    rdb_version = n.get("rdbVersion")
    files = checks.items(checks.field(n, "files", what), f"{what}.files", checks.MAX_FILES)
    return NodeEntry(
        name=checks.text(checks.field(n, "name", what), f"{what}.name"),
        role=checks.text(checks.field(n, "role", what), f"{what}.role"),
        node_id=checks.optional_text(n.get("nodeId"), f"{what}.nodeId"),
        slots=checks.slot_ranges(n.get("slots", []), f"{what}.slots"),
        redis_version=redis_version,
        rdb_version=None
        if rdb_version is None
        else checks.whole(rdb_version, f"{what}.rdbVersion", 1 << 16),
        flavour=checks.text(n.get("flavour", "redis"), f"{what}.flavour"),
        server_version=own_version(
            checks.optional_text(n.get("serverVersion"), f"{what}.serverVersion"), redis_version
        ),
        rdb_magic=checks.optional_text(n.get("rdbMagic"), f"{what}.rdbMagic"),
        snapshot_time=checks.text(checks.field(n, "snapshotTime", what), f"{what}.snapshotTime"),
        aof_enabled=bool(n.get("aofEnabled", False)),
        keys=checks.whole(checks.field(n, "keys", what), f"{what}.keys", checks.MAX_KEYS),
        archive=ArchiveEntry(
            **checks.archive_fields(checks.field(n, "archive", what), f"{what}.archive")
        ),
        files=[
            FileEntry(**checks.file_fields(f, f"{what}.files[{i}]")) for i, f in enumerate(files)
        ],
    )


# --- names -----------------------------------------------------------------


def new_backup_id(now: datetime, taken: Iterable[str] = ()) -> str:
    """``backup-YYYYMMDD-HHMMSS`` for ``now`` (UTC); a ``-N`` suffix keeps it
    unique (and still sortable) when that second is already ``taken``."""
    base = "backup-" + now.astimezone(UTC).strftime("%Y%m%d-%H%M%S")
    used = set(taken)
    if base not in used:
        return base
    n = 2
    while f"{base}-{n}" in used:
        n += 1
    return f"{base}-{n}"


def is_backup_id(name: str) -> bool:
    """Whether ``name`` is a backup id: ``backup-YYYYMMDD-HHMMSS[-N]`` of a real time
    (a folder named ``backup-20241399-999999`` is not one, and is not listed)."""
    m = ID_PATTERN.fullmatch(name)
    if m is None:
        return False
    try:
        datetime.strptime(m.group(1) + m.group(2), "%Y%m%d%H%M%S")
    except ValueError:
        return False
    return True


def validate_id(backup_id: str) -> str:
    """``backup_id`` if it is a backup id (``backup-YYYYMMDD-HHMMSS[-N]``, a real time)."""
    if not is_backup_id(backup_id):
        raise InvalidReference(
            f"{backup_id!r} is not a backup id: use backup-YYYYMMDD-HHMMSS (UTC), "
            "optionally with a -N suffix"
        )
    return backup_id


def id_time(backup_id: str) -> datetime:
    m = ID_PATTERN.fullmatch(backup_id)
    if not m or not is_backup_id(backup_id):
        raise InvalidReference(
            f"{backup_id!r} is not a backup id (expected backup-YYYYMMDD-HHMMSS)"
        )
    return datetime.strptime(m.group(1) + m.group(2), "%Y%m%d%H%M%S").replace(tzinfo=UTC)


def normalize_ref(ref: str) -> str:
    """Accept ``backup-20240101-120000``, ``backup-20240101-120000.tar.gz``
    (the seed examples' ``storage.s3.key``), or a key path ending in either;
    return the bare id, or ``latest``."""
    ref = ref.strip().rstrip("/")
    if ref == "latest":
        return ref
    name = ref.rsplit("/", 1)[-1]
    for suffix in ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    if not ID_PATTERN.match(name):
        raise InvalidReference(
            f"{ref!r} is not a backup id: use 'latest' or an id like backup-20240101-120000 "
            "(see 'backupctl list')"
        )
    return name


def validate_target(target: str) -> str:
    if not TARGET_PATTERN.match(target) or any(ID_PATTERN.match(p) for p in target.split("/")):
        raise InvalidReference(
            f"target {target!r} is not valid: use letters, digits, '.', '_', '-' "
            "and '/' between parts, e.g. 'redis/redis-cluster'"
        )
    return target


def backup_dir(target: str, backup_id: str) -> str:
    return f"{target}/{backup_id}/"


def manifest_key(target: str, backup_id: str) -> str:
    return backup_dir(target, backup_id) + MANIFEST_NAME


def archive_name(node: str, compression: str, *, encrypted: bool = False) -> str:
    ext = {"zstd": ".tar.zst", "gzip": ".tar.gz", "none": ".tar"}[compression]
    return node + ext + (".age" if encrypted else "")


# --- listing -----------------------------------------------------------------


@dataclass
class BackupEntry:
    """One backup folder in a store, complete (has a manifest) or not."""

    target: str
    id: str
    objects: list[ObjectInfo] = field(default_factory=list)
    #: unfinished uploads into this folder (a run in progress, or killed)
    pending: list[PendingUpload] = field(default_factory=list)
    manifest: Manifest | None = None
    manifest_error: str | None = None
    #: the folder holds a manifest that cannot be used (unreadable, malformed,
    #: or naming another folder); ``manifest_error`` says why
    invalid: bool = False
    #: that manifest is readable but names another folder (``invalid`` too)
    foreign: bool = False

    @property
    def complete(self) -> bool:
        return self.manifest is not None

    @property
    def created(self) -> datetime:
        if self.manifest is not None:
            return self.manifest.created_at
        return id_time(self.id)

    @property
    def stored_bytes(self) -> int:
        return sum(o.size for o in self.objects)

    @property
    def last_modified(self) -> datetime | None:
        return max((o.modified for o in self.objects), default=None)

    @property
    def prefix(self) -> str:
        return backup_dir(self.target, self.id)


def split_key(key: str) -> tuple[str, str] | None:
    """``(target, backup_id)`` of a key inside a backup folder, else None."""
    parts = key.split("/")
    for i in range(1, len(parts) - 1):
        if is_backup_id(parts[i]):
            return "/".join(parts[:i]), parts[i]
    return None


def group_listing(
    objects: Iterable[ObjectInfo], pending: Iterable[PendingUpload] = ()
) -> list[BackupEntry]:
    """Group a flat listing (and unfinished uploads) into backup folders
    (pure). Keys that are not inside a ``<target>/<backup-id>/`` folder are
    ignored."""
    entries: dict[tuple[str, str], BackupEntry] = {}
    for obj in objects:
        where = split_key(obj.key)
        if where is not None:
            entries.setdefault(where, BackupEntry(*where)).objects.append(obj)
    for upload in pending:
        where = split_key(upload.key)
        if where is not None:
            entries.setdefault(where, BackupEntry(*where)).pending.append(upload)
    return sorted(entries.values(), key=lambda e: (e.target, e.id))


def scan(
    backend: Backend,
    target: str | None = None,
    *,
    load_manifests: bool = True,
    include_pending: bool = False,
    trust: ManifestCheck | None = None,
) -> list[BackupEntry]:
    """All backup folders under ``target`` (or the whole store), newest first.
    Folders with a manifest are read so ``complete`` and ``created`` are
    right; a manifest that cannot be parsed, or that names another folder
    than the one it sits in, makes the folder ``invalid`` (not complete, with
    the reason in ``manifest_error``). ``include_pending`` also reports
    folders that so far hold only an unfinished upload (a backup running now,
    or killed mid-upload); ``trust`` checks signatures. Nothing is written."""
    prefix = backup_dir(target, "").rstrip("/") + "/" if target else ""
    pending = _pending(backend, prefix) if include_pending else []
    entries = group_listing(backend.list(prefix), pending)
    if target:
        entries = [e for e in entries if e.target == target]
    if load_manifests:
        for e in entries:
            if any(o.key.endswith("/" + MANIFEST_NAME) for o in e.objects):
                try:
                    e.manifest = read_manifest(backend, e.target, e.id, trust)
                except (CatalogError, StorageError) as err:
                    e.manifest_error, e.invalid = str(err), True
                    e.foreign = isinstance(err, ForeignManifest)
    entries.sort(key=lambda e: (e.created, e.id), reverse=True)
    return entries


def _pending(backend: Backend, prefix: str) -> list[PendingUpload]:
    """Unfinished uploads, or none when the credentials may not list them
    (read-only credentials still list the backups)."""
    try:
        return list(backend.pending_uploads(prefix))
    except AccessDenied:
        return []


def read_manifest(
    backend: Backend, target: str, backup_id: str, trust: ManifestCheck | None = None
) -> Manifest:
    """The manifest of folder ``<target>/<backup_id>/``, read with a size cap,
    parsed with bounds, and bound to its folder: it must name that target and
    id, or it is a manifest copied from elsewhere and :class:`CatalogError`
    says so (it would restore another target's data)."""
    raw = read_at_most(backend, manifest_key(target, backup_id), checks.MAX_MANIFEST_BYTES)
    if trust is not None:
        trust(backend, target, backup_id, raw)  # before parsing: the bytes signed
    manifest = Manifest.loads(raw)
    check_folder(manifest, target, backup_id)
    return manifest


def check_folder(manifest: Manifest, target: str, backup_id: str) -> None:
    """:class:`CatalogError` unless ``manifest`` names ``<target>/<backup_id>/``."""
    if (manifest.target, manifest.id) != (target, backup_id):
        raise ForeignManifest(
            f"the manifest names {checks.clip(manifest.target, quote=False)}/"
            f"{checks.clip(manifest.id, quote=False)} but sits in "
            f"{target}/{backup_id}/: it was copied or moved from another folder and is not used "
            "(move it back, or delete the folder)"
        )


def find(
    backend: Backend, ref: str, target: str | None = None, trust: ManifestCheck | None = None
) -> BackupEntry:
    """Resolve ``ref`` (an id, an archive name, or ``latest``) to one complete
    backup; clear :class:`CatalogError` otherwise."""
    bid = normalize_ref(ref)
    entries = scan(backend, target, trust=trust)
    if bid == "latest":
        complete = [e for e in entries if e.complete]
        targets = {e.target for e in complete}
        if len(targets) > 1:
            raise CatalogError(
                f"'latest' is ambiguous: the store holds backups of {len(targets)} targets "
                f"({', '.join(sorted(targets))}); pass --target"
            )
        if not complete:
            where = f" of target {target!r}" if target else ""
            bad = next((e for e in entries if e.invalid), None)
            why = f" ({bad.id} is INVALID: {bad.manifest_error})" if bad else ""
            raise BackupNotFound(f"no complete backup{where} in {backend.url}{why}")
        return complete[0]
    matches = [e for e in entries if e.id == bid]
    if not matches:
        raise BackupNotFound(f"backup {bid!r} not found in {backend.url} (see 'backupctl list')")
    if len(matches) > 1:
        raise CatalogError(f"backup id {bid!r} exists for several targets; pass --target")
    entry = matches[0]
    if not entry.complete:
        if entry.invalid:
            raise CatalogError(f"backup {bid!r} cannot be used: {entry.manifest_error}")
        why = "it has no manifest (interrupted or still running)"
        raise CatalogError(f"backup {bid!r} is incomplete: {why}; it cannot be restored")
    return entry


def write_manifest(backend: Backend, manifest: Manifest) -> None:
    """Write the manifest: the last step of a backup, which makes it complete."""
    put_bytes(backend, manifest_key(manifest.target, manifest.id), manifest.dumps())


def delete_backup(backend: Backend, entry: BackupEntry) -> None:
    """Delete manifest first (the backup stops being listed as good at once),
    then the archives; an interruption leaves an incomplete folder that a
    later prune sweeps."""
    mkey = manifest_key(entry.target, entry.id)
    backend.delete(mkey)
    for obj in entry.objects:
        if obj.key != mkey:
            backend.delete(obj.key)
