"""The set-up the controller end-to-end tests share (tests/controller/test_*_e2e.py).

They all drive the real ``backupctl operator`` process against the API emulator with the
CRDs installed in namespace ``ns``; this module holds that set-up once, so the tests
differ only in what they show. Fixtures (registered for tests/controller by its
conftest.py; a module may still override one, e.g. to start the operator at once):

* ``api``: the emulator (``k8s_api``) with both CRDs and the namespace ``NS``;
* ``operator``: the operator process for ``NS``, not started (tests set its fake clock
  first), stopped at teardown (``BACKUPCTL_SHOW_OPERATOR_LOG=1`` prints its log);
* ``statefulsets``: the StatefulSet stand-in (pods as ``redis-server`` processes);
* ``bucket``: a fresh moto bucket, its credentials Secret ``aws`` and an AWS environment
  for the Jobs that reaches nothing but moto.

Helpers: :func:`wait` (bounded polling that shows the operator's log on timeout),
:func:`condition`, :func:`secret`, :func:`s3_storage`, :func:`redis_backup`,
:func:`backup_status`, :func:`backup_jobs`, :func:`job_done`, :func:`events`,
:func:`event_reasons`, and :func:`pod_statefulset` (a StatefulSet whose one pod is a
``redis-server`` the test started).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest

from support.kube.fixtures import K8sApi
from support.kube.kubelet import Kubelet
from support.kube.operator_process import Operator
from support.kube.statefulset_controller import StatefulSets
from support.object_stores import S3Emulator
from support.redis_servers import RedisServer

REPO = Path(__file__).resolve().parents[2]
NS = "ns"
T = TypeVar("T")


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def api(k8s_api: K8sApi) -> K8sApi:
    k8s_api.apply(REPO / "crds" / "redisbackup.yaml")
    k8s_api.apply(REPO / "crds" / "redisrestore.yaml")
    k8s_api.create_namespace(NS)
    return k8s_api


@pytest.fixture
def operator(api: K8sApi, tmp_path: Path) -> Iterator[Operator]:
    op = Operator(api, tmp_path, NS)
    try:
        yield op
    finally:
        op.stop()
        if os.environ.get("BACKUPCTL_SHOW_OPERATOR_LOG"):
            print(op.log(200_000))


@pytest.fixture
def statefulsets(api: K8sApi, kubelet: Kubelet, tmp_path: Path) -> Iterator[StatefulSets]:
    stand_in = StatefulSets(api, kubelet, tmp_path / "sts", namespace=NS).start()
    try:
        yield stand_in
    finally:
        stand_in.stop()
    assert not stand_in.errors, stand_in.errors


@pytest.fixture
def bucket(s3_server: S3Emulator, api: K8sApi, kubelet: Kubelet) -> Iterator[str]:
    """A fresh bucket, its credentials Secret, and an AWS env the Jobs cannot escape."""
    name = s3_server.new_bucket()
    secret(api, "aws", **{"access-key-id": "testing", "secret-access-key": "testing"})
    kubelet.base_env.update(
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    yield name
    s3_server.remove_bucket(name)


# --- helpers ----------------------------------------------------------------------------


def wait(
    op: Operator,
    cond: Callable[[], T | Literal[False] | None],
    timeout: float,
    what: str,
    context: Callable[[], Any] | None = None,
) -> T:
    """Poll ``cond`` (bounded); on timeout, show the operator's log and ``context()``."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n--- context ---\n{context()}" if context else ""
            raise AssertionError(
                f"timed out after {timeout}s: {what}{extra}\n--- operator log ---\n{op.log()}"
            )
        time.sleep(0.1)


def condition(st: dict[str, Any], type_: str) -> dict[str, Any]:
    """The status condition of that type ({} when there is none)."""
    return next((c for c in st.get("conditions") or [] if c["type"] == type_), {})


def secret(api: K8sApi, name: str, **data: str) -> None:
    api.create(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}, NS
    )


def s3_storage(
    s3: S3Emulator, bucket: str, creds: str = "s3-creds", **extra: Any
) -> dict[str, Any]:
    """A ``spec.storage`` for moto's ``bucket``, keys from the Secret ``creds``."""
    return {
        "s3": {
            "bucket": bucket,
            "region": "us-east-1",
            "endpoint": s3.endpoint,
            "accessKeyIdSecret": {"name": creds, "key": "access-key-id"},
            "secretAccessKeySecret": {"name": creds, "key": "secret-access-key"},
            **extra,
        }
    }


def redis_backup(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "backupctl.dev/v1alpha1",
        "kind": "RedisBackup",
        "metadata": {"name": name},
        "spec": spec,
    }


def backup_status(api: K8sApi, name: str) -> dict[str, Any]:
    """The status of RedisBackup ``name`` ({} before the controller wrote one)."""
    obj = api.get("redisbackups", NS, name) or {}
    return dict(obj.get("status") or {})


def backup_jobs(api: K8sApi, name: str, component: str = "backup") -> list[dict[str, Any]]:
    return api.list(
        "jobs", NS, labels=f"backupctl.dev/backup={name},app.kubernetes.io/component={component}"
    )


def job_done(api: K8sApi, job: str) -> dict[str, Any] | None:
    """The Job once it is Complete or Failed, else None."""
    obj = api.get("jobs", NS, job)
    conds = {c["type"] for c in ((obj or {}).get("status") or {}).get("conditions") or []}
    return obj if conds & {"Complete", "Failed"} else None


def events(api: K8sApi, name: str) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Events about ``name``."""
    return [
        (e["type"], e["reason"], e.get("message", ""))
        for e in api.list("events", NS)
        if e.get("involvedObject", {}).get("name") == name
    ]


def event_reasons(api: K8sApi, name: str) -> list[str]:
    return [
        str(e.get("reason"))
        for e in api.list("events", NS)
        if (e.get("involvedObject") or {}).get("name") == name
    ]


def pod_statefulset(api: K8sApi, name: str, server: RedisServer, *, node: str = "node-a") -> str:
    """A StatefulSet ``name`` with one ready pod ``<name>-0`` that is ``server``; returns
    the pod's data PVC name (map it with ``kubelet.volumes[claim] = server.dir``)."""
    container = {
        "name": "redis",
        "image": "redis:7",
        "ports": [{"name": "redis", "containerPort": server.port}],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    labels = {"app": name}
    sts = api.create(
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": name},
            "spec": {
                "serviceName": name,
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
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
        },
        NS,
    )
    claim = f"data-{name}-0"
    # As the official image's entrypoint does before it drops to uid 999: the data
    # directory belongs to 999, which the controller reads (no runAsUser is set).
    os.chown(server.dir, 999, 999)
    owner = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": name,
        "uid": sts["metadata"]["uid"],
        "controller": True,
    }
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"{name}-0", "labels": labels, "ownerReferences": [owner]},
            "spec": {
                "nodeName": node,
                "containers": [container],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
            },
        },
        NS,
    )
    api.patch(
        "pods",
        NS,
        f"{name}-0",
        {
            "status": {
                "phase": "Running",
                "podIP": "127.0.0.1",
                "hostIP": "127.0.0.1",
                "conditions": [{"type": "Ready", "status": "True"}],
            }
        },
        subresource="status",
    )
    return claim
