"""The RedisBackup controller: kopf handlers that observe, plan and execute.

One async daemon per RedisBackup (:func:`backup_daemon`) loops:

1. observe: the live spec, the status this controller last wrote, the Jobs
   labelled for the resource (a kopf index fed by a watch), and -- only for
   finished Jobs not recorded yet, or Jobs whose pod does not start -- their
   pods' termination messages / waiting reasons;
2. plan: :func:`backupctl.controller.backup.plan.plan`, pure; when it wants a Job it asks for
   the target, which :mod:`backupctl.controller.targets` resolves, and plans again;
3. execute: write the status first (``lastScheduleTime`` before the Job
   exists), then delete/create Jobs (deterministic names: 409 means done),
   post Events, update metrics;
4. sleep until the plan's wake-up time, at most :data:`MAX_SLEEP`; a spec
   change, a change of one of its Jobs (both noticed by
   :meth:`Controller.watch_changes` in kopf's caches, within
   :data:`CHANGE_POLL`), or a move of the fake clock wakes it early.

Failures the user can fix (bad spec, missing target, missing Secret) show as
``Ready=False`` and are retried with a growing delay inside the loop, so a
fix applies at once; API failures raise :class:`kopf.TemporaryError` with a
growing delay and kopf restarts the daemon. The controller never reads
Secrets or backup data: Jobs do.

Time: :meth:`Clock.now` is real UTC time, plus an offset read from the file
named by ``$BACKUPCTL_FAKE_CLOCK`` (``--clock-offset-file``; for tests only:
they move time across cron slots). While a fake clock is configured one task
polls that file and wakes every daemon when it changes.

The RedisRestore controller (``backupctl.controller.restore.handlers``), when present,
is imported here so that both run in one operator process.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kopf

from backupctl import __version__
from backupctl.controller import targets, topology
from backupctl.controller.backup import plan
from backupctl.controller.kube import AlreadyExists, ApiError, Kube
from backupctl.controller.manifests import (
    LABEL_BACKUP,
    LABEL_MANAGED_BY,
    backup_job,
    label_value,
    owner_reference,
    prune_job,
)
from backupctl.controller.metrics import Metrics
from backupctl.controller.observe import job_view, pod_problem, pod_result

# Importing the RedisRestore handlers registers them with kopf: one process serves both.
from backupctl.controller.restore.handlers import Restores
from backupctl.controller.spec import (
    API_GROUP,
    API_VERSION,
    GROUP_VERSION,
    BackupSpec,
    SpecError,
    parse_backup,
)

PLURAL = "redisbackups"
#: Longest sleep of a daemon, whatever the plan says (re-checks the world).
MAX_SLEEP = 300.0
#: Shortest sleep between two passes of one daemon (no hot loop, ever).
MIN_SLEEP = 0.05
#: How often the fake clock file is polled (only when one is configured).
CLOCK_POLL = 0.1
#: How often the watch caches are compared with what each daemon last saw.
CHANGE_POLL = 0.5
#: Checks of a started Job whose pod is not ready: first after 5 s, then doubling to 2 min.
POD_CHECK_FIRST, POD_CHECK_MAX = 5.0, 120.0
FAKE_CLOCK_ENV = "BACKUPCTL_FAKE_CLOCK"
IMAGE_ENV = "BACKUPCTL_IMAGE"
DEFAULT_IMAGE = f"backupctl:{__version__}"

log = logging.getLogger("backupctl.controller.app")
#: kopf's index of Jobs: (namespace, backup label) -> (owner uid, JobView).
JobIndex = kopf.Index[tuple[str, str], tuple[str, plan.JobView]]


# --- time ---------------------------------------------------------------------------


class Clock:
    """``now()``: UTC, shifted by the offset (seconds) in a fake clock file.

    The file is read once at start and then by :meth:`watch` (every
    :data:`CLOCK_POLL`), never on the hot path."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._offset = 0.0
        self.refresh()

    def refresh(self) -> bool:
        """Re-read the file if it changed; True when the offset moved."""
        if self.path is None:
            return False
        try:
            st = self.path.stat()
            if (st.st_mtime_ns, st.st_size) == self._seen:
                return False
            self._seen = (st.st_mtime_ns, st.st_size)
            offset = float(self.path.read_text().strip() or 0)
        except (OSError, ValueError):
            return False  # keep the last good offset while the file is rewritten
        changed, self._offset = offset != self._offset, offset
        return changed

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self._offset)

    def from_real(self, t: datetime) -> datetime:
        """A timestamp the API server set, on this clock."""
        return t + timedelta(seconds=self._offset)

    async def watch(self, on_change: Callable[[], None]) -> None:
        """Call ``on_change()`` whenever the offset changes (fake clock only)."""
        while True:
            await asyncio.sleep(CLOCK_POLL)
            if self.refresh():
                on_change()


