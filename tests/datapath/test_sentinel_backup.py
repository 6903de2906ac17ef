"""``backupctl run`` in replication and Sentinel setups: which node is backed up.

Real processes on 127.0.0.1: a primary, a replica and three ``redis-server
--sentinel`` (tests/support/redis_servers.py ``sentinel_factory``); the real CLI in a
subprocess; each backup restored into a fresh server gives the source's
``DEBUG DIGEST``. The pure parts of :mod:`backupctl.redis.sentinel` are checked on
literal Sentinel and INFO answers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from backupctl.redis.sentinel import (
    healthy_replicas,
    master_problem,
    online_replicas,
    sentinel_specs,
    target_name,
)

from support.cli_runner import assert_one_clear_error, cli
from support.redis_servers import (
    RedisFactory,
    RedisServer,
    SentinelFactory,
    free_port,
    populate,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs" / "manifest.schema.json").read_text())


def as_manifest(run_json: dict[str, Any]) -> dict[str, Any]:
    """``run --json`` is the manifest plus ``ok``, ``store`` and ``seconds``."""
    return {k: v for k, v in run_json.items() if k not in ("ok", "store", "seconds")}


# --- reading Sentinel and INFO answers (no servers) ----------------------------------


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        ("master", None),
        ({"master"}, None),  # redis-py's RESP3 parser gives a set
        ("s_down,master", "s_down"),
        ("o_down,s_down,master,disconnected", "disconnected/o_down/s_down"),
        ("master,failover_in_progress", "failover"),
        ("slave", "flags slave"),
    ],
)
def test_master_problem_names_what_sentinel_reports(flags: Any, problem: str | None) -> None:
    found = master_problem({"name": "m", "ip": "10.0.0.1", "port": "6379", "flags": flags})
    assert found is None if problem is None else problem in str(found)


def test_healthy_replicas_skip_down_disconnected_lagging_and_foreign_ones_freshest_first() -> None:
    def replica(port: int, flags: str = "slave", link: str = "ok", **more: Any) -> dict[str, Any]:
        return {"ip": "10.0.0.2", "port": str(port), "flags": flags,
                "master-link-status": link, "master-host": "10.0.0.1", "master-port": "6379",
                "slave-repl-offset": "100", **more}  # fmt: skip

    replicas = [
        replica(1, flags="slave,s_down"),
        replica(2, flags="slave,o_down,s_down"),
        replica(3, flags="slave,disconnected"),
        replica(4, link="err"),
        replica(5, **{"master-port": "6380"}),  # replicates from another master
        replica(6),
        replica(7, **{"slave-repl-offset": "900"}),
        ["ip", "10.0.0.3", "port", 8, "flags", "slave", "master-link-status", "ok"],  # flat
    ]
    assert healthy_replicas(replicas, ("10.0.0.1", 6379)) == [
        ("10.0.0.2", 7),  # the freshest offset first
        ("10.0.0.2", 6),
        ("10.0.0.3", 8),
    ]


def test_online_replicas_from_info_replication_parsed_or_raw() -> None:
    info = {
        "role": "master",
        "connected_slaves": 3,
        "slave0": {"ip": "10.0.0.2", "port": 6380, "state": "online", "offset": 10, "lag": 0},
        "slave1": "ip=10.0.0.3,port=6381,state=wait_bgsave,offset=0,lag=0",
        "slave2": "ip=10.0.0.4,port=6382,state=online,offset=99,lag=1",
        "master_repl_offset": 99,
    }
    assert online_replicas(info) == [("10.0.0.4", 6382), ("10.0.0.2", 6380)]
    assert online_replicas({"role": "master", "connected_slaves": 0}) == []


def test_sentinel_urls_default_to_port_26379_and_their_own_password(tmp_path: Path) -> None:
    env = {"REDIS_SENTINEL_PASSWORD": "s-pw", "REDIS_PASSWORD": "data-pw"}
    a, b = sentinel_specs(["redis://10.0.0.1", "redis://:url-pw@10.0.0.2:5000"], env=env)
    assert (a.port, a.password, b.port, b.password) == (26379, "s-pw", 5000, "url-pw")
    pw = tmp_path / "pw"
    pw.write_text("file-pw\n")
    (c,) = sentinel_specs(["redis://10.0.0.1:26380"], password_file=str(pw), env=env)
    assert c.password == "file-pw"
    (d,) = sentinel_specs(["redis://10.0.0.1"], env={"REDIS_PASSWORD": "data-pw"})
    assert d.password is None
    assert target_name("my master/1") == "my-master-1"


# --- real servers ---------------------------------------------------------------------


def _replica_seen(sentinel: RedisServer, replica: RedisServer) -> bool:
    with sentinel.client() as c:
        replicas = c.execute_command("SENTINEL", "REPLICAS", "mymaster")
    return any(
        int(r["port"]) == replica.port and r["flags"] == "slave" and r["master-link-status"] == "ok"
        for r in replicas
    )


def _master_port(sentinel: RedisServer) -> int:
    with sentinel.client() as c:
        state = c.execute_command("SENTINEL", "MASTER", "mymaster")
    return int(state["port"]) if state["flags"] == "master" else -1


def _node(manifest: dict[str, Any]) -> tuple[str, str]:
    jsonschema.validate(as_manifest(manifest), SCHEMA)
    (node,) = manifest["nodes"]
    return node["name"], node["role"]


def _restored_digest(redis_factory: RedisFactory, store: Path, manifest: dict[str, Any]) -> str:
    data = store.parent / f"restored-{manifest['id']}"
    cli("restore", store, manifest["id"], "--target", manifest["target"], "--to-dir", data,
        "--appendonly", "no")  # fmt: skip
    return redis_factory(dir=data).digest()


def test_sentinel_backup_takes_the_master_or_a_preferred_replica_and_the_new_master_after_failover(
    redis_factory: RedisFactory, sentinel_factory: SentinelFactory, tmp_path: Path
) -> None:
    primary = redis_factory()
    populate(primary.client(), 2_000)
    replica = redis_factory(extra_args=["--replicaof", "127.0.0.1", str(primary.port)])
    wait_for(
        lambda: (
            replica.info("replication").get("master_link_status") == "up"
            and replica.digest() == primary.digest()
        ),
        timeout=20,
        what="the replica in sync",
    )
    digest = primary.digest()
    sentinels = [sentinel_factory(primary.port) for _ in range(3)]
    wait_for(
        lambda: all(_replica_seen(s, replica) and _master_port(s) == primary.port
                    for s in sentinels),
        timeout=20,
        what="every sentinel to see the master and the replica, link ok",
    )  # fmt: skip
    store = tmp_path / "store"
    store.mkdir()
    ask = [a for s in sentinels for a in ("--sentinel", f"redis://127.0.0.1:{s.port}")]

    def backup(*extra: str) -> dict[str, Any]:
        out = cli("run", *ask, "--master-name", "mymaster", "--to", store, "--json", *extra)
        assert "note:" not in out.stderr
        manifest: dict[str, Any] = json.loads(out.stdout)
        return manifest

    first = backup()
    assert first["target"] == "mymaster"
    assert _node(first) == (f"127.0.0.1-{primary.port}", "master")
    from_replica = backup("--prefer-replica", "--method", "replication")
    assert _node(from_replica) == (f"127.0.0.1-{replica.port}", "replica")

    with sentinels[1].client() as c:
        c.execute_command("SENTINEL", "FAILOVER", "mymaster")
    wait_for(
        lambda: (
            all(_master_port(s) == replica.port for s in sentinels)
            and replica.info("replication")["role"] == "master"
        ),
        timeout=30,
        what="every sentinel to name the promoted replica",
    )
    after = backup()
    assert _node(after) == (f"127.0.0.1-{replica.port}", "master")

    listed = json.loads(cli("list", store, "--target", "mymaster", "--json").stdout)["backups"]
    assert len(listed) == 3
    for manifest in (first, from_replica, after):
        assert _restored_digest(redis_factory, store, manifest) == digest


def test_prefer_replica_without_sentinel_takes_an_online_replica_or_the_primary_with_a_note(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    alone = redis_factory()
    populate(alone.client(), 300)
    out = cli("run", "--redis", alone.url, "--to", store, "--prefer-replica", "--json")
    assert "note: no healthy replica" in out.stderr and "backing up the primary" in out.stderr
    assert _node(json.loads(out.stdout)) == (f"127.0.0.1-{alone.port}", "master")
    refused = cli("run", "--redis", alone.url, "--to", store, "--require-replica", check=False)
    assert_one_clear_error(refused, "no healthy replica", "--require-replica")

    primary = redis_factory()
    populate(primary.client(), 1_000)
    replica = redis_factory(extra_args=["--replicaof", "127.0.0.1", str(primary.port)])
    wait_for(
        lambda: (
            "state=online" in str(primary.info("replication").get("slave0", ""))
            or primary.info("replication").get("slave0", {}).get("state") == "online"
        ),
        timeout=20,
        what="the primary to list its replica online",
    )
    wait_for(lambda: replica.digest() == primary.digest(), timeout=20, what="the replica in sync")
    out = cli("run", "--redis", primary.url, "--to", store, "--require-replica", "--json")
    manifest = json.loads(out.stdout)
    assert "note:" not in out.stderr
    assert manifest["target"] == f"127.0.0.1-{primary.port}"  # filed under the primary given
    assert _node(manifest) == (f"127.0.0.1-{replica.port}", "replica")
    assert _restored_digest(redis_factory, store, manifest) == primary.digest()


def test_sentinel_errors_are_one_clear_line_and_each_password_comes_from_its_own_setting(
    redis_factory: RedisFactory, sentinel_factory: SentinelFactory, tmp_path: Path
) -> None:
    primary = redis_factory(password="data-pw")
    populate(primary.client(), 200)
    sentinel = sentinel_factory(
        primary.port,
        quorum=1,
        password="sentinel-pw",
        extra_config=["sentinel auth-pass mymaster data-pw"],
    )
    wait_for(lambda: _master_port(sentinel) == primary.port, timeout=20, what="sentinel up")
    store = tmp_path / "store"
    store.mkdir()
    url = f"redis://127.0.0.1:{sentinel.port}"
    env = {"REDIS_SENTINEL_PASSWORD": "sentinel-pw", "REDIS_PASSWORD": "data-pw"}

    def run(*args: str | Path, env: dict[str, str] = env) -> Any:
        return cli("run", "--to", store, *args, env=env, check=False)

    unknown = run("--sentinel", url, "--master-name", "nope")
    assert_one_clear_error(unknown, "no Sentinel monitors a master named 'nope'", "mymaster")
    dead = run("--sentinel", f"redis://127.0.0.1:{free_port()}", "--master-name", "mymaster")
    assert_one_clear_error(dead, "no Sentinel named a usable master", "connection refused")
    wrong = run("--sentinel", url, "--master-name", "mymaster",
                env={**env, "REDIS_SENTINEL_PASSWORD": "wrong-pw"})  # fmt: skip
    assert "wrong-pw" not in assert_one_clear_error(wrong, "REDIS_SENTINEL_PASSWORD")
    no_replica = run("--sentinel", url, "--master-name", "mymaster", "--require-replica")
    assert_one_clear_error(no_replica, "no healthy replica of 'mymaster'", "--require-replica")
    usage = run("--sentinel", url)
    assert_one_clear_error(usage, "--master-name")
    assert json.loads(cli("list", store, "--json").stdout)["backups"] == []

    pw_file = tmp_path / "sentinel-pw"
    pw_file.write_text("sentinel-pw\n")
    out = cli("run", "--to", store, "--sentinel", url, "--sentinel-password-file", pw_file,
              "--master-name", "mymaster", "--prefer-replica", "--json",
              env={"REDIS_PASSWORD": "data-pw"})  # fmt: skip
    assert "note: no healthy replica of 'mymaster'" in out.stderr
    assert "sentinel-pw" not in out.stderr + out.stdout and "data-pw" not in out.stderr
    assert _node(json.loads(out.stdout)) == (f"127.0.0.1-{primary.port}", "master")
