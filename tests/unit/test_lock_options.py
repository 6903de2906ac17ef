"""Locks on every store, without a server: which ``--lock-mode`` each store takes
(backupctl.store.backends.locks), how a lock reads in prune's and delete's
reasons, the CRD's lock fields (beside ``s3ObjectLock``: ``azureImmutability``,
``gcsRetention``) into the backup and prune Jobs' flags, and a delete the store
refuses, which stops neither the rest of the prune nor goes unreported."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from backupctl.controller.spec import parse_backup
from backupctl.controller.spec_crypto import backup_keys
from backupctl.controller.spec_fields import SpecError
from backupctl.controller.store_jobs import prune_job
from backupctl.store import catalog
from backupctl.store.backends import open_store
from backupctl.store.backends.base import AccessDenied, StorageError, StoreURLError
from backupctl.store.backends.locks import HELD, ObjectLock, describe_lock, lock_for_store
from backupctl.store.backends.memory import MemoryBackend
from backupctl.store.delete import DeleteError, delete_backups
from backupctl.store.prune import prune
from backupctl.store.retention import Policy

from support.fake_backups import add_backup

NOW = datetime(2026, 1, 10, 2, tzinfo=UTC)
TARGET = "ns/app"
STORAGE = {
    "s3": {"s3": {"bucket": "b", "region": "us-east-1"}},
    "azureBlob": {"azureBlob": {"container": "backups", "storageAccount": "acct",
                                "storageAccountKeySecret": {"name": "az", "key": "key"}}},
    "gcs": {"gcs": {"bucket": "b", "credentialsSecret": {"name": "gcs", "key": "sa.json"}}},
}  # fmt: skip


@pytest.mark.parametrize(
    ("scheme", "mode", "error"),
    [
        ("s3", "GOVERNANCE", None),
        ("s3", "COMPLIANCE", None),
        ("az", "UNLOCKED", None),
        ("az", "LOCKED", None),
        ("gs", "LOCKED", None),
        ("S3", "GOVERNANCE", None),
        ("az", "GOVERNANCE", "use unlocked or locked (the nearest to governance is unlocked)"),
        ("gs", "COMPLIANCE", "use unlocked or locked (the nearest to compliance is locked)"),
        ("s3", "LOCKED", "use governance or compliance (the nearest to locked is compliance)"),
        ("file", "GOVERNANCE", "a file store cannot lock"),
        ("memory", "LOCKED", "s3://, az:// and gs:// stores only"),
    ],
)
def test_each_store_takes_its_own_modes(scheme: str, mode: str, error: str | None) -> None:
    lock = ObjectLock(mode, 3)
    if error is None:
        assert lock_for_store(lock, scheme) is lock
    else:
        with pytest.raises(StoreURLError, match=error.replace("(", r"\(").replace(")", r"\)")):
            lock_for_store(lock, scheme)
    assert lock_for_store(None, scheme) is None


def test_open_store_gives_the_lock_to_azure_and_gcs() -> None:
    for url, mode in (("az://backups/p", "UNLOCKED"), ("gs://backups/p", "LOCKED")):
        backend: Any = open_store(url, lock=ObjectLock(mode, 9))
        assert backend.lock == ObjectLock(mode, 9), url
    plain: Any = open_store("az://backups/p")
    assert plain.lock is None


@pytest.mark.parametrize(
    ("mode", "until", "text"),
    [
        ("GOVERNANCE", NOW, "locked (governance) until 2026-01-10T02:00:00Z"),
        ("Unlocked", NOW, "locked (unlocked policy) until 2026-01-10T02:00:00Z"),
        ("Locked", NOW, "locked (locked policy) until 2026-01-10T02:00:00Z"),
        ("", NOW, "locked (object lock) until 2026-01-10T02:00:00Z"),
        ("legal hold", HELD, "held (legal hold) until released"),
        ("temporary hold", HELD, "held (temporary hold) until released"),
    ],
)
def test_how_a_lock_reads(mode: str, until: datetime, text: str) -> None:
    assert describe_lock(mode, until) == text


# --- the CRD's lock fields -------------------------------------------------------------


def _spec(storage: str, **encryption: Any) -> Any:
    return parse_backup({"redisClusterName": "rc", "storage": STORAGE[storage],
                         "retention": {"keepDaily": 7}, "encryption": encryption})  # fmt: skip


def _prune_args(spec: Any) -> list[str]:
    job = prune_job(spec, name="p", namespace="redis", backup_name="nightly", owner=None,
                    image="backupctl:0")  # fmt: skip
    (c,) = job["spec"]["template"]["spec"]["containers"]
    return list(c["args"])


@pytest.mark.parametrize(
    ("storage", "field", "mode", "days", "flag_mode"),
    [
        ("s3", "s3ObjectLock", "Governance", 35, "governance"),
        ("azureBlob", "azureImmutability", "Unlocked", 10, "unlocked"),
        ("azureBlob", "azureImmutability", "Locked", 400, "locked"),
        ("gcs", "gcsRetention", "Locked", 3, "locked"),
    ],
)
def test_a_lock_field_reaches_the_backup_job_and_the_prune_job_extends_it(
    storage: str, field: str, mode: str, days: int, flag_mode: str
) -> None:
    spec = _spec(storage, **{field: {"mode": mode, "days": days}})
    args = list(backup_keys(spec.encryption).args)
    assert args[args.index("--lock-mode") + 1] == flag_mode
    assert args[args.index("--lock-days") + 1] == str(days)
    lock_for_store(ObjectLock(flag_mode.upper(), days), {"s3": "s3", "azureBlob": "az",
                                                         "gcs": "gs"}[storage])  # fmt: skip
    prune_args = _prune_args(spec)
    assert prune_args[prune_args.index("--extend-lock-days") + 1] == str(days)
    assert prune_args.count("--extend-lock-days") == 1


def test_no_lock_no_extend_flag() -> None:
    signed = {"verifyKeyFrom": {"configMap": {"name": "k", "key": "pub"}}}
    for spec in (_spec("s3", **signed), parse_backup({"redisClusterName": "rc",
                 "storage": STORAGE["gcs"], "retention": {"keepLast": 2}})):  # fmt: skip
        assert "--extend-lock-days" not in _prune_args(spec)


@pytest.mark.parametrize(
    ("storage", "encryption", "message"),
    [
        ("s3", {"azureImmutability": {"mode": "Locked", "days": 3}},
         "spec.encryption.azureImmutability: the lock must match the store: s3ObjectLock "
         "with storage.s3, azureImmutability with storage.azureBlob, gcsRetention with "
         "storage.gcs"),
        ("gcs", {"s3ObjectLock": {"mode": "Governance", "days": 3}},
         "spec.encryption.s3ObjectLock: the lock must match the store"),
        ("azureBlob", {"gcsRetention": {"mode": "Locked", "days": 3}},
         "spec.encryption.gcsRetention: the lock must match the store"),
        ("azureBlob", {"azureImmutability": {"mode": "Governance", "days": 3}},
         "must be one of Unlocked, Locked"),
        ("gcs", {"gcsRetention": {"mode": "Locked"}}, "gcsRetention.days: is required"),
        ("gcs", {"gcsRetention": {"mode": "Locked", "days": 1},
                 "s3ObjectLock": {"mode": "Governance", "days": 1}},
         "set one of s3ObjectLock, gcsRetention, not both"),
    ],
)  # fmt: skip
def test_a_lock_field_that_does_not_fit_is_one_clear_error(
    storage: str, encryption: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError) as err:
        _spec(storage, **encryption)
    assert message in str(err.value)


# --- prune and delete (a memory store with locks) ----------------------------------------


class LockingMemory(MemoryBackend):
    """A memory store with per-key locks, enforced as the clouds do."""

    def __init__(self) -> None:
        super().__init__(f"locks-{uuid.uuid4().hex[:8]}")
        self.locks: dict[str, tuple[str, datetime]] = {}
        self.refuse: set[str] = set()  # deletes refused without a lock prune could see
        self.now = NOW

    def retention(self, key: str) -> tuple[str, datetime] | None:
        return self.locks.get(key)

    def delete(self, key: str) -> None:
        lock = self.locks.get(key)
        if (lock is not None and lock[1] > self.now) or key in self.refuse:
            raise AccessDenied(f"access to {key} denied (object is locked)")
        super().delete(key)


def _store_with(n: int) -> tuple[LockingMemory, list[str]]:
    store = LockingMemory()
    ids = [add_backup(store, TARGET, NOW - timedelta(days=n - i)) for i in range(n)]
    return store, ids


def test_prune_keeps_a_locked_backup_with_the_reason_and_removes_the_others() -> None:
    store, ids = _store_with(4)
    store.locks[catalog.manifest_key(TARGET, ids[1])] = ("Locked", NOW + timedelta(hours=5))
    result = prune(store, Policy(last=1), now=NOW)
    assert sorted(r.id for r in result.remove) == [ids[0], ids[2]]
    [row] = [r for r in result.keep if r.id == ids[1]]
    assert row.reasons[-1] == (
        "locked (locked policy) until 2026-01-10T07:00:00Z: not deleted; "
        "a prune after that removes it"
    )
    assert {e.id for e in catalog.scan(store, TARGET)} == {ids[1], ids[3]}


def test_a_delete_the_store_refuses_does_not_stop_the_rest_and_is_reported() -> None:
    store, ids = _store_with(4)
    store.refuse.add(catalog.manifest_key(TARGET, ids[0]))  # e.g. a bucket-wide policy
    with pytest.raises(StorageError, match=r"1 backup\(s\) could not be deleted, the rest of "
                       rf"the prune is done: while deleting backup {ids[0]}"):  # fmt: skip
        prune(store, Policy(last=1), now=NOW)
    assert {e.id for e in catalog.scan(store, TARGET) if e.complete} == {ids[0], ids[3]}


def test_delete_refuses_a_locked_backup_before_deleting_anything() -> None:
    store, ids = _store_with(3)
    store.locks[catalog.manifest_key(TARGET, ids[0])] = ("GOVERNANCE", NOW + timedelta(days=1))
    with pytest.raises(DeleteError) as err:
        delete_backups(store, [ids[1], ids[0]], now=NOW)
    assert str(err.value) == (
        f"refusing to delete: backup {ids[0]} of {TARGET} is locked (governance) until "
        "2026-01-11T02:00:00Z: not deleted; a delete after that removes it (nothing was "
        "deleted; name the other backups alone)"
    )
    assert {e.id for e in catalog.scan(store, TARGET) if e.complete} == set(ids)
    done = delete_backups(store, [ids[1]], now=NOW)
    assert [d.id for d in done.deleted] == [ids[1]]
    store.now = NOW + timedelta(days=2)  # the lock has passed
    later = delete_backups(store, [ids[0]], now=store.now)
    assert [d.id for d in later.deleted] == [ids[0]]