# --- per-operator and per-resource state ----------------------------------------------


@dataclass
class Config:
    """What ``backupctl operator`` was started with."""

    image: str = DEFAULT_IMAGE
    metrics_port: int | None = None
    metrics_address: str = "0.0.0.0"
    clock_file: Path | None = None

    @classmethod
    def from_env(cls) -> Config:
        clock = os.environ.get(FAKE_CLOCK_ENV)
        return cls(
            image=os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE,
            clock_file=Path(clock) if clock else None,
        )


@dataclass
class Tracker:
    """What one daemon remembers between passes (lost on restart, by design:
    the status and the Jobs hold everything that must survive)."""

    namespace: str
    name: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    generation: int | None = None
    status: dict[str, Any] | None = None
    seen: set[str] = field(default_factory=set)
    failures: int = 0
    problem: plan.Problem | None = None
    spec: BackupSpec | SpecError | None = None  # parsed once per generation
    choice: topology.Choice | None = None
    resolved_at: datetime | None = None
    noted: str | None = None
    results: dict[str, Mapping[str, Any] | None] = field(default_factory=dict)
    pod_checks: dict[str, tuple[int, datetime]] = field(default_factory=dict)
    stuck: dict[str, plan.PodProblem | None] = field(default_factory=dict)
    body: kopf.Body | None = None  # kopf's live view of the resource
    seen_state: Any = None  # what the last pass saw (see Controller.watch_changes)

    async def sleep(self, seconds: float, stopped: kopf.DaemonStopped) -> None:
        """Until ``seconds`` pass, something wakes this daemon, or kopf stops it."""
        timeout = min(max(seconds, MIN_SLEEP), MAX_SLEEP)

        async def until_stopped() -> None:
            await stopped.wait(timeout)

        waiters = [
            asyncio.ensure_future(self.wake.wait()),
            asyncio.ensure_future(until_stopped()),
        ]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()


@dataclass
class Controller:
    """Shared by all handlers through kopf's ``memo``."""

    config: Config
    kube: Kube
    clock: Clock
    metrics: Metrics = field(default_factory=Metrics)
    trackers: dict[tuple[str, str], Tracker] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    jobs: JobIndex | None = None  # kopf's index of Jobs, once a daemon received it

    def tracker(self, namespace: str, name: str) -> Tracker:
        key = (namespace, label_value(name))
        if key not in self.trackers:
            self.trackers[key] = Tracker(namespace, name)
        return self.trackers[key]

    def wake_all(self) -> None:
        for tracker in self.trackers.values():
            tracker.wake.set()

    def state_of(self, tracker: Tracker) -> Any:
        """What should wake a daemon when it changes: the spec's generation, and
        its Jobs' names and states in the watch cache (not its own status writes)."""
        generation = tracker.body.get("metadata", {}).get("generation") if tracker.body else None
        key = (tracker.namespace, label_value(tracker.name))
        jobs = self.jobs.get(key, ()) if self.jobs is not None else ()
        return generation, sorted((j.name, j.state, j.ready) for _, j in jobs)

    async def watch_changes(self) -> None:
        """Wake the daemons whose spec or Jobs changed. One in-memory scan of kopf's
        caches every :data:`CHANGE_POLL` instead of a kopf handler call per watch
        event: at a cron slot a thousand resources change at once."""
        while True:
            await asyncio.sleep(CHANGE_POLL)
            for tracker in list(self.trackers.values()):
                if tracker.body is not None and self.state_of(tracker) != tracker.seen_state:
                    tracker.wake.set()

    def forget(self, namespace: str, name: str) -> None:
        self.trackers.pop((namespace, label_value(name)), None)
        self.metrics.forget(namespace, name)


