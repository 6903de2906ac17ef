"""CustomResourceDefinitions: validating them, serving their resources, cleaning up after them.

Why: the operator's CRDs are applied to the emulator as to a cluster, and what they declare must
take effect: their resources appear in discovery and become writable, custom resources are
validated against their schemas (:func:`.admission.custom_resource_schema`), Table output uses
their printer columns, and deleting a CRD deletes its custom resources before the CRD goes
(the ``customresourcecleanup`` finalizer). This is kube-apiserver's apiextensions part;
:class:`CrdController` is called by admission (:meth:`~CrdController.admit`) and by
:mod:`.kube_controllers` after writes and removals.
"""

from __future__ import annotations

from collections.abc import Callable

from . import schema
from .admission import Write
from .errors import JsonDict, invalid
from .object_store import ObjectStore
from .resources import CRDS, ResourceRegistry, ResourceType, now_iso

CRD_CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"


class CrdController:
    """Turns stored CRDs into served resource types, and tells when their content is gone."""

    def __init__(self, types: ResourceRegistry, store: ObjectStore) -> None:
        self.types = types
        self.store = store

    @staticmethod
    def is_crd(rt: ResourceType) -> bool:
        return rt.storage_key == CRDS

    def admit(self, write: Write) -> list[str]:
        """The admission check of CRDs: validate, then set status and the cleanup finalizer."""
        if not self.is_crd(write.rt):
            return []
        crd = write.obj
        errors = _crd_errors(crd)
        if errors:
            raise invalid(write.rt, crd["metadata"]["name"], errors)
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        versions = spec.get("versions") or []
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
        return []

    def sync(self, crd: JsonDict) -> None:
        """Serve the CRD's served versions as it now says (replacing what it said before)."""
        spec = crd["spec"]
        names = spec["names"]
        group = spec["group"]
        self.types.unregister(group, names["plural"])
        versions = sorted(spec["versions"], key=lambda v: not v.get("storage"))
        storage = versions[0]["name"]
        for version in versions:
            if not version.get("served", True):
                continue
            subs = set((version.get("subresources") or {}).keys())
            self.types.register(
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

    def forget(self, crd: JsonDict) -> None:
        """The CRD is gone: stop serving its resources."""
        self.types.unregister(crd["spec"]["group"], crd["spec"]["names"]["plural"])

    def delete_content(
        self, crd: JsonDict, delete: Callable[[ResourceType, JsonDict], object]
    ) -> None:
        """The CRD is being deleted: delete every custom resource it defines."""
        spec = crd["spec"]
        for rt in [
            t
            for t in self.types.types_of((spec["group"], spec["names"]["plural"]))
            if t.version == t.storage_version
        ]:
            for obj in list(self.store.iter_objects(rt)):
                delete(rt, obj)

    def content_gone(self, crd: JsonDict) -> bool:
        """Whether the cleanup finalizer's work is done (no custom resources left)."""
        spec = crd["spec"]
        types = self.types.types_of((spec["group"], spec["names"]["plural"]))
        return not types or not any(True for _ in self.store.iter_objects(types[0]))


def _crd_errors(crd: JsonDict) -> list[schema.FieldError]:
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
    if names.get("plural") and spec.get("group") and name != f"{names['plural']}.{spec['group']}":
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
                schema.FieldError(e.kind, f"spec.versions[{i}].schema.{e.path}", e.value, e.detail)
                for e in schema.check_cel_rules(s)
            ]
    return errors
