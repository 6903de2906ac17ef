"""The API verbs that read and write objects: get, list, create, replace (PUT), patch.

Why: this is where kube-apiserver's write rules live, between the HTTP front and the store:
POST fills server metadata and refuses duplicates (409); PUT and patches refuse a stale
resourceVersion (409); the ``status`` subresource changes only status while main writes keep
it; generation moves on spec changes only; a write that changes nothing keeps its
resourceVersion and sends no event; removing the last finalizer of a terminating object
removes it. Each write passes :class:`~.admission.Admission` first and, once stored, is
announced to :attr:`ObjectApi.on_written` (the cluster's controllers). DELETE is in
:mod:`.deletion`. Nothing here knows HTTP: the front decodes bodies and query parameters.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from . import patching, schema, selectors
from .admission import Admission, Write, normalise
from .errors import ApiError, JsonDict, conflict, invalid, no_such_resource, not_found
from .object_store import ObjectStore
from .patching import json_copy
from .resources import ResourceType

# (type, the old object or None on create, the stored object) -> None
WriteListener = Callable[[ResourceType, JsonDict | None, JsonDict], None]

APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


class ObjectApi:
    """Reads and writes of one object or a list, with kube-apiserver's rules."""

    def __init__(self, store: ObjectStore, admission: Admission) -> None:
        self.store = store
        self.admission = admission
        self.on_written: list[WriteListener] = []

    # -- reading ----------------------------------------------------------------------------

    def get(self, rt: ResourceType, ns: str | None, name: str) -> JsonDict:
        return rt.present(self.store.get_or_404(rt, ns, name))

    def list_objects(
        self,
        rt: ResourceType,
        ns: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> JsonDict:
        labels = selectors.parse_label_selector(label_selector)
        fields = selectors.parse_field_selector(field_selector)
        pairs = selectors.equalities(label_selector)
        candidates = (
            self.store.iter_labelled(rt, ns, pairs) if pairs else self.store.iter_objects(rt, ns)
        )
        items = [
            rt.present(obj)
            for obj in candidates
            if labels(obj.get("metadata", {}).get("labels") or {}) and fields(obj)
        ]
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": str(self.store.resource_version)},
            "items": items,
        }

    # -- writing ----------------------------------------------------------------------------

    def create(
        self,
        rt: ResourceType,
        ns: str | None,
        body: Any,
        *,
        dry_run: bool = False,
        field_validation: str | None = None,
        owned: bool = False,
    ) -> tuple[JsonDict, list[str]]:
        """POST: returns the stored object and the warnings for the client (``owned``: the
        body is the caller's to give away, stored as it is, not copied)."""
        if rt.namespaced and ns is None:
            raise no_such_resource()
        obj = self.admission.new_object(rt, ns, body, owned=owned)
        meta = obj["metadata"]
        name = meta["name"]
        if self.store.get(rt, meta.get("namespace"), name) is not None:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{rt.qualified_resource} "{name}" already exists',
                {"name": name, "group": rt.group, "kind": rt.plural},
            )
        meta["uid"] = str(uuid.uuid4())
        warnings = self.admission.admit(Write(rt, obj, None, field_validation))
        if dry_run:
            return obj, warnings
        stored = self.store.create(rt, obj)
        self._written(rt, None, stored)
        return stored, warnings

    def replace(
        self,
        rt: ResourceType,
        ns: str | None,
        name: str,
        body: Any,
        sub: str | None,
        *,
        dry_run: bool = False,
        field_validation: str | None = None,
    ) -> tuple[JsonDict, list[str]]:
        """PUT of the object or its ``status``."""
        old = self.store.get_or_404(rt, ns, name)
        new = normalise(rt, ns, body)
        if new["metadata"].get("name") not in (None, name):
            raise ApiError(
                400,
                "BadRequest",
                f"the name of the object ({new['metadata'].get('name')}) "
                f"does not match the name on the URL ({name})",
            )
        rv = new["metadata"].get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise conflict(rt, name)
        if not rv and rt.schema is not None:
            raise invalid(
                rt,
                name,
                [
                    schema.FieldError(
                        "Invalid", "metadata.resourceVersion", 0, "must be specified for an update"
                    )
                ],
            )
        return self.update(rt, old, new, sub, dry_run=dry_run, field_validation=field_validation)

    def patch(
        self,
        rt: ResourceType,
        ns: str | None,
        name: str,
        body: Any,
        content_type: str,
        sub: str | None,
        *,
        dry_run: bool = False,
        field_validation: str | None = None,
    ) -> tuple[JsonDict, list[str]]:
        """PATCH in any of the four patch types (apply is naive: no field ownership)."""
        old = self.store.get(rt, ns, name)
        if content_type == APPLY_PATCH:
            if old is None:
                return self.create(rt, ns, body, dry_run=dry_run)
            new = patching.merge_patch(old, _strip_nulls(body))  # old stays as it is
            return self.update(
                rt,
                old,
                normalise(rt, ns, new, deep=sub != "status"),
                sub,
                dry_run=dry_run,
                field_validation=field_validation,
            )
        if old is None:
            raise not_found(rt, name)
        try:
            if content_type == MERGE_PATCH:
                new = patching.merge_patch(old, body)  # makes new dicts, old stays as it is
            elif content_type == JSON_PATCH:
                new = patching.json_patch(old, body)
            elif content_type == STRATEGIC_MERGE_PATCH and rt.schema is None:
                new = patching.strategic_merge_patch(json_copy(old), body)
            else:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types "
                    f"include: {JSON_PATCH}, {MERGE_PATCH}, {APPLY_PATCH}"
                    + ("" if rt.schema is not None else f", {STRATEGIC_MERGE_PATCH}"),
                )
        except patching.PatchError as e:
            raise ApiError(422, "Invalid", str(e)) from e
        except (TypeError, AttributeError) as e:
            raise ApiError(422, "Invalid", f"cannot apply the patch: {e}") from e
        if not isinstance(new, dict):
            raise ApiError(422, "Invalid", "the patched object is not an object")
        rv = (new.get("metadata") or {}).get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise conflict(rt, name)
        return self.update(
            rt,
            old,
            normalise(rt, ns, new, deep=sub != "status"),
            sub,
            dry_run=dry_run,
            field_validation=field_validation,
        )

    def update(
        self,
        rt: ResourceType,
        old: JsonDict,
        new: JsonDict,
        sub: str | None,
        *,
        dry_run: bool = False,
        field_validation: str | None = None,
    ) -> tuple[JsonDict, list[str]]:
        """Store ``new`` (normalised) as the next version of ``old``: the end of PUT and PATCH.

        ``old`` (the stored version) is never changed: the new version shares its unchanged
        parts (a status write copies only the new status and the metadata), which no one
        changes in place once stored."""
        if sub == "status":
            new = _with_status_of(old, new)
        else:
            _keep_server_fields(rt, old, new)
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        warnings = self.admission.admit(Write(rt, new, old, field_validation))
        if _meta_without_rv(new) == _meta_without_rv(old):
            return old, warnings  # a no-op write: no new resourceVersion, no event
        if "generation" in old["metadata"] and _spec_changed(rt, old, new):
            new["metadata"]["generation"] = old["metadata"]["generation"] + 1
        if dry_run:
            return new, warnings
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            stored = self.store.update(rt, old, new)
            return self.store.remove(rt, stored), warnings
        stored = self.store.update(rt, old, new)
        self._written(rt, old, stored)
        return stored, warnings

    def _written(self, rt: ResourceType, old: JsonDict | None, new: JsonDict) -> None:
        for listener in list(self.on_written):
            listener(rt, old, new)


