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
* ``pods/log`` serves the output the kubelet stand-in captured (``kubectl logs job/x``);
* at most :data:`FAIRNESS` requests are served per turn of its event loop, Leases and
  watches exempt (a small API Priority and Fairness: leader election is not starved by
  bulk traffic).

Server-side Table output (``kubectl get``) uses a CRD's ``additionalPrinterColumns``.

Authentication and RBAC (:mod:`.rbac`): bearer tokens map to users; with
``auth.enforce`` on, non-admin requests are authorized against the stored RBAC objects and
OwnerReferencesPermissionEnforcement runs in admission. PodSecurity admission
(:mod:`.pod_security`) refuses pods that break their namespace's enforced level.

Not emulated: admission webhooks, protobuf bodies (``kubectl create job`` /
``create secret``), Table output of built-in kinds (kubectl prints NAME/AGE), pagination
(``limit``/``continue`` are ignored), watch bookmarks, field ownership of server-side apply,
pod graceful termination (pods go away at once), conversion webhooks, built-in schemas.

This module is the HTTP front and the entry point: it routes a resource request to the verbs
(:mod:`.object_api`, :mod:`.deletion`), streams watches (:mod:`.watches`), renders JSON,
``Status`` and ``Table`` bodies, and composes the parts in :class:`KubeEmulator`. The public
names other test modules import (``KubeEmulator``, ``EmulatorThread``, ``write_kubeconfig``,
``ApiError``, ``jsonpath``, ``human_age``, ...) are importable from here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import orjson

from . import builtin_kinds, printing, selectors
from .admission import Admission, custom_resource_schema
from .crds import CRD_CLEANUP_FINALIZER, CrdController
from .deletion import Deleter
from .discovery import Discovery
from .emulator_thread import EmulatorThread, write_kubeconfig
from .errors import ApiError, JsonDict, no_such_resource
from .gate import Gate
from .http_request import HttpRequest, Parsed, parse_path
from .kmock_compat import KmockFront
from .kube_controllers import KubeControllers
from .object_api import ObjectApi
from .object_store import HISTORY_DEPTH, ObjectStore
from .partition import Partitions, bearer
from .pod_security import pod_security_check
from .printing import human_age, jsonpath
from .rbac import Attributes, Authenticator, current_user, owner_references_check, verb_of
from .resources import CRD_VERBS, PODS, ResourceRegistry, ResourceType, now_iso
from .watches import WATCH_LOG_SIZE, Inbox, Watcher, WatchHub

__all__ = [
    "CORE_NAMESPACES",
    "CRD_CLEANUP_FINALIZER",
    "CRD_VERBS",
    "HISTORY_DEPTH",
    "WATCH_LOG_SIZE",
    "ApiError",
    "EmulatorThread",
    "JsonDict",
    "KubeEmulator",
    "Parsed",
    "ResourceType",
    "Watcher",
    "human_age",
    "jsonpath",
    "now_iso",
    "parse_path",
    "write_kubeconfig",
]

CORE_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
#: Requests served per turn of the event loop, as kube-apiserver's API Priority and
#: Fairness limits requests in flight; Leases (leader election) and watches are exempt, as
#: APF's ``leader-election`` and long-running requests are. The emulator serves on one
#: event loop, which runs every request read in one turn before it reads the sockets
#: again: without the limit, a Lease renewal waits behind all of them (hundreds from four
#: controllers at start-up, seconds), and a healthy leader misses its renew deadline. A
#: permit is given back on the next turn, so a turn serves at most this many and the
#: sockets are read in between. Throughput is the same; only the order changes.
FAIRNESS = 8
LEASE_GROUP = "coordination.k8s.io"
#: Events a watch stream sends in one write, at most (all that are queued, up to this).
WATCH_BATCH = 500
#: Seconds a watch stream waits after its first queued event for more to join the same
#: write. Under a burst (a cron slot's Jobs) one write per event was a fifth of the
#: emulator's CPU; a client sees an event at most this much later.
WATCH_COALESCE = 0.01


