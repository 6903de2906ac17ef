"""A Kubernetes API server emulator on 127.0.0.1, built on kmock 0.8's ``KubernetesEmulator``.

Why: there is no kube-apiserver and no container runtime on the test machines, yet the
controller must be tested with the real kopf operator, the ``kubernetes`` client and
``kubectl``. kmock serves discovery, objects and watch streams over real HTTP, but (see
shared/TESTING.md) it breaks those clients in several ways. :class:`KubeEmulator` keeps
kmock's server plumbing, DSL (``emulator['post', ...] << 500`` still injects faults and
``emulator.requests`` records traffic), its ``objects`` store (``emulator.objects[...]`` for
assertions) and bundled discovery data, and replaces the request semantics:

* POST answers 201; server-set metadata (uid, increasing resourceVersion,
  creationTimestamp, generation bumped on spec changes only, namespace, generateName);
  no-op writes do not bump resourceVersion; 409 on stale resourceVersion and duplicates;
* PUT (replace), JSON merge / JSON patch / strategic merge / a naive server-side apply;
* the ``status`` subresource: ``/status`` writes change only status, main writes keep it;
* label and field selectors on list, watch and deletecollection; list resourceVersion is
  real; watch honours ``resourceVersion`` (replay, 410 Gone when too old) and
  ``timeoutSeconds``, sends ``application/json``, and ADDED/DELETED on selector transitions;
* ``/api/v1/namespaces`` works; namespaces must exist (404 like a real server), deleting one
  deletes its content;
* DELETE sets deletionTimestamp while finalizers remain and removes the object when they are
  gone; ownerReference garbage collection (background, foreground, orphan; batch/v1 Jobs
  orphan by default like the real API); dependents of vanished owners are collected;
* CRDs register their resources in discovery (core group says ``groupVersion: v1``) and custom
  resources are pruned, defaulted and validated against ``openAPIV3Schema`` + CEL
  (:mod:`support.kube.schema`), refused with kube-apiserver's 422 messages;
* built-in defaulting/validation where tests care: Job selector/labels/backoffLimit and
  restartPolicy, Pod phase and terminationMessagePath, Secret ``stringData``.
* ``pods/log`` serves the output the kubelet stand-in captured (``kubectl logs job/x``).

Server-side Table output (``kubectl get``) uses a CRD's ``additionalPrinterColumns``.

Not emulated: RBAC/authn, admission webhooks, protobuf bodies (``kubectl create job`` /
``create secret``), Table output of built-in kinds (kubectl prints NAME/AGE), pagination
(``limit``/``continue`` are ignored), watch bookmarks, field ownership of server-side apply,
pod graceful termination (pods go away at once), conversion webhooks, built-in schemas.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import copy
import datetime
import json
import math
import random
import re
import string
import threading
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import apps, enums, references, rendering

from . import patching, schema, selectors

JsonDict = dict[str, Any]

HISTORY_DEPTH = 16  # versions kept per object in kmock's history (memory bound)
WATCH_LOG_SIZE = 20000  # events kept to replay watches that resume from a resourceVersion
CORE_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
CRD_CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
CRD_VERBS = ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"]


def now_iso() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """An error answered with a ``Status`` body, as kube-apiserver does."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: JsonDict | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details = details
        self.headers = headers or {}

    def status(self) -> JsonDict:
        body: JsonDict = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