# --- kopf handlers ------------------------------------------------------------------


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """``$KUBECONFIG`` when set, else the pod's service account."""
    if os.environ.get("KUBECONFIG"):
        return kopf.login_with_kubeconfig(**kwargs)
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """All kopf settings in one place, then the shared controller state."""
    settings.persistence.finalizer = f"{API_GROUP}/finalizer"
    # Watch only the Jobs backupctl made (server-side selector: less traffic).
    settings.watching.label_selectors["batch", "jobs"] = f"{LABEL_MANAGED_BY}=backupctl"
    settings.watching.reconnect_backoff = 1.0
    settings.posting.loggers = False  # Events are posted explicitly, one per transition
    config: Config = memo.config
    clock = Clock(config.clock_file)
    memo.clock = clock
    memo.kube = kube = Kube.connect()  # the one API client of both controllers
    controller = Controller(config=config, kube=kube, clock=clock)
    memo.restores = Restores(kube=kube, image=config.image, clock=clock)
    if config.metrics_port is not None:
        controller.metrics.serve(config.metrics_port, config.metrics_address)
    controller.tasks.append(asyncio.create_task(controller.watch_changes()))
    if config.clock_file is not None:
        log.warning("fake clock from %s: for tests only", config.clock_file)
        controller.tasks.append(asyncio.create_task(controller.clock.watch(controller.wake_all)))
    memo.controller = controller


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    controller: Controller | None = memo.get("controller")
    if controller is not None:
        for task in controller.tasks:
            task.cancel()
    kube: Kube | None = memo.get("kube")
    if kube is not None:
        await kube.aclose()


@kopf.index("batch", "v1", "jobs", labels={LABEL_BACKUP: kopf.PRESENT})
async def backup_jobs(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], tuple[str, plan.JobView]]:
    """The Jobs of each RedisBackup, by (namespace, backup label): the
    owner's uid (a re-created RedisBackup of the same name is another
    owner) and the Job as the planner sees it."""
    owners = [o.get("uid", "") for o in body.get("metadata", {}).get("ownerReferences") or []]
    key = (namespace or "", str(labels[LABEL_BACKUP]))
    return {key: (owners[0] if owners else "", job_view(body))}


@kopf.daemon(API_GROUP, API_VERSION, PLURAL, cancellation_timeout=5.0, backoff=30.0)
async def backup_daemon(
    name: str,
    namespace: str | None,
    body: kopf.Body,
    stopped: kopf.DaemonStopped,
    memo: Any,
    retry: int,
    **kwargs: Any,
) -> None:
    """Run the RedisBackup: observe -> plan -> execute, then sleep."""
    controller: Controller = memo.controller
    backup_jobs: JobIndex = kwargs["backup_jobs"]  # the kopf index above
    controller.jobs = backup_jobs
    namespace = namespace or ""
    tracker = controller.tracker(namespace, name)
    tracker.body = body
    try:
        while not stopped:
            tracker.wake.clear()
            tracker.seen_state = controller.state_of(tracker)
            try:
                delay = await reconcile(controller, tracker, body, backup_jobs)
            except (ApiError, OSError) as e:  # the API server, not the user
                tracker.status = None  # re-read the status on the next attempt
                raise kopf.TemporaryError(
                    f"Kubernetes API: {e}", delay=plan.retry_delay(retry + 1)
                ) from e
            await tracker.sleep(delay, stopped)
    finally:
        if (
            stopped.reason is not None
            and stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED
        ):
            controller.forget(namespace, name)


# --- observe -> plan -> execute ----------------------------------------------------------


