"""PodSecurity admission refuses pods in namespaces that enforce a level, with the plugin's
words; the Job and StatefulSet stand-ins then record FailedCreate and keep retrying."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.kube.api_client import ApiStatusError
from support.kube.fixtures import K8sApi
from support.kube.kubelet import Kubelet
from support.kube.pod_security import violations
from support.kube.statefulset_controller import StatefulSets
from support.kube.workloads import finished, job, statefulset, succeeded

NS = "secure"
HARDENED = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
POD_HARDENED = {"runAsNonRoot": True, "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"}}  # fmt: skip


@pytest.fixture
def api(k8s_api: K8sApi) -> K8sApi:
    k8s_api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": NS, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})  # fmt: skip
    return k8s_api


def pod(name: str, **spec: Any) -> dict[str, Any]:
    container = {"name": "c", "image": "busybox", "command": ["true"]}
    container.update(spec.pop("container", {}))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [container], **spec}}  # fmt: skip


def test_restricted_refuses_a_plain_pod_with_the_real_message(api: K8sApi) -> None:
    with pytest.raises(ApiStatusError) as e:
        api.create(pod("plain"), NS)
    assert e.value.status == 403
    assert e.value.message == (
        'pods "plain" is forbidden: violates PodSecurity "restricted:latest": '
        'allowPrivilegeEscalation != false (container "c" must set '
        "securityContext.allowPrivilegeEscalation=false), unrestricted capabilities "
        '(container "c" must set securityContext.capabilities.drop=["ALL"]), runAsNonRoot != '
        'true (pod or container "c" must set securityContext.runAsNonRoot=true), '
        'seccompProfile (pod or container "c" must set securityContext.seccompProfile.type to '
        '"RuntimeDefault" or "Localhost")'
    )
    api.create(pod("hardened", securityContext=POD_HARDENED,
                   container={"securityContext": HARDENED}), NS)  # fmt: skip
    api.create(pod("elsewhere"), "default")  # namespaces without the label admit anything


@pytest.mark.parametrize(
    ("spec", "level", "expected"),
    [
        ({"hostNetwork": True}, "baseline", ["host namespaces (hostNetwork=true)"]),
        ({"containers": [{"name": "c", "securityContext": {"privileged": True}}]}, "baseline",
         ['privileged (container "c" must not set securityContext.privileged=true)']),
        ({"volumes": [{"name": "h", "hostPath": {"path": "/"}}], "containers": []}, "baseline",
         ['hostPath volumes (volume "h")']),
        ({"containers": [{"name": "c", "securityContext": {**HARDENED, "runAsUser": 0,
                                                          "capabilities": {"drop": ["ALL"],
                                                                           "add": ["CHOWN"]}}}],
          "securityContext": {"runAsNonRoot": True,
                              "seccompProfile": {"type": "RuntimeDefault"}}}, "restricted",
         ['unrestricted capabilities (container "c" must not include "CHOWN" in '
          "securityContext.capabilities.add)",
          'runAsUser=0 (container "c" must not set runAsUser=0)']),
        ({"containers": [{"name": "c"}]}, "privileged", []),
    ],
)  # fmt: skip
def test_levels(spec: dict[str, Any], level: str, expected: list[str]) -> None:
    assert violations(spec, level) == expected


@pytest.fixture
def statefulsets(api: K8sApi, kubelet: Kubelet, tmp_path: Path) -> Iterator[StatefulSets]:
    stand_in = StatefulSets(api, kubelet, tmp_path / "sts", namespace=NS).start()
    try:
        yield stand_in
    finally:
        stand_in.stop()


def failed_creates(api: K8sApi, kind: str) -> list[str]:
    return [
        e["message"]
        for e in api.list("events", NS)
        if e["reason"] == "FailedCreate" and e["involvedObject"]["kind"] == kind
    ]


def test_workload_controllers_record_failed_create_and_retry(
    api: K8sApi, kubelet: Kubelet, statefulsets: StatefulSets
) -> None:
    api.create(job("plain", ["true"]), NS)
    messages = api.wait_for(lambda: failed_creates(api, "Job"), timeout=10)
    assert messages[0].startswith('Error creating: pods "plain-')
    assert 'is forbidden: violates PodSecurity "restricted:latest"' in messages[0]
    api.wait_for(lambda: len(failed_creates(api, "Job")) >= 2, timeout=10)  # it keeps trying
    assert api.list("pods", NS) == [] and not finished(api, NS, "plain")

    api.create(statefulset("redis"), NS)
    messages = api.wait_for(lambda: failed_creates(api, "StatefulSet"), timeout=10)
    assert messages[0].startswith("create Pod redis-0 in StatefulSet redis failed error: ")

    hardened = job("hardened", ["true"], container={"securityContext": HARDENED},
                   pod={"securityContext": POD_HARDENED})  # fmt: skip
    api.create(hardened, NS)
    done = api.wait_for(lambda: finished(api, NS, "hardened"), timeout=10)
    assert succeeded(done)
