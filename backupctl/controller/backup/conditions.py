"""Planning step 6: what the status says about the RedisBackup (pure).

``phase``, the ``Ready`` / ``Progressing`` conditions (``Failed`` is set by
:mod:`.history` as results come in), ``nextScheduleTime``, ``activeJobs``
and ``message``, and an Event for each transition of ``Ready``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from backupctl.controller.backup.draft import Draft
from backupctl.controller.backup.model import PROBING, Plan
from backupctl.controller.backup.schedule_runs import upcoming
from backupctl.controller.jobs import BACKUP, FAILED, RUNNING, SUCCEEDED, JobView
from backupctl.controller.spec import BackupSpec
from backupctl.controller.spec_fields import SpecError
from backupctl.controller.status import clip, condition
from backupctl.core.timefmt import format_time


def invalid(d: Draft, error: SpecError) -> Plan:
    """The plan for a spec that cannot work: say why, start nothing."""
    _ready(d, False, "InvalidSpec", str(error))
    d.status["phase"] = FAILED
    d.status["message"] = clip(str(error))
    d.status["nextScheduleTime"] = None
    active = [j for j in d.obs.jobs if j.state == RUNNING]
    _progressing(d, active)
    d.status["activeJobs"] = _active_names(active) or None
    return d.finish()


def conclude(d: Draft, spec: BackupSpec, jobs: Sequence[JobView]) -> None:
    """The conditions, phase and message after the other steps decided."""
    obs, status = d.obs, d.status
    deleted = {x.name for x in d.deletes}
    active = [j for j in jobs if j.state == RUNNING and j.name not in deleted]
    stuck = [j for j in active if j.waiting is not None and j.waiting.hard]
    if obs.target is not None:
        status["target"] = obs.target
    if obs.problem is not None and obs.problem.reason != PROBING:
        _ready(d, False, obs.problem.reason, obs.problem.message)
    elif d.waiting is not None:
        if d.set_condition("Ready", False, *d.waiting):
            d.event("Normal", *d.waiting)
    elif stuck:
        job = stuck[-1]
        assert job.waiting is not None
        _ready(d, False, job.waiting.reason, f"Job {job.name} cannot start: {job.waiting.message}")
    else:
        _ready(d, True, "Ready", f"target {status.get('target', '(not resolved yet)')}")
    _progressing(d, active)
    names = _active_names(active) + [c.name for c in d.creates]
    status["activeJobs"] = names or None

    running = any(j.component == BACKUP for j in active) or any(
        c.component == BACKUP for c in d.creates
    )
    ready = condition(status, "Ready").get("status") == "True"
    next_time = None
    if spec.schedule is not None and not spec.suspend:
        started = any(c.slot == d.pending for c in d.creates)
        # A due run that could not start yet stays next (it is the schedule's baseline).
        next_time = d.pending if d.pending is not None and not started else upcoming(d, spec)
    status["nextScheduleTime"] = format_time(next_time) if next_time else None

    if running:
        phase = RUNNING
    elif spec.schedule is None:
        entry = max(d.history, key=lambda e: e.get("slot") or "", default=None)
        phase = entry["phase"] if entry and entry.get("phase") != RUNNING else "Pending"
    elif spec.suspend:
        phase = "Suspended"
    elif not ready:
        phase = "Pending"
    else:
        finished = [e for e in d.history if e.get("phase") in (SUCCEEDED, FAILED)]
        newest = max(finished, key=lambda e: e.get("slot") or "", default=None)
        phase = FAILED if newest and newest.get("phase") == FAILED else "Scheduled"
    status["phase"] = phase
    status["message"] = clip(_message(d, phase, active, next_time))
    if d.notes and d.waiting is None and status["message"] != obs.status.get("message"):
        d.event("Normal", "RunNotStarted", status["message"])


def _message(d: Draft, phase: str, active: Sequence[JobView], next_time: datetime | None) -> str:
    if d.notes:
        return "; ".join(d.notes)
    ready = condition(d.status, "Ready")
    if ready.get("status") == "False":
        return str(ready.get("message", ""))
    if d.creates or active:
        names = [c.name for c in d.creates] + [j.name for j in active]
        return f"running: {', '.join(names)}"
    if phase == "Suspended":
        return "suspended: no new runs"
    if next_time is not None:
        return f"next run at {format_time(next_time)}"
    last = d.status.get("lastSuccessfulBackup") or {}
    if phase == SUCCEEDED and last.get("id"):
        return f"backup {last['id']} done"
    if phase == FAILED:
        return str(condition(d.status, "Failed").get("message", "the run failed"))
    return ""


def _active_names(jobs: Iterable[JobView]) -> list[str]:
    return [j.name for j in jobs if j.state == RUNNING]


def _progressing(d: Draft, active: Sequence[JobView]) -> None:
    if d.creates or active:
        names = [c.name for c in d.creates] + [_waiting(j) for j in active]
        d.set_condition("Progressing", True, "JobRunning", f"running: {', '.join(names)}")
    else:
        d.set_condition("Progressing", False, "Idle", "no Job running")


def _waiting(job: JobView) -> str:
    """The Job's name, and what its pod waits for if it has not started."""
    problem = job.waiting
    if problem is None:
        return job.name
    since = f" since {format_time(problem.since)}" if problem.since is not None else ""
    return f"{job.name} (its pod waits{since}: {problem.reason})"


def _ready(d: Draft, ok: bool, reason: str, message: str) -> None:
    was = condition(d.status, "Ready").get("status")
    if not d.set_condition("Ready", ok, reason, message):
        return
    if not ok:
        d.event("Warning", reason, message)
    elif was == "False":
        d.event("Normal", "Ready", f"ready again: {message}")


__all__ = ["conclude", "invalid"]
