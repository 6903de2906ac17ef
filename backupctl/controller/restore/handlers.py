"""The RedisRestore controller: kopf handlers that observe, plan and execute.

Loaded by ``backupctl operator`` (:mod:`backupctl.controller.app` imports this module),
so RedisBackups and RedisRestores are served by one process. One async daemon
per unfinished RedisRestore loops:

1. observe (:func:`backupctl.controller.restore.observe.observe`): the
   RedisRestore as stored now, its target, its Jobs, the other restores;
2. plan: :func:`backupctl.controller.restore.plan.plan`, pure;
3. execute (:func:`execute`): write the status first, then create Jobs
   (AlreadyExists is done), scale StatefulSets, delete pods (with the recorded
   uid as precondition: a pod is deleted at most once), post Events;
4. sleep until the plan's ``wake_at`` on the controller's clock, or until one
   of its Jobs changes.

Everything comes from kopf's ``memo`` (:class:`Restores`, made by the startup
handler of :mod:`backupctl.controller.app`): the one API client and the clock;
the handlers never open a client nor read the time but from that clock.

A finished restore gets no daemon (kopf's ``when`` filter), so neither a pod
restart nor a controller restart can run it again. The controller needs
get/list/watch on pods, PVCs, StatefulSets, Jobs, the Redis operators'
resources and RedisBackups, create on Jobs and Events, patch on StatefulSets
(the scale route) and redisrestores/status, delete on pods (the in-place
route). It never reads a Secret or a byte of backup data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import kopf

from backupctl.controller.kube import AlreadyExists, ApiError, Kube
from backupctl.controller.leader_rules import with_job_shard
from backupctl.controller.manifests import LABEL_RESTORE, label_value
from backupctl.controller.restore.model import KIND, Plan, is_finished
from backupctl.controller.restore.observe import PLURAL, observe
from backupctl.controller.restore.plan import plan
from backupctl.controller.runtime import Clock
from backupctl.controller.spec import API_GROUP, API_VERSION
from backupctl.controller.status import Event, clip
from backupctl.core.timefmt import format_time

log = logging.getLogger("backupctl.controller.restore.handlers")
MIN_SLEEP, MAX_SLEEP = 0.05, 60.0
#: Passes one daemon makes without sleeping while a plan keeps acting (no hot loop).
MAX_BURST = 20


@dataclass
class Restores:
    """Shared by the handlers through kopf's ``memo`` (made by the startup
    handler of :mod:`backupctl.controller.app`, with the one API client and clock)."""

    kube: Kube
    image: str
    clock: Clock
    #: ``--shard`` (None: unsharded): its Jobs carry it (leader_rules.JOB_SHARD_LABEL)
    shard: str | None = None
    wakers: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)
    #: "<namespace>/<job>" -> when its pod was first seen not starting (controller's clock)
    not_starting: dict[str, datetime] = field(default_factory=dict)

    def waker(self, namespace: str, name: str) -> asyncio.Event:
        return self.wakers.setdefault((namespace, label_value(name)), asyncio.Event())

    def wake_namespace(self, namespace: str) -> None:
        for (ns, _), event in self.wakers.items():
            if ns == namespace:
                event.set()


# --- kopf handlers -------------------------------------------------------------------------


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_RESTORE: kopf.PRESENT})
async def restore_job_event(
    namespace: str | None, labels: kopf.Labels, memo: Any, **_: Any
) -> None:
    """A Job of a restore changed: its daemon looks at once."""
    event = memo.restores.wakers.get((namespace or "", str(labels[LABEL_RESTORE])))
    if event is not None:
        event.set()


@kopf.on.event(API_GROUP, API_VERSION, PLURAL)
async def restore_metrics(
    type: str | None, name: str, namespace: str | None, status: kopf.Status, memo: Any, **_: Any
) -> None:
    """A RedisRestore's series follow every change of it (finished ones too, so
    they exist after a controller restart); a deleted one's are removed."""
    controller = memo.get("controller")
    if controller is None:
        return
    restores: Restores = memo.restores
    if type == "DELETED":
        controller.metrics.forget_restore(namespace or "", name)
    else:
        controller.metrics.restore(namespace or "", name, status, restores.clock.now())


