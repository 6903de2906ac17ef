"""kmock as the emulator's front door: its server plumbing, DSL, request log and scaffold.

Why: kmock 0.8 gives a lot the tests use and that is not worth rewriting: the aiohttp handler,
the DSL (``emulator["post", kmock.resource("batch", "v1", "jobs")] << 503`` injects faults,
reactions spy on traffic), the log of parsed requests (``emulator.requests``, filtered by
``kmock.action``), the ``objects`` view for assertions, and the scaffold routes (``GET /``,
unknown endpoints). Its request *handling* breaks kopf, kubectl and the ``kubernetes`` client
(see shared/TESTING.md), so :class:`KmockFront` keeps the plumbing and routes each request:

1. reactions a test added with the DSL win (kmock's own fallback reactions are skipped);
2. resource requests go to :meth:`KmockFront.serve_resource` (the emulator's API semantics);
3. anything else (``/``, discovery, unknown paths) goes to kmock's scaffold, whose discovery
   hooks render :attr:`KmockFront.discovery`.

This is the only module that depends on kmock beyond its public names, because kmock has no public
API for these: ``kmock._internal.rendering.StreamingError`` (how a DSL stream reports a failure
after its headers were sent) and ``ReactionMismatchError`` (the package has it but leaves it out of
its ``__all__``, so typed code imports it from where it is defined), the handler's ``_requests`` and
``_payloads`` (the log and the DSL reactions, matched as kmock's own ``RawHandler._handle`` does via
``_source`` and ``_disabled``), ``RawHandler._handle`` itself (the scaffold's routing), and the
scaffold's ``_serve_*``/``_get_resources``/``_render_error`` hooks. A kmock upgrade is checked here.
"""

from __future__ import annotations

import json
import math
import operator
import traceback
from collections.abc import Iterator
from typing import Any

import aiohttp.web
import attrs
import kmock
from kmock._internal.rendering import (  # no public equivalent (see above)
    ReactionMismatchError,
    StreamingError,
)

from .discovery import Discovery
from .http_request import HttpRequest, Parsed, parse_path
from .resources import kmock_resource

_ACTIONS_WITHOUT_NAME = {"GET": kmock.action.LIST, "POST": kmock.action.CREATE}
_ACTIONS_WITH_NAME = {
    "GET": kmock.action.FETCH,
    "PATCH": kmock.action.UPDATE,
    "PUT": kmock.action.UPDATE,
    "DELETE": kmock.action.DELETE,
}


class _Pending:
    """A request in the log whose kmock ``Request`` is not made yet (see :class:`RequestLog`)."""

    __slots__ = ("http", "id", "raw", "request")

    def __init__(self, request_id: int, raw: aiohttp.web.BaseRequest, http: HttpRequest) -> None:
        self.id, self.raw, self.http = request_id, raw, http
        self.request: kmock.Request | None = None

    def materialize(self, make: Any) -> kmock.Request:
        if self.request is None:
            self.request = make(self.id, self.raw, self.http)
        return self.request


class RequestLog(list[Any]):
    """kmock's log of requests (``emulator.requests`` and every DSL view read it), holding
    what is needed to make each kmock ``Request`` and making it when first read: the same
    object every time, as kmock compares requests by identity."""

    make: Any = None  # (id, raw request, HttpRequest) -> kmock.Request, set by the front

    def _real(self, index: int) -> Any:
        item = list.__getitem__(self, index)
        if isinstance(item, _Pending):
            item = item.materialize(self.make)
            list.__setitem__(self, index, item)
        return item

    def __iter__(self) -> Iterator[Any]:
        for index in range(len(self)):
            yield self._real(index)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self._real(i) for i in range(*index.indices(len(self)))]
        return self._real(index)

    def materialize_last(self, make: Any) -> kmock.Request:
        self.make = make
        return self._real(len(self) - 1)  # type: ignore[no-any-return]


