"""Structural-schema handling of custom resources, as kube-apiserver does it for CRDs.

kmock stores whatever it is sent. A real API server prunes unknown fields, applies
``default``s, validates against the CRD's ``openAPIV3Schema`` and its CEL
``x-kubernetes-validations``, and refuses with 422 and messages such as
``spec.schedule: Invalid value: "x": spec.schedule in body should match '^...$'``. Tests of
CRDs and of a controller's error handling need those answers, so the emulator uses this module.

CEL rules are evaluated with ``cel-python`` (``celpy``) when it is installed; without it they
are skipped (see :data:`CEL_AVAILABLE`). Only a few of the Kubernetes CEL library functions
are provided (string helpers, ``isSorted``/``sum``/``min``/``max``); cost limits are not.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

try:
    import celpy
    import celpy.adapter
    import celpy.celtypes as celtypes

    CEL_AVAILABLE = True
except ImportError:  # pragma: no cover - depends on the environment
    CEL_AVAILABLE = False

_MISSING = object()


@dataclass(frozen=True)
class FieldError:
    """One field error, rendered like k8s.io/apimachinery's ``field.Error``."""

    kind: str  # Invalid | Required | NotSupported | TooMany | TooLong | Duplicate | Forbidden
    path: str
    value: Any = None
    detail: str = ""

    @property
    def reason(self) -> str:
        return {
            "Invalid": "FieldValueInvalid",
            "Required": "FieldValueRequired",
            "NotSupported": "FieldValueNotSupported",
            "TooMany": "FieldValueTooMany",
            "TooLong": "FieldValueTooLong",
            "Duplicate": "FieldValueDuplicate",
            "Forbidden": "FieldValueForbidden",
        }[self.kind]

    @property
    def body(self) -> str:
        """The message without the field path (a Status cause's ``message``)."""
        value = format_value(self.value)
        match self.kind:
            case "Required":
                return "Required value" + (f": {self.detail}" if self.detail else "")
            case "NotSupported":
                return f"Unsupported value: {value}: {self.detail}"
            case "TooMany":
                return f"Too many: {value}: {self.detail}"
            case "TooLong":
                return f"Too long: {self.detail}"
            case "Duplicate":
                return f"Duplicate value: {value}"
            case "Forbidden":
                return f"Forbidden: {self.detail}"
            case _:
                return f"Invalid value: {value}: {self.detail}"

    def __str__(self) -> str:
        return f"{self.path}: {self.body}" if self.path else self.body


def format_value(value: Any) -> str:
    """Format a value the way Go's field errors do (strings quoted, objects by type name)."""
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# (a tuple, not ``int | float``, in isinstance: a union is built anew at each evaluation)
_DATE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


#: Keys that do not constrain a value beyond its ``type`` (a number's ``format`` is not checked).
_DESCRIPTIVE = frozenset({"type", "description", "title", "example", "externalDocs"})
_PLAIN: dict[int, tuple[dict[str, Any], str | None]] = {}


def _plain_type(schema: dict[str, Any]) -> str | None:
    """The ``type`` of a schema that asks nothing else of a scalar value (most fields of a
    status), else None; remembered per schema."""
    hit = _PLAIN.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    typ = schema.get("type")
    extra = schema.keys() - _DESCRIPTIVE
    if typ in ("integer", "number"):
        extra -= {"format"}
    plain = typ if typ in ("string", "integer", "number", "boolean") and not extra else None
    if len(_PLAIN) >= 20_000:
        _PLAIN.clear()  # bounded (CRDs come and go in tests)
    _PLAIN[id(schema)] = (schema, plain)
    return plain


def _map_key(item: dict[str, Any], keys: list[str]) -> tuple[Any, ...] | str:
    """The identity of an item of a map list (``x-kubernetes-list-map-keys``)."""
    values = tuple(item.get(k) for k in keys)
    if all(v is None or isinstance(v, (str, int, float)) for v in values):
        return values
    return json.dumps(values, sort_keys=True, default=str)  # not hashable as they are


