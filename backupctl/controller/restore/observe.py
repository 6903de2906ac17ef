"""Reading one RedisRestore's world from the API into what its planner needs.

:func:`observe` gathers an :class:`~backupctl.controller.restore.model.Observed`:
the RedisRestore as stored now (its status is the source of truth, re-read
every pass), the ``fromBackup`` RedisBackup's storage, the target
(:func:`backupctl.controller.targets.resolve`) with its StatefulSets, the Jobs
this restore owns as the shared :class:`~backupctl.controller.jobs.JobView`
(with their pods' termination messages and why a pod cannot start), and the
other RedisRestores of the namespace. Reads only; one API client (the
controller's :class:`~backupctl.controller.kube.Kube`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from backupctl.controller import targets, topology
from backupctl.controller.job_limits import first_seen
from backupctl.controller.jobs import RUNNING, JobView
from backupctl.controller.kube import Kube
from backupctl.controller.manifests import (
    ANNOTATION_TARGET_POD,
    LABEL_BACKUP,
    LABEL_COMPONENT,
    LABEL_RESTORE,
    label_value,
)
from backupctl.controller.observe import job_view, pod_problem, pod_result
from backupctl.controller.restore.model import (
    Observed,
    OtherRestore,
    PodView,
    TargetView,
    is_finished,
    target_key,
)
from backupctl.controller.spec import (
    API_GROUP,
    API_VERSION,
    RestoreSpec,
    TargetSpec,
    parse_backup,
    parse_restore,
    with_backup_source,
)
from backupctl.controller.spec_fields import SpecError
from backupctl.core.timefmt import parse_time

PLURAL = "redisrestores"
#: Creation time of an object without one (sorts first).
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


async def observe(
    kube: Kube,
    body: Mapping[str, Any],
    now: datetime,
    image: str,
    on_clock: Callable[[datetime], datetime] = lambda t: t,
    seen: dict[str, datetime] | None = None,
) -> Observed:
    """What the planner needs about the RedisRestore ``body`` at ``now``
    (``on_clock`` maps the API server's timestamps onto the controller's clock;
    ``seen``: when this controller first saw each Job's pod not starting)."""
    meta = body.get("metadata") or {}
    namespace, name, uid = str(meta["namespace"]), str(meta["name"]), str(meta.get("uid", ""))
    status = dict(body.get("status") or {})
    spec, source_problem = await observe_spec(kube, namespace, body.get("spec") or {})
    target = problem = None
    if not isinstance(spec, SpecError) and not is_finished(status):
        try:
            target = await observe_target(kube, namespace, spec.target)
        except topology.TargetError as e:
            problem = (e.reason, e.message)
    return Observed(
        name=name,
        namespace=namespace,
        uid=uid,
        created=parse_time(meta.get("creationTimestamp")) or now,
        generation=int(meta.get("generation") or 1),
        spec=spec,
        status=status,
        jobs=await observe_jobs(kube, namespace, name, uid, on_clock, now, seen),
        target=target,
        backups=await observe_backups(kube, namespace, target) if target is not None else (),
        target_problem=problem,
        source_problem=source_problem,
        others=await observe_others(kube, namespace, uid),
        image=image,
    )


async def observe_spec(
    kube: Kube, namespace: str, raw: Mapping[str, Any]
) -> tuple[RestoreSpec | SpecError, str | None]:
    """The parsed spec, with the ``fromBackup`` RedisBackup's storage; and why
    that RedisBackup could not be read, if it could not."""
    try:
        spec = parse_restore(raw)
        if spec.from_backup is None:
            return spec, None
        backup = await kube.get(API_GROUP, API_VERSION, "redisbackups", namespace, spec.from_backup)
        if backup is None:
            return spec, f"RedisBackup {spec.from_backup} (spec.fromBackup) was not found"
        backup_spec = parse_backup(backup.get("spec") or {})
        return (
            with_backup_source(
                spec, backup_spec, namespace=namespace, backup_name=spec.from_backup
            ),
            None,
        )
    except SpecError as e:
        return e, None


async def observe_target(kube: Kube, namespace: str, target: TargetSpec) -> TargetView:
    """The target's pods now, and its StatefulSet's ``spec.replicas``."""
    workload = await targets.resolve(kube, namespace, target)
    pods = []
    for pod in workload.pods:
        meta = pod.get("metadata") or {}
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        pods.append(
            PodView(
                name=str(meta.get("name")),
                uid=str(meta.get("uid")),
                ready=topology.is_ready(pod),
                target=topology.target_pod(pod, workload),
                terminating=bool(meta.get("deletionTimestamp")),
                restarts=sum(int(s.get("restartCount") or 0) for s in statuses),
            )
        )
    statefulsets: dict[str, int] = {}
    if workload.kind == "StatefulSet":
        sts = await kube.get("apps", "v1", "statefulsets", namespace, workload.name)
        if sts is not None:
            statefulsets[workload.name] = int((sts.get("spec") or {}).get("replicas", 1))
    return TargetView(
        kind=workload.kind, name=workload.name, pods=tuple(pods), statefulsets=statefulsets
    )


async def observe_jobs(
    kube: Kube,
    namespace: str,
    name: str,
    uid: str,
    on_clock: Callable[[datetime], datetime] = lambda t: t,
    now: datetime | None = None,
    seen: dict[str, datetime] | None = None,
) -> dict[str, JobView]:
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
        stuck = pod_problem(pods, on_clock) if base.state == RUNNING else None
        if now is not None and seen is not None:
            stuck = first_seen(stuck, f"{namespace}/{base.name}", now, seen)
        views[base.name] = replace(
            base, result=pod_result(pods) if base.state != RUNNING else None, waiting=stuck
        )
    return views


async def observe_backups(kube: Kube, namespace: str, target: TargetView) -> tuple[str, ...]:
    """The running backup Jobs (of any RedisBackup) whose target pod is one of
    the target's: the restore does not stage or swap beside them."""
    pods = {p.name for p in target.pods}
    selector = f"{LABEL_COMPONENT}=backup,{LABEL_BACKUP}"
    running = []
    for job in await kube.list("batch", "v1", "jobs", namespace, selector):
        annotations = (job.get("metadata") or {}).get("annotations") or {}
        if annotations.get(ANNOTATION_TARGET_POD) in pods and job_view(job).state == RUNNING:
            running.append(str(job["metadata"]["name"]))
    return tuple(sorted(running))


async def observe_others(kube: Kube, namespace: str, uid: str) -> list[OtherRestore]:
    """The namespace's other RedisRestores, for the one-at-a-time rule."""
    others = []
    for o in await kube.list(API_GROUP, API_VERSION, PLURAL, namespace):
        meta, status = o["metadata"], o.get("status") or {}
        if meta.get("uid") == uid:
            continue
        started = bool(status.get("startTime"))
        others.append(
            OtherRestore(
                name=str(meta["name"]),
                created=parse_time(meta.get("creationTimestamp")) or EPOCH,
                target_key=target_key(o.get("spec") or {}),
                started=started,
                active=started and not is_finished(status),
            )
        )
    return others


__all__ = ["PLURAL", "observe"]
