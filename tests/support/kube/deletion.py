"""DELETE as kube-apiserver does it: preconditions, propagation policies, graceful deletion.

Why: finalizers and ownerReferences are how controllers (kopf's finalizer, our Jobs' owners)
clean up, so deleting must behave as on a cluster: an object with finalizers only gets a
deletionTimestamp and stays until they are removed; ``Orphan`` and ``Foreground`` add their
finalizers when there are dependents; batch/v1 Jobs orphan their pods by default; namespaces
turn ``Terminating``. What controllers do once an object is terminating (delete a namespace's
content, a CRD's custom resources, dependents) is not here: listeners in
:attr:`Deleter.on_terminating` do it (:mod:`.kube_controllers`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from .errors import ApiError, JsonDict, conflict
from .object_store import ObjectStore
from .resources import JOBS, NAMESPACES, ResourceType, now_iso

# (type, the object as it was, the object now terminating) -> None
TerminatingListener = Callable[[ResourceType, JsonDict, JsonDict], None]


class Deleter:
    """Deletes objects from the store, honouring finalizers and propagation policies."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.on_terminating: list[TerminatingListener] = []

    def delete(
        self,
        rt: ResourceType,
        ns: str | None,
        name: str,
        options: JsonDict,
        *,
        propagation: str | None = None,
        dry_run: bool = False,
    ) -> JsonDict:
        """DELETE of one object, with the DeleteOptions body and the query's policy."""
        obj = self.store.get_or_404(rt, ns, name)
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
            raise conflict(rt, name)
        policy = propagation or options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is not None:
            policy = "Orphan" if options["orphanDependents"] else "Background"
        if policy is None:  # the per-resource default (batch/v1 Jobs keep their pods)
            policy = "Orphan" if rt.storage_key == JOBS else "Background"
        if dry_run:
            return obj
        return self.delete_object(rt, obj, policy)

    def delete_each(self, rt: ResourceType, items: list[JsonDict], policy: str) -> None:
        """DELETE of a collection: each listed object in turn."""
        for obj in items:
            self.delete_object(rt, obj, policy)

    def delete_object(
        self, rt: ResourceType, obj: JsonDict, policy: str = "Background"
    ) -> JsonDict:
        """Remove ``obj``, or mark it terminating while finalizers remain; returns its state."""
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if policy == "Orphan" and self.store.owned_by(meta["uid"]):
            finalizers.append("orphan")
        elif policy == "Foreground" and self.store.owned_by(meta["uid"]):
            finalizers.append("foregroundDeletion")
        if rt.storage_key == NAMESPACES:
            finalizers.append("kubernetes")  # spec.finalizers in reality; content goes first
        if meta.get("deletionTimestamp"):
            return obj  # already being deleted
        if not finalizers:
            return self.store.remove(rt, obj)
        new = copy.deepcopy(obj)
        new["metadata"]["deletionTimestamp"] = now_iso()
        new["metadata"]["deletionGracePeriodSeconds"] = 0
        new["metadata"]["finalizers"] = list(
            dict.fromkeys(
                (meta.get("finalizers") or [])
                + [f for f in finalizers if f in ("orphan", "foregroundDeletion")]
            )
        )
        if rt.storage_key == NAMESPACES:
            new["status"] = {"phase": "Terminating"}
        stored = self.store.update(rt, obj, new)
        for listener in list(self.on_terminating):
            listener(rt, obj, new)
        return self.store.get(rt, meta.get("namespace"), meta["name"]) or stored
