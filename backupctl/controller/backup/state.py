"""What the RedisBackup handlers keep in memory between passes.

One :class:`Controller` per operator process (in kopf's ``memo``: the API
client, the clock, the metrics, the index of Jobs) and one
:class:`Tracker` per RedisBackup daemon. Nothing here must survive a
restart: the status and the Jobs hold all of that, by design.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import kopf

from backupctl.controller import topology
from backupctl.controller.backup.model import Problem
from backupctl.controller.backup.run_now import ANNOTATION as RUN_NOW
from backupctl.controller.event_poster import EventPoster
from backupctl.controller.gate import Gate
from backupctl.controller.heap import Heap
from backupctl.controller.jobs import JobView, PodProblem
from backupctl.controller.kube import Kube
from backupctl.controller.manifests import label_value
from backupctl.controller.metrics import Metrics
from backupctl.controller.runtime import Clock
from backupctl.controller.spec import API_GROUP, API_VERSION, BackupSpec
from backupctl.controller.spec_fields import SpecError
from backupctl.controller.wake import Wake

#: Longest sleep of a daemon, whatever the plan says (re-checks the world).
MAX_SLEEP = 300.0
#: Shortest sleep between two passes of one daemon (no hot loop, ever).
MIN_SLEEP = 0.05
#: How often the watch caches are compared with what each daemon last saw.
CHANGE_POLL = 0.5
#: Every this many of those scans, every daemon's Jobs are compared (see watch_changes).
FULL_SCAN_POLLS = 10
#: Passes of RedisBackup daemons run at once (the others wait their turn; see gate.py).
PASSES_AT_ONCE = 32


class JobIndex(Protocol):
    """The RedisBackups' Jobs: (namespace, backup label) -> (owner uid, JobView) each
    (:class:`~backupctl.controller.backup.job_watch.JobWatch`)."""

    def get(
        self, key: tuple[str, str], default: Collection[tuple[str, JobView]] = ()
    ) -> Collection[tuple[str, JobView]]: ...


@dataclass(slots=True)
class Tracker:
    """What one daemon remembers between passes (lost on restart, by design:
    the status and the Jobs hold everything that must survive)."""

    namespace: str
    name: str
    wake: Wake = field(default_factory=Wake)
    generation: int | None = None
    status: dict[str, Any] | None = None
    seen: set[str] = field(default_factory=set)
    failures: int = 0
    problem: Problem | None = None
    spec: BackupSpec | SpecError | None = None  # parsed once per generation
    choice: topology.Choice | None = None
    resolved_at: datetime | None = None
    noted: str | None = None
    results: dict[str, Mapping[str, Any] | None] = field(default_factory=dict)
    pod_checks: dict[str, tuple[int, datetime]] = field(default_factory=dict)
    stuck: dict[str, PodProblem | None] = field(default_factory=dict)
    stuck_since: dict[str, datetime] = field(default_factory=dict)  # first seen not starting
    #: data PVC -> (uid, gid) of its owner, probed for a Redis whose user no manifest sets
    owners: dict[str, tuple[int, int]] = field(default_factory=dict)
    body: kopf.Body | None = None  # kopf's live view of the resource
    seen_state: Any = None  # what the last pass saw (see Controller.watch_changes)
    #: ((schedule, time zone), its longest gap in seconds), for the metrics
    interval: tuple[tuple[str | None, str], float] | None = None
    listed_at: datetime | None = None  # when its Jobs were last listed from the API
    stopped: kopf.DaemonStopped | None = None  # kopf's stop flag of its daemon
    #: its next pass is due only for a pod check (it may wait behind other passes)
    check_pass: bool = False

    def expect(self, job: JobView, now: datetime, first_pod_check: datetime) -> None:
        """A Job this pass just created, as its watch event will show it.

        The event then does not wake the daemon for a pass of its own: at a cron slot
        that pass (observe, list the Jobs, plan, find nothing to do) was a third of the
        controller's work and delayed the other resources' Jobs. What it started is
        started here: the Job counts as seen, its Jobs as listed now, and its pod's first
        check is due at ``first_pod_check``."""
        self.seen.update((job.name, job.run_name))
        self.listed_at = now
        self.pod_checks.setdefault(job.name, (0, first_pod_check))
        if isinstance(self.seen_state, tuple) and len(self.seen_state) == 2:
            meta, jobs = self.seen_state
            self.seen_state = (meta, sorted([*jobs, (job.name, job.state, job.ready)]))

    async def sleep(self, seconds: float, stopped: kopf.DaemonStopped) -> bool:
        """Until ``seconds`` pass, something wakes this daemon, or kopf stops it.

        No waiting task at all (:class:`~backupctl.controller.wake.Wake`; waiting on
        kopf's stop flag as well cost three, ~6 KB each RedisBackup): a stop is noticed by
        :meth:`Controller.watch_changes`, which wakes a stopped daemon within
        :data:`CHANGE_POLL` (well inside kopf's cancellation timeout). True when woken
        (a change), False when the time ran out."""
        timeout = min(max(seconds, MIN_SLEEP), MAX_SLEEP)
        self.stopped = stopped
        if stopped:
            return True
        return await self.wake.wait(timeout)


@dataclass
class Controller:
    """Shared by all RedisBackup handlers through kopf's ``memo``: the one API
    client and clock of the operator, the Job image, the metrics."""

    kube: Kube
    image: str
    clock: Clock
    metrics: Metrics = field(default_factory=Metrics)
    #: ``--shard`` (None: unsharded): its Jobs carry it (leader_rules.JOB_SHARD_LABEL)
    shard: str | None = None
    trackers: dict[tuple[str, str], Tracker] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    jobs: JobIndex | None = None  # the index of Jobs (job_watch.JobWatch, made at startup)
    #: set once the index holds every Job (the daemons' first passes wait for it)
    jobs_listed: asyncio.Event = field(default_factory=asyncio.Event)
    #: namespace -> (when listed, its RedisRestores), shared by that namespace's daemons
    restores: dict[str, tuple[datetime, list[dict[str, Any]]]] = field(default_factory=dict)
    #: the passes of its daemons that run at once (a cron slot wakes thousands)
    passes: Gate = field(default_factory=lambda: Gate(PASSES_AT_ONCE))
    #: namespace -> the list of its RedisRestores on its way (one for all who ask)
    listing: dict[str, asyncio.Future[list[dict[str, Any]]]] = field(default_factory=dict)
    #: (namespace, backup label) of the resources whose Jobs changed since the last scan
    touched: set[tuple[str, str]] = field(default_factory=set)
    #: the long-lived objects, frozen out of the cyclic GC once settled (heap.py)
    heap: Heap = field(default_factory=Heap)
    #: Events, posted once no pass waits for its turn (its task: app.startup)
    events: EventPoster = field(init=False)

    def __post_init__(self) -> None:
        self.events = EventPoster(self.kube, lambda: bool(self.passes.waiters))

    async def event(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """An Event about the RedisBackup ``body``, stamped now (real time, as the API
        server's own timestamps), posted behind the passes waiting for their turn."""
        await self.events.post(body, type_, reason, message, datetime.now(UTC))

    def tracker(self, namespace: str, name: str) -> Tracker:
        key = (namespace, label_value(name))
        if key not in self.trackers:
            self.trackers[key] = Tracker(namespace, name)
        return self.trackers[key]

    async def restores_in(self, namespace: str, ttl: float) -> list[dict[str, Any]]:
        """The namespace's RedisRestores, listed at most once every ``ttl`` seconds, and
        once for all the daemons that ask while a list is on its way (at a cron slot
        thousands ask in the same second: one list each was 14% of the controller's CPU
        and as many requests to the API server)."""
        now = self.clock.now()
        cached = self.restores.get(namespace)
        if cached is not None and timedelta(0) <= now - cached[0] < timedelta(seconds=ttl):
            return cached[1]
        pending = self.listing.get(namespace)
        if pending is None:
            pending = asyncio.ensure_future(
                self.kube.list(API_GROUP, API_VERSION, "redisrestores", namespace)
            )
            self.listing[namespace] = pending
            pending.add_done_callback(lambda _: self.listing.pop(namespace, None))
        listed = await asyncio.shield(pending)  # one waiter cancelled is not all of them
        self.restores[namespace] = (now, listed)
        return listed

    def wake_all(self) -> None:
        for tracker in self.trackers.values():
            tracker.wake.set()

    def state_of(self, tracker: Tracker) -> Any:
        """What should wake a daemon when it changes: the spec's generation, the
        run-now annotation, and its Jobs' names and states in the watch cache
        (not its own status writes)."""
        return self.meta_state(tracker), self.jobs_state(tracker)

    @staticmethod
    def meta_state(tracker: Tracker) -> Any:
        meta = tracker.body.get("metadata", {}) if tracker.body else {}
        return meta.get("generation"), (meta.get("annotations") or {}).get(RUN_NOW)

    def jobs_state(self, tracker: Tracker) -> Any:
        key = (tracker.namespace, label_value(tracker.name))
        jobs = self.jobs.get(key, ()) if self.jobs is not None else ()
        return sorted((j.name, j.state, j.ready) for _, j in jobs)

    def job_changed(self, key: tuple[str, str]) -> None:
        """A Job of the resource ``key`` (namespace, backup label) changed in the index."""
        self.touched.add(key)

    async def watch_changes(self) -> None:
        """Wake the daemons whose spec or Jobs changed, or that kopf stops. One
        in-memory scan of kopf's caches every :data:`CHANGE_POLL` instead of a kopf
        handler call per watch event: at a cron slot a thousand resources change at
        once. Each scan compares every spec, but the Jobs only of the resources the
        Job index reported (:meth:`job_changed`, in this scan or the one before); every
        :data:`FULL_SCAN_POLLS` scans, all of them. Comparing every resource's Jobs
        every time cost 2,500 resources ~4% of a core, idle or not. When every resource had
        its first pass and no pass runs, the heap is frozen out of the GC (heap.py)."""
        recent: set[tuple[str, str]] = set()
        for turn in itertools.count(1):
            await asyncio.sleep(CHANGE_POLL)
            fresh, self.touched = self.touched, set()
            check, recent = fresh | recent, fresh
            full = turn % FULL_SCAN_POLLS == 0
            unsettled = 0
            for key, tracker in list(self.trackers.items()):
                if tracker.stopped:  # kopf stops its daemon: let it end now
                    tracker.wake.set()
                    continue
                if tracker.body is None:
                    continue
                if tracker.seen_state is None:
                    unsettled += 1
                if self._changed(tracker, full or key in check):
                    tracker.wake.set()
            if full and not unsettled and self.passes.idle():
                self.heap.settle(len(self.trackers))

    def _changed(self, tracker: Tracker, jobs_too: bool) -> bool:
        seen = tracker.seen_state
        if not (isinstance(seen, tuple) and len(seen) == 2):
            return True  # (no pass yet)
        if self.meta_state(tracker) != seen[0]:
            return True
        return jobs_too and self.jobs_state(tracker) != seen[1]

    def forget(self, namespace: str, name: str) -> None:
        self.trackers.pop((namespace, label_value(name)), None)
        self.metrics.forget(namespace, name)


__all__ = ["MAX_SLEEP", "Controller", "JobIndex", "Tracker"]
