"""The RedisRestore controller: kopf handlers that observe, plan and execute.

Loaded by ``backupctl operator`` (:mod:`backupctl.controller.app` imports this module),
so RedisBackups and RedisRestores are served by one process. One async daemon
per unfinished RedisRestore loops:

1. observe (:func:`observe`): the RedisRestore as stored now (its status is the
   source of truth, re-read every pass), the ``fromBackup`` RedisBackup, the
   target (:func:`backupctl.controller.targets.resolve`) with its StatefulSets, the Jobs
   this restore owns with their pods' termination messages, and the other
   RedisRestores of the namespace;
2. plan: :func:`backupctl.controller.restore.plan.plan`, pure;
3. execute (:func:`execute`): write the status first, then create Jobs
   (AlreadyExists is done), scale StatefulSets, delete pods (with the recorded
   uid as precondition: a pod is deleted at most once), post Events;
4. sleep until the plan's wake-up, or until one of its Jobs changes.

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
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client import V1DeleteOptions, V1Preconditions
from kubernetes.client.exceptions import ApiException

from backupctl.controller import targets, topology
from backupctl.controller.kube import AlreadyExists, ApiError, Kube
from backupctl.controller.manifests import LABEL_RESTORE, label_value
from backupctl.controller.observe import job_view, pod_problem, pod_result
from backupctl.controller.restore import plan as restore_plan
from backupctl.controller.runtime import Clock
from backupctl.controller.spec import (
    API_GROUP,
    API_VERSION,
    parse_backup,
    parse_restore,
    with_backup_source,
)
from backupctl.controller.spec_fields import SpecError
from backupctl.core.timefmt import parse_time

PLURAL = "redisrestores"
log = logging.getLogger("backupctl.controller.restore.handlers")
#: Creation time of an object without one (sorts first).
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
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
    wakers: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)

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


def _unfinished(status: Mapping[str, Any], **_: Any) -> bool:
    return not restore_plan.is_finished(status)


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
            except (ApiError, ApiException, OSError) as e:  # the API server, not the user
                raise kopf.TemporaryError(f"Kubernetes API: {e}", delay=5.0) from e
            if planned is None or restore_plan.is_finished(planned.status):
                restores.wake_namespace(namespace)  # a restore waiting for this one goes on
                return
            burst = burst + 1 if planned.wake <= 0 or not planned.done else 0
            delay = planned.wake if burst < MAX_BURST else 1.0
            delay = min(max(delay, MIN_SLEEP), MAX_SLEEP)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=delay)
    finally:
        restores.wakers.pop((namespace, label_value(name)), None)


# --- observe -> plan -> execute -------------------------------------------------------------


async def reconcile(restores: Restores, namespace: str, name: str) -> restore_plan.Plan | None:
    """One pass; None when the RedisRestore is gone."""
    body = await restores.kube.get(API_GROUP, API_VERSION, PLURAL, namespace, name)
    if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
        return None
    now = restores.clock.now().replace(microsecond=0)
    observed = await observe(restores, body, now)
    planned = restore_plan.plan(observed, now)
    await execute(restores, body, planned)
    return planned


async def observe(
    restores: Restores, body: Mapping[str, Any], now: datetime
) -> restore_plan.Observed:
    kube = restores.kube
    meta = body.get("metadata") or {}
    namespace, name, uid = str(meta["namespace"]), str(meta["name"]), str(meta.get("uid", ""))
    status = dict(body.get("status") or {})
    spec: Any
    source_problem = None
    try:
        spec = parse_restore(body.get("spec") or {})
        if spec.from_backup is not None:
            backup = await kube.get(
                API_GROUP, API_VERSION, "redisbackups", namespace, spec.from_backup
            )
            if backup is None:
                source_problem = f"RedisBackup {spec.from_backup} (spec.fromBackup) was not found"
            else:
                backup_spec = parse_backup(backup.get("spec") or {})
                spec = with_backup_source(
                    spec, backup_spec, namespace=namespace, backup_name=spec.from_backup
                )
    except SpecError as e:
        spec = e
    target = problem = None
    if not isinstance(spec, SpecError) and not restore_plan.is_finished(status):
        try:
            target = await observe_target(kube, namespace, spec.target)
        except topology.TargetError as e:
            problem = (e.reason, e.message)
    jobs = await observe_jobs(kube, namespace, name, uid)
    others = [
        restore_plan.OtherRestore(
            name=str(o["metadata"]["name"]),
            created=parse_time(o["metadata"].get("creationTimestamp")) or EPOCH,
            target_key=restore_plan.target_key(o.get("spec") or {}),
            started=bool((o.get("status") or {}).get("startTime")),
            active=bool((o.get("status") or {}).get("startTime"))
            and not restore_plan.is_finished(o.get("status") or {}),
        )
        for o in await kube.list(API_GROUP, API_VERSION, PLURAL, namespace)
        if o["metadata"].get("uid") != uid
    ]
    return restore_plan.Observed(
        name=name,
        namespace=namespace,
        uid=uid,
        created=parse_time(meta.get("creationTimestamp")) or now,
        generation=int(meta.get("generation") or 1),
        spec=spec,
        status=status,
        jobs=jobs,
        target=target,
        target_problem=problem,
        source_problem=source_problem,
        others=others,
        image=restores.image,
    )


async def observe_target(kube: Kube, namespace: str, target: Any) -> restore_plan.TargetView:
    workload = await targets.resolve(kube, namespace, target)
    pods = []
    for pod in workload.pods:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        security = spec.get("securityContext") or {}
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        pods.append(
            restore_plan.PodView(
                name=str(meta.get("name")),
                uid=str(meta.get("uid")),
                ready=topology.is_ready(pod),
                target=topology.target_pod(pod, workload),
                terminating=bool(meta.get("deletionTimestamp")),
                restarts=sum(int(s.get("restartCount") or 0) for s in statuses),
                run_as_user=security.get("runAsUser"),
                run_as_group=security.get("runAsGroup"),
            )
        )
    statefulsets: dict[str, int] = {}
    if workload.kind == "StatefulSet":
        sts = await kube.get("apps", "v1", "statefulsets", namespace, workload.name)
        if sts is not None:
            statefulsets[workload.name] = int((sts.get("spec") or {}).get("replicas", 1))
    return restore_plan.TargetView(
        kind=workload.kind, name=workload.name, pods=tuple(pods), statefulsets=statefulsets
    )


async def observe_jobs(
    kube: Kube, namespace: str, name: str, uid: str
) -> dict[str, restore_plan.JobView]:
    """This restore's Jobs (owned by this uid), with results and pod problems."""
    selector = f"{LABEL_RESTORE}={label_value(name)}"
    jobs = [
        j
        for j in await kube.list("batch", "v1", "jobs", namespace, selector)
        if any(o.get("uid") == uid for o in j["metadata"].get("ownerReferences") or [])
    ]
    pods_by_job: dict[str, list[dict[str, Any]]] = {}
    if jobs:
        for pod in await kube.list("", "v1", "pods", namespace, selector):
            job = (pod["metadata"].get("labels") or {}).get("job-name", "")
            pods_by_job.setdefault(job, []).append(pod)
    views = {}
    for job in jobs:
        base = job_view(job)
        pods = pods_by_job.get(base.name, [])
        stuck = pod_problem(pods) if base.state == "Running" else None
        views[base.name] = restore_plan.JobView(
            name=base.name,
            state=base.state,
            result=pod_result(pods) if base.state != "Running" else None,
            message=base.message,
            waiting=f"{stuck.reason}: {stuck.message}" if stuck else None,
        )
    return views


