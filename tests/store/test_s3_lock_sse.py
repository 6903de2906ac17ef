"""S3 server-side encryption and Object Lock (backupctl.store.backends.s3_options),
on moto: every object a run writes, single PUT and multipart alike, carries
the SSE and the retain-until; prune skips a locked backup and says why, and a
later prune removes it once the lock has passed. The option parsing is table
tested without a server."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from backupctl.cli.app import app
from backupctl.store import catalog
from backupctl.store.backends import open_store
from backupctl.store.backends.base import StoreURLError, put_bytes, read_bytes
from backupctl.store.backends.s3 import S3Backend
from backupctl.store.backends.s3_options import (
    ObjectLock,
    ServerSideEncryption,
    parse_lock,
    sse_from_env,
)
from backupctl.store.backends.wrappers import DryRunBackend
from backupctl.store.prune import prune
from backupctl.store.retention import Policy

from support import object_stores
from support.fake_backups import add_backup
from support.object_stores import S3Emulator, store_env

s3_server = object_stores.s3_server

MIB = 1024 * 1024
TARGET = "ns/app"


# --- the options (pure) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"BACKUPCTL_S3_SSE": "AES256"}, {"ServerSideEncryption": "AES256"}),
        ({"BACKUPCTL_S3_SSE": "sse-s3"}, {"ServerSideEncryption": "AES256"}),
        ({"BACKUPCTL_S3_SSE": "aws:kms"}, {"ServerSideEncryption": "aws:kms"}),
        (
            {"BACKUPCTL_S3_SSE_KMS_KEY_ID": "arn:aws:kms:k1"},
            {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "arn:aws:kms:k1"},
        ),
    ],
)
def test_sse_from_the_environment(env: dict[str, str], expected: dict[str, Any] | None) -> None:
    sse = sse_from_env(env)
    assert (sse.write_args() if sse else None) == expected
    if sse is not None:
        assert sse.read_args() == {} and sse.part_args() == {}  # SSE-S3/KMS: set at the start


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BACKUPCTL_S3_SSE": "rot13"}, "must be AES256 (SSE-S3) or aws:kms"),
        (
            {"BACKUPCTL_S3_SSE": "AES256", "BACKUPCTL_S3_SSE_KMS_KEY_ID": "k"},
            "goes with $BACKUPCTL_S3_SSE=aws:kms",
        ),
        (
            {"BACKUPCTL_S3_SSE": "AES256", "BACKUPCTL_S3_SSE_C_KEY_FILE": "/k"},
            "pick one kind of server-side encryption",
        ),
        ({"BACKUPCTL_S3_SSE_C_KEY_FILE": "/nonexistent/k"}, "cannot read"),
    ],
)
def test_bad_sse_settings_are_one_clear_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(StoreURLError, match=re.escape(message)):
        sse_from_env(env)


def test_sse_c_key_file_raw_or_base64_and_the_key_on_every_request(tmp_path: Path) -> None:
    key = os.urandom(32)
    raw, b64, short = tmp_path / "raw", tmp_path / "b64", tmp_path / "short"
    raw.write_bytes(key)
    b64.write_text(base64.b64encode(key).decode() + "\n")
    short.write_bytes(b"x" * 16)
    for path in (raw, b64):
        sse = sse_from_env({"BACKUPCTL_S3_SSE_C_KEY_FILE": str(path)})
        assert sse is not None
        want = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}
        assert sse.write_args() == sse.part_args() == sse.read_args() == want
        assert key.hex() not in repr(sse)
    with pytest.raises(StoreURLError, match="must hold a 256-bit key"):
        sse_from_env({"BACKUPCTL_S3_SSE_C_KEY_FILE": str(short)})


@pytest.mark.parametrize(
    ("mode", "days", "result"),
    [
        (None, None, None),
        ("governance", 30, ObjectLock("GOVERNANCE", 30)),
        ("COMPLIANCE", 1, ObjectLock("COMPLIANCE", 1)),
        ("governance", None, "go together"),
        (None, 7, "go together"),
        ("legal-hold", 7, "governance or compliance"),
        ("locked", 7, ObjectLock("LOCKED", 7)),  # Azure / GCS (checked against the store later)
        ("compliance", 0, "1..36500"),
    ],
)
def test_lock_flags(mode: str | None, days: int | None, result: object) -> None:
    if isinstance(result, str):
        with pytest.raises(StoreURLError, match=result):
            parse_lock(mode, days)
    else:
        assert parse_lock(mode, days) == result


def test_lock_on_a_store_that_cannot_lock_is_refused() -> None:
    for url in ("/tmp/store", "file:///tmp/store"):
        with pytest.raises(StoreURLError, match="az:// and gs:// stores only"):
            open_store(url, lock=ObjectLock("GOVERNANCE", 1))
    for url in ("az://c/p", "gs://b/p"):  # S3's modes are not theirs: one line says which are
        with pytest.raises(StoreURLError, match="use unlocked or locked"):
            open_store(url, lock=ObjectLock("GOVERNANCE", 1))
    out = CliRunner().invoke(app, ["run", "--redis", "redis://127.0.0.1:1", "--to", "/tmp/x",
                                   "--lock-mode", "governance", "--lock-days", "3"])  # fmt: skip
    assert out.exit_code == 2 and "gs:// stores only" in out.output  # usage


# --- on moto --------------------------------------------------------------------------


@pytest.fixture
def locked_bucket(s3_server: S3Emulator) -> Iterator[str]:
    """A bucket created with Object Lock enabled (versioned, as S3 requires)."""
    name = object_stores.unique_bucket_name()
    s3_server.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    yield name
    s3 = s3_server.client()
    for v in s3.list_object_versions(Bucket=name).get("Versions", []):
        with contextlib.suppress(Exception):  # a compliance lock: gone with the server
            s3.delete_object(Bucket=name, Key=v["Key"], VersionId=v["VersionId"],
                             BypassGovernanceRetention=True)  # fmt: skip


def _backend(s3_server: S3Emulator, bucket: str, **kw: Any) -> S3Backend:
    with store_env(s3_server.env):
        backend = S3Backend(bucket, "backups", endpoint=s3_server.endpoint, **kw)
        backend.check()  # the clients read the environment now
        backend._client("upload")
    return backend


def _head(s3_server: S3Emulator, bucket: str, key: str) -> dict[str, Any]:
    head: dict[str, Any] = s3_server.client().head_object(Bucket=bucket, Key=f"backups/{key}")
    return head


def test_every_object_single_and_multipart_carries_the_lock_and_sse_kms(
    s3_server: S3Emulator, locked_bucket: str
) -> None:
    lock = ObjectLock("COMPLIANCE", 2)
    backend = _backend(s3_server, locked_bucket, lock=lock,
                       sse=ServerSideEncryption("aws:kms", kms_key_id="backup-key"))  # fmt: skip
    before = datetime.now(UTC)
    put_bytes(backend, "small", b"manifest")
    big = os.urandom(6 * MIB)  # more than one 5 MiB part: a multipart upload
    put_bytes(backend, "big", big)
    after = datetime.now(UTC)
    for key in ("small", "big"):
        head = _head(s3_server, locked_bucket, key)
        assert head["ObjectLockMode"] == "COMPLIANCE", key
        until = head["ObjectLockRetainUntilDate"]
        assert (
            before + timedelta(days=2, seconds=-1) <= until <= after + timedelta(days=2, seconds=1)
        )
        assert head["ServerSideEncryption"] == "aws:kms", key
        if key == "small":  # moto records the key id of a single PUT only
            assert head["SSEKMSKeyId"] == "backup-key"
        assert backend.retention(key) == ("COMPLIANCE", until)
    assert read_bytes(backend, "big") == big


def test_sse_s3_on_every_write(s3_server: S3Emulator) -> None:
    bucket = s3_server.new_bucket()
    try:
        backend = _backend(s3_server, bucket, sse=ServerSideEncryption("AES256"))
        put_bytes(backend, "small", b"x")
        put_bytes(backend, "big", os.urandom(6 * MIB))
        for key in ("small", "big"):
            assert _head(s3_server, bucket, key)["ServerSideEncryption"] == "AES256", key
        assert backend.retention("small") is None  # no lock asked, none set
    finally:
        s3_server.remove_bucket(bucket)


def test_sse_c_sends_the_customer_key_on_every_write_and_read(s3_server: S3Emulator) -> None:
    """moto neither stores nor checks SSE-C, so what the requests carry is asserted."""
    bucket = s3_server.new_bucket()
    key = os.urandom(32)
    try:
        backend = _backend(s3_server, bucket, sse=ServerSideEncryption("SSE-C", customer_key=key))
        sent: list[tuple[str, Any]] = []

        def record(params: dict[str, Any], model: Any, **_: Any) -> None:
            sent.append((model.name, params.get("SSECustomerKey")))

        for purpose in ("ops", "upload"):
            backend._client(purpose).meta.events.register("before-parameter-build.s3", record)
        put_bytes(backend, "small", b"x")
        big = os.urandom(6 * MIB)
        put_bytes(backend, "big", big)
        assert read_bytes(backend, "big") == big
        backend.stat("small")
        ops = {name for name, _ in sent}
        assert {"PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload",
                "GetObject", "HeadObject"} <= ops  # fmt: skip
        shown = (key, base64.b64encode(key).decode())  # botocore encodes it in place
        assert all(k in shown for _, k in sent), [n for n, k in sent if k not in shown]
    finally:
        s3_server.remove_bucket(bucket)


def test_prune_skips_a_locked_backup_and_removes_it_once_the_lock_has_passed(
    s3_server: S3Emulator, locked_bucket: str
) -> None:
    hold = 4.0  # seconds of lock: retain-until = (now - 1 day + hold s) + 1 day
    shifted = lambda: datetime.now(UTC) - timedelta(days=1, seconds=-hold)  # noqa: E731
    writer = _backend(s3_server, locked_bucket, lock=ObjectLock("GOVERNANCE", 1), now=shifted)
    t0 = datetime(2024, 3, 1, tzinfo=UTC)
    old = add_backup(writer, TARGET, t0)
    new = add_backup(writer, TARGET, t0 + timedelta(days=1))
    until = writer.retention(catalog.manifest_key(TARGET, old))
    assert until is not None
    pruner = _backend(s3_server, locked_bucket)  # prune itself writes no locks
    policy = Policy(last=1)

    dry = prune(DryRunBackend(pruner), policy, now=datetime.now(UTC), dry_run=True)
    first = prune(pruner, policy, now=datetime.now(UTC))
    for result in (dry, first):
        assert sorted(r.id for r in result.keep) == [old, new] and not result.remove
        [row] = [r for r in result.keep if r.id == old]
        assert "locked (governance) until" in row.reasons[-1]
    assert {e.id for e in catalog.scan(pruner, TARGET) if e.complete} == {old, new}

    deadline = time.monotonic() + hold + 10
    while datetime.now(UTC) <= until[1] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert datetime.now(UTC) > until[1], "the lock did not pass within the bounded wait"
    later = prune(pruner, policy, now=datetime.now(UTC))
    assert [r.id for r in later.remove] == [old]
    assert {e.id for e in catalog.scan(pruner, TARGET)} == {new}


def test_prune_extends_the_lock_of_kept_backups_and_a_dry_run_only_says_so(
    s3_server: S3Emulator, locked_bucket: str
) -> None:
    writer = _backend(s3_server, locked_bucket, lock=ObjectLock("GOVERNANCE", 1))
    t0 = datetime(2024, 3, 1, tzinfo=UTC)
    ids = [add_backup(writer, TARGET, t0 + timedelta(days=i)) for i in range(2)]
    pruner = _backend(s3_server, locked_bucket)
    first = {o.key: writer.retention(o.key) for o in pruner.list(TARGET + "/")}
    assert len(first) == 4 and all(r is not None for r in first.values())

    now = datetime.now(UTC)
    dry = prune(DryRunBackend(pruner), Policy(last=5), now=now, dry_run=True,
                extend_lock=timedelta(days=7))  # fmt: skip
    assert all("lock extended to" in r.reasons[-1] for r in dry.keep)
    assert {o.key: pruner.retention(o.key) for o in pruner.list(TARGET + "/")} == first

    result = prune(pruner, Policy(last=5), now=now, extend_lock=timedelta(days=7))
    assert sorted(r.id for r in result.keep) == ids
    for key in first:  # every object, archives too, not only the manifest
        lock = pruner.retention(key)
        assert lock is not None and lock[0] == "GOVERNANCE"
        assert abs(lock[1] - (now + timedelta(days=7))) < timedelta(seconds=2), key
    again = prune(pruner, Policy(last=5), now=now, extend_lock=timedelta(days=7))
    assert not any("extended" in r.reasons[-1] for r in again.keep)  # already long enough
