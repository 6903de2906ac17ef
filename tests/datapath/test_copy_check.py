"""``backupctl check`` and ``backupctl copy``, as a user runs them.

check: a 100-backup store of small real archives (tar + zstd, valid
manifests, no Redis) with one flipped byte is caught by ``--read-data``
(and by the ``n/t`` subsets taken together), not by the metadata check.
copy: a real Redis backup goes file:// -> S3 (moto) -> Azure (Azurite),
then ``verify`` and ``restore --to-redis`` from the last copy equal the
source's ``DEBUG DIGEST``; a copy stopped midway resumes; a corrupt source
is not copied.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backupctl.core.timefmt import format_time
from backupctl.ops.copy import copy_backups
from backupctl.store import catalog
from backupctl.store.archive import Member, write_archive
from backupctl.store.backends import open_store
from backupctl.store.backends.base import Backend, ObjectWriter, put_bytes
from backupctl.store.backends.wrappers import ForwardingBackend
from backupctl.store.catalog import ArchiveEntry, Manifest, NodeEntry

from support.cli_runner import assert_one_clear_error, cli
from support.object_stores import StoreURL
from support.redis_servers import RedisFactory, populate

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def add_real_backup(store: Backend, target: str, created: datetime, payload: bytes) -> str:
    """One backup with a real (tiny) tar.zst archive and its manifest, written last."""
    bid = catalog.new_backup_id(created)
    buf = io.BytesIO()
    result = write_archive(
        buf, [Member("dump.rdb", len(payload), "rdb", lambda: io.BytesIO(payload))]
    )
    name = catalog.archive_name("redis-0", "zstd")
    put_bytes(store, catalog.backup_dir(target, bid) + name, buf.getvalue())
    node = NodeEntry(
        name="redis-0",
        role="master",
        redis_version="7.4.0",
        rdb_version=12,
        snapshot_time=format_time(created),
        keys=1,
        archive=ArchiveEntry(name, result.size, result.sha256, "zstd"),
        files=result.files,
    )
    catalog.write_manifest(
        store,
        Manifest(
            id=bid,
            target=target,
            created=format_time(created),
            tool_version="0.1.0",
            redis_version="7.4.0",
            method="bgsave",
            compression="zstd",
            nodes=[node],
        ),
    )
    return bid


@pytest.fixture
def hundred(tmp_path: Path) -> tuple[Path, list[str]]:
    root = tmp_path / "store"
    root.mkdir()
    store = open_store(str(root))
    ids = [
        add_real_backup(
            store, f"ns/t{i % 4}", T0 + timedelta(hours=i), f"payload {i} ".encode() * 300
        )
        for i in range(100)
    ]
    return root, ids


def _flip_one_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_check_read_data_catches_one_flipped_byte_in_a_100_backup_store(
    hundred: tuple[Path, list[str]],
) -> None:
    root, ids = hundred
    clean = json.loads(cli("check", root, "--read-data", "--json").stdout)
    assert clean["ok"] and clean["backups"] == 100 and clean["archivesRead"] == 100
    assert clean["errors"] == []

    victim = ids[57]
    archive = root / "ns" / "t1" / victim / "redis-0.tar.zst"
    _flip_one_byte(archive, archive.stat().st_size // 2)

    # The metadata check cannot see it: the size is unchanged.
    assert json.loads(cli("check", root, "--json").stdout)["ok"]

    proc = cli("check", root, "--read-data", check=False)
    assert proc.returncode == 6  # integrity (docs/cli-output.md)
    assert f"ns/t1/{victim}: redis-0.tar.zst:" in proc.stdout
    assert "100 backups, 100 archives, 100 read" in proc.stdout and "1 error" in proc.stdout
    errors = [ln for ln in proc.stderr.splitlines() if not ln.startswith("progress:")]
    assert errors == [f"error: check found 1 error(s) in {root.as_uri()}"]

    # n/t subsets: each reads a share, together they read (and find) everything.
    found, read = [], 0
    for n in (1, 2, 3):
        out = json.loads(
            cli("check", root, "--read-data-subset", f"{n}/3", "--json", check=False).stdout
        )
        read += out["archivesRead"]
        found += [e["id"] for e in out["errors"]]
    assert read == 100 and found == [victim]


def test_check_reports_missing_and_truncated_archives_and_bad_subsets(
    hundred: tuple[Path, list[str]],
) -> None:
    root, ids = hundred
    (root / "ns" / "t0" / ids[0] / "redis-0.tar.zst").unlink()
    short = root / "ns" / "t2" / ids[2] / "redis-0.tar.zst"
    short.write_bytes(short.read_bytes()[:-5])
    out = json.loads(cli("check", root, "--json", check=False).stdout)
    assert not out["ok"]
    messages = {e["id"]: e["message"] for e in out["errors"]}
    assert messages == {
        ids[0]: "redis-0.tar.zst: missing from the store",
        ids[2]: messages[ids[2]],
    }
    assert "stored size" in messages[ids[2]]
    bad = cli("check", root, "--read-data-subset", "150%", check=False)
    assert bad.returncode == 2 and "percentage" in bad.stderr


def _digest_restore(redis_factory: RedisFactory, store: StoreURL, bid: str) -> str:
    dest = redis_factory()
    cli(
        "restore", store.url, bid, "--target", "ns/src",
        "--to-redis", f"redis://127.0.0.1:{dest.port}", env=store.env,
    )  # fmt: skip
    return dest.digest()


def test_copy_file_to_s3_to_azure_then_verify_and_restore_equal_digest(
    redis_factory: RedisFactory, file_store: StoreURL, s3_store: StoreURL, azure_store: StoreURL
) -> None:
    src = redis_factory()
    populate(src.client(), 5_000)
    digest = src.digest()
    run = json.loads(
        cli(
            "run", "--redis", src.url, "--to", file_store.url, "--target", "ns/src", "--json"
        ).stdout
    )
    bid = run["id"]
    env = {**s3_store.env, **azure_store.env}

    first = json.loads(
        cli("copy", file_store.url, s3_store.url, "--latest", "--json", env=env).stdout
    )
    assert [(b["id"], b["action"]) for b in first["backups"]] == [(bid, "copied")]
    second = json.loads(cli("copy", s3_store.url, azure_store.url, bid, "--json", env=env).stdout)
    assert [(b["id"], b["action"]) for b in second["backups"]] == [(bid, "copied")]
    again = json.loads(cli("copy", s3_store.url, azure_store.url, "--json", env=env).stdout)
    assert [(b["id"], b["action"], b["bytes"]) for b in again["backups"]] == [(bid, "skipped", 0)]

    listed = json.loads(cli("list", azure_store.url, "--json", env=env).stdout)["backups"]
    assert [(e["id"], e["target"], e["status"]) for e in listed] == [(bid, "ns/src", "complete")]
    shown = json.loads(cli("show", azure_store.url, bid, "--json", env=env).stdout)
    original = json.loads(cli("show", file_store.url, bid, "--json").stdout)
    # The same manifest; how each store protects its objects differs (Azure
    # encrypts every blob with its account key, a folder does not).
    assert shown["manifest"] == original["manifest"]
    assert [o["key"] for o in shown["objects"]] == [o["key"] for o in original["objects"]]
    assert {str((o["serverSide"] or {}).get("algorithm")) for o in shown["objects"]} == {
        "azure:account"
    }
    assert json.loads(cli("verify", azure_store.url, bid, "--json", env=env).stdout)["ok"]
    assert _digest_restore(redis_factory, azure_store, bid) == digest


class _StopAfterWrites(ForwardingBackend):
    """Stands in for a copy killed after ``n`` committed objects."""

    def __init__(self, inner: Backend, n: int) -> None:
        super().__init__(inner)
        self.left = n

    def writer(self, key: str) -> ObjectWriter:
        if self.left == 0:
            raise KeyboardInterrupt("stopped")
        self.left -= 1
        return self.inner.writer(key)


def test_copy_stopped_midway_lists_nothing_then_resumes(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    src, dst = open_store(str(a)), open_store(str(b))
    ids = [add_real_backup(src, "ns/x", T0 + timedelta(days=i), b"data" * 1000) for i in range(3)]
    with pytest.raises(KeyboardInterrupt):
        copy_backups(src, _StopAfterWrites(dst, 3), target="ns/x")  # archive+manifest, archive
    assert [e.id for e in catalog.scan(dst) if e.complete] == [ids[0]]
    report = copy_backups(src, dst, target="ns/x")
    got: list[Any] = [(c.id, c.action, c.reused) for c in report.backups]
    assert got == [(ids[0], "skipped", 0), (ids[1], "copied", 1), (ids[2], "copied", 0)]
    assert sorted(e.id for e in catalog.scan(dst) if e.complete) == ids
    assert json.loads(cli("check", b, "--read-data", "--json").stdout)["archivesRead"] == 3


def test_copy_refuses_a_corrupt_source_and_writes_nothing_complete(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    bid = add_real_backup(open_store(str(a)), "ns/x", T0, b"data" * 1000)
    _flip_one_byte(a / "ns" / "x" / bid / "redis-0.tar.zst", 20)
    proc = cli("copy", a, b, check=False)
    assert_one_clear_error(proc, "corrupt", "not copied")
    assert catalog.scan(open_store(str(b))) == []
