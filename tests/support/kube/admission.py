"""What runs on every create and update before anything is stored: normalising, checks, defaults.

Why: a real API server refuses or completes objects before storing them (the registry's
strategies plus admission plugins), and the code under test depends on those answers (422
messages, defaults, 404/403 for missing or terminating namespaces). Here that is one
:class:`Admission` that normalises the body and runs a list of checks, in order, on each write.
A check takes a :class:`Write`, may default fields of ``write.obj``, returns warnings and raises
:class:`~.errors.ApiError` to refuse. Enforcing something new that real clusters enforce is
one more check in that list (see ``KubeEmulator``'s composition in :mod:`.api_server`; the
OwnerReferencesPermissionEnforcement of :mod:`.rbac` and :mod:`.pod_security` are such checks).
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import schema
from .errors import ApiError, JsonDict, invalid
from .object_store import ObjectStore
from .patching import json_copy
from .resources import ResourceRegistry, ResourceType

_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
# Metadata only the server sets: dropped from a created object's body.
SERVER_SET_FIELDS = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "generation",
    "deletionGracePeriodSeconds",
    "managedFields",
)


@dataclass
class Write:
    """One object about to be stored: ``old`` is None on create; checks may change ``obj``."""

    rt: ResourceType
    obj: JsonDict
    old: JsonDict | None
    field_validation: str | None  # the request's fieldValidation: Strict, Warn, Ignore or None


AdmissionCheck = Callable[[Write], list[str]]  # returns warnings; raises ApiError to refuse


def normalise(rt: ResourceType, ns: str | None, body: Any, deep: bool = True) -> JsonDict:
    """A copy of ``body`` with apiVersion, kind and namespace checked against the URL and set
    (with ``deep`` off, only its top level and metadata's: for a body no one else holds, or
    a status write's, which keeps nothing else of it)."""
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", "the body of the request must be a JSON object")
    obj = json_copy(body) if deep else dict(body)
    if not deep and isinstance(obj.get("metadata"), dict):
        obj["metadata"] = dict(obj["metadata"])  # its top level is what is set here
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


def name_new_object(rt: ResourceType, meta: JsonDict) -> str:
    """The name of an object being created: generated from ``generateName`` if needed, valid."""
    if not meta.get("name") and meta.get("generateName"):
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        meta["name"] = meta["generateName"] + suffix
    name: str = meta.get("name") or ""
    if not name:
        raise invalid(
            rt,
            "",
            [
                schema.FieldError(
                    "Required", "metadata.name", detail="name or generateName is required"
                )
            ],
        )
    if not _DNS1123_SUBDOMAIN.match(name) or len(name) > 253:
        raise invalid(
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
    return name


def custom_resource_schema(write: Write) -> list[str]:
    """Prune, default and validate a custom resource against its CRD's schema and CEL rules."""
    rt = write.rt
    if rt.schema is None:
        return []
    warnings: list[str] = []
    pruned, errors = schema.process_custom_resource(write.obj, rt.schema, write.old)
    if pruned and write.field_validation == "Strict":
        raise ApiError(
            400,
            "BadRequest",
            "strict decoding error: " + ", ".join(f'unknown field "{p}"' for p in pruned),
        )
    if write.field_validation != "Ignore":
        warnings += [f'unknown field "{p}"' for p in pruned]
    if errors:
        raise invalid(rt, write.obj["metadata"]["name"], errors)
    return warnings


class Admission:
    """Normalising and the namespace lifecycle of new objects, then the checks of every write."""

    def __init__(
        self,
        store: ObjectStore,
        types: ResourceRegistry,
        checks: list[AdmissionCheck],
        namespaces_must_exist: Callable[[], bool] = lambda: True,
    ) -> None:
        self.store = store
        self.types = types
        self.checks = checks
        self.namespaces_must_exist = namespaces_must_exist

    def new_object(
        self, rt: ResourceType, ns: str | None, body: Any, owned: bool = False
    ) -> JsonDict:
        """``body`` normalised for a create: server fields dropped, named, namespace usable
        (``owned``: the body is not copied below its top level and metadata)."""
        obj = normalise(rt, ns, body, deep=not owned)
        meta = obj["metadata"]
        for server_field in SERVER_SET_FIELDS:
            meta.pop(server_field, None)
        name = name_new_object(rt, meta)
        self.check_namespace(rt, meta.get("namespace"), name)
        return obj

    def check_namespace(self, rt: ResourceType, ns: str | None, name: str) -> None:
        """NamespaceLifecycle: no new content in missing (404) or terminating (403) namespaces."""
        if not rt.namespaced or ns is None:
            return
        ns_obj = self.store.get(self.types.get("", "v1", "namespaces"), None, ns)
        if ns_obj is None and self.namespaces_must_exist():
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

    def admit(self, write: Write) -> list[str]:
        """Run every check on ``write`` (defaulting and validation); returns their warnings."""
        warnings: list[str] = []
        for check in self.checks:
            warnings += check(write)
        return warnings
