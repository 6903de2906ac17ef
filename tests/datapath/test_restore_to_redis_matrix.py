"""``restore --to-redis`` proven on data that uses everything an RDB can hold.

The real CLI in a subprocess (black box), real servers of the version matrix
(tests/support/server_versions.py), the dataset of tests/support/datasets.py:
every type in every encoding the server has (plain quicklist nodes, intset,
listpack sets, exact doubles, hash-field TTLs, streams with deleted entries,
consumer groups and pending entries), TTLs far and near, keys whose TTL ends
between backup and restore, several databases, a Functions library, binary
keys. After each restore the target must show what a user compares: DEBUG
DIGEST, keys per database, the Functions libraries (with code), each key's
absolute expiry time (and each hash field's) within a tolerance.

- the same version into the same version, for every server;
- across versions: Redis 7.0 -> 8.0, Valkey 8.1 -> 9.1, Redis 7.0 -> Valkey
  9.1 (zsets whose scores print differently on 7.0 are compared by value);
- into a Redis Cluster: per-key DEBUG DIGEST-VALUE and the DBSIZE sum;
- values far above ``--large-value-threshold 1MiB`` (20 MiB of string, list,
  set, zset, hash with field TTLs, stream with a consumer group), with the
  restore's peak RSS <= 100 MiB;
- ``--no-tmp``: the same data, no archive in the temp folder (the default
  run, first, shows the archive there);
- a PATH without any ``redis-server`` / ``valkey-server``.

On main (before issue 12) ``--to-redis`` reads the backup with a local
``redis-server``: the tests that pass the target's own tools on PATH pass
there; the large-value, ``--no-tmp`` and no-server tests need issue 12.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.cli_runner import cli
from support.datasets import (
    LIBRARY_NAME,
    Written,
    exact_scores_of,
    fill_big_values,
    fill_bulk,
    fill_full,
    on_db,
)
from support.peak_rss import PeakTracker
from support.redis_cluster import make_cluster
from support.redis_servers import RedisFactory, RedisServer
from support.server_versions import SERVERS

TARGET = "mx"
TTL_TOLERANCE_MS = 1500
ToolsEnv = Callable[[str], dict[str, str]]

#: the encodings each server must have produced (the dataset's promise, checked here)
ENCODINGS_7_0 = {
    "string:int", "string:embstr", "string:raw", "list:quicklist", "set:intset",
    "set:hashtable", "zset:listpack", "zset:skiplist", "hash:listpack", "hash:hashtable",
    "stream:stream",
}  # fmt: skip
ENCODINGS = {
    "redis-7.0": ENCODINGS_7_0,
    "redis-8.0": ENCODINGS_7_0 | {"list:listpack", "set:listpack", "hash:listpackex"},
    "valkey-8.1": ENCODINGS_7_0 | {"list:listpack", "set:listpack"},
    "valkey-9.1": ENCODINGS_7_0 | {"list:listpack", "set:listpack"},
}


# -- what a user compares -----------------------------------------------------------------


@dataclass(frozen=True)
class State:
    keys: dict[int, int]  # keys per database
    digest: str  # DEBUG DIGEST over every database
    functions: tuple[tuple[str, str], ...]  # (library name, code)
    streams: dict[Any, Any]  # what DEBUG DIGEST leaves out of a stream: ids, groups, PELs


#: XINFO STREAM FULL fields every server of the matrix reports the same way
STREAM_FIELDS = ("length", "last-generated-id", "max-deleted-entry-id", "entries-added",
                 "recorded-first-entry-id")  # fmt: skip
GROUP_FIELDS = ("name", "last-delivered-id", "entries-read", "lag", "pel-count")


def streams_of(server: RedisServer) -> dict[Any, Any]:
    """Per stream key: its ids and counters, and each consumer group with its
    pending entries (id, consumer, delivery count) and consumers (DEBUG DIGEST
    hashes a stream's entries only)."""
    with server.client() as c:
        dbs = [int(db[2:]) for db in c.info("keyspace")]
    out: dict[Any, Any] = {}
    for db in dbs:
        with on_db(server.client(), db) as c:
            for key in c.scan_iter(count=1000, _type="stream"):
                info = c.execute_command("XINFO", "STREAM", key, "FULL", "COUNT", 100_000)
                out[(db, key)] = _stream_state(info)
    return out


def _stream_state(raw: Any) -> Any:
    info = _as_dict(raw)
    groups = []
    for g in info[b"groups"]:
        group = _as_dict(g)
        pending = sorted((p[0], p[1], p[3]) for p in group[b"pending"])
        consumers = []
        for each in group[b"consumers"]:
            consumer = _as_dict(each)
            own = tuple(sorted((p[0], p[2]) for p in consumer[b"pending"]))
            consumers.append((consumer[b"name"], consumer[b"pel-count"], own))
        fields = tuple(group.get(f.encode()) for f in GROUP_FIELDS)
        groups.append((fields, tuple(pending), tuple(sorted(consumers))))
    return tuple(info.get(f.encode()) for f in STREAM_FIELDS), tuple(sorted(groups, key=repr))


def _as_dict(reply: Any) -> dict[bytes, Any]:
    return reply if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2], strict=True))


