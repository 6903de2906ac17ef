"""A small asyncio client for the Kubernetes API, for the controllers.

The handlers are coroutines (one per RedisBackup; a thousand must idle
cheaply and act together at a cron slot), so requests go out on the event
loop with aiohttp -- the HTTP stack kopf itself uses -- rather than through
the synchronous ``kubernetes`` client in threads, whose GIL contention slowed
kopf's own event processing. Objects stay plain dicts.

Login comes from the ``kubernetes`` package's loaders, so every kubeconfig
and in-cluster flavour works, token refresh included: ``$KUBECONFIG`` when
set; in a pod, the service account; else ``~/.kube/config``. The typed
``kubernetes`` APIs on the same login stay available as :attr:`Kube.custom`
and :attr:`Kube.core` for callers that want them (made on first use).

Errors come back as :class:`ApiError` (with the HTTP status; 503 when the
server cannot be reached); 404 on ``get`` is None and 409 AlreadyExists on
``create`` is :class:`AlreadyExists`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
from kubernetes import client, config

from backupctl import __version__

JsonDict = dict[str, Any]
REQUEST_TIMEOUT = 30.0
#: Seconds an auth header is reused before the login's refresh hook is asked again.
AUTH_REFRESH = 10.0
MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    """The API server refused a request (or could not be reached: 503)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


class AlreadyExists(ApiError):
    """409 on create: the object is there already (for a Job: the slot is done)."""


