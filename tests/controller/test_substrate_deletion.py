"""Deletion as on a cluster: finalizers keep objects Terminating; a namespace and a CRD wait for
their content and say why; ``terminating()`` lists what is stuck."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.kube.fixtures import K8sApi

REPO = Path(__file__).parents[2]
NS = "ns"
FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"


@pytest.fixture
def api(k8s_api: K8sApi) -> K8sApi:
    k8s_api.apply(REPO / "crds" / "redisbackup.yaml")
    k8s_api.create_namespace(NS)
    return k8s_api


def backup(name: str) -> dict[str, object]:
    return {"apiVersion": "backupctl.dev/v1alpha1", "kind": "RedisBackup",
            "metadata": {"name": name, "finalizers": [FINALIZER]},
            "spec": {"redisClusterName": "redis", "storage": {"s3": {"bucket": "b"}}}}  # fmt: skip


def test_a_namespace_waits_for_finalizers_of_its_content(api: K8sApi) -> None:
    api.create(backup("b"), NS)
    api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}, NS)
    api.delete("namespaces", None, NS)
    assert api.get("configmaps", NS, "c") is None  # content without finalizers goes at once
    ns = api.get("namespaces", None, NS)
    assert ns is not None and ns["status"]["phase"] == "Terminating"
    conditions = {c["type"]: c for c in ns["status"]["conditions"]}
    assert conditions["NamespaceContentRemaining"]["message"] == (
        "Some resources are remaining: redisbackups.backupctl.dev has 1 resource instances"
    )
    assert conditions["NamespaceFinalizersRemaining"]["message"] == (
        f"Some content in the namespace has finalizers remaining: {FINALIZER} in 1 resource "
        "instances"
    )
    assert api.terminating() == [
        f"namespaces/{NS} []",
        f"redisbackups.backupctl.dev/{NS}/b [{FINALIZER}]",
    ]
    api.patch("redisbackups", NS, "b", {"metadata": {"finalizers": []}})
    assert api.get("namespaces", None, NS) is None
    assert api.terminating() == []


def test_deleting_a_crd_waits_for_its_resources_finalizers(api: K8sApi) -> None:
    api.create(backup("b"), NS)
    crd = "redisbackups.backupctl.dev"
    api.delete("customresourcedefinitions", None, crd)
    assert f"customresourcedefinitions.apiextensions.k8s.io/{crd} " in " ".join(api.terminating())
    assert (api.get("redisbackups", NS, "b") or {})["metadata"].get("deletionTimestamp")
    api.patch("redisbackups", NS, "b", {"metadata": {"finalizers": []}})
    assert api.get("customresourcedefinitions", None, crd) is None
    assert api.terminating() == []
