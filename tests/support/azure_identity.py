"""Stand-ins for an Azure identity: Azurite over HTTPS with OAuth on (bearer
tokens are refused over plain HTTP, by the SDK and by Azurite), and a
managed-identity token endpoint (the App Service form, ``IDENTITY_ENDPOINT``
+ ``IDENTITY_HEADER``) that ``DefaultAzureCredential`` asks for a token.

Azurite's ``--oauth basic`` checks a token's issuer, audience and lifetime,
not its signature, so the endpoint hands out an unsigned token with the
claims a real Entra ID token for storage has.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import ssl
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from support.object_stores import AZURITE_ACCOUNT, AZURITE_BIN, HOST, ServerProcess, free_port

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ip_address(HOST))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class _HTTPSAzurite(ServerProcess):
    cafile: Path

    def _wait_ready(self, url: str, timeout: float, interval: float = 0.1) -> None:
        ctx = ssl.create_default_context(cafile=str(self.cafile))
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / interval) + 1):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log()}")
            try:
                with urllib.request.urlopen(url, timeout=1, context=ctx):
                    return
            except urllib.error.HTTPError:
                return  # an HTTP error status is an answer: it is up
            except OSError:
                pass
            if time.monotonic() > deadline:
                break
            time.sleep(interval)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s: {self.log()}")


def https_azurite(workdir: Path, cert: Path, key: Path) -> tuple[ServerProcess, str]:
    """Azurite's blob service over HTTPS with ``--oauth basic``; its endpoint."""

    class Server(_HTTPSAzurite):
        cafile = cert

    def argv(p: int) -> list[str]:
        return [
            str(AZURITE_BIN), "--blobHost", HOST, "--blobPort", str(p), "--inMemoryPersistence",
            "--skipApiVersionCheck", "--disableTelemetry", "--silent", "--oauth", "basic",
            "--cert", str(cert), "--key", str(key),
        ]  # fmt: skip

    def ready(p: int) -> str:
        return f"https://{HOST}:{p}/{AZURITE_ACCOUNT}?comp=list"

    last: Exception | None = None
    for _ in range(3):  # another process may take the free port first
        port = free_port()
        try:
            server = Server("azurite-https", argv(port), ready(port), workdir)
        except RuntimeError as err:
            last = err
            continue
        return server, f"https://{HOST}:{port}/{AZURITE_ACCOUNT}"
    raise RuntimeError(f"cannot start Azurite over HTTPS: {last}")


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def storage_token(lifetime: int = 3600) -> str:
    """An (unsigned) Entra ID access token for Azure Storage."""
    now = int(time.time())
    claims = {
        "aud": "https://storage.azure.com",
        "iss": f"https://sts.windows.net/{TENANT}/",
        "iat": now - 60,
        "nbf": now - 60,
        "exp": now + lifetime,
        "tid": TENANT,
        "oid": "00000000-0000-0000-0000-0000000000aa",
    }
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


class ManagedIdentityEndpoint:
    """The App Service managed-identity endpoint on 127.0.0.1: answers a GET
    carrying ``X-IDENTITY-HEADER: <secret>`` with a storage token, and
    records the resources asked for."""

    secret = "identity-header-secret"

    def __init__(self) -> None:
        self.resources: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.headers.get("X-IDENTITY-HEADER") != outer.secret:
                    self.send_error(401)
                    return
                resource = parse_qs(urlsplit(self.path).query).get("resource", [""])[0]
                outer.resources.append(resource)
                body = json.dumps(
                    {
                        "access_token": storage_token(),
                        "expires_on": str(int(time.time()) + 3600),
                        "resource": resource,
                        "token_type": "Bearer",
                        "client_id": "00000000-0000-0000-0000-0000000000bb",
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return None

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://{HOST}:{self._server.server_address[1]}/msi/token"

    @property
    def env(self) -> dict[str, str]:
        return {"IDENTITY_ENDPOINT": self.url, "IDENTITY_HEADER": self.secret}

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
