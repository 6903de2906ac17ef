"""``backupctl quiesce-redis`` and ``check-redis``: what the restore controller's Jobs do to
live servers, against real ``redis-server`` processes on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from support.cli_runner import cli
from support.redis_cluster import failover, make_cluster, shards
from support.redis_servers import RedisFactory, RedisServer, populate, wait_for


def files(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".") and not p.name.startswith("temp-")
    }


def persistent_server(redis_factory: RedisFactory, data: Path) -> RedisServer:
    """appendonly yes and save points, as in the seed's examples."""
    server = redis_factory(appendonly=True, dir=data, extra_args=["--save", "900 1 60 1"])
    populate(server.client(), 2_000)
    server.client().save()
    return server


def swap_in(data: Path, restored: Path) -> dict[str, str]:
    """Put ``restored``'s dump.rdb and AOF folder in place, as a swap Job does."""
    shutil.rmtree(data / "appendonlydir")
    shutil.copytree(restored / "appendonlydir", data / "appendonlydir")
    shutil.copy2(restored / "dump.rdb", data / "dump.rdb")
    return files(data)


def test_a_quiesced_server_leaves_files_swapped_underneath_it_alone_even_on_shutdown(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    # The "restored" dataset: another server's files.
    other = persistent_server(redis_factory, tmp_path / "other")
    other.client().execute_command("BGREWRITEAOF")
    wait_for(lambda: other.info("persistence")["aof_rewrite_in_progress"] == 0, what="rewrite")
    restored_digest = other.digest()
    other.stop()

    data = tmp_path / "data"
    live = persistent_server(redis_factory, data)
    state = tmp_path / "state" / "quiesce.json"
    out = json.loads(cli("quiesce-redis", "--redis", live.url, "--state-file", state,
                         "--json").stdout)  # fmt: skip
    assert out["original"] == {
        "save": "900 1 60 1",
        "appendonly": "yes",
        "repl-diskless-sync": "yes",
        "replica-priority": "100",
    }
    with live.client() as c:
        assert c.config_get("save") == {"save": ""}
        assert c.config_get("appendonly") == {"appendonly": "no"}
    # A rerun (a retried Job) keeps the true originals, not the quiesced values.
    again = json.loads(cli("quiesce-redis", "--redis", live.url, "--state-file", state,
                           "--json").stdout)  # fmt: skip
    assert again["original"] == out["original"]

    swapped = swap_in(data, tmp_path / "other")
    populate(live.client(), 500, prefix="late:")  # writes after the quiesce
    live.stop()  # SIGTERM: with its original settings Redis would save and fsync here
    assert files(data) == swapped
    live.start()
    assert live.digest() == restored_digest


def test_without_quiescing_a_shutdown_overwrites_the_swapped_files(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    """The hazard quiesce-redis exists for (and proof the test above can fail)."""
    other = persistent_server(redis_factory, tmp_path / "other")
    other.stop()
    data = tmp_path / "data"
    live = persistent_server(redis_factory, data)
    swapped = swap_in(data, tmp_path / "other")
    populate(live.client(), 500, prefix="late:")
    live.stop()
    assert files(data) != swapped


def test_resume_sets_the_original_settings_back(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    live = persistent_server(redis_factory, tmp_path / "data")
    state = tmp_path / "quiesce.json"
    cli("quiesce-redis", "--redis", live.url, "--state-file", state)
    out = json.loads(cli("quiesce-redis", "--redis", live.url, "--state-file", state,
                         "--resume", "--json").stdout)  # fmt: skip
    assert out["resumed"] is True and out["original"]["save"] == "900 1 60 1"
    with live.client() as c:
        assert c.config_get("save") == {"save": "900 1 60 1"}
        assert c.config_get("appendonly") == {"appendonly": "yes"}
    assert not state.exists()
    nothing = json.loads(cli("quiesce-redis", "--redis", live.url, "--state-file", state,
                             "--resume", "--json").stdout)  # fmt: skip
    assert nothing["original"] == {}


def test_check_redis_verifies_a_primary_and_its_replicas(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    data = tmp_path / "p"
    primary = redis_factory(dir=data)
    populate(primary.client(), 3_000)
    primary.client().save()
    primary.restart()  # its load counters now say what it loaded
    n = primary.dbsize()
    replicas = [
        redis_factory(extra_args=["--replicaof", "127.0.0.1", str(primary.port)]) for _ in range(2)
    ]
    urls = [a for s in (primary, *replicas) for a in ("--redis", s.url)]
    tlog = tmp_path / "tlog"
    out = json.loads(cli("check-redis", *urls, "--expect-keys", str(n), "--wait", "30", "--json",
                         "--termination-log", tlog).stdout)  # fmt: skip
    assert out["restoredKeys"] == n
    assert [node["role"] for node in out["nodes"]] == ["master", "replica", "replica"]
    assert len({node["digest"] for node in out["nodes"]}) == 1
    assert json.loads(tlog.read_text())["ok"] is True

    wrong = cli("check-redis", *urls, "--expect-keys", str(n + 5), "--termination-log", tlog,
                check=False)  # fmt: skip
    assert wrong.returncode == 6  # integrity: the restore is not verified
    assert f"loaded {n} keys" in wrong.stderr and f"holds {n + 5}" in wrong.stderr
    assert json.loads(tlog.read_text())["ok"] is False

    replicas[0].client().execute_command("REPLICAOF", "NO", "ONE")
    replicas[0].client().set("diverged", "1")
    replicas[0].client().execute_command("REPLICAOF", "127.0.0.1", str(primary.port))
    replicas[1].client().execute_command("REPLICAOF", "NO", "ONE")
    replicas[1].client().set("diverged", "1")
    diverged = cli("check-redis", *urls, "--expect-keys", str(n), check=False)
    assert diverged.returncode == 6 and "expected one primary" in diverged.stderr


def test_check_redis_without_debug_compares_key_counts(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    primary = redis_factory(dir=tmp_path / "p", extra_args=["--enable-debug-command", "no"])
    with primary.client() as c:
        c.mset({f"k{i}": i for i in range(100)})
        c.save()
    primary.restart()
    replica = redis_factory(
        extra_args=["--enable-debug-command", "no", "--replicaof", "127.0.0.1", str(primary.port)]
    )
    out = json.loads(cli("check-redis", "--redis", primary.url, "--redis", replica.url,
                         "--expect-keys", "100", "--wait", "30", "--json").stdout)  # fmt: skip
    assert [node["digest"] for node in out["nodes"]] == [None, None]
    assert out["nodes"][1]["link_up"] is True and out["nodes"][1]["keys"] == 100


def test_check_redis_reports_each_cluster_nodes_shard_slots_from_redis(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    """What the RedisRestore controller maps pods by: each node's id, cluster_state and the
    slot ranges its shard serves now (a replica: its master's), after a failover too; the
    termination message of a 6-node check still parses."""
    nodes = make_cluster(redis_factory, 3, replicas=1)  # masters 0-2, replica i+3 of master i
    failover(nodes[4], nodes, masters=3)  # node 4 is now the primary of shard 1
    urls = [a for s in nodes for a in ("--redis", s.url)]
    tlog = tmp_path / "tlog"
    out = json.loads(cli("check-redis", *urls, "--wait", "10", "--json",
                         "--termination-log", tlog).stdout)  # fmt: skip
    live = shards(nodes)
    slots_of = {s.port: [list(r) for r in ranges] for ranges, ss in live.items() for s in ss}
    assert [n["slots"] for n in out["nodes"]] == [slots_of[s.port] for s in nodes]
    assert [n["slots"] for n in out["nodes"][:3]] == [n["slots"] for n in out["nodes"][3:]]
    assert [n["role"] for n in out["nodes"]] == ["master", "replica", "master",
                                                 "replica", "master", "replica"]  # fmt: skip
    assert all(n["cluster_state"] == "ok" and n["cluster"] for n in out["nodes"])
    ids = [s.client().execute_command("CLUSTER", "MYID") for s in nodes]
    assert [n["node_id"] for n in out["nodes"]] == [i.decode() if isinstance(i, bytes) else i
                                                    for i in ids]  # fmt: skip
    logged = json.loads(tlog.read_text())
    assert logged["ok"] is True and [n["slots"] for n in logged["nodes"]] == [
        n["slots"] for n in out["nodes"]]  # fmt: skip
