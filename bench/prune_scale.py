"""How prune scales: list and decide over 100,000 backups in moto's S3 server.

Not a test. Run ``.venv/bin/python bench/prune_scale.py [--backups N]``.

A child process runs moto's server on 127.0.0.1 (a free port) and seeds it
through moto's in-memory backend directly (200,000 HTTP PUTs would take
minutes and measure moto, not us): N backup folders, each a tiny archive
and a real manifest, spread over a few targets every 30 minutes. This
process then does what ``backupctl prune --dry-run`` does, over HTTP, and
times each part; its peak RSS does not include the server's memory.

Printed figures:

- ``list``: :func:`catalog.scan` with ``load_manifests=False`` (paged
  ListObjectsV2, grouped into folders, a folder is complete when its
  manifest is in the listing, its creation time comes from its id);
- ``decide``: :func:`retention.apply_policy` per target;
- ``prune --dry-run``: the whole of :func:`prune.prune` with
  ``read_manifests=False`` (listing + decision + unfinished uploads);
- ``manifest GET``: the cost per manifest read, and what reading all of them
  (``read_manifests=True``, prune's default) would add;
- peak RSS of this process.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from backupctl.core.timefmt import format_time
from backupctl.store import catalog
from backupctl.store.backends.base import read_bytes
from backupctl.store.catalog import ArchiveEntry, FileEntry, Manifest, NodeEntry
from backupctl.store.prune import prune
from backupctl.store.retention import Policy, apply_policy

HOST = "127.0.0.1"
BUCKET = "bench"
TARGETS = ("prod/redis-cache", "prod/redis-sessions", "staging/redis", "team-a/redis-queue")
START = datetime(2023, 1, 1, tzinfo=UTC)
STEP = timedelta(minutes=30)
POLICY = Policy(last=24, daily=7, weekly=4, monthly=6, yearly=2)
SERVER_TIMEOUT = 900.0  # seconds to start and seed the server, at most

T = TypeVar("T")


def _manifest(target: str, bid: str, created: datetime) -> bytes:
    data = b"x" * 64
    sha = "0" * 64
    node = NodeEntry(
        name="redis-0",
        role="master",
        redis_version="7.0.15",
        rdb_version=10,
        snapshot_time=format_time(created),
        keys=1000,
        archive=ArchiveEntry(key="redis-0.tar.zst", size=len(data), sha256=sha, compression="zstd"),
        files=[FileEntry(path="dump.rdb", size=4096, sha256=sha, kind="rdb")],
    )
    return Manifest(
        id=bid,
        target=target,
        created=format_time(created),
        tool_version="0.1.0",
        redis_version="7.0.15",
        method="bgsave",
        compression="zstd",
        nodes=[node],
    ).dumps()


def serve(n: int) -> None:
    """Child: moto server + seeded bucket; prints the port, serves until stdin closes."""
    import boto3
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address=HOST, port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    try:
        boto3.client(
            "s3",
            endpoint_url=f"http://{HOST}:{port}",
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket=BUCKET)
        backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
        archive = b"x" * 64
        per_target = n // len(TARGETS)
        for ti, target in enumerate(TARGETS):
            count = per_target + (1 if ti < n % len(TARGETS) else 0)
            for i in range(count):
                created = START + STEP * i + timedelta(seconds=ti)
                bid = catalog.new_backup_id(created)
                folder = catalog.backup_dir(target, bid)
                backend.put_object(BUCKET, folder + "redis-0.tar.zst", archive)
                manifest = _manifest(target, bid, created)
                backend.put_object(BUCKET, folder + "manifest.json", manifest)
        print(port, flush=True)
        sys.stdin.read()  # the parent closes stdin when done
    finally:
        server.stop()


def _timed(label: str, fn: Callable[[], T], figures: dict[str, float]) -> T:
    t0 = time.perf_counter()
    out = fn()
    figures[label] = time.perf_counter() - t0
    return out


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backups", type=int, default=100_000)
    ap.add_argument("--manifest-sample", type=int, default=300)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.backups)
        return 0

    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    print(
        f"seeding {args.backups:,} backups ({2 * args.backups:,} objects) into moto ...", flush=True
    )
    t0 = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--backups", str(args.backups)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        port = _wait_for_port(child)
        print(f"seeded in {time.perf_counter() - t0:.1f} s; moto on {HOST}:{port}", flush=True)
        os.environ.update(env)
        os.environ["AWS_ENDPOINT_URL_S3"] = f"http://{HOST}:{port}"
        return _measure(args.backups, args.manifest_sample)
    finally:
        _stop(child)


def _wait_for_port(child: subprocess.Popen[str]) -> int:
    import selectors

    assert child.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(child.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + SERVER_TIMEOUT
    while time.monotonic() < deadline:
        if sel.select(timeout=1.0):
            line = child.stdout.readline()
            if not line:
                raise SystemExit("the moto server process exited before it was ready")
            return int(line)
        if child.poll() is not None:
            raise SystemExit(f"the moto server process exited ({child.returncode})")
    raise SystemExit(f"the moto server was not ready within {SERVER_TIMEOUT:.0f} s")


def _stop(child: subprocess.Popen[str]) -> None:
    if child.stdin is not None:
        child.stdin.close()
    try:
        child.wait(timeout=20)
    except subprocess.TimeoutExpired:
        child.kill()  # by its PID only
        child.wait(timeout=20)


def _measure(n: int, sample: int) -> int:
    from backupctl.store.backends import open_store

    backend = open_store(f"s3://{BUCKET}")
    figures: dict[str, float] = {}
    rss_start = _peak_rss_mib()

    # prune first, so the peak RSS printed is prune's own (not inflated by the
    # listing kept for the separate list/decide figures below).
    now = START + STEP * (n // len(TARGETS)) + timedelta(days=1)
    result = _timed(
        "prune --dry-run",
        lambda: prune(backend, POLICY, now=now, dry_run=True, read_manifests=False),
        figures,
    )
    assert len(result.keep) + len(result.remove) == n
    rss_prune = _peak_rss_mib()
    n_keep, n_remove, ids = len(result.keep), len(result.remove), result.remove[:sample]
    del result  # the listing below is measured on its own

    entries = _timed("list", lambda: catalog.scan(backend, load_manifests=False), figures)
    objects = sum(len(e.objects) for e in entries)
    complete = [e for e in entries if any(o.key.endswith("/manifest.json") for o in e.objects)]
    assert len(entries) == n and objects == 2 * n and len(complete) == n, (len(entries), objects)
    kept = _timed("decide", lambda: _decide(complete), figures)
    assert kept == n_keep

    t0 = time.perf_counter()
    for r in ids:
        catalog.Manifest.loads(read_bytes(backend, catalog.manifest_key(r.target, r.id)))
    per_get = (time.perf_counter() - t0) / max(1, len(ids))

    print()
    print(f"backups                 {n:>10,}  ({len(TARGETS)} targets, one every 30 min)")
    print(f"objects listed          {2 * n:>10,}")
    print(f"policy                  {POLICY.describe()}")
    print(f"list (scan, HTTP)       {figures['list']:>10.2f} s")
    print(
        f"decide (apply_policy)   {figures['decide']:>10.2f} s   "
        f"({100 * figures['decide'] / figures['list']:.1f}% of list)"
    )
    print(
        f"prune --dry-run total   {figures['prune --dry-run']:>10.2f} s   "
        f"(kept {n_keep}, would remove {n_remove:,})"
    )
    print(
        f"manifest GET            {1000 * per_get:>10.2f} ms each; reading all {n:,} "
        f"(read_manifests=True) would add ~{per_get * n:,.0f} s"
    )
    print(
        f"peak RSS                {_peak_rss_mib():>10.1f} MiB  "
        f"(at start {rss_start:.1f}, after prune --dry-run {rss_prune:.1f})"
    )
    return 0


def _decide(complete: list[catalog.BackupEntry]) -> int:
    by_target: dict[str, list[_Item]] = {}
    for e in complete:
        by_target.setdefault(e.target, []).append(_Item(e.id))
    return sum(len(apply_policy(items, POLICY).keep) for items in by_target.values())


class _Item:
    """A complete backup for retention: its id and the time the id encodes."""

    __slots__ = ("created", "id")

    def __init__(self, bid: str) -> None:
        self.id = bid
        self.created = catalog.id_time(bid)


if __name__ == "__main__":
    raise SystemExit(main())
