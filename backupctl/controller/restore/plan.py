"""What the RedisRestore controller should do next (pure).

:func:`plan` takes what the controller observed about one RedisRestore (its
parsed spec, its status, its Jobs, the target's pods and StatefulSets, the
other restores of the namespace) and the time, and returns a :class:`Plan`:
the new status, the Jobs to create, the StatefulSets to scale, the pods to
delete, the Events to post and when to look again. The operator writes the
status *first*, then acts; every action is idempotent (deterministic Job
names, AlreadyExists is done; scaling to a number; deleting a pod only with
its recorded uid as precondition), so a controller restarted between any
two steps redoes nothing and skips nothing. No kopf, kubernetes or redis.

The flow (``status.phase``; each pod's progress in ``status.pods[].phase``):

``Pending``
    Wait while the spec's ``fromBackup`` RedisBackup or the target is
    missing, or while another RedisRestore of the same target runs (or an
    older one waits): Ready=False with the reason. Then record the target's
    pods, PVCs and StatefulSets (their replica counts) and run two Jobs:
    ``<name>-resolve`` (``backupctl restore ... --dry-run``: the backup is
    resolved ONCE, ``latest`` included; missing or incomplete fails here)
    and ``<name>-check`` (``backupctl check-redis``: each server's version,
    role, cluster mode, CONFIG; in cluster mode the node id, cluster_state and
    the slots its shard serves). Refused: a backup taken by a newer Redis
    major (or RDB format) than the target runs, a target without exactly one
    primary, and for the in-place route a server without CONFIG.
    A cluster backup set into a Redis Cluster (in place only): each pod is
    mapped to the backup shard whose slot ranges its shard serves now
    (:func:`cluster_sources`, from what Redis said, never the pod name);
    another shard count or layout, or a cluster_state not ok: refused.
``Staging``
    ``<name>-stage-<i>`` per data PVC (``restore --stage-only``): download
    and verify into a hidden folder of the volume while Redis keeps
    serving. Every replica gets the same backup as the primary (a cluster:
    as its shard's primary).
``Quiescing``
    Stop Redis from writing to its volume. A plain StatefulSet is scaled to
    0 (the original replicas are in ``status.statefulSets``) and the pods
    must be gone. An operator-managed target (OpsTree, Spotahome, a
    selector), whose operator would undo a scale-down, goes the in-place
    route: ``<name>-quiesce-<i>`` (``quiesce-redis``: ``save ""``,
    ``appendonly no``, ``repl-diskless-sync yes``, ``replica-priority 0``).
``Restarting``
    ``<name>-swap-<i>`` (``restore --swap``): the staged files into place,
    the previous ones into ``.backupctl-previous-<time>/``. Then the plain
    StatefulSet is scaled back; in place, the primary's pod is deleted
    first (it restarts on the restored files with its own configuration),
    and once it is ready the replicas' pods; a Redis Cluster's pods all at
    once. A pod that restarted on its own while quiesced (its settings back
    to normal) stops the restore.
``Verifying``
    ``<name>-verify`` (``check-redis --expect-keys N``): the primary loaded
    exactly the backup's key count, every replica is in sync and holds the
    same data (DEBUG DIGEST where allowed); a cluster: ``restore
    --to-cluster --verify-only`` (per shard). Then ``Completed`` with
    ``restoredKeys``.
``Failed``
    With the reason in the ``Failed`` condition. Before the swap nothing
    the servers load was touched and the controller undoes its own steps
    (``Progressing=True``, reason ``RollingBack``, while it runs): staged
    copies discarded (``<name>-discard-<i>``), quiesced servers resumed
    (``<name>-resume-<i>``), the StatefulSet scaled back. After the swap the
    previous data stays in the dated folder on each volume (README: how to
    roll back by hand).

A restore never runs twice: ``Completed``/``Failed`` are final, and the
status says how far it got, so later pod or controller restarts only
resume an unfinished restore at the step it was at.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from backupctl.controller.manifests import (
    DATA_DIR,
    TargetPod,
    owner_reference,
    redis_url,
    restore_job,
)
from backupctl.controller.schedule import bounded_name
from backupctl.controller.spec import (
    GROUP_VERSION,
    RestoreSpec,
    restore_source_target,
    store_url,
)
from backupctl.controller.spec_fields import SpecError
from backupctl.core.datadir import STAGING_PREFIX
from backupctl.core.slots import CLUSTER_SLOTS, Ranges, format_slots, normalize_slots, slot_count
from backupctl.core.timefmt import format_time, parse_time
from backupctl.core.versions import version_problem

KIND = "RedisRestore"
TERMINAL = ("Completed", "Failed")
SCALE_DOWN, IN_PLACE = "ScaleDown", "InPlace"
#: Longest wait for pods to go away (scale to 0) or to be ready again.
POD_TIMEOUT_SECONDS = 900.0
#: ``check-redis --wait`` of the preflight and of the verification Job.
CHECK_WAIT_SECONDS = 60
VERIFY_WAIT_SECONDS = 300
#: Longest message copied into status and Events.
MESSAGE_LIMIT = 1024
#: Pod phases before the swap: nothing Redis loads has been touched.
_BEFORE_SWAP = ("Pending", "Staging", "Staged", "Quiesced")

JobState = Literal["Running", "Succeeded", "Failed"]


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
    run_as_user: int | None = None
    run_as_group: int | None = None


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
class JobView:
    """A Job of this restore: its state, the parsed termination message of its
    last pod (``{"ok": ..., ...}``), why it failed, why its pod cannot start."""

    name: str
    state: JobState
    result: Mapping[str, Any] | None = None
    message: str = ""
    waiting: str | None = None


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


# --- what to do --------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Plan:
    """The status to write (a merge patch of ``status``), then the actions."""

    status: dict[str, Any]
    jobs: list[dict[str, Any]] = field(default_factory=list)
    scale: dict[str, int] = field(default_factory=dict)
    delete_pods: list[tuple[str, str]] = field(default_factory=list)  # (name, uid)
    events: list[Event] = field(default_factory=list)
    wake: float = 5.0  # seconds until the next look (Job events wake it earlier)

    @property
    def done(self) -> bool:
        return not (self.jobs or self.scale or self.delete_pods)


def plan(obs: Observed, now: datetime) -> Plan:
    """The next step for one RedisRestore (see the module docstring)."""
    return _Planner(obs, now).run()


def is_finished(status: Mapping[str, Any]) -> bool:
    """Completed or Failed, and no rollback running: nothing left to do."""
    if status.get("phase") not in TERMINAL:
        return False
    return _condition(status, "Progressing").get("status") != "True"


def target_key(spec: Mapping[str, Any]) -> str:
    """What "the same target" means for two restores: the name (whatever the
    kind), or the label selector."""
    name = spec.get("redisClusterName") or (spec.get("target") or {}).get("name")
    if name:
        return f"name:{name}"
    selector = (spec.get("target") or {}).get("selector") or {}
    labels = ",".join(f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items()))
    return f"selector:{labels}|{selector.get('matchExpressions')}"


def job_name(restore: str, step: str, index: int | None = None) -> str:
    """``<restore>-<step>[-<i>]``, a valid Job name (pod label values <= 63)."""
    return bounded_name(restore, f"-{step}" + (f"-{index}" if index is not None else ""), 52)


# --- the planner ---------------------------------------------------------------------------


class _Failure(Exception):
    """The restore cannot go on: ``Failed`` with this reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


