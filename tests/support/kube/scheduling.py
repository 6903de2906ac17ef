"""Where a pod may run, as kube-scheduler and the attach/detach controller decide it.

Why: a pod pinned to a cordoned, tainted or removed node, or wanting a claim another pod holds,
never starts on a real cluster; code that waits for its pods must see that. The stand-ins ask
:func:`schedule` (pure) before they start a pod: a pod without ``spec.nodeName`` goes to the
first registered Node that passes the filters (``spec.unschedulable`` as the
``node.kubernetes.io/unschedulable:NoSchedule`` taint, other ``NoSchedule``/``NoExecute`` taints
without a toleration, ``nodeSelector``, required ``nodeAffinity`` terms, a ``ReadWriteOncePod``
claim in use) or stays Pending with ``PodScheduled=False reason=Unschedulable`` and the
scheduler's message; a pod with ``spec.nodeName`` bypasses the scheduler (it runs on a cordoned
node; on a missing node it stays Pending with no condition). Once placed, :func:`volume_blocker`
says why its volumes cannot be attached or mounted (a ``ReadWriteOnce`` claim in use by a pod
on another node: ``FailedAttachVolume`` Multi-Attach; a mount failure a test injected:
``FailedMount``), which keeps it ``ContainerCreating``. Not emulated: resources and
capacity, pod (anti-)affinity, topology spread, preferred terms, preemption.
"""

from __future__ import annotations

import collections
import datetime
from dataclasses import dataclass
from typing import Any

from .api_client import ApiStatusError, K8sClient

JsonDict = dict[str, Any]
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
HOSTNAME = "kubernetes.io/hostname"
AFFINITY_MISMATCH = "node(s) didn't match Pod's node affinity/selector"
CORDONED = "node(s) were unschedulable"
RWOP_CONFLICT = (
    "node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode"
)


def node(name: str, labels: dict[str, str] | None = None) -> JsonDict:
    """A Ready Node object as a kubelet registers it."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {HOSTNAME: name, **(labels or {})}},
        "spec": {},
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        },
    }


@dataclass(frozen=True)
class Placement:
    """The scheduler's answer: a node, or None and why (``message`` empty: no condition)."""

    node: str | None
    message: str = ""


def _tolerates(tolerations: list[JsonDict], taint: JsonDict) -> bool:
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        if not t.get("key"):
            if t.get("operator") == "Exists":
                return True
            continue
        if t["key"] != taint.get("key"):
            continue
        if t.get("operator") == "Exists" or t.get("value", "") == taint.get("value", ""):
            return True
    return False


def _expression(expr: JsonDict, value: str | None) -> bool:
    op, values = expr.get("operator"), [str(v) for v in expr.get("values") or []]
    if op == "In":
        return value is not None and value in values
    if op == "NotIn":
        return value is None or value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt") and value is not None and values:
        try:
            a, b = int(value), int(values[0])
        except ValueError:
            return False
        return a > b if op == "Gt" else a < b
    return False


def _matches_affinity(spec: JsonDict, n: JsonDict) -> bool:
    labels = n["metadata"].get("labels") or {}
    for k, v in (spec.get("nodeSelector") or {}).items():
        if labels.get(k) != v:
            return False
    required = (
        ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        )
        or {}
    ).get("nodeSelectorTerms")
    if not required:
        return True
    for term in required:  # terms are ORed, expressions ANDed
        exprs = term.get("matchExpressions") or []
        fields = term.get("matchFields") or []
        if not exprs and not fields:
            continue
        if all(_expression(e, labels.get(e.get("key"))) for e in exprs) and all(
            _expression(f, n["metadata"]["name"] if f.get("key") == "metadata.name" else None)
            for f in fields
        ):
            return True
    return False


def _taint_text(taint: JsonDict) -> str:
    return f"{{{taint.get('key')}: {taint.get('value', '')}}}"


def _claims(pod: JsonDict) -> set[str]:
    return {
        v["persistentVolumeClaim"]["claimName"]
        for v in (pod.get("spec") or {}).get("volumes") or []
        if "persistentVolumeClaim" in v
    }


