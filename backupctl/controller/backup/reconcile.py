"""One pass of a RedisBackup daemon: observe -> plan -> execute.

1. observe: the live spec, the status this controller last wrote, the Jobs
   labelled for the resource (the index of job_watch.py), and -- only for finished Jobs
   not recorded yet, or Jobs whose pod does not start -- their pods'
   termination messages / waiting reasons;
2. plan: :func:`backupctl.controller.backup.plan.plan`, pure; when it wants a
   Job it asks for the target, which :mod:`backupctl.controller.targets`
   resolves, and plans again;
3. execute: delete/create Jobs (deterministic names: 409 means done), post
   Events, update metrics, and write the status: first when it must precede the
   Jobs (a run-now run, a replaced run), else after them, once no other pass
   waits for its turn (:func:`jobs_first`).

A failure the user can fix (missing target, a Job the API refuses) becomes a
:class:`~backupctl.controller.backup.model.Problem` with a growing retry
delay; API failures propagate to the daemon.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import kopf

from backupctl.controller import targets, topology
from backupctl.controller.backup.model import (
    PROBING,
    STATUS_FIELDS,
    CreateJob,
    Observed,
    Plan,
    Problem,
    retry_delay,
)
from backupctl.controller.backup.owner_probe import with_data_owner
from backupctl.controller.backup.plan import plan
from backupctl.controller.backup.run_now import ANNOTATION as RUN_NOW
from backupctl.controller.backup.run_now import STATUS_FIELD as RUN_NOW_STATUS
from backupctl.controller.backup.runs import is_recorded
from backupctl.controller.backup.state import MAX_SLEEP, Controller, JobIndex, Tracker
from backupctl.controller.job_limits import first_seen
from backupctl.controller.jobs import BACKUP, PRUNE, RUNNING, VERIFY, JobView
from backupctl.controller.kube import AlreadyExists, ApiError
from backupctl.controller.leader_rules import with_job_shard
from backupctl.controller.manifests import (
    LABEL_BACKUP,
    backup_job,
    label_value,
    owner_reference,
)
from backupctl.controller.metric_values import JOB_FAILED, backup_gauges, schedule_interval
from backupctl.controller.observe import job_view, pod_problem, pod_result
from backupctl.controller.restore.model import is_finished, target_key
from backupctl.controller.spec import (
    API_GROUP,
    API_VERSION,
    GROUP_VERSION,
    BackupSpec,
    parse_backup,
)
from backupctl.controller.spec_fields import SpecError
from backupctl.controller.store_jobs import prune_job, verify_job
from backupctl.core.timefmt import parse_time

PLURAL = "redisbackups"
#: Checks of a started Job whose pod is not ready: first after 5 s, then doubling to 2 min.
POD_CHECK_FIRST, POD_CHECK_MAX = 5.0, 120.0


async def reconcile(
    controller: Controller,
    tracker: Tracker,
    body: kopf.Body,
    index: JobIndex,
    later: bool = False,
) -> float:
    """One pass, in its turn (:attr:`Controller.passes`; ``later``: in the lane of work
    that may wait); returns the seconds to sleep. A status that may wait is written
    after the pass, once no other pass waits."""
    async with controller.passes.held(later=later):  # a cron slot wakes thousands at once
        now = controller.clock.now()
        observed = await observe(controller, tracker, body, index, now)
        planned = plan(observed, now)
        resolved = False
        if planned.needs_target:
            observed = await resolve_target(controller, tracker, observed, now)
            resolved = observed.problem is None
            planned = plan(observed, now)
        failed, behind = await execute(controller, tracker, body, observed, planned)
    if behind:
        async with controller.passes.held(later=True):
            await write_status(controller, tracker, behind)
        update_metrics(controller, tracker, observed)
    if not failed and (resolved or planned.creates):
        tracker.failures = 0  # the retry delay grows only while attempts fail
    checks = [w for _, w in tracker.pod_checks.values()]
    wake_times = [t for t in (planned.wake_at,) if t]
    if failed and tracker.problem is not None:
        wake_times.append(tracker.problem.retry_at)  # record the refusal, then try again
    # A pass due only for a pod check may wait behind a slot's passes (the first check
    # of each of a slot's Jobs comes 5 s after it: inside a slot of thousands).
    tracker.check_pass = bool(checks) and (not wake_times or min(checks) < min(wake_times))
    wake_times += checks
    if not wake_times:
        return MAX_SLEEP
    return (min(wake_times) - controller.clock.now()).total_seconds()


# --- observe ------------------------------------------------------------------------------

#: While a run is active, its Jobs are listed from the API at most this often.
RELIST_SECONDS = 30.0
#: How long one namespace's list of RedisRestores serves its daemons.
RESTORES_TTL_SECONDS = 5.0


async def observe(
    controller: Controller,
    tracker: Tracker,
    body: kopf.Body,
    index: JobIndex,
    now: datetime,
) -> Observed:
    meta = body.get("metadata") or {}
    generation = int(meta.get("generation") or 0)
    if tracker.generation != generation:  # a new spec: resolve its target, retry at once
        tracker.generation, tracker.problem, tracker.failures = generation, None, 0
        tracker.choice = tracker.resolved_at = tracker.spec = None
    if tracker.status is None:  # first pass (or after an API error): trust the server
        tracker.status = dict(body.get("status") or {})
    if tracker.spec is None:
        try:
            tracker.spec = parse_backup(body.get("spec") or {})
        except SpecError as e:
            tracker.spec = e
    uid = meta.get("uid")
    jobs = await list_jobs(controller, tracker, uid, index)
    tracker.seen.update(j.name for j in jobs)
    tracker.seen.update(j.run_name for j in jobs)  # a run was seen when one of its Jobs was
    names = {j.name for j in jobs}
    for cache in (tracker.results, tracker.pod_checks, tracker.stuck, tracker.stuck_since):
        for gone in [n for n in cache if n not in names]:
            del cache[gone]
    jobs = [await read_pods(controller, tracker, job, now) for job in jobs]
    created = parse_time(meta.get("creationTimestamp")) or now
    return Observed(
        name=tracker.name,
        namespace=tracker.namespace,
        generation=generation,
        created=controller.clock.from_real(created).replace(microsecond=0),
        spec=tracker.spec,
        status=tracker.status,
        jobs=tuple(jobs),
        seen=frozenset(tracker.seen),
        target=tracker.choice.description if tracker.choice else None,
        resolved_at=tracker.resolved_at,
        problem=tracker.problem,
        shards=tracker.choice.shards if tracker.choice else None,
        restoring=await restoring(controller, tracker, body.get("spec") or {}),
        run_now=(meta.get("annotations") or {}).get(RUN_NOW) or None,
    )


async def list_jobs(
    controller: Controller, tracker: Tracker, uid: Any, index: JobIndex
) -> list[JobView]:
    """The resource's Jobs: the index (job_watch.py), checked against the API while a
    run is active (a stalled watch must not leave a run ``Running`` forever).

    The index is filled before any daemon's first pass, so a resource with nothing
    running needs no list; one with a running Job lists at most every
    :data:`RELIST_SECONDS` (thousands of daemons wake at one slot: a list each
    per pass queued them behind the client's connections)."""
    label = label_value(tracker.name)
    indexed = {
        job.name: job for owner, job in index.get((tracker.namespace, label), ()) if owner == uid
    }
    assert tracker.status is not None
    active = any(j.state == RUNNING for j in indexed.values()) or bool(
        tracker.status.get("activeJobs")
    )
    now = controller.clock.now()
    due = tracker.listed_at is None or not (
        timedelta(0) <= now - tracker.listed_at < timedelta(seconds=RELIST_SECONDS)
    )
    if not (active and due):
        return list(indexed.values())
    listed = await controller.kube.list(
        "batch", "v1", "jobs", tracker.namespace, f"{LABEL_BACKUP}={label}"
    )
    tracker.listed_at = now
    fresh = {
        str(j["metadata"]["name"]): job_view(j)
        for j in listed
        if any(o.get("uid") == uid for o in j["metadata"].get("ownerReferences") or [])
    }
    return list({**{n: j for n, j in indexed.items() if n in fresh}, **fresh}.values())


async def restoring(
    controller: Controller, tracker: Tracker, spec: Mapping[str, Any]
) -> str | None:
    """The RedisRestore of the same target that runs now, if one does (one list
    per namespace every :data:`RESTORES_TTL_SECONDS`, shared by its daemons)."""
    key = target_key(spec)
    restores = await controller.restores_in(tracker.namespace, RESTORES_TTL_SECONDS)
    for restore in sorted(restores, key=lambda r: str(r["metadata"].get("name"))):
        status = restore.get("status") or {}
        running = status.get("startTime") and not is_finished(status)
        if running and target_key(restore.get("spec") or {}) == key:
            return str(restore["metadata"]["name"])
    return None


async def read_pods(
    controller: Controller, tracker: Tracker, job: JobView, now: datetime
) -> JobView:
    """Add the termination message of a finished, unrecorded Job, or the
    reason a started Job's pod does not run (checked with growing pauses)."""
    assert tracker.status is not None
    if job.state != RUNNING:
        if is_recorded(tracker.status, job):
            return job
        if job.name not in tracker.results:
            tracker.results[job.name] = pod_result(await job_pods(controller, tracker, job))
        return replace(job, result=tracker.results[job.name])
    if job.ready:
        tracker.pod_checks.pop(job.name, None)
        tracker.stuck.pop(job.name, None)
        return job
    checks, due = tracker.pod_checks.get(job.name, (0, now + timedelta(seconds=POD_CHECK_FIRST)))
    if due <= now:
        pods = await job_pods(controller, tracker, job)
        problem = pod_problem(pods, controller.clock.from_real)
        tracker.stuck[job.name] = first_seen(problem, job.name, now, tracker.stuck_since)
        checks += 1
        pause = min(POD_CHECK_FIRST * 2**checks, POD_CHECK_MAX)
        due = now + timedelta(seconds=pause)
    tracker.pod_checks[job.name] = (checks, due)
    return replace(job, waiting=tracker.stuck.get(job.name))


async def job_pods(controller: Controller, tracker: Tracker, job: JobView) -> list[dict[str, Any]]:
    return await controller.kube.list("", "v1", "pods", tracker.namespace, f"job-name={job.name}")


async def resolve_target(
    controller: Controller, tracker: Tracker, observed: Observed, now: datetime
) -> Observed:
    """Find the pod to back up; a failure becomes a :class:`Problem` with a
    growing retry delay."""
    spec = observed.spec
    assert isinstance(spec, BackupSpec)
    tls = spec.target.tls is not None and spec.target.tls.enabled
    try:
        workload = await targets.resolve(controller.kube, tracker.namespace, spec.target)
        choice = topology.choose(
            workload, method=spec.method, prefer_replica=spec.prefer_replica, tls=tls
        )
        if spec.method == "bgsave" and not choice.cluster and choice.pod.data_pvc:
            claim = await controller.kube.get(
                "", "v1", "persistentvolumeclaims", tracker.namespace, choice.pod.data_pvc
            )
            pod = topology.check_bgsave_claim(choice.pod, claim)
            uid = str(tracker.body["metadata"]["uid"]) if tracker.body is not None else ""
            choice = replace(choice, pod=await with_data_owner(controller, tracker, spec, pod, uid))
    except topology.TargetError as e:
        tracker.choice = tracker.resolved_at = None
        if e.reason == PROBING:
            tracker.failures = 0  # look again in a few seconds
        set_problem(tracker, e.reason, e.message, now)
        return replace(
            observed, target=None, resolved_at=None, problem=tracker.problem, shards=None
        )
    tracker.choice, tracker.resolved_at, tracker.problem = choice, now, None
    return replace(
        observed, target=choice.description, resolved_at=now, problem=None, shards=choice.shards
    )


def set_problem(tracker: Tracker, reason: str, message: str, now: datetime) -> None:
    tracker.failures += 1
    retry_at = now + timedelta(seconds=retry_delay(tracker.failures))
    tracker.problem = Problem(reason, message, tracker.failures, retry_at)


# --- execute ------------------------------------------------------------------------------


async def execute(
    controller: Controller,
    tracker: Tracker,
    body: kopf.Body,
    observed: Observed,
    planned: Plan,
) -> tuple[bool, dict[str, Any]]:
    """Jobs, Events and metrics, and the status: before the Jobs, or after them
    (:func:`jobs_first`: returned, for the caller to write once no other pass waits).
    Also whether the API refused a Job."""
    kube, ns, name = controller.kube, tracker.namespace, tracker.name
    assert tracker.status is not None
    patch = status_patch(tracker.status, planned.status)
    behind = patch if patch and jobs_first(tracker.status, planned) else {}
    if patch and not behind:
        await write_status(controller, tracker, patch)
    for delete in planned.deletes:
        await kube.delete("batch", "v1", "jobs", ns, delete.name)
    failed = False
    for create in planned.creates:
        try:
            manifest = job_manifest(controller, tracker, body, observed.spec, create)
            manifest = with_job_shard(manifest, controller.shard)
            job = await kube.create("batch", "v1", "jobs", ns, manifest)
            now = controller.clock.now()
            tracker.expect(job_view(job), now, now + timedelta(seconds=POD_CHECK_FIRST))
            await controller.event(body, "Normal", "JobCreated", create.message)
            if create.component == BACKUP:
                controller.metrics.job_created(ns, name)
        except AlreadyExists:
            pass  # made before a restart or by a retry: this slot is done
        except ApiError as e:
            if e.status >= 500 or e.status == 429:
                raise
            failed = True  # refused (invalid, forbidden, quota): the user must act
            message = f"Job {create.name}: {e.message}"
            set_problem(tracker, "JobRejected", message, controller.clock.now())
            await controller.event(body, "Warning", "JobRejected", message)
    for event in planned.events:
        await controller.event(body, event.type, event.reason, event.message)
    choice = tracker.choice
    if choice is not None and choice.note and choice.note != tracker.noted:
        await controller.event(body, "Normal", "TargetNote", choice.note)
        tracker.noted = choice.note
    for outcome in planned.outcomes:
        if not outcome.succeeded:
            controller.metrics.failure(ns, name, outcome.reason or JOB_FAILED)
    if not behind:
        update_metrics(controller, tracker, observed)
    return failed, behind


def jobs_first(status: Mapping[str, Any], planned: Plan) -> bool:
    """Whether the Jobs of this plan may be created before its status is written: its
    runs are slots of the schedule (or the one-off run), whose Jobs are named after the
    slot and carry it. A controller stopped between the two finds the Job, not the
    status, and records the run from it (history.record; ``due`` counts a Job's slot as
    run): it neither makes a second Job nor loses the run. Not for a run-now run (its
    slot is the moment it was asked: only the status's ``lastRunNow`` stops a second
    one) nor with deletes (``concurrencyPolicy: Replace``: the status says why the
    replaced run failed). At a cron slot that takes the status write, and kopf's
    processing of its watch event, out of the way of the other resources' Jobs."""
    return (
        bool(planned.creates)
        and not planned.deletes
        and planned.status.get(RUN_NOW_STATUS) == status.get(RUN_NOW_STATUS)
    )


async def write_status(controller: Controller, tracker: Tracker, patch: dict[str, Any]) -> None:
    obj = await controller.kube.patch_status(
        API_GROUP, API_VERSION, PLURAL, tracker.namespace, tracker.name, patch
    )
    tracker.status = dict(obj.get("status") or {})


def job_manifest(
    controller: Controller,
    tracker: Tracker,
    body: kopf.Body,
    spec: BackupSpec | SpecError,
    create: CreateJob,
) -> dict[str, Any]:
    assert isinstance(spec, BackupSpec), "Jobs are planned only for a valid spec"
    meta = body["metadata"]
    owner = owner_reference(GROUP_VERSION, "RedisBackup", meta["name"], meta["uid"])
    common = {
        "name": create.name,
        "namespace": meta["namespace"],
        "backup_name": meta["name"],
        "owner": owner,
        "image": controller.image,
    }
    if create.component == PRUNE:
        return prune_job(spec, slot=create.slot, **common)
    if create.component == VERIFY:
        return verify_job(spec, slot=create.slot, backup_id=create.backup_id, **common)
    choice = tracker.choice
    assert choice is not None, "a backup Job is planned only with a resolved target"
    shard = (create.shard, create.shards or 0) if create.shard is not None else None
    return backup_job(
        spec,
        target_pod=choice.pod,
        slot=create.slot,
        cluster=choice.cluster or shard is not None,
        shard=shard,
        **common,
    )


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch from ``old`` to ``new`` over the fields the plan owns."""
    patch = {k: v for k, v in new.items() if k in STATUS_FIELDS and old.get(k) != v}
    patch.update({k: None for k in STATUS_FIELDS if k in old and k not in new})
    return patch


def update_metrics(controller: Controller, tracker: Tracker, observed: Observed) -> None:
    """The RedisBackup's gauges from the status just written (so they exist
    from the first pass and survive restarts)."""
    spec = observed.spec
    cron, tz, suspended = None, "UTC", False
    if isinstance(spec, BackupSpec):
        cron, tz, suspended = spec.schedule, spec.time_zone, spec.suspend
    if tracker.interval is None or tracker.interval[0] != (cron, tz):
        now = controller.clock.now()
        tracker.interval = ((cron, tz), schedule_interval(cron, tz, now))
    gauges = backup_gauges(
        tracker.status or {},
        created=observed.created,
        interval=tracker.interval[1],
        suspended=suspended,
    )
    controller.metrics.backup(tracker.namespace, tracker.name, gauges)


__all__ = ["PLURAL", "reconcile", "status_patch"]
