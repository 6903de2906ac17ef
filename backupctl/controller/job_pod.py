"""The one hardened batch/v1 Job every manifest of the controller is built from (pure).

Why this exists: backups, prunes and every step of a restore differ in their
command, volumes and placement, but must agree on how they run: as a
non-root user (the Redis container's, for the Jobs that touch its volume:
:mod:`backupctl.controller.identity`), PodSecurity ``restricted``
compatible, with a deadline by kind (:mod:`backupctl.controller.job_limits`),
tolerating a cordoned node when pinned to one, the result in the termination
message. :mod:`backupctl.controller.manifests` builds each purpose's Job
with :func:`job`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backupctl.controller.identity import RunAs, security_contexts
from backupctl.controller.job_limits import deadline
from backupctl.controller.spec import JobOptions

TERMINATION_LOG = "/dev/termination-log"
DATA_DIR = "/data"
CONTAINER_NAME = "backupctl"

#: Used when the spec sets no resources: enough for streaming, and a cap.
DEFAULT_RESOURCES: Mapping[str, Any] = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"memory": "1Gi"},
}
#: Tolerated by every Job pinned to a node: a cordoned node still runs the
#: Job that must read or write the volume that lives there.
UNSCHEDULABLE_TOLERATION: Mapping[str, str] = {
    "key": "node.kubernetes.io/unschedulable",
    "operator": "Exists",
    "effect": "NoSchedule",
}


def job(
    *,
    name: str,
    namespace: str,
    owner: Mapping[str, Any] | None,
    labels: dict[str, str],
    annotations: dict[str, str],
    options: JobOptions,
    image: str,
    args: list[str],
    env: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    mounts: list[dict[str, Any]],
    affinity: dict[str, Any] | None,
    node_selector: Mapping[str, str],
    ttl_seconds_after_finished: int | None,
    kind: str,
    deadline_fallback: int | None = None,
    run_as: RunAs | None = None,
    run_as_of: str = "",
    command: list[str] | None = None,
) -> dict[str, Any]:
    """A Job running ``backupctl <args> --json --termination-log ...`` (or
    ``command`` as it is): non-root (as ``run_as`` when given; root refused
    with :class:`~backupctl.controller.identity.RootUser`, naming
    ``run_as_of``), read-only root filesystem, no capabilities, no service
    account token, a writable /tmp, ``activeDeadlineSeconds`` of ``kind``."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if annotations:
        metadata["annotations"] = dict(annotations)
    if owner is not None:
        metadata["ownerReferences"] = [dict(owner)]
    pod_security, container_security = security_contexts(run_as, run_as_of)
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(command) if command else ["backupctl"],
        "args": [] if command else [*args, "--json", "--termination-log", TERMINATION_LOG],
        "env": env,
        "resources": _resources(options.resources),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *mounts],
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "securityContext": container_security,
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security,
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}, *volumes],
    }
    if options.service_account_name:
        pod_spec["serviceAccountName"] = options.service_account_name
    if node_selector:
        pod_spec["nodeSelector"] = dict(node_selector)
    tolerations = [dict(t) for t in options.tolerations]
    if affinity is not None and dict(UNSCHEDULABLE_TOLERATION) not in tolerations:
        tolerations.append(dict(UNSCHEDULABLE_TOLERATION))
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if affinity is not None:
        pod_spec["affinity"] = affinity

    job_spec: dict[str, Any] = {
        "backoffLimit": options.backoff_limit,
        "activeDeadlineSeconds": deadline(kind, options.deadlines, deadline_fallback),
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
    }
    if ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = ttl_seconds_after_finished
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}


def data_mount(sub_path: str | None, *, read_only: bool) -> dict[str, Any]:
    """The data volume at ``/data`` (its ``subPath`` as in the Redis container)."""
    mount: dict[str, Any] = {"name": "data", "mountPath": DATA_DIR, "readOnly": read_only}
    if sub_path:
        mount["subPath"] = sub_path
    return mount


def pin_to_node(node_name: str) -> dict[str, Any]:
    """Required node affinity on the node's name (as DaemonSets do): exact,
    unlike the hostname label, and still goes through the scheduler."""
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
        }
    }


def _resources(resources: Mapping[str, Any]) -> dict[str, Any]:
    chosen = resources or DEFAULT_RESOURCES
    return {k: dict(v) for k, v in chosen.items()}


__all__ = [
    "CONTAINER_NAME",
    "DATA_DIR",
    "DEFAULT_RESOURCES",
    "TERMINATION_LOG",
    "UNSCHEDULABLE_TOLERATION",
    "data_mount",
    "job",
    "pin_to_node",
]
