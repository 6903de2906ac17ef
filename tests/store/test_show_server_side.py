"""Issue 18: ``backupctl show`` reads Azure's and GCS's server-side encryption back
per object: an Azure encryption scope (or the account's encryption, or a
customer-provided key), a GCS Cloud KMS key (or a customer-supplied key).

Azurite reports ``x-ms-server-encrypted: true`` but drops the scope, and the GCS
emulator drops ``kmsKeyName``: end to end on the emulators, show prints what
they do report (Azure: the account's encryption; GCS: none) and the scope /
key name the real services return is fed in as the SDK's own property objects
(``BlobProperties`` from response headers, a ``Blob`` from the JSON resource)."""

from __future__ import annotations

from typing import Any

import pytest
from azure.storage.blob import BlobClient, BlobProperties
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from store.test_show_protection import DR, OPS, TARGET, show, table, write_backup

from backupctl.store.backends import open_store
from backupctl.store.backends.azure import server_side_of_blob as azure_sse
from backupctl.store.backends.gcs import server_side_of_blob as gcs_sse

from support import object_stores
from support.object_stores import store_env

azurite_server = object_stores.azurite_server
gcs_server = object_stores.gcs_server
azure_store = object_stores.azure_store
gcs_store = object_stores.gcs_store

SCOPE = "backups-cmk"
KMS = "projects/p1/locations/europe-west1/keyRings/backups/cryptoKeys/redis"
KMS_V1 = KMS + "/cryptoKeyVersions/1"  # what GCS reports: the version that encrypted it
CSEK = {"encryptionAlgorithm": "AES256", "keySha256": "H8/1rcqJm1M/p1T6X0hZs3HVyTwE0="}


def _blob(resource: dict[str, Any]) -> storage.Blob:
    """A Blob as the SDK makes it from a JSON API object resource."""
    client = storage.Client(project="p1", credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    blob = client.bucket("b").blob("k")
    blob._set_properties({"name": "k", **resource})
    return blob


@pytest.mark.parametrize(
    ("headers", "algorithm", "key", "words"),
    [
        ({"x-ms-server-encrypted": True, "x-ms-encryption-scope": SCOPE},
         "azure:scope", SCOPE, f"Azure encryption scope ({SCOPE})"),
        ({"x-ms-server-encrypted": True, "x-ms-encryption-scope": "$account-encryption-key"},
         "azure:account", None, "Azure account encryption"),
        ({"x-ms-server-encrypted": True}, "azure:account", None, "Azure account encryption"),
        ({"x-ms-server-encrypted": True, "x-ms-encryption-key-sha256": "abc="},
         "azure:customer-key", None, "Azure customer-provided key"),
        ({"x-ms-server-encrypted": False}, None, None, None),
    ],
)  # fmt: skip
def test_azure_blob_properties_read_as_server_side_encryption(
    headers: dict[str, Any], algorithm: str | None, key: str | None, words: str | None
) -> None:
    sse = azure_sse(BlobProperties(**headers))
    if algorithm is None:
        assert sse is None
        return
    assert sse is not None
    assert (sse.algorithm, sse.kms_key_id, sse.describe()) == (algorithm, key, words)


@pytest.mark.parametrize(
    ("resource", "algorithm", "key", "words"),
    [
        ({"kmsKeyName": KMS_V1}, "gcs:kms", KMS_V1, f"Cloud KMS key ({KMS_V1})"),
        ({"customerEncryption": CSEK}, "gcs:customer-key", None, "GCS customer-supplied key"),
        ({}, None, None, None),
    ],
)
def test_gcs_object_metadata_reads_as_server_side_encryption(
    resource: dict[str, Any], algorithm: str | None, key: str | None, words: str | None
) -> None:
    sse = gcs_sse(_blob(resource))
    if algorithm is None:
        assert sse is None
        return
    assert sse is not None
    assert (sse.algorithm, sse.kms_key_id, sse.describe()) == (algorithm, key, words)


def test_show_on_azure_prints_the_scope_of_every_object(
    azure_store: object_stores.StoreURL, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, env = azure_store
    with store_env({**env, "BACKUPCTL_AZURE_ENCRYPTION_SCOPE": SCOPE}):
        bid = write_backup(open_store(url), encrypted=True)
    # Azurite: the account's encryption, as it reports every blob
    text, out = show(url, bid, "--target", TARGET, env=env)
    assert [o["serverSide"] for o in out["objects"]] == [
        {"algorithm": "azure:account", "kmsKeyId": None}
    ] * 3
    assert table(text)["redis-0.tar.zst.age"] == [
        f"age to {OPS}, {DR}",
        "Azure account encryption",
        "none",
    ]

    # Azure itself also returns the scope the blob was written with
    real = BlobClient.get_blob_properties

    def with_scope(self: BlobClient, **kw: Any) -> BlobProperties:
        props = real(self, **kw)
        props.encryption_scope = SCOPE
        return props

    monkeypatch.setattr(BlobClient, "get_blob_properties", with_scope)
    text, out = show(url, bid, "--target", TARGET, env=env)
    assert {o["serverSide"]["kmsKeyId"] for o in out["objects"]} == {SCOPE}
    assert {r[1] for r in table(text).values()} == {f"Azure encryption scope ({SCOPE})"}


def test_show_on_gcs_prints_the_kms_key_of_every_object(
    gcs_store: object_stores.StoreURL, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, env = gcs_store
    with store_env({**env, "BACKUPCTL_GCS_KMS_KEY": KMS}):
        bid = write_backup(open_store(url), encrypted=False)
    # the emulator drops kmsKeyName: nothing reported, show says none
    text, out = show(url, bid, "--target", TARGET, env=env)
    assert [o["serverSide"] for o in out["objects"]] == [None] * 3
    assert {r[1] for r in table(text).values()} == {"none"}

    # GCS itself returns kmsKeyName (with the key version) in the object resource
    real = storage.Blob.reload

    def with_key(self: storage.Blob, *a: Any, **kw: Any) -> None:
        real(self, *a, **kw)
        self._properties["kmsKeyName"] = KMS_V1

    monkeypatch.setattr(storage.Blob, "reload", with_key)
    text, out = show(url, bid, "--target", TARGET, env=env)
    assert [o["serverSide"] for o in out["objects"]] == [
        {"algorithm": "gcs:kms", "kmsKeyId": KMS_V1}
    ] * 3
    assert table(text)["redis-1.tar.zst"] == ["none", f"Cloud KMS key ({KMS_V1})", "none"]
