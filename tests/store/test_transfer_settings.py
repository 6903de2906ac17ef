"""``--part-size`` and ``--concurrency`` (and their ``BACKUPCTL_`` variables)
as a user sees them: the parts an S3 multipart upload and an Azure block
list end up with, the parts in flight at once, and one ``error:`` line
(exit 2) for a value a store does not take."""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from backupctl.core.timefmt import format_time
from backupctl.store import catalog
from backupctl.store.backends import Transfer, open_store
from backupctl.store.backends.base import put_bytes
from backupctl.store.backends.s3 import S3Backend
from backupctl.store.backends.transfer import (
    LIMITS,
    MiB,
    TransferError,
    check_transfer,
)
from backupctl.store.catalog import ArchiveEntry, FileEntry, Manifest, NodeEntry

from support.cli_runner import assert_one_clear_error, cli
from support.object_stores import AzuriteEmulator, S3Emulator, StoreURL

ARCHIVE = 11 * MiB  # 3 parts of 5 MiB (the S3 default), 2 of 6 MiB


def big_backup(root: Path, size: int = ARCHIVE) -> tuple[str, str]:
    """A local store with one backup whose archive is ``size`` bytes; its id and
    the archive's key."""
    root.mkdir()
    store = open_store(str(root))
    created = datetime(2025, 1, 1, tzinfo=UTC)
    bid = catalog.new_backup_id(created)
    data = hashlib.sha256(b"seed").digest() * (size // 32)
    name = catalog.archive_name("redis-0", "zstd")
    key = catalog.backup_dir("ns/big", bid) + name
    put_bytes(store, key, data)
    sha = hashlib.sha256(data).hexdigest()
    catalog.write_manifest(
        store,
        Manifest(
            id=bid,
            target="ns/big",
            created=format_time(created),
            tool_version="0.1.0",
            redis_version="7.0.15",
            method="bgsave",
            compression="zstd",
            nodes=[
                NodeEntry(
                    name="redis-0",
                    role="master",
                    redis_version="7.0.15",
                    rdb_version=10,
                    snapshot_time=format_time(created),
                    keys=1,
                    archive=ArchiveEntry(key=name, size=len(data), sha256=sha, compression="zstd"),
                    files=[FileEntry(path="dump.rdb", size=len(data), sha256=sha, kind="rdb")],
                )
            ],
        ),
    )
    return bid, key


@pytest.mark.parametrize(
    ("scheme", "part_size", "concurrency", "problem"),
    [
        ("s3", 5 * MiB, 2, None),
        ("s3", 4 * MiB, None, "5MiB to 5GiB"),
        ("s3", None, 33, "1 to 32"),
        ("s3", None, 0, "1 to 32"),
        ("az", 100 * MiB, 8, None),
        ("az", 4001 * MiB, None, "4000MiB"),
        ("gs", 16 * MiB, None, None),
        ("gs", 300 * 1024, None, "multiple of 256KiB"),
        ("file", 1, None, None),  # no parts: anything goes
    ],
)
def test_part_size_and_concurrency_are_checked_per_store(
    scheme: str, part_size: int | None, concurrency: int | None, problem: str | None
) -> None:
    t = Transfer(part_size=part_size, concurrency=concurrency)
    if problem is None:
        check_transfer(scheme, t)
    else:
        with pytest.raises(TransferError, match=problem):
            check_transfer(scheme, t)


def test_gcs_sends_one_chunk_at_a_time_whatever_the_concurrency() -> None:
    assert Transfer(concurrency=8).workers("gs") == 1
    assert Transfer(concurrency=8).workers("s3") == 8
    assert Transfer().part("s3") == LIMITS["s3"].default_part


def _parts(s3_server: S3Emulator, bucket: str, key: str) -> int:
    """The part count S3 reports for an object (1: a single PutObject)."""
    head = s3_server.client().head_object(Bucket=bucket, Key=key, PartNumber=1)
    return int(head.get("PartsCount", 1))


def test_s3_part_size_flag_variable_and_config_file_set_the_multipart_parts(
    s3_server: S3Emulator, s3_store: StoreURL, tmp_path: Path
) -> None:
    _, key = big_backup(tmp_path / "src")
    bucket = s3_store.url.removeprefix("s3://")
    env = dict(s3_store.env)
    config = tmp_path / "config.toml"
    config.write_text('part-size = "6MiB"\n')
    counts = {}
    for name, args, extra in [
        ("default", (), {}),
        ("flag", ("--part-size", "6MiB"), {}),
        ("variable", (), {"BACKUPCTL_PART_SIZE": "6MiB"}),
        ("file", (), {"BACKUPCTL_CONFIG": str(config)}),
        ("file-under-flag", ("--part-size", "5MiB"), {"BACKUPCTL_CONFIG": str(config)}),
    ]:
        url = f"{s3_store.url}/{name}"
        cli("copy", tmp_path / "src", url, *args, env={**env, **extra})
        counts[name] = _parts(s3_server, bucket, f"{name}/{key}")
    assert counts == {"default": 3, "flag": 2, "variable": 2, "file": 2, "file-under-flag": 3}


def test_azure_part_size_sets_the_committed_blocks(
    azurite_server: AzuriteEmulator, azure_store: StoreURL, tmp_path: Path
) -> None:
    _, key = big_backup(tmp_path / "src")
    container = azure_store.url.removeprefix("az://")
    blocks = {}
    for name, args in [("default", ()), ("flag", ("--part-size", "4MiB"))]:
        cli("copy", tmp_path / "src", f"{azure_store.url}/{name}", *args, env=azure_store.env)
        blob = azurite_server.service().get_blob_client(container, f"{name}/{key}")
        committed, _ = blob.get_block_list("committed")
        blocks[name] = [b.size for b in committed]
    assert blocks == {"default": [8 * MiB, 3 * MiB], "flag": [4 * MiB] * 2 + [3 * MiB]}


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (("--part-size", "1MiB"), {}, "5MiB to 5GiB"),
        (("--part-size", "lots"), {}, "is not a size"),
        ((), {"BACKUPCTL_CONCURRENCY": "99"}, "BACKUPCTL_CONCURRENCY"),
        (("--limit-upload", "0"), {}, "--limit-upload"),
    ],
)
def test_a_transfer_setting_a_store_does_not_take_is_one_usage_error(
    args: tuple[str, ...], env: dict[str, str], needle: str, tmp_path: Path
) -> None:
    (tmp_path / "src").mkdir()
    proc = cli("copy", tmp_path / "src", "s3://some-bucket", *args, env=env, check=False)
    assert proc.returncode == 2
    assert_one_clear_error(proc, needle)


class _CountingClient:
    """An S3 client whose UploadPart takes 0.1 s and counts the parts in flight."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most = 0
        self._lock = threading.Lock()

    def create_multipart_upload(self, **_: Any) -> dict[str, str]:
        return {"UploadId": "u"}

    def upload_part(self, **kw: Any) -> dict[str, str]:
        with self._lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        time.sleep(0.1)
        with self._lock:
            self.in_flight -= 1
        return {"ETag": f"e{kw['PartNumber']}"}

    def complete_multipart_upload(self, **_: Any) -> None:
        return None


@pytest.mark.parametrize(("concurrency", "most"), [(None, 2), (1, 1), (4, 4)])
def test_concurrency_is_the_parts_in_flight(concurrency: int | None, most: int) -> None:
    backend = S3Backend("bucket", transfer=Transfer(concurrency=concurrency))
    client = _CountingClient()
    backend._clients = {"upload": client, "ops": client}  # type: ignore[dict-item]
    with backend.writer("k") as w:
        w.write(b"x" * (5 * MiB * 6))  # six parts
        w.commit()
    assert client.most == most