async def execute(restores: Restores, body: Mapping[str, Any], planned: restore_plan.Plan) -> None:
    """Status first, then the actions (each idempotent), then Events."""
    kube = restores.kube
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    if planned.status != (body.get("status") or {}):
        await kube.patch_status(API_GROUP, API_VERSION, PLURAL, namespace, name, planned.status)
    for job in planned.jobs:
        with contextlib.suppress(AlreadyExists):
            await kube.create("batch", "v1", "jobs", namespace, job)
    for sts, replicas in planned.scale.items():
        await asyncio.to_thread(
            kube.custom.patch_namespaced_custom_object,
            "apps", "v1", namespace, "statefulsets", sts, {"spec": {"replicas": replicas}},
        )  # fmt: skip
    for pod, uid in planned.delete_pods:
        options = V1DeleteOptions(preconditions=V1Preconditions(uid=uid))
        try:
            await asyncio.to_thread(kube.core.delete_namespaced_pod, pod, namespace, body=options)
        except ApiException as e:
            if e.status not in (404, 409):  # gone, or already replaced: done
                raise
    for event in planned.events:
        await post_event(kube, body, event, restores.clock.now())


async def post_event(
    kube: Kube, body: Mapping[str, Any], event: restore_plan.Event, at: datetime
) -> None:
    """A core/v1 Event about the RedisRestore, posted directly (in order, and not
    lost when the daemon ends right after); a failure is logged, never fatal."""
    meta = body["metadata"]
    now = at.isoformat()
    obj = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": body.get("apiVersion", f"{API_GROUP}/{API_VERSION}"),
            "kind": body.get("kind", "RedisRestore"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
        },
        "type": event.type,
        "reason": event.reason,
        "message": event.message[:1024],
        "source": {"component": "backupctl"},
        "reportingComponent": "backupctl",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        create: Any = kube.core.create_namespaced_event
        await asyncio.to_thread(create, meta["namespace"], obj)
    except ApiException as e:
        log.warning("could not post Event %s for %s: %s", event.reason, meta["name"], e.reason)


__all__ = ["Restores", "execute", "observe", "reconcile"]
