"""The user a bgsave backup Job runs as when no manifest says (the API edge).

Why this exists: a bgsave backup Job reads the RDB from the Redis pod's
volume, which may be a 0700 directory owned by the user the image picked
(the official redis image's entrypoint steps down to uid 999; no
``runAsUser`` anywhere). The target's user then comes from the volume
itself: :func:`with_data_owner` runs a tiny probe Job
(:func:`backupctl.controller.manifests.probe_job`) once per data PVC, reads
the owner from its termination message, deletes it, and remembers the
answer for the daemon's life. While the probe runs the target counts as not
resolved yet (:class:`~backupctl.controller.topology.TargetError`
``ProbingDataOwner``, retried shortly), so the backup Job is never made with
the wrong user.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace

from backupctl.controller.backup.model import PROBING
from backupctl.controller.backup.state import Controller, Tracker
from backupctl.controller.identity import RootUser, RunAs, probe_owner, security_contexts
from backupctl.controller.jobs import FAILED, RUNNING
from backupctl.controller.kube import AlreadyExists
from backupctl.controller.leader_rules import with_job_shard
from backupctl.controller.manifests import (
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    TargetPod,
    label_value,
    owner_reference,
    probe_job,
)
from backupctl.controller.observe import job_view, pod_result
from backupctl.controller.schedule import bounded_name
from backupctl.controller.spec import GROUP_VERSION, BackupSpec
from backupctl.controller.topology import TargetError

LABEL_PROBE = "backupctl.dev/probe"


async def with_data_owner(
    controller: Controller,
    tracker: Tracker,
    spec: BackupSpec,
    pod: TargetPod,
    owner_uid: str,
) -> TargetPod:
    """``pod`` with a known, non-root user: its own, else its volume's owner
    (probed once). :class:`TargetError` while probing or when it cannot be."""
    run_as = pod.run_as
    if (run_as is None or not run_as.known) and pod.data_pvc:
        owner = tracker.owners.get(pod.data_pvc)
        if owner is None:
            owner = await _probe(controller, tracker, spec, pod, owner_uid)
            tracker.owners[pod.data_pvc] = owner
        pod = replace(pod, run_as=(run_as or RunAs()).with_owner(*owner))
    try:
        security_contexts(pod.run_as, pod.name)
    except RootUser as e:
        raise TargetError("RunsAsRoot", str(e)) from e
    return pod


async def _probe(
    controller: Controller,
    tracker: Tracker,
    spec: BackupSpec,
    pod: TargetPod,
    owner_uid: str,
) -> tuple[int, int]:
    kube, ns = controller.kube, tracker.namespace
    assert pod.data_pvc is not None
    name = bounded_name(tracker.name, "-probe", 52)
    found = await kube.get("batch", "v1", "jobs", ns, name)
    waiting = f"reading the owner of PersistentVolumeClaim {pod.data_pvc} to run as its user"
    if found is None:
        labels = {
            LABEL_NAME: "backupctl",
            LABEL_COMPONENT: "probe",
            LABEL_MANAGED_BY: "backupctl",
            LABEL_PROBE: label_value(tracker.name),
        }
        owner = owner_reference(GROUP_VERSION, "RedisBackup", tracker.name, owner_uid)
        manifest = probe_job(spec.job, name=name, namespace=ns, owner=owner, labels=labels,
                             pod=pod, image=controller.image)  # fmt: skip
        with contextlib.suppress(AlreadyExists):  # the last one is still going away
            await kube.create("batch", "v1", "jobs", ns, with_job_shard(manifest, controller.shard))
        raise TargetError(PROBING, waiting)
    view = job_view(found)
    if view.state == RUNNING:
        raise TargetError(PROBING, waiting)
    pods = await kube.list("", "v1", "pods", ns, f"job-name={name}")
    result = pod_result(pods)
    await kube.delete("batch", "v1", "jobs", ns, name)
    owner_ids = probe_owner(result) if view.state != FAILED else None
    if owner_ids is None:
        why = (result or {}).get("error") or view.message or "no owner reported"
        raise TargetError(
            "ProbeFailed", f"reading the owner of {pod.data_pvc} failed (Job {name}): {why}"
        )
    return owner_ids


__all__ = ["LABEL_PROBE", "with_data_owner"]
