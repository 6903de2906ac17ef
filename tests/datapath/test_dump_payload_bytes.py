"""Our DUMP payloads, built from the RDB's value bytes, against the real ``DUMP``.

On every server of the matrix (Redis 7.0 and 8.0, Valkey 8.1 and 9.1): values of
every type in every encoding the server picks at these sizes (int / short / long
LZF-compressed strings, listpack and quicklist lists, intset / listpack /
hashtable sets, listpack and skiplist zsets, listpack and hashtable hashes, with
field TTLs where the server has them, a stream with deletions and a consumer group
with pending entries) are saved, the RDB is walked by
:class:`backupctl.redis.rdb_keys.RdbKeys`, and the payload ``restore --to-redis``
would send for each key is byte for byte the server's own ``DUMP`` of it.
"""

from __future__ import annotations

import random
import time

import pytest
import redis

from backupctl.redis.dump_payload import dump_payload
from backupctl.redis.rdb_keys import KeyValue, RdbKeys

from support.redis_servers import RedisFactory
from support.server_versions import SERVERS


def fill(c: redis.Redis, field_ttls: bool) -> None:
    rnd = random.Random(5)
    c.set("int", 123456789)
    c.set("short", "hello")
    c.set("raw", rnd.randbytes(200))
    c.set("lzf", b"compressible-" * 300)
    c.rpush("list:lp", *[f"i{j}" for j in range(10)], 7, -70000)
    c.rpush("list:ql", *[rnd.randbytes(40) for _ in range(600)])
    c.sadd("set:int", *range(0, 300, 3))
    c.sadd("set:lp", *[f"m{j}" for j in range(10)])
    c.sadd("set:ht", *[f"member-{j}" for j in range(700)])
    c.zadd("zset:lp", {f"z{j}": j * 1.5 for j in range(10)})
    c.zadd("zset:sl", {f"member-{j}": rnd.random() * 1e6 for j in range(300)})
    c.hset("hash:lp", mapping={f"f{j}": f"v{j}" for j in range(10)})
    c.hset("hash:ht", mapping={f"field-{j}": rnd.randbytes(20) for j in range(700)})
    c.set("ttl", "x", ex=3600)
    for j in range(60):
        c.xadd("stream", {"n": j, "p": rnd.randbytes(8)}, id=f"{j + 1}-1")
    c.xdel("stream", "5-1")
    c.xgroup_create("stream", "g", id="0")
    c.xreadgroup("g", "alice", {"stream": ">"}, count=5)
    if field_ttls:
        for name, n in (("hash:ttl-lp", 6), ("hash:ttl-ht", 700)):
            c.hset(name, mapping={f"f{j}": f"v{j}" for j in range(n)})
            c.execute_command("HEXPIRE", name, 3600, "FIELDS", 2, "f0", "f1")


@pytest.mark.parametrize("server_id", list(SERVERS))
def test_payload_from_rdb_bytes_is_the_servers_own_dump(
    redis_factory: RedisFactory, server_id: str
) -> None:
    server = SERVERS[server_id]
    mm = tuple(int(x) for x in server.version.split(".")[:2])
    field_ttls = mm >= ((7, 4) if server.flavour == "redis" else (9, 0))
    srv = redis_factory(server=server_id)
    c = srv.client(decode_responses=False)
    fill(c, field_ttls)
    c.save()
    compared = []
    with open(srv.dir / "dump.rdb", "rb") as fh:
        walk = RdbKeys(fh, int(time.time() * 1000), 1 << 30)
        for rec in walk.records():
            if isinstance(rec, KeyValue):
                assert dump_payload(rec.raw, walk.version) == c.dump(rec.key), rec.key
                compared.append(rec.key)
    assert walk.version == server.rdb_version
    assert len(compared) == c.dbsize() == 15 + (2 if field_ttls else 0)
