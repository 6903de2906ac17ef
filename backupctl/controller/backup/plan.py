"""What the RedisBackup controller should do next (pure).

:func:`plan` takes what the controller observed about one RedisBackup (its
parsed spec or the :class:`~backupctl.controller.spec_fields.SpecError`, its status, the Jobs
labelled for it, the target as resolved this pass or the last resolution
problem) and the current time, and returns a :class:`.model.Plan`: the new status,
the Jobs to create and delete, the Events to post, the results to count in
metrics, and when to look again. The operator executes it; nothing here
talks to Kubernetes, reads the clock or imports kopf.

The rules, in the order :func:`plan` applies them:

1. Results. Every finished Job that the status does not mention yet is
   recorded: a backup Job's termination message (``{"ok":true,"id",...}``)
   goes into ``history`` and ``lastSuccessfulBackup``, a prune Job's into
   ``lastRetention``. The Jobs are the source of truth, so a controller that
   restarts during a run loses nothing: it records the result when it sees
   the Job finished.
2. Lost Jobs. A ``Running`` history entry whose Job is gone: if this process
   saw the Job, it was deleted (recorded as failed); if it never did (the
   controller stopped between writing ``lastScheduleTime`` and creating the
   Job), the Job is created again, under the same deterministic name, while
   its slot is still the latest one.
3. The next run. One-off (no ``schedule``): one Job, for the slot
   ``creationTimestamp``. Scheduled: :func:`backupctl.controller.schedule.due_slot`
   after the last slot a Job was made for (at most one catch-up run, within
   ``startingDeadlineSeconds``), subject to ``suspend`` and
   ``concurrencyPolicy`` (Forbid: the run waits for the active Job; Replace:
   the active Job is deleted; Allow). A new Job is always planned together
   with ``lastScheduleTime`` = its slot and a ``Running`` history entry. Job
   names are a function of the slot, so neither a retry nor a restart makes a
   second Job for a slot (AlreadyExists means done); the operator creates a
   slot's Jobs before it writes that status (a restart between the two finds
   the Job: rule 1 records its run and ``lastScheduleTime``), a run-now run's
   after (its slot is the moment it was asked; see ``reconcile.jobs_first``).
   On demand: a new value of the annotation ``backupctl.dev/run-now`` makes one
   extra run at once (:mod:`.run_now`), recorded as a slot is.
4. Retention. After the newest successful backup, a prune Job named after
   its slot (``<name>-<slot>-prune``), once (or on ``retention.schedule``).
   Restore drills (``spec.verify``): a verify Job after each successful
   backup or on its own schedule (:mod:`.drills`).

A run is one Job, or -- for a Redis Cluster whose shard count the target
says (``Observed.shards``) -- one Job per shard, ``<name>-<slot>-shard<I>``
(labels ``backupctl.dev/run: <name>-<slot>`` and ``backupctl.dev/shard:
<I>-of-<N>``). The rules above see a run as one Job named ``<name>-<slot>``
(:func:`.runs.runs`): it failed as soon as one of its Jobs failed (the message says
which shard), and succeeded when all N did, with their sizes and key counts
added up; history limits delete a run's Jobs together, once none runs. A
shard Job that is missing is created again (never seen) or fails the run
(deleted), as a lost Job does.
5. History limits: finished, recorded Jobs beyond
   ``successfulJobsHistoryLimit`` / ``failedJobsHistoryLimit`` are deleted.
6. Status: ``phase``, the ``Ready`` / ``Progressing`` / ``Failed``
   conditions, ``nextScheduleTime``, ``activeJobs``, ``message``; an Event
   for each transition.

A Job needs the target resolved (which pod, which node, which PVC) within
the last :data:`.model.TARGET_FRESH`. When a Job is wanted without that, when the
spec is new, or :data:`.model.PREFETCH` before a slot, :func:`plan` returns
``needs_target=True`` and nothing else; the operator resolves the target and
plans again with ``Observed.target`` (or a ``Problem`` with its
retry time, which yields ``Ready=False`` and a wake-up at the retry time:
:func:`.model.retry_delay` grows the delay per attempt).

This module is the driver; each rule is a step of its own, applied to one
:class:`.draft.Draft`: 1 in :mod:`.history`, 2
and 3 in :mod:`.schedule_runs`, 4 and 5 in :mod:`.housekeeping`, 6 in
:mod:`.conditions`; the words they share are in :mod:`.model` and
:mod:`.runs`.
"""

from __future__ import annotations

from datetime import datetime

from backupctl.controller.backup import (
    conditions,
    drills,
    history,
    housekeeping,
    run_now,
    schedule_runs,
)
from backupctl.controller.backup.draft import Draft
from backupctl.controller.backup.model import TARGET_FRESH, Observed, Plan
from backupctl.controller.backup.runs import runs
from backupctl.controller.spec_fields import SpecError


def plan(obs: Observed, now: datetime) -> Plan:
    """The next steps for one RedisBackup (see the module docstring)."""
    d = Draft(obs, now)
    old_generation = d.status.get("observedGeneration")
    d.status["observedGeneration"] = obs.generation
    jobs = sorted(obs.jobs, key=lambda j: (j.slot or now, j.name))
    whole = sorted(runs(jobs), key=lambda j: (j.slot or now, j.name))
    history.record(d, whole)
    if isinstance(obs.spec, SpecError):
        return conditions.invalid(d, obs.spec)
    spec = obs.spec

    housekeeping.fail_stuck(d, spec, jobs)
    wanted = schedule_runs.lost(d, spec, jobs, whole)
    planned = {c.name for c in wanted}
    wanted += [c for c in schedule_runs.due(d, spec, jobs, old_generation) if c.name not in planned]
    on_demand = run_now.due(d, spec, jobs, wanted)
    wanted += on_demand
    fresh = d.resolved_since(now - TARGET_FRESH)
    unknown = obs.target is None or schedule_runs.prefetch_due(d, spec)
    may_try = obs.problem is None or obs.problem.retry_at <= now
    if ((wanted and not fresh) or unknown) and may_try:
        return Plan(status=dict(obs.status), needs_target=True)
    if wanted and fresh:
        schedule_runs.start_runs(d, wanted)
        run_now.handled(d, on_demand)
    elif obs.problem is not None:
        d.wake.append(obs.problem.retry_at)
    housekeeping.prune(d, spec, jobs)
    drills.plan(d, spec, jobs)
    gone = {x.name for x in d.deletes}
    housekeeping.limit_history(d, spec, [j for j in jobs if j.name not in gone], whole)
    conditions.conclude(d, spec, jobs)
    return d.finish()


__all__ = ["plan"]