@attrs.define(kw_only=True)
class KubeEmulator(KmockFront):
    """kmock's emulator with kube-apiserver semantics (see the module docstring)."""

    strict_namespaces: bool = True  # creating in a missing namespace answers 404, as for real
    # Folders with "stdout"/"stderr" files per (namespace, pod), filled by the kubelet stand-in.
    pod_logs: dict[tuple[str, str], Path] = attrs.field(factory=dict, init=False)
    registry: ResourceRegistry = attrs.field(init=False)
    watches: WatchHub = attrs.field(init=False)
    store: ObjectStore = attrs.field(init=False)
    admission: Admission = attrs.field(init=False)
    api: ObjectApi = attrs.field(init=False)
    deleter: Deleter = attrs.field(init=False)
    controllers: KubeControllers = attrs.field(init=False)
    auth: Authenticator = attrs.field(init=False)
    # Clients cut off from the server by token (support.kube.partition).
    partitions: Partitions = attrs.field(factory=Partitions, init=False)
    fairness: Gate | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.registry = ResourceRegistry(self.resources)
        self.registry.load_builtins()
        self.discovery = Discovery(self.registry)
        self.watches = WatchHub()
        self.store = ObjectStore(self.objects, self.registry, self.watches)
        crds = CrdController(self.registry, self.store)
        self.auth = Authenticator(self.store, self.registry)
        self.admission = Admission(
            self.store,
            self.registry,
            checks=[
                custom_resource_schema,  # custom resources: prune, default, validate (+ CEL)
                crds.admit,  # CRDs: validate, status, cleanup finalizer
                builtin_kinds.default_and_validate,  # Secret, Namespace, Pod, Job on create
                owner_references_check(self.auth),  # OwnerReferencesPermissionEnforcement
                pod_security_check(self.store, self.registry),  # PodSecurity (enforce label)
            ],
            namespaces_must_exist=lambda: self.strict_namespaces,
        )
        self.api = ObjectApi(self.store, self.admission)
        self.deleter = Deleter(self.store)
        self.controllers = KubeControllers(self.store, self.registry, crds, self.deleter)
        # What the cluster's controllers react to (see kube_controllers).
        self.api.on_written.append(self.controllers.after_write)
        self.deleter.on_terminating.append(self.controllers.on_terminating)
        self.store.on_removed.append(self.controllers.after_removal)

        ns_type = self.registry.get("", "v1", "namespaces")
        for name in CORE_NAMESPACES:
            self.store.create(
                ns_type,
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": name},
                    "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"},
                },
            )

    def close_watches(self) -> int:
        """End every open watch stream, as an API server does on restart or timeout."""
        return self.watches.close_all()

    def resource_type(self, group: str, version: str, plural: str) -> ResourceType:
        return self.registry.get(group, version, plural)

    def find_type(self, api_version: str, kind: str) -> ResourceType | None:
        return self.registry.find(api_version, kind)

    # -- the HTTP front of the API ----------------------------------------------------------

    def _fairness(self) -> Gate:
        if self.fairness is None:
            self.fairness = Gate(FAIRNESS)
        return self.fairness

    async def serve_resource(self, http: HttpRequest) -> aiohttp.web.StreamResponse:
        """A resource request: our API semantics; refusals become ``Status`` bodies."""
        reset = None
        try:
            authorization = http.headers.get("Authorization")
            if self.partitions.tokens or self.partitions.create_delay:  # a test cut someone off
                await self.partitions.wait(bearer(authorization))
                await self.partitions.delay(bearer(authorization), http.method)
            reset = current_user.set(self.auth.user(authorization))
            if http.is_watch or http.path.group == LEASE_GROUP:
                return await self._dispatch(http)  # exempt: see FAIRNESS
            fairness = self._fairness()
            await fairness.acquire()
            try:
                return await self._dispatch(http)
            finally:  # on the next turn of the loop: at most FAIRNESS per turn, see there
                fairness.release_soon()
        except ApiError as e:
            return _json(e.code, e.status(), e.headers)
        except (selectors.SelectorError, ValueError) as e:
            return _json(400, ApiError(400, "BadRequest", str(e)).status())
        finally:
            if reset is not None:
                current_user.reset(reset)

    async def _dispatch(self, http: HttpRequest) -> aiohttp.web.StreamResponse:
        p = http.path
        rt = self.registry.get(p.group or "", p.version or "", p.plural or "")
        ns, name, sub = p.namespace, p.name, p.subresource
        method, params = http.method, http.params
        if ns is not None and not rt.namespaced:
            raise no_such_resource()
        if sub is not None and sub not in rt.subresources:
            raise no_such_resource()
        user = current_user.get()
        if self.auth.enforce and not user.admin:
            verb = verb_of(method, name is not None, http.is_watch)
            self.auth.authorize(user, Attributes(verb, rt.group, rt.plural, sub, ns, name))
        if sub == "log" and rt.storage_key == PODS and method == "GET" and name:
            return self._pod_log(ns, name, params)
        if sub not in (None, "status"):
            raise ApiError(405, "MethodNotAllowed", f"subresource {sub} is not emulated", {})

        if http.is_watch:
            return await self._watch(http, rt)
        as_table = "as=Table" in http.headers.get("Accept", "") and rt.crd_name is not None
        validation = params.get("fieldValidation")
        if method == "GET" and name is None:
            listing = self.api.list_objects(
                rt, ns, params.get("labelSelector"), params.get("fieldSelector")
            )
            if as_table:
                return _json(200, self._table(rt, listing["items"], params))
            return _json(200, listing)
        if method == "GET" and name is not None:
            obj = self.api.get(rt, ns, name)
            return _json(200, self._table(rt, [obj], params) if as_table else obj)
        if method == "POST" and name is None:
            obj, warnings = self.api.create(
                rt,
                ns,
                http.decode(),  # decoded for this call alone: stored as it is
                dry_run=http.dry_run,
                field_validation=validation,
                owned=True,
            )
            return _object_json(201, rt, obj, _warning_headers(warnings))
        if method == "PUT" and name is not None:
            obj, warnings = self.api.replace(
                rt, ns, name, http.decode(), sub, dry_run=http.dry_run, field_validation=validation
            )
            return _object_json(200, rt, obj, _warning_headers(warnings))
        if method == "PATCH" and name is not None:
            obj, warnings = self.api.patch(
                rt,
                ns,
                name,
                http.decode(),
                http.content_type,
                sub,
                dry_run=http.dry_run,
                field_validation=validation,
            )
            return _object_json(200, rt, obj, _warning_headers(warnings))
        if method == "DELETE" and name is not None:
            options = http.decode(required=False) or {}
            deleted = self.deleter.delete(
                rt,
                ns,
                name,
                options,
                propagation=params.get("propagationPolicy"),
                dry_run=http.dry_run,
            )
            return _json(200, deleted)
        if method == "DELETE":
            listing = self.api.list_objects(
                rt, ns, params.get("labelSelector"), params.get("fieldSelector")
            )
            self.deleter.delete_each(
                rt, listing["items"], params.get("propagationPolicy") or "Background"
            )
            return _json(200, listing)
        raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method ({method})")

    def _table(
        self, rt: ResourceType, items: list[JsonDict], params: Mapping[str, str]
    ) -> JsonDict:
        return printing.table(rt, items, params, self.store.resource_version)

    def _pod_log(
        self, ns: str | None, name: str, params: Mapping[str, str]
    ) -> aiohttp.web.Response:
        """``pods/log``: the process output the kubelet stand-in captured (stdout, then stderr)."""
        pod = self.store.get_or_404(self.registry.get("", "v1", "pods"), ns, name)
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

    async def _watch(self, http: HttpRequest, rt: ResourceType) -> aiohttp.web.StreamResponse:
        """A watch stream: the initial state or a replay, then live events until it ends."""
        params = http.params
        field_selector = params.get("fieldSelector") or ""
        if http.path.name:  # the deprecated /namespaces/ns/pods/NAME?watch=true form
            field_selector = ",".join(
                filter(None, [field_selector, f"metadata.name={http.path.name}"])
            )
        watcher = Watcher(
            key=rt.storage_key,
            namespace=http.path.namespace if rt.namespaced else None,
            labels=selectors.parse_label_selector(params.get("labelSelector")),
            fields=selectors.parse_field_selector(field_selector),
            queue=Inbox(),
        )
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        since = params.get("resourceVersion") or ""

        # Snapshot and subscribe with no await in between: no event can slip through.
        initial: list[JsonDict] = []
        if since in ("", "0"):
            initial = [
                {"type": "ADDED", "object": rt.present(o)}
                for o in self.store.iter_objects(rt, watcher.namespace)
                if watcher.matches(o)
            ]
        else:
            try:
                since_rv = int(since)
            except ValueError as e:
                raise ApiError(400, "BadRequest", f"invalid resource version: {since}") from e
            initial = self.watches.replay(watcher, since_rv, self.store.resource_version)
        self.watches.subscribe(watcher)

        assert http.raw is not None
        response = aiohttp.web.StreamResponse(
            status=200, headers={"Content-Type": "application/json", "Cache-Control": "no-cache"}
        )
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        token, was_cut = bearer(http.headers.get("Authorization")), False
        try:
            await response.prepare(http.raw)
            for event in initial:
                await _write_event(response, rt, event)
            if initial and initial[-1]["type"] == "ERROR":
                return response
            while True:
                if not await watcher.queue.wait(deadline):
                    break
                if len(watcher.queue.items) < WATCH_BATCH:
                    await asyncio.sleep(WATCH_COALESCE)
                # Everything queued goes out in one write: one event per turn of the loop
                # delayed a busy emulator's streams by seconds (2,000 Jobs: ~10 s).
                pending = watcher.queue.take(WATCH_BATCH)
                batch, ended = [], False
                for event_or_none in pending:
                    if event_or_none is None:  # the server closes this stream
                        ended = True
                        break
                    if self.partitions.cut(token):  # lost on the way to a partitioned client
                        was_cut = True
                        continue
                    if was_cut:  # the partition healed: the client reconnects and re-lists
                        ended = True
                        break
                    batch.append(event_or_none)
                if batch:
                    await _write_events(response, rt, batch)
                if ended:
                    break
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.watches.unsubscribe(watcher)
        return response


