"""``backupctl restore --to-redis`` into a Redis Cluster: keys routed to the
master owning their slot, whatever the shard count of the backup.

Real ``redis-server`` processes in cluster mode on 127.0.0.1 (tests/support/redis_cluster.py),
the real CLI in a subprocess, a ``file://`` store. Same slot layout: each master's
``DEBUG DIGEST`` equals the source's at backup time; another layout: every key's
``DEBUG DIGEST-VALUE`` equals the source's, and every key reads through redis-py's
``RedisCluster``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from redis.crc import key_slot

from backupctl.redis.address import parse_redis_url
from backupctl.redis.load import Cluster, Item, open_target

from support.cli_runner import assert_one_clear_error, cli
from support.redis_cluster import cluster_client, fill_cluster, make_cluster
from support.redis_servers import RedisFactory, RedisServer, populate

LIBRARY = "#!lua name=clustertest\nredis.register_function('hello', function() return 'hi' end)"
N_KEYS = 20_000


def backup_cluster(nodes: list[RedisServer], store: Path) -> dict[str, Any]:
    """Keys of every type, TTLs and a Functions library on every master, then
    ``backupctl run --cluster``; returns the manifest."""
    keys = fill_cluster(nodes, N_KEYS, varied=True)
    for node in nodes:
        node.client().execute_command("FUNCTION", "LOAD", LIBRARY)
    manifest: dict[str, Any] = json.loads(
        cli("run", "--redis", nodes[1].url, "--to", store, "--target", "c", "--cluster",
            "--json").stdout
    )  # fmt: skip
    assert manifest["redis"]["mode"] == "cluster" and len(manifest["nodes"]) == 3
    assert manifest["keys"] == keys
    return manifest


def digests(nodes: list[RedisServer]) -> dict[int, str]:
    return {n.port: n.digest() for n in nodes}


def cluster_ok(nodes: list[RedisServer]) -> bool:
    return all(n.client().cluster("info")["cluster_state"] == "ok" for n in nodes)


def values(nodes: list[RedisServer]) -> dict[bytes, bytes]:
    """Every key's value digest (``DEBUG DIGEST-VALUE``: order-free for sets and
    hashes, TTL left out), asked of the master holding it; and each key must be
    readable through redis-py's ``RedisCluster`` (which routes by slot)."""
    out: dict[bytes, bytes] = {}
    for node in nodes:
        with node.client(decode_responses=False) as c:
            keys = list(c.scan_iter(count=1000))
            pipe = c.pipeline(transaction=False)
            for key in keys:
                pipe.execute_command("DEBUG", "DIGEST-VALUE", key)
            out.update(zip(keys, pipe.execute(), strict=True))
    if len(nodes) > 1:
        rc = cluster_client(nodes, decode_responses=False)
        try:
            pipe = rc.pipeline()
            for key in out:
                pipe.dump(key)
            assert None not in pipe.execute()
        finally:
            rc.close()
    return out


