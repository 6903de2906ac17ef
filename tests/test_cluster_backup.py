"""``backupctl run --cluster``: one backup set for a whole Redis Cluster, from
real ``redis-server`` processes in cluster mode on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clitools import assert_one_clear_error, cli
from clusterfixtures import CLUSTER_ARGS, fill_cluster, make_cluster
from redisfixtures import RedisFactory, wait_for

from backupctl.redisnode import cluster_shards


def test_cluster_backup_set_has_one_archive_per_shard_with_slots_and_restores_each_shard(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    nodes = make_cluster(redis_factory)
    fill_cluster(nodes, 100_000)
    digests = {f"127.0.0.1-{n.port}": (n.digest(), n.dbsize()) for n in nodes}
    store = tmp_path / "store"
    store.mkdir()

    manifest = json.loads(
        cli(
            "run", "--redis", nodes[1].url, "--to", store, "--target", "c", "--cluster", "--json"
        ).stdout
    )
    assert manifest["redis"]["mode"] == "cluster"
    assert manifest["keys"] == 100_000
    assert sorted(n["name"] for n in manifest["nodes"]) == sorted(digests)
    slots = sorted(tuple(r) for n in manifest["nodes"] for r in n["slots"])
    assert sum(b - a + 1 for a, b in slots) == 16384
    assert all(n["nodeId"] and n["role"] == "master" for n in manifest["nodes"])

    refusal = cli("restore", store, "latest", "--to-dir", tmp_path / "x", check=False)
    assert_one_clear_error(refusal, "--node")
    for node in manifest["nodes"]:
        data = tmp_path / node["name"]
        cli(
            "restore",
            store,
            "latest",
            "--node",
            node["name"],
            "--to-dir",
            data,
            "--appendonly",
            "no",
        )
        restored = redis_factory(dir=data)  # standalone: loads the shard's keys as they are
        assert (restored.digest(), restored.dbsize()) == digests[node["name"]]
        assert restored.dbsize() == node["keys"]


def test_cluster_node_without_cluster_flag_is_refused(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    nodes = make_cluster(redis_factory)
    proc = cli("run", "--redis", nodes[0].url, "--to", tmp_path, check=False)
    assert_one_clear_error(proc, "--cluster")


def test_one_shard_failing_leaves_no_complete_set_and_the_next_run_succeeds(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    nodes = make_cluster(redis_factory)
    fill_cluster(nodes, 3_000)
    store = tmp_path / "store"
    store.mkdir()
    # Make one shard's BGSAVE fail: its dump.rdb path is a non-empty directory.
    broken = nodes[2].dir / "dump.rdb"
    broken.mkdir()
    (broken / "x").write_text("x")
    proc = cli(
        "run", "--redis", nodes[0].url, "--to", store, "--target", "c", "--cluster", check=False
    )
    assert_one_clear_error(proc, "1 of 3 shards failed")
    assert json.loads(cli("list", store, "--json").stdout) == []
    assert [b["complete"] for b in json.loads(cli("list", store, "--all", "--json").stdout)] == [
        False
    ]

    (broken / "x").unlink()
    broken.rmdir()
    cli("run", "--redis", nodes[0].url, "--to", store, "--target", "c", "--cluster")
    listed = json.loads(cli("list", store, "--json").stdout)
    assert len(listed) == 1 and listed[0]["keys"] == 3_000


@pytest.mark.parametrize("method", ["replication"])
def test_cluster_backup_with_replicas_prefers_replica_when_asked(
    redis_factory: RedisFactory, tmp_path: Path, method: str
) -> None:
    nodes = make_cluster(redis_factory)
    replica = redis_factory(extra_args=CLUSTER_ARGS)
    nodes[0].client().execute_command("CLUSTER", "MEET", "127.0.0.1", replica.port)
    master_id = nodes[0].client().execute_command("CLUSTER", "MYID")
    wait_for(
        lambda: master_id in replica.client().execute_command("CLUSTER", "NODES"),
        what="the replica to learn the master",
    )
    replica.client().execute_command("CLUSTER", "REPLICATE", master_id)
    fill_cluster(nodes, 2_000)
    wait_for(
        lambda: replica.client().info("replication").get("master_link_status") == "up",
        timeout=20,
        what="replica link up",
    )
    wait_for(lambda: replica.dbsize() == nodes[0].dbsize(), timeout=20, what="replica in sync")

    def replica_online_for_master() -> bool:
        shards = cluster_shards(nodes[0].client())
        return any(
            r.port == replica.port and r.health == "online" for s in shards for r in s.replicas
        )

    wait_for(replica_online_for_master, timeout=20, what="the master to see its replica online")

    manifest = json.loads(
        cli(
            "run",
            "--redis",
            nodes[0].url,
            "--to",
            tmp_path,
            "--cluster",
            "--prefer-replica",
            "--method",
            method,
            "--json",
        ).stdout
    )
    roles = {n["name"]: n["role"] for n in manifest["nodes"]}
    assert roles[f"127.0.0.1-{replica.port}"] == "replica"
    assert f"127.0.0.1-{nodes[0].port}" not in roles
    assert manifest["keys"] == 2_000