def _active(pod: JsonDict) -> bool:
    status = pod.get("status") or {}
    return (
        not pod["metadata"].get("deletionTimestamp")
        and status.get("phase") not in ("Succeeded", "Failed")
        and bool((pod.get("spec") or {}).get("nodeName"))
    )


def users_of(
    claim: str, pod: JsonDict, pods: list[JsonDict], running: bool = False
) -> list[JsonDict]:
    """Other placed, unfinished pods of the namespace using ``claim`` (``running``: only
    those whose volumes are attached, phase Running)."""
    ns, uid = pod["metadata"]["namespace"], pod["metadata"].get("uid")
    return [
        p
        for p in pods
        if p["metadata"].get("uid") != uid
        and p["metadata"]["namespace"] == ns
        and _active(p)
        and (not running or (p.get("status") or {}).get("phase") == "Running")
        and claim in _claims(p)
    ]


def schedule(
    pod: JsonDict, nodes: list[JsonDict], pods: list[JsonDict], claims: dict[str, JsonDict]
) -> Placement:
    """Place ``pod`` (see the module docstring); ``claims``: the namespace's PVCs by name."""
    spec = pod.get("spec") or {}
    wanted = spec.get("nodeName")
    if wanted:
        known = any(n["metadata"]["name"] == wanted for n in nodes)
        return Placement(wanted if known else None)
    if not nodes:
        return Placement(None, "no nodes available to schedule pods")
    total = len(nodes)
    for claim in _claims(pod):
        modes = ((claims.get(claim) or {}).get("spec") or {}).get("accessModes") or []
        if "ReadWriteOncePod" in modes and users_of(claim, pod, pods):
            return Placement(
                None, _unschedulable(total, collections.Counter({RWOP_CONFLICT: total}))
            )
    tolerations = spec.get("tolerations") or []
    reasons: collections.Counter[str] = collections.Counter()
    for n in sorted(nodes, key=lambda n: str(n["metadata"]["name"])):
        taints = list((n.get("spec") or {}).get("taints") or [])
        if (n.get("spec") or {}).get("unschedulable"):
            cordon = {"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule"}
            if not _tolerates(tolerations, cordon):
                reasons[CORDONED] += 1
                continue
        untolerated = [
            t
            for t in taints
            if t.get("effect") in ("NoSchedule", "NoExecute") and not _tolerates(tolerations, t)
        ]
        if untolerated:
            reasons[f"node(s) had untolerated taint {_taint_text(untolerated[0])}"] += 1
            continue
        if not _matches_affinity(spec, n):
            reasons[AFFINITY_MISMATCH] += 1
            continue
        return Placement(str(n["metadata"]["name"]))
    return Placement(None, _unschedulable(total, reasons))


def _unschedulable(total: int, reasons: collections.Counter[str]) -> str:
    parts = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
    return (
        f"0/{total} nodes are available: {parts}. preemption: 0/{total} nodes are available: "
        f"{total} Preemption is not helpful for scheduling."
    )


@dataclass(frozen=True)
class VolumeBlock:
    """Why a placed pod stays ContainerCreating: the Event's reason and message."""

    reason: str
    message: str


def volume_blocker(
    pod: JsonDict,
    pods: list[JsonDict],
    claims: dict[str, JsonDict],
    failing_mounts: dict[str, str],
) -> VolumeBlock | None:
    """A ReadWriteOnce claim attached to another node, or a mount failure injected by a test
    (``failing_mounts``: claim name -> error text)."""
    here = (pod.get("spec") or {}).get("nodeName")
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        if "persistentVolumeClaim" not in volume:
            continue
        claim = volume["persistentVolumeClaim"]["claimName"]
        modes = ((claims.get(claim) or {}).get("spec") or {}).get("accessModes") or []
        if "ReadWriteOnce" in modes:
            users = users_of(claim, pod, pods, running=True)
            elsewhere = [p for p in users if p["spec"]["nodeName"] != here]
            if elsewhere:
                names = ", ".join(p["metadata"]["name"] for p in elsewhere)
                pv = (claims.get(claim) or {}).get("spec", {}).get("volumeName") or claim
                return VolumeBlock(
                    "FailedAttachVolume",
                    f'Multi-Attach error for volume "{pv}" Volume is already used by pod(s) '
                    f"{names}",
                )
        if claim in failing_mounts:
            return VolumeBlock(
                "FailedMount",
                f'MountVolume.SetUp failed for volume "{volume["name"]}" : {failing_mounts[claim]}',
            )
    return None