class _Wait(Exception):
    """Something needed is missing for now (a pod restarting): look again,
    within the step's time limit."""


class _Planner:
    def __init__(self, obs: Observed, now: datetime) -> None:
        self.obs, self.now = obs, now
        self.status: dict[str, Any] = copy.deepcopy(dict(obs.status))
        self.out = Plan(status=self.status)
        self.was = obs.status.get("phase")

    # -- entry ----------------------------------------------------------------------------

    def run(self) -> Plan:
        st = self.status
        st["observedGeneration"] = self.obs.generation
        if is_finished(self.obs.status):
            self.out.wake = 3600.0
            return self.out
        try:
            if st.get("phase") == "Failed":
                self._rollback()
            else:
                if isinstance(self.obs.spec, SpecError):
                    raise _Failure("InvalidSpec", str(self.obs.spec))
                spec = self.obs.spec
                step = {
                    None: self._pending,
                    "Pending": self._pending,
                    "Staging": self._staging,
                    "Quiescing": self._quiescing,
                    "Restarting": self._restarting,
                    "Verifying": self._verifying,
                }.get(st.get("phase"))
                if step is None:
                    raise _Failure("UnknownPhase", f"unknown phase {st.get('phase')!r}")
                step(spec)
        except _Wait as w:
            try:
                self._progress("Waiting", str(w))
                self._timeout(str(w))
                self.out.wake = 2.0
            except _Failure as f:
                self._fail(f.reason, f.message)
        except _Failure as f:
            self._fail(f.reason, f.message)
        self._events()
        return self.out

    # -- Pending ----------------------------------------------------------------------------

    def _pending(self, spec: RestoreSpec) -> None:
        st, obs = self.status, self.obs
        st.setdefault("phase", "Pending")
        if not st.get("startTime"):
            if not self._may_start(spec):
                return
            self._start(spec)
            return  # the recorded start goes to the API before any Job exists
        names = [job_name(obs.name, "resolve"), job_name(obs.name, "check")]
        views = [obs.jobs.get(n) for n in names]
        if views[0] is None:
            self.out.jobs.append(self._resolve_job(spec))
        if views[1] is None:
            self.out.jobs.append(self._check_job(spec))
        for i, view in enumerate(views):
            if view is not None and view.state == "Failed":
                if i == 0:
                    raise _Failure(
                        "BackupNotFound", f"resolving the backup failed: {_job_error(view)}"
                    )
                raise _Failure(
                    "TargetCheckFailed", f"checking the target Redis failed: {_job_error(view)}"
                )
        self._progress("Resolving", "resolving the backup and checking the target", views)
        if not all(v is not None and v.state == "Succeeded" for v in views):
            self.out.wake = 2.0
            return
        resolved, checked = views[0], views[1]
        assert resolved is not None and checked is not None
        self._accept(resolved.result or {}, checked.result or {})
        self._enter("Staging", "StagingStarted", f"staging backup {st['backupId']} on every volume")
        self._staging(spec)

    def _may_start(self, spec: RestoreSpec) -> bool:
        obs = self.obs
        if obs.source_problem is not None:
            self._waiting("BackupSourceNotFound", obs.source_problem)
            return False
        if obs.target is None:
            reason, message = obs.target_problem or ("TargetNotFound", "the target was not found")
            self._waiting(reason, message)
            return False
        if not obs.target.pods:
            self._waiting("TargetNotReady", f"{obs.target.label} has no pods")
            return False
        if any(not p.target.data_pvc or not p.target.node_name for p in obs.target.pods):
            self._waiting(
                "DataVolumeNotFound",
                f"every pod of {obs.target.label} needs a PersistentVolumeClaim at its data "
                "directory and a node",
            )
            return False
        mine = (obs.created, obs.name)
        key = _key_of(spec)
        for other in obs.others:
            if other.target_key != key or other.name == obs.name:
                continue
            if other.active or (not other.started and (other.created, other.name) < mine):
                self._waiting(
                    "WaitingForRestore",
                    f"RedisRestore {other.name} restores the same target; this one starts when "
                    "it has finished",
                )
                return False
        return True

    def _start(self, spec: RestoreSpec) -> None:
        st, target = self.status, self.obs.target
        assert target is not None
        st.update(
            phase="Pending",
            startTime=format_time(self.now),
            stepStartTime=format_time(self.now),
            target=target.label,
            route=target.route,
            sourceTarget=restore_source_target(spec, self.obs.namespace),
            statefulSets=[
                {"name": n, "replicas": r} for n, r in sorted(target.statefulsets.items())
            ],
            pods=[
                _drop_none(
                    {
                        "name": p.name,
                        "pvc": p.target.data_pvc,
                        "dataSubPath": p.target.data_sub_path,
                        "node": p.target.node_name,
                        "phase": "Pending",
                    }
                )
                for p in sorted(target.pods, key=lambda p: _ordinal_key(p.name))
            ],
            message=f"restoring into {target.label}",
        )
        self._set_condition("Ready", "False", "Restoring", f"restoring into {target.label}")
        self._set_condition("Progressing", "True", "Started", "the restore started")
        self._set_condition("Failed", "False", "Started", "")
        self.out.events.append(
            Event("Normal", "Started", f"restoring into {target.label} ({target.route} route)")
        )
        self.out.wake = 0.0

    def _accept(self, resolved: Mapping[str, Any], checked: Mapping[str, Any]) -> None:
        """Record the resolved backup and refuse what cannot work."""
        st = self.status
        if not resolved.get("id"):
            raise _Failure(
                "BackupNotFound", f"resolving the backup failed: {_job_error_of(resolved)}"
            )
        nodes = list(resolved.get("nodes") or [])
        if not nodes:
            raise _Failure("BackupNotFound", "the backup's manifest lists no node")
        servers = list(checked.get("nodes") or [])
        pods = st["pods"]
        if len(servers) != len(pods):
            raise _Failure("TargetCheckFailed", "the target check did not report every pod")
        cluster_pods = [p["name"] for p, s in zip(pods, servers, strict=True) if s.get("cluster")]
        if resolved.get("mode") == "cluster":
            self._accept_cluster(resolved, nodes, servers)
            return
        if resolved.get("mode", "standalone") != "standalone":
            raise _Failure(
                "Unsupported",
                f"a {resolved.get('mode')} backup cannot be restored by RedisRestore: use "
                "`backupctl restore STORE ID --to-redis redis://<primary>`",
            )
        if cluster_pods:
            raise _Failure(
                "Unsupported",
                f"backup {resolved['id']} is a single server's backup and pods "
                f"{', '.join(cluster_pods)} run cluster mode: its keys belong to every shard, "
                "which a file restore cannot split; load it through the cluster with "
                f"`backupctl restore STORE {resolved['id']} --to-redis redis://<any node>`",
            )
        source = next((n for n in nodes if n.get("role") == "master"), nodes[0])
        for pod, server in zip(pods, servers, strict=True):
            pod["role"] = "primary" if server.get("role") == "master" else "replica"
            self._require_config(pod, server)
            problem = version_problem(
                str(source.get("redisVersion") or resolved.get("redisVersion") or ""),
                source.get("rdbVersion"),
                str(server.get("version") or ""),
            )
            if problem is not None:
                raise _Failure("IncompatibleVersion", f"pod {pod['name']}: {problem}")
        primaries = [p["name"] for p in pods if p["role"] == "primary"]
        if len(primaries) != 1:
            raise _Failure(
                "Unsupported",
                f"the target has {len(primaries)} primaries ({', '.join(primaries) or 'none'}); "
                "one primary with replicas (or a single server) is supported",
            )
        st.update(
            backupId=str(resolved["id"]),
            expectedKeys=int(source.get("keys", resolved.get("keys", 0))),
            sourceNode=str(source["name"]),
            backupRedisVersion=str(source.get("redisVersion") or ""),
            redisVersion=str(servers[0].get("version") or ""),
        )

    def _require_config(self, pod: Mapping[str, Any], server: Mapping[str, Any]) -> None:
        if self.status.get("route") == IN_PLACE and not server.get("config"):
            raise _Failure(
                "ConfigDisabled",
                f"pod {pod['name']}: CONFIG is disabled or renamed, so Redis cannot be kept "
                "from overwriting the restored files while it runs (in-place route)",
            )

    def _accept_cluster(
        self,
        resolved: Mapping[str, Any],
        nodes: Sequence[Mapping[str, Any]],
        servers: Sequence[Mapping[str, Any]],
    ) -> None:
        """A cluster backup set into a Redis Cluster: each pod gets the archive
        of the backup shard whose slots its shard serves now (Redis said so in
        the check Job), whatever its name or current role."""
        st = self.status
        backup_id = str(resolved["id"])
        pods = st["pods"]
        if st.get("route") != IN_PLACE:
            raise _Failure(
                "Unsupported",
                f"{st['target']} is a plain StatefulSet: RedisRestore restores a cluster backup "
                "set into an operator-managed Redis Cluster (OpsTree RedisCluster) only; use "
                f"`backupctl restore STORE {backup_id} --to-cluster redis://<any node> "
                "--restart`",
            )
        not_cluster = [
            p["name"] for p, s in zip(pods, servers, strict=True) if not s.get("cluster")
        ]
        if not_cluster:
            raise _Failure(
                "Unsupported",
                f"backup {backup_id} is a cluster backup set, but pods {', '.join(not_cluster)} "
                "do not run cluster mode: load it key by key with `backupctl restore STORE "
                f"{backup_id} --to-redis redis://<primary>`",
            )
        sources = cluster_sources(backup_id, nodes, [p["name"] for p in pods], servers)
        for pod, server, source in zip(pods, servers, sources, strict=True):
            pod["role"] = "primary" if server.get("role") == "master" else "replica"
            pod["sourceNode"] = str(source["name"])
            pod["slots"] = format_slots(normalize_slots(source.get("slots") or []))
            self._require_config(pod, server)
            problem = version_problem(
                str(source.get("redisVersion") or resolved.get("redisVersion") or ""),
                source.get("rdbVersion"),
                str(server.get("version") or ""),
            )
            if problem is not None:
                raise _Failure("IncompatibleVersion", f"pod {pod['name']}: {problem}")
        st.update(
            backupId=backup_id,
            cluster=True,
            shards=len(nodes),
            expectedKeys=sum(int(n.get("keys") or 0) for n in nodes),
            backupRedisVersion=str(resolved.get("redisVersion") or ""),
            redisVersion=str(servers[0].get("version") or ""),
        )

    # -- Staging ----------------------------------------------------------------------------

    def _staging(self, spec: RestoreSpec) -> None:
        pods = self.status["pods"]
        for i, pod in enumerate(pods):
            if pod["phase"] == "Staged":
                continue
            job = self._data_job(spec, "stage", i, self._stage_args(spec, pod))
            view = self._job(job, pod)
            if view is None or view.state == "Running":
                pod["phase"] = "Staging"
            elif view.state == "Failed":
                pod["message"] = _job_error(view)
                raise _Failure(
                    "StagingFailed", f"staging on {pod['pvc']} failed: {_job_error(view)}"
                )
            else:
                pod.update(phase="Staged", keys=(view.result or {}).get("keys"))
                pod.pop("message", None)
        self._progress("Staging", "downloading and verifying into every volume")
        if all(p["phase"] == "Staged" for p in pods):
            self._enter("Quiescing", "Quiescing", self._quiesce_text())
            self._quiescing(spec)
        else:
            self.out.wake = 2.0

    def _quiesce_text(self) -> str:
        if self.status.get("route") == SCALE_DOWN:
            names = ", ".join(s["name"] for s in self.status.get("statefulSets") or [])
            return f"scaling StatefulSet {names} to 0 so Redis cannot overwrite the staged data"
        return "stopping Redis from writing to its volumes (in place)"

    # -- Quiescing --------------------------------------------------------------------------

    def _quiescing(self, spec: RestoreSpec) -> None:
        st, target = self.status, self.obs.target
        pods = st["pods"]
        if st["route"] == SCALE_DOWN:
            for sts in st.get("statefulSets") or []:
                sts["scaledDown"] = True  # written before the scale: the rollback knows
                if target is None or target.statefulsets.get(sts["name"], 0) != 0:
                    self.out.scale[sts["name"]] = 0
            left = [p.name for p in target.pods] if target is not None else []
            if left:
                self._timeout(f"pods {', '.join(left)} still exist after scaling to 0")
                self.out.wake = 1.0
                return
            for pod in pods:
                pod["phase"] = "Quiesced"
        else:
            for i, pod in enumerate(pods):
                if pod["phase"] == "Quiesced":
                    continue
                live = self._live_pod(pod)
                view = self._job(self._quiesce_job(spec, "quiesce", i, live), pod)
                if view is not None and view.state == "Failed":
                    raise _Failure("QuiesceFailed", f"pod {pod['name']}: {_job_error(view)}")
                if view is not None and view.state == "Succeeded":
                    # The instance that was quiesced: a restart would undo it.
                    pod.update(phase="Quiesced", uid=live.uid, restarts=live.restarts)
        self._progress("Quiescing", self._quiesce_text())
        if all(p["phase"] == "Quiesced" for p in pods):
            self._enter("Restarting", "Swapping", "putting the staged data in place")
            self._restarting(spec)
        else:
            self.out.wake = 2.0

    # -- Restarting -------------------------------------------------------------------------

    def _restarting(self, spec: RestoreSpec) -> None:
        st = self.status
        pods = st["pods"]
        self._check_still_quiesced()
        for i, pod in enumerate(pods):
            if pod["phase"] != "Quiesced":
                continue
            args = ["restore", self._store(spec), st["backupId"], "--to-dir", DATA_DIR, "--swap"]
            job = self._data_job(spec, "swap", i, args, storage=False)
            view = self._job(job, pod)
            if view is not None and view.state == "Failed":
                raise _Failure("SwapFailed", f"swapping on {pod['pvc']} failed: {_job_error(view)}")
            if view is not None and view.state == "Succeeded":
                previous = (view.result or {}).get("previous")
                pod["phase"] = "Swapped"
                if previous:
                    pod["previousData"] = str(previous).rstrip("/").rsplit("/", 1)[-1]
        if any(p["phase"] == "Quiesced" for p in pods):
            self._progress("Swapping", "putting the staged data in place")
            self.out.wake = 2.0
            return
        self._check_still_quiesced()
        if st["route"] == SCALE_DOWN:
            self._scale_up()
        else:
            self._restart_in_place()
        if all(p["phase"] == "Ready" for p in pods):
            self._enter("Verifying", "Verifying", "checking the restored data")
            self._verifying(spec)

    def _check_still_quiesced(self) -> None:
        """Nothing may have restarted Redis on its old files before the swap."""
        target = self.obs.target
        st = self.status
        if st["route"] == SCALE_DOWN:
            if (
                target is not None
                and target.pods
                and any(p["phase"] == "Quiesced" for p in st["pods"])
            ):
                raise _Failure(
                    "TargetRestarted",
                    f"pods {', '.join(p.name for p in target.pods)} came back before the staged "
                    "data was swapped in (was the StatefulSet scaled up?)",
                )
            return
        for pod in st["pods"]:
            if pod["phase"] not in ("Quiesced", "Swapped"):
                continue
            live = target.pod(pod["name"]) if target is not None else None
            if live is None or live.uid != pod.get("uid") or live.restarts != pod.get("restarts"):
                raise _Failure(
                    "TargetRestarted",
                    f"pod {pod['name']} restarted while quiesced (its settings are back to "
                    "normal, so it could overwrite the restored files); restore stopped",
                )

    def _scale_up(self) -> None:
        st, target = self.status, self.obs.target
        for sts in st.get("statefulSets") or []:
            if target is None or target.statefulsets.get(sts["name"]) != sts["replicas"]:
                self.out.scale[sts["name"]] = int(sts["replicas"])
            else:
                sts["scaledDown"] = False
        for pod in st["pods"]:
            pod["phase"] = "Restarting" if pod["phase"] == "Swapped" else pod["phase"]
        ready = {p.name for p in (target.pods if target else ()) if p.ready and not p.terminating}
        for pod in st["pods"]:
            if pod["name"] in ready:
                pod["phase"] = "Ready"
        self._progress("Restarting", "starting Redis on the restored data")
        if not all(p["phase"] == "Ready" for p in st["pods"]):
            self._timeout("Redis did not become ready on the restored data")
            self.out.wake = 1.0

    def _restart_in_place(self) -> None:
        """The primary first; its replicas once it is ready. A Redis Cluster:
        every pod at once (a node down longer than ``cluster-node-timeout``
        makes its replica take over, and a replica must not sync the old data
        from a master not restarted yet)."""
        st, target = self.status, self.obs.target
        pods = st["pods"]
        waves = (
            [pods]
            if st.get("cluster")
            else [
                [p for p in pods if p.get("role") == "primary"],
                [p for p in pods if p.get("role") != "primary"],
            ]
        )
        for wave in waves:
            for pod in wave:
                live = target.pod(pod["name"]) if target is not None else None
                if pod["phase"] == "Swapped":
                    pod["phase"] = "Restarting"  # uid recorded at the quiesce
                if pod["phase"] != "Restarting":
                    continue
                if live is not None and live.uid == pod.get("uid"):
                    self.out.delete_pods.append((pod["name"], pod["uid"]))
                elif live is not None and live.ready and not live.terminating:
                    pod["phase"] = "Ready"
            if not all(p["phase"] == "Ready" for p in wave):
                self._progress("Restarting", "restarting Redis on the restored data")
                self._timeout("Redis did not become ready on the restored data")
                self.out.wake = 1.0
                return

    # -- Verifying --------------------------------------------------------------------------

    def _verifying(self, spec: RestoreSpec) -> None:
        st = self.status
        name = job_name(self.obs.name, "verify")
        view = self.obs.jobs.get(name)
        if view is None:
            lives = [self._live_pod(p) for p in st["pods"]]
            if st.get("cluster"):
                # Per shard: its master loaded exactly that shard's keys, replicas in
                # sync, cluster_state ok and every slot served on every node.
                args = ["restore", self._store(spec), st["backupId"], "--target",
                        st["sourceTarget"], "--to-cluster", redis_url(lives[0].target, spec),
                        "--verify-only", "--timeout", str(VERIFY_WAIT_SECONDS)]  # fmt: skip
                job = self._job_manifest(spec, name, args, storage=True, redis=lives[0].target)
            else:
                urls = [a for p in lives for a in ("--redis", redis_url(p.target, spec))]
                args = ["check-redis", *urls, "--expect-keys", str(st["expectedKeys"]),
                        "--wait", str(VERIFY_WAIT_SECONDS)]  # fmt: skip
                job = self._job_manifest(spec, name, args, redis=lives[0].target)
            self.out.jobs.append(job)
        self._progress("Verifying", "checking the restored data")
        if view is None or view.state == "Running":
            self.out.wake = 2.0
            return
        if view.state == "Failed":
            raise _Failure("VerificationFailed", _job_error(view))
        result = view.result or {}
        restored = result.get("restoredKeys")
        for pod in st["pods"]:
            pod["phase"] = "Verified"
        st.update(
            phase="Completed",
            restoredKeys=int(restored) if restored is not None else None,
            completionTime=format_time(self.now),
            message=f"restored {st['backupId']} into {st['target']}: {restored} keys",
        )
        self._set_condition("Ready", "True", "Restored", st["message"])
        self._set_condition("Progressing", "False", "Completed", st["message"])
        self._set_condition("Failed", "False", "Completed", "")

    # -- failure and rollback ---------------------------------------------------------------

    def _fail(self, reason: str, message: str) -> None:
        """``Failed``; before the swap, plan the undo of each step taken
        (``pods[].rollback``: Resume, then Discard; Restart) and run it."""
        st = self.status
        message = _clip(message)
        route, swapped = st.get("route"), False
        for pod in st.get("pods") or []:
            phase = pod.get("phase")
            if phase in ("Swapped", "Restarting", "Ready", "Verified"):
                swapped = True
            if not st.get("backupId") or st.get("phase") == "Verifying":
                continue
            if phase == "Quiesced" and route == IN_PLACE:
                pod["rollback"] = "Resume"
            elif phase in _BEFORE_SWAP:
                pod["rollback"] = "Discard"
            elif phase in ("Swapped", "Restarting") and route == IN_PLACE:
                pod["rollback"] = "Restart"  # it loads the restored files: all agree again
        if swapped:
            message += (
                f"; the volumes swapped so far keep their data from before the restore in "
                f"{_previous_names(st) or '.backupctl-previous-<time>'} (see the README to roll "
                "back)"
            )
        elif st.get("startTime"):
            message += "; the data Redis loads was not touched"
        st.update(phase="Failed", message=message, completionTime=format_time(self.now))
        self._set_condition("Failed", "True", reason, message)
        self._set_condition("Ready", "False", reason, message)
        if self._rollback_left():
            self._set_condition("Progressing", "True", "RollingBack", "undoing the restore's steps")
            self.out.wake = 0.0
        else:
            self._set_condition("Progressing", "False", reason, message)

    def _rollback_left(self) -> bool:
        st = self.status
        return any(p.get("rollback") not in (None, "Done") for p in st.get("pods") or []) or any(
            sts.get("scaledDown") for sts in st.get("statefulSets") or []
        )

    def _rollback(self) -> None:
        """One pass of the undo planned by :meth:`_fail`."""
        st, target = self.status, self.obs.target
        spec = self.obs.spec if isinstance(self.obs.spec, RestoreSpec) else None
        pods = st.get("pods") or []
        # A staging Job still running finishes first (its folder is removed next);
        # one whose pod cannot start (a missing Secret) is not waited for.
        busy = any(
            (v := self.obs.jobs.get(job_name(self.obs.name, "stage", i))) is not None
            and v.state == "Running"
            and not v.waiting
            for i in range(len(pods))
        )
        for i, pod in enumerate(pods):
            step = pod.get("rollback")
            if busy or spec is None or step in (None, "Done"):
                continue
            live = self._find_pod(pod)
            if step == "Resume":
                if (
                    live is None
                    or live.uid != pod.get("uid")
                    or live.restarts != pod.get("restarts")
                ):
                    pod["rollback"] = "Discard"  # restarted: its settings are back anyway
                else:
                    view = self._job(self._quiesce_job(spec, "resume", i, live), pod, record=False)
                    if view is not None and view.state != "Running":
                        pod["rollback"] = "Discard"
                        if view.state == "Failed":
                            pod["message"] = f"resuming failed: {_job_error(view)}"
            if pod["rollback"] == "Discard":
                args = ["restore", self._store(spec), st["backupId"], "--to-dir", DATA_DIR,
                        "--discard-staged"]  # fmt: skip
                view = self._job(self._data_job(spec, "discard", i, args, storage=False), pod,
                                 record=False)  # fmt: skip
                if view is not None and view.state != "Running":
                    pod["rollback"] = "Done"
            elif step == "Restart":
                if live is not None and live.uid == pod.get("uid"):
                    self.out.delete_pods.append((pod["name"], pod["uid"]))
                else:
                    pod["rollback"] = "Done"
        for sts in st.get("statefulSets") or []:
            if not sts.get("scaledDown") or busy:
                continue
            if target is not None and target.statefulsets.get(sts["name"]) == sts["replicas"]:
                sts["scaledDown"] = False
            else:  # staged copies are hidden folders: Redis may start beside them
                self.out.scale[sts["name"]] = int(sts["replicas"])
        if self._rollback_left():
            self.out.wake = 2.0
            return
        failed = _condition(st, "Failed")
        self._set_condition(
            "Progressing",
            "False",
            str(failed.get("reason", "Failed")),
            "rolled back: Redis runs on the data it had before the restore",
        )

    # -- Jobs -------------------------------------------------------------------------------

    def _store(self, spec: RestoreSpec) -> str:
        assert spec.storage is not None
        return store_url(spec.storage)

    def _state_file(self) -> str:
        return f"{DATA_DIR}/{STAGING_PREFIX}{self.status['backupId']}/quiesce.json"

    def _resolve_job(self, spec: RestoreSpec) -> dict[str, Any]:
        args = ["restore", self._store(spec), spec.backup, "--target",
                self.status["sourceTarget"], "--dry-run"]  # fmt: skip
        return self._job_manifest(spec, job_name(self.obs.name, "resolve"), args, storage=True)

    def _check_job(self, spec: RestoreSpec) -> dict[str, Any]:
        lives = [self._live_pod(p) for p in self.status["pods"]]
        urls = [a for p in lives for a in ("--redis", redis_url(p.target, spec))]
        args = ["check-redis", *urls, "--wait", str(CHECK_WAIT_SECONDS)]
        name = job_name(self.obs.name, "check")
        return self._job_manifest(spec, name, args, redis=lives[0].target)

    def _stage_args(self, spec: RestoreSpec, pod: Mapping[str, Any]) -> list[str]:
        st = self.status
        node = pod.get("sourceNode") or st.get("sourceNode")  # a cluster: the pod's shard
        if not node:
            raise _Failure("InvalidStatus", f"the status names no backup node for {pod['name']}")
        return ["restore", self._store(spec), st["backupId"], "--target", st["sourceTarget"],
                "--node", node, "--to-dir", DATA_DIR, "--appendonly", "auto",
                "--stage-only"]  # fmt: skip

    def _data_job(
        self,
        spec: RestoreSpec,
        step: str,
        i: int,
        args: list[str],
        storage: bool = True,
        redis: PodView | None = None,
    ) -> dict[str, Any]:
        """A Job on pod ``i``'s volume (as recorded at the start: the pod may be
        gone), pinned to its node; with ``redis``, also able to log in to it."""
        pod = self.status["pods"][i]
        recorded = TargetPod(
            name=pod["name"],
            host=pod["name"],
            node_name=pod.get("node"),
            data_pvc=pod.get("pvc"),
            data_sub_path=pod.get("dataSubPath"),
        )
        live = redis or self._find_pod(pod)
        return self._job_manifest(
            spec,
            job_name(self.obs.name, step, i),
            args,
            storage=storage,
            redis=redis.target if redis is not None else None,
            data=recorded,
            run_as=(live.run_as_user, live.run_as_group) if live is not None else (None, None),
        )

    def _quiesce_job(self, spec: RestoreSpec, step: str, i: int, live: PodView) -> dict[str, Any]:
        args = ["quiesce-redis", "--redis", redis_url(live.target, spec),
                "--state-file", self._state_file()]  # fmt: skip
        if step == "resume":
            args.append("--resume")
        return self._data_job(spec, step, i, args, storage=False, redis=live)

    def _job_manifest(
        self,
        spec: RestoreSpec,
        name: str,
        args: list[str],
        *,
        storage: bool = False,
        redis: TargetPod | None = None,
        data: TargetPod | None = None,
        run_as: tuple[int | None, int | None] = (None, None),
    ) -> dict[str, Any]:
        return restore_job(
            spec,
            name=name,
            namespace=self.obs.namespace,
            restore_name=self.obs.name,
            owner=owner_reference(GROUP_VERSION, KIND, self.obs.name, self.obs.uid),
            image=self.obs.image,
            args=args,
            storage=storage,
            redis=redis,
            data=data,
            run_as_user=run_as[0],
            run_as_group=run_as[1],
        )

    def _job(self, job: dict[str, Any], pod: dict[str, Any], record: bool = True) -> JobView | None:
        """The Job's view, or None after planning its creation."""
        name = job["metadata"]["name"]
        if record:
            pod["jobName"] = name
        view = self.obs.jobs.get(name)
        waiting = f"Job {name} cannot start: "
        if view is None:
            self.out.jobs.append(job)
        elif view.waiting:
            pod["message"] = waiting + view.waiting
        elif str(pod.get("message", "")).startswith(waiting):
            del pod["message"]
        return view

    def _live_pod(self, pod: Mapping[str, Any]) -> PodView:
        live = self._find_pod(pod)
        if live is None:
            raise _Wait(f"waiting for pod {pod['name']} of the target")
        return live

    def _find_pod(self, pod: Mapping[str, Any]) -> PodView | None:
        return self.obs.target.pod(pod["name"]) if self.obs.target is not None else None

    # -- status helpers ---------------------------------------------------------------------

    def _enter(self, phase: str, reason: str, message: str) -> None:
        self.status.update(phase=phase, stepStartTime=format_time(self.now), message=message)
        self._set_condition("Progressing", "True", reason, message)

    def _progress(self, reason: str, message: str, views: Sequence[JobView | None] = ()) -> None:
        waiting = [
            f"Job {v.name} cannot start: {v.waiting}" for v in views if v is not None and v.waiting
        ]
        waiting += [p["message"] for p in self.status.get("pods") or [] if p.get("message")]
        text = _clip("; ".join(waiting) if waiting else message)
        self.status["message"] = text
        self._set_condition("Progressing", "True", reason, text)

    def _waiting(self, reason: str, message: str) -> None:
        self.status.update(phase="Pending", message=_clip(message))
        self._set_condition("Ready", "False", reason, _clip(message))
        self._set_condition("Progressing", "False", reason, _clip(message))
        self.out.wake = 10.0 if reason != "WaitingForRestore" else 5.0

    def _timeout(self, message: str) -> None:
        started = parse_time(self.status.get("stepStartTime")) or self.now
        if (self.now - started).total_seconds() > POD_TIMEOUT_SECONDS:
            raise _Failure("Timeout", f"{message} within {POD_TIMEOUT_SECONDS:.0f} s")

    def _set_condition(self, type_: str, status: str, reason: str, message: str) -> None:
        conditions = self.status.setdefault("conditions", [])
        current = next((c for c in conditions if c.get("type") == type_), None)
        entry = {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "observedGeneration": self.obs.generation,
            "lastTransitionTime": format_time(self.now),
        }
        if current is None:
            conditions.append(entry)
            return
        if current.get("status") == status:
            entry["lastTransitionTime"] = current.get(
                "lastTransitionTime", entry["lastTransitionTime"]
            )
        current.clear()
        current.update(entry)

    def _events(self) -> None:
        st = self.status
        phase = st.get("phase")
        if phase == self.was:
            if phase == "Pending" and st.get("message") != self.obs.status.get("message"):
                reason = _condition(st, "Ready").get("reason", "Pending")
                if reason != "Restoring":
                    self.out.events.append(Event("Normal", reason, st["message"]))
            return
        if phase == "Failed":
            failed = _condition(st, "Failed")
            self.out.events.append(Event("Warning", failed.get("reason", "Failed"), st["message"]))
        elif phase == "Completed":
            self.out.events.append(Event("Normal", "Completed", st["message"]))
        elif phase is not None and phase != "Pending":
            self.out.events.append(Event("Normal", phase, st.get("message", phase)))


