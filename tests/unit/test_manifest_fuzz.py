"""Fuzzing the manifest and shard-record parsers with what a hostile or
damaged store could hold: random JSON, real manifests with fields replaced
by absurd values or removed, and their text cut or flipped. Whatever the
bytes, the parser returns a manifest whose every count and size is within
the documented bounds, or raises its one documented error (``CatalogError``,
``ShardSetError`` for records) with one line -- never another exception, and
never memory proportional to what the bytes claim (tracemalloc)."""

from __future__ import annotations

import copy
import json
import tracemalloc
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from backupctl.store import manifest_checks as checks
from backupctl.store.backup_set import ShardRecord, ShardSetError
from backupctl.store.catalog import (
    ArchiveEntry,
    CatalogError,
    FileEntry,
    Manifest,
    NodeEntry,
    node_to_json,
)

FUZZ = settings(
    max_examples=100,
    deadline=2000,  # ms per example: a hang fails the test
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)

NODE = NodeEntry(
    name="redis-0",
    role="master",
    redis_version="7.0.15",
    rdb_version=10,
    snapshot_time="2024-03-01T10:00:00Z",
    keys=1000,
    archive=ArchiveEntry("redis-0.tar.zst", 4096, "a" * 64, "zstd"),
    files=[
        FileEntry("dump.rdb", 9_000_000, "b" * 64, "rdb", parts=3),
        FileEntry("appendonlydir/appendonly.aof.1.incr.aof", 88, "c" * 64, "aof"),
    ],
    node_id="f" * 40,
    slots=[[0, 5460], [10000, 10001]],
    aof_enabled=True,
)
REAL = Manifest(
    id="backup-20240301-100000",
    target="ns/redis",
    created="2024-03-01T10:00:00Z",
    tool_version="0.1.0",
    redis_version="7.0.15",
    method="replication",
    compression="zstd",
    nodes=[NODE, NODE],
    mode="cluster",
).to_json()
RECORD = {
    "format": "backupctl.dev/shard-record/v1",
    "id": REAL["id"],
    "target": REAL["target"],
    "shard": 1,
    "shards": 2,
    "owner": "cli",
    "tool": {"name": "backupctl", "version": "0.1.0"},
    "method": "bgsave",
    "compression": "zstd",
    "node": node_to_json(NODE),
}

#: JSON leaves, with the values a store would use to make a parser allocate or crash.
ABSURD = hs.one_of(
    hs.none(),
    hs.booleans(),
    hs.integers(),
    hs.sampled_from([-1, 0, 2**31, 2**63, 10**9, 10**30, 1 << 50, (1 << 50) + 1]),
    hs.floats(allow_nan=False),
    hs.text(max_size=20),
    hs.sampled_from(["", "..", "../../etc/passwd", "/abs", "a/../b", "x\0y", "2024-13-99T99"]),
)
JSON = hs.recursive(
    ABSURD,
    lambda inner: (
        hs.lists(inner, max_size=6) | hs.dictionaries(hs.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=40,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside ``value`` (dict keys, list indexes)."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(doc: Any, path: tuple[Any, ...], action: str, value: Any) -> Any:
    doc = copy.deepcopy(doc)
    if not path:
        return value
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if action == "delete":
        del parent[last]
    elif action == "repeat" and isinstance(parent[last], list):
        parent[last] = parent[last] * 1000  # a long list of real-looking entries
    else:
        parent[last] = value
    return doc


def _check_bounds(m: Manifest) -> None:
    """A manifest that parsed claims nothing beyond the documented bounds."""
    assert len(m.nodes) <= checks.MAX_NODES
    for n in m.nodes:
        assert 0 <= n.keys <= checks.MAX_KEYS
        assert 0 <= n.archive.size <= checks.MAX_BYTES
        assert len(n.files) <= checks.MAX_FILES
        for f in n.files:
            assert 0 <= f.size <= checks.MAX_BYTES and 0 <= f.parts <= max(1, f.size)
            assert ".." not in f.path.split("/") and not f.path.startswith("/")
        for a, b in n.slots:
            assert 0 <= a <= checks.MAX_SLOT and 0 <= b <= checks.MAX_SLOT
    assert m.created_at is not None


def _parse(raw: bytes) -> None:
    tracemalloc.start()
    try:
        try:
            _check_bounds(Manifest.loads(raw))
        except CatalogError as e:
            assert "\n" not in str(e) and len(str(e)) < 600, str(e)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * len(raw) + 4 * 1024 * 1024, (peak, len(raw))


def test_the_real_manifest_round_trips() -> None:
    raw = json.dumps(REAL).encode()
    assert Manifest.loads(raw).to_json() == REAL


@FUZZ
@given(doc=JSON)
def test_random_json_is_a_manifest_or_one_catalog_error(doc: Any) -> None:
    _parse(json.dumps(doc).encode())


@FUZZ
@given(
    doc=JSON,
    fields=hs.dictionaries(hs.sampled_from(sorted(REAL)), JSON, max_size=4),
)
def test_a_real_manifest_with_random_top_level_fields(doc: Any, fields: dict[str, Any]) -> None:
    _parse(json.dumps({**REAL, **fields}).encode())


PATHS = _paths(REAL)


@FUZZ
@given(
    path=hs.sampled_from(PATHS),
    action=hs.sampled_from(["replace", "delete", "repeat"]),
    value=JSON,
)
def test_a_real_manifest_with_one_value_replaced_removed_or_repeated(
    path: tuple[Any, ...], action: str, value: Any
) -> None:
    if action == "delete" and not path:
        action = "replace"
    _parse(json.dumps(_mutate(REAL, path, action, value)).encode())


RAW = json.dumps(REAL).encode()
positions = hs.floats(min_value=0, max_value=1, exclude_max=True)


@FUZZ
@given(
    flips=hs.lists(hs.tuples(positions, hs.integers(1, 255)), min_size=1, max_size=4),
    cut=positions,
)
def test_a_real_manifest_with_flipped_bytes_or_cut_short(
    flips: list[tuple[float, int]], cut: float
) -> None:
    data = bytearray(RAW)
    for where, mask in flips:
        data[int(where * len(data))] ^= mask
    _parse(bytes(data))
    _parse(RAW[: int(cut * len(RAW))])


def test_deeply_nested_json_is_one_catalog_error() -> None:
    _parse(b"[" * 100_000 + b"]" * 100_000)
    _parse(b'{"format": "backupctl.dev/manifest/v1", "nodes": ' + b"[" * 50_000)


@FUZZ
@given(path=hs.sampled_from(_paths(RECORD)), value=JSON)
def test_a_shard_record_with_one_value_replaced_is_a_record_or_one_shard_set_error(
    path: tuple[Any, ...], value: Any
) -> None:
    raw = json.dumps(_mutate(RECORD, path, "replace", value)).encode()
    tracemalloc.start()
    try:
        try:
            record = ShardRecord.loads(raw, "shards/1.json")
            assert 1 <= record.shard <= record.shards <= 16384
        except ShardSetError as e:
            assert "\n" not in str(e)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * len(raw) + 4 * 1024 * 1024