def functions_of(server: RedisServer) -> tuple[tuple[str, str], ...]:
    with server.client(decode_responses=False) as c:
        listing = c.execute_command("FUNCTION", "LIST", "WITHCODE")
    out = []
    for lib in listing:
        fields = lib if isinstance(lib, dict) else dict(zip(lib[::2], lib[1::2], strict=True))
        fields = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}
        out.append((fields["library_name"].decode(), fields["library_code"].decode()))
    return tuple(sorted(out))


def state(server: RedisServer) -> State:
    with server.client() as c:
        keyspace = c.info("keyspace")
        digest = str(c.execute_command("DEBUG", "DIGEST"))
    keys = {int(db[2:]): int(v["keys"]) for db, v in keyspace.items()}
    return State(
        keys=keys, digest=digest, functions=functions_of(server), streams=streams_of(server)
    )


def expiries(server: RedisServer, written: Written) -> dict[Any, int]:
    """Absolute expiry (ms) of every key that has one, and of every hash field
    with a TTL in ``written.field_ttls``."""
    out: dict[Any, int] = {}
    with server.client() as c:
        dbs = [int(db[2:]) for db in c.info("keyspace")]
    for db in dbs:
        with on_db(server.client(), db) as c:
            keys = list(c.scan_iter(count=1000))
            pipe = c.pipeline(transaction=False)
            for key in keys:
                pipe.execute_command("PEXPIRETIME", key)
            out.update(
                {(db, k): int(t) for k, t in zip(keys, pipe.execute(), strict=True) if t > 0}
            )
    for db, key in written.field_ttls:
        with on_db(server.client(), db) as c:
            fields = c.hkeys(key)
            times = c.execute_command("HPEXPIRETIME", key, "FIELDS", len(fields), *fields)
        out.update({(db, key, f): int(t) for f, t in zip(fields, times, strict=True) if t > 0})
    return out


def assert_same_expiries(got: dict[Any, int], want: dict[Any, int]) -> None:
    assert len(want) >= 3, "nothing with a TTL to compare"
    assert got.keys() == want.keys(), sorted(got.keys() ^ want.keys())[:5]
    off = {k: got[k] - want[k] for k in want if abs(got[k] - want[k]) > TTL_TOLERANCE_MS}
    assert not off, f"{len(off)} expiry times off by more than {TTL_TOLERANCE_MS} ms: {off}"


def drop(server: RedisServer, keys: list[tuple[int, bytes]]) -> None:
    for db, key in keys:
        with on_db(server.client(), db) as c:
            c.delete(key)


# -- running the CLI ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tools_env(tmp_path_factory: pytest.TempPathFactory) -> ToolsEnv:
    """PATH starting with that server's own ``redis-server`` etc. (what main's
    ``--to-redis`` reads a backup with; ignored once it needs none)."""
    made: dict[str, dict[str, str]] = {}

    def env(server_id: str) -> dict[str, str]:
        if server_id not in made:
            folder = SERVERS[server_id].write_tools(tmp_path_factory.mktemp(f"tools-{server_id}"))
            made[server_id] = {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}
        return made[server_id]

    return env