# --- small helpers -----------------------------------------------------------------------


def _key_of(spec: RestoreSpec) -> str:
    t = spec.target
    if t.name is not None:
        return f"name:{t.name}"
    return target_key({"target": {"selector": t.selector}})


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), {})


def cluster_sources(
    backup_id: str,
    nodes: Sequence[Mapping[str, Any]],
    pods: Sequence[str],
    servers: Sequence[Mapping[str, Any]],
) -> list[Mapping[str, Any]]:
    """The backup node (a shard of the set: ``name``, ``slots``) whose archive
    each pod gets: the one with exactly the slot ranges the pod's shard serves
    now (``servers[i]["slots"]``, from Redis: a replica reports its master's).
    :class:`_Failure` (nothing touched) for an unhealthy cluster, a backup set
    that does not cover every slot, or another shard count or slot layout."""
    redo = (
        "a file restore needs the same shards serving the same slots: reshard the cluster to "
        "the backup's layout, or load the backup key by key through the cluster with "
        f"`backupctl restore STORE {backup_id} --to-redis redis://<any node>` (any layout)"
    )
    for pod, server in zip(pods, servers, strict=True):
        if server.get("cluster_state") != "ok":
            raise _Failure(
                "ClusterNotHealthy",
                f"pod {pod} reports cluster_state:{server.get('cluster_state') or '?'}: restore "
                "into a healthy cluster only (redis-cli --cluster check; wait for failovers to "
                "end)",
            )
    ours: dict[Ranges, Mapping[str, Any]] = {}
    for node in nodes:
        ranges = normalize_slots(node.get("slots") or [])
        if not ranges or ranges in ours:
            raise _Failure(
                "InvalidBackup",
                f"backup {backup_id}: node {node.get('name')} has no or the same slot ranges as "
                "another: not a complete cluster backup set",
            )
        ours[ranges] = node
    covered = sum(slot_count(r) for r in ours)
    if covered != CLUSTER_SLOTS:
        raise _Failure(
            "InvalidBackup",
            f"backup {backup_id}'s shards cover {covered} of {CLUSTER_SLOTS} slots: not a "
            "complete cluster backup set",
        )
    theirs = [normalize_slots(s.get("slots") or []) for s in servers]
    live = {r for r in theirs if r}
    if set(ours) != live or not all(theirs):
        idle = [p for p, r in zip(pods, theirs, strict=True) if not r]
        if idle:
            detail = f"pods {', '.join(idle)} belong to no shard serving slots"
        elif len(ours) != len(live):
            detail = f"the backup holds {len(ours)} shards, the cluster has {len(live)}"
        else:
            detail = "the cluster's slot layout differs from the backup's"
        raise _Failure(
            "TopologyMismatch",
            f"{detail} (backup: {_layout(ours)}; cluster: {_layout(live)}): {redo}",
        )
    return [ours[r] for r in theirs]