def test_cluster_set_restores_into_the_same_cluster_with_flush_and_every_master_digest_equal(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    nodes = make_cluster(redis_factory)
    manifest = backup_cluster(nodes, tmp_path)
    before = digests(nodes)
    rc = cluster_client(nodes)
    for i in range(0, 2_000, 3):  # writes after the backup: changed, new and deleted keys
        rc.set(f"key:{i}", "changed")
        rc.set(f"new:{i}", "x")
        rc.delete(f"hash:{i % 400}")
    rc.close()
    assert digests(nodes) != before

    out = cli("restore", tmp_path, "latest", "--target", "c", "--to-redis", nodes[2].url,
              "--flush", "--json")  # fmt: skip
    result = json.loads(out.stdout)
    assert result["cluster"] and result["flushed"]
    assert result["keys"] == manifest["keys"] and result["expired"] == 0
    assert sorted(result["nodes"]) == sorted(n["name"] for n in manifest["nodes"])
    assert result["masters"] == {f"127.0.0.1:{n.port}": n.dbsize() for n in nodes}
    assert sum(n.dbsize() for n in nodes) == manifest["keys"]
    assert digests(nodes) == before
    assert cluster_ok(nodes)
    rc = cluster_client(nodes)
    assert rc.ttl("ttl:7") > 9 * 365 * 24 * 3600  # the expiry time came along
    assert rc.ttl("key:7") == -1
    rc.close()
    for node in nodes:
        assert node.client().fcall("hello", 0) == "hi"


def test_cluster_set_of_three_shards_loads_into_a_two_master_cluster_readable_by_redis_cluster(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    source = make_cluster(redis_factory)
    manifest = backup_cluster(source, tmp_path)
    expected = values(source)
    assert len(expected) == manifest["keys"]

    target = make_cluster(redis_factory, 2)
    out = cli("restore", tmp_path, "latest", "--target", "c", "--to-redis", target[0].url)
    assert f"{manifest['keys']} keys in 2 cluster masters" in out.stdout
    assert sum(n.dbsize() for n in target) == manifest["keys"]
    for node in target:
        assert f"127.0.0.1:{node.port}: {node.dbsize()}" in out.stdout
        assert node.dbsize() > manifest["keys"] // 3  # both got their share
        assert node.client().fcall("hello", 0) == "hi"
    assert values(target) == expected
    assert cluster_ok(target)


def test_to_cluster_refuses_a_non_empty_master_without_flush_and_a_corrupt_archive_flushes_nothing(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    src = redis_factory()
    populate(src.client(), 1_000)
    cli("run", "--redis", src.url, "--to", tmp_path, "--target", "s")
    nodes = make_cluster(redis_factory)
    rc = cluster_client(nodes)
    rc.set("precious", "data")
    rc.close()
    before = digests(nodes)
    owner = next(n for n in nodes if n.dbsize())

    ref = ["restore", tmp_path, "latest", "--target", "s", "--to-redis", nodes[0].url]
    refused = cli(*ref, check=False)
    assert_one_clear_error(refused, f"127.0.0.1:{owner.port} already holds 1 keys", "--flush")
    assert digests(nodes) == before

    archive = next(tmp_path.rglob("*.tar.zst"))
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    corrupt = cli(*ref, "--flush", check=False)
    assert_one_clear_error(corrupt)
    assert digests(nodes) == before


def test_to_cluster_refuses_a_standalone_backup_with_keys_in_db_3_before_flushing(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    src = redis_factory()
    populate(src.client(), 500)
    with src.client(db=3) as c3:
        c3.set("elsewhere", "1")
    cli("run", "--redis", src.url, "--to", tmp_path, "--target", "s")
    nodes = make_cluster(redis_factory)
    rc = cluster_client(nodes)
    rc.set("precious", "data")
    rc.close()
    before = digests(nodes)

    proc = cli("restore", tmp_path, "latest", "--target", "s", "--to-redis", nodes[1].url,
               "--flush", check=False)  # fmt: skip
    assert_one_clear_error(proc, "database 3", "database 0 only", "nothing was written")
    assert digests(nodes) == before


def test_standalone_backup_loads_into_a_cluster_across_all_masters(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    src = redis_factory()
    keys = populate(src.client(), 3_000)
    cli("run", "--redis", src.url, "--to", tmp_path, "--target", "s")
    nodes = make_cluster(redis_factory)

    result = json.loads(
        cli("restore", tmp_path, "latest", "--target", "s", "--to-redis", nodes[0].url,
            "--json").stdout
    )  # fmt: skip
    assert result["keys"] == keys and result["nodes"] == [f"127.0.0.1-{src.port}"]
    assert result["masters"] == {f"127.0.0.1:{n.port}": n.dbsize() for n in nodes}
    assert all(n.dbsize() > keys // 4 for n in nodes)
    assert values(nodes) == values([src])
    rc = cluster_client(nodes)
    assert rc.ttl("ttl:1") > 9 * 365 * 24 * 3600
    rc.close()


def test_cluster_target_follows_moved_and_ask_redirects(redis_factory: RedisFactory) -> None:
    """In-process: slots moved after the target read its slot map are found by
    MOVED answers; a key of a slot being migrated goes where ASK sends it."""
    a, b = make_cluster(redis_factory, 2)
    ids = {n.port: n.client().execute_command("CLUSTER", "MYID") for n in (a, b)}
    helper = redis_factory()  # makes DUMP payloads
    with helper.client(decode_responses=False) as h:
        h.set(b"v", b"value")
        payload: bytes = h.dump(b"v")  # type: ignore[assignment]

    def migrate(slot: int, src: RedisServer, dst: RedisServer, *, finish: bool) -> None:
        dst.client().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[src.port])
        src.client().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[dst.port])
        if finish:  # the slot is empty: nothing to MIGRATE
            for node in (dst, src):
                node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[dst.port])

    on_b = [k for k in (f"k{i}".encode() for i in range(400)) if key_slot(k) >= 8192]
    spec = parse_redis_url(a.url)
    with open_target(spec, flush=False, timeout=30) as target:
        assert isinstance(target, Cluster)
        moved = on_b[:20]
        for slot in {key_slot(k) for k in moved}:
            migrate(slot, b, a, finish=True)  # the target still thinks b owns them
        assert target.write(0, [Item(k, 0, payload) for k in moved], replace=False) == 20
        assert (a.dbsize(), b.dbsize()) == (20, 0)

        asked = on_b[20]
        migrate(key_slot(asked), b, a, finish=False)
        assert target.write(0, [Item(asked, 0, payload)], replace=False) == 1
        assert a.client().execute_command("CLUSTER", "COUNTKEYSINSLOT", key_slot(asked)) == 1
        assert (a.dbsize(), b.dbsize()) == (21, 0)

        rest = on_b[21:60]
        assert target.write(0, [Item(k, 0, payload) for k in rest], replace=False) == len(rest)
        assert target.written() == {f"127.0.0.1:{a.port}": 21, f"127.0.0.1:{b.port}": len(rest)}
