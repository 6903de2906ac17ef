"""Planning step 3b: a backup on demand, ``backupctl.dev/run-now`` (pure).

Setting the annotation ``backupctl.dev/run-now`` of a RedisBackup to a value
it has not had makes one extra run at once, as Velero's ``backup create
--from-schedule`` and CloudNativePG's ``cnpg backup`` do, but declaratively:
``kubectl annotate redisbackup nightly backupctl.dev/run-now="$(date +%s)"
--overwrite``. The run is planned as a slot is (its slot is "now", its
history entry says ``trigger: run-now``), and the value is written to
``status.lastRunNow`` together with ``lastScheduleTime``, BEFORE the Job is
created: a controller restart neither repeats it nor loses it (a run whose
Job was never created is created again while it is the latest one).

A run-now backup runs while ``suspend`` is set (asking is explicit), waits
for a running RedisRestore of the target, and obeys ``concurrencyPolicy`` as
a slot does (Forbid: it waits for the active Job; Replace: it replaces it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from backupctl.controller.backup.draft import Draft
from backupctl.controller.backup.model import CreateJob
from backupctl.controller.backup.schedule_runs import run_jobs
from backupctl.controller.jobs import BACKUP, RUNNING, JobView
from backupctl.controller.spec import BackupSpec
from backupctl.core.timefmt import format_time

#: The annotation that asks for a run now; any new value asks once more.
ANNOTATION = "backupctl.dev/run-now"
#: Its handled value, in the status.
STATUS_FIELD = "lastRunNow"
#: The history ``trigger`` of such a run.
TRIGGER = "run-now"


def requested(d: Draft) -> str | None:
    """The annotation's value, when it asks for a run not made yet."""
    value = d.obs.run_now
    if not value or value == d.status.get(STATUS_FIELD):
        return None
    return value


def due(
    d: Draft, spec: BackupSpec, jobs: Sequence[JobView], planned: Sequence[CreateJob]
) -> list[CreateJob]:
    """The Jobs of the run asked for by the annotation, if one is and may
    start now (the value is recorded by :func:`handled` when they start)."""
    value = requested(d)
    if value is None:
        return []
    if d.obs.restoring is not None:
        d.notes.append(
            f"the run asked for by {ANNOTATION}={value} waits: RedisRestore "
            f"{d.obs.restoring} restores the same target"
        )
        return []
    deleted = {x.name for x in d.deletes}
    active = [
        j for j in jobs if j.component == BACKUP and j.state == RUNNING and j.name not in deleted
    ]
    if active and not planned and spec.concurrency_policy == "Forbid":
        d.notes.append(
            f"the run asked for by {ANNOTATION}={value} waits for Job {active[-1].name} "
            "to finish (concurrencyPolicy: Forbid)"
        )
        return []
    if active and spec.concurrency_policy == "Replace":
        d.replace = active
    slot = d.now.replace(microsecond=0)
    taken = {c.slot for c in planned}
    while slot in taken:  # a slot of the schedule falls on this second: a run of its own
        slot += timedelta(seconds=1)
    return run_jobs(d, slot, note=f"asked for by {ANNOTATION}={value}")


def handled(d: Draft, creates: Sequence[CreateJob]) -> None:
    """Record the value with the runs that answer it (status written before
    the Jobs are created), mark their history entries, post the Event."""
    value = requested(d)
    if value is None or not creates:
        return
    d.status[STATUS_FIELD] = value
    runs = {c.run_name for c in creates}
    for entry in d.history:
        if entry.get("jobName") in runs:
            entry["trigger"] = TRIGGER
    first = min(creates, key=lambda c: c.name)
    d.event(
        "Normal",
        "RunNow",
        f"{ANNOTATION}={value}: a backup runs now ({first.run_name}, slot "
        f"{format_time(first.slot)})",
    )


__all__ = ["ANNOTATION", "STATUS_FIELD", "TRIGGER", "due", "handled", "requested"]
