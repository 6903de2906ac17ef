"""One cluster backup written by several processes, one per shard.

The Kubernetes controller backs up a Redis Cluster with one Job per shard
(``backupctl run --cluster --shard I/N --id ID --owner NAME``); all N write
into the same backup folder, and none of them knows when the others finish.
Each shard run, in this order (:func:`claim`, :func:`commit`):

1. refuses an id whose folder already holds a manifest (unless its own
   shard is in it: a retried Job whose set is already complete is done);
2. writes the claim ``shards/owner.<owner>`` and lists ``shards/``: a claim
   of another owner means two runs picked the same id (two RedisBackups of
   one target into one store at one time), and the run stops before it
   uploads anything. Every run writes its claim before it lists, so of two
   racing runs at least the later lister sees the other: an archive is never
   overwritten by another run's;
3. backs up its shard into ``<node>.tar.zst`` (done by :mod:`backupctl.ops.backup`),
   then writes its record ``shards/<I>.json``: the shard's manifest entry
   (node, node id, slot ranges, snapshot time, archive, files, sha256s). A
   record is written only after its archive is committed, so a retried run
   that finds its own record skips the backup and only finishes the set;
4. lists the records. When all N are there, :func:`assemble` checks that
   they fit together (the same run; every one of the 16384 slots in exactly
   one shard) and the run writes ``manifest.json``. The manifest is built
   from the records alone, so two runs finishing together write the same
   bytes; the last run to write its record is the last to list, so it sees
   all N (S3, Azure Blob, GCS and local directories list what was written
   before). Records that do not fit (a resharding or a failover moved slots
   between two shards' snapshots) fail the run with a clear message and no
   manifest is written: the set stays incomplete, never listed as
   restorable, and is swept by ``prune`` like any incomplete backup.

:func:`assemble` is pure; the rest is a few small reads and writes through
the :class:`~backupctl.store.backends.base.Backend` given.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from backupctl.core.slots import CLUSTER_SLOTS
from backupctl.core.timefmt import parse_time
from backupctl.store import catalog
from backupctl.store.backends.base import Backend, NotFound, put_bytes, read_at_most
from backupctl.store.catalog import CatalogError, Manifest, NodeEntry
from backupctl.store.manifest_checks import MAX_MANIFEST_BYTES
from backupctl.store.signing import Signer, write_signed_manifest

RECORD_FORMAT = "backupctl.dev/shard-record/v1"
SHARDS_DIR = "shards"
CLAIM_PREFIX = "owner."
#: Who writes a set when the command line does not say (a person running the shard commands).
DEFAULT_OWNER = "cli"
_OWNER = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
_RECORD = re.compile(r"^(\d+)\.json$")


class ShardSetError(Exception):
    """The shard runs of one backup do not make a consistent set; ``str()`` says why."""


@dataclass(frozen=True)
class ShardRecord:
    """What one shard run stored: ``node`` is its manifest entry."""

    id: str
    target: str
    shard: int  # 1-based, in the order of the shards' first slots
    shards: int
    owner: str
    tool_version: str
    method: str
    compression: str
    node: NodeEntry

    def to_json(self) -> dict[str, Any]:
        return {
            "format": RECORD_FORMAT,
            "id": self.id,
            "target": self.target,
            "shard": self.shard,
            "shards": self.shards,
            "owner": self.owner,
            "tool": {"name": "backupctl", "version": self.tool_version},
            "method": self.method,
            "compression": self.compression,
            "node": catalog.node_to_json(self.node),
        }

    def dumps(self) -> bytes:
        return (json.dumps(self.to_json(), indent=2) + "\n").encode()

    @classmethod
    def loads(cls, raw: bytes, where: str = "shard record") -> ShardRecord:
        try:
            d = json.loads(raw)
            if d.get("format") != RECORD_FORMAT:
                raise CatalogError(f"unsupported format {str(d.get('format'))[:80]!r}")
            record = cls(
                id=str(d["id"]),
                target=str(d["target"]),
                shard=int(d["shard"]),
                shards=int(d["shards"]),
                owner=str(d["owner"]),
                tool_version=str(d["tool"]["version"]),
                method=str(d["method"]),
                compression=str(d["compression"]),
                node=catalog.node_from_json(d["node"]),
            )
            if not 1 <= record.shard <= record.shards <= CLUSTER_SLOTS:
                raise ShardSetError(
                    f"{where} is unreadable: shard {record.shard} of {record.shards} "
                    f"(a set has 1 to {CLUSTER_SLOTS} shards)"
                )
            return record
        except (ValueError, KeyError, TypeError, AttributeError, CatalogError) as e:
            raise ShardSetError(f"{where} is unreadable: {e}") from e
        except RecursionError as e:
            raise ShardSetError(f"{where} is unreadable: nested too deeply") from e


@dataclass(frozen=True)
class ShardOutcome:
    """The result of one shard run: its record, how many records the set has
    so far, and the manifest when this run completed the set (or found it
    complete)."""

    record: ShardRecord
    recorded: int
    manifest: Manifest | None = None
    reused: bool = False  # the record was already there (a retried run)

    @property
    def complete(self) -> bool:
        return self.manifest is not None


# --- names ------------------------------------------------------------------------


def validate_owner(owner: str) -> str:
    if not _OWNER.match(owner):
        raise ShardSetError(
            f"owner {owner!r} is not valid: use lower-case letters, digits, '.' and '-' "
            "(a Kubernetes object name)"
        )
    return owner


def shards_prefix(target: str, backup_id: str) -> str:
    return catalog.backup_dir(target, backup_id) + SHARDS_DIR + "/"


def record_key(target: str, backup_id: str, shard: int) -> str:
    return f"{shards_prefix(target, backup_id)}{shard}.json"


def claim_key(target: str, backup_id: str, owner: str) -> str:
    return f"{shards_prefix(target, backup_id)}{CLAIM_PREFIX}{owner}"


def parse_shard(value: str) -> tuple[int, int]:
    """``"I/N"`` (1 <= I <= N) as ``(I, N)``."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
    if m is None or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise ShardSetError(
            f"--shard must be I/N with 1 <= I <= N (shard I of N, in the order of their first "
            f"slots), not {value!r}"
        )
    return int(m.group(1)), int(m.group(2))