@pytest.fixture(scope="module")
def no_server_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PATH: one folder linking every program of today's PATH except redis-* and valkey-*."""
    folder = tmp_path_factory.mktemp("path-without-servers")
    for entry in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(entry):
            continue
        for item in os.scandir(entry):
            name = item.name
            if name.startswith(("redis-", "valkey-")) or (folder / name).exists():
                continue
            if item.is_file() and os.access(item.path, os.X_OK):
                (folder / name).symlink_to(item.path)
    path = str(folder)
    for name in ("redis-server", "valkey-server", "redis-check-rdb"):
        assert shutil.which(name, path=path) is None
    assert shutil.which("tar", path=path) and shutil.which("sh", path=path)
    return {"PATH": path}


def new_store(tmp_path: Path) -> str:
    folder = tmp_path / "store"
    folder.mkdir()
    return folder.as_uri()


def backup(source: RedisServer, store: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    out = cli("run", "--redis", source.url, "--to", store, "--target", TARGET, "--json", env=env)
    manifest: dict[str, Any] = json.loads(out.stdout)
    return manifest


def restore(store: str, url: str, *extra: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    out = cli("restore", store, "latest", "--target", TARGET, "--to-redis", url, "--json", *extra,
              env=env, timeout=600)  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout)
    assert result["ok"], result
    return result


def timed_restore(
    store: str, url: str, *extra: str, env: dict[str, str], logs: Path, watch: Path | None = None
) -> tuple[dict[str, Any], float, int]:
    """The CLI as a child: (its --json result, the peak RSS MiB of it and its
    children, the most bytes seen under ``watch`` meanwhile).

    The peak is the largest ``VmHWM`` of the tree, polled every 5 ms
    (:mod:`support.peak_rss`; not wait4's ``ru_maxrss``, which counted
    pytest's own 456 MiB in CI)."""
    argv = [sys.executable, "-m", "backupctl", "restore", store, "latest", "--target", TARGET,
            "--to-redis", url, "--json", *extra]  # fmt: skip
    out_file = logs / f"restore-{os.getpid()}-{time.time_ns()}"
    with open(out_file, "w+b") as out, open(f"{out_file}.err", "w+b") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env={**os.environ, **env})
        most, deadline = 0, time.monotonic() + 600
        peak = PeakTracker(proc.pid)
        while True:
            peak.sample()
            if proc.poll() is not None:
                break
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise AssertionError("restore did not end within 600 s")
            if watch is not None:
                most = max(most, _bytes_under(watch))
            time.sleep(0.005)
        out.seek(0)
        err.seek(0)
        assert proc.returncode == 0, (proc.returncode, err.read().decode(errors="replace"))
        result: dict[str, Any] = json.loads(out.read())
    assert result["ok"], result
    return result, peak.largest_mib, most


def _bytes_under(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name), follow_symlinks=False).st_size
            except OSError:
                continue
    return total


# -- the same version ---------------------------------------------------------------------


@pytest.mark.parametrize("server_id", list(SERVERS))
def test_every_type_and_encoding_loads_into_the_same_version_with_ttls_and_functions(
    server_id: str, redis_factory: RedisFactory, tools_env: ToolsEnv, tmp_path: Path
) -> None:
    source = redis_factory(server=server_id)
    soon = 4000
    ends_at = time.monotonic() + soon / 1000
    written = fill_full(source.client(), expiring_ms=soon)
    assert ENCODINGS[server_id] <= written.encodings, ENCODINGS[server_id] - written.encodings
    assert written.functions == [LIBRARY_NAME] and len(written.keys_per_db()) == 3
    store = new_store(tmp_path)
    manifest = backup(source, store)
    in_backup = manifest["keys"] - (written.keys - len(written.expiring))
    assert 0 < in_backup <= len(written.expiring)  # the backup holds keys about to expire
    time.sleep(max(0.0, ends_at - time.monotonic()) + 0.2)
    drop(source, written.expiring)  # gone on the source too (lazy expiry may not have run)

    target = redis_factory(server=server_id)
    result = restore(store, target.url, env=tools_env(server_id))
    assert result["expired"] == in_backup
    assert result["keys"] == written.keys - len(written.expiring)
    assert result["functions"] == 1
    expected = state(source)
    assert len(expected.streams) == 5  # two with consumer groups
    assert sum(1 for _, groups in expected.streams.values() if groups) == 2
    assert state(target) == expected
    want = expiries(source, written)
    assert any(len(k) == 3 for k in want) == bool(written.field_ttls)  # hash fields' TTLs
    assert_same_expiries(expiries(target, written), want)
    with target.client() as c:
        assert c.fcall("ds_answer", 0) == 42


