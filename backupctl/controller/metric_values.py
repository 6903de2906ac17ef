"""The values behind the controllers' metrics, as pure functions.

:mod:`backupctl.controller.metrics` owns the Prometheus objects; what their
values are -- a RedisBackup's gauges from its status, a RedisRestore's phase
and duration, why a run failed -- is decided here, without
prometheus_client, so the backup plan can name a failure's reason and the
table tests need no registry.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from backupctl.controller.schedule import next_run
from backupctl.core.timefmt import parse_time

#: Slots looked at to find a schedule's longest gap (a weekday schedule: over a weekend).
INTERVAL_SLOTS = 8

LABELS = ("namespace", "name")

#: Why a backup run failed, as ``backupctl_backup_failures_total{reason}`` says.
JOB_FAILED, DEADLINE, POD_NOT_STARTING, JOB_LOST = (
    "JobFailed",
    "DeadlineExceeded",
    "PodNotStarting",
    "JobLost",
)
FAILURE_REASONS = (JOB_FAILED, DEADLINE, POD_NOT_STARTING, JOB_LOST)

#: The phases of a RedisRestore (the CRD's enum), one series each.
RESTORE_PHASES = (
    "Pending",
    "Quiescing",
    "Staging",
    "Restarting",
    "Verifying",
    "Completed",
    "Failed",
)

#: Per-RedisBackup gauges: metric suffix -> help text (``backupctl_<suffix>``).
BACKUP_GAUGES: dict[str, str] = {
    "backup_created_timestamp_seconds": "When the RedisBackup was created (Unix seconds).",
    "backup_last_success_timestamp_seconds": (
        "When the last successful backup was taken (Unix seconds; 0: never)."
    ),
    "backup_last_attempt_timestamp_seconds": (
        "Slot of the newest run started, successful or not (Unix seconds; 0: never)."
    ),
    "backup_last_duration_seconds": "How long the Job of the last successful backup ran.",
    "backup_last_size_bytes": "Archive size of the last successful backup.",
    "backup_last_keys": "Keys in the last successful backup.",
    "backup_consecutive_failures": "Failed runs since the last successful one.",
    "backup_next_run_timestamp_seconds": "The next scheduled run (Unix seconds; 0: none).",
    "backup_schedule_interval_seconds": (
        "Seconds between two runs of the schedule (0: a one-off backup)."
    ),
    "backup_suspended": "1 while the schedule is suspended.",
    "retention_last_run_timestamp_seconds": (
        "When the last retention (prune) Job ended (Unix seconds; 0: never)."
    ),
    "retention_last_run_failed": "1 when the last retention (prune) Job failed.",
    "verification_last_timestamp_seconds": (
        "When the last restore drill (spec.verify) ended (Unix seconds; 0: never)."
    ),
    "verification_last_failed": "1 when the last restore drill failed.",
    "verification_last_bytes": "Archive bytes the last passing restore drill checked.",
}


def _stamp(value: Any) -> float:
    when = parse_time(value) if isinstance(value, str) else None
    return when.timestamp() if when is not None else 0.0


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    return float(value)


def consecutive_failures(history: Sequence[Mapping[str, Any]]) -> int:
    """Failed runs, newest first, until a successful one (running ones skipped)."""
    count = 0
    for entry in sorted(history, key=lambda e: str(e.get("slot") or ""), reverse=True):
        phase = entry.get("phase")
        if phase == "Succeeded":
            break
        if phase == "Failed":
            count += 1
    return count


def backup_gauges(
    status: Mapping[str, Any],
    *,
    created: datetime,
    interval: float,
    suspended: bool,
) -> dict[str, float]:
    """The per-RedisBackup gauges (see :data:`BACKUP_GAUGES`) from its status
    (pure). ``interval``: seconds between two slots of its schedule, 0 for a
    one-off."""
    last = status.get("lastSuccessfulBackup") or {}
    retention = status.get("lastRetention") or {}
    drill = status.get("lastVerification") or {}
    history = [e for e in status.get("history") or [] if isinstance(e, Mapping)]
    return {
        "backup_created_timestamp_seconds": created.timestamp(),
        "backup_last_success_timestamp_seconds": _stamp(last.get("time")),
        "backup_last_attempt_timestamp_seconds": _stamp(status.get("lastScheduleTime")),
        "backup_last_duration_seconds": _number(last.get("durationSeconds")),
        "backup_last_size_bytes": _number(last.get("size")),
        "backup_last_keys": _number(last.get("keys")),
        "backup_consecutive_failures": float(consecutive_failures(history)),
        "backup_next_run_timestamp_seconds": (
            0.0 if suspended else _stamp(status.get("nextScheduleTime"))
        ),
        "backup_schedule_interval_seconds": interval,
        "backup_suspended": 1.0 if suspended else 0.0,
        "retention_last_run_timestamp_seconds": _stamp(retention.get("time")),
        "retention_last_run_failed": (
            1.0 if str(retention.get("message") or "").startswith("failed") else 0.0
        ),
        "verification_last_timestamp_seconds": _stamp(drill.get("time")),
        "verification_last_failed": 1.0 if drill.get("result") == "Failed" else 0.0,
        "verification_last_bytes": _number(drill.get("bytes")),
    }


def schedule_interval(cron: str | None, tz: str, now: datetime) -> float:
    """The longest gap, in seconds, between the next :data:`INTERVAL_SLOTS`
    slots of a schedule (0 for a one-off backup): "no success within 2x the
    interval" must not fire over a weekend of a weekday schedule."""
    if cron is None:
        return 0.0
    slots = [next_run(cron, tz, now)]
    for _ in range(INTERVAL_SLOTS - 1):
        slots.append(next_run(cron, tz, slots[-1]))
    return max((b - a).total_seconds() for a, b in itertools.pairwise(slots))


def restore_gauges(status: Mapping[str, Any], now: datetime) -> tuple[str, float, float]:
    """``(phase, start, duration)`` of a RedisRestore (pure): its phase
    (Pending before the controller wrote one), when it started (0: not yet)
    and how long it ran, until its completion or ``now``."""
    phase = str(status.get("phase") or "Pending")
    start = parse_time(status.get("startTime"))
    if start is None:
        return phase, 0.0, 0.0
    end = parse_time(status.get("completionTime")) or now
    return phase, start.timestamp(), max((end - start).total_seconds(), 0.0)


def failure_reason(job_message: str, *, lost: bool, not_starting: bool) -> str:
    """The ``reason`` label of a failed run (one of :data:`FAILURE_REASONS`)."""
    if lost:
        return JOB_LOST
    if not_starting:
        return POD_NOT_STARTING
    if "DeadlineExceeded" in job_message:
        return DEADLINE
    return JOB_FAILED


def status_class(code: int) -> str:
    """``2xx``, ``4xx``, ... of an HTTP status; ``error`` when none came back."""
    return f"{code // 100}xx" if 100 <= code < 600 else "error"


__all__ = [
    "BACKUP_GAUGES",
    "DEADLINE",
    "FAILURE_REASONS",
    "JOB_FAILED",
    "JOB_LOST",
    "LABELS",
    "POD_NOT_STARTING",
    "RESTORE_PHASES",
    "backup_gauges",
    "consecutive_failures",
    "failure_reason",
    "restore_gauges",
    "schedule_interval",
    "status_class",
]
