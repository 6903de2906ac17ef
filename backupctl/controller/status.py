"""The status vocabulary both controllers share (pure): conditions with
``metav1.Condition`` semantics, Events, and the clipping of messages that go
into status and Events."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from backupctl.core.timefmt import format_time

#: Longest message copied into a condition or an Event.
MESSAGE_LIMIT = 1024


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post about the resource."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def clip(message: object, limit: int = MESSAGE_LIMIT) -> str:
    """``message`` on one line, cut to ``limit`` characters with an ellipsis."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    """The condition of that type in ``status`` ({} when there is none)."""
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), {})


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    ok: bool,
    reason: str,
    message: str,
    *,
    now: datetime,
    generation: int | None,
) -> bool:
    """Set the condition ``type_`` in ``conditions`` (in place); True when its
    status, reason or message changed. ``lastTransitionTime`` moves only when
    the status flips, as ``metav1.Condition`` says."""
    value = "True" if ok else "False"
    message = clip(message)
    old = next((c for c in conditions if c.get("type") == type_), None)
    new: dict[str, Any] = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": format_time(now),
        "observedGeneration": generation,
    }
    if old is not None and old.get("status") == value:
        new["lastTransitionTime"] = old.get("lastTransitionTime", new["lastTransitionTime"])
    changed = old is None or any(old.get(k) != new[k] for k in ("status", "reason", "message"))
    if old is None:
        conditions.append(new)
    else:
        old.clear()
        old.update(new)
    return changed
