"""What the RedisRestore planner reads and what it returns (pure types).

:class:`Observed` is everything :func:`backupctl.controller.restore.plan.plan`
looks at for one RedisRestore; :class:`Plan` is its answer, in the shape the
RedisBackup planner uses too: the new status, then tuples of actions, and
``wake_at``. The Jobs' state comes as the shared
:class:`backupctl.controller.jobs.JobView`, Events as the shared
:class:`backupctl.controller.status.Event`. Small pure rules the handlers
also need (:func:`is_finished`, :func:`target_key`, :func:`job_name`) live
here so that they import no planner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from backupctl.controller.jobs import JobView
from backupctl.controller.manifests import TargetPod
from backupctl.controller.schedule import bounded_name
from backupctl.controller.spec import RestoreSpec
from backupctl.controller.spec_fields import SpecError
from backupctl.controller.status import Event, condition

KIND = "RedisRestore"
TERMINAL = ("Completed", "Failed")
SCALE_DOWN, IN_PLACE = "ScaleDown", "InPlace"


# --- what the controller observed ------------------------------------------------------


@dataclass(frozen=True)
class PodView:
    """A pod of the target now. ``target`` says how to reach it and its
    volume (:func:`backupctl.controller.topology.target_pod`)."""

    name: str
    uid: str
    ready: bool
    target: TargetPod
    terminating: bool = False
    restarts: int = 0  # container restarts (a restart keeps the uid)


@dataclass(frozen=True)
class TargetView:
    """The resolved target: ``kind`` (``StatefulSet``, an operator's kind,
    ``Selector``), its pods, and its StatefulSets' current ``spec.replicas``."""

    kind: str
    name: str
    pods: tuple[PodView, ...] = ()
    statefulsets: Mapping[str, int] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def route(self) -> str:
        """Scale a plain StatefulSet; anything an operator owns: in place."""
        return SCALE_DOWN if self.kind == "StatefulSet" else IN_PLACE

    def pod(self, name: str) -> PodView | None:
        return next((p for p in self.pods if p.name == name), None)


@dataclass(frozen=True)
class OtherRestore:
    """Another RedisRestore of the namespace, for the one-at-a-time rule."""

    name: str
    created: datetime
    target_key: str
    started: bool
    active: bool  # started and not finished (a rollback counts as running)


@dataclass(frozen=True)
class Observed:
    """One RedisRestore as stored (its status is the source of truth), its
    Jobs by name, the target now (or why it could not be resolved), and the
    namespace's other restores."""

    name: str
    namespace: str
    uid: str
    created: datetime
    spec: RestoreSpec | SpecError
    status: Mapping[str, Any] = field(default_factory=dict)
    generation: int = 1
    jobs: Mapping[str, JobView] = field(default_factory=dict)
    target: TargetView | None = None
    target_problem: tuple[str, str] | None = None  # (reason, message)
    source_problem: str | None = None  # fromBackup could not be resolved
    others: Sequence[OtherRestore] = ()
    image: str = "backupctl"
    #: Running backup Jobs of the target (any RedisBackup): the restore waits for them.
    backups: tuple[str, ...] = ()


# --- what to do --------------------------------------------------------------------------


@dataclass(frozen=True)
class ScaleStatefulSet:
    """Merge-patch the StatefulSet's ``spec.replicas`` to ``replicas``."""

    name: str
    replicas: int


@dataclass(frozen=True)
class DeletePod:
    """Delete the pod only if it is still the instance ``uid`` (gone or
    replaced: done), so a pod is deleted at most once."""

    name: str
    uid: str


@dataclass(frozen=True)
class Plan:
    """The new ``status`` (write it first, as a merge patch), then
    ``delete_jobs``, ``jobs`` (manifests; AlreadyExists is done), ``scale``,
    ``delete_pods`` and ``events``, in that order; look again at ``wake_at`` (None: only when
    something changes). A Job event wakes the daemon earlier."""

    status: dict[str, Any]
    jobs: tuple[dict[str, Any], ...] = ()
    scale: tuple[ScaleStatefulSet, ...] = ()
    delete_pods: tuple[DeletePod, ...] = ()
    events: tuple[Event, ...] = ()
    wake_at: datetime | None = None
    #: Jobs whose pod could not start in time (deleted, propagation Background).
    delete_jobs: tuple[str, ...] = ()

    @property
    def done(self) -> bool:
        """Nothing to do besides writing the status and posting Events."""
        return not (self.jobs or self.scale or self.delete_pods or self.delete_jobs)


# --- small rules the handlers share ------------------------------------------------------


def is_finished(status: Mapping[str, Any]) -> bool:
    """Completed or Failed, and no rollback running: nothing left to do."""
    if status.get("phase") not in TERMINAL:
        return False
    return condition(status, "Progressing").get("status") != "True"


def target_key(spec: Mapping[str, Any]) -> str:
    """What "the same target" means for two restores: the name (whatever the
    kind), or the label selector."""
    name = spec.get("redisClusterName") or (spec.get("target") or {}).get("name")
    if name:
        return f"name:{name}"
    selector = (spec.get("target") or {}).get("selector") or {}
    labels = ",".join(f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items()))
    return f"selector:{labels}|{selector.get('matchExpressions')}"


def spec_target_key(spec: RestoreSpec) -> str:
    """:func:`target_key` of a parsed spec."""
    t = spec.target
    if t.name is not None:
        return f"name:{t.name}"
    return target_key({"target": {"selector": t.selector}})


def job_name(restore: str, step: str, index: int | None = None) -> str:
    """``<restore>-<step>[-<i>]``, a valid Job name (pod label values <= 63)."""
    return bounded_name(restore, f"-{step}" + (f"-{index}" if index is not None else ""), 52)


__all__ = [
    "IN_PLACE",
    "KIND",
    "SCALE_DOWN",
    "TERMINAL",
    "DeletePod",
    "Observed",
    "OtherRestore",
    "Plan",
    "PodView",
    "ScaleStatefulSet",
    "TargetView",
    "is_finished",
    "job_name",
    "spec_target_key",
    "target_key",
]
