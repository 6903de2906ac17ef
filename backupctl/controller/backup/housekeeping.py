"""Planning steps 4 and 5: the Jobs that clean up and the Jobs cleaned up (pure).

Stuck Jobs: a Job whose pod could not start in time fails its run and is
deleted (:func:`fail_stuck`). Retention: after the newest successful
backup, one prune Job named after its slot (``<name>-<slot>-prune``),
once. History limits: finished, recorded runs beyond
``successfulJobsHistoryLimit`` / ``failedJobsHistoryLimit`` are deleted,
all Jobs of a run together, once none of them runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from backupctl.controller.backup.draft import Draft
from backupctl.controller.backup.history import record_failure
from backupctl.controller.backup.model import CreateJob, DeleteJob
from backupctl.controller.backup.runs import find_entry, is_recorded
from backupctl.controller.job_limits import stuck, stuck_message
from backupctl.controller.jobs import BACKUP, FAILED, PRUNE, RUNNING, SUCCEEDED, VERIFY, JobView
from backupctl.controller.metric_values import POD_NOT_STARTING
from backupctl.controller.schedule import job_name, next_run, prev_run
from backupctl.controller.spec import BackupSpec
from backupctl.core.timefmt import parse_time


def prune(d: Draft, spec: BackupSpec, jobs: Sequence[JobView]) -> None:
    """One prune Job after the newest successful backup (found from the
    status, so it does not matter whether that Job still exists); with
    ``retention.schedule``, one per slot of that schedule instead, whether
    backups succeed or not, also while suspended."""
    if spec.retention.empty:
        return
    if spec.retention.schedule is not None:
        _scheduled_prune(d, spec, jobs, spec.retention.schedule)
        return
    backup = (d.status.get("lastSuccessfulBackup") or {}).get("jobName")
    entry = find_entry(d.history, backup) if backup else None
    slot = parse_time(entry.get("slot")) if entry else None
    if slot is None:
        return
    _prune_once(d, jobs, slot, "to apply the retention")


def _scheduled_prune(d: Draft, spec: BackupSpec, jobs: Sequence[JobView], cron: str) -> None:
    """The prune of the latest slot of ``retention.schedule`` (missed ones are
    not made up: the next prune removes the same backups)."""
    d.wake.append(next_run(cron, spec.time_zone, d.now))
    slot = prev_run(cron, spec.time_zone, d.now)
    if slot <= d.obs.created:
        return
    _prune_once(d, jobs, slot, "retention.schedule")


def _prune_once(d: Draft, jobs: Sequence[JobView], slot: datetime, note: str) -> None:
    name = job_name(d.obs.name, slot, PRUNE)
    last = d.status.get("lastRetention") or {}
    if last.get("jobName") == name or name in {j.name for j in jobs} or name in d.obs.seen:
        return
    d.creates.append(CreateJob(PRUNE, name, slot, note=note))


def fail_stuck(d: Draft, spec: BackupSpec, jobs: Sequence[JobView]) -> None:
    """A Job whose pod has not started within ``startTimeoutSeconds``
    (Unschedulable, stuck in ContainerCreating, an image that cannot be
    pulled) fails its run with the pod's own reason and is deleted, so that
    under ``concurrencyPolicy: Forbid`` the next slot is not blocked."""
    grace = float(spec.job.start_timeout_seconds)
    for job in jobs:
        problem = stuck(job, d.now, grace)
        if problem is None:
            continue
        message = stuck_message(job, problem, grace)
        d.deletes.append(DeleteJob(job.name, message))
        entry = find_entry(d.history, job.run_name)
        if entry is not None and entry.get("phase") == RUNNING:
            record_failure(d, None, entry, message, shards=job.shards, reason=POD_NOT_STARTING)
        elif job.component in (PRUNE, VERIFY):
            d.event("Warning", problem.reason, message)


def limit_history(
    d: Draft, spec: BackupSpec, jobs: Sequence[JobView], runs: Sequence[JobView]
) -> None:
    """Finished, recorded runs beyond the limits go, all their Jobs at once
    (a failed shard run's other Jobs only once they finished too)."""
    limits = {
        SUCCEEDED: spec.job.successful_jobs_history_limit,
        FAILED: spec.job.failed_jobs_history_limit,
    }
    members: dict[str, list[JobView]] = {}
    for job in jobs:
        members.setdefault(job.run_name, []).append(job)
    replaced = {x.name for x in d.deletes}
    for component in (BACKUP, PRUNE, VERIFY):
        for state, limit in limits.items():
            finished = [
                r
                for r in runs
                if r.component == component
                and r.state == state
                and is_recorded(d.status, r)
                and not any(j.name in replaced for j in members.get(r.name, ()))
            ]
            finished.sort(key=lambda j: (j.slot or d.now, j.name), reverse=True)
            for run in finished[limit:]:
                own = members.get(run.name, [])
                if any(j.state == RUNNING for j in own):
                    continue
                d.deletes += [DeleteJob(j.name, "history limit") for j in own]


__all__ = ["fail_stuck", "limit_history", "prune"]