def _unfinished(status: Mapping[str, Any], **_: Any) -> bool:
    return not is_finished(status)


@kopf.daemon(
    API_GROUP, API_VERSION, PLURAL, when=_unfinished, cancellation_timeout=5.0, backoff=5.0
)
async def restore_daemon(
    name: str, namespace: str | None, stopped: kopf.DaemonStopped, memo: Any, **_: Any
) -> None:
    """Run one RedisRestore to its end: observe -> plan -> execute, then sleep."""
    restores: Restores = memo.restores
    namespace = namespace or ""
    wake = restores.waker(namespace, name)
    burst = 0
    try:
        while not stopped:
            wake.clear()
            try:
                # Shielded: kopf cancels the daemon as soon as the status it writes says
                # "finished"; the pass that wrote it still posts its Events.
                planned = await asyncio.shield(reconcile(restores, namespace, name))
            except (ApiError, OSError) as e:  # the API server, not the user
                if memo.get("controller") is not None:
                    memo.controller.metrics.reconcile_error(KIND)
                raise kopf.TemporaryError(f"Kubernetes API: {e}", delay=5.0) from e
            if planned is None or is_finished(planned.status):
                restores.wake_namespace(namespace)  # a restore waiting for this one goes on
                return
            delay = MAX_SLEEP
            if planned.wake_at is not None:
                delay = (planned.wake_at - restores.clock.now()).total_seconds()
            burst = burst + 1 if delay <= 0 or not planned.done else 0
            delay = min(max(delay if burst < MAX_BURST else 1.0, MIN_SLEEP), MAX_SLEEP)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=delay)
    finally:
        restores.wakers.pop((namespace, label_value(name)), None)


# --- observe -> plan -> execute -------------------------------------------------------------


async def reconcile(restores: Restores, namespace: str, name: str) -> Plan | None:
    """One pass; None when the RedisRestore is gone."""
    body = await restores.kube.get(API_GROUP, API_VERSION, PLURAL, namespace, name)
    if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
        return None
    now = restores.clock.now().replace(microsecond=0)
    observed = await observe(
        restores.kube,
        body,
        now,
        restores.image,
        on_clock=restores.clock.from_real,
        seen=restores.not_starting,
    )
    planned = plan(observed, now)
    await execute(restores, body, planned)
    return planned


async def execute(restores: Restores, body: Mapping[str, Any], planned: Plan) -> None:
    """Status first, then the actions (each idempotent), then Events."""
    kube = restores.kube
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    if planned.status != (body.get("status") or {}):
        await kube.patch_status(API_GROUP, API_VERSION, PLURAL, namespace, name, planned.status)
    for stuck in planned.delete_jobs:
        await kube.delete("batch", "v1", "jobs", namespace, stuck)
    for job in planned.jobs:
        with contextlib.suppress(AlreadyExists):
            await kube.create("batch", "v1", "jobs", namespace, with_job_shard(job, restores.shard))
    for scale in planned.scale:
        patch = {"spec": {"replicas": scale.replicas}}
        await kube.patch("apps", "v1", "statefulsets", namespace, scale.name, patch)
    for pod in planned.delete_pods:
        await kube.delete_instance("", "v1", "pods", namespace, pod.name, pod.uid)
    for event in planned.events:
        await post_event(kube, body, event, restores.clock.now())


async def post_event(kube: Kube, body: Mapping[str, Any], event: Event, at: datetime) -> None:
    """A core/v1 Event about the RedisRestore, posted directly (in order, and not
    lost when the daemon ends right after); a failure is logged, never fatal."""
    meta = body["metadata"]
    now = format_time(at)
    obj = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": body.get("apiVersion", f"{API_GROUP}/{API_VERSION}"),
            "kind": body.get("kind", KIND),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
        },
        "type": event.type,
        "reason": event.reason,
        "message": clip(event.message),
        "source": {"component": "backupctl"},
        "reportingComponent": "backupctl",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        await kube.create("", "v1", "events", meta["namespace"], obj)
    except ApiError as e:
        log.warning("could not post Event %s for %s: %s", event.reason, meta["name"], e.reason)


__all__ = ["Restores", "execute", "reconcile"]
