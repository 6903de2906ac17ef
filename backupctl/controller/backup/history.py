"""Planning step 1: record what finished Jobs report (pure).

Every finished run the status does not mention yet is recorded: a backup's
termination message (``{"ok":true,"id",...}``) goes into ``status.history``
and ``lastSuccessfulBackup``, a prune Job's into ``lastRetention``; each
result also becomes an Event, the ``Failed`` condition and a metrics
:class:`~backupctl.controller.backup.model.Outcome`. The Jobs are the source
of truth, so a controller that restarts during a run loses nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from backupctl.controller.backup import drills
from backupctl.controller.backup.draft import Draft
from backupctl.controller.backup.model import HISTORY_LIMIT, Outcome
from backupctl.controller.backup.runs import (
    failure_message,
    find_entry,
    is_recorded,
    label,
    valid_field,
)
from backupctl.controller.jobs import FAILED, PRUNE, RUNNING, SUCCEEDED, VERIFY, JobView
from backupctl.controller.metric_values import failure_reason
from backupctl.controller.status import clip, condition
from backupctl.core.timefmt import format_time, parse_time


def record(d: Draft, runs: Sequence[JobView]) -> None:
    """Record the runs (:func:`~backupctl.controller.backup.runs.runs`) that
    finished since the status was written; add the ones it lacks."""
    for job in runs:
        if job.component == PRUNE:
            if job.state != RUNNING and not is_recorded(d.status, job):
                _record_prune(d, job)
            continue
        if job.component == VERIFY:
            if job.state != RUNNING and not is_recorded(d.status, job):
                drills.record(d, job)
            continue
        entry = find_entry(d.history, job.name)
        if entry is None:
            if not _fits_history(d, job):
                continue
            entry = {"slot": format_time(job.slot or d.now), "jobName": job.name}
            entry["phase"] = RUNNING
            d.history.append(entry)
            _scheduled(d, job)
        if job.started is not None and "startTime" not in entry:
            entry["startTime"] = format_time(job.started)
        if job.state == RUNNING or entry.get("phase") in (SUCCEEDED, FAILED):
            continue
        if job.state == SUCCEEDED:
            _record_success(d, job, entry)
        else:
            record_failure(d, job, entry, failure_message(job))


def _scheduled(d: Draft, job: JobView) -> None:
    """``lastScheduleTime`` from a run the status does not know: the controller stopped
    after creating its Jobs, before writing the status (reconcile.jobs_first)."""
    last = parse_time(d.status.get("lastScheduleTime"))
    if job.slot is not None and (last is None or job.slot > last):
        d.status["lastScheduleTime"] = format_time(job.slot)


def record_failure(
    d: Draft,
    job: JobView | None,
    entry: dict[str, Any],
    message: str,
    shards: int | None = None,
    reason: str | None = None,
) -> None:
    """Mark the run of history ``entry`` failed with ``message`` (``job``:
    its finished Job; None when the Job is gone). ``reason``: the metric's
    (:data:`~backupctl.controller.metrics.FAILURE_REASONS`), else derived."""
    name = entry.get("jobName", "")
    what = label(name, shards or (job.shards if job is not None else None))
    entry["phase"] = FAILED
    entry["message"] = clip(message)
    if job is not None and job.finished is not None:
        entry["completionTime"] = format_time(job.finished)
    else:
        entry["completionTime"] = format_time(d.now)
    d.event("Warning", "BackupFailed", f"{what}: {message}")
    d.set_condition("Failed", True, "BackupFailed", f"{what}: {message}")
    if reason is None:
        reason = failure_reason(job.message if job else "", lost=job is None, not_starting=False)
    d.outcomes.append(Outcome(job=name, succeeded=False, reason=reason))


def _fits_history(d: Draft, job: JobView) -> bool:
    """A Job missing from history is added unless it is older than what
    the (full) history keeps, so trimmed entries do not come back."""
    history = d.history
    if len(history) < HISTORY_LIMIT or job.slot is None:
        return True
    oldest = min(parse_time(e.get("slot")) or d.now for e in history)
    return job.slot >= oldest


def _record_success(d: Draft, job: JobView, entry: dict[str, Any]) -> None:
    result = job.result or {}
    entry["phase"] = SUCCEEDED
    if job.finished is not None:
        entry["completionTime"] = format_time(job.finished)
    duration = _duration(job)
    backup: dict[str, Any] = {"jobName": job.name}
    for key, out in (("id", "backupId"), ("size", "size"), ("keys", "keys")):
        value = result.get(key)
        if valid_field(key, value):
            entry[out] = value
            backup[key] = value
    if isinstance(result.get("sha256"), str):
        backup["sha256"] = result["sha256"]
    when = parse_time(result.get("time")) or job.finished or d.now
    backup["time"] = format_time(when)
    if duration is not None:
        backup["durationSeconds"] = duration
    if not result.get("ok"):
        entry["message"] = "the Job succeeded but reported no result"
    last = d.status.get("lastSuccessfulBackup") or {}
    last_time = parse_time(last.get("time"))
    if last_time is None or when >= last_time:
        d.status["lastSuccessfulBackup"] = backup
    summary = ", ".join(
        f"{name} {entry[k]}" for name, k in (("keys", "keys"), ("bytes", "size")) if k in entry
    )
    what = label(job.name, job.shards)
    d.event(
        "Normal",
        "BackupSucceeded",
        f"{what}: backup {entry.get('backupId', '(no id reported)')}"
        + (f" ({summary})" if summary else ""),
    )
    d.set_condition("Failed", False, "BackupSucceeded", f"the run of {what} succeeded")
    d.outcomes.append(
        Outcome(
            job=job.name,
            succeeded=True,
            time=when,
            duration=duration,
            size=entry.get("size"),
            keys=entry.get("keys"),
        )
    )


def _record_prune(d: Draft, job: JobView) -> None:
    result = job.result or {}
    retention: dict[str, Any] = {
        "time": format_time(job.finished or d.now),
        "jobName": job.name,
    }
    if job.state == SUCCEEDED:
        for key in ("kept", "removed"):
            if isinstance(result.get(key), int):
                retention[key] = result[key]
        kept, removed = retention.get("kept", "?"), retention.get("removed", "?")
        noun = "backup" if removed == 1 else "backups"
        retention["message"] = f"kept {kept}, removed {removed} {noun}"
        d.event("Normal", "RetentionApplied", f"Job {job.name}: {retention['message']}")
        if condition(d.status, "Failed").get("reason") == "RetentionFailed":
            d.set_condition("Failed", False, "RetentionApplied", retention["message"])
    else:
        message = failure_message(job)
        retention["message"] = clip(f"failed: {message}")
        d.event("Warning", "RetentionFailed", f"Job {job.name}: {message}")
        d.set_condition("Failed", True, "RetentionFailed", f"Job {job.name}: {message}")
    d.status["lastRetention"] = retention


def _duration(job: JobView) -> float | None:
    if job.started is None or job.finished is None:
        return None
    return max((job.finished - job.started).total_seconds(), 0.0)


__all__ = ["record", "record_failure"]
