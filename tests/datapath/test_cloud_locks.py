"""Azure version-level immutability and GCS object retention (``--lock-mode
unlocked|locked``), per store: every object a run writes, single upload and
block / resumable upload alike, carries its lock (read back from the store);
prune keeps a locked backup and says why, delete refuses it with the reason,
and both remove it once the lock has passed; ``--extend-lock-days`` moves every
object's lock out; a hold keeps a backup until it is released.

Azurite and gcp-storage-emulator keep no locks, so the stores are the
stand-ins of ``tests/support/lock_stores.py`` (a proxy in front of a real
Azurite; the GCS emulator with retention kept and enforced). What that cannot
show: whether Azure and GCS themselves accept these requests on a container or
bucket configured for them (version-level immutability / object retention
enabled) -- docs/encryption.md says how to check it on the real service.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from backupctl.cli.app import app
from backupctl.store import catalog
from backupctl.store.backends.azure import AzureBackend
from backupctl.store.backends.base import Backend, StorageError, put_bytes, read_bytes
from backupctl.store.backends.gcs import GCSBackend
from backupctl.store.backends.locks import ObjectLock
from backupctl.store.backends.wrappers import DryRunBackend, retention_of
from backupctl.store.delete import DeleteError, delete_backups
from backupctl.store.prune import prune
from backupctl.store.retention import Policy

from support import object_stores
from support.cli_runner import assert_one_clear_error, cli
from support.fake_backups import add_backup
from support.lock_stores import AzureImmutabilityProxy, gcs_retention_argv
from support.object_stores import AzuriteEmulator, ServerProcess, store_env
from support.redis_servers import RedisFactory, populate

azurite_server = object_stores.azurite_server

MIB = 1024 * 1024
TARGET = "ns/app"
Clock = Callable[[], datetime]


@dataclass
class LockStore:
    """One store that keeps locks: how to open it, and how to read a lock back
    with the service's own client (not the code under test)."""

    scheme: str
    url: str
    endpoint: str
    env: dict[str, str]
    open: Callable[..., Backend]
    read_lock: Callable[[str], tuple[str, datetime] | None]
    hold: Callable[[str, bool], None]


@pytest.fixture(scope="module")
def azure_proxy(azurite_server: AzuriteEmulator) -> Iterator[AzureImmutabilityProxy]:
    proxy = AzureImmutabilityProxy(azurite_server.endpoint)
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def gcs_retention(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("gcs-retention")
    server, port = object_stores._start(
        "gcs-retention",
        gcs_retention_argv,
        lambda p: f"http://{object_stores.HOST}:{p}/storage/v1/b?project=test",
        workdir,
    )
    assert isinstance(server, ServerProcess)
    yield f"http://{object_stores.HOST}:{port}"
    server.stop()


def _azure(proxy: AzureImmutabilityProxy, azurite: AzuriteEmulator) -> Iterator[LockStore]:
    from azure.storage.blob import BlobServiceClient

    container = azurite.new_bucket()
    env = dict(azurite.env)
    service = BlobServiceClient.from_connection_string(
        azurite.connection_string.replace(azurite.endpoint, proxy.endpoint)
    )
    blobs = service.get_container_client(container)

    def open_(**kw: Any) -> Backend:
        with store_env(env):
            backend = AzureBackend(container, "backups", endpoint=proxy.endpoint, **kw)
            backend.check()  # the clients read the environment now
            backend._client("upload")
        return backend

    def read_lock(key: str) -> tuple[str, datetime] | None:
        props = blobs.get_blob_client(f"backups/{key}").get_blob_properties()
        policy = props.immutability_policy
        if policy is None or policy.expiry_time is None:
            return None
        return str(getattr(policy.policy_mode, "value", policy.policy_mode)), policy.expiry_time

    def hold(key: str, on: bool) -> None:
        blobs.get_blob_client(f"backups/{key}").set_legal_hold(on)

    yield LockStore("az", f"az://{container}/backups", proxy.endpoint, env, open_, read_lock,
                    hold)  # fmt: skip
    azurite.remove_bucket(container)


def _gcs(endpoint: str) -> Iterator[LockStore]:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        project="test",
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": endpoint},
    )
    bucket_name = object_stores.unique_bucket_name()
    bucket = client.create_bucket(bucket_name)
    env = {"STORAGE_EMULATOR_HOST": endpoint, "GOOGLE_CLOUD_PROJECT": "test"}

    def open_(**kw: Any) -> Backend:
        return GCSBackend(bucket_name, "backups", endpoint=endpoint, **kw)

    def read_lock(key: str) -> tuple[str, datetime] | None:
        blob = bucket.get_blob(f"backups/{key}")
        assert blob is not None, key
        until = blob.retention.retain_until_time
        return (str(blob.retention.mode), until) if until else None

    def hold(key: str, on: bool) -> None:
        blob = bucket.blob(f"backups/{key}")
        blob.temporary_hold = on
        blob.patch()

    yield LockStore("gs", f"gs://{bucket_name}/backups", endpoint, env, open_, read_lock, hold)
    with contextlib.suppress(Exception):  # a Locked retention stays: gone with the server
        bucket.delete(force=True)


