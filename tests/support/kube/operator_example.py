"""A tiny kopf operator used only to prove the emulator and kubelet stand-in work with kopf.

For each ``Backup`` (the test CRD in ``testdata/backup-crd.yaml``) it creates one Job adopted
by the Backup (``kopf.adopt``), whose container writes ``{"ok":1}`` to its termination log;
when the Job succeeds it copies the Pod's termination message into the Backup's status.
Every handler call is appended to ``$EMU_OPERATOR_CALLS`` so a test can count re-runs.

Run: ``kopf run --standalone -n NS tests/support/kube/operator_example.py`` with ``KUBECONFIG`` set.
"""

from __future__ import annotations

import json
import os
from typing import Any

import kopf
import kubernetes


def _record(event: str, name: str) -> None:
    path = os.environ.get("EMU_OPERATOR_CALLS")
    if path:
        with open(path, "a") as f:
            f.write(f"{event} {name}\n")


def _client() -> kubernetes.client.ApiClient:
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(os.environ["KUBECONFIG"], client_configuration=config)
    return kubernetes.client.ApiClient(config)


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    return kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.watching.reconnect_backoff = 0.1
    settings.posting.level = 20  # INFO


@kopf.on.create("emu.backupctl.dev", "v1alpha1", "backups")
def create_job(
    name: str, namespace: str | None, body: kopf.Body, patch: kopf.Patch, **_: Any
) -> dict[str, str]:
    _record("create", name)
    assert namespace is not None  # Backups are namespaced
    job: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"{name}-job", "labels": {"emu-backup": name}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "main",
                            "image": "busybox",
                            "command": ["sh", "-c", """echo '{"ok":1}' > /dev/termination-log"""],
                        }
                    ],
                }
            },
        },
    }
    kopf.adopt(job, owner=body)
    with _client() as api:
        kubernetes.client.BatchV1Api(api).create_namespaced_job(
            namespace, kubernetes.client.V1Job.model_validate(job)
        )
    patch.status["phase"] = "Running"
    return {"job": job["metadata"]["name"]}


@kopf.on.field("batch", "v1", "jobs", field="status.succeeded", labels={"emu-backup": kopf.PRESENT})
def job_succeeded(
    name: str, namespace: str | None, labels: kopf.Labels, new: Any, **_: Any
) -> None:
    if not new:
        return
    assert namespace is not None  # Jobs are namespaced
    _record("succeeded", name)
    with _client() as api:
        pods = kubernetes.client.CoreV1Api(api).list_namespaced_pod(
            namespace, label_selector=f"job-name={name}"
        )
        messages: list[str | None] = []
        for pod in pods.items:
            assert pod.status is not None
            for cs in pod.status.container_statuses or []:
                assert cs.state is not None
                if cs.state.terminated:
                    messages.append(cs.state.terminated.message)
        result = None
        if messages:
            last = messages[-1]
            assert last is not None  # the container always writes its termination log
            result = json.loads(last)
        kubernetes.client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
            "emu.backupctl.dev",
            "v1alpha1",
            namespace,
            "backups",
            labels["emu-backup"],
            {"status": {"phase": "Completed", "result": result}},
        )


@kopf.on.delete("emu.backupctl.dev", "v1alpha1", "backups")
def delete(name: str, **_: Any) -> None:
    _record("delete", name)
