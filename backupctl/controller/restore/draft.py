"""One planning pass in the making: the status being rewritten, the actions
gathered so far, and how both are written (pure).

Every step of the restore works on one :class:`Draft`: it changes
``draft.status`` (a deep copy of what is stored) through the helpers here --
entering a phase, reporting progress or a reason to wait, the conditions
(the shared :func:`backupctl.controller.status.set_condition`) and the
Events of a transition -- and adds Jobs, scale-ups and pod deletions;
:meth:`Draft.plan` freezes all of it into a :class:`Plan`. A step that
cannot go on raises :class:`Failure` (the restore fails with that reason)
or :class:`Wait` (look again, within the step's time limit).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from backupctl.controller.job_limits import DEFAULT_START_TIMEOUT_SECONDS, stuck, stuck_message
from backupctl.controller.jobs import JobView
from backupctl.controller.restore.model import (
    DeletePod,
    Observed,
    Plan,
    PodView,
    ScaleStatefulSet,
)
from backupctl.controller.spec import RestoreSpec
from backupctl.controller.status import Event, clip, condition, set_condition
from backupctl.core.timefmt import format_time, parse_time

#: Longest wait for pods to go away (scale to 0) or to be ready again.
POD_TIMEOUT_SECONDS = 900.0
#: Seconds to the next look when no step asked for another.
DEFAULT_WAKE = 5.0


class Failure(Exception):
    """The restore cannot go on: ``Failed`` with this reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


class Wait(Exception):
    """Something needed is missing for now (a pod restarting): look again,
    within the step's time limit."""


def job_error(view: JobView) -> str:
    """Why a finished Job failed, in the user's words."""
    result = view.result or {}
    return str(result.get("error") or view.message or f"Job {view.name} failed")


def cannot_start(view: JobView) -> str | None:
    """Why the Job's pod cannot start (``Reason: message``), if it cannot."""
    problem = view.waiting
    if problem is None or not problem.hard:
        return None
    return f"{problem.reason}: {problem.message}"


class Draft:
    """The status and actions of one pass over one RedisRestore."""

    def __init__(self, obs: Observed, now: datetime) -> None:
        self.obs, self.now = obs, now
        self.status: dict[str, Any] = copy.deepcopy(dict(obs.status))
        self.was = obs.status.get("phase")
        self.jobs: list[dict[str, Any]] = []
        self.scale: dict[str, int] = {}
        self.delete_pods: list[DeletePod] = []
        self.delete_jobs: list[str] = []
        self.events: list[Event] = []
        self.wake: float | None = DEFAULT_WAKE

    def plan(self) -> Plan:
        """What this pass decided, frozen."""
        return Plan(
            status=self.status,
            jobs=tuple(self.jobs),
            scale=tuple(ScaleStatefulSet(n, r) for n, r in self.scale.items()),
            delete_pods=tuple(self.delete_pods),
            delete_jobs=tuple(dict.fromkeys(self.delete_jobs)),
            events=tuple(self.events),
            wake_at=None if self.wake is None else self.now + timedelta(seconds=self.wake),
        )

    def stuck(self, view: JobView | None) -> str | None:
        """Why ``view``'s pod has failed to start (its own reason and message)
        once it waited longer than the spec's ``startTimeoutSeconds``; the Job
        is then deleted in this pass."""
        if view is None:
            return None
        problem = stuck(view, self.now, self.grace)
        if problem is None:
            return None
        self.delete_jobs.append(view.name)
        return stuck_message(view, problem, self.grace)

    def fail_stuck(self) -> None:
        """:class:`Failure` with the pod's own reason when a Job of this
        restore could not start in time (Unschedulable, ContainerCreating, ...)."""
        for view in sorted(self.obs.jobs.values(), key=lambda v: v.name):
            message = self.stuck(view)
            if message is not None:
                assert view.waiting is not None
                raise Failure(view.waiting.reason, message)

    @property
    def grace(self) -> float:
        spec = self.obs.spec
        if isinstance(spec, RestoreSpec):
            return float(spec.job.start_timeout_seconds)
        return float(DEFAULT_START_TIMEOUT_SECONDS)

    def look_again(self, seconds: float | None) -> None:
        """When to plan again (None: only when something changes)."""
        self.wake = seconds

    # -- the target's pods ------------------------------------------------------------------

    def find_pod(self, pod: Mapping[str, Any]) -> PodView | None:
        """The live pod of a pod recorded in the status."""
        return self.obs.target.pod(pod["name"]) if self.obs.target is not None else None

    def live_pod(self, pod: Mapping[str, Any]) -> PodView:
        """The live pod of a recorded one; :class:`Wait` while it is missing."""
        live = self.find_pod(pod)
        if live is None:
            raise Wait(f"waiting for pod {pod['name']} of the target")
        return live

    # -- status -----------------------------------------------------------------------------

    def condition(self, type_: str, ok: bool, reason: str, message: str) -> None:
        set_condition(
            self.status.setdefault("conditions", []),
            type_,
            ok,
            reason,
            message,
            now=self.now,
            generation=self.obs.generation,
        )

    def enter(self, phase: str, reason: str, message: str) -> None:
        """Move to ``phase``; its time limit starts now."""
        self.status.update(phase=phase, stepStartTime=format_time(self.now), message=message)
        self.condition("Progressing", True, reason, message)

    def progress(self, reason: str, message: str, views: Sequence[JobView | None] = ()) -> None:
        """Say what runs: ``message``, unless Jobs cannot start or pods report
        problems (then those)."""
        waiting = [
            f"Job {v.name} cannot start: {cannot_start(v)}"
            for v in views
            if v is not None and cannot_start(v) is not None
        ]
        waiting += [p["message"] for p in self.status.get("pods") or [] if p.get("message")]
        text = clip("; ".join(waiting) if waiting else message)
        self.status["message"] = text
        self.condition("Progressing", True, reason, text)

    def waiting(self, reason: str, message: str) -> None:
        """Not started: ``Pending`` with the reason, and look again later."""
        self.status.update(phase="Pending", message=clip(message))
        self.condition("Ready", False, reason, message)
        self.condition("Progressing", False, reason, message)
        self.look_again(10.0 if reason != "WaitingForRestore" else 5.0)

    def timeout(self, message: str) -> None:
        """:class:`Failure` once the current phase ran longer than allowed."""
        started = parse_time(self.status.get("stepStartTime")) or self.now
        if (self.now - started).total_seconds() > POD_TIMEOUT_SECONDS:
            raise Failure("Timeout", f"{message} within {POD_TIMEOUT_SECONDS:.0f} s")

    def transition_events(self) -> None:
        """One Event per phase change (and per new reason to wait)."""
        st = self.status
        phase = st.get("phase")
        if phase == self.was or (phase == "Pending" and self.was is None):
            if phase == "Pending" and st.get("message") != self.obs.status.get("message"):
                reason = condition(st, "Ready").get("reason", "Pending")
                if reason != "Restoring":
                    self.events.append(Event("Normal", reason, st["message"]))
            return
        if phase == "Failed":
            failed = condition(st, "Failed")
            self.events.append(Event("Warning", failed.get("reason", "Failed"), st["message"]))
        elif phase == "Completed":
            self.events.append(Event("Normal", "Completed", st["message"]))
        elif phase is not None and phase != "Pending":
            self.events.append(Event("Normal", phase, st.get("message", phase)))


__all__ = ["POD_TIMEOUT_SECONDS", "Draft", "Failure", "Wait", "cannot_start", "job_error"]
