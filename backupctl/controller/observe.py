"""Reading Jobs and their pods into what the planners need (pure).

:func:`job_view` turns a batch/v1 Job made for a RedisBackup into a
:class:`~backupctl.controller.jobs.JobView` (component, slot and, for the Jobs of a
cluster backed up one Job per shard, run and shard from its labels; state
from its ``Complete``/``Failed`` conditions). :func:`pod_result` reads the
termination message the CLI writes (``{"ok":true,"id",...}`` or
``{"ok":false,"error":...}``) from the Job's last pod, and
:func:`pod_problem` tells why a pod does not start (a missing Secret shows
as ``CreateContainerConfigError``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from backupctl.controller.jobs import (
    BACKUP,
    FAILED,
    PRUNE,
    RUNNING,
    SUCCEEDED,
    VERIFY,
    JobState,
    JobView,
    PodProblem,
)
from backupctl.controller.manifests import LABEL_COMPONENT, LABEL_RUN, LABEL_SHARD, LABEL_SLOT
from backupctl.controller.schedule import SLOT_FORMAT
from backupctl.controller.status import MESSAGE_LIMIT
from backupctl.core.timefmt import parse_time

#: Container waiting reasons that need a person (not just time) to fix.
STUCK_REASONS = frozenset(
    {
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
    }
)


#: Waiting reasons of a container not created yet (a volume not mounted keeps it there).
CREATING_REASONS = frozenset({"ContainerCreating", "PodInitializing"})
CREATING_HINT = (
    "the container was not created: a volume that cannot be attached or mounted (FailedMount, "
    "Multi-Attach) is the usual cause; see `kubectl describe pod {pod}`"
)


def job_view(job: Mapping[str, Any]) -> JobView:
    """A Job labelled ``backupctl.dev/backup`` as the planner sees it."""
    meta = job.get("metadata") or {}
    labels = meta.get("labels") or {}
    status = job.get("status") or {}
    true = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    finished = parse_time(status.get("completionTime"))
    message = ""
    state: JobState
    if "Complete" in true or "SuccessCriteriaMet" in true:
        state = SUCCEEDED
    elif "Failed" in true:
        state = FAILED
        failed = true["Failed"]
        message = ": ".join(x for x in (failed.get("reason"), failed.get("message")) if x)
        finished = finished or parse_time(failed.get("lastTransitionTime"))
    else:
        state = RUNNING
    run = str(labels.get(LABEL_RUN) or "")
    shard = parse_shard(labels.get(LABEL_SHARD)) if run else None
    return JobView(
        name=str(meta.get("name", "")),
        component=_component(labels.get(LABEL_COMPONENT)),
        slot=parse_slot(labels.get(LABEL_SLOT)),
        state=state,
        started=parse_time(status.get("startTime")),
        finished=finished,
        ready=int(status.get("ready") or 0) > 0,
        message=message,
        run=run if shard else "",
        shard=shard[0] if shard else None,
        shards=shard[1] if shard else None,
    )


def _component(label: Any) -> str:
    """A Job's kind from its component label: prune, verify, else backup."""
    return str(label) if label in (PRUNE, VERIFY) else BACKUP


def parse_shard(value: Any) -> tuple[int, int] | None:
    """A ``backupctl.dev/shard`` label value (``<I>-of-<N>``), else None."""
    if not isinstance(value, str):
        return None
    index, sep, count = value.partition("-of-")
    if not (sep and index.isdigit() and count.isdigit()) or not 1 <= int(index) <= int(count):
        return None
    return int(index), int(count)


def parse_slot(value: Any) -> datetime | None:
    """A ``backupctl.dev/slot`` label value (``YYYYMMDDHHMMSS`` UTC)."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value, SLOT_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def pod_result(pods: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The parsed termination message of the newest pod that left one; a
    message that is not JSON becomes ``{"ok": false, "error": <text>}``."""
    for pod in sorted(pods, key=_created, reverse=True):
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (cs.get("state") or {}).get("terminated") or {}
            text = terminated.get("message")
            if not text:
                continue
            try:
                value = json.loads(text)
            except ValueError:
                value = None
            if isinstance(value, dict):
                return value
            return {"ok": False, "error": " ".join(str(text).split())[:MESSAGE_LIMIT]}
    return None


def pod_problem(
    pods: Sequence[Mapping[str, Any]],
    on_clock: Callable[[datetime], datetime] = lambda t: t,
) -> PodProblem | None:
    """Why the newest pod of a Job has not started, if it has not: a waiting
    reason that needs a person (:data:`STUCK_REASONS`), ``Unschedulable``, or
    still creating its container (``hard=False``: every pod passes through
    it; a volume that cannot be mounted keeps it there). ``since`` is when it
    began (the condition's transition or the pod's creation), mapped onto the
    controller's clock by ``on_clock``."""
    for pod in sorted(pods, key=_created, reverse=True):
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        name = str(meta.get("name") or "")
        created = parse_time(meta.get("creationTimestamp"))
        since = on_clock(created) if created is not None else None
        scheduled: Mapping[str, Any] = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), {}
        )
        if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
            began = parse_time(scheduled.get("lastTransitionTime"))
            return PodProblem(
                reason="Unschedulable",
                message=str(scheduled.get("message", "")),
                since=on_clock(began) if began is not None else since,
                pod=name,
            )
        if status.get("phase") not in (None, "Pending"):
            return None
        for cs in status.get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason in STUCK_REASONS:
                return PodProblem(
                    reason=str(reason),
                    message=str(waiting.get("message", "")),
                    since=since,
                    pod=name,
                )
            if reason in CREATING_REASONS:
                return PodProblem(
                    reason=str(reason),
                    message=str(waiting.get("message") or CREATING_HINT.format(pod=name)),
                    since=since,
                    pod=name,
                    hard=False,
                )
        if scheduled.get("status") == "True" and not status.get("containerStatuses"):
            return PodProblem(
                reason="ContainerCreating",
                message=CREATING_HINT.format(pod=name),
                since=since,
                pod=name,
                hard=False,
            )
        return None
    return None


def _created(pod: Mapping[str, Any]) -> tuple[str, str]:
    meta = pod.get("metadata") or {}
    return str(meta.get("creationTimestamp") or ""), str(meta.get("name") or "")


__all__ = ["STUCK_REASONS", "job_view", "parse_shard", "parse_slot", "pod_problem", "pod_result"]