@pytest.fixture(params=["azure", "gcs"])
def lock_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[LockStore]:  # the stand-ins start only for the stores a test runs on
    if request.param == "azure":
        proxy = request.getfixturevalue("azure_proxy")
        yield from _azure(proxy, request.getfixturevalue("azurite_server"))
    else:
        yield from _gcs(request.getfixturevalue("gcs_retention"))


def _wait_past(until: datetime, budget: float) -> None:
    deadline = time.monotonic() + budget
    while datetime.now(UTC) <= until and time.monotonic() < deadline:
        time.sleep(0.2)
    assert datetime.now(UTC) > until, "the lock did not pass within the bounded wait"


def test_every_object_single_and_block_upload_carries_the_lock(lock_store: LockStore) -> None:
    backend = lock_store.open(lock=ObjectLock("LOCKED", 2))
    before = datetime.now(UTC)
    put_bytes(backend, "small", b"manifest")
    big = os.urandom(9 * MIB)  # more than one 8 MiB block / chunk
    put_bytes(backend, "big", big)
    after = datetime.now(UTC)
    for key in ("small", "big"):
        lock = lock_store.read_lock(key)
        assert lock is not None, key
        assert lock[0] == "Locked", key
        assert (
            before + timedelta(days=2, seconds=-2)
            <= lock[1]
            <= after + timedelta(days=2, seconds=2)
        )
        assert retention_of(backend, key) == ("Locked", lock[1])
    assert read_bytes(backend, "big") == big
    plain = lock_store.open()
    put_bytes(plain, "free", b"x")
    assert lock_store.read_lock("free") is None and retention_of(plain, "free") is None
    with pytest.raises(StorageError):  # the store enforces it: a delete is refused
        plain.delete("small")
    assert read_bytes(plain, "small") == b"manifest"


def test_prune_and_delete_skip_a_locked_backup_until_the_lock_passes(
    lock_store: LockStore,
) -> None:
    hold = 5.0  # seconds of lock: retain-until = (now - 1 day + hold s) + 1 day
    shifted: Clock = lambda: datetime.now(UTC) - timedelta(days=1, seconds=-hold)  # noqa: E731
    writer = lock_store.open(lock=ObjectLock("UNLOCKED", 1), now=shifted)
    t0 = datetime(2024, 3, 1, tzinfo=UTC)
    old = add_backup(writer, TARGET, t0)
    new = add_backup(writer, TARGET, t0 + timedelta(days=1))
    until = lock_store.read_lock(catalog.manifest_key(TARGET, old))
    assert until is not None and until[0] == "Unlocked"
    pruner = lock_store.open()  # prune itself writes no locks
    policy = Policy(last=1)

    dry = prune(DryRunBackend(pruner), policy, now=datetime.now(UTC), dry_run=True)
    first = prune(pruner, policy, now=datetime.now(UTC))
    for result in (dry, first):
        assert sorted(r.id for r in result.keep) == [old, new] and not result.remove
        [row] = [r for r in result.keep if r.id == old]
        assert "locked (unlocked policy) until" in row.reasons[-1], row.reasons
        assert "a prune after that removes it" in row.reasons[-1]
    with pytest.raises(DeleteError, match=f"backup {old} of {TARGET} is locked"):
        delete_backups(pruner, [old])
    with store_env(lock_store.env):
        out = CliRunner().invoke(app, ["delete", lock_store.url, old, "--endpoint",
                                       lock_store.endpoint, "--json"])  # fmt: skip
    assert out.exit_code != 0
    error = json.loads(out.stdout[out.stdout.index("{") :])["error"]["message"]
    assert f"backup {old} of {TARGET} is locked (unlocked policy) until" in error
    assert {e.id for e in catalog.scan(pruner, TARGET) if e.complete} == {old, new}

    _wait_past(until[1], hold + 15)
    later = prune(pruner, policy, now=datetime.now(UTC))
    assert [r.id for r in later.remove] == [old]
    assert {e.id for e in catalog.scan(pruner, TARGET)} == {new}


