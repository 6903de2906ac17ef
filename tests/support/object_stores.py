"""Real object-store servers on 127.0.0.1 for tests (a pytest plugin).

Backends are tested against the real protocols, not mocked SDKs: moto's S3
server, Azurite (Azure Blob) and gcp-storage-emulator (GCS), each started
once per session on a free loopback port, in its own process group, and
stopped by that PID at the end. Every test gets a fresh, empty bucket or
container, removed afterwards (the servers keep data in memory).

Fixtures:

* ``s3_server``, ``azurite_server``, ``gcs_server`` (session): an emulator
  object with ``endpoint``, ``env`` (the variables a backupctl process needs
  to reach it) and ``new_bucket()`` / ``remove_bucket()``. ``azurite_server``
  skips the test when ``node_modules/.bin/azurite-blob`` is missing.
* ``file_store``, ``s3_store``, ``azure_store``, ``gcs_store`` (function): a
  :class:`StoreURL` ``(url, env)`` for a fresh empty store of that kind.
* ``store_url`` (function): the same, parametrized over file/s3/azure/gcs.

:func:`store_env` sets such an ``env`` in ``os.environ`` for the code under
test (in-process); for a subprocess, pass ``{**os.environ, **env}``.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[2]
AZURITE_BIN = REPO / "node_modules" / ".bin" / "azurite-blob"
HOST = "127.0.0.1"

#: Azurite's fixed development account (public, documented by Microsoft).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

_names = itertools.count(1)


class StoreURL(NamedTuple):
    """A store URL and the environment variables that make it reachable."""

    url: str
    env: dict[str, str]


def unique_bucket_name() -> str:
    """Valid as an S3 bucket, Azure container and GCS bucket name."""
    return f"t{next(_names):04d}-{uuid.uuid4().hex[:10]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str:
    """A console script of this venv (next to the running python), else PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return found


@contextlib.contextmanager
def store_env(env: Mapping[str, str]) -> Iterator[None]:
    """Set ``env`` in ``os.environ`` for the block, then restore what was there."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --- processes -------------------------------------------------------------------


class ServerProcess:
    """A server started in its own process group; stopped by its PID."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        ready_url: str,
        workdir: Path,
        env: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # own process group: stop() reaches its children too
        )
        atexit.register(self.stop)  # in case the session dies before teardown
        try:
            self._wait_ready(ready_url, timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, url: str, timeout: float, interval: float = 0.1) -> None:
        """Poll until the server answers any HTTP response (bounded)."""
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / interval) + 1):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log()}")
            try:
                with urllib.request.urlopen(url, timeout=1):
                    return
            except urllib.error.HTTPError:
                return  # an HTTP error status is an answer: it is up
            except OSError:
                pass
            if time.monotonic() > deadline:
                break
            time.sleep(interval)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s: {self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._log.close()
        atexit.unregister(self.stop)


def _start(
    name: str,
    make_argv: Callable[[int], list[str]],
    ready_url: Callable[[int], str],
    workdir: Path,
    **kw: Any,
) -> tuple[ServerProcess, int]:
    """Start on a free port; retry with another port if that one got taken."""
    last: Exception | None = None
    for _ in range(3):
        port = free_port()
        try:
            return ServerProcess(name, make_argv(port), ready_url(port), workdir, **kw), port
        except RuntimeError as err:
            last = err
    raise RuntimeError(f"cannot start {name}: {last}")


# --- S3 (moto) ---------------------------------------------------------------------


class S3Emulator:
    """moto's S3 server. ``env`` isolates the AWS SDK from any local config."""

    def __init__(self, workdir: Path, extra_env: Mapping[str, str] | None = None) -> None:
        self.server, port = _start(
            "moto",
            lambda p: [_bin("moto_server"), "-H", HOST, "-p", str(p)],
            lambda p: f"http://{HOST}:{p}/moto-api/",
            workdir,
            env=extra_env,
        )
        self.endpoint = f"http://{HOST}:{port}"
        self.env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",  # never probe 169.254.169.254
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    @functools.cached_property
    def _client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def client(self) -> Any:
        """A boto3 client for setup and cleanup (not the code under test)."""
        return self._client

    def new_bucket(self) -> str:
        name = unique_bucket_name()
        self.client().create_bucket(Bucket=name)
        return name

    def remove_bucket(self, name: str) -> None:
        """Delete everything in the bucket, then the bucket (frees moto's memory)."""
        s3 = self.client()
        with contextlib.suppress(Exception):
            for up in s3.list_multipart_uploads(Bucket=name).get("Uploads", []):
                s3.abort_multipart_upload(Bucket=name, Key=up["Key"], UploadId=up["UploadId"])
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
                for obj in page.get("Contents", []):
                    s3.delete_object(Bucket=name, Key=obj["Key"])
            s3.delete_bucket(Bucket=name)

    def stop(self) -> None:
        self.server.stop()


# --- Azure Blob (Azurite) ------------------------------------------------------------


class AzuriteEmulator:
    """Azurite's blob service, in memory, with the well-known dev account."""

    def __init__(self, workdir: Path) -> None:
        self.server, port = _start(
            "azurite",
            lambda p: [
                str(AZURITE_BIN),
                "--blobHost",
                HOST,
                "--blobPort",
                str(p),
                "--inMemoryPersistence",
                "--skipApiVersionCheck",
                "--disableTelemetry",
                "--silent",
            ],
            lambda p: f"http://{HOST}:{p}/{AZURITE_ACCOUNT}?comp=list",
            workdir,
        )
        self.endpoint = f"http://{HOST}:{port}/{AZURITE_ACCOUNT}"
        self.connection_string = self.connection_string_with(AZURITE_KEY)
        self.env = {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string}

    def connection_string_with(self, key: str) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={key};"
            f"BlobEndpoint={self.endpoint};"
        )

    @functools.cached_property
    def _service(self) -> Any:
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)

    def service(self) -> Any:
        """A BlobServiceClient for setup and cleanup (not the code under test)."""
        return self._service

    def new_bucket(self) -> str:
        name = unique_bucket_name()
        self.service().create_container(name)
        return name

    def remove_bucket(self, name: str) -> None:
        with contextlib.suppress(Exception):
            self.service().delete_container(name)

    def stop(self) -> None:
        self.server.stop()