@attrs.define(kw_only=True)
class KmockFront(kmock.KubernetesEmulator):
    """kmock's handler with our request parser and routing (see the module docstring)."""

    request_log_limit: int = 20000  # requests kept for assertions (older ones are dropped)
    internal_errors: list[str] = attrs.field(factory=list, init=False)
    discovery: Discovery = attrs.field(init=False)  # set by the subclass
    #: (the payloads, the tests' own reactions among them, best first), for _route
    _user_reactions: tuple[list[Any], list[Any]] | None = attrs.field(default=None, init=False)

    @property
    def requests(self) -> list[kmock.Request]:
        """The requests served so far (kmock's parsed ``Request`` objects), oldest first."""
        return list(self._requests)

    async def serve_resource(self, http: HttpRequest) -> aiohttp.web.StreamResponse:
        """Serve a request for a resource (a path with group, version and plural)."""
        raise NotImplementedError

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """kmock's entry point, with our path parser (kmock's fails on /api/v1/namespaces)."""
        body = await raw_request.read()
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        http = HttpRequest(
            method=raw_request.method.upper(),
            path=parse_path(raw_request.path),
            params=raw_request.query,
            headers=raw_request.headers,
            body=body,
            text=text,
            raw=raw_request,
        )
        log = self._request_log()
        log.make = self._kmock_request
        user_payloads = self._user_payloads()
        # kmock's parsed Request costs more than serving most requests (an event bus, enum
        # guessing, a second JSON parse): it is made when a test reads the log, or at once
        # when the test's own reactions must see it.
        entry = _Pending(len(log), raw_request, http)
        request = entry.materialize(self._kmock_request) if user_payloads else None
        log.append(request if request is not None else entry)
        if len(log) > self.request_log_limit:
            del log[: len(log) // 2]
        try:
            if request is not None:
                return await self._route(request, http, user_payloads)
            return await self._serve(None, http)
        except StreamingError as e:  # a stream broke after its headers were sent
            self.internal_errors.append(repr(e.__cause__))
            return e.args[0]  # type: ignore[no-any-return]
        except Exception as e:
            self.internal_errors.append("".join(traceback.format_exception(e)))
            return await self._render_error(e)

    def _request_log(self) -> RequestLog:
        log = self._requests
        if not isinstance(log, RequestLog):  # once: kmock made a plain list
            log = self._requests = RequestLog(log)
        return log

    def _kmock_request(
        self, request_id: int, raw_request: aiohttp.web.BaseRequest, http: HttpRequest
    ) -> kmock.Request:
        """The request as kmock's DSL and request log see it."""
        try:
            data = json.loads(http.text) if http.text else None
        except ValueError:
            data = None
        p: Parsed = http.path
        action: kmock.action | None = None
        if p.group is not None:
            if http.is_watch:
                action = kmock.action.WATCH
            elif p.name is None and p.plural:
                action = _ACTIONS_WITHOUT_NAME.get(http.method)
            elif p.plural:
                action = _ACTIONS_WITH_NAME.get(http.method)
        resource = None if p.group is None else kmock_resource(p.group, p.version, p.plural)
        return kmock.Request(
            id=request_id,
            raw_request=raw_request,
            url=raw_request.url,
            method=raw_request.method,
            params=dict(http.params),
            headers=dict(http.headers),
            cookies=dict(raw_request.cookies),
            data=data,
            body=http.body,
            text=http.text,
            action=action,
            resource=resource,
            namespace=p.namespace,
            name=p.name,
            subresource=p.subresource,
        )

    async def _route(
        self, request: kmock.Request, http: HttpRequest, payloads: list[Any]
    ) -> aiohttp.web.StreamResponse:
        # 1. Reactions a test added with kmock's DSL win (fault injection, spying).
        for payload in payloads:
            if request in payload._source and not payload._disabled.is_set():
                try:
                    return await payload(request)
                except ReactionMismatchError:
                    payload._disabled.set()
                except NotImplementedError:
                    pass
        return await self._serve(request, http)

    async def _serve(
        self, request: kmock.Request | None, http: HttpRequest
    ) -> aiohttp.web.StreamResponse:
        # 2. Resource requests: our API semantics. 3. Discovery etc.: kmock's scaffold.
        if http.path.group is not None and http.path.plural:
            return await self.serve_resource(http)
        if request is None:
            request = self._request_log().materialize_last(self._kmock_request)
        return await kmock.RawHandler._handle(self, request)

    def _user_payloads(self) -> list[Any]:
        """The reactions a test added, best first; sorted again only when the list of
        payloads changed (their priorities are a walk of kmock's DSL: a third of a
        request's cost when computed per request)."""
        payloads, cached = self._payloads, self._user_reactions
        if (
            cached is None
            or len(cached[0]) != len(payloads)
            or any(map(operator.is_not, cached[0], payloads))
        ):
            user = [p for p in payloads if not (p.priorities and p.priorities[0] == -math.inf)]
            user.sort(key=lambda p: tuple(-x for x in p.priorities))
            cached = self._user_reactions = (list(payloads), user)
        return cached[1]

    # -- kmock scaffold's discovery hooks (its core group says groupVersion "/v1") ----------

    def _get_resources(self) -> list[kmock.resource]:
        return self.discovery.resources()

    async def _serve_api(self, request: kmock.Request) -> kmock.Payload:
        return self.discovery.api_versions()

    async def _serve_apis(self, request: kmock.Request) -> kmock.Payload:
        return self.discovery.group_list()

    async def _serve_group(self, request: kmock.Request) -> kmock.Payload:
        assert request.resource is not None
        doc = self.discovery.group(request.resource.group or "")
        if doc is None:
            raise kmock.KubernetesResourceNotFoundError()
        return doc

    async def _serve_version(self, request: kmock.Request) -> kmock.Payload:
        assert request.resource is not None
        doc = self.discovery.version(request.resource.group or "", request.resource.version)
        if doc is None:
            raise kmock.KubernetesResourceNotFoundError()
        return doc

    async def _serve_server_version(self, request: kmock.Request) -> kmock.Payload:
        return self.discovery.server_version()
