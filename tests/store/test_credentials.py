"""Store credentials as docs/stores.md documents them: an Azure SAS token
(as ``az ... generate-sas`` prints it, with or without ``?``) with an
endpoint, read-only SAS for read-only commands; which GCS endpoints are
reached anonymously."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.storage.blob import ContainerSasPermissions, generate_container_sas

from backupctl.store.backends import open_store
from backupctl.store.backends.gcs import anonymous_endpoint

from support import object_stores
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
