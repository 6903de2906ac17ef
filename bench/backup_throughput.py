"""Backup throughput and memory, beside a do-it-yourself baseline (not a test).

Run: ``.venv/bin/python bench/backup_throughput.py [--size-mib 600]``

Everything runs on 127.0.0.1 in one invocation, so the ratios compare like
with like on a noisy machine:

1. a throwaway ``redis-server`` is filled with ~SIZE MiB of mixed
   text/random values (compresses about 2:1, like real data);
2. baselines on its ``dump.rdb``: ``zstd -1`` and ``sha256sum``;
3. ``backupctl run`` to ``file://`` (subprocess: wall time, peak RSS), the
   same with ``--encrypt-to`` (age; goal >= 0.8x the plain rate), and
   the post-BGSAVE pipeline alone (in-process, the BGSAVE timed apart);
4. ``backupctl run --method replication`` to moto's S3 server (diskless
   sync) with the server's settings untouched (``rdbcompression yes``, the
   default since issue 13), and with the opt-in ``--pause-rdbcompression``,
   vs ``redis-cli --rdb - | zstd -1 | aws s3 cp -`` on the same server;
   with ``--before DIR`` also the run of another checkout of backupctl
   (``PYTHONPATH=DIR``: a change and its baseline in one invocation); all
   in turn ``--repeat`` times, the order reversed every other round
   (medians: the machine is shared). ``--s3-only`` skips steps 2-3,
   ``--no-pause`` the ``--pause-rdbcompression`` rounds.

backupctl's modules are byte-compiled first (``compileall``), as ``pip
install`` leaves them: with ``PYTHONDONTWRITEBYTECODE`` set (as on this
machine) every run would otherwise compile ~90 modules from source, ~0.6 s
before the first byte. Each round notes the 1-minute load average before it;
the wall ratio of the quietest rounds is printed beside the medians.

Every command is timed by wall clock, CPU seconds (user + sys of its whole
process tree, from ``wait4``) and the peak RSS of its largest process: on a
loaded machine wall time tracks CPU time, so both ratios are printed.

Goals: peak RSS <= 100 MiB; pipeline >= 0.8x the slower of zstd -1 and
sha256sum (issue 2); replication to S3 with the server's settings untouched
<= 0.90x the DIY pipeline's wall time (issue 13).
"""

from __future__ import annotations

import argparse
import compileall
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyrage
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.peak_rss import PeakTracker  # noqa: E402

VENV_BIN = Path(sys.executable).parent
HOST = "127.0.0.1"


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
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {HOST}:{port} after {timeout} s")


#: (wall seconds, peak RSS MiB, CPU seconds) of one command.
Timing = tuple[float, float, float]


