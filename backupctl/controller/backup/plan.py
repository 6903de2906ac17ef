"""What the RedisBackup controller should do next (pure).

:func:`plan` takes what the controller observed about one RedisBackup (its
parsed spec or the :class:`~backupctl.controller.spec.SpecError`, its status, the Jobs
labelled for it, the target as resolved this pass or the last resolution
problem) and the current time, and returns a :class:`Plan`: the new status,
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
   with ``lastScheduleTime`` = its slot and a ``Running`` history entry; the
   operator writes that status BEFORE it creates the Job, and Job names are
   a function of the slot, so neither a retry nor a restart makes a second
   Job for a slot (AlreadyExists means done).
4. Retention. After the newest successful backup, a prune Job named after
   its slot (``<name>-<slot>-prune``), once.

A run is one Job, or -- for a Redis Cluster whose shard count the target
says (:attr:`Observed.shards`) -- one Job per shard, ``<name>-<slot>-shard<I>``
(labels ``backupctl.dev/run: <name>-<slot>`` and ``backupctl.dev/shard:
<I>-of-<N>``). The rules above see a run as one Job named ``<name>-<slot>``
(:func:`runs`): it failed as soon as one of its Jobs failed (the message says
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
the last :data:`TARGET_FRESH`. When a Job is wanted without that, when the
spec is new, or :data:`PREFETCH` before a slot, :func:`plan` returns
``needs_target=True`` and nothing else; the operator resolves the target and
plans again with :attr:`Observed.target` (or a :class:`Problem` with its
retry time, which yields ``Ready=False`` and a wake-up at the retry time:
:func:`retry_delay` grows the delay per attempt).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from backupctl.controller.schedule import job_name, missed_slots, next_run, prev_run, shard_job_name
from backupctl.controller.spec import BackupSpec, SpecError

#: History entries kept in ``status.history`` (newest first; the CRD allows 50).
HISTORY_LIMIT = 20
#: Delays between attempts to resolve a target or create a Job that failed.
RETRY_BASE_SECONDS = 5.0
RETRY_MAX_SECONDS = 300.0
#: Longest message copied into status and Events (termination messages are <= 4 KiB).
MESSAGE_LIMIT = 1024
#: A backup Job is made from a target resolution at most this old (pods move).
TARGET_FRESH = timedelta(seconds=60)
#: A schedule resolves its target this long before each slot, so that the slot
#: itself costs two writes: the status, then the Job.
PREFETCH = timedelta(seconds=30)

BACKUP = "backup"
PRUNE = "prune"
JobState = Literal["Running", "Succeeded", "Failed"]
RUNNING: Final = "Running"
SUCCEEDED: Final = "Succeeded"
FAILED: Final = "Failed"

#: The status fields the controller owns (everything else in status is left alone).
STATUS_FIELDS = (
    "phase",
    "message",
    "observedGeneration",
    "target",
    "conditions",
    "lastScheduleTime",
    "nextScheduleTime",
    "activeJobs",
    "lastSuccessfulBackup",
    "lastRetention",
    "history",
)
_EPSILON = timedelta(microseconds=1)


# --- what the controller observed ---------------------------------------------------


@dataclass(frozen=True)
class PodProblem:
    """Why a Job's pod does not run (``CreateContainerConfigError``: a Secret
    or key is missing; ``Unschedulable``; image pull errors)."""

    reason: str
    message: str


@dataclass(frozen=True)
class JobView:
    """One Job labelled for the RedisBackup, as far as planning cares.

    ``result`` is the parsed termination message of the Job's last pod (the
    operator fills it in for finished Jobs that are not recorded yet);
    ``message`` says why a failed Job failed (its ``Failed`` condition).
    A shard Job has ``run`` (its run's name), ``shard`` (I) and ``shards`` (N);
    a whole run seen as one (:func:`runs`) has ``shards`` and no ``shard``.
    """

    name: str
    component: str  # BACKUP or PRUNE
    slot: datetime | None
    state: JobState
    started: datetime | None = None
    finished: datetime | None = None
    ready: bool = False
    message: str = ""
    result: Mapping[str, Any] | None = None
    waiting: PodProblem | None = None
    run: str = ""
    shard: int | None = None
    shards: int | None = None

    @property
    def run_name(self) -> str:
        """The run this Job belongs to: its history entry's ``jobName``."""
        return self.run or self.name


@dataclass(frozen=True)
class Problem:
    """The last attempt to resolve the target (or to create a Job) failed."""

    reason: str
    message: str
    attempts: int
    retry_at: datetime


@dataclass(frozen=True)
class Observed:
    """Everything :func:`plan` looks at for one RedisBackup.

    ``created`` is ``metadata.creationTimestamp`` (the one-off's slot and the
    start of a schedule that never ran). ``seen`` holds the names of Jobs
    this controller process has observed at least once. ``target`` describes
    the last successful resolution of the target (made at ``resolved_at``, for
    the current spec); ``problem`` is the last failed one (kept until one
    succeeds or the spec changes). ``shards``: the resolved target is a Redis
    Cluster backed up by one Job per shard, this many.
    """

    name: str
    namespace: str
    generation: int
    created: datetime
    spec: BackupSpec | SpecError
    status: Mapping[str, Any]
    jobs: Sequence[JobView] = ()
    seen: frozenset[str] = frozenset()
    target: str | None = None
    resolved_at: datetime | None = None
    problem: Problem | None = None
    shards: int | None = None


# --- what the controller should do --------------------------------------------------


@dataclass(frozen=True)
class CreateJob:
    """Create the ``component`` Job ``name`` for ``slot`` (409 means done).

    The operator posts the ``JobCreated`` Event (with ``note``) only when the
    API server really created the Job, so a create planned again before the
    Job shows in the watch cache is silent. A shard Job has ``run``, ``shard``
    and ``shards`` as :class:`JobView` does."""

    component: str
    name: str
    slot: datetime
    note: str = ""
    run: str = ""
    shard: int | None = None
    shards: int | None = None

    @property
    def run_name(self) -> str:
        return self.run or self.name

    @property
    def message(self) -> str:
        what = f"Created Job {self.name} for the run at {fmt_time(self.slot)}"
        if self.shard is not None:
            what += f" (shard {self.shard} of {self.shards})"
        return what + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class DeleteJob:
    name: str
    reason: str


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Outcome:
    """A backup run that just ended, for metrics."""

    job: str
    succeeded: bool
    time: datetime | None = None
    duration: float | None = None
    size: int | None = None
    keys: int | None = None


Action = DeleteJob | CreateJob | Event | Outcome


@dataclass(frozen=True)
class Plan:
    """The new ``status`` (write it first), then ``deletes``, ``creates``,
    ``events`` and ``outcomes``, in that order; look again at ``wake_at``
    (None: only when something changes)."""

    status: dict[str, Any]
    deletes: tuple[DeleteJob, ...] = ()
    creates: tuple[CreateJob, ...] = ()
    events: tuple[Event, ...] = ()
    outcomes: tuple[Outcome, ...] = ()
    wake_at: datetime | None = None
    needs_target: bool = False

    @property
    def actions(self) -> list[Action]:
        """Everything besides the status, in the order to execute it."""
        return [*self.deletes, *self.creates, *self.events, *self.outcomes]


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


def retry_delay(attempts: int) -> float:
    """Seconds before attempt ``attempts + 1``: 5, 10, 20, ... at most 300."""
    exponent = min(max(attempts, 1) - 1, 16)
    return min(RETRY_BASE_SECONDS * 2.0**exponent, RETRY_MAX_SECONDS)


def fmt_time(t: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, second precision (Kubernetes style)."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 string as an aware UTC datetime; None for anything else."""
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t.astimezone(UTC) if t.tzinfo else t.replace(tzinfo=UTC)


def is_recorded(status: Mapping[str, Any], job: JobView) -> bool:
    """Whether a finished Job's result is already in ``status`` (a shard
    Job's: whether its run's is)."""
    if job.component == PRUNE:
        last = status.get("lastRetention") or {}
        if last.get("jobName") == job.name:
            return True
        done = parse_time(last.get("time"))
        return done is not None and job.finished is not None and job.finished <= done
    entry = _find(status.get("history") or [], job.run_name)
    return entry is not None and entry.get("phase") in (SUCCEEDED, FAILED)


def unrecorded(status: Mapping[str, Any], jobs: Iterable[JobView]) -> list[str]:
    """Names of finished Jobs whose results the status lacks: the operator
    reads their pods' termination messages before planning."""
    return [j.name for j in jobs if j.state != RUNNING and not is_recorded(status, j)]


def runs(jobs: Iterable[JobView]) -> list[JobView]:
    """``jobs`` with the shard Jobs of each run merged into one view named
    after the run: Failed as soon as one shard Job failed (the error names
    each failed shard), Succeeded when all N did (sizes and keys added up,
    the newest time), else Running. Other Jobs are returned as they are."""
    out: list[JobView] = []
    groups: dict[str, list[JobView]] = {}
    for job in jobs:
        if job.component == BACKUP and job.shard is not None:
            groups.setdefault(job.run_name, []).append(job)
        else:
            out.append(job)
    out += [_merge_run(name, members) for name, members in groups.items()]
    return out


def _merge_run(name: str, members: Sequence[JobView]) -> JobView:
    members = sorted(members, key=lambda j: j.shard or 0)
    count = max(j.shards or 0 for j in members)
    failed = [j for j in members if j.state == FAILED]
    state: JobState
    result: dict[str, Any] | None = None
    if failed:
        state = FAILED
        errors = [
            f"shard {j.shard} of {count} (Job {j.name}): {_failure_message(j)}" for j in failed
        ]
        result = {"ok": False, "error": "; ".join(errors)}
    elif any(j.state == RUNNING for j in members) or len({j.shard for j in members}) < count:
        state = RUNNING
    else:
        state = SUCCEEDED
        result = _sum_results([j.result or {} for j in members])
    finished = [j.finished for j in members if j.finished is not None]
    started = [j.started for j in members if j.started is not None]
    return JobView(
        name=name,
        component=BACKUP,
        slot=members[0].slot,
        state=state,
        started=min(started, default=None),
        finished=max(finished, default=None) if state != RUNNING else None,
        ready=any(j.ready for j in members),
        result=result,
        waiting=next((j.waiting for j in members if j.waiting is not None), None),
        run=name,
        shards=count,
    )


def _sum_results(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One run's result from its shard Jobs' results (all must be ok)."""
    merged: dict[str, Any] = {"ok": all(r.get("ok") is True for r in results)}
    ids = {r.get("id") for r in results}
    if len(ids) == 1:
        merged["id"] = ids.pop()
    for key in ("size", "keys"):
        values = [r.get(key) for r in results]
        if all(_valid_field(key, v) for v in values):
            merged[key] = sum(int(v) for v in values if v is not None)
    times = [t for t in (parse_time(r.get("time")) for r in results) if t is not None]
    if len(times) == len(results):
        merged["time"] = fmt_time(max(times))
    return merged


# --- planning -----------------------------------------------------------------------


def plan(obs: Observed, now: datetime) -> Plan:
    """The next steps for one RedisBackup (see the module docstring)."""
    return _Planner(obs, now).run()


@dataclass
class _Planner:
    obs: Observed
    now: datetime
    status: dict[str, Any] = field(init=False)
    deletes: list[DeleteJob] = field(default_factory=list)
    creates: list[CreateJob] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    wake: list[datetime] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    replace: list[JobView] = field(default_factory=list)
    pending: datetime | None = None

    def __post_init__(self) -> None:
        # Entries of history/conditions are changed in place: copy them (one level
        # deep is enough; nested objects are replaced, never edited).
        self.status = {k: _copy(v) for k, v in self.obs.status.items() if k in STATUS_FIELDS}
        self.status.setdefault("history", [])
        self.status.setdefault("conditions", [])

    # -- driver -------------------------------------------------------------------

    def run(self) -> Plan:
        obs, status = self.obs, self.status
        old_generation = status.get("observedGeneration")
        status["observedGeneration"] = obs.generation
        jobs = sorted(obs.jobs, key=lambda j: (j.slot or self.now, j.name))
        whole = sorted(runs(jobs), key=lambda j: (j.slot or self.now, j.name))
        self._record(whole)
        if isinstance(obs.spec, SpecError):
            return self._invalid(obs.spec)
        spec = obs.spec

        wanted = self._lost(spec, jobs, whole)
        planned = {c.name for c in wanted}
        wanted += [c for c in self._due(spec, jobs, old_generation) if c.name not in planned]
        fresh = self._resolved_since(self.now - TARGET_FRESH)
        unknown = obs.target is None or self._prefetch_due(spec)
        if ((wanted and not fresh) or unknown) and self._may_try():
            return Plan(status=dict(self.obs.status), needs_target=True)
        if wanted and fresh:
            self._create_backups(wanted)
        elif obs.problem is not None:
            self.wake.append(obs.problem.retry_at)
        self._prune(spec, jobs)
        self._limit_history(spec, jobs, whole)
        self._conditions(spec, jobs)
        return self._result()

    def _upcoming(self, spec: BackupSpec) -> datetime:
        """The first slot after now."""
        assert spec.schedule is not None
        return slots_around(spec.schedule, spec.time_zone, self.now)[1]

    def _latest(self, spec: BackupSpec) -> datetime:
        """The last slot at or before now."""
        assert spec.schedule is not None
        return slots_around(spec.schedule, spec.time_zone, self.now)[0]

    def _may_try(self) -> bool:
        problem = self.obs.problem
        return problem is None or problem.retry_at <= self.now

    def _resolved_since(self, t: datetime) -> bool:
        at = self.obs.resolved_at
        return self.obs.target is not None and at is not None and at >= t

    def _prefetch_due(self, spec: BackupSpec) -> bool:
        """Whether the next slot is close and the target not resolved for it yet;
        otherwise wake up when it is."""
        if spec.schedule is None or spec.suspend:
            return False
        upcoming = self._upcoming(spec)
        if self._resolved_since(upcoming - PREFETCH):
            return False
        if upcoming - PREFETCH <= self.now:
            return True
        self.wake.append(upcoming - PREFETCH)
        return False

    def _result(self) -> Plan:
        history = self.status.get("history") or []
        history.sort(key=lambda e: (e.get("slot") or "", e.get("jobName") or ""), reverse=True)
        del history[HISTORY_LIMIT:]
        status = {k: v for k, v in self.status.items() if v is not None}
        future = [t for t in self.wake if t is not None]
        return Plan(
            status=status,
            deletes=tuple(self.deletes),
            creates=tuple(self.creates),
            events=tuple(self.events),
            outcomes=tuple(self.outcomes),
            wake_at=min(future) if future else None,
        )

    def _event(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, _clip(message)))

    # -- 1. results ---------------------------------------------------------------

    def _record(self, jobs: Sequence[JobView]) -> None:
        history: list[dict[str, Any]] = self.status["history"]
        for job in jobs:
            if job.component == PRUNE:
                if job.state != RUNNING and not is_recorded(self.status, job):
                    self._record_prune(job)
                continue
            entry = _find(history, job.name)
            if entry is None:
                if not self._fits_history(job):
                    continue
                entry = {"slot": fmt_time(job.slot or self.now), "jobName": job.name}
                entry["phase"] = RUNNING
                history.append(entry)
            if job.started is not None and "startTime" not in entry:
                entry["startTime"] = fmt_time(job.started)
            if job.state == RUNNING or entry.get("phase") in (SUCCEEDED, FAILED):
                continue
            if job.state == SUCCEEDED:
                self._record_success(job, entry)
            else:
                self._record_failure(job, entry, _failure_message(job))

    def _fits_history(self, job: JobView) -> bool:
        """A Job missing from history is added unless it is older than what
        the (full) history keeps, so trimmed entries do not come back."""
        history = self.status["history"]
        if len(history) < HISTORY_LIMIT or job.slot is None:
            return True
        oldest = min(parse_time(e.get("slot")) or self.now for e in history)
        return job.slot >= oldest

    def _record_success(self, job: JobView, entry: dict[str, Any]) -> None:
        result = job.result or {}
        entry["phase"] = SUCCEEDED
        if job.finished is not None:
            entry["completionTime"] = fmt_time(job.finished)
        duration = _duration(job)
        backup: dict[str, Any] = {"jobName": job.name}
        for key, out in (("id", "backupId"), ("size", "size"), ("keys", "keys")):
            value = result.get(key)
            if _valid_field(key, value):
                entry[out] = value
                backup[key] = value
        if isinstance(result.get("sha256"), str):
            backup["sha256"] = result["sha256"]
        when = parse_time(result.get("time")) or job.finished or self.now
        backup["time"] = fmt_time(when)
        if duration is not None:
            backup["durationSeconds"] = duration
        if not result.get("ok"):
            entry["message"] = "the Job succeeded but reported no result"
        last = self.status.get("lastSuccessfulBackup") or {}
        last_time = parse_time(last.get("time"))
        if last_time is None or when >= last_time:
            self.status["lastSuccessfulBackup"] = backup
        summary = ", ".join(
            f"{label} {entry[k]}"
            for label, k in (("keys", "keys"), ("bytes", "size"))
            if k in entry
        )
        self._event(
            "Normal",
            "BackupSucceeded",
            f"{_label(job)}: backup {entry.get('backupId', '(no id reported)')}"
            + (f" ({summary})" if summary else ""),
        )
        self._set_failed(False, "BackupSucceeded", f"the run of {_label(job)} succeeded")
        self.outcomes.append(
            Outcome(
                job=job.name,
                succeeded=True,
                time=when,
                duration=duration,
                size=entry.get("size"),
                keys=entry.get("keys"),
            )
        )

    def _record_failure(
        self,
        job: JobView | None,
        entry: dict[str, Any],
        message: str,
        shards: int | None = None,
    ) -> None:
        name = entry.get("jobName", "")
        shards = shards or (job.shards if job is not None else None)
        what = _label(JobView(name, BACKUP, None, FAILED, shards=shards))
        entry["phase"] = FAILED
        entry["message"] = _clip(message)
        if job is not None and job.finished is not None:
            entry["completionTime"] = fmt_time(job.finished)
        else:
            entry["completionTime"] = fmt_time(self.now)
        self._event("Warning", "BackupFailed", f"{what}: {message}")
        self._set_failed(True, "BackupFailed", f"{what}: {message}")
        self.outcomes.append(Outcome(job=name, succeeded=False))

    def _record_prune(self, job: JobView) -> None:
        result = job.result or {}
        retention: dict[str, Any] = {
            "time": fmt_time(job.finished or self.now),
            "jobName": job.name,
        }
        if job.state == SUCCEEDED:
            for key in ("kept", "removed"):
                if isinstance(result.get(key), int):
                    retention[key] = result[key]
            kept, removed = retention.get("kept", "?"), retention.get("removed", "?")
            retention["message"] = f"kept {kept}, removed {removed} backup(s)"
            self._event("Normal", "RetentionApplied", f"Job {job.name}: {retention['message']}")
            if _condition(self.status, "Failed").get("reason") == "RetentionFailed":
                self._set_failed(False, "RetentionApplied", retention["message"])
        else:
            message = _failure_message(job)
            retention["message"] = _clip(f"failed: {message}")
            self._event("Warning", "RetentionFailed", f"Job {job.name}: {message}")
            self._set_failed(True, "RetentionFailed", f"Job {job.name}: {message}")
        self.status["lastRetention"] = retention

    # -- 2. lost Jobs -------------------------------------------------------------

    def _lost(
        self, spec: BackupSpec, jobs: Sequence[JobView], whole: Sequence[JobView]
    ) -> list[CreateJob]:
        present = {j.name for j in jobs}
        by_run = {r.name: r for r in whole if r.component == BACKUP}
        again: list[CreateJob] = []
        for entry in self.status["history"]:
            name = entry.get("jobName")
            if entry.get("phase") != RUNNING or not name:
                continue
            slot = parse_time(entry.get("slot"))
            run = by_run.get(name)
            if run is not None:
                if run.shards and slot is not None:
                    again += self._lost_shards(spec, entry, run.shards, slot, present)
                continue
            if name in self.obs.seen:
                self._record_failure(None, entry, "the Job was deleted before it finished")
            elif slot is not None and self._is_current(spec, slot):
                again += self._run_jobs(slot, note="created again: it was not found")
            else:
                self._record_failure(
                    None,
                    entry,
                    "the Job was not found: it was deleted, or never created, while the "
                    "controller was down",
                )
        return again

    def _lost_shards(
        self,
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
            name = shard_job_name(self.obs.name, slot, shard)
            if name in present:
                continue
            if name not in self.obs.seen and self._is_current(spec, slot):
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
            why = "was deleted before it finished" if name in self.obs.seen else "was not found"
            message = f"shard {shard} of {count} (Job {name}): the Job {why}"
            self._record_failure(None, entry, message, shards=count)
            return []
        return again

    def _run_jobs(self, slot: datetime, note: str = "") -> list[CreateJob]:
        """The Jobs of the run at ``slot``: one, or one per shard."""
        run = job_name(self.obs.name, slot)
        count = self.obs.shards
        if not count:
            return [CreateJob(BACKUP, run, slot, note=note)]
        return [
            CreateJob(
                BACKUP,
                shard_job_name(self.obs.name, slot, shard),
                slot,
                note=note,
                run=run,
                shard=shard,
                shards=count,
            )
            for shard in range(1, count + 1)
        ]

    def _is_current(self, spec: BackupSpec, slot: datetime) -> bool:
        """Whether ``slot`` is still the run to make now."""
        if spec.schedule is None:
            return True
        return self._latest(spec) == slot

    # -- 3. the next run ----------------------------------------------------------

    def _due(
        self, spec: BackupSpec, jobs: Sequence[JobView], old_generation: Any
    ) -> list[CreateJob]:
        backups = [j for j in jobs if j.component == BACKUP]
        last = parse_time(self.status.get("lastScheduleTime"))
        slots = [j.slot for j in backups if j.slot is not None]
        if slots and (last is None or max(slots) > last):
            last = max(slots)
        if spec.schedule is None:
            if last is not None:
                return []
            return self._run_jobs(self.obs.created)

        cron, tz = spec.schedule, spec.time_zone
        if spec.suspend:
            return []
        base = last if last is not None else self._schedule_start(old_generation)
        # schedule.due_slot, with the slots around now from the shared cache.
        latest = self._latest(spec)
        slot: datetime | None = latest if latest > base else None
        deadline = spec.starting_deadline_seconds
        if (
            slot is not None
            and deadline is not None
            and (self.now - slot).total_seconds() > deadline
        ):
            slot = None
        self.pending = slot
        self.wake.append(self._upcoming(spec))
        if slot is None:
            if latest > base:  # a run was due, but is more than startingDeadlineSeconds late
                self.notes.append(
                    f"missed the run at {fmt_time(latest)}: more than "
                    f"{spec.starting_deadline_seconds}s late (startingDeadlineSeconds)"
                )
            return []
        active = [j for j in backups if j.state == RUNNING]
        if active and spec.concurrency_policy == "Forbid":
            self.notes.append(
                f"the run at {fmt_time(slot)} waits for Job {active[-1].name} to finish "
                "(concurrencyPolicy: Forbid)"
            )
            return []
        if active and spec.concurrency_policy == "Replace":
            self.replace = active
        note = ""
        if prev_run(cron, tz, slot - _EPSILON) > base:  # more than one slot since base
            missed = missed_slots(cron, tz, base, self.now)
            count = f"{missed}+" if missed >= 100 else str(missed)
            note = f"{count} runs were missed; only the latest is made up for"
        return self._run_jobs(slot, note)

    def _schedule_start(self, old_generation: Any) -> datetime:
        """Where a schedule that never ran starts: the creation time on first
        sight (as CronJobs do), the announced ``nextScheduleTime`` after
        that, and the time the controller saw a changed spec."""
        if old_generation is None:
            return self.obs.created
        announced = parse_time(self.status.get("nextScheduleTime"))
        if old_generation == self.obs.generation and announced is not None:
            return announced - _EPSILON
        return self.now

    def _create_backups(self, wanted: list[CreateJob]) -> None:
        history: list[dict[str, Any]] = self.status["history"]
        for create in wanted:
            for job in self.replace:
                reason = (
                    f"replaced by the run at {fmt_time(create.slot)} (concurrencyPolicy: Replace)"
                )
                self.deletes.append(DeleteJob(job.name, reason))
                entry = _find(history, job.run_name)
                if entry is not None and entry.get("phase") == RUNNING:
                    entry.update(phase=FAILED, message=reason, completionTime=fmt_time(self.now))
                self._event("Normal", "JobReplaced", f"Job {job.name} {reason}")
            self.replace = []
            last = parse_time(self.status.get("lastScheduleTime"))
            if last is None or create.slot > last:
                self.status["lastScheduleTime"] = fmt_time(create.slot)
            if _find(history, create.run_name) is None:
                history.append(
                    {"slot": fmt_time(create.slot), "jobName": create.run_name, "phase": RUNNING}
                )
            self.creates.append(create)

    # -- 4. retention -------------------------------------------------------------

    def _prune(self, spec: BackupSpec, jobs: Sequence[JobView]) -> None:
        """One prune Job after the newest successful backup (found from the
        status, so it does not matter whether that Job still exists)."""
        if spec.retention.empty:
            return
        backup = (self.status.get("lastSuccessfulBackup") or {}).get("jobName")
        entry = _find(self.status["history"], backup) if backup else None
        slot = parse_time(entry.get("slot")) if entry else None
        if slot is None:
            return
        name = job_name(self.obs.name, slot, PRUNE)
        last = self.status.get("lastRetention") or {}
        if last.get("jobName") == name or name in {j.name for j in jobs} or name in self.obs.seen:
            return
        self.creates.append(CreateJob(PRUNE, name, slot, note="to apply the retention"))

    # -- 5. history limits --------------------------------------------------------

    def _limit_history(
        self, spec: BackupSpec, jobs: Sequence[JobView], whole: Sequence[JobView]
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
        replaced = {d.name for d in self.deletes}
        for component in (BACKUP, PRUNE):
            for state, limit in limits.items():
                finished = [
                    r
                    for r in whole
                    if r.component == component
                    and r.state == state
                    and is_recorded(self.status, r)
                    and not any(j.name in replaced for j in members.get(r.name, ()))
                ]
                finished.sort(key=lambda j: (j.slot or self.now, j.name), reverse=True)
                for run in finished[limit:]:
                    own = members.get(run.name, [])
                    if any(j.state == RUNNING for j in own):
                        continue
                    self.deletes += [DeleteJob(j.name, "history limit") for j in own]

    # -- 6. status ----------------------------------------------------------------

    def _invalid(self, error: SpecError) -> Plan:
        self._ready(False, "InvalidSpec", str(error))
        self.status["phase"] = FAILED
        self.status["message"] = _clip(str(error))
        self.status["nextScheduleTime"] = None
        active = [j for j in self.obs.jobs if j.state == RUNNING]
        self._progressing(active)
        self.status["activeJobs"] = self._active_names(active) or None
        return self._result()

    def _conditions(self, spec: BackupSpec, jobs: Sequence[JobView]) -> None:
        obs, status = self.obs, self.status
        deleted = {d.name for d in self.deletes}
        active = [j for j in jobs if j.state == RUNNING and j.name not in deleted]
        stuck = [j for j in active if j.waiting is not None]
        if obs.target is not None:
            status["target"] = obs.target
        if obs.problem is not None:
            self._ready(False, obs.problem.reason, obs.problem.message)
        elif stuck:
            job = stuck[-1]
            assert job.waiting is not None
            self._ready(
                False, job.waiting.reason, f"Job {job.name} cannot start: {job.waiting.message}"
            )
        else:
            self._ready(True, "Ready", f"target {status.get('target', '(not resolved yet)')}")
        self._progressing(active)
        names = self._active_names(active) + [c.name for c in self.creates]
        status["activeJobs"] = names or None

        running = any(j.component == BACKUP for j in active) or any(
            c.component == BACKUP for c in self.creates
        )
        ready = _condition(status, "Ready").get("status") == "True"
        next_time = None
        if spec.schedule is not None and not spec.suspend:
            started = any(c.slot == self.pending for c in self.creates)
            # A due run that could not start yet stays next (it is the schedule's baseline).
            next_time = (
                self.pending if self.pending is not None and not started else self._upcoming(spec)
            )
        status["nextScheduleTime"] = fmt_time(next_time) if next_time else None

        if running:
            phase = RUNNING
        elif spec.schedule is None:
            entry = max(status["history"], key=lambda e: e.get("slot") or "", default=None)
            phase = entry["phase"] if entry and entry.get("phase") != RUNNING else "Pending"
        elif spec.suspend:
            phase = "Suspended"
        elif not ready:
            phase = "Pending"
        else:
            finished = [e for e in status["history"] if e.get("phase") in (SUCCEEDED, FAILED)]
            newest = max(finished, key=lambda e: e.get("slot") or "", default=None)
            phase = FAILED if newest and newest.get("phase") == FAILED else "Scheduled"
        status["phase"] = phase
        status["message"] = _clip(self._message(phase, active, next_time))
        if self.notes and status["message"] != self.obs.status.get("message"):
            self._event("Normal", "RunNotStarted", status["message"])

    def _message(self, phase: str, active: Sequence[JobView], next_time: datetime | None) -> str:
        if self.notes:
            return "; ".join(self.notes)
        if _condition(self.status, "Ready").get("status") == "False":
            return str(_condition(self.status, "Ready").get("message", ""))
        if self.creates or active:
            names = [c.name for c in self.creates] + [j.name for j in active]
            return f"running: {', '.join(names)}"
        if phase == "Suspended":
            return "suspended: no new runs"
        if next_time is not None:
            return f"next run at {fmt_time(next_time)}"
        last = self.status.get("lastSuccessfulBackup") or {}
        if phase == SUCCEEDED and last.get("id"):
            return f"backup {last['id']} done"
        if phase == FAILED:
            return str(_condition(self.status, "Failed").get("message", "the run failed"))
        return ""

    def _active_names(self, jobs: Iterable[JobView]) -> list[str]:
        return [j.name for j in jobs if j.state == RUNNING]

    def _progressing(self, active: Sequence[JobView]) -> None:
        if self.creates or active:
            names = [c.name for c in self.creates] + [j.name for j in active]
            self._set_condition("Progressing", True, "JobRunning", f"running: {', '.join(names)}")
        else:
            self._set_condition("Progressing", False, "Idle", "no Job running")

    def _ready(self, ok: bool, reason: str, message: str) -> None:
        was = _condition(self.status, "Ready").get("status")
        changed = self._set_condition("Ready", ok, reason, message)
        if not changed:
            return
        if not ok:
            self._event("Warning", reason, message)
        elif was == "False":
            self._event("Normal", "Ready", f"ready again: {message}")

    def _set_failed(self, failed: bool, reason: str, message: str) -> None:
        self._set_condition("Failed", failed, reason, message)

    def _set_condition(self, type_: str, ok: bool, reason: str, message: str) -> bool:
        """Set a condition; True when its status, reason or message changed.
        ``lastTransitionTime`` moves only when the status flips."""
        conditions: list[dict[str, Any]] = self.status["conditions"]
        value = "True" if ok else "False"
        message = _clip(message)
        old = next((c for c in conditions if c.get("type") == type_), None)
        new = {
            "type": type_,
            "status": value,
            "reason": reason,
            "message": message,
            "lastTransitionTime": fmt_time(self.now),
            "observedGeneration": self.obs.generation,
        }
        if old is not None and old.get("status") == value:
            new["lastTransitionTime"] = old.get("lastTransitionTime", new["lastTransitionTime"])
        changed = old is None or any(old.get(k) != new[k] for k in ("status", "reason", "message"))
        if old is None:
            conditions.append(new)
        else:
            old.clear()
            old.update(new)
        conditions.sort(key=lambda c: _CONDITION_ORDER.get(c.get("type", ""), 9))
        return changed


_CONDITION_ORDER = {"Ready": 0, "Progressing": 1, "Failed": 2}


# --- helpers ------------------------------------------------------------------------


def _copy(value: Any) -> Any:
    if isinstance(value, list):
        return [dict(v) if isinstance(v, dict) else v for v in value]
    return dict(value) if isinstance(value, dict) else value


def _find(history: Iterable[dict[str, Any]], job: str) -> dict[str, Any] | None:
    return next((e for e in history if e.get("jobName") == job), None)


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), {})


def _clip(message: str) -> str:
    message = " ".join(str(message).split())
    return message if len(message) <= MESSAGE_LIMIT else message[: MESSAGE_LIMIT - 3] + "..."


def _duration(job: JobView) -> float | None:
    if job.started is None or job.finished is None:
        return None
    return max((job.finished - job.started).total_seconds(), 0.0)


def _valid_field(key: str, value: Any) -> bool:
    if key == "id":
        return isinstance(value, str) and bool(value)
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _label(job: JobView) -> str:
    """How Events and conditions name a run: its Job, or its shard Jobs."""
    if job.shards:
        return f"Run {job.name} ({job.shards} shard Jobs)"
    return f"Job {job.name}"


def _failure_message(job: JobView) -> str:
    """Why a Job failed: the CLI's own error from the termination message,
    else the Job's condition (BackoffLimitExceeded, DeadlineExceeded...)."""
    result = job.result or {}
    error = result.get("error")
    if isinstance(error, str) and error:
        return _clip(error)
    return job.message or "the Job failed without a message"


__all__ = [
    "BACKUP",
    "FAILED",
    "HISTORY_LIMIT",
    "PRUNE",
    "RUNNING",
    "STATUS_FIELDS",
    "SUCCEEDED",
    "Action",
    "CreateJob",
    "DeleteJob",
    "Event",
    "JobView",
    "Observed",
    "Outcome",
    "Plan",
    "PodProblem",
    "Problem",
    "fmt_time",
    "is_recorded",
    "parse_time",
    "plan",
    "retry_delay",
    "runs",
    "slots_around",
    "unrecorded",
]
