"""Tokens authenticate users; with enforcement on, RBAC and OwnerReferencesPermissionEnforcement
refuse what a real API server refuses, with its words; the default kubeconfig stays admin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from support.kube.api_client import ApiStatusError, K8sClient
from support.kube.fixtures import K8sApi
from support.kube.workloads import job

REPO = Path(__file__).parents[2]
NS = "ns"
SA = "system:serviceaccount:ns:bot"


@pytest.fixture
def api(k8s_api: K8sApi) -> K8sApi:
    k8s_api.apply(REPO / "crds" / "redisbackup.yaml")
    k8s_api.create_namespace(NS)
    k8s_api.enforce_rbac()
    return k8s_api


def refusal(call: Any) -> tuple[int, str]:
    with pytest.raises(ApiStatusError) as e:
        call()
    return e.value.status, e.value.message


def role(name: str, rules: list[dict[str, Any]], cluster: bool = False) -> dict[str, Any]:
    kind = "ClusterRole" if cluster else "Role"
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
            "metadata": {"name": name}, "rules": rules}  # fmt: skip


def binding(name: str, role_name: str, role_kind: str = "Role") -> dict[str, Any]:
    kind = "ClusterRoleBinding" if role_kind == "ClusterRole" and name.startswith("c-") else (
        "RoleBinding")  # fmt: skip
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind,
                        "name": role_name},
            "subjects": [{"kind": "ServiceAccount", "name": "bot", "namespace": NS}]}  # fmt: skip


def test_a_service_account_without_rules_is_refused_with_the_real_message(api: K8sApi) -> None:
    bot = api.client_for(NS, "bot")
    assert refusal(lambda: bot.create(job("j", ["true"]), NS)) == (
        403,
        f'jobs.batch is forbidden: User "{SA}" cannot create resource "jobs" in API group '
        f'"batch" in the namespace "{NS}"',
    )
    assert refusal(lambda: bot.get("pods", NS, "p"))[1] == (
        f'pods "p" is forbidden: User "{SA}" cannot get resource "pods" in API group "" '
        f'in the namespace "{NS}"'
    )
    assert refusal(lambda: bot.list("nodes"))[1].endswith("at the cluster scope")
    assert refusal(lambda: K8sClient(api.url, token="nope").list("pods", NS))[0] == 401
    assert api.list("jobs", NS) == []  # the admin kubeconfig is unaffected


def test_roles_grant_verbs_subresources_and_resource_names(api: K8sApi) -> None:
    api.create(role("jobs", [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"],
         "resourceNames": ["allowed"]},
    ]), NS)  # fmt: skip
    api.create(binding("jobs", "jobs"), NS)
    bot = api.client_for(NS, "bot")
    bot.create(job("j", ["true"]), NS)
    assert bot.get("jobs", NS, "j") is not None
    status, message = refusal(
        lambda: bot.patch("jobs", NS, "j", {"status": {"active": 1}}, subresource="status")
    )
    assert status == 403 and 'cannot patch resource "jobs/status"' in message
    for name in ("allowed", "other"):
        api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}, NS)
    assert bot.get("configmaps", NS, "allowed") is not None
    assert refusal(lambda: bot.get("configmaps", NS, "other"))[0] == 403
    assert refusal(lambda: bot.list("configmaps", NS))[0] == 403
    assert refusal(lambda: bot.create(job("k", ["true"]), "default"))[0] == 403  # other ns

    api.create(role("all", [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}], True))
    api.create(binding("c-all", "all", "ClusterRole"))
    assert bot.list("nodes") is not None and bot.list("configmaps", "default") is not None


def owned_job(name: str, owner: dict[str, Any]) -> dict[str, Any]:
    manifest = job(name, ["true"])
    manifest["metadata"]["ownerReferences"] = [{
        "apiVersion": "backupctl.dev/v1alpha1", "kind": "RedisBackup",
        "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
        "controller": True, "blockOwnerDeletion": True}]  # fmt: skip
    return manifest


def test_block_owner_deletion_needs_update_on_the_owners_finalizers(api: K8sApi) -> None:
    backup = api.create({"apiVersion": "backupctl.dev/v1alpha1", "kind": "RedisBackup",
                         "metadata": {"name": "b"},
                         "spec": {"redisClusterName": "redis",
                                  "storage": {"s3": {"bucket": "b"}}}}, NS)  # fmt: skip
    api.create(role("jobs", [
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "delete"]},
        {"apiGroups": ["backupctl.dev"], "resources": ["redisbackups"],
         "verbs": ["get", "update", "patch"]},
    ]), NS)  # fmt: skip
    api.create(binding("jobs", "jobs"), NS)
    bot = api.client_for(NS, "bot")
    status, message = refusal(lambda: bot.create(owned_job("j", backup), NS))
    assert (status, message) == (
        403,
        'jobs.batch "j" is forbidden: cannot set blockOwnerDeletion if an ownerReference refers '
        f'to a resource you can\'t set finalizers on: User "{SA}" cannot update resource '
        f'"redisbackups/finalizers" in API group "backupctl.dev" in the namespace "{NS}", <nil>',
    )
    api.create(role("finalizers", [{"apiGroups": ["backupctl.dev"],
                                    "resources": ["redisbackups/finalizers"],
                                    "verbs": ["update"]}]), NS)  # fmt: skip
    api.create(binding("finalizers", "finalizers"), NS)
    created = bot.create(owned_job("j", backup), NS)
    assert created["metadata"]["ownerReferences"][0]["uid"] == backup["metadata"]["uid"]


def test_the_controllers_rbac_loads_from_the_kustomization(api: K8sApi) -> None:
    api.load_rbac(REPO / "manifests")
    controller = api.client_for("backupctl-system", "backupctl-controller")
    assert controller.list("redisbackups", NS) == []
    assert refusal(lambda: controller.list("secrets", NS))[0] == 403
