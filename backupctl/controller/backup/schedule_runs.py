"""Planning steps 2 and 3: which backup runs to start (pure).

Lost Jobs: a ``Running`` history entry whose Job is gone was deleted (this
process saw it: the run failed) or never created (the controller stopped
between writing ``lastScheduleTime`` and creating it: it is created again,
under the same name, while its slot is still the latest one). A shard run
missing some of its Jobs is handled the same way, shard by shard.

The next run: one-off (no ``schedule``) is one run, for the slot
``creationTimestamp``. Scheduled: the latest slot after the last one a Job
was made for (at most one catch-up run, within ``startingDeadlineSeconds``),
subject to ``suspend`` and ``concurrencyPolicy``. A new run is always
planned with ``lastScheduleTime`` = its slot and a ``Running`` history entry
(:func:`start_runs`), which the operator writes right after it creates the Jobs
(before them for a run-now run: ``reconcile.jobs_first``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from backupctl.controller.backup.draft import Draft
from backupctl.controller.backup.history import record_failure
from backupctl.controller.backup.model import PREFETCH, CreateJob, DeleteJob
from backupctl.controller.backup.runs import find_entry
from backupctl.controller.jobs import BACKUP, FAILED, RUNNING, JobView
from backupctl.controller.schedule import job_name, missed_slots, next_run, prev_run, shard_job_name
from backupctl.controller.spec import BackupSpec
from backupctl.core.timefmt import format_time, parse_time

_EPSILON = timedelta(microseconds=1)
#: How often a run waiting for a restore of its target looks again.
RESTORE_POLL = timedelta(seconds=10)

#: (cron, time zone) -> (latest slot, next slot) around the last instant asked about.
_AROUND: dict[tuple[str, str], tuple[datetime, datetime]] = {}


def slots_around(cron: str, tz: str, now: datetime) -> tuple[datetime, datetime]:
    """``(prev_run(now), next_run(now))``: the last slot at or before ``now``
    and the first after it. Cached per schedule while ``now`` stays between
    the two (many resources share a schedule; croniter is slow)."""
    known = _AROUND.get((cron, tz))
    if known is not None and known[0] <= now < known[1]:
        return known
    around = (prev_run(cron, tz, now), next_run(cron, tz, now))
    if len(_AROUND) >= 4096:
        _AROUND.clear()
    _AROUND[(cron, tz)] = around
    return around


@functools.lru_cache(maxsize=4096)
def slot_before(cron: str, tz: str, slot: datetime) -> datetime:
    """The slot before ``slot``: the same for every resource of a schedule at its slot
    (thousands at once; croniter costs ~0.3 ms a call)."""
    return prev_run(cron, tz, slot - _EPSILON)


def upcoming(d: Draft, spec: BackupSpec) -> datetime:
    """The first slot after now."""
    assert spec.schedule is not None
    return slots_around(spec.schedule, spec.time_zone, d.now)[1]


def _latest(d: Draft, spec: BackupSpec) -> datetime:
    """The last slot at or before now."""
    assert spec.schedule is not None
    return slots_around(spec.schedule, spec.time_zone, d.now)[0]


def prefetch_due(d: Draft, spec: BackupSpec) -> bool:
    """Whether the next slot is close and the target not resolved for it yet;
    otherwise wake up when it is."""
    if spec.schedule is None or spec.suspend:
        return False
    slot = upcoming(d, spec)
    if d.resolved_since(slot - PREFETCH):
        return False
    if slot - PREFETCH <= d.now:
        return True
    d.wake.append(slot - PREFETCH)
    return False


# --- 2. lost Jobs ---------------------------------------------------------------------


def lost(
    d: Draft, spec: BackupSpec, jobs: Sequence[JobView], runs: Sequence[JobView]
) -> list[CreateJob]:
    """The Jobs to create again; runs whose Jobs were deleted are failed."""
    present = {j.name for j in jobs}
    by_run = {r.name: r for r in runs if r.component == BACKUP}
    again: list[CreateJob] = []
    for entry in d.history:
        name = entry.get("jobName")
        if entry.get("phase") != RUNNING or not name:
            continue
        slot = parse_time(entry.get("slot"))
        run = by_run.get(name)
        if run is not None:
            if run.shards and slot is not None:
                again += _lost_shards(d, spec, entry, run.shards, slot, present)
            continue
        if name in d.obs.seen:
            record_failure(d, None, entry, "the Job was deleted before it finished")
        elif slot is not None and _is_current(d, spec, slot, entry):
            again += run_jobs(d, slot, note="created again: it was not found")
        else:
            record_failure(
                d,
                None,
                entry,
                "the Job was not found: it was deleted, or never created, while the "
                "controller was down",
            )
    return again


def _lost_shards(
    d: Draft,
    spec: BackupSpec,
    entry: dict[str, Any],
    count: int,
    slot: datetime,
    present: set[str],
) -> list[CreateJob]:
    """The missing shard Jobs of a run that has some: created again if never
    seen and the slot is current; otherwise the run failed."""
    again = []
    for shard in range(1, count + 1):
        name = shard_job_name(d.obs.name, slot, shard)
        if name in present:
            continue
        if name not in d.obs.seen and _is_current(d, spec, slot, entry):
            again.append(
                CreateJob(
                    BACKUP,
                    name,
                    slot,
                    note="created again: it was not found",
                    run=entry["jobName"],
                    shard=shard,
                    shards=count,
                )
            )
            continue
        why = "was deleted before it finished" if name in d.obs.seen else "was not found"
        message = f"shard {shard} of {count} (Job {name}): the Job {why}"
        record_failure(d, None, entry, message, shards=count)
        return []
    return again


def run_jobs(d: Draft, slot: datetime, note: str = "") -> list[CreateJob]:
    """The Jobs of the run at ``slot``: one, or one per shard."""
    run = job_name(d.obs.name, slot)
    count = d.obs.shards
    if not count:
        return [CreateJob(BACKUP, run, slot, note=note)]
    return [
        CreateJob(
            BACKUP,
            shard_job_name(d.obs.name, slot, shard),
            slot,
            note=note,
            run=run,
            shard=shard,
            shards=count,
        )
        for shard in range(1, count + 1)
    ]


def _is_current(d: Draft, spec: BackupSpec, slot: datetime, entry: dict[str, Any]) -> bool:
    """Whether ``slot`` is still the run to make now (a run-now one: while it
    is the latest run started)."""
    if entry.get("trigger") == "run-now":
        return parse_time(d.status.get("lastScheduleTime")) == slot
    if spec.schedule is None:
        return True
    return _latest(d, spec) == slot


# --- 3. the next run ------------------------------------------------------------------


def due(
    d: Draft, spec: BackupSpec, jobs: Sequence[JobView], old_generation: Any
) -> list[CreateJob]:
    """The Jobs of the run due now, if one is and may start."""
    backups = [j for j in jobs if j.component == BACKUP]
    last = parse_time(d.status.get("lastScheduleTime"))
    slots = [j.slot for j in backups if j.slot is not None]
    if slots and (last is None or max(slots) > last):
        last = max(slots)
    if spec.schedule is None:
        if last is not None:
            return []
        if d.obs.restoring is not None:
            _wait_for_restore(d, d.obs.created)
            return []
        return run_jobs(d, d.obs.created)

    cron, tz = spec.schedule, spec.time_zone
    if spec.suspend:
        return []
    base = last if last is not None else _schedule_start(d, old_generation)
    # schedule.due_slot, with the slots around now from the shared cache.
    latest = _latest(d, spec)
    slot: datetime | None = latest if latest > base else None
    deadline = spec.starting_deadline_seconds
    if slot is not None and deadline is not None and (d.now - slot).total_seconds() > deadline:
        slot = None
    d.pending = slot
    d.wake.append(upcoming(d, spec))
    if slot is None:
        if latest > base:  # a run was due, but is more than startingDeadlineSeconds late
            d.notes.append(
                f"missed the run at {format_time(latest)}: more than "
                f"{spec.starting_deadline_seconds}s late (startingDeadlineSeconds)"
            )
        return []
    if d.obs.restoring is not None:
        _wait_for_restore(d, slot)
        return []
    deleted = {x.name for x in d.deletes}
    active = [j for j in backups if j.state == RUNNING and j.name not in deleted]
    if active and spec.concurrency_policy == "Forbid":
        d.notes.append(
            f"the run at {format_time(slot)} waits for Job {active[-1].name} to finish "
            "(concurrencyPolicy: Forbid)"
        )
        return []
    if active and spec.concurrency_policy == "Replace":
        d.replace = active
    note = ""
    if slot_before(cron, tz, slot) > base:  # more than one slot since base
        missed = missed_slots(cron, tz, base, d.now)
        count = f"{missed}+" if missed >= 100 else str(missed)
        note = f"{count} runs were missed; only the latest is made up for"
    return run_jobs(d, slot, note)


def _wait_for_restore(d: Draft, slot: datetime) -> None:
    """The run at ``slot`` waits while a RedisRestore of the target runs (a
    BGSAVE between its swap and the restart would write the old in-memory
    data over the restored files). As a CronJob's missed run: it starts when
    the restore has ended if its slot is still the latest and within
    ``startingDeadlineSeconds``; otherwise the next slot runs."""
    d.waiting = (
        "WaitingForRestore",
        f"the run at {format_time(slot)} waits: RedisRestore {d.obs.restoring} restores the "
        "same target",
    )
    d.notes.append(d.waiting[1])
    d.wake.append(d.now + RESTORE_POLL)


def _schedule_start(d: Draft, old_generation: Any) -> datetime:
    """Where a schedule that never ran starts: the creation time on first
    sight (as CronJobs do), the announced ``nextScheduleTime`` after
    that, and the time the controller saw a changed spec."""
    if old_generation is None:
        return d.obs.created
    announced = parse_time(d.status.get("nextScheduleTime"))
    if old_generation == d.obs.generation and announced is not None:
        return announced - _EPSILON
    return d.now


def start_runs(d: Draft, wanted: list[CreateJob]) -> None:
    """Plan the Jobs ``wanted`` with their ``lastScheduleTime`` and
    ``Running`` history entries (and the Jobs they replace)."""
    for create in wanted:
        for job in d.replace:
            reason = (
                f"replaced by the run at {format_time(create.slot)} (concurrencyPolicy: Replace)"
            )
            d.deletes.append(DeleteJob(job.name, reason))
            entry = find_entry(d.history, job.run_name)
            if entry is not None and entry.get("phase") == RUNNING:
                entry.update(phase=FAILED, message=reason, completionTime=format_time(d.now))
            d.event("Normal", "JobReplaced", f"Job {job.name} {reason}")
        d.replace = []
        last = parse_time(d.status.get("lastScheduleTime"))
        if last is None or create.slot > last:
            d.status["lastScheduleTime"] = format_time(create.slot)
        if find_entry(d.history, create.run_name) is None:
            d.history.append(
                {"slot": format_time(create.slot), "jobName": create.run_name, "phase": RUNNING}
            )
        d.creates.append(create)


__all__ = ["due", "lost", "prefetch_due", "run_jobs", "slots_around", "start_runs", "upcoming"]