@dataclass
class ResourceType:
    """What the server knows about one group/version/plural (built-in or from a CRD)."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    subresources: set[str] = field(default_factory=set)
    verbs: list[str] = field(default_factory=lambda: list(CRD_VERBS))
    storage_version: str = ""  # objects of every version are stored under this one
    schema: JsonDict | None = None  # openAPIV3Schema of a custom resource
    printer_columns: list[JsonDict] = field(default_factory=list)  # additionalPrinterColumns
    crd_name: str | None = None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified_kind(self) -> str:  # "RedisBackup.backupctl.dev", "Job.batch", "Pod"
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def qualified_resource(self) -> str:  # "redisbackups.backupctl.dev", "jobs.batch", "pods"
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def storage_key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def kmock_resource(self) -> references.resource:
        return references.resource(self.group, self.storage_version or self.version, self.plural)


@dataclass(eq=False)
class Watcher:
    """One open watch stream."""

    key: tuple[str, str]
    namespace: str | None
    labels: selectors.Predicate
    fields: selectors.Predicate
    queue: asyncio.Queue[JsonDict | None]

    def matches(self, obj: JsonDict | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata", {})
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return self.labels(meta.get("labels") or {}) and self.fields(obj)


@dataclass
class Parsed:
    """The Kubernetes meaning of a request path (kmock's parser fails on /api/v1/namespaces)."""

    group: str | None = None
    version: str | None = None
    plural: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None


def parse_path(path: str) -> Parsed:
    parts = [p for p in path.strip("/").split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 2 and parts[0] == "apis":
        group, version, rest = parts[1], (parts[2] if len(parts) > 2 else None), parts[3:]
    else:
        return Parsed()
    p = Parsed(group=group, version=version)
    if not rest or version is None:
        return p
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
        p.namespace, rest = rest[1], rest[2:]
    p.plural = rest[0]
    p.name = rest[1] if len(rest) > 1 else None
    p.subresource = "/".join(rest[2:]) or None
    return p


def _strip(obj: JsonDict, *keys: str) -> JsonDict:
    return {k: v for k, v in obj.items() if k not in keys}


def _meta_without_rv(obj: JsonDict) -> JsonDict:
    result = dict(obj)
    result["metadata"] = _strip(obj.get("metadata", {}), "resourceVersion", "managedFields")
    return result


_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)


@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with kube-apiserver semantics (see the module docstring)."""

    strict_namespaces: bool = True  # creating in a missing namespace answers 404, as for real
    request_log_limit: int = 20000  # requests kept for assertions (older ones are dropped)

    _types: dict[tuple[str, str, str], ResourceType] = attrs.field(factory=dict, init=False)
    _rv: int = attrs.field(default=1000, init=False)
    _log: collections.deque[tuple[int, tuple[str, str], JsonDict | None, JsonDict | None]] = (
        attrs.field(factory=lambda: collections.deque(maxlen=WATCH_LOG_SIZE), init=False)
    )
    _watchers: set[Watcher] = attrs.field(factory=set, init=False)
    _uids: dict[str, tuple[ResourceType, str | None, str]] = attrs.field(factory=dict, init=False)
    # Indexes that keep lists, GC and finalizer bookkeeping cheap with thousands of objects.
    _index: dict[tuple[str, str], dict[tuple[str | None, str], Any]] = attrs.field(
        factory=dict, init=False
    )
    _owned: dict[str, set[tuple[tuple[str, str], str | None, str]]] = attrs.field(
        factory=dict, init=False
    )
    _terminating: set[tuple[tuple[str, str], str | None, str]] = attrs.field(
        factory=set, init=False
    )
    internal_errors: list[str] = attrs.field(factory=list, init=False)
    # Folders with "stdout"/"stderr" files per (namespace, pod), filled by the kubelet stand-in.
    pod_logs: dict[tuple[str, str], Path] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        bundled = kmock.ResourcesArray()
        bundled.load_bundled()
        for res in bundled:
            info = bundled[res]
            if res.group in ("metrics.k8s.io",) or res.group.startswith("gateway."):
                continue
            self._register(
                ResourceType(
                    group=res.group or "",
                    version=res.version or "v1",
                    plural=res.plural or "",
                    kind=info.kind or "",
                    namespaced=bool(info.namespaced),
                    singular=info.singular or (info.kind or "").lower(),
                    short_names=sorted(info.shortnames),
                    categories=sorted(info.categories),
                    subresources=set(info.subresources),
                    verbs=sorted(info.verbs) or list(CRD_VERBS),
                )
            )
        ns_type = self._types[("", "v1", "namespaces")]
        for name in CORE_NAMESPACES:
            self._store_new(
                ns_type,
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": name},
                    "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"},
                },
            )

    @property
    def requests(self) -> list[rendering.Request]:
        """The requests served so far (kmock's parsed ``Request`` objects), oldest first."""
        return list(self._requests)

    # -- registry ---------------------------------------------------------------------------

    def _register(self, rt: ResourceType) -> None:
        same = [t for t in self._types.values() if t.storage_key == rt.storage_key]
        rt.storage_version = same[0].storage_version if same else (rt.storage_version or rt.version)
        self._types[(rt.group, rt.version, rt.plural)] = rt
        self.resources[rt.kmock_resource.group, rt.version, rt.plural] = references.ResourceInfo(
            kind=rt.kind,
            namespaced=rt.namespaced,
            singular=rt.singular,
            verbs=set(rt.verbs),
            shortnames=set(rt.short_names),
            categories=set(rt.categories),
            subresources=set(rt.subresources),
        )

    def _unregister(self, group: str, plural: str) -> None:
        for key in [k for k, t in self._types.items() if t.storage_key == (group, plural)]:
            del self._types[key]
            res = references.resource(key[0], key[1], key[2])
            if res in self.resources:
                del self.resources[res]

    def resource_type(self, group: str, version: str, plural: str) -> ResourceType:
        rt = self._types.get((group, version, plural))
        if rt is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        return rt

    def find_type(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        for rt in self._types.values():
            if rt.group == group and rt.version == version and rt.kind == kind:
                return rt
        return None

    # -- kmock plumbing ---------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """kmock's entry point, with our path parser (kmock's fails on /api/v1/namespaces)."""
        body = await raw_request.read()
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        try:
            data = json.loads(text) if text else None
        except ValueError:
            data = None
        p = parse_path(raw_request.path)
        method = enums.method(raw_request.method)
        action: enums.action | None = None
        if p.group is not None:
            if method == enums.method.GET and raw_request.query.get("watch") in ("true", "1"):
                action = enums.action.WATCH
            elif p.name is None and p.plural:
                action = {"GET": enums.action.LIST, "POST": enums.action.CREATE}.get(method.value)
            elif p.plural:
                action = {
                    "GET": enums.action.FETCH,
                    "PATCH": enums.action.UPDATE,
                    "PUT": enums.action.UPDATE,
                    "DELETE": enums.action.DELETE,
                }.get(method.value)
        resource = (
            None
            if p.group is None
            else references.resource(group=p.group, version=p.version, plural=p.plural)
        )
        request = rendering.Request(
            id=len(self._requests),
            raw_request=raw_request,
            url=raw_request.url,
            method=raw_request.method,
            params=dict(raw_request.query),
            headers=dict(raw_request.headers),
            cookies=dict(raw_request.cookies),
            data=data,
            body=body,
            text=text,
            action=action,
            resource=resource,
            namespace=p.namespace,
            name=p.name,
            subresource=p.subresource,
        )
        self._requests.append(request)
        if len(self._requests) > self.request_log_limit:
            del self._requests[: len(self._requests) // 2]
        try:
            return await self._handle(request)
        except rendering.StreamingError as e:  # a stream broke after its headers were sent
            self.internal_errors.append(repr(e.__cause__))
            return e.args[0]  # type: ignore[no-any-return]
        except Exception as e:
            self.internal_errors.append("".join(traceback.format_exception(e)))
            return await self._render_error(e)

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        # 1. Reactions a test added with kmock's DSL win (fault injection, spying).
        user = [p for p in self._payloads if not (p.priorities and p.priorities[0] == -math.inf)]
        user.sort(key=lambda p: tuple(-x for x in p.priorities))
        for payload in user:
            if request in payload._source and not payload._disabled.is_set():
                try:
                    return await payload(request)
                except rendering.ReactionMismatchError:
                    payload._disabled.set()
                except NotImplementedError:
                    pass
        # 2. Resource requests: our API semantics. 3. Discovery etc.: kmock's scaffold.
        if request.resource is not None and request.resource.plural:
            try:
                return await self._dispatch(request)
            except ApiError as e:
                return self._json(e.code, e.status(), e.headers)
            except (selectors.SelectorError, ValueError) as e:
                return self._json(400, ApiError(400, "BadRequest", str(e)).status())
        return await apps.RawHandler._handle(self, request)

    @staticmethod
    def _json(
        code: int, body: Any, headers: Mapping[str, str] | None = None
    ) -> aiohttp.web.Response:
        return aiohttp.web.Response(
            status=code,
            text=json.dumps(body),
            content_type="application/json",
            headers=dict(headers or {}),
        )

    # -- dispatch ---------------------------------------------------------------------------

    async def _dispatch(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        res = request.resource
        assert res is not None and res.plural is not None
        rt = self.resource_type(res.group or "", res.version or "", res.plural)
        ns, name, sub = request.namespace, request.name, request.subresource
        method = str(request.method.value).upper()
        params = request.params
        if ns is not None and not rt.namespaced:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        if sub is not None and sub not in rt.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        if sub == "log" and rt.storage_key == ("", "pods") and method == "GET" and name:
            return self._pod_log(ns, name, params)
        if sub not in (None, "status"):
            raise ApiError(405, "MethodNotAllowed", f"subresource {sub} is not emulated", {})

        if method == "GET" and params.get("watch") in ("true", "1"):
            return await self._watch(request, rt)
        as_table = "as=Table" in request.headers.get("Accept", "") and rt.crd_name is not None
        if method == "GET" and name is None:
            listing = self._list(rt, ns, params)
            if as_table:
                return self._json(200, self._table(rt, listing["items"], params))
            return self._json(200, listing)
        if method == "GET":
            obj = self._present(rt, self._get_or_404(rt, ns, name))
            return self._json(200, self._table(rt, [obj], params) if as_table else obj)
        if method == "POST" and name is None:
            obj, warnings = self._create(
                rt,
                ns,
                self._body(request),
                dry_run=self._dry(params),
                field_validation=params.get("fieldValidation"),
            )
            return self._json(201, obj, self._warning_headers(warnings))
        if method == "PUT" and name is not None:
            obj, warnings = self._replace(rt, ns, name, self._body(request), sub, params)
            return self._json(200, obj, self._warning_headers(warnings))
        if method == "PATCH" and name is not None:
            obj, warnings = self._patch(rt, ns, name, request, sub, params)
            return self._json(200, obj, self._warning_headers(warnings))
        if method == "DELETE" and name is not None:
            options = self._body(request, required=False) or {}
            return self._json(200, self._delete(rt, ns, name, options, params))
        if method == "DELETE":
            return self._json(200, self._delete_collection(rt, ns, params))
        raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method ({method})")

    def _pod_log(
        self, ns: str | None, name: str, params: Mapping[str, str]
    ) -> aiohttp.web.Response:
        """``pods/log``: the process output the kubelet stand-in captured (stdout, then stderr)."""
        pod = self._get_or_404(self._types[("", "v1", "pods")], ns, name)
        folder = self.pod_logs.get((pod["metadata"]["namespace"], name))
        if folder is None:
            raise ApiError(
                400,
                "BadRequest",
                f'container "{pod["spec"]["containers"][0]["name"]}" in pod "{name}" is waiting '
                "to start: ContainerCreating",
            )
        text = "".join(
            (folder / f).read_text(errors="replace")
            for f in ("stdout", "stderr")
            if (folder / f).exists()
        )
        if params.get("tailLines"):
            text = "".join(text.splitlines(keepends=True)[-int(params["tailLines"]) :])
        return aiohttp.web.Response(status=200, text=text, content_type="text/plain")

    def _table(
        self, rt: ResourceType, items: list[JsonDict], params: Mapping[str, str]
    ) -> JsonDict:
        """Server-side printing of custom resources (``additionalPrinterColumns``), for kubectl."""
        columns = rt.printer_columns or [
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
        ]
        rows = []
        for obj in items:
            cells: list[Any] = [obj["metadata"]["name"]]
            for column in columns:
                value = jsonpath(obj, column["jsonPath"])
                if column.get("type") == "date" and isinstance(value, str):
                    value = human_age(value)
                cells.append(value)
            if params.get("includeObject") == "Object":
                row_obj = obj
            else:
                row_obj = {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": obj["metadata"],
                }
            rows.append({"cells": cells, "object": row_obj})
        name_column = {
            "name": "Name",
            "type": "string",
            "format": "name",
            "priority": 0,
            "description": "Name must be unique within a namespace.",
        }
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": str(self._rv)},
            "columnDefinitions": [name_column]
            + [
                {
                    "name": c["name"],
                    "type": c.get("type", "string"),
                    "format": c.get("format", ""),
                    "description": c.get("description", ""),
                    "priority": c.get("priority", 0),
                }
                for c in columns
            ],
            "rows": rows,
        }

    @staticmethod
    def _dry(params: Mapping[str, str]) -> bool:
        return params.get("dryRun") == "All"

    @staticmethod
    def _warning_headers(warnings: list[str]) -> dict[str, str]:
        if not warnings:
            return {}
        return {"Warning": ", ".join(f'299 - "{w}"' for w in warnings)}

    @staticmethod
    def _body(request: rendering.Request, required: bool = True) -> Any:
        ctype = request.headers.get("Content-Type", "")
        if not request.body:
            if required:
                raise ApiError(400, "BadRequest", "the body of the request was empty")
            return None
        if "protobuf" in ctype:
            raise ApiError(
                415, "UnsupportedMediaType", "the emulator does not decode protobuf; send JSON"
            )
        try:
            if "yaml" in ctype:
                return yaml.safe_load(request.text)
            return json.loads(request.text)
        except ValueError as e:
            raise ApiError(
                400, "BadRequest", f"the body of the request could not be decoded: {e}"
            ) from e

    # -- reading ----------------------------------------------------------------------------

    def _key(
        self, rt: ResourceType, ns: str | None, name: str
    ) -> tuple[references.resource, str | None, str]:
        return (rt.kmock_resource, ns if rt.namespaced else None, name)

    def _get(self, rt: ResourceType, ns: str | None, name: str) -> JsonDict | None:
        key = self._key(rt, ns, name)
        if key not in self._objects or self._objects[key].deleted:
            return None
        return self._objects[key].raw

    def _not_found(self, rt: ResourceType, name: str) -> ApiError:
        return ApiError(
            404,
            "NotFound",
            f'{rt.qualified_resource} "{name}" not found',
            {"name": name, "group": rt.group, "kind": rt.plural},
        )

    def _get_or_404(self, rt: ResourceType, ns: str | None, name: str) -> JsonDict:
        obj = self._get(rt, ns, name)
        if obj is None:
            raise self._not_found(rt, name)
        return obj

    def _iter_objects(self, rt: ResourceType, ns: str | None = None) -> Iterable[JsonDict]:
        index = self._index.get(rt.storage_key, {})
        for ident in sorted(index, key=lambda k: (k[0] or "", k[1])):
            if ns is None or ident[0] == ns:
                key = index.get(ident)
                if key is not None and not self._objects[key].deleted:
                    yield self._objects[key].raw

    def _type_for(self, storage_key: tuple[str, str]) -> ResourceType | None:
        for rt in self._types.values():
            if rt.storage_key == storage_key and rt.version == rt.storage_version:
                return rt
        return None

    def _reindex(self, rt: ResourceType, old: JsonDict | None, new: JsonDict | None) -> None:
        current = new if new is not None else old
        assert current is not None
        meta = current["metadata"]
        ident = (meta.get("namespace") if rt.namespaced else None, meta["name"])
        ref = (rt.storage_key, *ident)
        index = self._index.setdefault(rt.storage_key, {})
        for owner in (old or {}).get("metadata", {}).get("ownerReferences") or []:
            self._owned.get(owner.get("uid", ""), set()).discard(ref)
        self._terminating.discard(ref)
        if new is None:
            index.pop(ident, None)
            return
        index[ident] = self._key(rt, ident[0], ident[1])
        for owner in meta.get("ownerReferences") or []:
            self._owned.setdefault(owner.get("uid", ""), set()).add(ref)
        if meta.get("deletionTimestamp"):
            self._terminating.add(ref)

    def _present(self, rt: ResourceType, obj: JsonDict) -> JsonDict:
        """The object as served under the requested version."""
        if obj.get("apiVersion") == rt.api_version:
            return obj
        return dict(obj, apiVersion=rt.api_version)

    def _list(self, rt: ResourceType, ns: str | None, params: Mapping[str, str]) -> JsonDict:
        labels = selectors.parse_label_selector(params.get("labelSelector"))
        fields = selectors.parse_field_selector(params.get("fieldSelector"))
        items = [
            self._present(rt, obj)
            for obj in self._iter_objects(rt, ns)
            if labels(obj.get("metadata", {}).get("labels") or {}) and fields(obj)
        ]
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    # -- watching ---------------------------------------------------------------------------

    async def _watch(
        self, request: rendering.Request, rt: ResourceType
    ) -> aiohttp.web.StreamResponse:
        params = request.params
        field_selector = params.get("fieldSelector") or ""
        if request.name:  # the deprecated /namespaces/ns/pods/NAME?watch=true form
            field_selector = ",".join(
                filter(None, [field_selector, f"metadata.name={request.name}"])
            )
        watcher = Watcher(
            key=rt.storage_key,
            namespace=request.namespace if rt.namespaced else None,
            labels=selectors.parse_label_selector(params.get("labelSelector")),
            fields=selectors.parse_field_selector(field_selector),
            queue=asyncio.Queue(),
        )
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        since = params.get("resourceVersion") or ""

        # Snapshot and subscribe with no await in between: no event can slip through.
        initial: list[JsonDict] = []
        if since in ("", "0"):
            initial = [
                {"type": "ADDED", "object": self._present(rt, o)}
                for o in self._iter_objects(rt, watcher.namespace)
                if watcher.matches(o)
            ]
        else:
            try:
                since_rv = int(since)
            except ValueError as e:
                raise ApiError(400, "BadRequest", f"invalid resource version: {since}") from e
            oldest = self._log[0][0] if self._log else self._rv + 1
            if len(self._log) == self._log.maxlen and since_rv < oldest - 1:
                initial = [
                    {
                        "type": "ERROR",
                        "object": ApiError(
                            410, "Expired", f"too old resource version: {since_rv} ({oldest - 1})"
                        ).status(),
                    }
                ]
            else:
                for rv, key, old, new in self._log:
                    if rv > since_rv and key == watcher.key:
                        event = self._event_for(watcher, old, new)
                        if event is not None:
                            initial.append(event)
        self._watchers.add(watcher)

        assert request._raw_request is not None
        response = aiohttp.web.StreamResponse(
            status=200, headers={"Content-Type": "application/json", "Cache-Control": "no-cache"}
        )
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            await response.prepare(request._raw_request)
            for event in initial:
                await self._write_event(response, rt, event)
            if initial and initial[-1]["type"] == "ERROR":
                return response
            while True:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    event_or_none = await asyncio.wait_for(watcher.queue.get(), remaining)
                except TimeoutError:
                    break
                if event_or_none is None:  # the server closes this stream
                    break
                await self._write_event(response, rt, event_or_none)
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._watchers.discard(watcher)
        return response

    async def _write_event(
        self, response: aiohttp.web.StreamResponse, rt: ResourceType, event: JsonDict
    ) -> None:
        if event["type"] != "ERROR":
            event = dict(event, object=self._present(rt, event["object"]))
        await response.write(json.dumps(event).encode() + b"\n")

    @staticmethod
    def _event_for(watcher: Watcher, old: JsonDict | None, new: JsonDict | None) -> JsonDict | None:
        was, now = watcher.matches(old), watcher.matches(new)
        if new is None:  # removed: old carries the final state
            return {"type": "DELETED", "object": old} if was else None
        if was and now:
            return {"type": "MODIFIED", "object": new}
        if now:
            return {"type": "ADDED", "object": new}
        if was:  # stopped matching the selector
            return {"type": "DELETED", "object": new}
        return None

    def _emit(self, rt: ResourceType, old: JsonDict | None, new: JsonDict | None) -> None:
        self._log.append((self._rv, rt.storage_key, old, new))
        for watcher in list(self._watchers):
            if watcher.key == rt.storage_key:
                event = self._event_for(watcher, old, new)
                if event is not None:
                    watcher.queue.put_nowait(event)

    def close_watches(self) -> int:
        """End every open watch stream, as an API server does on restart or timeout."""
        count = len(self._watchers)
        for watcher in list(self._watchers):
            watcher.queue.put_nowait(None)
        return count

    # -- storing ----------------------------------------------------------------------------

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _store_new(self, rt: ResourceType, obj: JsonDict) -> JsonDict:
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now_iso())
        meta["resourceVersion"] = self._next_rv()
        if rt.group or rt.plural not in ("namespaces", "events"):
            meta.setdefault("generation", 1)
        key = self._key(rt, meta.get("namespace"), meta["name"])
        if key in self._objects:
            self._objects[key].create(obj)
            self._trim(key)
        else:
            self._objects[key] = obj
        self._uids[meta["uid"]] = (rt, key[1], key[2])
        self._reindex(rt, None, obj)
        self._emit(rt, None, obj)
        return obj

    def _store_update(self, rt: ResourceType, old: JsonDict, new: JsonDict) -> JsonDict:
        new["metadata"]["resourceVersion"] = self._next_rv()
        key = self._key(rt, new["metadata"].get("namespace"), new["metadata"]["name"])
        self._objects[key].history.append(new)
        self._trim(key)
        self._reindex(rt, old, new)
        self._emit(rt, old, new)
        return new

    def _trim(self, key: tuple[references.resource, str | None, str]) -> None:
        history = self._objects[key].history
        if len(history) > HISTORY_DEPTH:
            del history[: len(history) - HISTORY_DEPTH]

    def _store_remove(self, rt: ResourceType, obj: JsonDict) -> JsonDict:
        final = copy.deepcopy(obj)
        final["metadata"]["resourceVersion"] = self._next_rv()
        key = self._key(rt, final["metadata"].get("namespace"), final["metadata"]["name"])
        self._objects[key].history.append(final)
        self._objects[key].delete()
        self._trim(key)
        self._uids.pop(final["metadata"].get("uid", ""), None)
        self._reindex(rt, obj, None)
        self._emit(rt, final, None)
        self._after_removal(rt, final)
        return final

    # -- creating ---------------------------------------------------------------------------

    def _check_namespace(self, rt: ResourceType, ns: str | None, name: str) -> None:
        if not rt.namespaced or ns is None:
            return
        ns_obj = self._get(self._types[("", "v1", "namespaces")], None, ns)
        if ns_obj is None and self.strict_namespaces:
            raise ApiError(
                404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"}
            )
        if ns_obj is not None and ns_obj["metadata"].get("deletionTimestamp"):
            raise ApiError(
                403,
                "Forbidden",
                f'{rt.qualified_resource} "{name}" is forbidden: unable to create new content in '
                f"namespace {ns} because it is being terminated",
                {"name": name, "group": rt.group, "kind": rt.plural},
            )

    def _invalid(self, rt: ResourceType, name: str, errors: list[schema.FieldError]) -> ApiError:
        text = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(map(str, errors)) + "]"
        return ApiError(
            422,
            "Invalid",
            f'{rt.qualified_kind} "{name}" is invalid: {text}',
            {
                "name": name,
                "group": rt.group,
                "kind": rt.kind,
                "causes": [
                    {"reason": e.reason, "message": e.body, "field": e.path} for e in errors
                ],
            },
        )

    def _normalise(self, rt: ResourceType, ns: str | None, body: Any) -> JsonDict:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request must be a JSON object")
        obj = copy.deepcopy(body)
        if obj.get("kind") not in (None, rt.kind) or obj.get("apiVersion") not in (
            None,
            rt.api_version,
        ):
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({obj.get('apiVersion')}) does not match "
                f"the expected API version ({rt.api_version})"
                if obj.get("kind") == rt.kind
                else f"Object kind {obj.get('kind')!r} does not match resource {rt.plural}",
            )
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        if rt.namespaced:
            if meta.get("namespace") not in (None, "", ns) and ns is not None:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not "
                    "match the namespace sent on the request",
                )
            meta["namespace"] = ns or meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        return obj

    def _create(
        self,
        rt: ResourceType,
        ns: str | None,
        body: Any,
        *,
        dry_run: bool = False,
        field_validation: str | None = None,
    ) -> tuple[JsonDict, list[str]]:
        if rt.namespaced and ns is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        obj = self._normalise(rt, ns, body)
        meta = obj["metadata"]
        for server_field in (
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "generation",
            "deletionGracePeriodSeconds",
            "managedFields",
        ):
            meta.pop(server_field, None)
        if not meta.get("name") and meta.get("generateName"):
            suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
            meta["name"] = meta["generateName"] + suffix
        name = meta.get("name") or ""
        if not name:
            raise self._invalid(
                rt,
                "",
                [
                    schema.FieldError(
                        "Required", "metadata.name", detail="name or generateName is required"
                    )
                ],
            )
        if not _DNS1123_SUBDOMAIN.match(name) or len(name) > 253:
            raise self._invalid(
                rt,
                name,
                [
                    schema.FieldError(
                        "Invalid",
                        "metadata.name",
                        name,
                        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                        "characters, '-' or '.', and must start and end with an alphanumeric "
                        "character",
                    )
                ],
            )
        self._check_namespace(rt, meta.get("namespace"), name)
        existing = self._get(rt, meta.get("namespace"), name)
        if existing is not None:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{rt.qualified_resource} "{name}" already exists',
                {"name": name, "group": rt.group, "kind": rt.plural},
            )
        meta["uid"] = str(uuid.uuid4())
        warnings = self._admit(rt, obj, None, field_validation)
        if dry_run:
            return obj, warnings
        stored = self._store_new(rt, obj)
        self._after_write(rt, None, stored)
        return stored, warnings

    def _admit(
        self,
        rt: ResourceType,
        obj: JsonDict,
        old: JsonDict | None,
        field_validation: str | None,
    ) -> list[str]:
        """Defaulting and validation (the API server's strategies); returns warnings."""
        name = obj["metadata"]["name"]
        warnings: list[str] = []
        if rt.schema is not None:
            pruned, errors = schema.process_custom_resource(obj, rt.schema, old)
            if pruned and field_validation == "Strict":
                raise ApiError(
                    400,
                    "BadRequest",
                    "strict decoding error: " + ", ".join(f'unknown field "{p}"' for p in pruned),
                )
            if field_validation != "Ignore":
                warnings += [f'unknown field "{p}"' for p in pruned]
            if errors:
                raise self._invalid(rt, name, errors)
        elif rt.storage_key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._admit_crd(rt, obj)
        elif old is None:
            self._default_builtin(rt, obj)
        return warnings

    def _default_builtin(self, rt: ResourceType, obj: JsonDict) -> None:
        meta = obj["metadata"]
        if rt.storage_key == ("", "secrets"):
            data = dict(obj.get("data") or {})
            for key, value in (obj.pop("stringData", None) or {}).items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            if data:
                obj["data"] = data
            obj.setdefault("type", "Opaque")
        elif rt.storage_key == ("", "namespaces"):
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["status"] = {"phase": "Active"}
        elif rt.storage_key == ("", "pods"):
            self._default_pod_spec(obj.setdefault("spec", {}))
            obj.setdefault("status", {"phase": "Pending"})
        elif rt.storage_key == ("batch", "jobs"):
            spec = obj.setdefault("spec", {})
            uid, name = meta["uid"], meta["name"]
            template = spec.setdefault("template", {})
            labels = template.setdefault("metadata", {}).setdefault("labels", {})
            if not spec.get("manualSelector"):
                labels.update(
                    {
                        "batch.kubernetes.io/controller-uid": uid,
                        "controller-uid": uid,
                        "batch.kubernetes.io/job-name": name,
                        "job-name": name,
                    }
                )
                spec.setdefault(
                    "selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
                )
            for key, value in (
                ("backoffLimit", 6),
                ("completions", 1),
                ("parallelism", 1),
                ("completionMode", "NonIndexed"),
                ("suspend", False),
                ("podReplacementPolicy", "TerminatingOrFailed"),
            ):
                spec.setdefault(key, value)
            pod_spec = template.setdefault("spec", {})
            self._default_pod_spec(pod_spec)
            errors: list[schema.FieldError] = []
            if pod_spec.get("restartPolicy") not in ("Never", "OnFailure"):
                errors.append(
                    schema.FieldError(
                        "Required" if not pod_spec.get("restartPolicy") else "NotSupported",
                        "spec.template.spec.restartPolicy",
                        pod_spec.get("restartPolicy"),
                        'supported values: "OnFailure", "Never"',
                    )
                )
            if not pod_spec.get("containers"):
                errors.append(schema.FieldError("Required", "spec.template.spec.containers"))
            for i, container in enumerate(pod_spec.get("containers") or []):
                for req in ("name", "image"):
                    if not container.get(req):
                        errors.append(
                            schema.FieldError(
                                "Required", f"spec.template.spec.containers[{i}].{req}"
                            )
                        )
            if errors:
                raise self._invalid(rt, name, errors)

    @staticmethod
    def _default_pod_spec(pod_spec: JsonDict) -> None:
        for container in pod_spec.get("containers") or []:
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            container.setdefault("imagePullPolicy", "IfNotPresent")
        pod_spec.setdefault("restartPolicy", "Always")
        pod_spec.setdefault("dnsPolicy", "ClusterFirst")
        pod_spec.setdefault("terminationGracePeriodSeconds", 30)
        pod_spec.setdefault("schedulerName", "default-scheduler")

    # -- CRDs -------------------------------------------------------------------------------

    def _admit_crd(self, rt: ResourceType, crd: JsonDict) -> None:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        name = crd["metadata"]["name"]
        errors: list[schema.FieldError] = []
        if not spec.get("group"):
            errors.append(schema.FieldError("Required", "spec.group"))
        if not names.get("plural"):
            errors.append(schema.FieldError("Required", "spec.names.plural"))
        if not names.get("kind"):
            errors.append(schema.FieldError("Required", "spec.names.kind"))
        if spec.get("scope") not in ("Namespaced", "Cluster"):
            errors.append(
                schema.FieldError(
                    "NotSupported",
                    "spec.scope",
                    spec.get("scope"),
                    'supported values: "Cluster", "Namespaced"',
                )
            )
        if (
            names.get("plural")
            and spec.get("group")
            and name != f"{names['plural']}.{spec['group']}"
        ):
            errors.append(
                schema.FieldError(
                    "Invalid", "metadata.name", name, 'must be spec.names.plural+"."+spec.group'
                )
            )
        versions = spec.get("versions") or []
        if not versions:
            errors.append(schema.FieldError("Required", "spec.versions"))
        if sum(bool(v.get("storage")) for v in versions) != 1 and versions:
            errors.append(
                schema.FieldError(
                    "Invalid",
                    "spec.versions",
                    versions,
                    "must have exactly one version marked as storage version",
                )
            )
        for i, version in enumerate(versions):
            s = (version.get("schema") or {}).get("openAPIV3Schema")
            if s is None:
                errors.append(
                    schema.FieldError(
                        "Required",
                        f"spec.versions[{i}].schema.openAPIV3Schema",
                        detail="schemas are required",
                    )
                )
            else:
                errors += [
                    schema.FieldError(
                        e.kind, f"spec.versions[{i}].schema.{e.path}", e.value, e.detail
                    )
                    for e in schema.check_cel_rules(s)
                ]
        if errors:
            raise self._invalid(rt, name, errors)
        crd["status"] = {
            "acceptedNames": {k: v for k, v in names.items()},
            "conditions": [
                {
                    "type": t,
                    "status": "True",
                    "reason": r,
                    "message": m,
                    "lastTransitionTime": now_iso(),
                }
                for t, r, m in (
                    ("NamesAccepted", "NoConflicts", "no conflicts found"),
                    ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
                )
            ],
            "storedVersions": [v["name"] for v in versions if v.get("storage")],
        }
        finalizers = crd["metadata"].setdefault("finalizers", [])
        if CRD_CLEANUP_FINALIZER not in finalizers:
            finalizers.append(CRD_CLEANUP_FINALIZER)

    def _sync_crd(self, crd: JsonDict) -> None:
        spec = crd["spec"]
        names = spec["names"]
        group = spec["group"]
        self._unregister(group, names["plural"])
        versions = sorted(spec["versions"], key=lambda v: not v.get("storage"))
        storage = versions[0]["name"]
        for version in versions:
            if not version.get("served", True):
                continue
            subs = set((version.get("subresources") or {}).keys())
            self._register(
                ResourceType(
                    group=group,
                    version=version["name"],
                    plural=names["plural"],
                    kind=names["kind"],
                    namespaced=spec["scope"] == "Namespaced",
                    singular=names.get("singular") or names["kind"].lower(),
                    short_names=list(names.get("shortNames") or []),
                    categories=list(names.get("categories") or []),
                    subresources=subs,
                    storage_version=storage,
                    schema=(version.get("schema") or {}).get("openAPIV3Schema"),
                    printer_columns=list(version.get("additionalPrinterColumns") or []),
                    crd_name=crd["metadata"]["name"],
                )
            )

    # -- updating ---------------------------------------------------------------------------

    def _replace(
        self,
        rt: ResourceType,
        ns: str | None,
        name: str,
        body: Any,
        sub: str | None,
        params: Mapping[str, str],
    ) -> tuple[JsonDict, list[str]]:
        old = self._get_or_404(rt, ns, name)
        new = self._normalise(rt, ns, body)
        if new["metadata"].get("name") not in (None, name):
            raise ApiError(
                400,
                "BadRequest",
                f"the name of the object ({new['metadata'].get('name')}) "
                f"does not match the name on the URL ({name})",
            )
        rv = new["metadata"].get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise self._conflict(rt, name)
        if not rv and rt.schema is not None:
            raise self._invalid(
                rt,
                name,
                [
                    schema.FieldError(
                        "Invalid", "metadata.resourceVersion", 0, "must be specified for an update"
                    )
                ],
            )
        return self._update(rt, old, new, sub, params)

    def _conflict(self, rt: ResourceType, name: str) -> ApiError:
        return ApiError(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {rt.qualified_resource} "{name}": the object has '
            "been modified; please apply your changes to the latest version and try again",
            {"name": name, "group": rt.group, "kind": rt.plural},
        )

    def _patch(
        self,
        rt: ResourceType,
        ns: str | None,
        name: str,
        request: rendering.Request,
        sub: str | None,
        params: Mapping[str, str],
    ) -> tuple[JsonDict, list[str]]:
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
        body = self._body(request)
        old = self._get(rt, ns, name)
        if ctype == "application/apply-patch+yaml":  # naive server-side apply: no field ownership
            if old is None:
                return self._create(rt, ns, body, dry_run=self._dry(params))
            new = patching.merge_patch(copy.deepcopy(old), _strip_nulls(body))
            return self._update(rt, old, self._normalise(rt, ns, new), sub, params)
        if old is None:
            raise self._not_found(rt, name)
        try:
            if ctype == "application/merge-patch+json":
                new = patching.merge_patch(copy.deepcopy(old), body)
            elif ctype == "application/json-patch+json":
                new = patching.json_patch(old, body)
            elif ctype == "application/strategic-merge-patch+json" and rt.schema is None:
                new = patching.strategic_merge_patch(copy.deepcopy(old), body)
            else:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types "
                    "include: application/json-patch+json, application/merge-patch+json, "
                    "application/apply-patch+yaml"
                    + ("" if rt.schema is not None else ", application/strategic-merge-patch+json"),
                )
        except patching.PatchError as e:
            raise ApiError(422, "Invalid", str(e)) from e
        except (TypeError, AttributeError) as e:
            raise ApiError(422, "Invalid", f"cannot apply the patch: {e}") from e
        if not isinstance(new, dict):
            raise ApiError(422, "Invalid", "the patched object is not an object")
        rv = (new.get("metadata") or {}).get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise self._conflict(rt, name)
        return self._update(rt, old, self._normalise(rt, ns, new), sub, params)

    def _update(
        self,
        rt: ResourceType,
        old: JsonDict,
        new: JsonDict,
        sub: str | None,
        params: Mapping[str, str],
    ) -> tuple[JsonDict, list[str]]:
        old = copy.deepcopy(old)
        name = old["metadata"]["name"]
        if sub == "status":
            candidate = copy.deepcopy(old)
            if "status" in new:
                candidate["status"] = new["status"]
            else:
                candidate.pop("status", None)
            new = candidate
        else:
            meta = new["metadata"]
            for keep in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
                "name",
            ):
                if keep in old["metadata"]:
                    meta[keep] = old["metadata"][keep]
                else:
                    meta.pop(keep, None)
            if "status" in rt.subresources:
                if "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
            if old["metadata"].get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(
                    old["metadata"].get("finalizers") or []
                )
                if added:
                    raise self._invalid(
                        rt,
                        name,
                        [
                            schema.FieldError(
                                "Forbidden",
                                "metadata.finalizers",
                                detail="no new finalizers can be added if the object is being "
                                f"deleted, found new finalizers {json.dumps(sorted(added))}",
                            )
                        ],
                    )
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        warnings = self._admit(rt, new, old, params.get("fieldValidation"))
        if _meta_without_rv(new) == _meta_without_rv(old):
            return old, warnings  # a no-op write: no new resourceVersion, no event
        if "generation" in old["metadata"] and self._spec_changed(rt, old, new):
            new["metadata"]["generation"] = old["metadata"]["generation"] + 1
        if self._dry(params):
            return new, warnings
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            stored = self._store_update(rt, old, new)
            return self._store_remove(rt, stored), warnings
        stored = self._store_update(rt, old, new)
        self._after_write(rt, old, stored)
        return stored, warnings

    @staticmethod
    def _spec_changed(rt: ResourceType, old: JsonDict, new: JsonDict) -> bool:
        if rt.schema is not None or rt.crd_name is not None:
            skip = ("metadata", "status") if "status" in rt.subresources else ("metadata",)
            return _strip(old, *skip) != _strip(new, *skip)
        return old.get("spec") != new.get("spec")

    def _after_write(self, rt: ResourceType, old: JsonDict | None, new: JsonDict) -> None:
        crd = rt.storage_key == ("apiextensions.k8s.io", "customresourcedefinitions")
        if crd and not new["metadata"].get("deletionTimestamp"):
            self._sync_crd(new)
        if old is None and new["metadata"].get("ownerReferences"):
            asyncio.get_running_loop().call_soon(self._collect_orphan, rt, new["metadata"]["uid"])

    # -- deleting ---------------------------------------------------------------------------

    def _delete(
        self,
        rt: ResourceType,
        ns: str | None,
        name: str,
        options: JsonDict,
        params: Mapping[str, str],
    ) -> JsonDict:
        obj = self._get_or_404(rt, ns, name)
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != obj["metadata"]["uid"]:
            raise ApiError(
                409,
                "Conflict",
                f"Precondition failed: UID in precondition: {pre['uid']}, "
                f"UID in object meta: {obj['metadata']['uid']}",
            )
        if (
            pre.get("resourceVersion")
            and pre["resourceVersion"] != obj["metadata"]["resourceVersion"]
        ):
            raise self._conflict(rt, name)
        policy = params.get("propagationPolicy") or options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is not None:
            policy = "Orphan" if options["orphanDependents"] else "Background"
        if policy is None:  # the per-resource default (batch/v1 Jobs keep their pods)
            policy = "Orphan" if rt.storage_key == ("batch", "jobs") else "Background"
        if self._dry(params):
            return obj
        return self._delete_object(rt, obj, policy)

    def _delete_object(
        self, rt: ResourceType, obj: JsonDict, policy: str = "Background"
    ) -> JsonDict:
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if policy == "Orphan" and self._dependents(meta["uid"]):
            finalizers.append("orphan")
        elif policy == "Foreground" and self._dependents(meta["uid"]):
            finalizers.append("foregroundDeletion")
        if rt.storage_key == ("", "namespaces"):
            finalizers.append("kubernetes")  # spec.finalizers in reality; content goes first
        if meta.get("deletionTimestamp"):
            return obj  # already being deleted
        if not finalizers:
            return self._store_remove(rt, obj)
        new = copy.deepcopy(obj)
        new["metadata"]["deletionTimestamp"] = now_iso()
        new["metadata"]["deletionGracePeriodSeconds"] = 0
        new["metadata"]["finalizers"] = list(
            dict.fromkeys(
                (meta.get("finalizers") or [])
                + [f for f in finalizers if f in ("orphan", "foregroundDeletion")]
            )
        )
        if rt.storage_key == ("", "namespaces"):
            new["status"] = {"phase": "Terminating"}
        stored = self._store_update(rt, obj, new)
        if rt.storage_key == ("", "namespaces"):
            for other in list(self._types.values()):
                if other.namespaced and other.version == other.storage_version:
                    for child in list(self._iter_objects(other, meta["name"])):
                        self._delete_object(other, child)
        if rt.storage_key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            spec = obj["spec"]
            for other in [
                t
                for t in self._types.values()
                if t.storage_key == (spec["group"], spec["names"]["plural"])
                and t.version == t.storage_version
            ]:
                for child in list(self._iter_objects(other)):
                    self._delete_object(other, child)
        if "foregroundDeletion" in new["metadata"]["finalizers"]:
            for dep_rt, dep in self._dependents(meta["uid"]):
                self._delete_object(dep_rt, dep, "Background")
        if "orphan" in new["metadata"]["finalizers"]:
            for dep_rt, dep in self._dependents(meta["uid"]):
                patched = copy.deepcopy(dep)
                patched["metadata"]["ownerReferences"] = [
                    r
                    for r in dep["metadata"].get("ownerReferences") or []
                    if r.get("uid") != meta["uid"]
                ]
                self._store_update(dep_rt, dep, patched)
        self._reconcile_system_finalizers()
        return self._get(rt, meta.get("namespace"), meta["name"]) or stored

    def _delete_collection(
        self, rt: ResourceType, ns: str | None, params: Mapping[str, str]
    ) -> JsonDict:
        listing = self._list(rt, ns, params)
        for obj in listing["items"]:
            self._delete_object(rt, obj, params.get("propagationPolicy") or "Background")
        return listing

    def _dependents(self, uid: str) -> list[tuple[ResourceType, JsonDict]]:
        result = []
        for storage_key, ns, name in sorted(self._owned.get(uid, ()), key=str):
            rt = self._type_for(storage_key)
            obj = None if rt is None else self._get(rt, ns, name)
            if rt is not None and obj is not None:
                result.append((rt, obj))
        return result

    def _after_removal(self, rt: ResourceType, obj: JsonDict) -> None:
        """Garbage collection: dependents whose owners are all gone go too."""
        if rt.storage_key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._unregister(obj["spec"]["group"], obj["spec"]["names"]["plural"])
        uid = obj["metadata"]["uid"]
        for dep_rt, dep in self._dependents(uid):
            owners = [r.get("uid") for r in dep["metadata"].get("ownerReferences") or []]
            if not any(o in self._uids for o in owners if o != uid):
                current = self._get(
                    dep_rt, dep["metadata"].get("namespace"), dep["metadata"]["name"]
                )
                if current is not None:
                    self._delete_object(dep_rt, current, "Background")
        self._reconcile_system_finalizers()

    def _collect_orphan(self, rt: ResourceType, uid: str) -> None:
        """A dependent created with owners that do not exist is garbage-collected."""
        where = self._uids.get(uid)
        if where is None:
            return
        obj = self._get(rt, where[1], where[2])
        refs = (obj or {}).get("metadata", {}).get("ownerReferences") or []
        if obj is not None and refs and not any(r.get("uid") in self._uids for r in refs):
            self._delete_object(rt, obj, "Background")

    def _namespace_empty(self, namespace: str) -> bool:
        return not any(ns == namespace for index in self._index.values() for ns, _ in index)

    def _reconcile_system_finalizers(self) -> None:
        """Finish namespaces, CRDs, foreground and orphan deletions whose work is done."""
        for _ in range(100):  # bounded: each pass removes at least one finalizer or stops
            changed = False
            for storage_key, ns, name in sorted(self._terminating, key=str):
                rt = self._type_for(storage_key)
                obj = None if rt is None else self._get(rt, ns, name)
                if rt is None or obj is None:
                    continue
                meta = obj["metadata"]
                done = set()
                fins = meta.get("finalizers") or []
                if "foregroundDeletion" in fins and not self._dependents(meta["uid"]):
                    done.add("foregroundDeletion")
                if "orphan" in fins and not self._dependents(meta["uid"]):
                    done.add("orphan")
                if CRD_CLEANUP_FINALIZER in fins and rt.storage_key == (
                    "apiextensions.k8s.io",
                    "customresourcedefinitions",
                ):
                    spec = obj["spec"]
                    types = [
                        t
                        for t in self._types.values()
                        if t.storage_key == (spec["group"], spec["names"]["plural"])
                    ]
                    if not types or not any(True for _ in self._iter_objects(types[0])):
                        done.add(CRD_CLEANUP_FINALIZER)
                remaining = [f for f in fins if f not in done]
                if (
                    rt.storage_key == ("", "namespaces")
                    and not remaining
                    and self._namespace_empty(meta["name"])
                ):
                    self._store_remove(rt, obj)
                    changed = True
                    continue
                if done:
                    new = copy.deepcopy(obj)
                    new["metadata"]["finalizers"] = remaining
                    stored = self._store_update(rt, obj, new)
                    if not remaining and rt.storage_key != ("", "namespaces"):
                        self._store_remove(rt, stored)
                    changed = True
            if not changed:
                return

    # -- discovery (kmock's core group says groupVersion "/v1") --------------------------------

    def _get_resources(self) -> list[references.resource]:
        return [references.resource(t.group, t.version, t.plural) for t in self._types.values()]

    async def _serve_api(self, request: rendering.Request) -> rendering.Payload:
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}
            ],
        }

    def _groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for t in self._types.values():
            if t.group and t.version not in groups.setdefault(t.group, []):
                groups[t.group].append(t.version)
        for group, versions in groups.items():  # the storage version is preferred
            storage = [t.storage_version for t in self._types.values() if t.group == group]
            versions.sort(key=lambda v: v != (storage[0] if storage else v))
        return groups

    def _group_doc(self, group: str, versions: list[str]) -> JsonDict:
        return {
            "name": group,
            "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
            "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
        }

    async def _serve_apis(self, request: rendering.Request) -> rendering.Payload:
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [self._group_doc(g, v) for g, v in self._groups().items()],
        }

    async def _serve_group(self, request: rendering.Request) -> rendering.Payload:
        assert request.resource is not None
        groups = self._groups()
        if request.resource.group not in groups:
            raise kmock.KubernetesResourceNotFoundError()
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            **self._group_doc(request.resource.group or "", groups[request.resource.group or ""]),
        }

    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        assert request.resource is not None
        group, version = request.resource.group or "", request.resource.version
        types = [t for t in self._types.values() if t.group == group and t.version == version]
        if not types:
            raise kmock.KubernetesResourceNotFoundError()
        resources = []
        for t in sorted(types, key=lambda t: t.plural):
            resources.append(
                {
                    "name": t.plural,
                    "singularName": t.singular,
                    "namespaced": t.namespaced,
                    "kind": t.kind,
                    "verbs": t.verbs,
                    "shortNames": t.short_names,
                    "categories": t.categories,
                }
            )
            for sub in sorted(t.subresources):
                resources.append(
                    {
                        "name": f"{t.plural}/{sub}",
                        "singularName": "",
                        "namespaced": t.namespaced,
                        "kind": "Scale" if sub == "scale" else t.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    async def _serve_server_version(self, request: rendering.Request) -> rendering.Payload:
        return {
            "major": "1",
            "minor": "31",
            "gitVersion": "v1.31.0-emulated",
            "gitCommit": "0" * 40,
            "gitTreeState": "clean",
            "buildDate": "2024-08-13T00:00:00Z",
            "goVersion": "go1.22",
            "compiler": "gc",
            "platform": "linux/amd64",
        }


def jsonpath(obj: Any, path: str) -> Any:
    """The JSONPath subset printer columns use: ``.a.b``, ``[0]``, ``['k']``, ``[?(@.t=="x")]``."""
    tokens = re.findall(
        r"\.([A-Za-z0-9_-]+)|\[(\d+)\]|\['([^']+)'\]|\[\?\(@\.(\w+)==[\"']([^\"']*)[\"']\)\]",
        path.strip("{}"),
    )
    value = obj
    for key, index, quoted, filter_key, filter_value in tokens:
        if value is None:
            return None
        if key or quoted:
            value = value.get(key or quoted) if isinstance(value, dict) else None
        elif index:
            value = (
                value[int(index)] if isinstance(value, list) and len(value) > int(index) else None
            )
        else:
            matches = (
                [
                    v
                    for v in value or []
                    if isinstance(v, dict) and str(v.get(filter_key)) == filter_value
                ]
                if isinstance(value, list)
                else []
            )
            value = matches[0] if matches else None
    return value


def human_age(timestamp: str) -> str:
    """Kubernetes' HumanDuration of the time since ``timestamp`` (what ``kubectl get`` shows)."""
    try:
        then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return timestamp
    seconds = max(0, int((datetime.datetime.now(tz=datetime.UTC) - then).total_seconds()))
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y{days % 365}d" if days < 365 * 8 else f"{days // 365}y"


def _strip_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_nulls(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# Running it: a background thread with its own event loop, and a synchronous client.


def write_kubeconfig(path: Path, url: str, namespace: str = "default") -> Path:
    """Write a kubeconfig for an emulator at ``url`` (no TLS, a dummy token)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": "emulator", "cluster": {"server": url}}],
        "users": [{"name": "emulator", "user": {"token": "emulator-token"}}],
        "contexts": [
            {
                "name": "emulator",
                "context": {"cluster": "emulator", "user": "emulator", "namespace": namespace},
            }
        ],
        "current-context": "emulator",
    }
    path.write_text(yaml.safe_dump(config))
    return path


class EmulatorThread:
    """Serve a :class:`KubeEmulator` on 127.0.0.1 from a daemon thread with its own loop."""

    def __init__(self, emulator: KubeEmulator | None = None, port: int = 0) -> None:
        self.emulator = emulator
        self._port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="k8s-emulator", daemon=True
        )
        self._runner: aiohttp.web.ServerRunner | None = None
        self.url = ""

    def start(self, timeout: float = 10.0) -> EmulatorThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout)
        return self

    async def _start(self) -> None:
        if self.emulator is None:
            self.emulator = KubeEmulator()
        await self.emulator.__aenter__()
        server = aiohttp.web.Server(self.emulator)
        self._runner = aiohttp.web.ServerRunner(server, shutdown_timeout=1.0)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, "127.0.0.1", self._port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run ``fn`` on the server's loop (the store is not thread-safe)."""

        async def wrapper() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(timeout)

    def close_watches(self) -> int:
        assert self.emulator is not None
        return int(self.call(self.emulator.close_watches))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop within ``timeout``: end watches first (they block aiohttp's graceful shutdown)."""
        if not self._thread.is_alive():
            return

        async def _stop() -> None:
            assert self.emulator is not None
            self.emulator.close_watches()
            await asyncio.sleep(0)
            if self._runner is not None:
                await asyncio.wait_for(self._runner.cleanup(), timeout / 2)
            await self.emulator.__aexit__(None, None, None)

        try:
            asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(timeout)
        except Exception:  # a bounded stop: leftovers die with the loop
            pass
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self._loop.close()