def _layout(keys: Iterable[Ranges], limit: int = 8) -> str:
    items = sorted(keys)
    shown = "; ".join(format_slots(k) for k in items[:limit])
    return shown + (f"; ... ({len(items) - limit} more)" if len(items) > limit else "")


def _job_error_of(result: Mapping[str, Any]) -> str:
    return str(result.get("error") or "the result names no backup")


def _job_error(view: JobView) -> str:
    result = view.result or {}
    return str(result.get("error") or view.message or f"Job {view.name} failed")


def _previous_names(status: Mapping[str, Any]) -> str:
    names = sorted(
        {str(p["previousData"]) for p in status.get("pods") or [] if p.get("previousData")}
    )
    return ", ".join(names)


def _clip(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= MESSAGE_LIMIT else message[: MESSAGE_LIMIT - 1] + "…"


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _ordinal_key(name: str) -> tuple[str, int]:
    m = re.match(r"^(.*)-(\d+)$", name)
    return (m.group(1), int(m.group(2))) if m else (name, -1)


__all__ = [
    "IN_PLACE",
    "SCALE_DOWN",
    "TERMINAL",
    "Event",
    "JobView",
    "Observed",
    "OtherRestore",
    "Plan",
    "PodView",
    "TargetView",
    "cluster_sources",
    "is_finished",
    "job_name",
    "plan",
    "target_key",
]
