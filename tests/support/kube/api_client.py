"""A small synchronous HTTP client for the emulator, for test code and the kubelet stand-in.

Tests talk to the emulator over HTTP like any client (state lives in the server); this is
only a convenience so a test can write ``api.create(obj)`` or ``api.get("jobs", ns, name)``
without configuring the ``kubernetes`` client. Errors raise :class:`ApiStatusError` carrying
the Status body.
"""

from __future__ import annotations

import builtins
import http.client
import json
import os
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

JsonDict = dict[str, Any]
T = TypeVar("T")

PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}


class ApiStatusError(Exception):
    """A non-2xx answer; ``status`` is the HTTP code, ``body`` the decoded Status."""

    def __init__(self, status: int, body: Any) -> None:
        message = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"{status}: {message}")
        self.status, self.body = status, body

    @property
    def message(self) -> str:
        return str(self.body.get("message", "")) if isinstance(self.body, dict) else str(self.body)


class K8sClient:
    """Synchronous JSON client for one API server URL (http only, loopback)."""

    def __init__(self, url: str, timeout: float = 10.0, token: str | None = None) -> None:
        parsed = urllib.parse.urlsplit(url)
        self.url, self.host, self.port = url, parsed.hostname or "127.0.0.1", parsed.port or 80
        self.timeout = timeout
        self.token = token  # a bearer token (None: no header, which the emulator admits)
        self._resources: dict[str, tuple[str, bool]] | None = (
            None  # alias -> (base path, namespaced)
        )

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str | None] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        if params:
            path += "?" + urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(
                method,
                path,
                body=data,
                headers={
                    "Content-Type": content_type,
                    "Accept": "application/json",
                    **({"Authorization": f"Bearer {self.token}"} if self.token else {}),
                },
            )
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            decoded = json.loads(raw) if raw else None
        except ValueError:
            decoded = raw.decode(errors="replace")
        if response.status >= 300:
            raise ApiStatusError(response.status, decoded)
        return decoded

    # -- resource names ---------------------------------------------------------------------

    def refresh_discovery(self) -> None:
        resources: dict[str, tuple[str, bool]] = {}
        docs = [("/api/v1", self.request("GET", "/api/v1"))]
        for group in self.request("GET", "/apis")["groups"]:
            for version in group["versions"]:
                gv = version["groupVersion"]
                docs.append((f"/apis/{gv}", self.request("GET", f"/apis/{gv}")))
        for base, doc in docs:
            group = doc["groupVersion"].rpartition("/")[0]
            preferred = True
            for res in doc["resources"]:
                if "/" in res["name"]:
                    continue
                entry = (f"{base}/{{ns}}{res['name']}", res["namespaced"])
                aliases = [
                    f"{doc['groupVersion']}/{res['name']}",
                    f"{doc['groupVersion']}/{res['kind']}",
                ]
                if preferred:
                    aliases += [
                        res["name"],
                        res["kind"],
                        res["kind"].lower(),
                        *res.get("shortNames", []),
                    ]
                    if group:
                        aliases += [f"{res['name']}.{group}", f"{res['kind']}.{group}"]
                for alias in aliases:
                    resources.setdefault(alias, entry)
        self._resources = resources

    def _base(self, resource: str, namespace: str | None) -> str:
        for attempt in range(2):
            if self._resources is None or (attempt and resource not in self._resources):
                self.refresh_discovery()
            assert self._resources is not None
            if resource in self._resources:
                template, namespaced = self._resources[resource]
                ns = f"namespaces/{namespace}/" if namespaced and namespace else ""
                return template.format(ns=ns)
        raise KeyError(f"unknown resource {resource!r}")

    @staticmethod
    def resource_of(obj: JsonDict) -> str:
        return f"{obj['apiVersion']}/{obj['kind']}"

    # -- verbs ------------------------------------------------------------------------------

    def create(self, obj: JsonDict, namespace: str | None = None) -> JsonDict:
        ns = namespace or obj.get("metadata", {}).get("namespace")
        return self.request("POST", self._base(self.resource_of(obj), ns), obj)  # type: ignore[no-any-return]

    def get(self, resource: str, namespace: str | None, name: str) -> JsonDict | None:
        """The object, or None when it does not exist."""
        try:
            return self.request("GET", f"{self._base(resource, namespace)}/{name}")  # type: ignore[no-any-return]
        except ApiStatusError as e:
            if e.status == 404:
                return None
            raise

    def list(
        self,
        resource: str,
        namespace: str | None = None,
        labels: str | None = None,
        fields: str | None = None,
    ) -> list[JsonDict]:
        result = self.request(
            "GET",
            self._base(resource, namespace),
            params={"labelSelector": labels, "fieldSelector": fields},
        )
        return list(result["items"])

    def replace(self, obj: JsonDict) -> JsonDict:
        meta = obj["metadata"]
        path = f"{self._base(self.resource_of(obj), meta.get('namespace'))}/{meta['name']}"
        return self.request("PUT", path, obj)  # type: ignore[no-any-return]

    def patch(
        self,
        resource: str,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        subresource: str | None = None,
        type: str = "merge",
    ) -> JsonDict:
        path = f"{self._base(resource, namespace)}/{name}" + (
            f"/{subresource}" if subresource else ""
        )
        return self.request("PATCH", path, patch, content_type=PATCH_TYPES[type])  # type: ignore[no-any-return]

    def delete(
        self,
        resource: str,
        namespace: str | None,
        name: str,
        propagation: str | None = None,
    ) -> JsonDict | None:
        body = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation:
            body["propagationPolicy"] = propagation
        try:
            return self.request("DELETE", f"{self._base(resource, namespace)}/{name}", body)  # type: ignore[no-any-return]
        except ApiStatusError as e:
            if e.status == 404:
                return None
            raise

    def create_namespace(self, name: str) -> JsonDict:
        return self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    def apply(
        self, docs: str | Path | Iterable[JsonDict], namespace: str | None = None
    ) -> builtins.list[JsonDict]:  # "list" alone is the method above
        """Create each document, or merge-patch it when it exists (like a client-side apply)."""
        if isinstance(docs, Path):
            docs = docs.read_text()
        items = [d for d in yaml.safe_load_all(docs) if d] if isinstance(docs, str) else list(docs)
        result = []
        for doc in items:
            ns = namespace or doc.get("metadata", {}).get("namespace")
            try:
                result.append(self.create(doc, ns))
            except ApiStatusError as e:
                if e.status != 409:
                    raise
                result.append(
                    self.patch(
                        self.resource_of(doc),
                        ns,
                        doc["metadata"]["name"],
                        {k: v for k, v in doc.items() if k != "status"},
                    )
                )
            if doc.get("kind") == "CustomResourceDefinition":
                self._resources = None  # new resources: rediscover
        return result


def wait_for(
    condition: Callable[[], T | Literal[False] | None],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = condition()
    while not last:
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {message}; last: {last!r}")
        time.sleep(interval)
        last = condition()
    return last


def run_kubectl(
    kubeconfig: Path,
    cache_dir: Path,
    *args: str,
    input: str | None = None,
    check: bool = True,
    timeout: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    """Run kubectl against the emulator with its own discovery cache."""
    cmd = [
        "kubectl",
        f"--kubeconfig={kubeconfig}",
        f"--cache-dir={cache_dir}",
        "--request-timeout=20s",
        *args,
    ]
    env = dict(os.environ, KUBECONFIG=str(kubeconfig))
    proc = subprocess.run(
        cmd, input=input, capture_output=True, text=True, timeout=timeout, env=env
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc
