"""Restore throughput and memory, beside what the server and plain tools do (not a test).

Run: ``.venv/bin/python bench/restore_throughput.py [--size 1GiB] [--big-hash 300MiB]``
(default ``--size 64MiB``: a smoke run of about a minute).

One invocation, one dataset, so the ratios compare like with like on a noisy
machine:

1. a throwaway server (``--server``, default Debian 12's Redis 7.0) is filled
   with SIZE of small strings (``--value-bytes``, distinct, partly compressible:
   tests/support/datasets.py), of which ``--big-hash`` goes to one hash built
   in bounded pipelines; SAVE gives the RDB, DEBUG DIGEST the reference;
2. ``backupctl run`` to a ``file://`` store and to moto's S3 server;
3. baseline: the same server version started on that ``dump.rdb``, timed from
   spawn until ``loading:0``;
4. ``restore --to-redis`` (from ``file://``) into an empty server of that
   version: wall time, CPU seconds (the CLI with its children, and the
   target server's up to the end of the load, as the baseline's), peak RSS
   (VmHWM, below), and the target's DEBUG DIGEST checked;
5. ``restore --to-dir`` and ``verify`` from both stores, beside ``cp`` of the
   archive (file://), ``aws s3 cp`` of it (S3) and ``zstd -d | tar -x`` of it.

Every row has its CPU seconds beside the wall time (the machine is shared:
wall time includes waiting for a core). Peak RSS is the larger of the largest
single process's VmHWM and the tree's RSS sampled; for ``--to-redis`` the
CLI's own VmHWM is printed too (``--to-dir`` and ``verify`` also run
``redis-check-rdb``, which holds the largest value while it reads it;
``--to-redis`` no longer does).

Goals (issue 12): ``--to-redis`` peak RSS <= 100 MiB on a 1 GiB dataset;
``--to-redis`` wall <= 4x the startup load of the same RDB.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from support.datasets import fill_big_hash, fill_bulk  # noqa: E402
from support.peak_rss import PeakTracker  # noqa: E402
from support.server_versions import SERVERS, ServerVersion  # noqa: E402

VENV_BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
TARGET = "bench/restore"
UNITS = {"": 1, "B": 1, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "KB": 1000, "MB": 10**6,
         "GB": 10**9}  # fmt: skip


def size_arg(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in UNITS:
        raise argparse.ArgumentTypeError(f"{text!r}: a size like 64MiB, 1GiB or 500MB")
    return int(float(m.group(1)) * UNITS[m.group(2).upper()])


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.01)
    raise RuntimeError(f"nothing listening on {HOST}:{port} after {timeout} s")


class Servers:
    """Every process this run starts, stopped by its PID at the end."""

    def __init__(self, work: Path, server: ServerVersion) -> None:
        self.work = work
        self.server = server
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, data: Path | None = None) -> tuple[redis.Redis, float]:
        """A server on ``data`` (default: a new empty folder) and the seconds from
        spawn until it answers with ``loading:0``."""
        data = data or self.work / name
        data.mkdir(exist_ok=True)
        port = free_port()
        start = time.perf_counter()
        argv = [*self.server.server_argv(), "--bind", HOST, "--port", str(port), "--dir",
                str(data), "--save", "", "--appendonly", "no", "--enable-debug-command",
                "local", "--logfile", str(self.work / f"{name}.log")]  # fmt: skip
        self.procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL))
        client = redis.Redis(host=HOST, port=port, socket_timeout=900)
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            try:
                if str(client.info("persistence")["loading"]) == "0":
                    return client, time.perf_counter() - start
            except (redis.ConnectionError, redis.BusyLoadingError):
                pass
            time.sleep(0.005)
        raise RuntimeError(f"{name}: still loading after 900 s")

    def cpu_s(self, client: redis.Redis) -> float:
        """CPU seconds the server of ``client`` used so far (Linux /proc)."""
        port = str(client.connection_pool.connection_kwargs["port"])
        for proc in self.procs:
            if proc.poll() is None and port in proc.args:  # type: ignore[operator]
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return 0.0

    def stop(self, client: redis.Redis) -> None:
        port = client.connection_pool.connection_kwargs["port"]
        client.close()
        for proc in self.procs:
            if proc.poll() is None and str(port) in proc.args:  # type: ignore[operator]
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=120)

    def moto(self) -> dict[str, str]:
        port = free_port()
        self.procs.append(
            subprocess.Popen(
                [str(VENV_BIN / "moto_server"), "-H", HOST, "-p", str(port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_port(port)
        return {
            "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": f"http://{HOST}:{port}", "AWS_EC2_METADATA_DISABLED": "true",
        }  # fmt: skip

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=60)


def tree_rss_mib(pid: int) -> float:
    """VmRSS of ``pid`` and all its descendants now (Linux /proc), in MiB."""
    total, todo = 0, [pid]
    for _ in range(10_000):
        if not todo:
            break
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        total += int(m.group(1)) if m else 0
    return total / 1024


class Timed(NamedTuple):
    wall: float  # seconds
    rss: float  # peak RSS MiB (see timed)
    out: str  # stdout
    cpu: float  # CPU seconds of the command and the children it waited for
    own_rss: float  # the command's own VmHWM, MiB


def timed(cmd: str | list[str], *, env: dict[str, str] | None = None, shell: bool = False) -> Timed:
    """The command run and measured. The peak is the larger of the largest
    single process's VmHWM (tests/support/peak_rss.py; not wait4's
    ru_maxrss, which counts this script's own peak at fork) and the sum over
    the process tree sampled every 20 ms (a helper server beside the CLI counts
    too)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, shell=shell, env={**os.environ, **(env or {})}, stdout=out)
        peak, largest = 0.0, PeakTracker(proc.pid)
        while True:
            largest.sample()
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, tree_rss_mib(proc.pid))
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd!r} failed with {proc.returncode}")
        out.seek(0)
        return Timed(wall, max(peak, largest.largest_mib), out.read().decode(errors="replace"),
                     usage.ru_utime + usage.ru_stime,
                     largest._peaks.get(proc.pid, 0) / 1024)  # fmt: skip


