"""``backupctl restore --to-redis``: a backup loaded into a running server, key by key.

Real ``redis-server`` processes on 127.0.0.1, the real CLI in a subprocess (and the
library in-process where batch sizes are forced small), a ``file://`` store or moto's S3.
Equality is Redis' own ``DEBUG DIGEST`` over every database.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
import zstandard

from backupctl.ops.restore_server import restore_to_redis
from backupctl.redis.address import parse_redis_url
from backupctl.redis.load import LoadError
from backupctl.store import catalog
from backupctl.store.backends import open_store

from support.cli_runner import assert_one_clear_error, cli
from support.redis_servers import RedisFactory, RedisServer, populate

LIBRARY = "#!lua name=backupctltest\nredis.register_function('hello', function() return 'hi' end)"


def varied_dataset(server: RedisServer, n: int = 20_000) -> int:
    """Strings, every collection type, TTLs, binary keys, three databases, a function."""
    c = server.client()
    written = populate(c, n)
    raw = server.client(decode_responses=False)
    raw.set(b"\xff\x00binary\xfe", b"\x00\x01\x02" * 100)
    raw.hset(b"h\xc3\x28", mapping={b"\xff": b"\x00"})
    big = b"x" * (3 * 1024 * 1024)
    raw.set("big:string", big)
    for db, count in ((3, 50), (15, 7)):
        other = server.client(db=db)
        for i in range(count):
            other.set(f"db{db}:k{i}", f"v{i}", ex=3600 if i % 2 else None)
        other.close()
    c.execute_command("FUNCTION", "LOAD", LIBRARY)
    return written + 3 + 50 + 7


def backup(server: RedisServer, store: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    out = cli("run", "--redis", server.url, "--to", store, "--target", "ns/src", "--json", env=env)
    manifest: dict[str, Any] = json.loads(out.stdout)
    return manifest


def test_to_redis_round_trip_equals_source_digest_across_databases_and_functions(
    redis_factory: RedisFactory, file_store: tuple[str, dict[str, str]]
) -> None:
    url, _ = file_store
    src = redis_factory(appendonly=True)
    keys = varied_dataset(src)
    digest = src.digest()
    manifest = backup(src, url)
    assert manifest["keys"] == keys

    dest = redis_factory(password="pw-secret")
    pwfile = dest.dir.parent / "pw"
    pwfile.write_text("pw-secret\n")
    out = cli(
        "restore", url, manifest["id"], "--target", "ns/src",
        "--to-redis", f"redis://127.0.0.1:{dest.port}", "--password-file", pwfile, "--json",
    )  # fmt: skip
    result = json.loads(out.stdout)
    assert result["ok"] and result["keys"] == keys and result["expired"] == 0
    assert result["databases"] == {"0": keys - 57, "3": 50, "15": 7}
    assert result["functions"] == 1
    assert "pw-secret" not in out.stdout + out.stderr
    assert dest.digest() == digest
    with dest.client() as c:
        assert c.fcall("hello", 0) == "hi"
    with dest.client(db=15) as c15:
        assert 3000 < c15.ttl("db15:k1") <= 3600
        assert c15.ttl("db15:k0") == -1


def test_to_redis_refuses_a_non_empty_target_without_flush_and_replaces_it_with_flush(
    redis_factory: RedisFactory, s3_store: tuple[str, dict[str, str]]
) -> None:
    url, env = s3_store
    src = redis_factory()
    populate(src.client(), 5_000)
    digest = src.digest()
    manifest = backup(src, url, env)

    dest = redis_factory()
    with dest.client() as c:
        c.set("precious", "data")
        c.set("key:1", "other value")  # a key the backup also has
    before = dest.digest()
    args = ["restore", url, "latest", "--target", "ns/src", "--to-redis", dest.url]
    refused = cli(*args, env=env, check=False)
    assert_one_clear_error(refused, "already holds 2 keys", "--flush")
    assert dest.digest() == before

    out = cli(*args, "--flush", env=env)
    assert f"loaded {manifest['id']}" in out.stdout
    assert dest.digest() == digest
    assert dest.client().get("precious") is None


def test_to_redis_corrupt_archive_never_flushes_the_target(
    redis_factory: RedisFactory, file_store: tuple[str, dict[str, str]]
) -> None:
    url, _ = file_store
    src = redis_factory()
    populate(src.client(), 2_000)
    manifest = backup(src, url)
    root = Path(url.removeprefix("file://"))
    archive = next((root / "ns" / "src" / manifest["id"]).glob("*.tar.zst"))
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))

    dest = redis_factory()
    dest.client().set("keep", "me")
    before = dest.digest()
    proc = cli(
        "restore", url, manifest["id"], "--target", "ns/src", "--to-redis", dest.url, "--flush",
        check=False,
    )  # fmt: skip
    assert_one_clear_error(proc)
    assert dest.digest() == before


def test_to_redis_refuses_a_cluster_missing_slots_replicas_and_bad_option_mixes(
    redis_factory: RedisFactory, file_store: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, _ = file_store
    src = redis_factory()
    populate(src.client(), 100)
    manifest = backup(src, url)
    ref = [url, manifest["id"], "--target", "ns/src"]

    cluster = redis_factory(
        extra_args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
    )
    proc = cli("restore", *ref, "--to-redis", cluster.url, check=False)
    assert_one_clear_error(proc, "serves 0 of 16384 slots")

    replica = redis_factory(extra_args=["--replicaof", "127.0.0.1", str(src.port)])
    proc = cli("restore", *ref, "--to-redis", replica.url, "--flush", check=False)
    assert_one_clear_error(proc, "replica")

    dest = redis_factory()
    both = cli("restore", *ref, "--to-redis", dest.url, "--to-dir", tmp_path, check=False)
    assert_one_clear_error(both, "exactly one of --to-dir")
    flush_dir = cli("restore", *ref, "--to-dir", tmp_path / "d", "--flush", check=False)
    assert_one_clear_error(flush_dir, "--flush goes with --to-redis")
    assert not (tmp_path / "d").exists()
    locked = redis_factory(password="right")
    wrong_pw = cli(
        "restore", *ref, "--to-redis", f"redis://:nope@127.0.0.1:{locked.port}", check=False
    )
    assert "nope" not in assert_one_clear_error(wrong_pw, "password")
    assert locked.dbsize() == 0


def test_to_redis_small_batches_adapt_to_payload_size_and_skip_expired_keys(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    """In-process with tiny batch limits: batching, a large value (over the threshold:
    rebuilt with SET + APPEND), a key whose expiry is past by the time the restore
    starts (not written, counted as expired). The restore's "now" is given, 3 minutes
    after the backup: no race with the machine's load (the key lives 2 minutes on the
    source, so the backup always holds it)."""
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    src = redis_factory()
    populate(src.client(), 3_000)
    with src.client() as c:
        c.set("huge", os.urandom(1_000_000).hex())  # 2 MB that LZF cannot shrink much
        c.set("short-lived", "1", px=120_000)
        c.set("long-lived", "1", ex=86400)
    manifest = backup(src, store_dir.as_uri())
    assert manifest["keys"] == src.dbsize()  # the backup holds short-lived
    with src.client() as c:
        c.delete("short-lived")  # what the source holds once it expired
    digest = src.digest()

    dest = redis_factory()
    store = open_store(store_dir.as_uri())
    entry = catalog.find(store, manifest["id"], "ns/src")
    reports: list[tuple[int, int, int, int]] = []  # (keys, bytes, total, keys on the target)

    def load_progress(keys: int, done: int, total: int) -> None:
        reports.append((keys, done, total, dest.dbsize() if not reports else -1))

    result = restore_to_redis(
        store, entry, parse_redis_url(dest.url), batch_keys=7, batch_bytes=10_000,
        large_value_threshold=1_000_000, now_ms=int(time.time() * 1000) + 180_000,
        load_progress=load_progress,
    )  # fmt: skip
    # The load is reported as begun before its first key is written, then as it goes.
    assert reports[0] == (0, 0, reports[0][2], 0) and reports[0][2] > 0, reports[:3]
    assert len(reports) > 2 and reports[-1][0] > 0, reports[-3:]
    assert [r[0] for r in reports] == sorted(r[0] for r in reports)
    assert result.expired == 1
    assert result.keys == src.dbsize()
    assert result.rebuilt == 1  # "huge"
    assert dest.digest() == digest
    with dest.client() as c:
        assert 86_000_000 < c.pttl("long-lived") <= 86_400_000  # the absolute expiry kept


def test_to_redis_rebuilds_large_values_of_every_type_with_commands(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    """A threshold of 64 KiB: every collection larger than it (list, set, int set,
    zset with exact float scores, hash, string) is rebuilt with bounded commands,
    its TTL kept; the digest equals the source's."""
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    src = redis_factory(server="redis-8.0")
    raw = src.client(decode_responses=False)
    n = 20_000
    raw.rpush("list", *[f"item-{i}".encode() * 3 for i in range(n)])
    raw.sadd("set", *[f"member-{i}".encode() for i in range(n)])
    raw.sadd("intset", *range(1 << 20, (1 << 20) + n))  # 4-byte integers: 80 KB
    raw.zadd("zset", {f"m{i}".encode(): i / 7 + 1e-9 for i in range(n)})
    raw.zadd("zset", {b"inf": float("inf"), b"-inf": float("-inf")})
    raw.hset("hash", mapping={f"f{i}".encode(): f"v{i}".encode() * 4 for i in range(n)})
    raw.set("string", os.urandom(400_000))
    raw.pexpire("hash", 3_600_000)
    raw.set("small", b"v")
    digest = src.digest()
    manifest = backup(src, store_dir.as_uri())
    dest = redis_factory(server="redis-8.0")
    entry = catalog.find(open_store(store_dir.as_uri()), manifest["id"], "ns/src")
    result = restore_to_redis(
        open_store(store_dir.as_uri()), entry, parse_redis_url(dest.url),
        large_value_threshold=64 * 1024,
    )  # fmt: skip
    assert result.rebuilt == 6 and result.keys == 7  # all but "small"
    assert dest.digest() == digest
    assert 0 < dest.client().pttl("hash") <= 3_600_000
    assert not [k for k in dest.client().keys("*") if "backupctl-tmp" in k]


