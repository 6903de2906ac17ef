"""Stand-ins for what the emulators do not do: Azure immutability, GCS object retention.

Azurite 3.35 accepts the immutability headers of ``Put Blob`` / ``Put Block
List`` and ignores them (its blob properties never carry a policy), and answers
``Set Blob Immutability Policy`` with 501; gcp-storage-emulator drops an
object's ``retention`` and holds and deletes anything. A test of locks needs
a store that keeps and enforces them, so:

* :class:`AzureImmutabilityProxy` sits on 127.0.0.1 in front of a real Azurite
  and forwards every request unchanged (SharedKey signatures stay valid); it
  records the immutability policy a successful ``Put Blob`` / ``Put Block
  List`` carried, answers ``Set Blob Immutability Policy`` and ``Set Legal
  Hold`` itself, adds the policy and hold to the headers of blob properties,
  and refuses (409 ``BlobImmutableDueToPolicy``, as Azure does) a delete or an
  overwrite of a blob whose policy has not expired or that has a legal hold. A
  locked policy may only be extended (Azure's rule).
* :func:`gcs_retention_argv` runs gcp-storage-emulator with ``retention``,
  ``temporaryHold`` and ``eventBasedHold`` kept as writable fields and a delete
  of a retained or held object refused with 403, as GCS does
  (``tests/support/gcs_retention_server.py``).

Both read the real clock: a test that needs a lock to pass writes with a
backend clock shifted back, so retain-until lands a few seconds from now.
"""

from __future__ import annotations

import http.client
import sys
import threading
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"
_UNTIL = "x-ms-immutability-policy-until-date"
_MODE = "x-ms-immutability-policy-mode"
_HOLD = "x-ms-legal-hold"
#: Headers of the upstream answer not passed back (the proxy sets its own framing).
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


class AzureImmutabilityProxy:
    """An HTTP proxy that adds version-level immutability to Azurite (see the module doc)."""

    def __init__(self, upstream: str) -> None:
        up = urlsplit(upstream)  # http://127.0.0.1:port/devstoreaccount1
        self.upstream_host, self.upstream_port = up.hostname or HOST, up.port or 80
        self.policies: dict[str, tuple[str, str]] = {}  # path -> (until header, mode)
        self.holds: set[str] = set()
        #: every (method, path, headers) seen: what the SDK sent
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return None

            def do_GET(self) -> None:
                proxy.handle(self)

            do_HEAD = do_PUT = do_DELETE = do_POST = do_GET

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.endpoint = f"http://{HOST}:{self.server.server_address[1]}{up.path}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    # -- state -------------------------------------------------------------------
    def locked(self, path: str) -> bool:
        with self.lock:
            if path in self.holds:
                return True
            policy = self.policies.get(path)
        return policy is not None and parsedate_to_datetime(policy[0]) > datetime.now(UTC)

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        split = urlsplit(h.path)
        path, query = split.path, parse_qs(split.query)
        comp = (query.get("comp") or [""])[0]
        headers = {k.lower(): v for k, v in h.headers.items()}
        length = int(headers.get("content-length") or 0)
        body = h.rfile.read(length) if length else b""
        with self.lock:
            self.requests.append((h.command, h.path, headers))
        blob_level = path.count("/") >= 3  # /account/container/blob...
        if h.command == "PUT" and comp == "immutabilityPolicies":
            return self._set_policy(h, path, headers)
        if h.command == "PUT" and comp == "legalhold":
            with self.lock:
                on = headers.get(_HOLD, "false").lower() == "true"
                (self.holds.add if on else self.holds.discard)(path)
            return self._reply(h, 200, {_HOLD: "true" if on else "false"})
        writes = h.command == "PUT" and comp in ("", "blocklist")
        if blob_level and ((h.command == "DELETE" and not comp) or writes) and self.locked(path):
            return self._reply(
                h,
                409,
                {"x-ms-error-code": "BlobImmutableDueToPolicy", "content-type": "application/xml"},
                b"<?xml version='1.0' encoding='utf-8'?><Error><Code>BlobImmutableDueToPolicy"
                b"</Code><Message>This operation is not permitted as the blob is immutable "
                b"due to a policy.</Message></Error>",
            )
        status, reason, up_headers, up_body = self._forward(h, body)
        if writes and status == 201 and _UNTIL in headers:
            with self.lock:
                self.policies[path] = (headers[_UNTIL], headers.get(_MODE, "Unlocked"))
        if h.command == "DELETE" and status == 202:
            with self.lock:
                self.policies.pop(path, None)
        extra: dict[str, str] = {}
        if blob_level and h.command in ("GET", "HEAD") and not comp:
            with self.lock:
                policy = self.policies.get(path)
                held = path in self.holds
            if policy is not None:
                extra = {_UNTIL: policy[0], _MODE: policy[1]}
            extra[_HOLD] = "true" if held else "false"
        self._reply(h, status, {**up_headers, **extra}, up_body, reason, head=h.command == "HEAD")

    def _set_policy(self, h: BaseHTTPRequestHandler, path: str, headers: dict[str, str]) -> None:
        until, mode = headers.get(_UNTIL, ""), headers.get(_MODE, "Unlocked")
        with self.lock:
            old = self.policies.get(path)
            shorter = old is not None and (
                mode != "Locked" or parsedate_to_datetime(until) < parsedate_to_datetime(old[0])
            )
            if old is not None and old[1] == "Locked" and shorter:  # Azure: only extended
                return self._reply(h, 409, {"x-ms-error-code": "ImmutabilityPolicyLocked"})
            self.policies[path] = (until, mode)
        self._reply(h, 200, {_UNTIL: until, _MODE: mode})

    def _forward(
        self, h: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, str, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=30)
        try:
            conn.request(h.command, h.path, body=body or None, headers=dict(h.headers.items()))
            resp = conn.getresponse()
            data = resp.read()
            kept = {k: v for k, v in resp.getheaders() if k.lower() not in _HOP}
            if h.command == "HEAD":
                kept["Content-Length"] = resp.getheader("Content-Length") or "0"
            return resp.status, resp.reason, kept, data
        finally:
            conn.close()

    @staticmethod
    def _reply(
        h: BaseHTTPRequestHandler,
        status: int,
        headers: dict[str, str],
        body: bytes = b"",
        reason: str | None = None,
        *,
        head: bool = False,
    ) -> None:
        h.send_response(status, reason)
        for k, v in headers.items():
            h.send_header(k, v)
        if not head:
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if body and not head:
            h.wfile.write(body)


def gcs_retention_argv(port: int) -> list[str]:
    """The command that runs the retention-keeping GCS emulator on ``port``."""
    script = Path(__file__).with_name("gcs_retention_server.py")
    return [sys.executable, str(script), "start", "--host", HOST, "--port", str(port),
            "--in-memory", "-q"]  # fmt: skip
