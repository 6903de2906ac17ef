"""The controllers' login (backupctl/controller/login.py) and how the client uses it.

What a user would notice: the operator reaches the API server a kubeconfig or the pod's
service account names (TLS verified, client certificates from inline data), a rotated
token is picked up, and the process does not carry the ``kubernetes`` package.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp.web
import kopf
import pytest
import yaml

from backupctl.controller import login
from backupctl.controller.kube import LOGIN_REFRESH, ApiError, Kube

from support.azure_identity import self_signed_cert

HOST = "127.0.0.1"


@pytest.mark.parametrize(
    ("environ", "server"),
    [
        ({}, "https://kubernetes.default.svc"),
        ({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, "https://10.96.0.1:443"),
        (
            {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "6443"},
            "https://10.96.0.1:6443",
        ),
        (
            {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"},
            "https://[fd00::1]:443",
        ),
    ],
)
def test_in_cluster_server(environ: dict[str, str], server: str) -> None:
    assert login.in_cluster_server(environ) == server


def test_service_account_login_reads_the_mounted_files(tmp_path: Path) -> None:
    assert login.login_with_service_account(tmp_path, {}) is None  # not in a pod
    (tmp_path / "token").write_text("token-1\n")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "namespace").write_text("redis\n")
    info = login.login_with_service_account(tmp_path, {"KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    assert info is not None
    assert (info.server, info.token, info.default_namespace) == (
        "https://10.0.0.1:443",
        "token-1",
        "redis",
    )
    assert info.ca_path == str(tmp_path / "ca.crt")
    # The kubelet rotates the projected token: a second login reads the new one.
    (tmp_path / "token").write_text("token-2\n")
    again = login.login_with_service_account(tmp_path, {})
    assert again is not None and again.token == "token-2"


def test_no_login_says_how_to_give_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(login, "SERVICE_ACCOUNT_DIR", tmp_path / "no-such-dir")
    with pytest.raises(login.LoginError, match=r"set \$KUBECONFIG"):
        login.connection_info()


class ApiServer:
    """An HTTP(S) server on 127.0.0.1 that answers GET on one object for the tokens it
    accepts and 401 otherwise, recording each request's Authorization header."""

    def __init__(self, tokens: set[str], tls: ssl.SSLContext | None = None) -> None:
        self.tokens, self.tls, self.seen = tokens, tls, []  # type: ignore[var-annotated]
        self.runner: aiohttp.web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        header = request.headers.get("Authorization", "")
        self.seen.append(header)
        if self.tokens and header.removeprefix("Bearer ") not in self.tokens:
            body = {"kind": "Status", "reason": "Unauthorized", "message": "Unauthorized"}
            return aiohttp.web.json_response(body, status=401)
        return aiohttp.web.json_response({"kind": "ConfigMap", "metadata": {"name": "x"}})

    async def __aenter__(self) -> ApiServer:
        app = aiohttp.web.Application()
        app.router.add_get("/api/v1/namespaces/ns/configmaps/x", self.handle)
        self.runner = aiohttp.web.AppRunner(app)
        await self.runner.setup()
        site = aiohttp.web.TCPSite(self.runner, HOST, 0, ssl_context=self.tls)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"{'https' if self.tls else 'http'}://{HOST}:{port}"
        return self

    async def __aexit__(self, *_: Any) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


def write_kubeconfig(path: Path, cluster: dict[str, Any], user: dict[str, Any]) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


async def get_object(kube: Kube) -> dict[str, Any] | None:
    return await kube.get("", "v1", "configmaps", "ns", "x")


async def _kubeconfig_with_inline_ca_and_client_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed_cert(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(cert))
    tls.load_cert_chain(cert, key)
    tls.verify_mode = ssl.CERT_REQUIRED  # the API server asks for a client certificate
    async with ApiServer(set(), tls) as server:
        config = write_kubeconfig(
            tmp_path / "kubeconfig",
            {"server": server.url, "certificate-authority-data": b64(cert)},
            {"client-certificate-data": b64(cert), "client-key-data": b64(key)},
        )
        monkeypatch.setenv("KUBECONFIG", str(config))
        kube = Kube.connect()
        try:
            assert (await get_object(kube)) == {"kind": "ConfigMap", "metadata": {"name": "x"}}
        finally:
            await kube.aclose()

        # Without the CA the server's certificate is refused: verification is on.
        write_kubeconfig(
            config,
            {"server": server.url},
            {"client-certificate-data": b64(cert), "client-key-data": b64(key)},
        )
        kube = Kube.connect()
        try:
            with pytest.raises(ApiError, match="certificate verify failed") as refused:
                await get_object(kube)
            assert refused.value.status == 503
        finally:
            await kube.aclose()


def test_kubeconfig_with_inline_ca_and_client_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(_kubeconfig_with_inline_ca_and_client_certificate(tmp_path, monkeypatch))


async def _a_rotated_token_is_used_after_a_401(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with ApiServer({"token-1"}) as server:
        config = write_kubeconfig(
            tmp_path / "kubeconfig", {"server": server.url}, {"token": "token-1"}
        )
        monkeypatch.setenv("KUBECONFIG", str(config))
        kube = Kube.connect()
        try:
            assert await get_object(kube) is not None
            # The token is rotated: the server takes only the new one, and the file has it.
            server.tokens = {"token-2"}
            write_kubeconfig(config, {"server": server.url}, {"token": "token-2"})
            with pytest.raises(ApiError) as refused:
                await get_object(kube)  # the header is reused until refreshed ...
            assert refused.value.status == 401
            assert await get_object(kube) is not None  # ... and a 401 refreshes it
            assert server.seen == ["Bearer token-1", "Bearer token-1", "Bearer token-2"]
        finally:
            await kube.aclose()


def test_a_rotated_token_is_used_after_a_401(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(_a_rotated_token_is_used_after_a_401(tmp_path, monkeypatch))


async def _the_login_is_read_again_after_its_refresh_time() -> None:
    async with ApiServer(set()) as server:
        tokens = iter(["a", "b", "c"])

        def log_in() -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=server.url, token=next(tokens))

        now = [1000.0]
        kube = Kube(log_in, clock=lambda: now[0])
        try:
            await get_object(kube)
            now[0] += LOGIN_REFRESH - 1
            await get_object(kube)
            now[0] += 2
            await get_object(kube)
            assert server.seen == ["Bearer a", "Bearer a", "Bearer b"]
        finally:
            await kube.aclose()


def test_the_login_is_read_again_after_its_refresh_time() -> None:
    asyncio.run(_the_login_is_read_again_after_its_refresh_time())


def test_the_operator_process_does_not_load_the_kubernetes_package() -> None:
    """``backupctl operator`` keeps it out (kopf would import its client: ~30 MiB per
    controller process) and the controllers still import and log in without it."""
    script = (
        "import sys, json\n"
        "from backupctl.cli.operator import keep_out_kubernetes_client\n"
        "keep_out_kubernetes_client()\n"
        "import kopf, backupctl.controller.app\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes'"
        " and sys.modules[m] is not None)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(done.stdout) == []
    # Without the guard, kopf alone would have loaded it (the test would be empty).
    done = subprocess.run(
        [sys.executable, "-c", "import sys, kopf; print('kubernetes.client' in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "True"