# --- the pure part ------------------------------------------------------------------


def assemble(records: Sequence[ShardRecord]) -> Manifest:
    """The manifest of a set from its N records (any order). Raises
    :class:`ShardSetError` unless they are exactly shards 1..N of one run and
    their slot ranges cover every slot exactly once."""
    if not records:
        raise ShardSetError("no shard records to assemble")
    first = records[0]
    what = f"backup {first.id}"
    for field in ("id", "target", "owner", "shards", "method", "compression"):
        values = sorted({str(getattr(r, field)) for r in records})
        if len(values) > 1:
            raise ShardSetError(
                f"the shard records of {what} disagree on {field} ({', '.join(values)}): "
                "they were written by different runs; this set stays incomplete"
            )
    got = sorted(r.shard for r in records)
    if got != list(range(1, first.shards + 1)):
        raise ShardSetError(
            f"{what} has records of shards {got}, expected 1..{first.shards}: "
            "this set stays incomplete"
        )
    _check_slots(what, records)
    ordered = sorted(records, key=lambda r: r.shard)
    newest = max(ordered, key=lambda r: _version_key(r.node.version))
    return Manifest(
        id=first.id,
        target=first.target,
        created=max((r.node.snapshot_time for r in records), key=_snapshot_time),
        tool_version=max((r.tool_version for r in records), key=_version_key),
        redis_version=max((r.node.redis_version for r in records), key=_version_key),
        flavour=newest.node.flavour,
        server_version=newest.node.server_version,
        method=first.method,
        compression=first.compression,
        mode="cluster",
        nodes=[r.node for r in ordered],
    )


def _check_slots(what: str, records: Iterable[ShardRecord]) -> None:
    ranges = sorted((a, b, r) for r in records for a, b in r.node.slots if a <= b)
    moved = "the cluster's slots moved between the shards' snapshots (resharding or a failover)"
    end, owner = 0, None  # every slot below `end` is covered, the last range by `owner`
    for a, b, r in ranges:
        if a > end:
            raise ShardSetError(
                f"slots {_span(end, a - 1)} are in no shard of {what}: {moved}; "
                "this set stays incomplete, the next run takes a consistent one"
            )
        if a < end and owner is not None:
            raise ShardSetError(
                f"slots {_span(a, min(b, end - 1))} are in shard {owner.shard} "
                f"({owner.node.name}) and shard {r.shard} ({r.node.name}) of {what}: {moved}; "
                "this set stays incomplete, the next run takes a consistent one"
            )
        if b + 1 > end:
            end, owner = b + 1, r
    if end < CLUSTER_SLOTS:
        raise ShardSetError(
            f"slots {_span(end, CLUSTER_SLOTS - 1)} are in no shard of {what}: {moved}; "
            "this set stays incomplete, the next run takes a consistent one"
        )