def now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def unschedulable_status(message: str) -> JsonDict:
    """The Pending status of a pod the scheduler could not place."""
    return {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastTransitionTime": now(),
            }
        ],
    }


def container_creating_status(container: JsonDict) -> JsonDict:
    """The Pending status of a placed pod whose volumes are not ready."""
    return {
        "phase": "Pending",
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now()},
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady",
             "lastTransitionTime": now()},
        ],
        "containerStatuses": [
            {"name": container.get("name", ""), "ready": False, "restartCount": 0,
             "started": False, "image": container.get("image", ""), "imageID": "",
             "state": {"waiting": {"reason": "ContainerCreating"}}}
        ],
    }  # fmt: skip


def event(
    obj: JsonDict, reason: str, message: str, component: str, type_: str = "Warning"
) -> JsonDict:
    """A core/v1 Event about ``obj``, as a controller or the kubelet records it."""
    meta = obj["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta.get("namespace")},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion", "v1"),
            "kind": obj.get("kind", "Pod"),
            "name": meta["name"],
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
        },
        "reason": reason,
        "message": message,
        "type": type_,
        "source": {"component": component},
        "count": 1,
        "firstTimestamp": now(),
        "lastTimestamp": now(),
    }


class Scheduler:
    """The scheduler and the volume attach/mount checks for the stand-ins, through the API."""

    def __init__(self, api: K8sClient, failing_mounts: dict[str, str]) -> None:
        self.api = api
        self.failing_mounts = failing_mounts  # claim -> mount error (a test's hook)
        self._reported: dict[str, str] = {}  # pod uid -> what its status/events last said

    def register(self, names: list[str]) -> None:
        for name in names:
            try:
                self.api.create(node(name))
            except ApiStatusError as e:
                if e.status != 409:
                    raise

    def admit(self, pod: JsonDict, container: JsonDict) -> JsonDict | None:
        """``pod`` bound to its node if it can start now; else None, its status written."""
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        pods = self.api.list("v1/pods", ns)
        claims = {c["metadata"]["name"]: c for c in self.api.list("v1/persistentvolumeclaims", ns)}
        placement = schedule(pod, self.api.list("v1/nodes"), pods, claims)
        if placement.node is None:
            status = unschedulable_status(placement.message) if placement.message else None
            self._report(pod, f"unscheduled:{placement.message}", status, None)
            return None
        if pod["spec"].get("nodeName") != placement.node:
            pod = self.api.patch("v1/pods", ns, name, {"spec": {"nodeName": placement.node}})
        block = volume_blocker(pod, pods, claims, self.failing_mounts)
        if block is not None:
            ev = event(pod, block.reason, block.message,
                       "attachdetach-controller" if block.reason == "FailedAttachVolume"
                       else "kubelet")  # fmt: skip
            self._report(pod, f"blocked:{block.message}", container_creating_status(container), ev)
            return None
        self._reported.pop(pod["metadata"]["uid"], None)
        return pod

    def _report(
        self, pod: JsonDict, what: str, status: JsonDict | None, ev: JsonDict | None
    ) -> None:
        uid = pod["metadata"]["uid"]
        if self._reported.get(uid) == what:
            return
        self._reported[uid] = what
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        try:
            if status is not None:
                self.api.patch("v1/pods", ns, name, {"status": status}, subresource="status")
            if ev is not None:
                self.api.create(ev, ns)
        except ApiStatusError as e:
            if e.status != 404:
                raise
