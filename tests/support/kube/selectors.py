"""Label and field selectors as kube-apiserver parses them.

kmock ignores ``labelSelector``/``fieldSelector``; kopf, kubectl (``get -l``, ``wait``) and
controllers rely on them for lists and watches, so the emulator filters with this module.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Predicate = Callable[[Mapping[str, Any]], bool]

_SET_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(in|notin)\s*\((.*)\))?\s*$")
_OP_RE = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|!=|=)\s*([A-Za-z0-9_.-]*)\s*$")


class SelectorError(ValueError):
    """An unparseable selector (the API server answers 400 Bad Request)."""


def _split_requirements(text: str) -> list[str]:
    """Split on commas that are not inside ``in (...)`` parentheses."""
    parts: list[str] = []
    depth, current = 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part for part in parts if part.strip()]


def parse_label_selector(text: str | None) -> Predicate:
    """Return a predicate over an object's labels for ``a=b,c!=d,e in (f,g),!h,i``."""
    if not text or not text.strip():
        return lambda labels: True
    checks: list[Predicate] = []
    for req in _split_requirements(text):
        if m := _OP_RE.match(req):
            key, op, value = m.groups()
            if op == "!=":
                checks.append(_label_not_equal(key, value))
            else:
                checks.append(_label_equal(key, value))
        elif m := _SET_RE.match(req):
            neg, key, op, values = m.groups()
            if op:
                if neg:
                    raise SelectorError(f"unable to parse requirement: {req!r}")
                vals = {v.strip() for v in values.split(",") if v.strip()}
                if op == "in":
                    checks.append(_label_in(key, vals))
                else:
                    checks.append(_label_not_in(key, vals))
            elif neg:
                checks.append(_label_absent(key))
            else:
                checks.append(_label_present(key))
        else:
            raise SelectorError(f"unable to parse requirement: {req!r}")
    return lambda labels: all(check(labels) for check in checks)


def equalities(text: str | None) -> list[tuple[str, str]]:
    """The ``key=value`` / ``key==value`` requirements of a label selector (every object
    that matches carries these labels), for an index lookup; [] if there are none."""
    if not text or not text.strip():
        return []
    pairs = []
    for req in _split_requirements(text):
        m = _OP_RE.match(req)
        if m and m.group(2) != "!=":
            pairs.append((m.group(1), m.group(3)))
    return pairs


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_field_selector(text: str | None) -> Predicate:
    """Return a predicate over a whole object for ``metadata.name=x,status.phase!=Running``.

    A real server supports only a per-resource list of fields; any dotted path works here.
    """
    if not text or not text.strip():
        return lambda obj: True
    checks: list[Predicate] = []
    for req in _split_requirements(text):
        m = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|!=|=)\s*(.*?)\s*$", req)
        if not m:
            raise SelectorError(f"invalid selector: {req!r}; can't understand {req!r}")
        path, op, value = m.groups()
        if op == "!=":
            checks.append(_field_not_equal(path, value))
        else:
            checks.append(_field_equal(path, value))
    return lambda obj: all(check(obj) for check in checks)


# One predicate per requirement (closures, so each keeps its own key and values).


def _label_equal(key: str, value: str) -> Predicate:
    return lambda labels: key in labels and labels[key] == value


def _label_not_equal(key: str, value: str) -> Predicate:
    return lambda labels: labels.get(key) != value


def _label_in(key: str, values: set[str]) -> Predicate:
    return lambda labels: key in labels and labels[key] in values


def _label_not_in(key: str, values: set[str]) -> Predicate:
    return lambda labels: labels.get(key) not in values


def _label_present(key: str) -> Predicate:
    return lambda labels: key in labels


def _label_absent(key: str) -> Predicate:
    return lambda labels: key not in labels


def _field_equal(path: str, value: str) -> Predicate:
    return lambda obj: _field_value(obj, path) == value


def _field_not_equal(path: str, value: str) -> Predicate:
    return lambda obj: _field_value(obj, path) != value
