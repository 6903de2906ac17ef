"""backup_set.py: a cluster backup written by one process per shard (milliseconds each).

The manifest is assembled from the shards' records alone (so every shard run that
completes the set writes the same bytes) and only when the records fit together; claims
keep two runs from writing one backup id; listing, ``find`` and ``prune`` treat the
``shards/`` keys as part of their backup folder. Stores are real local directories.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backupctl.core.timefmt import format_time
from backupctl.store import catalog
from backupctl.store.backends.base import Backend, put_bytes
from backupctl.store.backends.local import LocalBackend
from backupctl.store.backup_set import (
    ShardRecord,
    ShardSetError,
    assemble,
    claim,
    commit,
    parse_shard,
    record_key,
    validate_owner,
)
from backupctl.store.catalog import ArchiveEntry, FileEntry, NodeEntry
from backupctl.store.prune import prune
from backupctl.store.retention import Policy

BID = "backup-20300101-020000"
TARGET = "ns/rc"
#: Three shards as `redis-cli --cluster create` splits the slots.
SLOTS = [[[0, 5460]], [[5461, 10922]], [[10923, 16383]]]


@pytest.fixture
def store(tmp_path: Path) -> Backend:
    (tmp_path / "store").mkdir()
    return LocalBackend(tmp_path / "store")


def record(
    shard: int,
    slots: list[list[int]] | None = None,
    *,
    shards: int = 3,
    snapshot: str = "2030-01-01T02:00:05Z",
    version: str = "7.0.15",
    bid: str = BID,
    **fields: object,
) -> ShardRecord:
    name = f"10.0.0.{shard}-6379"
    node = NodeEntry(
        name=name,
        role="master",
        redis_version=version,
        rdb_version=10,
        snapshot_time=snapshot,
        keys=100 * shard,
        archive=ArchiveEntry(
            key=f"{name}.tar.zst", size=10 * shard, sha256="a" * 64, compression="zstd"
        ),
        files=[FileEntry(path="dump.rdb", size=20 * shard, sha256="b" * 64, kind="rdb")],
        node_id=f"{shard:040d}",
        slots=SLOTS[shard - 1] if slots is None else slots,
    )
    base = ShardRecord(
        id=bid,
        target=TARGET,
        shard=shard,
        shards=shards,
        owner="nightly",
        tool_version="0.1.0",
        method="replication",
        compression="zstd",
        node=node,
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def store_shard(store: Backend, r: ShardRecord) -> None:
    """What a shard run stores before its record: the archive."""
    put_bytes(store, catalog.backup_dir(r.target, r.id) + r.node.archive.key, b"x" * 8)


# --- assembling the manifest (pure) -------------------------------------------------------


def test_the_manifest_comes_from_the_records_alone_whatever_their_order() -> None:
    records = [
        record(1, snapshot="2030-01-01T02:00:07Z"),
        record(2, version="7.2.4"),
        record(3, snapshot="2030-01-01T02:00:09Z"),
    ]
    outputs = {assemble(list(p)).dumps() for p in itertools.permutations(records)}
    assert len(outputs) == 1, "two shard runs completing the set together write the same bytes"
    m = assemble(records)
    assert (m.id, m.target, m.mode, m.method, m.compression) == (
        BID, TARGET, "cluster", "replication", "zstd",
    )  # fmt: skip
    assert [n.name for n in m.nodes] == ["10.0.0.1-6379", "10.0.0.2-6379", "10.0.0.3-6379"]
    assert m.created == "2030-01-01T02:00:09Z"  # the last snapshot
    assert m.redis_version == "7.2.4"  # the newest node: restore refuses older targets by it
    assert (m.keys, m.size) == (600, 60)
    assert catalog.Manifest.loads(m.dumps()) == m


def test_overlapping_slots_are_refused_naming_both_shards() -> None:
    records = [record(1), record(2, [[5000, 10922]]), record(3)]
    with pytest.raises(ShardSetError) as e:
        assemble(records)
    assert str(e.value).startswith(
        "slots 5000-5460 are in shard 1 (10.0.0.1-6379) and shard 2 (10.0.0.2-6379) of backup "
        f"{BID}: the cluster's slots moved between the shards' snapshots"
    )
    assert "stays incomplete" in str(e.value)


@pytest.mark.parametrize(
    ("slots", "missing"),
    [
        ({2: [[5470, 10922]]}, "5461-5469"),
        ({3: [[10923, 16382]]}, "16383"),
        ({1: [[1, 5460]]}, "0"),
    ],
)
def test_a_slot_in_no_shard_is_refused(slots: dict[int, list[list[int]]], missing: str) -> None:
    records = [record(i, slots.get(i)) for i in (1, 2, 3)]
    with pytest.raises(ShardSetError, match=f"^slots {missing} are in no shard of backup"):
        assemble(records)


def test_a_shard_with_several_ranges_fits() -> None:
    records = [record(1, [[0, 100], [200, 5460]]), record(2, [[101, 199], [5461, 10922]]),
               record(3)]  # fmt: skip
    assert assemble(records).nodes[1].slots == [[101, 199], [5461, 10922]]


def test_records_of_different_runs_or_a_wrong_set_of_shards_are_refused() -> None:
    with pytest.raises(ShardSetError, match="disagree on owner"):
        assemble([record(1), record(2, owner="weekly"), record(3)])
    with pytest.raises(ShardSetError, match="disagree on shards"):
        assemble([record(1), record(2, shards=4), record(3)])
    with pytest.raises(ShardSetError, match=r"records of shards \[1, 3\], expected 1..2"):
        assemble([record(1, shards=2), record(3, shards=2)])


@pytest.mark.parametrize("value", ["0/3", "4/3", "1", "a/3", "1/0", "-1/3"])
def test_shard_must_be_i_of_n(value: str) -> None:
    with pytest.raises(ShardSetError, match="--shard must be I/N"):
        parse_shard(value)
    assert parse_shard("2/3") == (2, 3) and parse_shard(" 3 / 3 ") == (3, 3)


def test_owner_names_are_object_names() -> None:
    assert validate_owner("nightly.redis-1") == "nightly.redis-1"
    for bad in ("", "Nightly", "a/b", "-x", "x" * 300):
        with pytest.raises(ShardSetError):
            validate_owner(bad)


# --- in a store ---------------------------------------------------------------------


def test_only_the_run_that_finds_every_record_writes_the_manifest(store: Backend) -> None:
    records = [record(i) for i in (1, 2, 3)]
    for r in records:
        store_shard(store, r)
    first = commit(store, records[0])
    assert (first.recorded, first.complete) == (1, False)
    (entry,) = catalog.scan(store)  # archives and records: one folder, incomplete
    assert (entry.id, entry.complete) == (BID, False)
    assert commit(store, records[2]).recorded == 2
    with pytest.raises(catalog.CatalogError, match="incomplete"):
        catalog.find(store, BID)

    last = commit(store, records[1])
    assert last.complete and last.recorded == 3 and last.manifest == assemble(records)
    (entry,) = catalog.scan(store)
    assert entry.complete and entry.manifest == last.manifest
    assert catalog.find(store, "latest").id == BID
    assert {o.key.rsplit("/", 2)[-2] for o in entry.objects} == {BID, "shards"}


def test_records_that_do_not_fit_fail_the_run_and_leave_no_manifest(store: Backend) -> None:
    commit(store, record(1))
    commit(store, record(2, [[5000, 10922]]))
    with pytest.raises(ShardSetError, match="are in shard 1"):
        commit(store, record(3))
    assert not catalog.scan(store)[0].complete
    assert store.stat(record_key(TARGET, BID, 3)).size > 0  # the record stays: a retry fails too


def test_two_owners_of_one_id_are_refused_before_uploading(store: Backend) -> None:
    claim(store, TARGET, BID, "nightly")  # alone so far: goes on
    with pytest.raises(ShardSetError, match="also written by nightly") as e:
        claim(store, TARGET, BID, "weekly")
    assert "this run is weekly" in str(e.value)
    # nightly's next shard sees weekly's claim too: neither set can complete
    with pytest.raises(ShardSetError, match="also written by weekly"):
        claim(store, TARGET, BID, "nightly")
    claim(store, TARGET, "backup-20300101-020001", "weekly")  # another id is free


def test_prune_treats_a_shard_set_folder_as_one_backup(store: Backend) -> None:
    old, new = "backup-20300101-020000", "backup-20300102-020000"
    stale = "backup-20300101-120000"
    for bid in (old, new):
        for i in (1, 2, 3):
            r = record(i, bid=bid, snapshot=format_time(catalog.id_time(bid)))
            store_shard(store, r)
            commit(store, r)
    r = record(1, bid=stale, snapshot=format_time(catalog.id_time(stale)))
    store_shard(store, r)
    commit(store, r)  # 1 of 3: incomplete
    now = datetime(2030, 1, 5, tzinfo=UTC)
    result = prune(store, Policy(last=1), now=now, incomplete_grace=timedelta(hours=1))
    assert [row.id for row in result.keep] == [new]
    assert [row.id for row in result.remove] == [old]
    assert [(row.id, row.action) for row in result.incomplete] == [(stale, "remove")]
    left = {o.key for o in store.list("")}
    assert left and all(k.startswith(f"{TARGET}/{new}/") for k in left)
