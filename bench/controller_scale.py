"""Benchmark: the RedisBackup controller with many scheduled RedisBackups.

Starts the test Kubernetes API emulator (tests/support/kube) in its own process on 127.0.0.1,
creates N RedisBackups scheduled at the same cron slot (one StatefulSet target,
``method: replication``), runs the real controller on the tests' file-offset clock
(tests/support/kube/run_operator.py), lets it settle, then moves the clock across the
slot and watches Jobs appear.
Jobs are not run (no kubelet): this measures the controller, not backups.

Prints the operator's RSS (idle after startup, and peak over the whole run, sampled
every 100 ms), the time to the first status on every RedisBackup, and the delay from
the slot to each Job's creation (p50/p99/max, taken when the Job's watch event
arrives; ``creationTimestamp`` has one-second resolution and is shown as a check); the
CPU-seconds of the controllers and of the emulator from the slot until the last Job
(per Job: ``ctl ms/Job``) and until every status shows the slot (the controller writes
it behind the slot's Jobs: the slot's whole cost).
Goals: peak RSS < 200 MiB, p99 <= 5 s.

With ``--shards N`` (issue 15) the same count runs twice in one invocation, each on a
fresh emulator: first one controller (the baseline), then N controller processes with
``--shard=0`` .. ``--shard=N-1`` over RedisBackups labelled round-robin
``backupctl.dev/shard``; both runs use ``--leader-elect`` (one Lease per shard). Printed
side by side: slot -> Job p99, each controller's peak RSS, the emulator's CPU, and a
check that every RedisBackup got exactly one Job. Sharded goals: p99 <= 10 s and
<= 200 MiB per shard. ``--no-baseline`` skips the 1-controller run (for iterating on
the sharded figures; a record is made with the baseline beside it).

    .venv/bin/python bench/controller_scale.py [--count 1000] [--shards 4]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from support.kube.api_client import K8sClient  # noqa: E402
from support.kube.api_server import write_kubeconfig  # noqa: E402
from support.kube.emulator_process import start_emulator, stop  # noqa: E402
from support.kube.operator_process import operator_command, operator_env  # noqa: E402

NS = "bench"
SLOT = datetime(2030, 1, 1, 2, tzinfo=UTC)


def set_clock(path: Path, fake_now: datetime) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{(fake_now - datetime.now(UTC)).total_seconds():.3f}")
    tmp.replace(path)


def setup(api: K8sClient, count: int, shards: int = 0) -> None:
    api.apply(REPO / "crds" / "redisbackup.yaml")
    api.apply(REPO / "crds" / "redisrestore.yaml")
    api.create_namespace(NS)
    labels = {"app": "redis"}
    container = {"name": "redis", "image": "redis:7", "ports": [{"containerPort": 6379}]}
    api.create(
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "redis"},
            "spec": {
                "serviceName": "redis",
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
            },
        },
        NS,
    )
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "redis-0", "labels": labels},
            "spec": {"nodeName": "node-a", "containers": [container]},
        },
        NS,
    )
    api.patch(
        "pods",
        NS,
        "redis-0",
        {
            "status": {
                "phase": "Running",
                "podIP": "127.0.0.1",
                "conditions": [{"type": "Ready", "status": "True"}],
            }
        },
        subresource="status",
    )

    def create(i: int) -> None:
        labels = {"backupctl.dev/shard": str(i % shards)} if shards else {}
        api.create(
            {
                "apiVersion": "backupctl.dev/v1alpha1",
                "kind": "RedisBackup",
                "metadata": {"name": f"rb-{i:05d}", "labels": labels},
                "spec": {
                    "target": {"kind": "StatefulSet", "name": "redis"},
                    "schedule": "0 2 * * *",
                    "method": "replication",
                    "storage": {"s3": {"bucket": "bench", "endpoint": "http://127.0.0.1:9"}},
                    "retention": {"keepLast": 3},
                },
            },
            NS,
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(count)))


class RssSampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.last = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.last = self.process.memory_info().rss
            except psutil.Error:
                return
            self.peak = max(self.peak, self.last)
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


class JobWatcher(threading.Thread):
    """Records when each Job's ADDED event arrives (monotonic time)."""

    def __init__(self, url: str, resource_version: str, seconds: float = 300) -> None:
        super().__init__(daemon=True)
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=seconds)
        self.path = (
            f"/apis/batch/v1/namespaces/{NS}/jobs?watch=true&resourceVersion={resource_version}"
            f"&timeoutSeconds={int(seconds)}"
        )
        self.seen: dict[str, tuple[float, str]] = {}
        self.error: str | None = None

    def run(self) -> None:
        try:
            self.conn.request("GET", self.path, headers={"Accept": "application/json"})
            response = self.conn.getresponse()
            while True:
                line = response.readline()
                if not line:
                    return
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                name = (obj.get("metadata") or {}).get("name")
                if event.get("type") == "ADDED" and name and name not in self.seen:
                    self.seen[name] = (time.monotonic(), obj["metadata"]["creationTimestamp"])
        except (OSError, ValueError) as e:
            self.error = repr(e)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def start_operators(
    work: Path, clock: Path, kubeconfig: Path, shards: int, lease: str = "15/10/2"
) -> list[subprocess.Popen[bytes]]:
    """One controller (shards == 0: all RedisBackups) or one per shard, each electing
    its shard's leader (it is alone: it leads at once) with the Lease timings ``lease``
    (duration/renew deadline/retry period)."""
    duration, deadline, retry = lease.split("/")
    procs = []
    for shard in range(max(1, shards)):
        flags = ["-n", NS, "--image", "backupctl:bench", "--leader-elect"]
        flags += [f"--leader-elect-lease-duration={duration}"]
        flags += [f"--leader-elect-renew-deadline={deadline}"]
        flags += [f"--leader-elect-retry-period={retry}"]
        if shards:
            flags.append(f"--shard={shard}")
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "POD_NAME": f"bench-{shard}"}
        log = open(work / f"operator-{shard}.log", "wb")  # noqa: SIM115 - closed with the process
        procs.append(
            subprocess.Popen(
                operator_command(clock, *flags),
                env=operator_env(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    return procs


def cpu_seconds(proc: psutil.Process) -> float:
    return float(sum(proc.cpu_times()[:2]))


def measure(args: argparse.Namespace, shards: int) -> dict[str, Any]:
    """One run on a fresh emulator: ``shards`` == 0 is the single controller."""
    count = args.count
    label = f"{shards} shards" if shards else "1 controller"
    print(f"--- {label}: {count} RedisBackups ---", flush=True)
    work = Path(tempfile.mkdtemp(prefix="controller-scale-"))
    emulator, url = start_emulator(REPO / "tests")
    operators: list[subprocess.Popen[bytes]] = []
    samplers: list[RssSampler] = []
    try:
        api = K8sClient(url, timeout=60)
        kubeconfig = write_kubeconfig(work / "kubeconfig", url)
        clock = work / "clock"
        set_clock(clock, SLOT - timedelta(seconds=600))
        started = time.monotonic()
        setup(api, count, shards)
        print(f"created {count} RedisBackups in {time.monotonic() - started:.1f} s", flush=True)

        started = time.monotonic()
        operators = start_operators(work, clock, kubeconfig, shards, args.lease)
        samplers = [RssSampler(op.pid) for op in operators]
        for sampler in samplers:
            sampler.start()

        deadline = time.monotonic() + args.timeout
        while True:
            items = api.list("redisbackups", NS)
            ready = sum(1 for b in items if (b.get("status") or {}).get("nextScheduleTime"))
            if ready == count:
                break
            dead = [op.args for op in operators if op.poll() is not None]
            if time.monotonic() > deadline or dead:
                raise SystemExit(f"only {ready}/{count} RedisBackups got a status; see {work}")
            # A list of 10,000 RedisBackups costs the emulator a second of its one loop:
            # poll less often the more there are, not to load it more than the controllers.
            time.sleep(max(0.5, count / 2000))
        settle = time.monotonic() - started
        time.sleep(3)
        procs = [psutil.Process(op.pid) for op in operators]
        idle_cpu = sum(cpu_seconds(p) for p in procs)
        time.sleep(5)
        idle_cpu = (sum(cpu_seconds(p) for p in procs) - idle_cpu) / 5
        idle_rss = [s.last for s in samplers]
        print(f"every RedisBackup has a status after {settle:.1f} s", flush=True)
        print(f"controllers' CPU while idle: {idle_cpu:.0%} of one core", flush=True)

        rv = api.request("GET", f"/apis/batch/v1/namespaces/{NS}/jobs")["metadata"][
            "resourceVersion"
        ]
        # The watch lasts the whole window (lead + --timeout): a shorter one ended the
        # window early, counting the Jobs created after it as missing.
        watcher = JobWatcher(url, rv, args.lead + args.timeout + 30)
        watcher.start()
        time.sleep(0.5)
        # Skip the idle hours: the clock jumps to shortly before the slot, then runs on,
        # so the controller prepares for the slot as it would in real time.
        lead = args.lead
        emulator_proc = psutil.Process(emulator.pid)
        set_clock(clock, SLOT - timedelta(seconds=lead))
        crossed, crossed_wall = time.monotonic() + lead, datetime.now(UTC) + timedelta(seconds=lead)
        print(f"clock moved to {lead:.0f} s before the slot", flush=True)
        deadline = crossed + args.timeout
        while time.monotonic() < crossed:
            time.sleep(0.01)
        cpu_ops = sum(cpu_seconds(p) for p in procs)
        cpu_emulator = cpu_seconds(emulator_proc)
        while len(watcher.seen) < count and time.monotonic() < deadline and watcher.is_alive():
            time.sleep(0.2)
        window = time.monotonic() - crossed
        used_ops = sum(cpu_seconds(p) for p in procs) - cpu_ops
        used_emulator = cpu_seconds(emulator_proc) - cpu_emulator
        # The slot's whole cost: until every status shows the slot (the controller writes
        # it behind the slot's Jobs), its CPU counted from the slot on.
        slot_text = SLOT.strftime("%Y-%m-%dT%H:%M:%SZ")
        while True:
            items = api.list("redisbackups", NS)
            stamped = sum(
                1 for b in items if (b.get("status") or {}).get("lastScheduleTime") == slot_text
            )
            if stamped == count or time.monotonic() > deadline:
                break
            time.sleep(max(0.5, count / 2000))
        statuses = time.monotonic() - crossed
        all_ops = sum(cpu_seconds(p) for p in procs) - cpu_ops
        all_emulator = cpu_seconds(emulator_proc) - cpu_emulator
        print(
            f"every status shows the slot after {statuses:.1f} s ({stamped}/{count}); CPU "
            f"from the slot until then: controllers {all_ops:.1f} s, emulator "
            f"{all_emulator:.1f} s",
            flush=True,
        )
        time.sleep(2)  # anything extra (a second Job for a slot) would show now
        jobs = api.list("jobs", NS)
        per_backup: dict[str, int] = {}
        for job in jobs:
            owner = job["metadata"]["labels"].get("backupctl.dev/backup", "?")
            per_backup[owner] = per_backup.get(owner, 0) + 1
        twice = sorted(n for n, c in per_backup.items() if c > 1)
        missing = count - len(per_backup)
        early = [n for n, (t, _) in watcher.seen.items() if t < crossed]
        if early:
            print(f"{len(early)} Jobs were created BEFORE the slot: {early[:3]}")
        delays = [t - crossed for t, _ in watcher.seen.values()]
        stamps = [
            (datetime.fromisoformat(c.replace("Z", "+00:00")) - crossed_wall).total_seconds()
            for _, c in watcher.seen.values()
        ]
        for sampler in samplers:
            sampler.stop()
        print(
            f"Jobs: {len(jobs)} for {count} RedisBackups (one slot each): "
            f"{missing} RedisBackups without a Job, {len(twice)} with more than one"
        )
        if watcher.error:
            print(f"watch error: {watcher.error}")
        result: dict[str, Any] = {
            "label": label,
            "jobs": len(jobs),
            "missing": missing,
            "twice": len(twice),
            "settle": settle,
            "window": window,
            "cpu_ops": used_ops,
            "cpu_emulator": used_emulator,
            "statuses": statuses,
            "cpu_all_ops": all_ops,
            "cpu_all_emulator": all_emulator,
            "idle_rss": idle_rss,
            "peak_rss": [s.peak for s in samplers],
            "p50": percentile(delays, 50) if delays else float("nan"),
            "p99": percentile(delays, 99) if delays else float("nan"),
            "max": max(delays) if delays else float("nan"),
        }
        if delays:
            print(
                "slot -> Job created (watch event): "
                f"p50 {result['p50']:.2f} s, p99 {result['p99']:.2f} s, "
                f"max {result['max']:.2f} s, mean {statistics.mean(delays):.2f} s"
            )
            print(
                "slot -> creationTimestamp (1 s resolution): "
                f"p50 {percentile(stamps, 50):.0f} s, p99 {percentile(stamps, 99):.0f} s"
            )
        print(
            f"CPU during those {window:.1f} s: controllers {used_ops:.1f} s, "
            f"API emulator {used_emulator:.1f} s; load average {os.getloadavg()[0]:.1f}"
        )
        print(
            "controller RSS (MiB), idle after startup / peak: "
            + ", ".join(
                f"{i / MIB:.0f}/{p / MIB:.0f}"
                for i, p in zip(idle_rss, result["peak_rss"], strict=True)
            )
            + f" (logs in {work})",
            flush=True,
        )
        return result
    finally:
        for sampler in samplers:
            sampler.stop()
        for op in operators:
            stop(op)
        stop(emulator)


MIB = 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="RedisBackups (default 1000)")
    parser.add_argument(
        "--shards",
        type=int,
        default=0,
        help="also run the same count over this many sharded controllers (default: only one)",
    )
    parser.add_argument("--timeout", type=float, default=180.0, help="per phase, seconds")
    parser.add_argument(
        "--lead", type=float, default=25.0, help="seconds of clock before the slot (default 25)"
    )
    parser.add_argument(
        "--lease",
        default="15/10/2",
        help="Lease duration/renew deadline/retry period in seconds (default: client-go's "
        "15/10/2; a process starved of CPU by other jobs may need longer)",
    )
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="with --shards, skip the 1-controller run (for iterating; not for the record)",
    )
    args = parser.parse_args()
    runs = [] if args.no_baseline and args.shards else [measure(args, 0)]
    if args.shards:
        runs.append(measure(args, args.shards))
    count = args.count
    print(f"\n=== {count} RedisBackups, one slot ===")
    print(f"{'':14}" + "".join(f"{r['label']:>24}" for r in runs))
    rows = [
        ("Jobs", lambda r: f"{r['jobs']}"),
        ("none / twice", lambda r: f"{r['missing']} / {r['twice']}"),
        ("status ready", lambda r: f"{r['settle']:.1f} s"),
        ("slot->Job p50", lambda r: f"{r['p50']:.2f} s"),
        ("slot->Job p99", lambda r: f"{r['p99']:.2f} s"),
        ("slot->Job max", lambda r: f"{r['max']:.2f} s"),
        ("peak RSS", lambda r: "/".join(f"{p / MIB:.0f}" for p in r["peak_rss"]) + " MiB"),
        ("CPU ctl/emu", lambda r: f"{r['cpu_ops']:.1f}/{r['cpu_emulator']:.1f} s"),
        ("ctl ms/Job", lambda r: f"{1000 * r['cpu_ops'] / count:.2f} ms"),
        ("statuses at", lambda r: f"{r['statuses']:.1f} s"),
        ("... CPU ctl/emu", lambda r: f"{r['cpu_all_ops']:.1f}/{r['cpu_all_emulator']:.1f} s"),
        ("... ctl ms/Job", lambda r: f"{1000 * r['cpu_all_ops'] / count:.2f} ms"),
    ]
    for name, cell in rows:
        print(f"{name:14}" + "".join(f"{cell(r):>24}" for r in runs))
    print(
        "emulator CPU over the slot window: "
        + ", ".join(f"{r['label']} {r['cpu_emulator'] / r['window']:.0%} of one core" for r in runs)
    )
    # With --shards the one-controller run is the baseline, not held to a goal.
    if args.shards:
        judged, goal = runs[-1], f"{args.shards} shards: p99 <= 10 s, <= 200 MiB each"
        ok = judged["p99"] <= 10.0 and max(judged["peak_rss"]) <= 200 * MIB
    else:
        judged, goal = runs[0], "1 controller: p99 <= 5 s, < 200 MiB"
        ok = judged["p99"] <= 5.0 and max(judged["peak_rss"]) < 200 * MIB
    ok = ok and judged["missing"] == 0 and judged["twice"] == 0
    print(f"goals ({goal}, every Job once) {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