def _with_status_of(old: JsonDict, new: JsonDict) -> JsonDict:
    """A write to ``/status``: the old object with the new status (and nothing else); the
    rest is ``old``'s own (unchanged) parts, metadata copied (the server sets some)."""
    candidate = dict(old)
    meta = candidate["metadata"] = dict(old["metadata"])
    if "finalizers" in meta:  # the one list of metadata admission may extend
        meta["finalizers"] = list(meta["finalizers"])
    if "status" in new:  # a merge patch's result: new where patched, old's elsewhere
        candidate["status"] = new["status"]
    else:
        candidate.pop("status", None)
    return candidate


def _keep_server_fields(rt: ResourceType, old: JsonDict, new: JsonDict) -> None:
    """A main-object write: server-set metadata (and status, with the subresource) stay."""
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
        added = set(meta.get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
        if added:
            raise invalid(
                rt,
                old["metadata"]["name"],
                [
                    schema.FieldError(
                        "Forbidden",
                        "metadata.finalizers",
                        detail="no new finalizers can be added if the object is being "
                        f"deleted, found new finalizers {json.dumps(sorted(added))}",
                    )
                ],
            )


def _spec_changed(rt: ResourceType, old: JsonDict, new: JsonDict) -> bool:
    if rt.schema is not None or rt.crd_name is not None:
        skip = ("metadata", "status") if "status" in rt.subresources else ("metadata",)
        return _strip(old, *skip) != _strip(new, *skip)
    return old.get("spec") != new.get("spec")


def _strip(obj: JsonDict, *keys: str) -> JsonDict:
    return {k: v for k, v in obj.items() if k not in keys}


def _meta_without_rv(obj: JsonDict) -> JsonDict:
    result = dict(obj)
    result["metadata"] = _strip(obj.get("metadata", {}), "resourceVersion", "managedFields")
    return result


def _strip_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_nulls(v) for v in value]
    return value