def _is_type(value: Any, typ: str) -> bool:
    match typ:
        case "object":
            return isinstance(value, dict)
        case "array":
            return isinstance(value, list)
        case "string":
            return isinstance(value, str)
        case "boolean":
            return isinstance(value, bool)
        case "integer":
            return (isinstance(value, int) and not isinstance(value, bool)) or (
                isinstance(value, float) and value.is_integer()
            )
        case "number":
            return isinstance(value, (int, float)) and not isinstance(value, bool)
    return True


# ---------------------------------------------------------------------------------------------
# Pruning and defaulting


def prune(
    obj: Any,
    schema: dict[str, Any],
    path: str = "",
    root: bool = False,
    skip: frozenset[str] = frozenset(),
) -> list[str]:
    """Drop fields the schema does not declare (in place); return their paths (``skip``:
    top-level keys left as they are)."""
    pruned: list[str] = []
    if isinstance(obj, dict):
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        props: dict[str, Any] = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        keep = (
            {"apiVersion", "kind", "metadata"}
            if (root or schema.get("x-kubernetes-embedded-resource"))
            else set()
        )
        for key in list(obj):
            if key in keep or key in skip:  # ObjectMeta is the server's business
                continue
            if key in props:
                if isinstance(obj[key], (dict, list)):  # (a scalar has nothing to prune)
                    pruned += prune(obj[key], props[key], _join(path, key))
            elif isinstance(additional, dict):
                if isinstance(obj[key], (dict, list)):
                    pruned += prune(obj[key], additional, f"{path}[{key}]")
            elif additional is True or preserve:
                continue
            else:
                pruned.append(_join(path, key))
                del obj[key]
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            pruned += prune(item, schema["items"], f"{path}[{i}]")
    return pruned


#: id(schema) -> (the schema, whether a ``default`` is declared in it or below it).
_DEFAULTS_BELOW: dict[int, tuple[dict[str, Any], bool]] = {}


def _has_defaults(schema: dict[str, Any]) -> bool:
    """Whether ``schema`` declares a ``default`` anywhere below it (remembered per schema:
    most of a CRD, a status, has none, and defaulting need not walk it)."""
    hit = _DEFAULTS_BELOW.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    subs = list((schema.get("properties") or {}).values())
    subs += [schema.get("items"), schema.get("additionalProperties")]
    found = any("default" in sub or _has_defaults(sub) for sub in subs if isinstance(sub, dict))
    if len(_DEFAULTS_BELOW) >= 20_000:
        _DEFAULTS_BELOW.clear()  # bounded (CRDs come and go in tests)
    _DEFAULTS_BELOW[id(schema)] = (schema, found)
    return found


