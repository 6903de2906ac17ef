"""What the server reads from an HTTP request: the Kubernetes meaning of its path, and its body.

Why: the HTTP front needs a request's group/version/resource/namespace/name/subresource, query,
headers and decoded body, and kmock's own parser fails on ``/api/v1/namespaces`` (it takes
"namespaces" for a namespace). :func:`parse_path` reads paths as kube-apiserver does;
:class:`HttpRequest` is what the front and the verbs' callers work with (no kmock types).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp.web
import orjson
import yaml

from .errors import ApiError


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
    version: str | None
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


@dataclass
class HttpRequest:
    """One request as the front serves it."""

    method: str  # upper case: GET, POST, ...
    path: Parsed
    params: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    text: str = ""
    raw: aiohttp.web.BaseRequest | None = None  # for streaming responses (watches)

    @property
    def is_watch(self) -> bool:
        return self.method == "GET" and self.params.get("watch") in ("true", "1")

    @property
    def dry_run(self) -> bool:
        return self.params.get("dryRun") == "All"

    @property
    def content_type(self) -> str:
        """The media type of the body, without parameters."""
        return self.headers.get("Content-Type", "").split(";")[0].strip()

    def decode(self, required: bool = True) -> Any:
        """The body as JSON or YAML; 400 when empty (if required) or undecodable, 415 protobuf."""
        ctype = self.headers.get("Content-Type", "")
        if not self.body:
            if required:
                raise ApiError(400, "BadRequest", "the body of the request was empty")
            return None
        if "protobuf" in ctype:
            raise ApiError(
                415, "UnsupportedMediaType", "the emulator does not decode protobuf; send JSON"
            )
        try:
            if "yaml" in ctype:
                return yaml.safe_load(self.text)
            return _loads(self.text)
        except ValueError as e:
            raise ApiError(
                400, "BadRequest", f"the body of the request could not be decoded: {e}"
            ) from e


def _loads(text: str) -> Any:
    """orjson (a quarter of the cost of ``json.loads``), or the standard library for what
    it refuses (an integer over 64 bits) and for the error message."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
