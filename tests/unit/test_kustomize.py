"""The installs users apply, built as ``kubectl kustomize`` builds them.

- the cluster-wide install (``manifests/``) and the namespace-scoped one
  (``manifests/namespaced/``, which adds the namespaced and networkpolicy
  components) build, and every object in them validates against the schemas of
  Kubernetes 1.29, 1.30, 1.31 and 1.32 (CRDs as apiextensions.k8s.io/v1
  objects); every custom resource in examples/ validates against its CRD's
  openAPIV3Schema (unknown fields refused, as kubectl's strict field
  validation does);
- the controller's RBAC is exactly what it uses: every API call in
  backupctl/controller (and what kopf does for the handlers registered) is
  granted, nothing else is; ``update`` on both ``/finalizers`` subresources
  (Jobs carry ``blockOwnerDeletion: true``);
- the namespace-scoped install grants nothing but kopf's read-only discovery
  cluster-wide, and a Role + RoleBinding for each namespace it is told to watch;
- the NetworkPolicy opens only the ports the controller listens on;
- high availability (issue 15): every install runs its controllers with
  ``--leader-elect``, 2 replicas spread over nodes, a PodDisruptionBudget each,
  and a Role in the controller's namespace granting exactly the Lease calls;
  the sharded install (``manifests/sharded/``) has one controller per shard,
  identical apart from name, instance label and ``--shard``, with disjoint selectors.

kubectl comes from the bootstrap (scripts/bootstrap.sh); without it these tests
fail, they never skip.
"""

from __future__ import annotations

import ast
import functools
import importlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
#: The Kubernetes versions the installs are checked against (issue 14).
K8S_VERSIONS = ["1.29.0", "1.30.0", "1.31.0", "1.32.0"]
INSTALLS = {
    "cluster-wide": "manifests",
    "namespaced": "manifests/namespaced",
    "sharded": "manifests/sharded",
}
API_GROUP = "backupctl.dev"
SA = "backupctl-controller"
LEASES = ("coordination.k8s.io", "leases")
LEADER_ROLE = "backupctl-leader-election"
OWNERS = ("redisbackups", "redisrestores")  # the resources whose Jobs carry ownerReferences

Grant = tuple[str, str, str]  # (apiGroup, resource, verb)


def kubectl() -> str:
    path = shutil.which("kubectl")
    assert path, "kubectl is not installed: run scripts/bootstrap.sh (it installs kubectl)"
    return path


@functools.cache
def build(install: str) -> tuple[dict[str, Any], ...]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(ROOT / INSTALLS[install])],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d)