def apply_defaults(obj: Any, schema: dict[str, Any], skip: frozenset[str] = frozenset()) -> None:
    """Fill in ``default``s of absent (or null, when not nullable) properties, in place
    (``skip``: top-level keys left as they are)."""
    if not _has_defaults(schema):
        return
    if isinstance(obj, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in skip:
                continue
            if "default" in sub and (
                key not in obj or (obj[key] is None and not sub.get("nullable"))
            ):
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                apply_defaults(obj[key], sub)
        if isinstance(schema.get("additionalProperties"), dict):
            for key, value in obj.items():
                if key not in (schema.get("properties") or {}):
                    apply_defaults(value, schema["additionalProperties"])
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            apply_defaults(item, schema["items"])


def drop_nulls(obj: Any, schema: dict[str, Any], skip: frozenset[str] = frozenset()) -> None:
    """Remove nulls of non-nullable fields (the API server prunes them before defaulting;
    ``skip``: top-level keys left as they are)."""
    if isinstance(obj, dict):
        props = schema.get("properties") or {}
        for key in list(obj):
            sub = props.get(key)
            if sub is None or key in skip:
                continue
            if obj[key] is None and not sub.get("nullable"):
                del obj[key]
            elif isinstance(obj[key], dict):
                drop_nulls(obj[key], sub)


# ---------------------------------------------------------------------------------------------
# Validation


class Validator:
    """Validate a value against a structural schema; collect :class:`FieldError`s."""

    def __init__(self, old: Any = _MISSING) -> None:
        self.errors: list[FieldError] = []
        self.old = old

    def validate(self, value: Any, schema: dict[str, Any], path: str, old: Any = _MISSING) -> None:
        if old is not _MISSING and value == old:
            return  # validation ratcheting (on since Kubernetes 1.30): unchanged values pass
        plain = _plain_type(schema)
        if plain is not None and value is not None and _is_type(value, plain):
            return  # a value of the right type, which is all its schema asks
        count = len(self.errors)
        self._validate_value(value, schema, path, old)
        rules = schema.get("x-kubernetes-validations")
        # CEL rules run alongside the schema checks, unless this very value has the wrong type.
        if rules and not any(
            e.path == path and "must be of type" in e.detail for e in self.errors[count:]
        ):
            for rule in rules:
                self._cel(value, rule, path, old)

    def _validate_value(self, value: Any, schema: dict[str, Any], path: str, old: Any) -> None:
        if value is None:
            if not schema.get("nullable") and schema.get("type"):
                self.errors.append(
                    FieldError(
                        "Invalid",
                        path,
                        "null",
                        f'{path} in body must be of type {schema["type"]}: "null"',
                    )
                )
            return
        typ = schema.get("type")
        if schema.get("x-kubernetes-int-or-string"):
            if not isinstance(value, (int, str)) or isinstance(value, bool):
                self.errors.append(
                    FieldError(
                        "Invalid",
                        path,
                        type_name(value),
                        f'{path} in body must be of type integer,string: "{type_name(value)}"',
                    )
                )
                return
        elif typ and not _is_type(value, typ):
            self.errors.append(
                FieldError(
                    "Invalid",
                    path,
                    type_name(value),
                    f'{path} in body must be of type {typ}: "{type_name(value)}"',
                )
            )
            return

        if "enum" in schema and value not in schema["enum"]:
            supported = ", ".join(format_value(v) for v in schema["enum"])
            self.errors.append(
                FieldError("NotSupported", path, value, f"supported values: {supported}")
            )

        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self._numbers(value, schema, path)
        if isinstance(value, str):
            self._strings(value, schema, path)
        if isinstance(value, list):
            self._arrays(value, schema, path, old)
        if isinstance(value, dict):
            self._objects(value, schema, path, old)

        for key in ("allOf", "anyOf", "oneOf", "not"):
            if key in schema:
                self._combinators(key, value, schema[key], path)

    def _numbers(self, value: float, schema: dict[str, Any], path: str) -> None:
        if "minimum" in schema:
            lo = schema["minimum"]
            if schema.get("exclusiveMinimum") is True and value <= lo:
                self.errors.append(
                    FieldError(
                        "Invalid", path, value, f"{path} in body should be greater than {lo}"
                    )
                )
            elif value < lo:
                self.errors.append(
                    FieldError(
                        "Invalid",
                        path,
                        value,
                        f"{path} in body should be greater than or equal to {lo}",
                    )
                )
        if "maximum" in schema:
            hi = schema["maximum"]
            if schema.get("exclusiveMaximum") is True and value >= hi:
                self.errors.append(
                    FieldError("Invalid", path, value, f"{path} in body should be less than {hi}")
                )
            elif value > hi:
                self.errors.append(
                    FieldError(
                        "Invalid",
                        path,
                        value,
                        f"{path} in body should be less than or equal to {hi}",
                    )
                )
        if schema.get("multipleOf") and value % schema["multipleOf"]:
            self.errors.append(
                FieldError(
                    "Invalid",
                    path,
                    value,
                    f"{path} in body should be a multiple of {schema['multipleOf']}",
                )
            )

    def _strings(self, value: str, schema: dict[str, Any], path: str) -> None:
        if "minLength" in schema and len(value) < schema["minLength"]:
            self.errors.append(
                FieldError(
                    "Invalid",
                    path,
                    value,
                    f"{path} in body should be at least {schema['minLength']} chars long",
                )
            )
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            self.errors.append(
                FieldError(
                    "TooLong", path, value, f"may not be more than {schema['maxLength']} bytes"
                )
            )
        if "pattern" in schema and not re.search(schema["pattern"], value):
            self.errors.append(
                FieldError(
                    "Invalid", path, value, f"{path} in body should match '{schema['pattern']}'"
                )
            )
        fmt = schema.get("format")
        if fmt == "date-time" and not _DATE_TIME.match(value):
            self.errors.append(
                FieldError(
                    "Invalid",
                    path,
                    value,
                    f"{path} in body must be of type date-time: {format_value(value)}",
                )
            )

    def _arrays(self, value: list[Any], schema: dict[str, Any], path: str, old: Any) -> None:
        if "minItems" in schema and len(value) < schema["minItems"]:
            self.errors.append(
                FieldError(
                    "Invalid",
                    path,
                    len(value),
                    f"{path} in body should have at least {schema['minItems']} items",
                )
            )
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            self.errors.append(
                FieldError(
                    "TooMany", path, len(value), f"must have at most {schema['maxItems']} items"
                )
            )
        if schema.get("uniqueItems") or schema.get("x-kubernetes-list-type") == "set":
            seen: list[Any] = []
            for i, item in enumerate(value):
                if item in seen:
                    self.errors.append(FieldError("Duplicate", f"{path}[{i}]", item))
                seen.append(item)
        if isinstance(schema.get("items"), dict):
            # Items of a map list are correlated with the old items of the same keys (their
            # ratcheting and CEL transition rules see them), as kube-apiserver does.
            keys = schema.get("x-kubernetes-list-map-keys") or []
            old_items: dict[tuple[Any, ...] | str, Any] = {}
            if keys and schema.get("x-kubernetes-list-type") == "map" and isinstance(old, list):
                old_items = {_map_key(o, keys): o for o in old if isinstance(o, dict)}
            for i, item in enumerate(value):
                old_item = (
                    old_items.get(_map_key(item, keys), _MISSING)
                    if old_items and isinstance(item, dict)
                    else _MISSING
                )
                self.validate(item, schema["items"], f"{path}[{i}]", old_item)

    def _objects(self, value: dict[str, Any], schema: dict[str, Any], path: str, old: Any) -> None:
        for key in schema.get("required") or []:
            if key not in value:
                self.errors.append(FieldError("Required", _join(path, key)))
        props: dict[str, Any] = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            old_item = old.get(key, _MISSING) if isinstance(old, dict) else _MISSING
            if key in props:
                self.validate(item, props[key], _join(path, key), old_item)
            elif isinstance(additional, dict):
                self.validate(item, additional, f"{path}[{key}]", old_item)
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            self.errors.append(
                FieldError(
                    "Invalid",
                    path,
                    len(value),
                    f"{path} in body should have at least {schema['minProperties']} properties",
                )
            )
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            self.errors.append(
                FieldError(
                    "TooMany",
                    path,
                    len(value),
                    f"must have at most {schema['maxProperties']} items",
                )
            )

    def _combinators(self, key: str, value: Any, subs: Any, path: str) -> None:
        def ok(sub: dict[str, Any]) -> bool:
            v = Validator()
            v._validate_value(value, sub, path, _MISSING)
            return not v.errors

        label = path or "<root>"
        if key == "allOf":
            for sub in subs:
                self._validate_value(value, sub, path, _MISSING)
        elif key == "anyOf" and not any(ok(s) for s in subs):
            self.errors.append(
                FieldError(
                    "Invalid",
                    path,
                    value,
                    f"{label} in body must validate at least one schema (anyOf)",
                )
            )
        elif key == "oneOf" and sum(ok(s) for s in subs) != 1:
            self.errors.append(
                FieldError(
                    "Invalid",
                    path,
                    value,
                    f"{label} in body must validate one and only one schema (oneOf)",
                )
            )
        elif key == "not" and ok(subs):
            self.errors.append(
                FieldError(
                    "Invalid", path, value, f"{label} in body must not validate the schema (not)"
                )
            )

    # -- CEL ------------------------------------------------------------------------------------

    def _cel(self, value: Any, rule: dict[str, Any], path: str, old: Any) -> None:
        if not CEL_AVAILABLE:
            return
        expr = rule["rule"]
        uses_old = "oldSelf" in expr
        if uses_old and old is _MISSING:
            return  # transition rules only run on updates with an old value
        result = _cel_result(expr, value, old if uses_old else _MISSING)
        if result is True:
            return
        activation: dict[str, Any] = {"self": celpy.adapter.json_to_cel(value)}
        if uses_old:
            activation["oldSelf"] = celpy.adapter.json_to_cel(old)
        field = path
        if rule.get("fieldPath"):
            field = (
                path + rule["fieldPath"]
                if rule["fieldPath"].startswith("[")
                else (_join(path, rule["fieldPath"].lstrip(".")))
            )
        if isinstance(result, Exception):
            message = f"rule evaluation error: {result}"
        elif rule.get("messageExpression"):
            msg = evaluate_cel(rule["messageExpression"], activation)
            message = msg if isinstance(msg, str) else rule.get("message") or f"failed rule: {expr}"
        else:
            message = rule.get("message") or f"failed rule: {expr}"
        reason = rule.get("reason", "FieldValueInvalid")
        if reason == "FieldValueRequired":
            self.errors.append(FieldError("Required", field, detail=message))
        elif reason == "FieldValueForbidden":
            self.errors.append(FieldError("Forbidden", field, detail=message))
        else:
            self.errors.append(FieldError("Invalid", field, value, message))


_CEL_CACHE: dict[str, Any] = {}
#: (rule, self, oldSelf) as JSON -> the rule's result. A rule is a pure function of
#: ``self`` and ``oldSelf``, and celpy interprets it slowly (5 ms a rule: 85% of the cost of
#: a RedisBackup write, every status patch included), while thousands of writes carry the
#: same values (a status patch leaves the spec as it was): the same answer, remembered.
_CEL_RESULTS: dict[tuple[str, str, str | None], Any] = {}
CEL_RESULTS_MAX = 20_000


def _cel_result(expr: str, value: Any, old: Any) -> Any:
    """:func:`evaluate_cel` of ``expr`` on ``self=value`` (and ``oldSelf=old`` unless
    missing), remembered for the same JSON values."""
    old_json = None if old is _MISSING else json.dumps(old, sort_keys=True, default=str)
    key = (expr, json.dumps(value, sort_keys=True, default=str), old_json)
    if key in _CEL_RESULTS:
        return _CEL_RESULTS[key]
    activation: dict[str, Any] = {"self": celpy.adapter.json_to_cel(value)}
    if old is not _MISSING:
        activation["oldSelf"] = celpy.adapter.json_to_cel(old)
    result = evaluate_cel(expr, activation)
    if len(_CEL_RESULTS) >= CEL_RESULTS_MAX:
        _CEL_RESULTS.clear()  # bounded; a plain dict stays safe across emulator threads
    _CEL_RESULTS[key] = result
    return result


def _k8s_functions() -> dict[str, Callable[..., Any]]:
    """A few functions of the Kubernetes CEL libraries that celpy lacks."""
    s = celtypes.StringType
    return {
        "lowerAscii": lambda v: s(str(v).lower()),
        "upperAscii": lambda v: s(str(v).upper()),
        "trim": lambda v: s(str(v).strip()),
        "split": lambda v, sep: celtypes.ListType([s(p) for p in str(v).split(str(sep))]),
        "join": lambda v, sep=s(""): s(str(sep).join(str(x) for x in v)),
        "indexOf": lambda v, sub: celtypes.IntType(
            str(v).find(str(sub)) if isinstance(v, str) else list(v).index(sub)
        ),
        "replace": lambda v, a, b: s(str(v).replace(str(a), str(b))),
        "isSorted": lambda v: celtypes.BoolType(list(v) == sorted(v)),
        "sum": lambda v: sum(v),
        "min": lambda v: min(v),
        "max": lambda v: max(v),
    }


def compile_cel(expr: str) -> Any:
    """Compile (and cache) a CEL rule; raises ``ValueError`` with the parser's message."""
    if expr not in _CEL_CACHE:
        env = celpy.Environment()
        try:
            ast = env.compile(expr)
        except Exception as e:  # celpy raises CELParseError and friends
            raise ValueError(f"compilation failed: {e}") from e
        _CEL_CACHE[expr] = env.program(ast, functions=_k8s_functions())
    return _CEL_CACHE[expr]


def evaluate_cel(expr: str, activation: dict[str, Any]) -> Any:
    """Evaluate a rule: ``True``/``False``, a string (for messageExpression), or the error."""
    try:
        result = compile_cel(expr).evaluate(activation)
    except Exception as e:
        return e
    if isinstance(result, Exception):  # celpy returns CELEvalError values
        return result
    if isinstance(result, celtypes.BoolType):
        return bool(result)
    if isinstance(result, celtypes.StringType):
        return str(result)
    return result


def check_cel_rules(schema: Any, path: str = "openAPIV3Schema") -> list[FieldError]:
    """Compile every CEL rule of a schema (a CRD with a bad rule is refused)."""
    errors: list[FieldError] = []
    if not isinstance(schema, dict) or not CEL_AVAILABLE:
        return errors
    for i, rule in enumerate(schema.get("x-kubernetes-validations") or []):
        try:
            compile_cel(rule.get("rule", ""))
        except ValueError as e:
            errors.append(
                FieldError(
                    "Invalid",
                    f"{path}.x-kubernetes-validations[{i}].rule",
                    rule.get("rule"),
                    str(e),
                )
            )
    for key, sub in (schema.get("properties") or {}).items():
        errors += check_cel_rules(sub, f"{path}.properties[{key}]")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            errors += check_cel_rules(schema[key], f"{path}.{key}")
    return errors


def process_custom_resource(
    obj: dict[str, Any], schema: dict[str, Any], old: dict[str, Any] | None = None
) -> tuple[list[str], list[FieldError]]:
    """Prune, default and validate a custom resource in place: (pruned paths, errors).

    On an update, a top-level part that *is* the stored version's (the same object, as the
    spec of a status write) was pruned and defaulted when it was stored and is not walked
    again (as validation ratcheting passes unchanged values): a status write of a large
    spec costs what its status costs."""
    kept = (
        frozenset(k for k, v in obj.items() if k in old and old[k] is v and isinstance(v, dict))
        if old
        else frozenset()
    )
    drop_nulls(obj, schema, kept)
    pruned = prune(obj, schema, root=True, skip=kept)
    apply_defaults(obj, schema, kept)
    validator = Validator()
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    old_body = (
        {k: v for k, v in old.items() if k not in ("apiVersion", "kind", "metadata")}
        if old
        else _MISSING
    )
    validator.validate(body, _body_schema(schema), "", old_body)
    return pruned, validator.errors


_BODY_SCHEMAS: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}


def _body_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The root schema as the body (without apiVersion, kind, metadata) is validated against,
    made once per schema (the per-schema caches of the validator then apply to it too)."""
    hit = _BODY_SCHEMAS.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    body = {k: v for k, v in schema.items() if k != "required"}
    body.setdefault("properties", {})
    body["required"] = [
        r for r in schema.get("required") or [] if r not in ("apiVersion", "kind", "metadata")
    ]
    if len(_BODY_SCHEMAS) >= 1000:
        _BODY_SCHEMAS.clear()  # bounded (CRDs come and go in tests)
    _BODY_SCHEMAS[id(schema)] = (schema, body)
    return body
