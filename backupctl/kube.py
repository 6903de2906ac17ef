"""A small asyncio facade over the ``kubernetes`` client, for the controller.

The controller's handlers are coroutines (one per RedisBackup, a thousand
must idle cheaply), while the official client is synchronous: each call runs
in a bounded thread pool, on one shared connection pool. Objects stay plain
dicts (custom-objects API for every group, the core API for pods only), so
no model classes are built for Jobs and pods.

Login: ``$KUBECONFIG`` when set; in a pod, the service account; else
``~/.kube/config``. Errors come back as :class:`ApiError` (with the
HTTP status); 404 on ``get`` is None and 409 on ``create`` is
:class:`AlreadyExists`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from backupctl import __version__

JsonDict = dict[str, Any]
REQUEST_TIMEOUT = 30.0


class ApiError(Exception):
    """The API server refused a request; ``status`` is the HTTP code."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message

    @classmethod
    def from_exception(cls, e: ApiException) -> ApiError:
        reason, message = str(e.reason or ""), str(e.reason or "")
        try:
            body = json.loads(e.body or "{}")
            reason, message = str(body.get("reason", reason)), str(body.get("message", message))
        except (ValueError, TypeError, AttributeError):
            pass
        return cls(int(e.status or 0), reason, message)


class AlreadyExists(ApiError):
    """409 on create: the object is there already (for a Job: the slot is done)."""


class Kube:
    """Async get/list/create/delete/patch-status on dict objects."""

    def __init__(self, api_client: client.ApiClient, threads: int = 8) -> None:
        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kube")

    @classmethod
    def connect(cls, threads: int = 8) -> Kube:
        """Log in from ``$KUBECONFIG``; in a pod without it, as the service
        account; else from ``~/.kube/config``."""
        configuration = client.Configuration()
        kubeconfig = os.environ.get("KUBECONFIG")
        if kubeconfig or not os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_kube_config(kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        configuration.connection_pool_maxsize = threads
        api_client = client.ApiClient(configuration)
        api_client.user_agent = f"backupctl/{__version__}"
        return cls(api_client, threads)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.api_client.close()  # type: ignore[no-untyped-call]

    async def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        call = functools.partial(fn, *args, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        try:
            return await loop.run_in_executor(self._pool, call)
        except ApiException as e:
            error = ApiError.from_exception(e)
            if error.status == 409 and error.reason == "AlreadyExists":
                raise AlreadyExists(error.status, error.reason, error.message) from None
            raise error from None

    # -- verbs ------------------------------------------------------------------------

    async def get(
        self, group: str, version: str, plural: str, namespace: str, name: str
    ) -> JsonDict | None:
        """The object, or None when it (or its resource type) does not exist."""
        try:
            if not group and plural == "pods":
                raw = await self._run(
                    self.core.read_namespaced_pod, name, namespace, _preload_content=False
                )
                return _decode(raw)
            obj = await self._run(
                self.custom.get_namespaced_custom_object, group, version, namespace, plural, name
            )
        except ApiError as e:
            if e.status == 404:
                return None
            raise
        return _as_dict(obj)

    async def list(
        self, group: str, version: str, plural: str, namespace: str, labels: str | None = None
    ) -> list[JsonDict]:
        """Objects in ``namespace`` matching the ``labels`` selector ([] for an
        unknown resource type)."""
        try:
            if not group and plural == "pods":
                raw = await self._run(
                    self.core.list_namespaced_pod,
                    namespace,
                    label_selector=labels,
                    _preload_content=False,
                )
                result = _decode(raw)
            else:
                result = await self._run(
                    self.custom.list_namespaced_custom_object,
                    group,
                    version,
                    namespace,
                    plural,
                    label_selector=labels,
                )
        except ApiError as e:
            if e.status == 404:
                return []
            raise
        return list(result.get("items") or [])

    async def create(
        self, group: str, version: str, plural: str, namespace: str, body: JsonDict
    ) -> JsonDict:
        obj = await self._run(
            self.custom.create_namespaced_custom_object, group, version, namespace, plural, body
        )
        return _as_dict(obj)

    async def delete(
        self, group: str, version: str, plural: str, namespace: str, name: str
    ) -> None:
        """Delete with background propagation (a Job's pods go too); gone is fine."""
        try:
            await self._run(
                self.custom.delete_namespaced_custom_object,
                group,
                version,
                namespace,
                plural,
                name,
                propagation_policy="Background",
            )
        except ApiError as e:
            if e.status != 404:
                raise

    async def patch_status(
        self, group: str, version: str, plural: str, namespace: str, name: str, status: JsonDict
    ) -> JsonDict:
        """Merge-patch ``status`` through the status subresource; returns the object."""
        obj = await self._run(
            self.custom.patch_namespaced_custom_object_status,
            group,
            version,
            namespace,
            plural,
            name,
            {"status": status},
        )
        return _as_dict(obj)


def _decode(raw: Any) -> JsonDict:
    """A raw (not preloaded) response's JSON body."""
    return _as_dict(json.loads(raw.data if hasattr(raw, "data") else raw.read()))


def _as_dict(obj: Any) -> JsonDict:
    if not isinstance(obj, dict):
        raise ApiError(500, "InternalError", "the API server answered something that is not JSON")
    return obj


__all__ = ["AlreadyExists", "ApiError", "Kube"]
