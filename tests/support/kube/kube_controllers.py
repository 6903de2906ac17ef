"""What a cluster's own controllers do after a write: garbage collection and finalization.

Why: on a cluster, kube-controller-manager (garbage collector, namespace controller) and the
apiextensions server finish what a write starts: dependents of a deleted owner go (or are
orphaned), a dependent whose owners never existed is collected, a terminating namespace loses
its content and then goes, a CRD's custom resources go before the CRD. The code under test
relies on that (kopf-adopted Jobs vanish with their RedisBackup). Here it happens synchronously
inside the write that triggers it (so tests see the result at once), through three hooks the
emulator wires up: :meth:`KubeControllers.after_write` (the API's writes),
:meth:`~KubeControllers.on_terminating` (:class:`~.deletion.Deleter`) and
:meth:`~KubeControllers.after_removal` (:class:`~.object_store.ObjectStore`).
"""

from __future__ import annotations

import asyncio
import copy

from .crds import CRD_CLEANUP_FINALIZER, CrdController
from .deletion import Deleter
from .errors import JsonDict
from .object_store import ObjectStore
from .resources import NAMESPACES, ResourceRegistry, ResourceType, now_iso


class GarbageCollector:
    """ownerReferences: collect dependents whose owners are gone, orphan or delete them first."""

    def __init__(self, store: ObjectStore, deleter: Deleter) -> None:
        self.store = store
        self.deleter = deleter

    def check_new_dependent(self, rt: ResourceType, obj: JsonDict) -> None:
        """A dependent created with owners that do not exist is collected (soon, not inline).
        (Owners that exist now need no second look: if one goes, :meth:`owner_removed`
        finds this dependent by its reference.)"""
        refs = obj["metadata"].get("ownerReferences") or []
        if refs and not all(self.store.exists(r.get("uid")) for r in refs):
            asyncio.get_running_loop().call_soon(self._collect_orphan, rt, obj["metadata"]["uid"])

    def _collect_orphan(self, rt: ResourceType, uid: str) -> None:
        where = self.store.locate(uid)
        if where is None:
            return
        obj = self.store.get(rt, where[1], where[2])
        refs = (obj or {}).get("metadata", {}).get("ownerReferences") or []
        if obj is not None and refs and not any(self.store.exists(r.get("uid")) for r in refs):
            self.deleter.delete_object(rt, obj, "Background")

    def owner_removed(self, uid: str) -> None:
        """Dependents of the removed owner ``uid`` whose owners are all gone go too."""
        for dep_rt, dep in self.store.owned_by(uid):
            owners = [r.get("uid") for r in dep["metadata"].get("ownerReferences") or []]
            if not any(self.store.exists(o) for o in owners if o != uid):
                current = self.store.get(
                    dep_rt, dep["metadata"].get("namespace"), dep["metadata"]["name"]
                )
                if current is not None:
                    self.deleter.delete_object(dep_rt, current, "Background")

    def owner_terminating(self, owner: JsonDict) -> None:
        """Foreground deletion deletes the dependents; orphaning drops their references."""
        meta = owner["metadata"]
        if "foregroundDeletion" in meta["finalizers"]:
            for dep_rt, dep in self.store.owned_by(meta["uid"]):
                self.deleter.delete_object(dep_rt, dep, "Background")
        if "orphan" in meta["finalizers"]:
            for dep_rt, dep in self.store.owned_by(meta["uid"]):
                patched = copy.deepcopy(dep)
                patched["metadata"]["ownerReferences"] = [
                    r
                    for r in dep["metadata"].get("ownerReferences") or []
                    if r.get("uid") != meta["uid"]
                ]
                self.store.update(dep_rt, dep, patched)

    def finalizers_done(self, obj: JsonDict) -> set[str]:
        """The garbage collector's finalizers on ``obj`` whose work is finished."""
        fins = obj["metadata"].get("finalizers") or []
        ours = {f for f in ("foregroundDeletion", "orphan") if f in fins}
        if ours and not self.store.owned_by(obj["metadata"]["uid"]):
            return ours
        return set()