def _snapshot_time(value: str) -> datetime:
    t = parse_time(value)
    if t is None:
        raise ShardSetError(f"a shard record's snapshot time is not an RFC 3339 time: {value!r}")
    return t


def _span(a: int, b: int) -> str:
    return str(a) if a == b else f"{a}-{b}"


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else -1 for p in re.split(r"[.+-]", version))


# --- the store ----------------------------------------------------------------------


def has_manifest(store: Backend, target: str, backup_id: str) -> bool:
    try:
        store.stat(catalog.manifest_key(target, backup_id))
    except NotFound:
        return False
    return True


def existing_manifest(store: Backend, target: str, backup_id: str) -> Manifest | None:
    """The manifest in ``<target>/<backup_id>/`` if there is one; :class:`CatalogError`
    when it is unreadable or names another folder."""
    try:
        return catalog.read_manifest(store, target, backup_id)
    except NotFound:
        return None


def read_record(store: Backend, target: str, backup_id: str, key: str) -> ShardRecord:
    """The shard record at ``key`` of folder ``<target>/<backup_id>/``, read with a
    size cap; :class:`ShardSetError` unless it belongs to that folder (a record
    copied from another set would make this run write into that set's folder)."""
    raw = read_at_most(store, key, MAX_MANIFEST_BYTES)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ShardSetError(f"{key} is larger than {MAX_MANIFEST_BYTES} bytes: not a shard record")
    record = ShardRecord.loads(raw, key)
    if (record.target, record.id) != (target, backup_id):
        raise ShardSetError(
            f"{key} names backup {record.target}/{record.id}, not the folder it sits in: "
            "it was copied from another set; delete it (this set stays incomplete until then)"
        )
    return record


def own_record(
    store: Backend, target: str, backup_id: str, shard: int, owner: str
) -> ShardRecord | None:
    """The record of ``shard`` that ``owner`` already wrote (a retried run), if any."""
    key = record_key(target, backup_id, shard)
    try:
        record = read_record(store, target, backup_id, key)
    except NotFound:
        return None
    if record.owner != owner:
        raise ShardSetError(
            f"shard {shard} of backup {backup_id} was written by {record.owner!r}, not "
            f"{owner!r}: two runs use the same backup id; pick another --id"
        )
    return record


def claim(store: Backend, target: str, backup_id: str, owner: str) -> None:
    """Write ``owner``'s claim on the id, then refuse if another owner claimed it too."""
    put_bytes(store, claim_key(target, backup_id, owner), f"{owner}\n".encode())
    others = sorted(
        name[len(CLAIM_PREFIX) :]
        for name in _names(store, shards_prefix(target, backup_id))
        if name.startswith(CLAIM_PREFIX) and name != CLAIM_PREFIX + owner
    )
    if others:
        raise ShardSetError(
            f"backup {backup_id} of {target} is also written by {', '.join(others)} (this run is "
            f"{owner}): two runs of one target into one store picked the same id, so neither set "
            "is completed; give them different storage prefixes, or pick another --id"
        )


def commit(
    store: Backend, record: ShardRecord, *, reused: bool = False, signer: Signer | None = None
) -> ShardOutcome:
    """Write ``record`` (unless ``reused``), then the manifest if the set is complete
    (signed by ``signer``, see backupctl.store.signing)."""
    if not reused:
        put_bytes(store, record_key(record.target, record.id, record.shard), record.dumps())
    prefix = shards_prefix(record.target, record.id)
    keys = [prefix + name for name in _names(store, prefix) if _RECORD.match(name)]
    if len(keys) < record.shards:
        return ShardOutcome(record=record, recorded=len(keys), reused=reused)
    records = [read_record(store, record.target, record.id, key) for key in keys]
    manifest = assemble(records)
    write_signed_manifest(store, manifest, signer)
    return ShardOutcome(record=record, recorded=len(keys), manifest=manifest, reused=reused)


def _names(store: Backend, prefix: str) -> list[str]:
    return [o.key[len(prefix) :] for o in store.list(prefix) if o.key.startswith(prefix)]


__all__ = [
    "DEFAULT_OWNER",
    "ShardOutcome",
    "ShardRecord",
    "ShardSetError",
    "assemble",
    "claim",
    "commit",
    "existing_manifest",
    "has_manifest",
    "own_record",
    "parse_shard",
    "read_record",
    "record_key",
    "validate_owner",
]