# -- across versions ----------------------------------------------------------------------

CROSS = [("redis-7.0", "redis-8.0"), ("valkey-8.1", "valkey-9.1"), ("redis-7.0", "valkey-9.1")]


@pytest.mark.parametrize(("source_id", "target_id"), CROSS, ids=[f"{s}-into-{t}" for s, t in CROSS])
def test_a_backup_of_an_older_server_loads_into_a_newer_one_with_the_same_data(
    source_id: str, target_id: str, redis_factory: RedisFactory, tools_env: ToolsEnv,
    tmp_path: Path,
) -> None:  # fmt: skip
    source = redis_factory(server=source_id)
    written = fill_full(source.client(), seed=7)
    store = new_store(tmp_path)
    backup(source, store)
    target = redis_factory(server=target_id)
    result = restore(store, target.url, env=tools_env(target_id))
    assert result["keys"] == written.keys and result["expired"] == 0

    # 7.0 prints doubles with %.17g, 7.2+ in the shortest form, and DEBUG DIGEST hashes
    # that text: these zsets are compared by value (bit-exact), then left out
    exact = exact_scores_of(target.client(), written.exact_scores)
    assert exact == exact_scores_of(source.client(), written.exact_scores)
    assert any(s == float("inf").hex() for _, s in next(iter(exact.values())))
    drop(source, written.exact_scores)
    drop(target, written.exact_scores)
    assert state(target) == state(source)
    assert_same_expiries(expiries(target, written), expiries(source, written))


# -- into a cluster -----------------------------------------------------------------------


def digests_by_key(nodes: list[RedisServer]) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for node in nodes:
        with node.client(decode_responses=False) as c:
            keys = list(c.scan_iter(count=1000))
            if keys:
                values = c.execute_command("DEBUG", "DIGEST-VALUE", *keys)
                assert not out.keys() & set(keys), "a key on two masters"
                out.update(zip(keys, values, strict=True))
    return out


def test_a_standalone_backup_loads_into_a_cluster_with_every_key_equal(
    redis_factory: RedisFactory, tools_env: ToolsEnv, tmp_path: Path
) -> None:
    source = redis_factory(server="redis-8.0")
    written = fill_full(source.client(), databases=(0,), seed=5)
    # over the load's 4 MiB hold: not held, so rebuilt with commands into a cluster
    written.merge(fill_big_values(source.client(), 6 << 20, types=("string", "hash")))
    store = new_store(tmp_path)
    backup(source, store)
    masters = make_cluster(redis_factory, server="redis-8.0")
    result = restore(store, masters[1].url, env=tools_env("redis-8.0"))

    assert result["keys"] == written.keys and result["rebuilt"] == 2
    assert sum(result["masters"].values()) == written.keys
    assert sum(m.dbsize() for m in masters) == written.keys
    assert all(m.dbsize() > 0 for m in masters)
    assert digests_by_key(masters) == digests_by_key([source])
    assert {functions_of(m) for m in masters} == {functions_of(source)}
    streams: dict[Any, Any] = {}
    for m in masters:
        streams.update(streams_of(m))
    assert streams == streams_of(source) and len(streams) == 3
    got: dict[Any, int] = {}
    for m in masters:
        got.update(expiries(m, Written()))
    assert_same_expiries(got, expiries(source, Written()))


# -- issue 12: streaming from the archive ---------------------------------------------------


