"""Defaulting and validation of the built-in kinds the tests use (Secret, Namespace, Pod, Job).

Why: kube-apiserver completes built-in objects on create (a Job's selector and pod labels,
``backoffLimit``, a container's ``terminationMessagePath``, a Secret's ``stringData`` folded into
``data``) and refuses some invalid ones (a Job's ``restartPolicy``); controllers and the
kubelet stand-in read those fields. Built-in schemas are not emulated beyond this. The
admission check is :func:`default_and_validate`; one function per kind, found by storage key.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

from . import schema
from .admission import Write
from .errors import JsonDict, invalid
from .resources import JOBS, NAMESPACES, PODS, SECRETS, ResourceType, StorageKey


def default_and_validate(write: Write) -> list[str]:
    """The admission check: defaults (and validates) a built-in object when it is created."""
    if write.old is not None or write.rt.schema is not None:
        return []
    defaulter = DEFAULTERS.get(write.rt.storage_key)
    if defaulter is not None:
        defaulter(write.rt, write.obj)
    return []


def default_secret(rt: ResourceType, obj: JsonDict) -> None:
    data = dict(obj.get("data") or {})
    for key, value in (obj.pop("stringData", None) or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    if data:
        obj["data"] = data
    obj.setdefault("type", "Opaque")


def default_namespace(rt: ResourceType, obj: JsonDict) -> None:
    obj.setdefault("spec", {"finalizers": ["kubernetes"]})
    obj["status"] = {"phase": "Active"}


def default_pod(rt: ResourceType, obj: JsonDict) -> None:
    default_pod_spec(obj.setdefault("spec", {}))
    obj.setdefault("status", {"phase": "Pending"})


def default_job(rt: ResourceType, obj: JsonDict) -> None:
    meta = obj["metadata"]
    spec = obj.setdefault("spec", {})
    uid, name = meta["uid"], meta["name"]
    template = spec.setdefault("template", {})
    labels = template.setdefault("metadata", {}).setdefault("labels", {})
    if not spec.get("manualSelector"):
        labels.update(
            {
                "batch.kubernetes.io/controller-uid": uid,
                "controller-uid": uid,
                "batch.kubernetes.io/job-name": name,
                "job-name": name,
            }
        )
        spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
    for key, value in (
        ("backoffLimit", 6),
        ("completions", 1),
        ("parallelism", 1),
        ("completionMode", "NonIndexed"),
        ("suspend", False),
        ("podReplacementPolicy", "TerminatingOrFailed"),
    ):
        spec.setdefault(key, value)
    pod_spec = template.setdefault("spec", {})
    default_pod_spec(pod_spec)
    errors: list[schema.FieldError] = []
    if pod_spec.get("restartPolicy") not in ("Never", "OnFailure"):
        errors.append(
            schema.FieldError(
                "Required" if not pod_spec.get("restartPolicy") else "NotSupported",
                "spec.template.spec.restartPolicy",
                pod_spec.get("restartPolicy"),
                'supported values: "OnFailure", "Never"',
            )
        )
    if not pod_spec.get("containers"):
        errors.append(schema.FieldError("Required", "spec.template.spec.containers"))
    for i, container in enumerate(pod_spec.get("containers") or []):
        for req in ("name", "image"):
            if not container.get(req):
                errors.append(
                    schema.FieldError("Required", f"spec.template.spec.containers[{i}].{req}")
                )
    if errors:
        raise invalid(rt, name, errors)


def default_pod_spec(pod_spec: JsonDict) -> None:
    for container in pod_spec.get("containers") or []:
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("imagePullPolicy", "IfNotPresent")
    pod_spec.setdefault("restartPolicy", "Always")
    pod_spec.setdefault("dnsPolicy", "ClusterFirst")
    pod_spec.setdefault("terminationGracePeriodSeconds", 30)
    pod_spec.setdefault("schedulerName", "default-scheduler")


DEFAULTERS: dict[StorageKey, Callable[[ResourceType, JsonDict], None]] = {
    SECRETS: default_secret,
    NAMESPACES: default_namespace,
    PODS: default_pod,
    JOBS: default_job,
}
