"""Reading a raw ``spec`` field by field (pure).

Typed getters for the dicts a custom resource's ``spec`` is made of: each
reads one field, applies its default, checks its type and range, and names
the field by its path (``spec.target.port``) in the :class:`SpecError` it
raises. :mod:`backupctl.controller.spec` builds the spec dataclasses with
them; the error lives here because these getters are what raise it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: A Kubernetes object name (RFC 1123 subdomain).
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
ENDPOINT = re.compile(r"^https?://[^\s/]+(/\S*)?$")


class SpecError(ValueError):
    """A spec a user wrote cannot work. ``str()`` is ``<path>: <message>``."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def obj(value: Any, p: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(p, "must be an object")
    return value


def opt_str(d: Mapping[str, Any], k: str, p: str) -> str | None:
    v = d.get(k)
    if v is None:
        return None
    if not isinstance(v, str):
        raise SpecError(f"{p}.{k}", "must be a string")
    if not v.strip():
        raise SpecError(f"{p}.{k}", "must not be empty")
    return v


def req_str(d: Mapping[str, Any], k: str, p: str) -> str:
    v = opt_str(d, k, p)
    if v is None:
        raise SpecError(f"{p}.{k}", "is required")
    return v


def opt_bool(d: Mapping[str, Any], k: str, p: str, default: bool) -> bool:
    v = d.get(k)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise SpecError(f"{p}.{k}", "must be true or false")
    return v


def opt_int(
    d: Mapping[str, Any], k: str, p: str, *, minimum: int, maximum: int | None = None
) -> int | None:
    v = d.get(k)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise SpecError(f"{p}.{k}", "must be a whole number")
    if v < minimum:
        raise SpecError(f"{p}.{k}", f"must be {minimum} or more, not {v}")
    if maximum is not None and v > maximum:
        raise SpecError(f"{p}.{k}", f"must be {maximum} or less, not {v}")
    return v


def int_default(d: Mapping[str, Any], k: str, p: str, default: int) -> int:
    v = opt_int(d, k, p, minimum=0)
    return default if v is None else v


def enum(d: Mapping[str, Any], k: str, p: str, allowed: tuple[str, ...]) -> str:
    v = d.get(k)
    if v is None:
        return allowed[0]
    if v not in allowed:
        raise SpecError(f"{p}.{k}", f"must be one of {', '.join(allowed)}, not {v!r}")
    return str(v)


def check_name(value: str, p: str, pattern: re.Pattern[str]) -> None:
    if len(value) > 253 or not pattern.match(value):
        raise SpecError(
            p, f"{value!r} is not a Kubernetes name (lower-case letters, digits, '-' and '.')"
        )


def opt_endpoint(d: Mapping[str, Any], p: str) -> str | None:
    v = opt_str(d, "endpoint", p)
    if v is not None and not ENDPOINT.match(v):
        raise SpecError(f"{p}.endpoint", f"{v!r} is not an http(s) URL")
    return v


__all__ = [
    "DNS_SUBDOMAIN",
    "SpecError",
    "check_name",
    "enum",
    "int_default",
    "obj",
    "opt_bool",
    "opt_endpoint",
    "opt_int",
    "opt_str",
    "req_str",
]