def timed(
    cmd: str | list[str], *, env: dict[str, str] | None = None, shell: bool = False
) -> Timing:
    """Run a command; return its wall seconds, the peak RSS (MiB) of the
    largest process of its tree (each one's VmHWM, polled every 10 ms:
    tests/support/peak_rss.py; wait4's ru_maxrss would count this script's
    own peak at fork) and the CPU seconds (user + sys) of the whole tree: the
    process, its threads and every descendant it waited for (a shell
    pipeline's commands, backupctl's RDB reader process). On a loaded machine
    wall time tracks CPU time."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, shell=shell, env=env, stdout=subprocess.DEVNULL)
    peak = PeakTracker(proc.pid)
    while True:
        peak.sample()
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.01)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd!r} failed with {os.waitstatus_to_exitcode(status)}")
    return wall, peak.largest_mib, usage.ru_utime + usage.ru_stime


def proc_cpu(pid: int) -> float:
    """CPU seconds of a process so far: its own user + sys, plus the reaped
    children's (a redis-server's fork children, once it has waited for them)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _median(runs: list[Timing]) -> Timing:
    """(median wall, largest peak RSS, median CPU) of several runs."""
    walls = sorted(w for w, _, _ in runs)
    cpus = sorted(c for _, _, c in runs)
    return walls[len(walls) // 2], max(r for _, r, _ in runs), cpus[len(cpus) // 2]


def fill(client: redis.Redis, size_mib: int) -> int:
    rnd = random.Random(7)
    words = [rnd.randbytes(8).hex() for _ in range(5000)]
    per_key = 1040  # ~680 bytes of "text" + 360 bytes of hex noise
    n = size_mib * 1024 * 1024 // per_key
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.set(f"user:{i}:profile", " ".join(rnd.choices(words, k=40)) + rnd.randbytes(180).hex())
        if i % 2000 == 1999:
            pipe.execute()
    pipe.execute()
    return n


def bgsave(client: redis.Redis, timeout: float = 600) -> float:
    saves = client.info("persistence")["rdb_saves"]
    start = time.perf_counter()
    client.bgsave()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = client.info("persistence")
        if p["rdb_saves"] > saves and not p["rdb_bgsave_in_progress"]:
            return time.perf_counter() - start
        time.sleep(0.05)
    raise RuntimeError("BGSAVE did not finish")


def pipeline_in_process(redis_url: str, store_dir: Path) -> tuple[float, float]:
    """(post-BGSAVE seconds, BGSAVE seconds) of backupctl's own run_backup."""
    from backupctl.ops import backup, backup_node, backup_options
    from backupctl.redis.address import parse_redis_url
    from backupctl.store.backends import open_store

    marks: dict[str, float] = {}
    real_bgsave = vars(backup_node)["bgsave"]

    def bgsave_marked(*a: object, **k: object) -> object:
        start = time.perf_counter()
        out = real_bgsave(*a, **k)  # type: ignore[arg-type]
        marks["bgsave"] = time.perf_counter() - start
        marks["after"] = time.perf_counter()
        return out

    vars(backup_node)["bgsave"] = bgsave_marked
    try:
        opts = backup_options.RunOptions(
            redis=parse_redis_url(redis_url),
            store=open_store(str(store_dir)),
            target="bench/inproc",
        )
        backup.run_backup(opts)
    finally:
        vars(backup_node)["bgsave"] = real_bgsave
    return time.perf_counter() - marks["after"], marks["bgsave"]


def _s3_env(endpoint: str) -> dict[str, str]:
    return {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def _row(name: str, t: Timing | None, rdb_mib: float) -> str:
    if t is None:
        return ""
    wall, rss, cpu = t
    rss_col = f"{rss:.0f}" if rss else ""
    cpu_col = f"{cpu:.2f}" if cpu else ""
    return f"{name:<52}{wall:>8.2f}{rdb_mib / wall:>9.0f}{cpu_col:>8}{rss_col:>14}"


def file_rows(url: str, rdb: Path, work: Path, rdb_mib: float) -> list[str]:
    """The file:// part: baselines on dump.rdb, run, run --encrypt-to, the pipeline."""
    zstd_t = timed(["zstd", "-1", "-q", "-c", str(rdb)])
    sha_t = timed(["sha256sum", str(rdb)])
    slower = max(zstd_t[0], sha_t[0])
    store = work / "store"
    store.mkdir()
    run_cmd = [str(VENV_BIN / "backupctl"), "run", "--redis", url, "--to", store.as_uri()]
    run_t = timed([*run_cmd, "--target", "bench/file"])
    # Issue 18: the same run, archives encrypted with age (one recipient).
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    enc_t = timed([*run_cmd, "--target", "bench/file-age", "--encrypt-to", recipient])
    pipe_s, bgsave_s = pipeline_in_process(url, store)
    rows = [
        _row("baseline: zstd -1 dump.rdb", zstd_t, rdb_mib),
        _row("baseline: sha256sum dump.rdb", sha_t, rdb_mib),
        _row("backupctl run -> file:// (BGSAVE + pipeline)", run_t, rdb_mib),
        _row("backupctl run -> file:// --encrypt-to (age)", enc_t, rdb_mib),
        _row(f"  of which BGSAVE (in-process run: {bgsave_s:.1f} s)", (bgsave_s, 0, 0), rdb_mib),
        _row("  post-BGSAVE pipeline (tar+zstd+sha256+check+write)", (pipe_s, 0, 0), rdb_mib),
    ]
    return [
        *rows,
        "",
        f"pipeline throughput vs slower baseline: {rdb_mib / pipe_s:.0f} vs "
        f"{rdb_mib / slower:.0f} MiB/s = {slower / pipe_s:.2f}x (goal >= 0.80x)",
        f"encrypted vs plain run -> file:// (same data, one run): {run_t[0] / enc_t[0]:.2f}x "
        f"the plain rate (goal >= 0.80x); peak RSS {enc_t[1]:.0f} vs {run_t[1]:.0f} MiB",
        f"peak RSS of backupctl run -> file://: {max(run_t[1], enc_t[1]):.0f} MiB "
        "(goal <= 100 MiB)",
    ]


def s3_rows(
    rport: int,
    client: redis.Redis,
    rdb_mib: float,
    args: argparse.Namespace,
    procs: list[subprocess.Popen[bytes]],
) -> list[str]:
    """The S3 part: DIY vs backupctl (vs --before, vs --pause-rdbcompression) in turn."""
    sport = free_port()
    procs.append(
        subprocess.Popen(
            [str(VENV_BIN / "moto_server"), "-H", HOST, "-p", str(sport)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    wait_port(sport)
    moto_pid, server_pid = procs[-1].pid, procs[0].pid
    endpoint = f"http://{HOST}:{sport}"
    env = _s3_env(endpoint)
    aws = str(VENV_BIN / "aws")
    subprocess.run([aws, "s3", "mb", "s3://bench"], env=env, check=True, stdout=subprocess.DEVNULL)
    diy_cmd = (
        f"redis-cli -h {HOST} -p {rport} --rdb - 2>/dev/null | zstd -1 -q | "
        f"'{aws}' s3 cp - s3://bench/diy/dump.rdb.zst --endpoint-url {endpoint}"
    )
    repl_cmd = [str(VENV_BIN / "backupctl"), "run", "--redis", f"redis://{HOST}:{rport}",
                "--to", "s3://bench/ours", "--target", "bench/s3",
                "--method", "replication"]  # fmt: skip
    kinds: dict[str, tuple[str | list[str], dict[str, str], bool]] = {
        "diy": (diy_cmd, env, True),
        "repl": (repl_cmd, env, False),
    }
    if args.before:  # the same command run by another checkout of backupctl
        kinds["before"] = (repl_cmd, {**env, "PYTHONPATH": str(args.before)}, False)
    if args.pause:  # what the opt-in rdbcompression window is worth, shown rather than hidden
        kinds["pause"] = ([*repl_cmd, "--pause-rdbcompression"], env, False)
    assert client.config_get("rdbcompression")["rdbcompression"] == "yes"
    rounds: dict[str, list[Timing]] = {k: [] for k in kinds}
    # What the shared resources spent on each command: moto's S3 server
    # and redis-server (its fork child counted once reaped), CPU seconds.
    beside: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    loads: list[float] = []  # the 1-minute load average before each round
    for i in range(max(1, args.repeat)):  # in turn, so drift hits all alike
        order = list(kinds) if i % 2 == 0 else list(reversed(kinds))
        loads.append(os.getloadavg()[0])
        for k in order:
            cmd, cmd_env, shell = kinds[k]
            moto0, server0 = proc_cpu(moto_pid), proc_cpu(server_pid)
            rounds[k].append(timed(cmd, shell=shell, env=cmd_env))
            time.sleep(0.2)  # the fork child reaped (redis-server's cron)
            beside[k].append((proc_cpu(moto_pid) - moto0, proc_cpu(server_pid) - server0))
    assert client.config_get("rdbcompression")["rdbcompression"] == "yes"
    med = {k: _median(v) for k, v in rounds.items()}
    diy = med["diy"]

    def per_round(k: str, field: int) -> str:
        pairs = zip(rounds[k], rounds["diy"], strict=True)
        return ", ".join(f"{r[field] / d[field]:.2f}" for r, d in pairs)

    rows = [
        _row("DIY: redis-cli --rdb - | zstd -1 | aws s3 cp -", diy, rdb_mib),
        _row("backupctl run --method replication -> S3", med["repl"], rdb_mib),
        _row(f"  the same, backupctl from {args.before}", med.get("before"), rdb_mib),
        _row("  the same with --pause-rdbcompression", med.get("pause"), rdb_mib),
    ]
    lines = [r for r in rows if r]
    lines.append("")
    for k, label in (("repl", "this backupctl"), ("before", "--before"), ("pause", "--pause")):
        if k not in med:
            continue
        lines.append(
            f"replication to S3 vs DIY, server settings untouched ({label}): wall "
            f"{med[k][0] / diy[0]:.2f}x (per round {per_round(k, 0)}; goal <= 0.90x), "
            f"CPU {med[k][2] / diy[2]:.2f}x (per round {per_round(k, 2)})"
        )
    for k in kinds:
        motos = sorted(m for m, _ in beside[k])
        servers = sorted(r for _, r in beside[k])
        lines.append(
            f"CPU s beside {k}: moto median {motos[len(motos) // 2]:.2f} "
            f"({', '.join(f'{m:.2f}' for m, _ in beside[k])}), redis-server median "
            f"{servers[len(servers) // 2]:.2f} ({', '.join(f'{r:.2f}' for _, r in beside[k])})"
        )
    lines.append(f"peak RSS of backupctl run -> S3: {med['repl'][1]:.0f} MiB (goal <= 100 MiB)")
    lines.append("load average before each round: " + ", ".join(f"{x:.2f}" for x in loads))
    quiet = sorted(range(len(loads)), key=loads.__getitem__)[: max(1, len(loads) // 2)]
    lines.append(
        f"quietest rounds ({', '.join(str(i + 1) for i in sorted(quiet))}): wall "
        + ", ".join(f"{rounds['repl'][i][0] / rounds['diy'][i][0]:.2f}x" for i in sorted(quiet))
        + " (this backupctl vs DIY)"
    )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size-mib", type=int, default=600)
    ap.add_argument("--repeat", type=int, default=3, help="rounds of the S3 comparison")
    ap.add_argument("--s3-only", action="store_true", help="skip the file:// measurements")
    ap.add_argument(
        "--before",
        type=Path,
        help="also time the S3 run with backupctl from this checkout (PYTHONPATH)",
    )
    ap.add_argument(
        "--no-pause",
        dest="pause",
        action="store_false",
        help="skip the --pause-rdbcompression rounds",
    )
    args = ap.parse_args()
    for tool in ("redis-server", "redis-cli", "zstd", "sha256sum"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: run scripts/bootstrap.sh")
    for tree in (ROOT, args.before):  # as installed: no run compiles modules from source
        if tree is not None and (tree / "backupctl").is_dir():
            compileall.compile_dir(tree / "backupctl", quiet=1)
    work = Path(tempfile.mkdtemp(prefix="backupctl-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        rport = free_port()
        data = work / "redis"
        data.mkdir()
        procs.append(
            subprocess.Popen(
                [
                    "redis-server",
                    "--bind",
                    HOST,
                    "--port",
                    str(rport),
                    "--dir",
                    str(data),
                    "--save",
                    "",
                    "--repl-diskless-sync-delay",
                    "0",
                    "--logfile",
                    str(work / "redis.log"),
                ]
            )
        )
        wait_port(rport)
        client = redis.Redis(host=HOST, port=rport, socket_timeout=600)
        t = time.perf_counter()
        keys = fill(client, args.size_mib)
        print(f"filled {keys} keys in {time.perf_counter() - t:.1f} s", flush=True)
        bgsave(client)
        rdb = data / "dump.rdb"
        rdb_mib = rdb.stat().st_size / 2**20
        subprocess.run(["cat", str(rdb)], stdout=subprocess.DEVNULL, check=True)  # warm the cache
        print(f"dump.rdb: {rdb_mib:.0f} MiB", flush=True)
        url = f"redis://{HOST}:{rport}"
        lines = [] if args.s3_only else file_rows(url, rdb, work, rdb_mib)
        lines = [*s3_rows(rport, client, rdb_mib, args, procs), "", *lines]
        print()
        print(f"{'measurement':<52}{'wall s':>8}{'MiB/s':>9}{'CPU s':>8}{'peak RSS MiB':>14}")
        print("\n".join(lines))
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
