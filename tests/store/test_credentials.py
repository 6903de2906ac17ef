"""Store credentials as docs/stores.md documents them: an Azure SAS token
(as ``az ... generate-sas`` prints it, with or without ``?``) with an
endpoint, read-only SAS for read-only commands; which GCS endpoints are
reached anonymously."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

from backupctl.store.backends import AccessDenied, open_store
from backupctl.store.backends.gcs import anonymous_endpoint

from support import azure_identity, object_stores
from support.cli_runner import assert_one_clear_error, cli
from support.fake_backups import add_backup
from support.object_stores import AZURITE_ACCOUNT, AZURITE_KEY, AzuriteEmulator

azurite_server = object_stores.azurite_server


@pytest.mark.parametrize(
    ("endpoint", "emulator", "key_file", "anonymous"),
    [
        ("http://127.0.0.1:9023", True, False, True),
        ("http://127.0.0.1:9023", False, False, True),
        ("http://127.0.0.1:9023", False, True, False),
        ("https://storage-psc.p.googleapis.com", False, False, False),
        ("https://storage-psc.p.googleapis.com", True, False, True),
    ],
)
def test_gcs_anonymous_only_for_an_emulator(
    endpoint: str, emulator: bool, key_file: bool, anonymous: bool
) -> None:
    assert anonymous_endpoint(endpoint, emulator=emulator, key_file=key_file) is anonymous


def _sas(container: str, permission: str) -> str:
    return generate_container_sas(
        AZURITE_ACCOUNT,
        container,
        account_key=AZURITE_KEY,
        permission=ContainerSasPermissions.from_string(permission),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )


def test_azure_sas_token_with_an_endpoint_and_read_only_sas(
    azurite_server: AzuriteEmulator, tmp_path: Path
) -> None:
    container = azurite_server.new_bucket()
    try:
        env = {
            "AZURE_STORAGE_CONNECTION_STRING": "",
            "AZURE_STORAGE_ACCOUNT": "",
            "AZURE_STORAGE_ENDPOINT": azurite_server.endpoint,
            "AZURE_STORAGE_SAS_TOKEN": "?" + _sas(container, "racwdl"),
        }
        url = f"az://{container}/p"
        # a fake backup, copied into the container with the SAS
        local = tmp_path / "src"
        local.mkdir()
        bid = add_backup(open_store(str(local)), "ns/a", datetime(2025, 1, 1, tzinfo=UTC))
        cli("copy", local, url, env=env)
        listed = json.loads(cli("list", url, "--json", env=env).stdout)["backups"]
        assert [e["id"] for e in listed] == [bid]

        read_only = {**env, "AZURE_STORAGE_SAS_TOKEN": _sas(container, "rl")}
        assert json.loads(cli("show", url, bid, "--json", env=read_only).stdout)["ok"]
        denied = cli("delete", url, bid, "--force", env=read_only, check=False)
        assert_one_clear_error(denied, "denied")
        listed = json.loads(cli("list", url, "--json", env=env).stdout)["backups"]
        assert [e["id"] for e in listed] == [bid]
    finally:
        azurite_server.remove_bucket(container)


def test_azure_managed_identity_through_default_azure_credential(tmp_path: Path) -> None:
    """No key, no SAS: only the account and a managed identity (App Service's
    IDENTITY_ENDPOINT, on 127.0.0.1). DefaultAzureCredential gets a storage
    token there and Azurite (HTTPS, OAuth on) accepts the backups it writes
    and lists them back."""
    cert, key = azure_identity.self_signed_cert(tmp_path)
    server, endpoint = azure_identity.https_azurite(tmp_path, cert, key)
    identity = azure_identity.ManagedIdentityEndpoint()
    try:
        service = BlobServiceClient(
            endpoint,
            credential={"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY},
            connection_verify=str(cert),
        )
        container = object_stores.unique_bucket_name()
        service.create_container(container)
        base = {
            "AZURE_STORAGE_CONNECTION_STRING": "",
            "AZURE_STORAGE_KEY": "",
            "AZURE_STORAGE_SAS_TOKEN": "",
            "AZURE_STORAGE_ACCOUNT": AZURITE_ACCOUNT,
            "AZURE_STORAGE_ENDPOINT": endpoint,
            "REQUESTS_CA_BUNDLE": str(cert),
        }
        local = tmp_path / "src"
        local.mkdir()
        bid = add_backup(open_store(str(local)), "ns/a", datetime(2025, 1, 1, tzinfo=UTC))
        url = f"az://{container}/p"
        cli("copy", local, url, env={**base, **identity.env})
        assert "https://storage.azure.com" in identity.resources[0]
        blobs = [b.name for b in service.get_container_client(container).list_blobs()]
        assert any(bid in name for name in blobs)
        listed = json.loads(cli("list", url, "--json", env={**base, **identity.env}).stdout)
        assert [e["id"] for e in listed["backups"]] == [bid]
    finally:
        identity.stop()
        server.stop()


def test_azure_identity_without_a_token_is_one_line_naming_the_ways_to_log_in() -> None:
    from azure.identity import CredentialUnavailableError

    from backupctl.store.backends.azure import AzureBackend

    backend = AzureBackend("backups", endpoint="https://acct.blob.core.windows.net")
    backend.credential_source = "DefaultAzureCredential"
    many_lines = "DefaultAzureCredential failed to retrieve a token.\nAttempted credentials:\n..."
    err = backend._error(CredentialUnavailableError(message=many_lines))
    assert isinstance(err, AccessDenied)
    assert "\n" not in str(err)
    for hint in ("no Azure credentials", "AZURE_STORAGE_SAS_TOKEN", "managed identity"):
        assert hint in str(err)
