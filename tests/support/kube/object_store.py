"""The stored objects: server-set metadata, resourceVersions, indexes, and change events.

Why: kube-apiserver is a store with rules (etcd plus its registry); this module is the store
part. Objects live in kmock's ``ObjectsArray`` (so ``emulator.objects[...]`` shows them to test
assertions, with history), under their storage version. Every write gets the next
resourceVersion and is reported to the :class:`~.watches.WatchHub`. Indexes by type, by owner
uid and of terminating objects keep lists, garbage collection and finalizer bookkeeping cheap
with thousands of objects. It knows nothing of HTTP, admission or controllers: whoever must act
when an object goes away subscribes to :attr:`ObjectStore.on_removed`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable

import kmock

from .errors import JsonDict, not_found
from .patching import json_copy
from .resources import ResourceRegistry, ResourceType, StorageKey, now_iso
from .watches import WatchHub

HISTORY_DEPTH = 16  # versions kept per object in kmock's history (memory bound)

ObjectKey = tuple[kmock.resource, str | None, str]  # a key of kmock's ObjectsArray
Ref = tuple[StorageKey, str | None, str]  # (storage key, namespace, name)


class ObjectStore:
    """Objects by type, namespace and name; writes bump resourceVersion and emit events."""

    def __init__(self, objects: kmock.ObjectsArray, types: ResourceRegistry, hub: WatchHub) -> None:
        self.objects = objects
        self.types = types
        self.hub = hub
        self.on_removed: list[Callable[[ResourceType, JsonDict], None]] = []
        self._rv = 1000
        self._uids: dict[str, tuple[ResourceType, str | None, str]] = {}
        self._index: dict[StorageKey, dict[tuple[str | None, str], ObjectKey]] = {}
        self._owned: dict[str, set[Ref]] = {}
        self._terminating: set[Ref] = set()
        # (key, value) of each label -> the objects carrying it, per resource: a list by
        # an equality selector (a controller listing one owner's Jobs among 10,000, the
        # bench's case) reads only the candidates, not every object.
        self._labels: dict[StorageKey, dict[tuple[str, str], set[tuple[str | None, str]]]] = {}

    @property
    def resource_version(self) -> int:
        """The latest resourceVersion (what lists and tables report)."""
        return self._rv

    # -- reading ----------------------------------------------------------------------------

    def key(self, rt: ResourceType, ns: str | None, name: str) -> ObjectKey:
        return (rt.kmock_resource, ns if rt.namespaced else None, name)

    def get(self, rt: ResourceType, ns: str | None, name: str) -> JsonDict | None:
        key = self.key(rt, ns, name)
        if key not in self.objects:
            return None
        found = self.objects[key]  # (one lookup: kmock parses the key on each)
        return None if found.deleted else found.raw

    def get_or_404(self, rt: ResourceType, ns: str | None, name: str) -> JsonDict:
        obj = self.get(rt, ns, name)
        if obj is None:
            raise not_found(rt, name)
        return obj

    def iter_objects(self, rt: ResourceType, ns: str | None = None) -> Iterable[JsonDict]:
        """The live objects of ``rt``'s resource (in ``ns`` if given), by namespace and name."""
        index = self._index.get(rt.storage_key, {})
        for ident in sorted(index, key=lambda k: (k[0] or "", k[1])):
            if ns is None or ident[0] == ns:
                key = index.get(ident)
                if key is not None and not self.objects[key].deleted:
                    yield self.objects[key].raw

    def iter_labelled(
        self, rt: ResourceType, ns: str | None, pairs: list[tuple[str, str]]
    ) -> Iterable[JsonDict]:
        """As :meth:`iter_objects`, only the objects carrying every label of ``pairs``
        (a candidate set: the caller still applies the whole selector)."""
        by_label = self._labels.get(rt.storage_key, {})
        idents = set.intersection(*(by_label.get(p, set()) for p in pairs)) if pairs else set()
        index = self._index.get(rt.storage_key, {})
        for ident in sorted(idents, key=lambda k: (k[0] or "", k[1])):
            if ns is None or ident[0] == ns:
                key = index.get(ident)
                if key is not None and not self.objects[key].deleted:
                    yield self.objects[key].raw

    def exists(self, uid: str | None) -> bool:
        """Whether an object with this uid is stored (owner checks of the garbage collector)."""
        return uid in self._uids

    def locate(self, uid: str) -> tuple[ResourceType, str | None, str] | None:
        """Where the object with ``uid`` lives: its type, namespace and name."""
        return self._uids.get(uid)

    def owned_by(self, uid: str) -> list[tuple[ResourceType, JsonDict]]:
        """The live objects with an ownerReference to ``uid`` (its dependents)."""
        result = []
        for storage_key, ns, name in sorted(self._owned.get(uid, ()), key=str):
            rt = self.types.storage_type(storage_key)
            obj = None if rt is None else self.get(rt, ns, name)
            if rt is not None and obj is not None:
                result.append((rt, obj))
        return result

    def terminating(self) -> list[Ref]:
        """The objects with a deletionTimestamp that are still stored (finalizers pending)."""
        return sorted(self._terminating, key=str)

    def namespace_empty(self, namespace: str) -> bool:
        return not any(ns == namespace for index in self._index.values() for ns, _ in index)

    # -- writing ----------------------------------------------------------------------------

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def create(self, rt: ResourceType, obj: JsonDict) -> JsonDict:
        """Store a new object, filling uid, creationTimestamp, resourceVersion, generation."""
        meta = obj.setdefault("metadata", {})
        if "uid" not in meta:  # (setdefault would make a uuid even when one is given)
            meta["uid"] = str(uuid.uuid4())
        if "creationTimestamp" not in meta:
            meta["creationTimestamp"] = now_iso()
        meta["resourceVersion"] = self._next_rv()
        if rt.group or rt.plural not in ("namespaces", "events"):
            meta.setdefault("generation", 1)
        key = self.key(rt, meta.get("namespace"), meta["name"])
        if key in self.objects:
            self.objects[key].create(obj)
            self._trim(key)
        else:
            self.objects[key] = obj
        self._uids[meta["uid"]] = (rt, key[1], key[2])
        self._reindex(rt, None, obj)
        self.hub.record(self._rv, rt.storage_key, None, obj)
        return obj

    def update(self, rt: ResourceType, old: JsonDict, new: JsonDict) -> JsonDict:
        """Store ``new`` as the next version of ``old``."""
        new["metadata"]["resourceVersion"] = self._next_rv()
        key = self.key(rt, new["metadata"].get("namespace"), new["metadata"]["name"])
        self.objects[key].history.append(new)
        self._trim(key)
        self._reindex(rt, old, new)
        self.hub.record(self._rv, rt.storage_key, old, new)
        return new

    def remove(self, rt: ResourceType, obj: JsonDict) -> JsonDict:
        """Remove an object for good; returns its final state (with a new resourceVersion)."""
        final = json_copy(obj)
        final["metadata"]["resourceVersion"] = self._next_rv()
        key = self.key(rt, final["metadata"].get("namespace"), final["metadata"]["name"])
        self.objects[key].history.append(final)
        self.objects[key].delete()
        self._trim(key)
        self._uids.pop(final["metadata"].get("uid", ""), None)
        self._reindex(rt, obj, None)
        self.hub.record(self._rv, rt.storage_key, final, None)
        for listener in list(self.on_removed):
            listener(rt, final)
        return final

    def _trim(self, key: ObjectKey) -> None:
        history = self.objects[key].history
        if len(history) > HISTORY_DEPTH:
            del history[: len(history) - HISTORY_DEPTH]

    def _reindex(self, rt: ResourceType, old: JsonDict | None, new: JsonDict | None) -> None:
        current = new if new is not None else old
        assert current is not None
        meta = current["metadata"]
        ident = (meta.get("namespace") if rt.namespaced else None, meta["name"])
        ref: Ref = (rt.storage_key, *ident)
        index = self._index.setdefault(rt.storage_key, {})
        by_label = self._labels.setdefault(rt.storage_key, {})
        old_meta = (old or {}).get("metadata", {})
        old_labels, old_owners = old_meta.get("labels") or {}, old_meta.get("ownerReferences") or []
        labels = (meta.get("labels") or {}) if new is not None else {}
        owners = (meta.get("ownerReferences") or []) if new is not None else []
        if labels != old_labels:  # (a status write changes neither: nothing to move)
            for pair in old_labels.items():
                by_label.get(pair, set()).discard(ident)
            for pair in labels.items():
                by_label.setdefault(pair, set()).add(ident)
        if owners != old_owners:
            for owner in old_owners:
                self._owned.get(owner.get("uid", ""), set()).discard(ref)
            for owner in owners:
                self._owned.setdefault(owner.get("uid", ""), set()).add(ref)
        self._terminating.discard(ref)
        if new is None:
            index.pop(ident, None)
            return
        index[ident] = self.key(rt, ident[0], ident[1])
        if meta.get("deletionTimestamp"):
            self._terminating.add(ref)
