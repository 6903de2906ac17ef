"""The errors kube-apiserver answers, as ``Status`` bodies, with its exact wording.

Why a module of its own: clients act on a Status's ``code`` and ``reason`` (kopf retries 409s,
kubectl rewords a 422 from ``details.causes``), so the wording must match the real server's
and be the same wherever the emulator refuses something. Every part (store, admission,
deletion, controllers) raises :class:`ApiError`; only the HTTP front renders it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import schema

if TYPE_CHECKING:
    from .resources import ResourceType

JsonDict = dict[str, Any]


class ApiError(Exception):
    """An error answered with a ``Status`` body, as kube-apiserver does."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: JsonDict | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details = details
        self.headers = headers or {}

    def status(self) -> JsonDict:
        body: JsonDict = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def no_such_resource() -> ApiError:
    """404 for a URL that names no served resource (or a wrong scope or subresource)."""
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{rt.qualified_resource} "{name}" not found',
        {"name": name, "group": rt.group, "kind": rt.plural},
    )


def conflict(rt: ResourceType, name: str) -> ApiError:
    """409 for a write based on a stale resourceVersion."""
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.qualified_resource} "{name}": the object has '
        "been modified; please apply your changes to the latest version and try again",
        {"name": name, "group": rt.group, "kind": rt.plural},
    )


def invalid(rt: ResourceType, name: str, errors: list[schema.FieldError]) -> ApiError:
    """422 Invalid with one cause per field error (kubectl prints them from the causes)."""
    text = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(map(str, errors)) + "]"
    return ApiError(
        422,
        "Invalid",
        f'{rt.qualified_kind} "{name}" is invalid: {text}',
        {
            "name": name,
            "group": rt.group,
            "kind": rt.kind,
            "causes": [{"reason": e.reason, "message": e.body, "field": e.path} for e in errors],
        },
    )
