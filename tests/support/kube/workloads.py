"""Plain Job / Pod / StatefulSet manifests and waits, for tests of the substrate itself.

Why: the substrate's enforcement (users, mounts, scheduling, RBAC, admission) is shown with
plain workloads, independent of backupctl's controller; these builders keep those tests short.
"""

from __future__ import annotations

from typing import Any

from .api_client import K8sClient

JsonDict = dict[str, Any]


def job(name: str, command: list[str], **extra: Any) -> JsonDict:
    """A Job of one container ``main`` running ``command``; ``container=``/``pod=`` merge in."""
    container = {"name": "main", "image": "busybox", "command": command}
    container.update(extra.pop("container", {}))
    pod_spec = {"restartPolicy": "Never", "containers": [container], **extra.pop("pod", {})}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, **extra, "template": {"spec": pod_spec}},
    }


def finished(api: K8sClient, ns: str, name: str) -> JsonDict | None:
    """The Job once Complete or Failed, else None."""
    obj = api.get("jobs", ns, name)
    conds = {
        c["type"]
        for c in (obj or {}).get("status", {}).get("conditions") or []
        if c.get("status") == "True"
    }
    return obj if conds & {"Complete", "Failed"} else None


def succeeded(obj: JsonDict) -> bool:
    return any(
        c["type"] == "Complete" and c["status"] == "True"
        for c in obj.get("status", {}).get("conditions") or []
    )


def job_pods(api: K8sClient, ns: str, name: str) -> list[JsonDict]:
    return api.list("pods", ns, labels=f"job-name={name}")


def waiting(pod: JsonDict) -> JsonDict | None:
    """The first container's ``state.waiting`` (reason, message), if it is waiting."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
    result: JsonDict | None = (statuses[0].get("state") or {}).get("waiting")
    return result


def condition(obj: JsonDict, type_: str) -> JsonDict | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None


def statefulset(
    name: str,
    image: str = "redis:7",
    *,
    replicas: int = 1,
    pod_security: JsonDict | None = None,
    container_security: JsonDict | None = None,
    mount_path: str = "/data",
) -> JsonDict:
    """A StatefulSet of redis-server with a ``data`` claim template mounted at ``mount_path``."""
    container: JsonDict = {
        "name": "redis",
        "image": image,
        "ports": [{"name": "redis", "containerPort": 6379}],
        "volumeMounts": [{"name": "data", "mountPath": mount_path}],
    }
    if container_security:
        container["securityContext"] = container_security
    pod_spec: JsonDict = {"containers": [container]}
    if pod_security:
        pod_spec["securityContext"] = pod_security
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "serviceName": name,
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                }
            ],
        },
    }
