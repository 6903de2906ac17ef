"""Server-side encryption options of Azure (an encryption scope) and GCS (a Cloud
KMS key), from the environment, on every write: single and multi-block / chunked.
Azurite and the GCS emulator accept both but record neither, so the tests
assert what every write call carries, and that the objects round-trip."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from azure.storage.blob import BlobClient
from google.cloud import storage

from backupctl.store.backends import open_store
from backupctl.store.backends.base import put_bytes, read_bytes

from support import object_stores
from support.object_stores import store_env

azurite_server = object_stores.azurite_server
gcs_server = object_stores.gcs_server
azure_store = object_stores.azure_store
gcs_store = object_stores.gcs_store

MIB = 1024 * 1024
SCOPE = "backups-scope"
KMS = "projects/p/locations/europe-west1/keyRings/backups/cryptoKeys/redis"


@pytest.fixture
def azure_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, Any]]]:
    calls: list[tuple[str, Any]] = []
    for name in ("stage_block", "upload_blob", "commit_block_list"):
        original = getattr(BlobClient, name)

        def record(self: Any, *a: Any, _n: str = name, _o: Any = original, **kw: Any) -> Any:
            calls.append((_n, kw.get("encryption_scope")))
            return _o(self, *a, **kw)

        monkeypatch.setattr(BlobClient, name, record)
    yield calls


def test_azure_encryption_scope_on_every_write(
    azure_store: object_stores.StoreURL, azure_calls: list[tuple[str, Any]]
) -> None:
    url, env = azure_store
    big = os.urandom(9 * MIB)  # several blocks
    with store_env({**env, "BACKUPCTL_AZURE_ENCRYPTION_SCOPE": SCOPE}):
        backend = open_store(url)
        put_bytes(backend, "small", b"manifest")
        put_bytes(backend, "big", big)
        assert read_bytes(backend, "big") == big
    names = {n for n, _ in azure_calls}
    assert names == {"stage_block", "upload_blob", "commit_block_list"}
    assert all(scope == SCOPE for _, scope in azure_calls), azure_calls


def test_azure_without_a_scope_sends_none(
    azure_store: object_stores.StoreURL, azure_calls: list[tuple[str, Any]]
) -> None:
    url, env = azure_store
    with store_env(env):
        put_bytes(open_store(url), "small", b"x")
    assert azure_calls == [("upload_blob", None)]


def test_gcs_kms_key_on_every_write(
    gcs_store: object_stores.StoreURL, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, env = gcs_store
    made: list[tuple[str, str | None]] = []
    original = storage.Bucket.blob

    def blob(self: Any, name: str, *a: Any, **kw: Any) -> Any:
        made.append((name, kw.get("kms_key_name")))
        return original(self, name, *a, **kw)

    monkeypatch.setattr(storage.Bucket, "blob", blob)
    big = os.urandom(20 * MIB)  # more than one resumable chunk
    with store_env({**env, "BACKUPCTL_GCS_KMS_KEY": KMS}):
        backend = open_store(url)
        made.clear()
        put_bytes(backend, "small", b"manifest")
        put_bytes(backend, "big", big)
        written = list(made)
        assert read_bytes(backend, "big") == big
    assert {n.rsplit("/", 1)[-1] for n, _ in written} == {"small", "big"}
    assert all(k == KMS for _, k in written), written
