"""The plan of one pass while it is being made (pure).

:func:`~backupctl.controller.backup.plan.plan` hands one :class:`Draft` to
each planning step in turn; the steps edit its copy of the status in place
and add the Jobs, Events and outcomes they decide on. :meth:`Draft.finish`
turns it into the immutable :class:`~backupctl.controller.backup.model.Plan`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from backupctl.controller.backup.model import (
    HISTORY_LIMIT,
    STATUS_FIELDS,
    CreateJob,
    DeleteJob,
    Observed,
    Outcome,
    Plan,
)
from backupctl.controller.jobs import JobView
from backupctl.controller.status import Event, clip, set_condition

#: The order of the conditions in ``status.conditions``.
_CONDITION_ORDER = {"Ready": 0, "Progressing": 1, "Failed": 2}


@dataclass
class Draft:
    """What the steps decided so far for ``obs`` at ``now``.

    ``wake`` collects the times to look again at; ``notes`` why a due run did
    not start (they become the status message); ``replace`` the running Jobs
    a new run replaces (``concurrencyPolicy: Replace``); ``pending`` the due
    slot, started or not (it stays ``nextScheduleTime`` until it starts)."""

    obs: Observed
    now: datetime
    status: dict[str, Any] = field(init=False)
    deletes: list[DeleteJob] = field(default_factory=list)
    creates: list[CreateJob] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    wake: list[datetime] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    replace: list[JobView] = field(default_factory=list)
    pending: datetime | None = None
    waiting: tuple[str, str] | None = None  # (reason, message): a due run waits

    def __post_init__(self) -> None:
        # Entries of history/conditions are changed in place: copy them (one level
        # deep is enough; nested objects are replaced, never edited).
        self.status = {k: _copy(v) for k, v in self.obs.status.items() if k in STATUS_FIELDS}
        self.status.setdefault("history", [])
        self.status.setdefault("conditions", [])

    @property
    def history(self) -> list[dict[str, Any]]:
        """``status.history``, edited in place."""
        history: list[dict[str, Any]] = self.status["history"]
        return history

    def event(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, clip(message)))

    def set_condition(self, type_: str, ok: bool, reason: str, message: str) -> bool:
        """Set a condition (``metav1.Condition`` semantics); True when its
        status, reason or message changed."""
        conditions: list[dict[str, Any]] = self.status["conditions"]
        changed = set_condition(
            conditions, type_, ok, reason, message, now=self.now, generation=self.obs.generation
        )
        conditions.sort(key=lambda c: _CONDITION_ORDER.get(c.get("type", ""), 9))
        return changed

    def resolved_since(self, t: datetime) -> bool:
        """Whether the target was resolved at ``t`` or later."""
        at = self.obs.resolved_at
        return self.obs.target is not None and at is not None and at >= t

    def finish(self) -> Plan:
        """The plan: history newest first and trimmed, unset fields dropped,
        the earliest wake-up time."""
        history = self.history
        history.sort(key=lambda e: (e.get("slot") or "", e.get("jobName") or ""), reverse=True)
        del history[HISTORY_LIMIT:]
        status = {k: v for k, v in self.status.items() if v is not None}
        return Plan(
            status=status,
            deletes=tuple(self.deletes),
            creates=tuple(self.creates),
            events=tuple(self.events),
            outcomes=tuple(self.outcomes),
            wake_at=min(self.wake) if self.wake else None,
        )


def _copy(value: Any) -> Any:
    if isinstance(value, list):
        return [dict(v) if isinstance(v, dict) else v for v in value]
    return dict(value) if isinstance(value, dict) else value


__all__ = ["Draft"]