def test_to_redis_newer_rdb_into_older_server_relabels_or_rebuilds(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    """Redis 8.0 (RDB 12) into Redis 7.0 (RDB 10): strings and hashes keep their type
    ids (payloads relabelled 10), sets in a listpack (type 20, unknown to 7.0) are
    rebuilt with SADD; the digest equals the source's. No local server involved."""
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    src = redis_factory(server="redis-8.0")
    c = src.client()
    for i in range(500):
        c.set(f"s{i}", f"v{i}", ex=3600 if i % 3 else None)
        c.hset(f"h{i % 40}", f"f{i}", i)
        c.rpush(f"l{i % 30}", i)
    for i in range(50):
        c.sadd(f"lp-set:{i}", "a", "b", f"c{i}")
    digest = src.digest()
    manifest = backup(src, store_dir.as_uri())
    dest = redis_factory(server="redis-7.0")
    out = cli("restore", store_dir.as_uri(), manifest["id"], "--target", "ns/src",
              "--to-redis", dest.url, "--json", env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    result = json.loads(out.stdout)
    assert result["rebuilt"] >= 50 and result["relabelled"] > 0
    assert dest.digest() == digest


@pytest.mark.parametrize("ref", ["latest", "backup-20000101-000000"])
def test_to_redis_missing_backup_is_one_clear_error(
    ref: str, redis_factory: RedisFactory, file_store: tuple[str, dict[str, str]]
) -> None:
    url, _ = file_store
    dest = redis_factory()
    proc = cli("restore", url, ref, "--target", "ns/src", "--to-redis", dest.url, check=False)
    assert_one_clear_error(proc)


def stream_state(server: RedisServer) -> dict[str, Any]:
    """What a stream's users see: entries (DEBUG DIGEST), XINFO STREAM counters,
    groups with their last-delivered ID / entries read / lag, each pending entry's
    consumer and delivery count, the consumers."""
    c = server.client()
    out: dict[str, Any] = {"digest": server.digest()}
    for key in sorted(str(k) for k in c.keys("*") if c.type(k) == "stream"):
        info = c.xinfo_stream(key)
        out[key] = {f: info.get(f) for f in ("length", "last-generated-id",
                    "max-deleted-entry-id", "entries-added", "groups")}  # fmt: skip
        for g in c.xinfo_groups(key):
            name = str(g["name"])
            pending = c.xpending_range(key, name, "-", "+", 10_000)
            out[f"{key}/{name}"] = (
                {f: g.get(f) for f in ("last-delivered-id", "entries-read", "lag", "pending")},
                [(p["message_id"], p["consumer"], p["times_delivered"]) for p in pending],
                sorted(x["name"] for x in c.xinfo_consumers(key, name)),
            )
    return out


@pytest.mark.parametrize("target_server", ["redis-8.0", "redis-7.0"])
def test_to_redis_rebuilds_streams_with_groups_pending_entries_and_deletions(
    redis_factory: RedisFactory, tmp_path: Path, target_server: str
) -> None:
    """Redis 8.0 streams: one over a 64 KiB threshold (entries with other fields,
    deletions, two groups, pending entries of two consumers, a consumer with none,
    a TTL), a small one, an empty one made by MKSTREAM. Into Redis 8.0 the big one
    is rebuilt with commands; into Redis 7.0 (which has no RDB type 21) all three.
    DEBUG DIGEST, XINFO counters, groups, pending entries and consumers equal."""
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    src = redis_factory(server="redis-8.0")
    c = src.client()
    pipe = c.pipeline(transaction=False)
    for i in range(3000):
        fields: dict[Any, Any] = {"n": str(i), "payload": os.urandom(16).hex()}
        if i % 100 == 7:
            fields["extra"] = "x"
        pipe.xadd("big", fields, id=f"{1000 + i // 3}-{i % 3}")
    pipe.xadd("small", {"a": "1"})
    pipe.execute()
    c.xdel("big", "1000-1", "1500-0", "1999-2")  # the last entry too: max deleted ID
    c.xgroup_create("big", "workers", id="0")
    c.xreadgroup("workers", "alice", {"big": ">"}, count=40)
    c.xreadgroup("workers", "bob", {"big": ">"}, count=25)
    c.xreadgroup("workers", "bob", {"big": "0"}, count=5)  # delivered twice
    c.xack("big", "workers", "1000-0")
    c.xgroup_createconsumer("big", "workers", "carol")
    c.xgroup_create("big", "late", id="$")
    c.pexpire("big", 3_600_000)
    c.xgroup_create("small", "g", id="0")
    c.xgroup_create("empty", "g", id="$", mkstream=True)
    before = stream_state(src)
    manifest = backup(src, store_dir.as_uri())
    dest = redis_factory(server=target_server)
    out = cli("restore", store_dir.as_uri(), manifest["id"], "--target", "ns/src",
              "--to-redis", dest.url, "--large-value-threshold", "64KiB", "--json")  # fmt: skip
    result = json.loads(out.stdout)
    assert result["rebuilt"] == (1 if target_server == "redis-8.0" else 3)
    assert stream_state(dest) == before
    assert 0 < dest.client().pttl("big") <= 3_600_000
    assert not [k for k in dest.client().keys("*") if "backupctl-tmp" in k]


def test_to_redis_no_tmp_loads_with_no_writable_temp_folder(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    """--no-tmp with TMPDIR read-only and no redis-server (nor any other program) on
    PATH: the default route cannot unpack there and says so; --no-tmp streams the
    archive twice and loads an equal digest."""
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    src = redis_factory()
    keys = varied_dataset(src, 5_000)
    digest = src.digest()
    manifest = backup(src, store_dir.as_uri())
    readonly = tmp_path / "ro"
    readonly.mkdir(mode=0o555)
    no_programs = tmp_path / "bin"
    no_programs.mkdir()
    env = {"TMPDIR": str(readonly), "PATH": str(no_programs)}
    dest = redis_factory()
    args = ("restore", store_dir.as_uri(), manifest["id"], "--target", "ns/src", "--to-redis",
            dest.url)  # fmt: skip
    if os.geteuid() != 0:  # root writes into a 0555 folder
        unpacking = cli(*args, env=env, check=False)
        assert unpacking.returncode != 0 and dest.dbsize() == 0
    out = cli(*args, "--no-tmp", "--json", env=env)
    assert json.loads(out.stdout)["keys"] == keys
    assert dest.digest() == digest
    assert list(readonly.iterdir()) == []
    both = cli(*args, "--no-tmp", "--tmp-dir", str(tmp_path), check=False)
    assert_one_clear_error(both, "--no-tmp", "--tmp-dir")


class ChangesAfterFirstRead:
    """A store whose archive object reads back changed from the second time on (an
    object overwritten between the passes): one RDB byte flipped at ``at``."""

    def __init__(self, store: Any, archive_key: str, at: float) -> None:
        self._store = store
        self._key = archive_key
        self._at = at
        self.opened = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def open(self, key: str) -> Any:
        if not key.endswith(self._key):
            return self._store.open(key)
        self.opened += 1
        with self._store.open(key) as fh:
            data = fh.read()
        if self.opened == 1:
            return io.BytesIO(data)
        tar = bytearray(zstandard.ZstdDecompressor().decompressobj().decompress(data))
        with tarfile.open(fileobj=io.BytesIO(bytes(tar))) as t:
            rdb = next(m for m in t.getmembers() if m.name.endswith(".rdb"))
        tar[rdb.offset_data + int(rdb.size * self._at)] ^= 0xFF
        return io.BytesIO(zstandard.ZstdCompressor().compress(bytes(tar)))


def test_to_redis_no_tmp_stops_when_the_store_changes_between_the_passes(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    """The first pass verifies the archive; the stored object then changes past the
    RDB's first 4 MiB block: the second pass loads the verified blocks and stops at
    the changed one, before parsing it, naming the keys written so far and the last."""
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    src = redis_factory()
    c = src.client()
    pipe = c.pipeline(transaction=False)
    for i in range(60_000):  # ~13 MiB of RDB: three full blocks, then the rest
        pipe.set(f"k{i}", os.urandom(100).hex())
    pipe.execute()
    manifest = backup(src, store_dir.as_uri())
    store = open_store(store_dir.as_uri())
    entry = catalog.find(store, manifest["id"], "ns/src")
    assert entry.manifest is not None
    changed = ChangesAfterFirstRead(store, entry.manifest.nodes[0].archive.key, 0.6)
    dest = redis_factory()
    with pytest.raises(LoadError) as err:
        restore_to_redis(changed, entry, parse_redis_url(dest.url), no_tmp=True)
    message = str(err.value)
    assert changed.opened == 2 and "changed after it was verified" in message, message
    written = dest.dbsize()
    assert 0 < written < 60_000
    assert f"keys written so far: {written}, the last 'k" in message, message
    last = message.rsplit("the last ", 1)[1].strip("'")
    assert dest.client().exists(last)
