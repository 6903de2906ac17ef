"""Pods stay Pending where a real scheduler would not place them, and ContainerCreating
where volumes cannot attach or mount, with the scheduler's and the kubelet's own words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from support.kube.fixtures import K8sApi
from support.kube.kubelet import Kubelet
from support.kube.workloads import condition, finished, job, job_pods, succeeded, waiting

NS = "ns"


@pytest.fixture
def api(k8s_api: K8sApi) -> K8sApi:
    k8s_api.create_namespace(NS)
    return k8s_api


def pinned(name: str, node: str, **pod: Any) -> dict[str, Any]:
    term = {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In",
                                  "values": [node]}]}  # fmt: skip
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                                 {"nodeSelectorTerms": [term]}}}  # fmt: skip
    return job(name, ["true"], pod={"affinity": affinity, **pod})


def pod_of(api: K8sApi, name: str) -> dict[str, Any]:
    pods = api.wait_for(lambda: job_pods(api, NS, name), message=f"pod of {name}")
    return pods[0]


def unschedulable(api: K8sApi, name: str) -> str:
    def message() -> str | None:
        pods = job_pods(api, NS, name)
        cond = condition(pods[0], "PodScheduled") if pods else None
        if cond and cond["status"] == "False" and cond["reason"] == "Unschedulable":
            return str(cond["message"])
        return None

    return api.wait_for(message, timeout=10, message=f"{name} unschedulable")


def test_nodes_are_registered_and_a_job_runs_on_a_matching_one(
    api: K8sApi, kubelet: Kubelet
) -> None:
    names = [n["metadata"]["name"] for n in api.list("nodes")]
    assert set(kubelet.nodes) <= set(names)
    api.create(pinned("on-b", "node-b"), NS)
    done = api.wait_for(lambda: finished(api, NS, "on-b"), timeout=10, message="on-b")
    assert succeeded(done)
    assert job_pods(api, NS, "on-b")[0]["spec"]["nodeName"] == "node-b"


def test_cordoned_missing_and_tainted_nodes_leave_pods_unschedulable(
    api: K8sApi, kubelet: Kubelet
) -> None:
    api.patch("nodes", None, "node-a", {"spec": {"unschedulable": True}})
    api.create(pinned("cordoned", "node-a"), NS)
    message = unschedulable(api, "cordoned")
    assert message.startswith("0/3 nodes are available: ")
    assert "1 node(s) were unschedulable" in message
    assert "2 node(s) didn't match Pod's node affinity/selector" in message

    tolerated = [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists",
                  "effect": "NoSchedule"}]  # fmt: skip
    api.create(pinned("tolerant", "node-a", tolerations=tolerated), NS)
    assert succeeded(api.wait_for(lambda: finished(api, NS, "tolerant"), timeout=10))

    api.patch("nodes", None, "node-a", {"spec": {"unschedulable": False}})  # uncordon: it runs
    assert succeeded(api.wait_for(lambda: finished(api, NS, "cordoned"), timeout=10))

    taint = {"key": "dedicated", "value": "db", "effect": "NoSchedule"}
    api.patch("nodes", None, "node-b", {"spec": {"taints": [taint]}})
    api.create(pinned("tainted", "node-b"), NS)
    assert "1 node(s) had untolerated taint {dedicated: db}" in unschedulable(api, "tainted")

    api.delete("nodes", None, "node-b")
    api.create(pinned("gone", "node-b"), NS)
    assert unschedulable(api, "gone").startswith(
        "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
    )


def test_node_name_bypasses_the_scheduler(api: K8sApi, kubelet: Kubelet) -> None:
    api.patch("nodes", None, "node-a", {"spec": {"unschedulable": True}})
    api.create(job("direct", ["true"], pod={"nodeName": "node-a"}), NS)
    assert succeeded(api.wait_for(lambda: finished(api, NS, "direct"), timeout=10))

    api.create(job("nowhere", ["true"], pod={"nodeName": "node-x"}), NS)
    api.create(job("marker", ["true"]), NS)  # a later Job runs: the kubelet did look
    api.wait_for(lambda: finished(api, NS, "marker"), timeout=10)
    pod = pod_of(api, "nowhere")
    assert (pod.get("status") or {}).get("phase") == "Pending"
    assert not (pod.get("status") or {}).get("conditions")
    assert not finished(api, NS, "nowhere")


def claim(name: str, mode: str) -> dict[str, Any]:
    spec = {"accessModes": [mode], "resources": {"requests": {"storage": "1Gi"}}}
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
            "spec": spec}  # fmt: skip


def holder(name: str, claim_name: str, node: str) -> dict[str, Any]:
    """A running pod using the claim (as a Redis pod would)."""
    spec = {"nodeName": node, "containers": [{"name": "c", "image": "redis:7"}], **uses(claim_name)}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def uses(claim_name: str) -> dict[str, Any]:
    return {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim_name}}]}


def events(api: K8sApi, reason: str) -> list[str]:
    return [e["message"] for e in api.list("events", NS) if e.get("reason") == reason]


def test_claims_in_use_block_other_pods(api: K8sApi, kubelet: Kubelet, tmp_path: Path) -> None:
    for name in ("rwop", "rwo", "broken"):
        kubelet.volumes[name] = tmp_path / name
        (tmp_path / name).mkdir()
    api.create(claim("rwop", "ReadWriteOncePod"), NS)
    api.create(claim("rwo", "ReadWriteOnce"), NS)
    api.create(claim("broken", "ReadWriteOnce"), NS)
    for pod in (holder("redis-0", "rwop", "node-a"), holder("redis-1", "rwo", "node-a")):
        api.create(pod, NS)
        api.patch("pods", NS, pod["metadata"]["name"], {"status": {"phase": "Running"}},
                  subresource="status")  # fmt: skip

    api.create(job("second", ["true"], pod=uses("rwop")), NS)
    assert unschedulable(api, "second").startswith(
        "0/3 nodes are available: 3 node has pod using PersistentVolumeClaim with the same "
        "name and ReadWriteOncePod access mode."
    )

    api.create(job("elsewhere", ["true"], pod={"nodeName": "node-b", **uses("rwo")}), NS)
    multi = api.wait_for(lambda: events(api, "FailedAttachVolume"), timeout=10)
    assert multi == ['Multi-Attach error for volume "rwo" Volume is already used by pod(s) redis-1']
    assert (waiting(pod_of(api, "elsewhere")) or {}).get("reason") == "ContainerCreating"

    api.create(job("same-node", ["true"], pod={"nodeName": "node-a", **uses("rwo")}), NS)
    assert succeeded(api.wait_for(lambda: finished(api, NS, "same-node"), timeout=10))

    kubelet.failing_mounts["broken"] = "mount failed: exit status 32"
    api.create(job("unmountable", ["true"], pod=uses("broken")), NS)
    failed = api.wait_for(lambda: events(api, "FailedMount"), timeout=10)
    assert failed == ['MountVolume.SetUp failed for volume "d" : mount failed: exit status 32']
    assert (waiting(pod_of(api, "unmountable")) or {}).get("reason") == "ContainerCreating"
    assert kubelet.runs("unmountable", NS)[0].process is None
