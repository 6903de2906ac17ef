"""The three PATCH flavours of kube-apiserver: JSON merge, JSON patch and strategic merge.

kmock merges dicts its own way (a scalar over a dict is an error, lists are never merged by
key); kubectl sends strategic merge patches for built-in kinds and kopf sends merge patches,
so the emulator applies patches here the way the API server does.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

# Lists in built-in kinds that a strategic merge patch merges by a key, not replaces.
_MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "ports": "containerPort",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "volumes": "name",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "containerStatuses": "name",
    "resourceClaims": "name",
}
# Lists of scalars that a strategic merge patch unions instead of replacing.
_MERGE_PRIMITIVES = {"finalizers"}


def json_copy(value: Any) -> Any:
    """A deep copy of a JSON value (dicts, lists, immutable scalars): what ``copy.deepcopy``
    does for these, 4-5x faster (no memo, no dispatch). Every write copies the stored
    object two or three times: the emulator's largest cost at a slot of 10,000 Jobs."""
    if isinstance(value, dict):
        return {k: json_copy(v) if isinstance(v, (dict, list)) else v for k, v in value.items()}
    if isinstance(value, list):
        return [json_copy(v) if isinstance(v, (dict, list)) else v for v in value]
    if value is None or isinstance(value, (str, int, float)):
        return value  # immutable (bool is an int)
    return copy.deepcopy(value)


class PatchError(ValueError):
    """A patch that cannot be applied (the API server answers 422)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge recursively, ``null`` deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return json_copy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: dict[str, Any], ops: Any) -> dict[str, Any]:
    """RFC 6902 JSON patch."""
    if not isinstance(ops, list):
        raise PatchError("json patch must be a list of operations")
    try:
        result: dict[str, Any] = jsonpatch.apply_patch(json_copy(target), ops)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, KeyError) as e:
        raise PatchError(str(e)) from e
    return result


def strategic_merge_patch(target: Any, patch: Any, field: str = "") -> Any:
    """An approximation of the strategic merge patch for built-in kinds.

    Supports merge keys for the common lists, ``$patch: delete|replace`` and
    ``$deleteFromPrimitiveList/<field>``; ``$setElementOrder`` and ``$retainKeys`` are ignored.
    """
    if not isinstance(patch, dict):
        return json_copy(patch)
    if patch.get("$patch") == "replace":
        return {k: json_copy(v) for k, v in patch.items() if k != "$patch"}
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            result[name] = [v for v in result.get(name) or [] if v not in (value or [])]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and key in _MERGE_KEYS:
            result[key] = _merge_list(result.get(key) or [], value, _MERGE_KEYS[key], key)
        elif isinstance(value, list) and key in _MERGE_PRIMITIVES:
            merged = list(result.get(key) or [])
            merged += [v for v in value if v not in merged]
            result[key] = merged
        else:
            result[key] = strategic_merge_patch(result.get(key), value, key)
    return result


def _merge_list(old: list[Any], patch: list[Any], merge_key: str, field: str) -> list[Any]:
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [json_copy(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)]
    result = [json_copy(item) for item in old]
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            result.append(json_copy(item))
            continue
        idx = next(
            (
                i
                for i, o in enumerate(result)
                if isinstance(o, dict) and o.get(merge_key) == item[merge_key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if idx is not None:
                del result[idx]
        elif idx is None:
            result.append({k: v for k, v in json_copy(item).items() if v is not None})
        else:
            result[idx] = strategic_merge_patch(result[idx], item, field)
    return result
