"""Store credentials as docs/stores.md documents them: an Azure SAS token
(as ``az ... generate-sas`` prints it, with or without ``?``) with an
endpoint, read-only SAS for read-only commands; which GCS endpoints are
reached anonymously."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from backupctl.store.backends import AccessDenied, open_store
from backupctl.store.backends.gcs import GCSBackend, anonymous_credentials

from support import azure_identity, object_stores
from support.cli_runner import assert_one_clear_error, cli
from support.fake_backups import add_backup
from support.object_stores import (
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    AzuriteEmulator,
    GCSEmulator,
    S3Emulator,
)

azurite_server = object_stores.azurite_server
gcs_server = object_stores.gcs_server
s3_server = object_stores.s3_server


@pytest.mark.parametrize(
    ("emulator", "asked", "anonymous"),
    [(True, False, True), (False, True, True), (False, False, False)],
)
def test_gcs_anonymous_only_for_an_emulator_or_when_asked(
    emulator: bool, asked: bool, anonymous: bool
) -> None:
    assert anonymous_credentials(emulator=emulator, asked=asked) is anonymous


@pytest.mark.parametrize(
    ("value", "anonymous"),
    [("", False), ("false", False), ("0", False), ("true", True), ("1", True)],
)
def test_gcs_anonymous_setting_is_read_from_the_environment(
    value: str, anonymous: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKUPCTL_GCS_ANONYMOUS", value)
    backend = open_store("gs://backups", endpoint="http://127.0.0.1:9023")
    assert isinstance(backend, GCSBackend)
    assert backend.anonymous is anonymous


def test_gcs_anonymous_setting_that_is_not_a_boolean_is_a_usage_error(tmp_path: Path) -> None:
    bad = cli("list", "gs://backups", env={"BACKUPCTL_GCS_ANONYMOUS": "maybe"}, check=False)
    assert bad.returncode == 2
    assert_one_clear_error(bad, "BACKUPCTL_GCS_ANONYMOUS", "true or false")


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
        assert_one_clear_error(denied, "denied", "AZURE_STORAGE_SAS_TOKEN", "permissions")
        signature = parse_qs(read_only["AZURE_STORAGE_SAS_TOKEN"])["sig"][0]
        assert signature not in denied.stderr + denied.stdout
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
        # one token for the command (its listing and upload clients share it)
        assert len(identity.resources) == 1
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


class _OAuthTokenEndpoint:
    """Google's OAuth token endpoint on 127.0.0.1, as a service-account key
    file's ``token_uri`` names it: answers the JWT-bearer grant with a token
    and counts the grants."""

    def __init__(self) -> None:
        self.grants = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
                if form.get("grant_type") == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
                    outer.grants += 1
                body = json.dumps(
                    {"access_token": "ya29.test-token", "expires_in": 3600, "token_type": "Bearer"}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _service_account_key(folder: Path, token_uri: str) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path = folder / "sa.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "test",
                "private_key_id": "1",
                "private_key": pem,
                "client_email": "backups@test.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": token_uri,
            }
        )
    )
    return path


def test_gcs_custom_endpoint_uses_the_credential_chain(
    gcs_server: GCSEmulator, tmp_path: Path
) -> None:
    """--endpoint with GOOGLE_APPLICATION_CREDENTIALS: the key file's token is
    fetched and used (it used to be anonymous for a plain http endpoint);
    BACKUPCTL_GCS_ANONYMOUS=true goes without; with neither credentials nor
    the setting, the error says how to reach an emulator."""
    tokens = _OAuthTokenEndpoint()
    bucket = gcs_server.new_bucket()
    try:
        env = {
            "STORAGE_EMULATOR_HOST": "",
            "GOOGLE_CLOUD_PROJECT": "test",
            "NO_GCE_CHECK": "true",  # no metadata-server probe outside 127.0.0.1
            "GOOGLE_APPLICATION_CREDENTIALS": str(_service_account_key(tmp_path, tokens.url)),
        }
        local = tmp_path / "src"
        local.mkdir()
        bid = add_backup(open_store(str(local)), "ns/a", datetime(2025, 1, 1, tzinfo=UTC))
        url = f"gs://{bucket}/p"
        cli("copy", local, url, "--to-endpoint", gcs_server.endpoint, env=env)
        assert tokens.grants >= 1
        names = [b.name for b in gcs_server.client().list_blobs(bucket)]
        assert any(bid in name for name in names)

        grants = tokens.grants
        anonymous = {**env, "GOOGLE_APPLICATION_CREDENTIALS": "", "BACKUPCTL_GCS_ANONYMOUS": "true"}
        listed = cli("list", url, "--endpoint", gcs_server.endpoint, "--json", env=anonymous)
        assert [e["id"] for e in json.loads(listed.stdout)["backups"]] == [bid]
        assert tokens.grants == grants

        none = {
            **env,
            "GOOGLE_APPLICATION_CREDENTIALS": "",
            "CLOUDSDK_CONFIG": str(tmp_path / "no-gcloud"),
            "HOME": str(tmp_path),
        }
        denied = cli("list", url, "--endpoint", gcs_server.endpoint, env=none, check=False)
        assert denied.returncode == 4
        line = assert_one_clear_error(
            denied, "no Google Cloud credentials", "STORAGE_EMULATOR_HOST"
        )
        # ... and the hint works when followed
        followed = {
            **none,
            "STORAGE_EMULATOR_HOST": line.split("STORAGE_EMULATOR_HOST=")[1].split()[0],
        }
        listed = cli("list", url, "--json", env=followed)
        assert [e["id"] for e in json.loads(listed.stdout)["backups"]] == [bid]
    finally:
        tokens.stop()
        gcs_server.remove_bucket(bucket)


def test_aws_profile_that_does_not_exist_is_named_not_an_aws_endpoint(
    s3_server: S3Emulator, tmp_path: Path
) -> None:
    """AWS_PROFILE=nosuch with a local endpoint: one line naming the profile
    and the files read (it named https://s3.us-east-1.amazonaws.com), exit 4
    (store credentials); both fixes it offers work."""
    config = tmp_path / "aws-config"
    config.write_text(
        "[profile backups]\naws_access_key_id = testing\naws_secret_access_key = testing\n"
    )
    bucket = s3_server.new_bucket()
    try:
        env = {**s3_server.env, "AWS_CONFIG_FILE": str(config), "AWS_PROFILE": "nosuch"}
        url = f"s3://{bucket}"
        failed = cli("list", url, env=env, check=False)
        assert failed.returncode == 4
        line = assert_one_clear_error(failed, "'nosuch'", "AWS_PROFILE", str(config))
        assert "amazonaws.com" not in line
        as_json = json.loads(cli("list", url, "--json", env=env, check=False).stdout)
        assert as_json["error"]["code"] == "store"

        for fixed in ({"AWS_PROFILE": "backups"}, {"AWS_PROFILE": ""}):
            listed = cli("list", url, "--json", env={**env, **fixed})
            assert json.loads(listed.stdout)["backups"] == []
    finally:
        s3_server.remove_bucket(bucket)