async def reconcile(
    controller: Controller,
    tracker: Tracker,
    body: kopf.Body,
    index: JobIndex,
) -> float:
    """One pass; returns the seconds to sleep."""
    now = controller.clock.now()
    observed = await observe(controller, tracker, body, index, now)
    planned = plan.plan(observed, now)
    resolved = False
    if planned.needs_target:
        observed = await resolve_target(controller, tracker, observed, now)
        resolved = observed.problem is None
        planned = plan.plan(observed, now)
    failed = await execute(controller, tracker, body, observed, planned)
    if not failed and (resolved or planned.creates):
        tracker.failures = 0  # the retry delay grows only while attempts fail
    wake_times = [t for t in (planned.wake_at, *(w for _, w in tracker.pod_checks.values())) if t]
    if not wake_times:
        return MAX_SLEEP
    return (min(wake_times) - controller.clock.now()).total_seconds()


async def observe(
    controller: Controller,
    tracker: Tracker,
    body: kopf.Body,
    index: JobIndex,
    now: datetime,
) -> plan.Observed:
    meta = body.get("metadata") or {}
    generation = int(meta.get("generation") or 0)
    if tracker.generation != generation:  # a new spec: resolve its target, retry at once
        tracker.generation, tracker.problem, tracker.failures = generation, None, 0
        tracker.choice = tracker.resolved_at = tracker.spec = None
    if tracker.status is None:  # first pass (or after an API error): trust the server
        tracker.status = dict(body.get("status") or {})
        restore_metrics(controller.metrics, tracker)
    if tracker.spec is None:
        try:
            tracker.spec = parse_backup(body.get("spec") or {})
        except SpecError as e:
            tracker.spec = e
    uid = meta.get("uid")
    key = (tracker.namespace, label_value(tracker.name))
    jobs = [job for owner, job in index.get(key, ()) if owner == uid]
    tracker.seen.update(j.name for j in jobs)
    tracker.seen.update(j.run_name for j in jobs)  # a run was seen when one of its Jobs was
    names = {j.name for j in jobs}
    for cache in (tracker.results, tracker.pod_checks, tracker.stuck):
        for gone in [n for n in cache if n not in names]:
            del cache[gone]
    jobs = [await read_pods(controller, tracker, job, now) for job in jobs]
    created = plan.parse_time(meta.get("creationTimestamp")) or now
    return plan.Observed(
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
    )


async def read_pods(
    controller: Controller, tracker: Tracker, job: plan.JobView, now: datetime
) -> plan.JobView:
    """Add the termination message of a finished, unrecorded Job, or the
    reason a started Job's pod does not run (checked with growing pauses)."""
    assert tracker.status is not None
    if job.state != plan.RUNNING:
        if plan.is_recorded(tracker.status, job):
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
        tracker.stuck[job.name] = pod_problem(await job_pods(controller, tracker, job))
        checks += 1
        pause = min(POD_CHECK_FIRST * 2**checks, POD_CHECK_MAX)
        due = now + timedelta(seconds=pause)
    tracker.pod_checks[job.name] = (checks, due)
    return replace(job, waiting=tracker.stuck.get(job.name))


async def job_pods(
    controller: Controller, tracker: Tracker, job: plan.JobView
) -> list[dict[str, Any]]:
    return await controller.kube.list("", "v1", "pods", tracker.namespace, f"job-name={job.name}")


async def resolve_target(
    controller: Controller, tracker: Tracker, observed: plan.Observed, now: datetime
) -> plan.Observed:
    """Find the pod to back up; a failure becomes a :class:`plan.Problem`
    with a growing retry delay."""
    spec = observed.spec
    assert isinstance(spec, BackupSpec)
    tls = spec.target.tls is not None and spec.target.tls.enabled
    try:
        workload = await targets.resolve(controller.kube, tracker.namespace, spec.target)
        choice = topology.choose(
            workload, method=spec.method, prefer_replica=spec.prefer_replica, tls=tls
        )
    except topology.TargetError as e:
        tracker.choice = tracker.resolved_at = None
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
    retry_at = now + timedelta(seconds=plan.retry_delay(tracker.failures))
    tracker.problem = plan.Problem(reason, message, tracker.failures, retry_at)


