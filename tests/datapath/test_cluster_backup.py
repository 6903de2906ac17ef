"""``backupctl run --cluster``: one backup set for a whole Redis Cluster, from
real ``redis-server`` processes in cluster mode on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backupctl.redis.cluster import cluster_shards

from support.cli_runner import assert_one_clear_error, cli
from support.redis_cluster import (
    CLUSTER_ARGS,
    add_replicas,
    fill_cluster,
    make_cluster,
    wait_replicas_in_sync,
)
from support.redis_servers import RedisFactory, RedisServer, wait_for


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
    assert json.loads(cli("list", store, "--json").stdout)["backups"] == []
    assert [
        b["complete"] for b in json.loads(cli("list", store, "--all", "--json").stdout)["backups"]
    ] == [False]

    (broken / "x").unlink()
    broken.rmdir()
    cli("run", "--redis", nodes[0].url, "--to", store, "--target", "c", "--cluster")
    listed = json.loads(cli("list", store, "--json").stdout)["backups"]
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


# --- one process per shard: run --cluster --shard I/N --id ID ----------------------------

SET_ID = "backup-20300101-020000"


def shard_args(seed: RedisServer, store: Path, i: int, n: int = 3, *extra: str) -> list[str]:
    return [
        "run", "--redis", seed.url, "--to", str(store), "--target", "c", "--cluster",
        "--method", "replication", "--shard", f"{i}/{n}", "--id", SET_ID, *extra,
    ]  # fmt: skip


def test_shard_runs_started_together_with_one_id_make_one_complete_set(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    masters = make_cluster(redis_factory)
    replicas = add_replicas(redis_factory, masters)
    fill_cluster(masters, 30_000)
    wait_replicas_in_sync(masters, replicas)
    store = tmp_path / "store"
    store.mkdir()
    logs = [tmp_path / f"termination-{i}" for i in (1, 2, 3)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "backupctl",
                *shard_args(replicas[i - 1], store, i, 3, "--termination-log", str(logs[i - 1])),
            ],
            env=os.environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in (1, 2, 3)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    assert all(out.strip() == SET_ID for out, _ in outs)
    results = [json.loads(log.read_text()) for log in logs]
    assert [(r["ok"], r["id"], r["shard"], r["shards"]) for r in results] == [
        (True, SET_ID, i, 3) for i in (1, 2, 3)
    ]
    assert any(r["complete"] for r in results)  # the last to finish wrote the manifest
    assert sum(r["keys"] for r in results) == 30_000

    (listed,) = json.loads(cli("list", store, "--all", "--json").stdout)["backups"]
    assert (listed["id"], listed["complete"], listed["keys"]) == (SET_ID, True, 30_000)
    manifest = json.loads((store / "c" / SET_ID / "manifest.json").read_text())
    # Each shard Job found its own shard from Redis, whatever node it was pointed at:
    # shard i is the master serving the i-th slot range, backed up once.
    by_port = {m.port: m for m in masters}
    names = [n["name"] for n in manifest["nodes"]]
    assert names == [f"127.0.0.1-{m.port}" for m in masters]
    for node in manifest["nodes"]:
        master = by_port[int(node["name"].rsplit("-", 1)[1])]
        assert node["role"] == "master" and node["keys"] == master.dbsize()
    assert sum(b - a + 1 for n in manifest["nodes"] for a, b in n["slots"]) == 16384
    assert sorted(p.name for p in (store / "c" / SET_ID).glob("*.tar.zst")) == sorted(
        f"{n}.tar.zst" for n in names
    )
    cli("verify", store, SET_ID, "--target", "c")  # every archive matches its sha256

    # A shard Job retried after the set is complete changes nothing and succeeds.
    before = (store / "c" / SET_ID / "manifest.json").read_bytes()
    again = cli(*shard_args(masters[0], store, 2))
    assert "already stored; the set is complete" in again.stderr
    assert (store / "c" / SET_ID / "manifest.json").read_bytes() == before


def test_two_of_three_shards_leave_the_set_incomplete_until_the_third_completes_it(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    masters = make_cluster(redis_factory)
    replicas = add_replicas(redis_factory, masters)
    fill_cluster(masters, 3_000)
    wait_replicas_in_sync(masters, replicas)
    store = tmp_path / "store"
    store.mkdir()
    folder = store / "c" / SET_ID
    replica_args = ("--prefer-replica", "--json")
    first = json.loads(cli(*shard_args(masters[0], store, 1, 3, *replica_args)).stdout)
    assert (first["complete"], first["recorded"], first["manifest"]) == (False, 1, None)
    assert first["node"]["role"] == "replica"
    archive = folder / first["node"]["archive"]["key"]
    stamp = archive.stat().st_mtime_ns
    retried = cli(*shard_args(masters[0], store, 1, 3, "--prefer-replica"))
    assert "shard 1/3 already stored; 1 of 3 shards stored so far" in retried.stderr
    assert archive.stat().st_mtime_ns == stamp, "a retried shard run does not upload again"
    cli(*shard_args(masters[0], store, 2, 3, "--prefer-replica"))

    assert json.loads(cli("list", store, "--json").stdout)["backups"] == []
    (incomplete,) = json.loads(cli("list", store, "--all", "--json").stdout)["backups"]
    assert (incomplete["id"], incomplete["complete"]) == (SET_ID, False)
    assert incomplete["problem"] == "incomplete: no manifest"
    refused = cli("restore", store, SET_ID, "--target", "c", "--dry-run", check=False)
    assert_one_clear_error(refused, "incomplete")

    last = json.loads(cli(*shard_args(masters[0], store, 3, 3, *replica_args)).stdout)
    assert last["complete"] and last["manifest"]["keys"] == 3_000
    assert {n["role"] for n in last["manifest"]["nodes"]} == {"replica"}
    (listed,) = json.loads(cli("list", store, "--json").stdout)["backups"]
    assert (listed["id"], listed["keys"], len(listed["nodes"])) == (SET_ID, 3_000, 3)


def test_shard_runs_refuse_a_wrong_shard_count_a_complete_id_and_a_second_owner(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    masters = make_cluster(redis_factory)
    fill_cluster(masters, 300)
    store = tmp_path / "store"
    store.mkdir()
    seed = masters[1]
    proc = cli(*shard_args(seed, store, 1, 4), check=False)
    assert_one_clear_error(proc, "3 shards serving slots, not 4 (--shard 1/4)")
    for args in (["--shard", "1/3"], ["--shard", "1/3", "--cluster"]):
        proc = cli("run", "--redis", seed.url, "--to", store, "--target", "c", *args, check=False)
        assert_one_clear_error(proc, "--shard needs --cluster and --id")
    proc = cli(*shard_args(seed, store, 0, 3), check=False)
    assert_one_clear_error(proc, "--shard must be I/N")
    assert not (store / "c").exists(), "nothing written by refused runs"

    cli(*shard_args(seed, store, 1, 3, "--owner", "nightly"))
    proc = cli(*shard_args(seed, store, 1, 4, "--owner", "nightly"), check=False)
    assert_one_clear_error(proc, "was stored as one of 3 shards, not 4")
    proc = cli(*shard_args(seed, store, 2, 3, "--owner", "weekly"), check=False)
    assert_one_clear_error(proc, f"backup {SET_ID} of c is also written by nightly")
    assert sorted(p.name for p in (store / "c" / SET_ID).glob("*.tar.zst")) == [
        f"127.0.0.1-{masters[0].port}.tar.zst"
    ], "the second owner uploaded nothing"

    other = "backup-20300101-030000"
    cli("run", "--redis", seed.url, "--to", store, "--target", "c", "--cluster", "--id", other,
        "--method", "replication")  # fmt: skip
    proc = cli("run", "--redis", seed.url, "--to", store, "--target", "c", "--cluster",
               "--id", other, check=False)  # fmt: skip
    assert_one_clear_error(proc, f"backup {other} of c is already complete")
    proc = cli(*[a if a != SET_ID else other for a in shard_args(seed, store, 1)], check=False)
    assert_one_clear_error(proc, "already complete without this shard's record")
