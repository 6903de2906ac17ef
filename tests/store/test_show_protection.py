"""``backupctl show`` says how each object of a backup is protected: the age
recipients' fingerprints (from the manifest), the server-side encryption and
the Object Lock as S3 reports them (moto, a bucket with Object Lock), "none"
where there is none; ``--json`` validates against docs/schemas/show.json."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from typer.testing import CliRunner

from backupctl.cli.app import app
from backupctl.core.timefmt import format_time
from backupctl.store import catalog
from backupctl.store.backends.base import Backend, put_bytes
from backupctl.store.backends.local import LocalBackend
from backupctl.store.backends.locks import ObjectLock
from backupctl.store.backends.s3 import S3Backend
from backupctl.store.backends.s3_options import ServerSideEncryption
from backupctl.store.catalog import ArchiveEntry, FileEntry, Manifest, NodeEntry

from support import object_stores
from support.object_stores import S3Emulator, store_env

s3_server = object_stores.s3_server

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "schemas" / "show.json").read_text())
TARGET = "ns/app"
OPS, DR = "3f1c" * 8, "9a0e" * 8  # recipients' fingerprints, as the manifest records them
CREATED = datetime(2024, 3, 1, 2, tzinfo=UTC)


def write_backup(backend: Backend, *, encrypted: bool) -> str:
    """One backup of two nodes (redis-0 encrypted to OPS and DR when ``encrypted``)."""
    bid = catalog.new_backup_id(CREATED)
    nodes = []
    for name in ("redis-0", "redis-1"):
        data = f"{name} archive\n".encode()
        to = [OPS, DR] if encrypted and name == "redis-0" else []
        key = catalog.archive_name(name, "zstd") + (".age" if to else "")
        put_bytes(backend, catalog.backup_dir(TARGET, bid) + key, data)
        sha = hashlib.sha256(data).hexdigest()
        nodes.append(NodeEntry(
            name=name, role="master", redis_version="7.2.4", rdb_version=11,
            snapshot_time=format_time(CREATED), keys=1,
            archive=ArchiveEntry(key=key, size=len(data), sha256=sha, compression="zstd",
                                 encrypted_to=to),
            files=[FileEntry(path="dump.rdb", size=len(data), sha256=sha, kind="rdb")],
        ))  # fmt: skip
    catalog.write_manifest(backend, Manifest(
        id=bid, target=TARGET, created=format_time(CREATED), tool_version="0.1.0",
        redis_version="7.2.4", method="bgsave", compression="zstd", nodes=nodes,
    ))  # fmt: skip
    return bid


def show(*args: str, env: dict[str, str] | None = None) -> tuple[str, dict[str, Any]]:
    """(the human output, the --json output) of ``show``."""
    runner = CliRunner()
    with store_env(env or {}):
        text = runner.invoke(app, ["show", *args])
        data = runner.invoke(app, ["show", *args, "--json"])
    assert text.exit_code == 0, text.output
    assert data.exit_code == 0, data.output
    out: dict[str, Any] = json.loads(data.stdout)
    jsonschema.validate(out, SCHEMA)
    return text.stdout, out


def table(text: str) -> dict[str, list[str]]:
    """The OBJECT table's rows by object key, split into columns of 2+ spaces."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("OBJECT"))
    rows = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        cols = [c for c in line.split("  ") if c.strip()]
        rows[cols[0].strip()] = [c.strip() for c in cols[1:]]
    return rows


@pytest.fixture
def locked_bucket(s3_server: S3Emulator) -> Iterator[str]:
    """A bucket created with Object Lock enabled (versioned, as S3 requires)."""
    name = object_stores.unique_bucket_name()
    s3_server.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    yield name
    s3 = s3_server.client()
    for v in s3.list_object_versions(Bucket=name).get("Versions", []):
        with contextlib.suppress(Exception):
            s3.delete_object(Bucket=name, Key=v["Key"], VersionId=v["VersionId"],
                             BypassGovernanceRetention=True)  # fmt: skip


def test_show_prints_encryption_sse_kms_and_the_object_lock_of_every_object(
    s3_server: S3Emulator, locked_bucket: str
) -> None:
    with store_env(s3_server.env):
        kms = ServerSideEncryption("aws:kms", kms_key_id="backup-key")
        writer = S3Backend(locked_bucket, "backups", endpoint=s3_server.endpoint,
                           lock=ObjectLock("GOVERNANCE", 3), sse=kms)  # fmt: skip
        before = datetime.now(UTC).replace(microsecond=0)
        bid = write_backup(writer, encrypted=True)
        after = datetime.now(UTC)
    url = f"s3://{locked_bucket}/backups"
    text, out = show(url, bid, "--target", TARGET, "--endpoint", s3_server.endpoint,
                     env=s3_server.env)  # fmt: skip

    objects = {o["key"]: o for o in out["objects"]}
    assert list(objects) == ["redis-0.tar.zst.age", "redis-1.tar.zst", "manifest.json"]
    encryption = objects["redis-0.tar.zst.age"]["encryption"]
    assert encryption == {"format": "age", "recipients": [OPS, DR]}
    assert objects["redis-1.tar.zst"]["encryption"] is None
    assert objects["manifest.json"]["node"] is None
    for key, o in objects.items():
        assert o["serverSide"]["algorithm"] == "aws:kms", key
        assert o["lock"]["mode"] == "GOVERNANCE", key
        until = datetime.fromisoformat(o["lock"]["retainUntil"])
        assert before + timedelta(days=3) <= until <= after + timedelta(days=3, seconds=1), key
    # moto records the KMS key id of a single PUT (every object here is one)
    assert objects["manifest.json"]["serverSide"]["kmsKeyId"] == "backup-key"

    rows = table(text)
    enc, sse, lock = rows["redis-0.tar.zst.age"]
    assert enc == f"age to {OPS}, {DR}"
    assert sse == "SSE-KMS (backup-key)"
    until = objects["redis-0.tar.zst.age"]["lock"]["retainUntil"]
    assert lock == f"locked (governance) until {until}"
    assert rows["redis-1.tar.zst"][0] == "none"


def test_show_says_none_for_an_unlocked_sse_s3_bucket_and_a_file_store(
    s3_server: S3Emulator, tmp_path: Path
) -> None:
    bucket = s3_server.new_bucket()
    try:
        with store_env(s3_server.env):
            writer = S3Backend(bucket, "b", endpoint=s3_server.endpoint,
                               sse=ServerSideEncryption("AES256"))  # fmt: skip
            bid = write_backup(writer, encrypted=False)
        text, out = show(f"s3://{bucket}/b", bid, "--target", TARGET, "--endpoint",
                         s3_server.endpoint, env=s3_server.env)  # fmt: skip
        assert {o["serverSide"]["algorithm"] for o in out["objects"]} == {"AES256"}
        assert [o["lock"] for o in out["objects"]] == [None, None, None]
        assert {tuple(r) for r in table(text).values()} == {("none", "SSE-S3", "none")}
    finally:
        s3_server.remove_bucket(bucket)

    bid = write_backup(LocalBackend(str(tmp_path)), encrypted=True)
    text, out = show(str(tmp_path), bid, "--target", TARGET)
    assert [(o["serverSide"], o["lock"]) for o in out["objects"]] == [(None, None)] * 3
    assert table(text)["redis-1.tar.zst"] == ["none", "none", "none"]
    assert table(text)["redis-0.tar.zst.age"][0] == f"age to {OPS}, {DR}"