class KubeControllers:
    """The garbage collector, the namespace controller and CRD cleanup, behind three hooks."""

    def __init__(
        self, store: ObjectStore, types: ResourceRegistry, crds: CrdController, deleter: Deleter
    ) -> None:
        self.store = store
        self.types = types
        self.crds = crds
        self.deleter = deleter
        self.gc = GarbageCollector(store, deleter)

    def after_write(self, rt: ResourceType, old: JsonDict | None, new: JsonDict) -> None:
        """After a create or update through the API."""
        if self.crds.is_crd(rt) and not new["metadata"].get("deletionTimestamp"):
            self.crds.sync(new)
        if old is None:
            self.gc.check_new_dependent(rt, new)

    def on_terminating(self, rt: ResourceType, obj: JsonDict, terminating: JsonDict) -> None:
        """After an object got its deletionTimestamp (it stays while finalizers remain)."""
        if rt.storage_key == NAMESPACES:
            for other in self.types.storage_types():
                if other.namespaced:
                    for child in list(self.store.iter_objects(other, obj["metadata"]["name"])):
                        self.deleter.delete_object(other, child)
        if self.crds.is_crd(rt):
            self.crds.delete_content(obj, self.deleter.delete_object)
        self.gc.owner_terminating(terminating)
        self.reconcile_finalizers()

    def after_removal(self, rt: ResourceType, obj: JsonDict) -> None:
        """After an object left the store (``obj`` is its final state)."""
        if self.crds.is_crd(rt):
            self.crds.forget(obj)
        self.gc.owner_removed(obj["metadata"]["uid"])
        self.reconcile_finalizers()

    def remaining_content(self, namespace: str) -> tuple[dict[str, int], dict[str, int]]:
        """What keeps a terminating namespace: instances per resource, and per finalizer."""
        content: dict[str, int] = {}
        finalizers: dict[str, int] = {}
        for rt in self.types.storage_types():
            if not rt.namespaced:
                continue
            for obj in self.store.iter_objects(rt, namespace):
                content[rt.qualified_resource] = content.get(rt.qualified_resource, 0) + 1
                for f in obj["metadata"].get("finalizers") or []:
                    finalizers[f] = finalizers.get(f, 0) + 1
        return content, finalizers

    def _namespace_conditions(self, rt: ResourceType, ns_obj: JsonDict) -> bool:
        """The namespace controller's NamespaceDeletion* conditions; True if they changed."""
        content, finalizers = self.remaining_content(ns_obj["metadata"]["name"])
        remain = ", ".join(f"{r} has {n} resource instances" for r, n in sorted(content.items()))
        fins = ", ".join(f"{f} in {n} resource instances" for f, n in sorted(finalizers.items()))
        conditions = [
            ("NamespaceDeletionDiscoveryFailure", "False", "ResourcesDiscovered",
             "All resources successfully discovered"),
            ("NamespaceDeletionGroupVersionParsingFailure", "False", "ParsedGroupVersions",
             "All legacy kube types successfully parsed"),
            ("NamespaceDeletionContentFailure", "False", "ContentDeleted",
             "All content successfully deleted, may be waiting on finalization"),
            ("NamespaceContentRemaining", "True" if content else "False",
             "SomeResourcesRemain" if content else "ContentRemoved",
             f"Some resources are remaining: {remain}" if content
             else "All content successfully removed"),
            ("NamespaceFinalizersRemaining", "True" if finalizers else "False",
             "SomeFinalizersRemain" if finalizers else "ContentHasNoFinalizers",
             f"Some content in the namespace has finalizers remaining: {fins}" if finalizers
             else "All content-preserving finalizers finished"),
        ]  # fmt: skip
        wanted: list[JsonDict] = [
            {"type": t, "status": st, "reason": r, "message": m} for t, st, r, m in conditions
        ]
        status: JsonDict = {"phase": "Terminating", "conditions": wanted}
        old = {
            **(ns_obj.get("status") or {}),
            "conditions": [
                {k: c.get(k) for k in ("type", "status", "reason", "message")}
                for c in (ns_obj.get("status") or {}).get("conditions") or []
            ],
        }
        if old == status:
            return False
        new = copy.deepcopy(ns_obj)
        new["status"] = {
            "phase": "Terminating",
            "conditions": [dict(c, lastTransitionTime=now_iso()) for c in wanted],
        }
        self.store.update(rt, ns_obj, new)
        return True

    def reconcile_finalizers(self) -> None:
        """Finish namespaces, CRDs, foreground and orphan deletions whose work is done."""
        for _ in range(100):  # bounded: each pass removes at least one finalizer or stops
            changed = False
            for storage_key, ns, name in self.store.terminating():
                rt = self.types.storage_type(storage_key)
                obj = None if rt is None else self.store.get(rt, ns, name)
                if rt is None or obj is None:
                    continue
                meta = obj["metadata"]
                fins = meta.get("finalizers") or []
                done = self.gc.finalizers_done(obj)
                if (
                    CRD_CLEANUP_FINALIZER in fins
                    and self.crds.is_crd(rt)
                    and self.crds.content_gone(obj)
                ):
                    done.add(CRD_CLEANUP_FINALIZER)
                remaining = [f for f in fins if f not in done]
                if rt.storage_key == NAMESPACES and not remaining:
                    if self.store.namespace_empty(meta["name"]):
                        self.store.remove(rt, obj)
                        changed = True
                        continue
                    changed = self._namespace_conditions(rt, obj) or changed
                if done:
                    new = copy.deepcopy(obj)
                    new["metadata"]["finalizers"] = remaining
                    stored = self.store.update(rt, obj, new)
                    if not remaining and rt.storage_key != NAMESPACES:
                        self.store.remove(rt, stored)
                    changed = True
            if not changed:
                return