class Kube:
    """Async get/list/create/delete/patch-status on dict objects."""

    def __init__(self, configuration: client.Configuration, connections: int = 16) -> None:
        self.configuration = configuration
        self.connections = connections
        self.api_client = client.ApiClient(configuration)
        self.api_client.user_agent = f"backupctl/{__version__}"
        self._session: aiohttp.ClientSession | None = None
        self._watch_session: aiohttp.ClientSession | None = None
        self._closing: asyncio.Task[None] | None = None
        self._auth: dict[str, str] = {}
        self._auth_until = 0.0
        self._ssl: ssl.SSLContext | bool = self._ssl_context()
        self._proxy: str | None = configuration.proxy or None
        #: Told of every request: (HTTP method, seconds, status; 0 when none came back).
        self.on_request: Callable[[str, float, int], None] | None = None

    @functools.cached_property
    def custom(self) -> client.CustomObjectsApi:
        """The typed ``kubernetes`` API of custom objects on the same login."""
        return client.CustomObjectsApi(self.api_client)

    @functools.cached_property
    def core(self) -> client.CoreV1Api:
        """The typed core/v1 API on the same login (made on first use: importing it
        costs every controller process 20 MiB that none of the handlers need)."""
        return client.CoreV1Api(self.api_client)

    @classmethod
    def connect(cls, connections: int = 16) -> Kube:
        """Log in from ``$KUBECONFIG``; in a pod without it, as the service
        account; else from ``~/.kube/config``."""
        configuration = client.Configuration()
        kubeconfig = os.environ.get("KUBECONFIG")
        if kubeconfig or not os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_kube_config(kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return cls(configuration, connections)

    def _ssl_context(self) -> ssl.SSLContext | bool:
        c = self.configuration
        if not c.host.startswith("https:"):
            return False
        if not c.verify_ssl:
            return False
        context = ssl.create_default_context(cafile=c.ssl_ca_cert)
        if c.cert_file:
            context.load_cert_chain(c.cert_file, c.key_file)
        return context

    def _headers(self, content_type: str) -> dict[str, str]:
        now = time.monotonic()
        if now >= self._auth_until:
            # The loaders refresh expiring tokens (exec plugins, the projected
            # service-account token) when asked; asking costs ~50 us, so ask
            # every AUTH_REFRESH seconds rather than per request.
            settings: dict[str, Any] = dict(self.configuration.auth_settings())
            self._auth = {
                str(a["key"]): str(a["value"])
                for a in settings.values()
                if a.get("in") == "header" and a.get("value")
            }
            self._auth_until = now + AUTH_REFRESH
        return {
            "Accept": "application/json",
            "Content-Type": content_type,
            "User-Agent": f"backupctl/{__version__}",
            **self._auth,
        }

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._watch_session is not None:
            await self._watch_session.close()
            self._watch_session = None
        self.api_client.close()  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Close from synchronous code (inside a running loop: scheduled)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.api_client.close()  # type: ignore[no-untyped-call]
            return
        self._closing = loop.create_task(self.aclose())

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> JsonDict:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.connections, ssl=self._ssl),
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
            )
        url = self.configuration.host.rstrip("/") + path
        data = None if body is None else json.dumps(body)
        started, status = time.monotonic(), 0
        try:
            async with self._session.request(
                method,
                url,
                params=params,
                data=data,
                headers=self._headers(content_type),
                proxy=self._proxy,
            ) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as e:
            raise ApiError(503, "ServiceUnavailable", f"{method} {path}: {e!r}") from e
        finally:
            if self.on_request is not None:
                self.on_request(method, time.monotonic() - started, status)
        try:
            decoded = json.loads(raw) if raw else {}
        except ValueError:
            decoded = {"message": raw[:200].decode(errors="replace")}
        if status >= 400:
            reason = str(decoded.get("reason") or response.reason or "")
            message = str(decoded.get("message") or "")
            if status == 409 and reason == "AlreadyExists":
                raise AlreadyExists(status, reason, message)
            raise ApiError(status, reason, message)
        if not isinstance(decoded, dict):
            raise ApiError(500, "InternalError", f"{method} {path}: the answer is not an object")
        return decoded

    @staticmethod
    def _path(group: str, version: str, plural: str, namespace: str, name: str = "") -> str:
        base = f"/apis/{group}/{version}" if group else f"/api/{version}"
        # namespace '': every namespace (a list across the cluster)
        path = f"{base}/namespaces/{quote(namespace)}/{plural}" if namespace else f"{base}/{plural}"
        return f"{path}/{quote(name)}" if name else path

    # -- verbs ------------------------------------------------------------------------

    async def get(
        self, group: str, version: str, plural: str, namespace: str, name: str
    ) -> JsonDict | None:
        """The object, or None when it (or its resource type) does not exist."""
        try:
            return await self._request("GET", self._path(group, version, plural, namespace, name))
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def list(
        self, group: str, version: str, plural: str, namespace: str, labels: str | None = None
    ) -> list[JsonDict]:
        """Objects in ``namespace`` matching the ``labels`` selector ([] for an
        unknown resource type)."""
        params = {"labelSelector": labels} if labels else None
        try:
            result = await self._request(
                "GET", self._path(group, version, plural, namespace), params=params
            )
        except ApiError as e:
            if e.status == 404:
                return []
            raise
        return list(result.get("items") or [])

    async def create(
        self, group: str, version: str, plural: str, namespace: str, body: JsonDict
    ) -> JsonDict:
        return await self._request("POST", self._path(group, version, plural, namespace), body=body)

    async def delete(
        self, group: str, version: str, plural: str, namespace: str, name: str
    ) -> None:
        """Delete with background propagation (a Job's pods go too); gone is fine."""
        options = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        try:
            await self._request(
                "DELETE", self._path(group, version, plural, namespace, name), body=options
            )
        except ApiError as e:
            if e.status != 404:
                raise

    async def patch_status(
        self, group: str, version: str, plural: str, namespace: str, name: str, status: JsonDict
    ) -> JsonDict:
        """Merge-patch ``status`` through the status subresource; returns the object."""
        path = self._path(group, version, plural, namespace, name) + "/status"
        return await self._request("PATCH", path, body={"status": status}, content_type=MERGE_PATCH)

    async def patch(
        self, group: str, version: str, plural: str, namespace: str, name: str, patch: JsonDict
    ) -> JsonDict:
        """Merge-patch the object (``{"spec": {"replicas": 0}}`` scales a
        StatefulSet); returns it."""
        path = self._path(group, version, plural, namespace, name)
        return await self._request("PATCH", path, body=patch, content_type=MERGE_PATCH)

    async def delete_instance(
        self, group: str, version: str, plural: str, namespace: str, name: str, uid: str
    ) -> None:
        """Delete the object only while it is the instance ``uid``
        (``preconditions.uid``): gone (404) or replaced by a new instance (409)
        is done, so an instance is deleted at most once."""
        options = {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": uid}}
        try:
            await self._request(
                "DELETE", self._path(group, version, plural, namespace, name), body=options
            )
        except ApiError as e:
            if e.status not in (404, 409):
                raise

    async def list_page(
        self, group: str, version: str, plural: str, namespace: str, labels: str | None = None
    ) -> JsonDict:
        """The whole list object (``items`` and ``metadata.resourceVersion``, where a
        watch of the same objects starts)."""
        params = {"labelSelector": labels} if labels else None
        return await self._request(
            "GET", self._path(group, version, plural, namespace), params=params
        )

    async def watch(
        self,
        group: str,
        version: str,
        plural: str,
        namespace: str,
        *,
        labels: str | None,
        resource_version: str,
        timeout: int,
    ) -> AsyncIterator[JsonDict]:
        """The watch events (``{"type", "object"}`` dicts) after ``resource_version``
        until the server ends the stream (after ``timeout`` seconds; the client gives up
        60 s later). On a connection of its own (a watch holds one for minutes: it must
        not take one of the handlers'). A refusal is :class:`ApiError`."""
        if self._watch_session is None:
            self._watch_session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ssl=self._ssl)
            )
        params = {"watch": "true", "resourceVersion": resource_version}
        params["timeoutSeconds"] = str(timeout)
        params["allowWatchBookmarks"] = "true"
        if labels:
            params["labelSelector"] = labels
        url = self.configuration.host.rstrip("/") + self._path(group, version, plural, namespace)
        limits = aiohttp.ClientTimeout(total=timeout + 60, sock_connect=REQUEST_TIMEOUT)
        try:
            async with self._watch_session.get(
                url,
                params=params,
                headers=self._headers("application/json"),
                proxy=self._proxy,
                timeout=limits,
            ) as response:
                if response.status >= 400:
                    raw = await response.read()
                    raise ApiError(
                        response.status,
                        str(response.reason or ""),
                        raw[:200].decode(errors="replace"),
                    )
                rest = b""
                async for chunk in response.content.iter_any():
                    lines = (rest + chunk).split(b"\n")
                    rest = lines.pop()
                    for line in lines:
                        if line.strip():
                            yield json.loads(line)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise ApiError(503, "ServiceUnavailable", f"watch {plural}: {e!r}") from e
        except ValueError as e:
            raise ApiError(500, "InternalError", f"watch {plural}: not JSON: {e}") from e


__all__ = ["AlreadyExists", "ApiError", "Kube"]