def backupctl(*args: object) -> list[str]:
    return [sys.executable, "-m", "backupctl", *map(str, args)]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", type=size_arg, default=size_arg("64MiB"), help="dataset size")
    ap.add_argument("--big-hash", type=size_arg, default=0, help="of it, one hash this big")
    ap.add_argument("--value-bytes", type=size_arg, default=2500, help="small keys' value size")
    ap.add_argument("--server", choices=list(SERVERS), default="redis-7.0")
    ap.add_argument("--work-dir", type=Path, default=None, help="default: system temp")
    args = ap.parse_args()
    if args.big_hash > args.size:
        sys.exit("--big-hash is part of --size: make it smaller")
    for tool in ("zstd", "tar", "cp"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: run scripts/bootstrap.sh")
    aws = VENV_BIN / "aws" if (VENV_BIN / "aws").exists() else shutil.which("aws")
    server = SERVERS[args.server]
    work = Path(tempfile.mkdtemp(prefix="backupctl-restore-bench-", dir=args.work_dir))
    servers = Servers(work, server)
    rows: list[tuple[str, float, float | None, float | None]] = []  # wall, RSS, CPU
    try:
        source, _ = servers.start("source")
        t = time.perf_counter()
        small = args.size - args.big_hash
        keys = max(1, small // args.value_bytes)
        fill_bulk(source, keys, args.value_bytes, seed=1)
        if args.big_hash:
            fill_big_hash(source, args.big_hash, seed=2)
        print(f"{server.id}: filled {keys} keys of {args.value_bytes} B"
              + (f" + one hash of {args.big_hash >> 20} MiB" if args.big_hash else "")
              + f" in {time.perf_counter() - t:.0f} s", flush=True)  # fmt: skip
        digest = source.execute_command("DEBUG", "DIGEST")
        source.save()
        rdb = work / "source" / "dump.rdb"
        rdb_mib = rdb.stat().st_size / 2**20

        store = work / "store"
        store.mkdir()
        src_url = f"redis://{HOST}:{source.connection_pool.connection_kwargs['port']}"
        run = backupctl("run", "--redis", src_url, "--target", TARGET, "--json", "--to")
        run_s, _, out, _, _ = timed([*run, store.as_uri()])
        manifest = json.loads(out)
        s3 = servers.moto()
        subprocess.run([str(aws), "s3", "mb", "s3://bench"], env={**os.environ, **s3}, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        s3_s, _, s3_out, _, _ = timed([*run, "s3://bench/b"], env=s3)
        s3_id = json.loads(s3_out)["id"]
        servers.stop(source)
        (node,) = manifest["nodes"]
        archive = next((store / TARGET / manifest["id"]).glob("*.tar*"))
        archive_mib = archive.stat().st_size / 2**20
        print(f"dump.rdb {rdb_mib:.0f} MiB, archive {archive_mib:.0f} MiB ({node['keys']} keys); "
              f"backup to file:// {run_s:.1f} s, to S3 {s3_s:.1f} s", flush=True)  # fmt: skip

        # baseline: the server loads the same RDB at startup
        subprocess.run(["cat", str(rdb)], stdout=subprocess.DEVNULL, check=True)
        loaded, load_s = servers.start("startup", rdb.parent)
        load_cpu = servers.cpu_s(loaded)
        assert loaded.execute_command("DEBUG", "DIGEST") == digest, "startup load: other digest"
        servers.stop(loaded)
        empty, empty_s = servers.start("empty")
        empty_cpu = servers.cpu_s(empty)
        servers.stop(empty)
        rows.append((f"baseline: {server.id} loads dump.rdb at startup", load_s, None, load_cpu))
        rows.append(("  (an empty server's startup, included above)", empty_s, None, empty_cpu))

        # restore --to-redis into an empty server of the same version
        target, _ = servers.start("target")
        tport = target.connection_pool.connection_kwargs["port"]
        tools = work / "tools"
        server.write_tools(tools)  # main's --to-redis reads with a local server of this version
        env = {"PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"}
        to_redis = timed(backupctl("restore", store.as_uri(), "latest", "--target", TARGET,
                                   "--to-redis", f"redis://{HOST}:{tport}"), env=env)  # fmt: skip
        redis_s, redis_rss = to_redis.wall, to_redis.rss
        target_cpu = servers.cpu_s(target)  # before the check: DEBUG DIGEST is CPU-s too
        same = target.execute_command("DEBUG", "DIGEST") == digest
        servers.stop(target)
        rows.append(("restore --to-redis (file://)" + ("" if same else " DIGEST DIFFERS"), redis_s,
                     redis_rss, to_redis.cpu))  # fmt: skip
        rows.append(("  (the target server's CPU during it)", redis_s, None, target_cpu))

        # downloads, --to-dir and verify, from both stores
        cp = timed(["cp", str(archive), str(work / "copy.tar")])
        (work / "copy.tar").unlink()
        untar = work / "untar"
        untar.mkdir()
        unz = timed(f"zstd -d -q -c '{archive}' | tar -x -C '{untar}'", shell=True)
        shutil.rmtree(untar)
        key = f"b/{TARGET}/{s3_id}/{archive.name}"
        aws_cp = timed([str(aws), "s3", "cp", f"s3://bench/{key}", str(work / "dl")], env=s3)
        (work / "dl").unlink()
        rows.append(("baseline: cp archive (file://)", cp.wall, None, cp.cpu))
        rows.append(("baseline: aws s3 cp archive (moto S3)", aws_cp.wall, aws_cp.rss, aws_cp.cpu))
        rows.append(("baseline: zstd -d | tar -x archive", unz.wall, unz.rss, unz.cpu))
        unz_s = unz.wall
        for label, url, extra in (("file://", store.as_uri(), {}), ("S3", "s3://bench/b", s3)):
            dest = work / f"dir-{label[:2]}"
            to_dir = timed(backupctl("restore", url, "latest", "--target", TARGET, "--to-dir",
                                     dest), env=extra)  # fmt: skip
            shutil.rmtree(dest)
            ver = timed(backupctl("verify", url, "latest", "--target", TARGET), env=extra)
            rows.append((f"restore --to-dir ({label})", to_dir.wall, to_dir.rss, to_dir.cpu))
            rows.append((f"verify ({label})", ver.wall, ver.rss, ver.cpu))

        print()
        print(f"{'measurement':<52}{'wall s':>8}{'CPU s':>8}{'RDB MiB/s':>11}{'peak RSS MiB':>14}")
        for name, secs, rss, cpu in rows:
            rss_col = "" if rss is None else f"{rss:.0f}"
            cpu_col = "" if cpu is None else f"{cpu:.2f}"
            print(f"{name:<52}{secs:>8.2f}{cpu_col:>8}{rdb_mib / secs:>11.0f}{rss_col:>14}")
        times = dict((n, s) for n, s, _, _ in rows)
        print()
        print(f"--to-redis wall vs startup load: {redis_s / load_s:.2f}x (goal <= 4x); CPU s: "
              f"the CLI {to_redis.cpu:.1f} + the target {target_cpu:.1f} vs {load_cpu:.1f}; "
              f"peak RSS {redis_rss:.0f} MiB for a {rdb_mib:.0f} MiB RDB (goal <= 100 MiB; "
              f"the CLI's own {to_redis.own_rss:.0f}); "
              f"digest {'equal' if same else 'DIFFERENT'}")  # fmt: skip
        for label, base in (("file://", "baseline: cp archive (file://)"),
                            ("S3", "baseline: aws s3 cp archive (moto S3)")):  # fmt: skip
            d, v = times[f"restore --to-dir ({label})"], times[f"verify ({label})"]
            raw = times[base]
            print(f"{label}: --to-dir {d / raw:.1f}x and verify {v / raw:.1f}x the raw download; "
                  f"{d / unz_s:.2f}x and {v / unz_s:.2f}x zstd -d | tar -x")  # fmt: skip
    finally:
        servers.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
