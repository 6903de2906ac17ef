"""What the server serves: one :class:`ResourceType` per group/version/plural, in a registry.

Why: routing, storage, admission and discovery all start from "which resource is this?".
Built-in types come from kmock's bundled discovery data; custom ones are registered and removed
by :mod:`.crds` as CRDs come and go. Several versions of one resource share a storage key and
are stored under the storage version. The registry also keeps kmock's own ``resources`` map in
step, so what kmock's scaffold lists (``GET /``) matches what the emulator serves.
"""

from __future__ import annotations

import datetime
import functools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import kmock

from .errors import JsonDict, no_such_resource

StorageKey = tuple[str, str]  # (group, plural): all versions of a resource share it

NAMESPACES: StorageKey = ("", "namespaces")
PODS: StorageKey = ("", "pods")
SECRETS: StorageKey = ("", "secrets")
JOBS: StorageKey = ("batch", "jobs")
CRDS: StorageKey = ("apiextensions.k8s.io", "customresourcedefinitions")

CRD_VERBS = ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"]


_NOW: list[Any] = [None, ""]  # (the second, its text): formatted once a second


def now_iso() -> str:
    """The server's clock, as metadata timestamps show it (seconds, UTC, ``Z``)."""
    second = int(time.time())
    if _NOW[0] != second:
        stamp = datetime.datetime.fromtimestamp(second, tz=datetime.UTC)
        _NOW[:] = [second, stamp.strftime("%Y-%m-%dT%H:%M:%SZ")]
    return str(_NOW[1])


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
    def storage_key(self) -> StorageKey:
        return (self.group, self.plural)

    @property
    def kmock_resource(self) -> kmock.resource:
        """The key of this type's objects in kmock's ``objects`` (the storage version)."""
        return kmock_resource(self.group, self.storage_version or self.version, self.plural)

    def present(self, obj: JsonDict) -> JsonDict:
        """The stored object as served under this type's version."""
        if obj.get("apiVersion") == self.api_version:
            return obj
        return dict(obj, apiVersion=self.api_version)


@functools.lru_cache(maxsize=4096)
def kmock_resource(group: str | None, version: str | None, plural: str | None) -> kmock.resource:
    """kmock's (immutable) resource reference, made once per name: building one runs
    typing-protocol checks (~10 us), and every request needed two or three."""
    return kmock.resource(group=group, version=version, plural=plural)


class ResourceRegistry:
    """The served resource types, by (group, version, plural), in registration order."""

    def __init__(self, discovery: kmock.ResourcesArray) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._discovery = discovery  # kmock's ``resources`` of the same server

    def load_builtins(self) -> None:
        """Register kmock's bundled built-in resources (without metrics and gateway APIs)."""
        bundled = kmock.ResourcesArray()
        bundled.load_bundled()
        for res in bundled:
            info = bundled[res]
            if res.group in ("metrics.k8s.io",) or (res.group or "").startswith("gateway."):
                continue
            self.register(
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

    def register(self, rt: ResourceType) -> None:
        """Serve ``rt``; it is stored under the storage version of its resource, if known."""
        same = self.types_of(rt.storage_key)
        rt.storage_version = same[0].storage_version if same else (rt.storage_version or rt.version)
        self._types[(rt.group, rt.version, rt.plural)] = rt
        self._discovery[kmock.resource(rt.group, rt.version, rt.plural)] = kmock.ResourceInfo(
            kind=rt.kind,
            namespaced=rt.namespaced,
            singular=rt.singular,
            verbs=set(rt.verbs),
            shortnames=set(rt.short_names),
            categories=set(rt.categories),
            subresources=set(rt.subresources),
        )

    def unregister(self, group: str, plural: str) -> None:
        """Stop serving every version of ``plural.group``."""
        for key in [k for k, t in self._types.items() if t.storage_key == (group, plural)]:
            del self._types[key]
            res = kmock.resource(key[0], key[1], key[2])
            if res in self._discovery:
                del self._discovery[res]

    def __iter__(self) -> Iterator[ResourceType]:
        return iter(list(self._types.values()))

    def get(self, group: str, version: str, plural: str) -> ResourceType:
        """The type a URL names, or 404 as kube-apiserver answers for unknown resources."""
        rt = self._types.get((group, version, plural))
        if rt is None:
            raise no_such_resource()
        return rt

    def find(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        for rt in self._types.values():
            if rt.group == group and rt.version == version and rt.kind == kind:
                return rt
        return None

    def types_of(self, storage_key: StorageKey) -> list[ResourceType]:
        """Every served version of one resource."""
        return [t for t in self._types.values() if t.storage_key == storage_key]

    def storage_type(self, storage_key: StorageKey) -> ResourceType | None:
        """The type of the storage version of a resource (None once it is unregistered)."""
        for rt in self._types.values():
            if rt.storage_key == storage_key and rt.version == rt.storage_version:
                return rt
        return None

    def storage_types(self) -> list[ResourceType]:
        """One type per stored resource: its storage version."""
        return [t for t in self._types.values() if t.version == t.storage_version]