# --- GCS (gcp-storage-emulator) --------------------------------------------------------


class GCSEmulator:
    """gcp-storage-emulator, in memory; clients use anonymous credentials."""

    def __init__(self, workdir: Path) -> None:
        self.server, port = _start(
            "gcs",
            lambda p: [
                _bin("gcp-storage-emulator"),
                "start",
                "--host",
                HOST,
                "--port",
                str(p),
                "--in-memory",
                "-q",
            ],
            lambda p: f"http://{HOST}:{p}/storage/v1/b?project=test",
            workdir,
        )
        self.endpoint = f"http://{HOST}:{port}"
        self.env = {"STORAGE_EMULATOR_HOST": self.endpoint, "GOOGLE_CLOUD_PROJECT": "test"}

    def client(self) -> Any:
        """A storage.Client for setup and cleanup (not the code under test)."""
        return self._client

    @functools.cached_property
    def _client(self) -> Any:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="test",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.endpoint},
        )

    def new_bucket(self) -> str:
        name = unique_bucket_name()
        self.client().create_bucket(name)
        return name

    def remove_bucket(self, name: str) -> None:
        with contextlib.suppress(Exception):
            self.client().bucket(name).delete(force=True)

    def stop(self) -> None:
        self.server.stop()


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Emulator]:
    emulator = S3Emulator(tmp_path_factory.mktemp("moto"))
    yield emulator
    emulator.stop()


@pytest.fixture(scope="session")
def azurite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteEmulator]:
    if not os.access(AZURITE_BIN, os.X_OK):
        pytest.skip(f"Azurite not installed ({AZURITE_BIN} missing): run scripts/bootstrap.sh")
    emulator = AzuriteEmulator(tmp_path_factory.mktemp("azurite"))
    yield emulator
    emulator.stop()


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GCSEmulator]:
    emulator = GCSEmulator(tmp_path_factory.mktemp("gcs"))
    yield emulator
    emulator.stop()


@pytest.fixture
def file_store(tmp_path: Path) -> StoreURL:
    root = tmp_path / "store"
    root.mkdir()
    return StoreURL(root.as_uri(), {})


@pytest.fixture
def s3_store(s3_server: S3Emulator) -> Iterator[StoreURL]:
    bucket = s3_server.new_bucket()
    yield StoreURL(f"s3://{bucket}", dict(s3_server.env))
    s3_server.remove_bucket(bucket)


@pytest.fixture
def azure_store(azurite_server: AzuriteEmulator) -> Iterator[StoreURL]:
    container = azurite_server.new_bucket()
    yield StoreURL(f"az://{container}", dict(azurite_server.env))
    azurite_server.remove_bucket(container)


@pytest.fixture
def gcs_store(gcs_server: GCSEmulator) -> Iterator[StoreURL]:
    bucket = gcs_server.new_bucket()
    yield StoreURL(f"gs://{bucket}", dict(gcs_server.env))
    gcs_server.remove_bucket(bucket)


@pytest.fixture(params=["file", "s3", "azure", "gcs"])
def store_url(request: pytest.FixtureRequest) -> StoreURL:
    """A fresh empty store of each kind: ``url, env = store_url``."""
    store: StoreURL = request.getfixturevalue(f"{request.param}_store")
    return store
