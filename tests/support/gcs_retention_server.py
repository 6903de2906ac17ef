"""gcp-storage-emulator that keeps and enforces object retention and holds (a test stand-in).

The emulator drops an object's ``retention``, ``temporaryHold`` and
``eventBasedHold`` and deletes anything; GCS keeps them and refuses (403) to
delete an object whose retain-until time has not passed or that is held, and
to shorten a ``Locked`` retention. This script patches exactly that into the
emulator's object handlers before its server module reads them, then runs its
usual command line (``start --host ... --port ...``). See
``tests/support/lock_stores.py``.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

_KEPT = ("retention", "temporaryHold", "eventBasedHold")
objects._WRITABLE_FIELDS = (*objects._WRITABLE_FIELDS, *_KEPT)  # type: ignore[attr-defined]


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _refusal(obj: dict[str, Any]) -> str:
    if obj.get("temporaryHold") or obj.get("eventBasedHold"):
        return "Object is under active hold"
    until = (obj.get("retention") or {}).get("retainUntilTime")
    if until and _time(until) > datetime.now(UTC):
        return f"Object is subject to active retention until {until}"
    return ""


def _forbidden(response: Any, message: str) -> None:
    response.status = HTTPStatus.FORBIDDEN
    response.json({"error": {"code": 403, "message": message,
                             "errors": [{"reason": "forbidden", "message": message}]}})  # fmt: skip


def _existing(storage: Any, request: Any) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = storage.get_file_obj(
            request.params["bucket_name"], request.params["object_id"]
        )
        return obj
    except NotFound:
        return None


_delete, _patch = objects.delete, objects.patch


def delete(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> None:
    obj = _existing(storage, request)
    if obj is not None and (why := _refusal(obj)):
        return _forbidden(response, why)
    _delete(request, response, storage, *args, **kwargs)


def patch(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> None:
    obj = _existing(storage, request)
    old = (obj or {}).get("retention") or {}
    new = (request.data or {}).get("retention")
    if old.get("mode") == "Locked" and new is not None:
        shorter = _time(new.get("retainUntilTime") or "1970-01-01T00:00:00Z") < _time(
            old["retainUntilTime"]
        )
        if shorter or new.get("mode") != "Locked":
            return _forbidden(response, "A Locked retention can only be extended")
    _patch(request, response, storage, *args, **kwargs)


objects.delete, objects.patch = delete, patch

if __name__ == "__main__":
    from gcp_storage_emulator.__main__ import main  # reads the patched handlers

    main(sys.argv[1:])
