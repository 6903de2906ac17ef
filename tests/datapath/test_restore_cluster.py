"""``backupctl restore --to-cluster``: a cluster backup set back into a running
Redis Cluster, file by file, mapped by slot ranges. The mapping is checked as
a pure function; the rest against real ``redis-server`` cluster nodes on
127.0.0.1, with a test supervisor that starts again the nodes that exit."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from backupctl.core.datadir import PREVIOUS_PREFIX
from backupctl.core.slots import Ranges, normalize_slots
from backupctl.ops.restore_cluster_plan import _require_local_dir, match_shards
from backupctl.ops.restore_dir import SWAP_RECORD, RestoreError
from backupctl.redis.cluster import ClusterNode, Shard
from backupctl.store.catalog import ArchiveEntry, FileEntry, Manifest, NodeEntry

from support.cli_runner import assert_one_clear_error, cli
from support.redis_cluster import (
    Supervisor,
    cluster_client,
    failover,
    fill_cluster,
    make_cluster,
    shards,
)
from support.redis_servers import RedisFactory, RedisServer, populate

TARGET = "prod/cache"

# --- the mapping (pure) ------------------------------------------------------------------


def node_entry(name: str, slots: list[list[int]], keys: int = 10) -> NodeEntry:
    return NodeEntry(
        name=name,
        role="master",
        redis_version="7.0.15",
        rdb_version=10,
        snapshot_time="2024-01-01T00:00:00Z",
        keys=keys,
        archive=ArchiveEntry(key=f"{name}.tar.zst", size=1, sha256="0" * 64, compression="zstd"),
        files=[FileEntry(path="dump.rdb", size=1, sha256="0" * 64, kind="rdb")],
        node_id=f"id-{name}",
        slots=slots,
    )


def manifest(*nodes: NodeEntry, mode: str = "cluster") -> Manifest:
    return Manifest(
        id="backup-20240101-000000",
        target=TARGET,
        created="2024-01-01T00:00:00Z",
        tool_version="0",
        redis_version="7.0.15",
        method="bgsave",
        compression="zstd",
        nodes=list(nodes),
        mode=mode,
    )


def live(slots: list[tuple[int, int]], *ports: int) -> Shard:
    nodes = tuple(
        ClusterNode(f"live-{p}", "10.0.0.1", p, "master" if i == 0 else "replica")
        for i, p in enumerate(ports)
    )
    return Shard(slots=tuple(slots), nodes=nodes)


THREE = manifest(
    node_entry("redis-0", [[0, 5460]]),
    node_entry("redis-1", [[5461, 10922]]),
    node_entry("redis-2", [[10923, 16383]]),
)


def test_normalize_slots_sorts_and_merges_adjacent_and_overlapping_ranges() -> None:
    assert normalize_slots([[100, 200], [0, 99], [150, 160], [300, 300]]) == ((0, 200), (300, 300))


def test_shards_are_matched_by_slot_ranges_not_by_name_order_or_how_ranges_are_split() -> None:
    # The live masters are listed in another order, on "other" pods, and one
    # shard reports its slots as two adjacent ranges.
    cluster = [
        live([(10923, 16383)], 7000, 7003),
        live([(5461, 8000), (8001, 10922)], 7001),
        live([(0, 5460)], 7002, 7005, 7004),
        live([], 7009),  # a master without slots holds none of the set's data
    ]
    got = {m.backup.name: [n.port for n in m.live.nodes] for m in match_shards(THREE, cluster)}
    assert got == {"redis-0": [7002, 7005, 7004], "redis-1": [7001], "redis-2": [7000, 7003]}


def test_another_shard_count_is_refused_saying_why_and_what_to_do() -> None:
    two = [live([(0, 8191)], 7000), live([(8192, 16383)], 7001)]
    with pytest.raises(RestoreError) as e:
        match_shards(THREE, two)
    msg = str(e.value)
    for needle in ("holds 3 shards", "the cluster has 2", "reshard", "--to-redis", "0-8191"):
        assert needle in msg, msg


def test_the_same_shard_count_with_other_slot_ranges_is_refused_naming_the_ranges() -> None:
    moved = [live([(0, 5000)], 7000), live([(5001, 10922)], 7001), live([(10923, 16383)], 7002)]
    with pytest.raises(RestoreError) as e:
        match_shards(THREE, moved)
    msg = str(e.value)
    assert "slot layout differs" in msg and "0-5460" in msg and "5461-10922" in msg, msg
    assert "--to-redis" in msg


def test_a_standalone_backup_is_refused_as_not_a_cluster_backup_set() -> None:
    single = manifest(node_entry("redis", []), mode="standalone")
    with pytest.raises(RestoreError, match=r"not a cluster backup set.*--to-dir.*--to-redis"):
        match_shards(single, [live([(0, 16383)], 7000)])


def test_a_data_directory_counts_as_local_only_when_it_holds_that_nodes_own_nodes_conf(
    tmp_path: Path,
) -> None:
    # Two hosts can both have a /data: the node's own nodes.conf tells them apart.
    with pytest.raises(RestoreError, match=r"not a directory on this machine.*--node redis-1"):
        _require_local_dir(tmp_path, "nodes.conf", "abc", "10.0.0.2:6379", "redis-1")
    (tmp_path / "nodes.conf").write_text(
        "abc 10.0.0.2:6379@16379 master - 0 0 1 connected 0-5460\n"
        "def 10.0.0.1:6379@16379 myself,master - 0 0 2 connected 5461-10922\n"
    )
    with pytest.raises(RestoreError, match="not a directory on this machine"):
        _require_local_dir(tmp_path, "nodes.conf", "abc", "10.0.0.2:6379", "redis-1")
    _require_local_dir(tmp_path, "nodes.conf", "def", "10.0.0.1:6379", "redis-1")


# --- against real cluster nodes ---------------------------------------------------------


def backup(nodes: list[RedisServer], store: Path) -> dict[str, object]:
    store.mkdir(exist_ok=True)
    out = cli("run", "--redis", nodes[0].url, "--to", store, "--target", TARGET, "--cluster",
              "--json")  # fmt: skip
    result: dict[str, object] = json.loads(out.stdout)
    return result


def per_shard(nodes: list[RedisServer]) -> dict[Ranges, tuple[str, int]]:
    """slot ranges -> (DEBUG DIGEST, DBSIZE) of the shard's master."""
    return {slots: (s[0].digest(), s[0].dbsize()) for slots, s in shards(nodes).items()}