async def execute(
    controller: Controller,
    tracker: Tracker,
    body: kopf.Body,
    observed: plan.Observed,
    planned: plan.Plan,
) -> bool:
    """Status first (it records the slot before its Job exists), then Jobs,
    then Events and metrics. True when the API refused a Job."""
    kube, ns, name = controller.kube, tracker.namespace, tracker.name
    assert tracker.status is not None
    patch = status_patch(tracker.status, planned.status)
    if patch:
        obj = await kube.patch_status(API_GROUP, API_VERSION, PLURAL, ns, name, patch)
        tracker.status = dict(obj.get("status") or {})
    for delete in planned.deletes:
        await kube.delete("batch", "v1", "jobs", ns, delete.name)
    failed = False
    for create in planned.creates:
        try:
            manifest = job_manifest(controller, tracker, body, observed.spec, create)
            await kube.create("batch", "v1", "jobs", ns, manifest)
            kopf.event(body, type="Normal", reason="JobCreated", message=create.message)
            if create.component == plan.BACKUP:
                controller.metrics.job_created(ns, name)
        except AlreadyExists:
            pass  # made before a restart or by a retry: this slot is done
        except ApiError as e:
            if e.status >= 500 or e.status == 429:
                raise
            failed = True  # refused (invalid, forbidden, quota): the user must act
            message = f"Job {create.name}: {e.message}"
            set_problem(tracker, "JobRejected", message, controller.clock.now())
    for event in planned.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    choice = tracker.choice
    if choice is not None and choice.note and choice.note != tracker.noted:
        kopf.event(body, type="Normal", reason="TargetNote", message=choice.note)
        tracker.noted = choice.note
    for outcome in planned.outcomes:
        if outcome.succeeded:
            controller.metrics.success(
                ns,
                name,
                time=outcome.time,
                duration=outcome.duration,
                size=outcome.size,
                keys=outcome.keys,
            )
        else:
            controller.metrics.failure(ns, name)
    return failed


def job_manifest(
    controller: Controller,
    tracker: Tracker,
    body: kopf.Body,
    spec: BackupSpec | SpecError,
    create: plan.CreateJob,
) -> dict[str, Any]:
    assert isinstance(spec, BackupSpec), "Jobs are planned only for a valid spec"
    meta = body["metadata"]
    owner = owner_reference(GROUP_VERSION, "RedisBackup", meta["name"], meta["uid"])
    common = {
        "name": create.name,
        "namespace": meta["namespace"],
        "backup_name": meta["name"],
        "owner": owner,
        "image": controller.config.image,
    }
    if create.component == plan.PRUNE:
        return prune_job(spec, slot=create.slot, **common)
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
    patch = {k: v for k, v in new.items() if k in plan.STATUS_FIELDS and old.get(k) != v}
    patch.update({k: None for k in plan.STATUS_FIELDS if k in old and k not in new})
    return patch


def restore_metrics(metrics: Metrics, tracker: Tracker) -> None:
    """Gauges from ``status.lastSuccessfulBackup`` (they survive restarts)."""
    last = (tracker.status or {}).get("lastSuccessfulBackup") or {}
    if last:
        metrics.success(
            tracker.namespace,
            tracker.name,
            time=plan.parse_time(last.get("time")),
            duration=last.get("durationSeconds"),
            size=last.get("size"),
            keys=last.get("keys"),
        )


# --- running -------------------------------------------------------------------------


def run(
    *,
    namespaces: Iterable[str] = (),
    all_namespaces: bool = False,
    liveness: str | None = None,
    config: Config | None = None,
    verbose: bool = False,
) -> None:
    """Run the controller in this process until SIGTERM/SIGINT."""
    kopf.configure(verbose=verbose)
    kopf.run(
        standalone=True,
        clusterwide=all_namespaces,
        namespaces=list(namespaces),
        liveness_endpoint=liveness,
        memo=kopf.Memo(config=config or Config.from_env()),
    )

__all__ = ["Clock", "Config", "Controller", "run"]