#: Non-ASCII characters as UTF-8, not ``\\u`` escapes (the same JSON, a third cheaper).
_JSON = json.JSONEncoder(ensure_ascii=False)


def _dumps(value: Any) -> bytes:
    """JSON of ``value``: orjson (a cron slot's Jobs made encoding a quarter of the
    emulator's CPU), or the standard library for what orjson refuses (an integer over
    64 bits, a key that is not a string)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return _JSON.encode(value).encode()


def _json(code: int, body: Any, headers: Mapping[str, str] | None = None) -> aiohttp.web.Response:
    return _response(code, _dumps(body), headers)


def _response(
    code: int, body: bytes, headers: Mapping[str, str] | None = None
) -> aiohttp.web.Response:
    return aiohttp.web.Response(
        status=code, body=body, content_type="application/json", headers=headers
    )


def _object_json(
    code: int, rt: ResourceType, obj: JsonDict, headers: Mapping[str, str] | None = None
) -> aiohttp.web.Response:
    """A written object as the answer: the same bytes its watch events carry."""
    return _response(code, _encoded(rt, obj), headers)


#: (id of a stored object, apiVersion served) -> (the object, its JSON). A write's answer
#: and its event on every watch that sees it are one serialisation, not one each. Bounded
#: and short-lived (a write's events go out within a few turns of the loop); the entry
#: holds the object, so its id cannot be reused while cached. Stored objects are never
#: changed in place (a write stores a new version).
_ENCODED: dict[tuple[int, str], tuple[JsonDict, bytes]] = {}
ENCODED_MAX = 512


def _encoded(rt: ResourceType, obj: JsonDict) -> bytes:
    key = (id(obj), rt.api_version)
    hit = _ENCODED.get(key)
    if hit is not None and hit[0] is obj:
        return hit[1]
    data = _dumps(rt.present(obj))
    if len(_ENCODED) >= ENCODED_MAX:
        _ENCODED.clear()  # bounded; a plain dict stays safe across emulator threads
    _ENCODED[key] = (obj, data)
    return data


def _warning_headers(warnings: list[str]) -> dict[str, str]:
    if not warnings:
        return {}
    return {"Warning": ", ".join(f'299 - "{w}"' for w in warnings)}


def _event_line(rt: ResourceType, event: JsonDict) -> bytes:
    """One watch event as JSON (``json.dumps`` of ``{"type": ..., "object": ...}``)."""
    if event["type"] == "ERROR":
        return _dumps(event)
    return (
        b'{"type": "'
        + event["type"].encode()
        + b'", "object": '
        + _encoded(rt, event["object"])
        + b"}"
    )


async def _write_event(
    response: aiohttp.web.StreamResponse, rt: ResourceType, event: JsonDict
) -> None:
    await response.write(_event_line(rt, event) + b"\n")


async def _write_events(
    response: aiohttp.web.StreamResponse, rt: ResourceType, events: list[JsonDict]
) -> None:
    await response.write(b"".join(_event_line(rt, e) + b"\n" for e in events))
