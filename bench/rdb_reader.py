"""The RDB reader's throughput beside redis-check-rdb, zstd -1 and sha256sum (not a test).

Run: ``.venv/bin/python bench/rdb_reader.py [--size-mib 600] [--value-kib 4]``

One invocation, one file, so the ratios compare like with like on a noisy
machine:

1. a throwaway system ``redis-server`` is filled with ``DEBUG POPULATE``
   (values of a few KiB; ``rdbcompression no`` so the file really is
   ~SIZE MiB, as a snapshot of incompressible data would be) plus small
   hashes, sets, sorted sets and lists (listpack blobs for the deep walk),
   and SAVEd;
2. on its ``dump.rdb``, each timed once, page cache warm (one untimed read
   first): ``redis-check-rdb``, ``zstd -1``, ``sha256sum``, our reader with
   ``deep=False`` (what the backup pipeline runs) and ``deep=True`` (verify
   and restore).

Goal (issue 11): deep=False at ~300 MiB/s or more, so that the reader keeps
pace with ``zstd -1`` in the backup pipeline.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backupctl.redis.rdb_reader import read_rdb_file  # noqa: E402

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def make_rdb(work: Path, size_mib: int, value_kib: int) -> Path:
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--bind", HOST, "--port", str(port), "--dir", str(work),
         "--save", "", "--appendonly", "no", "--enable-debug-command", "local",
         "--rdbcompression", "no"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = redis.Redis(host=HOST, port=port)
        for _ in range(400):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        count = size_mib * 1024 // value_kib
        client.execute_command("DEBUG", "POPULATE", count, "key", value_kib * 1024)
        pipe = client.pipeline(transaction=False)
        for i in range(20000):
            pipe.hset(f"h:{i}", mapping={"name": f"n{i}", "age": i % 90, "city": "x" * 12})
            pipe.zadd(f"z:{i % 2000}", {f"m{i}": i})
            pipe.sadd(f"s:{i % 2000}", f"member{i}")
            pipe.rpush(f"l:{i % 2000}", f"item{i}")
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()
        client.save()
        client.close()
        return work / "dump.rdb"
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def timed_cmd(cmd: str) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size-mib", type=int, default=600)
    ap.add_argument("--value-kib", type=int, default=4)
    args = ap.parse_args()
    for tool in ("redis-server", "redis-check-rdb", "zstd", "sha256sum"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: run scripts/bootstrap.sh")
    work = Path(tempfile.mkdtemp(prefix="backupctl-rdb-bench-"))
    try:
        start = time.perf_counter()
        rdb = make_rdb(work, args.size_mib, args.value_kib)
        mib = rdb.stat().st_size / (1 << 20)
        print(f"RDB: {mib:.0f} MiB, made in {time.perf_counter() - start:.0f} s")
        timed_cmd(f"cat {rdb} > /dev/null")  # page cache warm for every contender
        results: dict[str, float] = {
            "redis-check-rdb 7.0": timed_cmd(f"redis-check-rdb {rdb}"),
            "zstd -1": timed_cmd(f"zstd -1 -q -c {rdb} > /dev/null"),
            "sha256sum": timed_cmd(f"sha256sum {rdb}"),
        }
        for deep in (False, True):
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            start = time.perf_counter()
            report = read_rdb_file(rdb, deep=deep)
            results[f"reader deep={deep}"] = time.perf_counter() - start
            rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            print(
                f"reader deep={deep}: {report.total_keys} keys, types {report.types}, "
                f"peak RSS {rss_after / 1024:.0f} MiB (grew {(rss_after - rss_before) / 1024:.0f})"
            )
        check = results["redis-check-rdb 7.0"]
        print(f"\n{'contender':<22} {'seconds':>8} {'MiB/s':>8} {'vs check-rdb':>13}")
        for name, seconds in results.items():
            print(f"{name:<22} {seconds:8.2f} {mib / seconds:8.0f} {check / seconds:12.2f}x")
        zstd = results["zstd -1"]
        for deep in (False, True):
            ratio = zstd / results[f"reader deep={deep}"]
            print(f"reader deep={deep} throughput / zstd -1 throughput: {ratio:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