def more_writes(nodes: list[RedisServer]) -> None:
    """New keys, overwritten keys and deleted keys in every shard."""
    fill_cluster(nodes, 3_000, prefix="after")
    rc = cluster_client(nodes)
    try:
        pipe = rc.pipeline()
        for i in range(1_000):
            pipe.set(f"key:{i}", "overwritten")
            pipe.delete(f"key:{1_000 + i}")
        pipe.execute()
    finally:
        rc.close()


def hidden(node: RedisServer) -> list[str]:
    """backupctl's hidden entries in a node's data directory."""
    return sorted(p.name for p in node.dir.iterdir() if p.name.startswith(".backupctl"))


def config(node: RedisServer, name: str) -> str:
    with node.client() as c:
        return str(c.config_get(name)[name])


def cluster_ok(node: RedisServer) -> bool:
    with node.client() as c:
        return "cluster_state:ok" in c.execute_command("CLUSTER", "INFO")


@pytest.mark.parametrize("appendonly", [False, True], ids=["rdb", "appendonly"])
def test_restore_to_cluster_with_restart_brings_every_shard_back_to_the_backup(
    redis_factory: RedisFactory, tmp_path: Path, appendonly: bool
) -> None:
    nodes = make_cluster(redis_factory, appendonly=appendonly)
    total = fill_cluster(nodes, 100_000, varied=True)  # + hashes, lists, keys with a TTL
    store = tmp_path / "store"
    m = backup(nodes, store)
    assert m["keys"] == total
    before = per_shard(nodes)
    more_writes(nodes)
    changed = per_shard(nodes)
    assert all(changed[s][0] != before[s][0] for s in before)  # every shard has new data

    # Not restored yet: the verification says which node loaded what.
    refused = cli("restore", store, m["id"], "--to-cluster", nodes[0].url, "--verify-only",
                  "--timeout", "1", check=False)  # fmt: skip
    assert_one_clear_error(refused, "verification failed", "loaded 0 keys", "the backup holds")

    with Supervisor(nodes):
        out = cli("restore", store, "latest", "--to-cluster", nodes[1].url, "--restart",
                  "--timeout", "60", "--json", timeout=120)  # fmt: skip
    result = json.loads(out.stdout)
    assert result["restarted"] and result["verified"] and result["keys"] == total
    assert per_shard(nodes) == before
    assert sum(n.dbsize() for n in nodes) == total
    for node in nodes:
        assert cluster_ok(node)
        assert node.info("persistence")["aof_enabled"] == int(appendonly)
        assert config(node, "replica-priority") == "100"  # its own settings after the restart
        (previous,) = [h for h in hidden(node) if h.startswith(PREVIOUS_PREFIX)]
        assert hidden(node) == sorted([previous, ".backupctl-restore.json"])
        kept = {p.name for p in (node.dir / previous).iterdir()}
        assert kept == ({"dump.rdb", "appendonlydir"} if appendonly else {"dump.rdb"})