def objects(install: str, kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        d
        for d in build(install)
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def grants(role: dict[str, Any]) -> set[Grant]:
    return {
        (g, r, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def controller_container(install: str) -> dict[str, Any]:
    (dep,) = objects(install, "Deployment", "backupctl-controller")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return c  # type: ignore[no-any-return]


# --- builds and validates -------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("install", INSTALLS)
def test_install_builds_and_every_object_validates(install: str, version: str) -> None:
    docs = build(install)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("CustomResourceDefinition") == 2
    assert {"Namespace", "ServiceAccount", "ClusterRole", "Deployment", "Service"} <= set(kinds)
    for doc in docs:
        # strict: unknown fields are errors (kubectl apply's field validation)
        kubernetes_validate.validate(doc, version, strict=True)


def test_kubernetes_validate_has_every_version_checked() -> None:
    known = set(kubernetes_validate.utils.all_versions())
    assert set(K8S_VERSIONS) <= known


def _to_json_schema(node: Any) -> Any:
    """openAPIV3Schema -> JSON Schema, unknown fields refused, x-kubernetes-* dropped."""
    if isinstance(node, list):
        return [_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {
        k: (v if k in ("enum", "default", "required") else _to_json_schema(v))
        for k, v in node.items()
        if not k.startswith("x-kubernetes-")
    }
    open_ended = "additionalProperties" in node or node.get("x-kubernetes-preserve-unknown-fields")
    if node.get("properties") and not open_ended:
        out["additionalProperties"] = False
    return out


def _examples() -> Iterator[dict[str, Any]]:
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["apiVersion"].startswith(API_GROUP + "/"):
                yield doc


def test_every_example_custom_resource_validates_against_its_crd() -> None:
    crd_docs = objects("cluster-wide", "CustomResourceDefinition")
    crds = {d["spec"]["names"]["kind"]: d for d in crd_docs}
    seen = 0
    for doc in _examples():
        crd = crds[doc["kind"]]
        (version,) = [v for v in crd["spec"]["versions"] if v["served"] and v["storage"]]
        assert doc["apiVersion"] == f"{API_GROUP}/{version['name']}"
        schema = _to_json_schema(version["schema"]["openAPIV3Schema"])
        body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
        errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(body)]
        assert errors == [], f"{doc['kind']}/{doc['metadata']['name']}: {errors}"
        seen += 1
    assert seen >= 2


# --- RBAC: exactly what the controller uses ---------------------------------------------

KUBE_VERBS = {
    "get": "get",
    "list": "list",
    "create": "create",
    "delete": "delete",
    "delete_instance": "delete",
    "patch": "patch",
    "patch_status": "patch",
}


def _controller_modules() -> Iterator[str]:
    for path in sorted((ROOT / "backupctl" / "controller").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        yield ".".join(rel.parts)


def api_calls() -> set[Grant]:
    """(group, resource, verb) of every ``kube.<method>(group, version, plural, ...)``
    call in backupctl/controller, its arguments resolved from the module's names;
    the one call whose arguments are variables (targets.py's operator resources)
    stands for every row of OPERATOR_RESOURCES."""
    from backupctl.controller.targets import OPERATOR_RESOURCES

    found: set[Grant] = set()
    for name in _controller_modules():
        module = importlib.import_module(name)
        tree = ast.parse(Path(module.__file__ or "").read_text())
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in KUBE_VERBS
                and ast.unparse(node.func.value).split(".")[-1] == "kube"
            ):
                continue
            verb = KUBE_VERBS[node.func.attr]
            names = [a.id if isinstance(a, ast.Name) else None for a in node.args[:3]]
            if names[0] is not None and not hasattr(module, names[0]):
                assert name == "backupctl.controller.targets", ast.unparse(node)
                found |= {(g, p, verb) for g, _, p in OPERATOR_RESOURCES.values()}
                continue
            group, _, plural = (
                str(getattr(module, n) if n else ast.literal_eval(a))
                for n, a in zip(names, node.args[:3], strict=True)
            )
            resource = f"{plural}/status" if node.func.attr == "patch_status" else plural
            found.add((group, resource, verb))
    return found


def kopf_needs() -> set[Grant]:
    """What kopf itself does for the handlers backupctl registers: list+watch of every
    resource it watches, patch of those it keeps a finalizer/progress on (daemons),
    Events (kopf.event), and CRD observation."""
    import kopf

    import backupctl.controller.app  # noqa: F401  (registers every handler)

    registry = kopf.get_default_registry()
    crds = ("apiextensions.k8s.io", "customresourcedefinitions")
    needs: set[Grant] = {(*crds, "list"), (*crds, "watch")}
    needs.add(("", "events", "create"))
    for group in (registry._indexing, registry._watching, registry._spawning, registry._changing):
        for handler in group.get_all_handlers():
            sel = handler.selector
            assert sel is not None and sel.group is not None
            plural = str(sel.plural or sel.any_name)
            assert plural, sel
            needs |= {(sel.group, plural, "list"), (sel.group, plural, "watch")}
    for handler in registry._spawning.get_all_handlers():
        sel = handler.selector
        assert sel is not None and sel.group is not None
        plural = str(sel.plural or sel.any_name)
        assert plural, sel
        needs.add((sel.group, plural, "patch"))  # its finalizer and annotations
    return needs


def expected_cluster_role() -> set[Grant]:
    finalizers = {(API_GROUP, f"{p}/finalizers", "update") for p in OWNERS}
    return {g for g in api_calls() | kopf_needs() | finalizers if g[:2] != LEASES}


def namespaced_roles(install: str) -> list[dict[str, Any]]:
    """The Roles of watched namespaces (not the controller's own leader-election Role)."""
    return [r for r in objects(install, "Role") if r["metadata"]["name"] != LEADER_ROLE]


@pytest.mark.parametrize("install", INSTALLS)
def test_leases_are_granted_in_the_controllers_namespace_only(install: str) -> None:
    lease_calls = {g for g in api_calls() if g[:2] == LEASES}
    assert {v for _, _, v in lease_calls} == {"get", "create", "patch"}
    (role,) = objects(install, "Role", LEADER_ROLE)
    (binding,) = objects(install, "RoleBinding", LEADER_ROLE)
    (sa,) = objects(install, "ServiceAccount", SA)
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"]
    assert role["metadata"]["namespace"] == sa["metadata"]["namespace"]
    assert grants(role) == lease_calls
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": SA, "namespace": sa["metadata"]["namespace"]}
    ]
    for cluster_role in objects(install, "ClusterRole"):
        assert not {g for g in grants(cluster_role) if g[:2] == LEASES}


def test_cluster_role_grants_exactly_what_the_controller_uses() -> None:
    (role,) = objects("cluster-wide", "ClusterRole", "backupctl-controller")
    granted = grants(role)
    expected = expected_cluster_role()
    assert expected - granted == set(), "used by the controller but not granted"
    assert granted - expected == set(), "granted but used by nothing (drop it)"


def test_jobs_can_carry_block_owner_deletion() -> None:
    """OwnerReferencesPermissionEnforcement (OpenShift): creating a Job whose
    ownerReference has blockOwnerDeletion needs update on the owner's finalizers."""
    for install, kind, name in [
        ("cluster-wide", "ClusterRole", "backupctl-controller"),
        ("namespaced", "Role", "backupctl-controller"),
    ]:
        (role,) = objects(install, kind, name)
        for plural in OWNERS:
            assert (API_GROUP, f"{plural}/finalizers", "update") in grants(role), (install, plural)


def test_no_role_reads_secrets_or_uses_wildcards() -> None:
    for install in INSTALLS:
        for doc in build(install):
            if doc["kind"] in ("ClusterRole", "Role"):
                for g, r, v in grants(doc):
                    assert "*" not in (g, r, v), doc["metadata"]["name"]
                    assert (g, r) != ("", "secrets"), doc["metadata"]["name"]


# --- the namespace-scoped install --------------------------------------------------------


def watched_namespaces(install: str) -> list[str]:
    args = controller_container(install)["args"]
    assert args[0] == "operator"
    return [a.removeprefix("--namespace=") for a in args if a.startswith("--namespace=")]


def test_namespaced_install_writes_only_in_the_namespaces_it_watches() -> None:
    args = controller_container("namespaced")["args"]
    assert "--all-namespaces" not in args
    watched = watched_namespaces("namespaced")
    assert watched
    # Cluster-wide: only kopf's read-only discovery of CRDs and namespaces.
    (cluster_role,) = objects("namespaced", "ClusterRole", "backupctl-controller")
    assert grants(cluster_role) == {
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
        ("", "namespaces", "list"),
        ("", "namespaces", "watch"),
    }
    # A Role + RoleBinding per watched namespace, for the controller's ServiceAccount,
    # with the cluster-wide install's namespaced rules (all of them, no more).
    roles = {r["metadata"]["namespace"]: r for r in namespaced_roles("namespaced")}
    bindings = {
        b["metadata"]["namespace"]: b
        for b in objects("namespaced", "RoleBinding")
        if b["metadata"]["name"] != LEADER_ROLE
    }
    assert set(roles) == set(bindings) == set(watched)
    wide = {g for g in expected_cluster_role() if g[0] != "apiextensions.k8s.io"}
    for ns in watched:
        assert grants(roles[ns]) == wide, ns
        binding = bindings[ns]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": roles[ns]["metadata"]["name"],
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": SA, "namespace": "backupctl-system"}
        ]


def test_cluster_wide_install_watches_every_namespace() -> None:
    assert controller_container("cluster-wide")["args"][:2] == ["operator", "--all-namespaces"]
    assert not namespaced_roles("cluster-wide") and not objects("cluster-wide", "NetworkPolicy")


@pytest.mark.parametrize("install", INSTALLS)
def test_job_image_follows_the_controller_image(install: str) -> None:
    c = controller_container(install)
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["BACKUPCTL_IMAGE"] == c["image"]


# --- addresses and the NetworkPolicy -----------------------------------------------------


def _flag(args: list[str], name: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    return value


@pytest.mark.parametrize("install", INSTALLS)
def test_probes_and_prometheus_reach_the_ports_the_controller_binds(install: str) -> None:
    """The kubelet probes and Prometheus connect to the pod IP: health and metrics
    listen on the pod's addresses, on the ports the probes and the Service use."""
    c = controller_container(install)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert _flag(c["args"], "liveness") == f"http://0.0.0.0:{ports['health']}/healthz"
    assert _flag(c["args"], "metrics-port") == str(ports["metrics"])
    assert _flag(c["args"], "metrics-address") == "0.0.0.0"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    (svc,) = objects(install, "Service", "backupctl-metrics")
    assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["metrics"]


def test_network_policy_admits_only_health_and_metrics_and_reaches_only_api_and_dns() -> None:
    (policy,) = objects("namespaced", "NetworkPolicy")
    (dep,) = objects("namespaced", "Deployment", "backupctl-controller")
    spec = policy["spec"]
    assert policy["metadata"]["namespace"] == dep["metadata"]["namespace"]
    assert spec["podSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    c = controller_container("namespaced")
    listening = {p["containerPort"] for p in c["ports"]}
    (ingress,) = spec["ingress"]
    assert {p["port"] for p in ingress["ports"]} == listening == {8080, 9090}
    egress_ports = {(p["protocol"], p["port"]) for rule in spec["egress"] for p in rule["ports"]}
    assert egress_ports == {("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 6443)}


# --- high availability and sharding (issue 15) -------------------------------------------


def controllers(install: str) -> list[dict[str, Any]]:
    return [d for d in objects(install, "Deployment") if d["metadata"]["name"].startswith(SA)]


@pytest.mark.parametrize("install", INSTALLS)
def test_every_controller_elects_a_leader_and_survives_a_node_drain(install: str) -> None:
    deployments = controllers(install)
    pdbs = objects(install, "PodDisruptionBudget")
    assert len(pdbs) == len(deployments) >= 1
    for dep in deployments:
        spec = dep["spec"]
        pod = spec["template"]["spec"]
        (c,) = pod["containers"]
        assert "--leader-elect" in c["args"], dep["metadata"]["name"]
        env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}) for e in c["env"]}
        assert env["POD_NAME"] == {"fieldPath": "metadata.name"}  # the holder identity
        assert env["POD_NAMESPACE"] == {"fieldPath": "metadata.namespace"}  # the Lease's
        assert spec["replicas"] == 2
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        (term,) = pod["affinity"]["podAntiAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"
        ]
        assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
        assert (
            term["podAffinityTerm"]["labelSelector"]["matchLabels"]
            == spec["selector"]["matchLabels"]
        )
        (pdb,) = [p for p in pdbs if p["spec"]["selector"] == spec["selector"]]
        assert pdb["spec"]["minAvailable"] == 1
        assert pdb["metadata"]["namespace"] == dep["metadata"]["namespace"]


def test_sharded_install_runs_one_controller_per_shard() -> None:
    deployments = {d["metadata"]["name"]: d for d in controllers("sharded")}
    shards = {}
    for name, dep in deployments.items():
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        (shard,) = [a.removeprefix("--shard=") for a in c["args"] if a.startswith("--shard=")]
        shards[name] = shard
    assert shards == {
        "backupctl-controller": "",  # the unlabelled-default shard
        "backupctl-controller-shard-1": "1",
        "backupctl-controller-shard-2": "2",
    }
    selectors = [
        frozenset(d["spec"]["selector"]["matchLabels"].items()) for d in deployments.values()
    ]
    for i, a in enumerate(selectors):  # no Deployment's selector matches another's pods
        for b in selectors[i + 1 :]:
            assert not (a <= b or b <= a)

    def comparable(dep: dict[str, Any]) -> Any:
        pod = dep["spec"]["template"]
        text = yaml.safe_dump({"pod": pod, "spec": {**dep["spec"], "template": None}})
        instance = dep["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"]
        text = text.replace(instance, "INSTANCE")
        return [line for line in text.splitlines() if "--shard=" not in line]

    base = comparable(deployments["backupctl-controller"])
    for name, dep in deployments.items():
        assert comparable(dep) == base, f"{name} drifted from manifests/base/deployment.yaml"
