"""A small asyncio client for the Kubernetes API, for the controllers.

The handlers are coroutines (one per RedisBackup; a thousand must idle
cheaply and act together at a cron slot), so requests go out on the event
loop with aiohttp -- the HTTP stack kopf itself uses -- rather than through
the synchronous ``kubernetes`` client in threads, whose GIL contention slowed
kopf's own event processing. Objects stay plain dicts.

Login comes from :mod:`backupctl.controller.login`, the one kopf uses too:
``$KUBECONFIG`` when set; in a pod, the service account; else ``~/.kube/config``.
It is asked again every :data:`LOGIN_REFRESH` seconds and after a 401, so a rotated
service-account token is picked up.

Errors come back as :class:`ApiError` (with the HTTP status; 503 when the
server cannot be reached); 404 on ``get`` is None and 409 AlreadyExists on
``create`` is :class:`AlreadyExists`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf
import orjson

from backupctl import __version__
from backupctl.controller import login

JsonDict = dict[str, Any]
REQUEST_TIMEOUT = 30.0
#: Seconds an auth header is reused before the login is read again (the kubelet
#: rotates a projected service-account token well before it expires).
LOGIN_REFRESH = 60.0
MERGE_PATCH = "application/merge-patch+json"


def _dumps(body: Any) -> bytes:
    """A request's JSON: orjson (at a cron slot, encoding the Jobs and decoding the
    answers with ``json`` was a twelfth of the controller's CPU), or the standard library
    for what orjson refuses (an integer over 64 bits)."""
    try:
        return orjson.dumps(body)
    except TypeError:
        return json.dumps(body).encode()


class ApiError(Exception):
    """The API server refused a request (or could not be reached: 503)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


class AlreadyExists(ApiError):
    """409 on create: the object is there already (for a Job: the slot is done)."""


class Kube:
    """Async get/list/create/delete/patch-status on dict objects."""

    def __init__(
        self,
        log_in: Callable[[], kopf.ConnectionInfo] = login.connection_info,
        connections: int = 16,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log_in = log_in
        self._clock = clock  # when the login is read again
        self.connections = connections
        info = log_in()
        self.server = info.server.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._watch_session: aiohttp.ClientSession | None = None
        self._closing: asyncio.Task[None] | None = None
        self._auth: dict[str, str] = info.as_http_headers()
        self._auth_until = clock() + LOGIN_REFRESH
        self._ssl: ssl.SSLContext | bool = (
            info.as_ssl_context() if self.server.startswith("https:") else False
        )
        self._proxy: str | None = info.proxy_url or None
        self._trust_env = info.trust_env  # proxies from the environment, as kopf's session
        #: Told of every request: (HTTP method, seconds, status; 0 when none came back).
        self.on_request: Callable[[str, float, int], None] | None = None

    @classmethod
    def connect(cls, connections: int = 16) -> Kube:
        """Log in from ``$KUBECONFIG``; in a pod without it, as the service
        account; else from ``~/.kube/config``."""
        return cls(login.connection_info, connections)

    def _headers(self, content_type: str) -> dict[str, str]:
        now = self._clock()
        if now >= self._auth_until:
            # A login that cannot be read again (a kubeconfig being rewritten) keeps
            # the last one: a request it no longer opens answers 401.
            with contextlib.suppress(Exception):
                self._auth = self.log_in().as_http_headers()
            self._auth_until = now + LOGIN_REFRESH
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

    def close(self) -> None:
        """Close from synchronous code (inside a running loop: scheduled)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop, so no session was opened
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
                trust_env=self._trust_env,
                connector=aiohttp.TCPConnector(limit=self.connections, ssl=self._ssl),
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
            )
        url = self.server + path
        data = None if body is None else _dumps(body)
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
            decoded = orjson.loads(raw) if raw else {}
        except ValueError:
            decoded = {"message": raw[:200].decode(errors="replace")}
        if status >= 400:
            if status == 401:
                self._auth_until = 0.0  # log in afresh for the next request
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
                trust_env=self._trust_env, connector=aiohttp.TCPConnector(limit=0, ssl=self._ssl)
            )
        params = {"watch": "true", "resourceVersion": resource_version}
        params["timeoutSeconds"] = str(timeout)
        params["allowWatchBookmarks"] = "true"
        if labels:
            params["labelSelector"] = labels
        url = self.server + self._path(group, version, plural, namespace)
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
                    if response.status == 401:
                        self._auth_until = 0.0
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
                            yield orjson.loads(line)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise ApiError(503, "ServiceUnavailable", f"watch {plural}: {e!r}") from e
        except ValueError as e:
            raise ApiError(500, "InternalError", f"watch {plural}: not JSON: {e}") from e


__all__ = ["AlreadyExists", "ApiError", "Kube"]