def test_extend_lock_days_moves_every_objects_lock_and_a_dry_run_only_says_so(
    lock_store: LockStore,
) -> None:
    writer = lock_store.open(lock=ObjectLock("LOCKED", 1))
    t0 = datetime(2024, 3, 1, tzinfo=UTC)
    ids = [add_backup(writer, TARGET, t0 + timedelta(days=i)) for i in range(2)]
    pruner = lock_store.open()
    first = {o.key: lock_store.read_lock(o.key) for o in pruner.list(TARGET + "/")}
    assert len(first) == 4 and all(r is not None for r in first.values())

    now = datetime.now(UTC)
    dry = prune(DryRunBackend(pruner), Policy(last=5), now=now, dry_run=True,
                extend_lock=timedelta(days=7))  # fmt: skip
    assert all("lock extended to" in r.reasons[-1] for r in dry.keep), dry.keep
    assert {k: lock_store.read_lock(k) for k in first} == first

    result = prune(pruner, Policy(last=5), now=now, extend_lock=timedelta(days=7))
    assert sorted(r.id for r in result.keep) == ids
    for key in first:  # every object, archives too, not only the manifest
        lock = lock_store.read_lock(key)
        assert lock is not None and lock[0] == "Locked", key
        assert abs(lock[1] - (now + timedelta(days=7))) < timedelta(seconds=2), key
    again = prune(pruner, Policy(last=5), now=now, extend_lock=timedelta(days=7))
    assert not any("extended" in r.reasons[-1] for r in again.keep)  # already long enough


def test_a_held_backup_is_kept_until_the_hold_is_released(lock_store: LockStore) -> None:
    writer = lock_store.open()  # no retention: only the hold keeps it
    t0 = datetime(2024, 3, 1, tzinfo=UTC)
    old = add_backup(writer, TARGET, t0)
    new = add_backup(writer, TARGET, t0 + timedelta(days=1))
    manifest = catalog.manifest_key(TARGET, old)
    lock_store.hold(manifest, True)
    result = prune(writer, Policy(last=1), now=datetime.now(UTC))
    [row] = [r for r in result.keep if r.id == old]
    kind = "legal hold" if lock_store.scheme == "az" else "temporary hold"
    assert row.reasons[-1].startswith(f"held ({kind}) until released"), row.reasons
    assert not result.remove
    lock_store.hold(manifest, False)
    later = prune(writer, Policy(last=1), now=datetime.now(UTC))
    assert [r.id for r in later.remove] == [old]
    assert {e.id for e in catalog.scan(writer, TARGET)} == {new}


def test_the_cli_locks_a_real_backup_and_prune_and_delete_say_why(
    lock_store: LockStore, redis_factory: RedisFactory
) -> None:
    """As a user runs it: ``backupctl run --lock-mode`` against a real server,
    then ``prune`` and ``delete`` of the locked backup by the CLI."""
    src = redis_factory()
    populate(src.client(), 500)
    where = [lock_store.url, "--endpoint", lock_store.endpoint]
    run = ["run", "--redis", src.url, "--to", lock_store.url, "--endpoint", lock_store.endpoint,
           "--target", TARGET, "--lock-mode", "locked", "--lock-days", "1", "--json"]  # fmt: skip
    first = json.loads(cli(*run, env=lock_store.env).stdout)["id"]
    second = json.loads(cli(*run, env=lock_store.env).stdout)["id"]
    keys = [o.key for o in lock_store.open().list(f"{TARGET}/{first}/")]
    assert any(k.endswith(".tar.zst") for k in keys) and len(keys) >= 2, keys
    for key in keys:  # archives and manifest alike
        lock = lock_store.read_lock(key)
        assert lock is not None and lock[0] == "Locked", key

    pruned = cli("prune", *where, "--keep-last", "1", "--json", env=lock_store.env)
    report = json.loads(pruned.stdout)
    assert not report["remove"]
    [row] = [r for r in report["keep"] if r["id"] == first]
    assert row["reasons"][-1].startswith("locked (locked policy) until "), row
    refused = cli("delete", *where, first, env=lock_store.env, check=False)
    assert_one_clear_error(refused, f"backup {first} of {TARGET} is locked (locked policy)")
    listed = json.loads(cli("list", *where, "--json", env=lock_store.env).stdout)
    assert {b["id"] for b in listed["backups"]} >= {first, second}