def test_restore_to_cluster_with_replicas_maps_by_slots_after_failovers(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    nodes = make_cluster(redis_factory, replicas=1)  # masters 0-2, then their replicas 3-5
    fill_cluster(nodes, 100_000)
    failover(nodes[3], nodes, masters=3)  # shard 0's master is now the "replica" process
    store = tmp_path / "store"
    m = backup(nodes, store)
    assert f"127.0.0.1-{nodes[3].port}" in {n["name"] for n in m["nodes"]}  # type: ignore[attr-defined]
    before = per_shard(nodes)
    failover(nodes[4], nodes, masters=3)  # shard 1's backed-up node is a replica now
    more_writes(nodes)
    assert all(per_shard(nodes)[s] != before[s] for s in before)

    with Supervisor(nodes) as sup:
        cli("restore", store, "latest", "--to-cluster", nodes[5].url, "--restart",
            "--timeout", "60", timeout=120)  # fmt: skip
    assert all(sup.restarts[n.port] == 1 for n in nodes), sup.restarts
    live = shards(nodes)
    assert per_shard(nodes) == before
    assert sum(s[0].dbsize() for s in live.values()) == 100_000
    for members in live.values():
        master, *replicas = members
        assert len(replicas) == 1
        assert all(r.digest() == master.digest() for r in replicas)
    for node in nodes:  # every node was staged and swapped, replicas included
        record = json.loads((node.dir / SWAP_RECORD).read_text())
        assert record["id"] == m["id"] and record["swapped"], record
    # The roles the failovers left are kept (nodes.conf is untouched).
    assert {s[0].port for s in live.values()} == {nodes[3].port, nodes[4].port, nodes[2].port}
    assert all(cluster_ok(n) for n in nodes)


def test_restore_to_cluster_without_restart_leaves_quiesced_nodes_and_says_what_to_do_next(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    redis_cli = shutil.which("redis-cli")
    if redis_cli is None:
        pytest.skip("redis-cli not installed")
    nodes = make_cluster(redis_factory)
    fill_cluster(nodes, 6_000)
    store = tmp_path / "store"
    m = backup(nodes, store)
    before = per_shard(nodes)
    more_writes(nodes)
    changed = per_shard(nodes)

    out = cli("restore", store, "latest", "--to-cluster", nodes[0].url).stdout
    # Still serving the old data from memory, writing nothing to disk.
    assert per_shard(nodes) == changed
    for node in nodes:
        assert config(node, "save") == "" and config(node, "replica-priority") == "0"
        assert ".backupctl-quiesce.json" not in hidden(node)  # resuming is no longer an option
        assert not [h for h in hidden(node) if h.startswith(".backupctl-staging-")]

    # What it printed, run as printed: restart every node, then verify.
    restarts = [line.split("#")[0].split() for line in out.splitlines() if "SHUTDOWN" in line]
    assert sorted(int(r[r.index("-p") + 1]) for r in restarts) == sorted(n.port for n in nodes)
    (verify,) = [line.split() for line in out.splitlines() if "--verify-only" in line]
    assert verify[:4] == ["backupctl", "restore", str(store), str(m["id"])]
    with Supervisor(nodes):
        for args in restarts:
            subprocess.run([redis_cli, *args[1:]], capture_output=True, timeout=10, check=False)
        verified = cli(*shlex.split(" ".join(verify[1:])), "--timeout", "60", timeout=120)
    assert "verified" in verified.stdout
    assert per_shard(nodes) == before


def test_another_shard_count_is_refused_before_any_download_and_nothing_changes(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    three = make_cluster(redis_factory)
    fill_cluster(three, 3_000)
    store = tmp_path / "store"
    m = backup(three, store)
    for archive in (store / TARGET / str(m["id"])).glob("*.tar.*"):
        archive.unlink()  # any download attempt would fail with "not found" instead
    # What the by-hand route matches live shards against (README).
    dry = json.loads(cli("restore", store, "latest", "--dry-run", "--json").stdout)
    assert {normalize_slots(n["slots"]) for n in dry["nodes"]} == set(shards(three))

    two = make_cluster(redis_factory, n=2)
    fill_cluster(two, 1_000)
    digests = per_shard(two)
    proc = cli("restore", store, "latest", "--to-cluster", two[0].url, "--restart", check=False)
    assert_one_clear_error(proc, "holds 3 shards", "the cluster has 2", "reshard", "--to-redis")
    assert per_shard(two) == digests
    for node in two:
        assert hidden(node) == []
        assert config(node, "replica-priority") == "100"


def test_a_standalone_backup_is_refused_before_the_cluster_is_even_contacted(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    server = redis_factory()
    populate(server.client(), 500)
    (tmp_path / "store").mkdir()
    cli("run", "--redis", server.url, "--to", tmp_path / "store", "--target", TARGET)
    # Nothing listens on port 1: refusing for another reason would mention it.
    proc = cli("restore", tmp_path / "store", "latest", "--to-cluster", "redis://127.0.0.1:1",
               check=False)  # fmt: skip
    assert_one_clear_error(proc, "not a cluster backup set", "--to-dir", "--to-redis")


def test_a_corrupt_archive_of_one_shard_fails_staging_and_no_node_is_touched(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    nodes = make_cluster(redis_factory)
    fill_cluster(nodes, 6_000)
    store = tmp_path / "store"
    m = backup(nodes, store)
    more_writes(nodes)
    changed = per_shard(nodes)
    run_ids = [n.info("server")["run_id"] for n in nodes]
    files = {n.port: (n.dir / "dump.rdb").read_bytes() for n in nodes}
    archive = sorted((store / TARGET / str(m["id"])).glob("*.tar.*"))[1]
    raw = bytearray(archive.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    archive.write_bytes(bytes(raw))

    with Supervisor(nodes) as sup:
        proc = cli("restore", store, "latest", "--to-cluster", nodes[0].url, "--restart",
                   check=False)  # fmt: skip
    assert_one_clear_error(proc, "staging failed", "no node was changed", "corrupt")
    assert sup.restarts == {n.port: 0 for n in nodes}
    assert [n.info("server")["run_id"] for n in nodes] == run_ids
    assert per_shard(nodes) == changed
    for node in nodes:
        assert hidden(node) == []  # no staging folder, no previous data, no quiesce state
        assert (node.dir / "dump.rdb").read_bytes() == files[node.port]
        assert config(node, "replica-priority") == "100"


def test_a_node_that_does_not_answer_is_refused_before_any_download(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    nodes = make_cluster(redis_factory)
    fill_cluster(nodes, 3_000)
    store = tmp_path / "store"
    backup(nodes, store)
    nodes[2].kill()  # the others still list it (until cluster-node-timeout)
    proc = cli("restore", store, "latest", "--to-cluster", nodes[0].url, check=False)
    assert_one_clear_error(proc, f"127.0.0.1:{nodes[2].port}")
    for node in nodes[:2]:
        assert hidden(node) == []
        assert config(node, "replica-priority") == "100"


def test_restart_without_a_supervisor_fails_clearly_and_verify_only_passes_once_started(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    nodes = make_cluster(redis_factory)
    fill_cluster(nodes, 6_000)
    store = tmp_path / "store"
    m = backup(nodes, store)
    before = per_shard(nodes)
    more_writes(nodes)

    proc = cli("restore", store, "latest", "--to-cluster", nodes[0].url, "--restart",
               "--timeout", "3", check=False)  # fmt: skip
    assert_one_clear_error(proc, "3 of 3 nodes did not come back within 3 s", "supervisor",
                           "--verify-only", ".backupctl-previous-")  # fmt: skip
    assert all(n.proc is None or n.proc.poll() is not None for n in nodes)
    for node in nodes:
        node.start()  # what the user does by hand
    cli("restore", store, m["id"], "--to-cluster", nodes[2].url, "--verify-only",
        "--timeout", "60", timeout=120)  # fmt: skip
    assert per_shard(nodes) == before