def test_values_far_above_the_large_value_threshold_load_equal_with_bounded_memory(
    redis_factory: RedisFactory, no_server_env: dict[str, str], tmp_path: Path
) -> None:
    """20 MiB of each type against --large-value-threshold 1MiB: the chunked path
    (SET+APPEND, RPUSH, SADD, ZADD, HSET with field TTLs, XADD + consumer group).
    Then the same backup with the default threshold (64 MiB): each value is
    over the 4 MiB the load holds, so its RESTORE payload is sent from the
    verified RDB file, never held: equal data, and a peak no higher than the
    chunked run's (which holds only its command batches) plus a little."""
    source = redis_factory(server="redis-8.0")
    written = fill_big_values(source.client(), 20 << 20)
    with source.client(decode_responses=False) as c:
        fields = c.hkeys("big:hash")[::50]
        c.execute_command("HEXPIRE", "big:hash", 86_400, "FIELDS", len(fields), *fields)
        c.expire("big:list", 3600)
        c.expire("big:stream", 7200)
    written.field_ttls.append((0, b"big:hash"))
    written.merge(fill_full(source.client(), databases=(0, 2), small_keys=50, seed=9))
    store = new_store(tmp_path)
    backup(source, store)
    target = redis_factory(server="redis-8.0")

    result, rss_mib, _ = timed_restore(
        store, target.url, "--large-value-threshold", "1MiB", env=no_server_env, logs=tmp_path
    )
    assert result["keys"] == written.keys
    assert state(target) == state(source)
    assert_same_expiries(expiries(target, written), expiries(source, written))
    assert rss_mib <= 100, f"peak RSS {rss_mib:.0f} MiB for 120 MiB of big values (goal 100)"

    sent, sent_mib, _ = timed_restore(store, target.url, "--flush", env=no_server_env,
                                      logs=tmp_path)  # fmt: skip
    assert sent["keys"] == written.keys and sent["rebuilt"] == 0
    assert state(target) == state(source)
    assert_same_expiries(expiries(target, written), expiries(source, written))
    # holding one 20 MiB payload costs 40+ MiB (its bytes, the payload, the packed command)
    assert sent_mib <= rss_mib + 12, f"peak {sent_mib:.0f} MiB vs {rss_mib:.0f} MiB chunked"


def test_no_tmp_loads_the_same_data_without_an_archive_in_the_temp_folder(
    redis_factory: RedisFactory,
    s3_store: tuple[str, dict[str, str]],
    no_server_env: dict[str, str],
    tools_env: ToolsEnv,
    tmp_path: Path,
) -> None:
    url, s3_env = s3_store
    source = redis_factory()
    written = fill_bulk(source.client(), 2_000, 8 * 1024, seed=11)  # 16 MiB, ~8 MiB zstd
    written.merge(fill_full(source.client(), small_keys=100, seed=12))
    # over the load's 4 MiB hold: sent from the unpacked file, or with --no-tmp rebuilt
    written.merge(fill_big_values(source.client(), 6 << 20, types=("hash",)))
    manifest = backup(source, url, s3_env)
    archive_size = sum(n["archive"]["size"] for n in manifest["nodes"])
    target = redis_factory()
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    # the default run downloads the archive into the temp folder: the sign we watch for
    env = {**s3_env, **tools_env("redis-7.0"), "TMPDIR": str(scratch)}
    first, _, most = timed_restore(url, target.url, env=env, logs=tmp_path, watch=scratch)
    assert first["keys"] == written.keys and state(target) == state(source)
    assert first["rebuilt"] == 0
    assert most >= archive_size // 2, (most, archive_size)

    with target.client() as c:
        c.set("bulk:1", "changed")
    second, _, most = timed_restore(url, target.url, "--no-tmp", "--flush",
                                    env={**s3_env, **no_server_env, "TMPDIR": str(scratch)},
                                    logs=tmp_path, watch=scratch)  # fmt: skip
    assert second["keys"] == written.keys and second["rebuilt"] == 1
    assert state(target) == state(source)
    assert most < 1 << 20, f"{most} bytes in the temp folder with --no-tmp"


@pytest.mark.parametrize("server_id", ["redis-7.0", "valkey-9.1"])
def test_to_redis_needs_no_redis_server_on_path(
    server_id: str, redis_factory: RedisFactory, no_server_env: dict[str, str], tmp_path: Path
) -> None:
    source = redis_factory(server=server_id)
    written = fill_full(source.client(), seed=13, small_keys=100)
    store = new_store(tmp_path)
    backup(source, store)
    target = redis_factory(server=server_id)
    result = restore(store, target.url, env=no_server_env)
    assert result["keys"] == written.keys
    assert state(target) == state(source)
