"""The install and the uninstall as documented, on the API emulator, with the real
controller (``backupctl operator``) and the real kubectl.

- ``kubectl apply -k manifests/`` installs; the controller puts its finalizer on
  the RedisBackups and RedisRestores of the examples; docs/install.md's uninstall steps,
  run as written, leave nothing Terminating (resources, CRDs, namespace gone);
- the wrong order (``kubectl delete -k manifests/`` first, the controller gone)
  leaves the resources and CRDs Terminating, and the recovery command of
  docs/install.md, run as written, ends that;
- RBAC as a real API server enforces it (the substrate's token per ServiceAccount,
  403s, OwnerReferencesPermissionEnforcement): the controller, authenticating as
  its ServiceAccount with the RBAC objects and the Deployment's own arguments of
  each install, creates a RedisBackup's Job (whose ownerReference has
  ``blockOwnerDeletion: true``); without the ``/finalizers`` rule the create is
  refused and the RedisBackup says so (Ready=False, JobRejected, the API's
  message); the namespace-scoped install may not create Jobs elsewhere.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from support.kube.api_client import ApiStatusError
from support.kube.fixtures import K8sApi
from support.kube.operator_process import Operator, operator_command, operator_env
from support.object_stores import free_port

REPO = Path(__file__).resolve().parents[2]
NS = "redis"  # the examples' namespace
FINALIZER = "backupctl.dev/finalizer"
EXAMPLES = ["backup-standalone-s3.yaml", "restore-latest.yaml"]
T = TypeVar("T")


# --- helpers -----------------------------------------------------------------------------


def sh_block(path: Path, heading: str) -> str:
    """The first ```sh block after ``heading`` in ``path``, as a user would paste it."""
    text = path.read_text()
    start = text.index(heading)
    match = re.search(r"```sh\n(.*?)```", text[start:], re.S)
    assert match, f"no sh block after {heading!r} in {path.name}"
    return match.group(1)


def run_documented(
    api: K8sApi, script: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in bash from the repository root with kubectl pointed at the emulator."""
    env = {**api.env, "KUBECACHEDIR": str(api.kubectl_cache)}
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{script}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    return proc


def wait(op: Operator, condition: Callable[[], T | bool | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s: {what}\n--- operator log ---\n{op.log()}"
            )
        time.sleep(0.1)


def custom_resources(api: K8sApi) -> list[dict[str, Any]]:
    found = []
    for plural in ("redisbackups", "redisrestores"):
        try:
            found += api.list(plural, NS)
        except ApiStatusError as e:  # 404: the CRD is gone, and so are its resources
            if e.status != 404:
                raise
    return found


def terminating(api: K8sApi) -> list[Any]:
    return list(api.call(api.emulator.store.terminating))


def install(api: K8sApi) -> None:
    """``kubectl apply -k manifests/`` (validation off: the emulator serves no OpenAPI)."""
    out = api.kubectl("apply", "--validate=false", "-k", str(REPO / "manifests")).stdout
    assert "deployment.apps/backupctl-controller created" in out, out
    api.create_namespace(NS)
    for name in EXAMPLES:
        for doc in yaml.safe_load_all((REPO / "examples" / name).read_text()):
            if doc:
                api.create(doc, doc["metadata"].get("namespace", NS))


@pytest.fixture
def operator(k8s_api: K8sApi, tmp_path: Path) -> Iterator[Operator]:
    op = Operator(k8s_api, tmp_path, NS)
    try:
        yield op
    finally:
        op.stop()
        if os.environ.get("BACKUPCTL_SHOW_OPERATOR_LOG"):
            print(op.log(100_000))


def with_finalizers(api: K8sApi, op: Operator) -> list[dict[str, Any]]:
    """Wait until the controller holds its finalizer on every example resource."""

    def held() -> list[dict[str, Any]] | None:
        objs = custom_resources(api)
        if len(objs) == 2 and all(
            FINALIZER in (o["metadata"].get("finalizers") or []) for o in objs
        ):
            return objs
        return None

    return wait(op, held, 30, "the controller's finalizer on the RedisBackup and RedisRestore")


# --- tests --------------------------------------------------------------------------------


def test_documented_uninstall_leaves_nothing_terminating(
    k8s_api: K8sApi, operator: Operator
) -> None:
    api = k8s_api
    install(api)
    operator.start()
    objs = with_finalizers(api, operator)
    assert {o["kind"] for o in objs} == {"RedisBackup", "RedisRestore"}

    script = sh_block(REPO / "docs" / "install.md", "## Uninstall")
    lines = [ln for ln in script.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    first, second = lines  # custom resources first (controller running), then the install
    run_documented(api, first)
    assert custom_resources(api) == []
    # Step 2 deletes the Deployment first (its namespace), so the controller stops while
    # the CRDs go; stopped here just before, as the emulator runs no Deployment.
    operator.stop()
    run_documented(api, second.split("#")[0])

    assert terminating(api) == []
    crds = [c["metadata"]["name"] for c in api.list("customresourcedefinitions")]
    assert not [c for c in crds if c.endswith(".backupctl.dev")], crds
    assert api.get("namespaces", None, "backupctl-system") is None
    assert api.get("clusterroles", None, "backupctl-controller") is None


def test_install_deleted_first_is_recovered_by_the_documented_command(
    k8s_api: K8sApi, operator: Operator
) -> None:
    api = k8s_api
    install(api)
    operator.start()
    with_finalizers(api, operator)
    operator.stop()  # the wrong order: the controller goes with the install ...
    api.kubectl("delete", "-k", str(REPO / "manifests"), "--wait=false", "--ignore-not-found")

    # ... and its finalizers stay: the resources and their CRDs are Terminating.
    def stuck() -> list[Any] | None:
        refs = terminating(api)
        kinds = {str(r) for r in refs}
        return refs if any("redisbackups" in k for k in kinds) else None

    refs = wait(operator, stuck, 10, "RedisBackups Terminating after the install was deleted")
    assert any("customresourcedefinitions" in str(r) for r in refs), refs
    assert all(o["metadata"].get("deletionTimestamp") for o in custom_resources(api))

    script = sh_block(REPO / "docs" / "install.md", "### If the install was deleted first")
    run_documented(api, script)

    wait(operator, lambda: terminating(api) == [], 10, "nothing Terminating after the recovery")
    crds = [c["metadata"]["name"] for c in api.list("customresourcedefinitions")]
    assert not [c for c in crds if c.endswith(".backupctl.dev")], crds


# --- RBAC, enforced -----------------------------------------------------------------------

SA_NAMESPACE, SA = "backupctl-system", "backupctl-controller"


def built(install: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(REPO / install)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def deployment_args(docs: list[dict[str, Any]]) -> list[str]:
    """The controller's arguments in the Deployment, with its health and metrics
    servers moved to free loopback ports (the test runs it here, not in a pod)."""
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    args = [a for a in c["args"] if not a.startswith(("--liveness", "--metrics"))]
    assert args[0] == "operator"
    return [
        *args[1:],
        f"--liveness=http://127.0.0.1:{free_port()}/healthz",
        f"--metrics-port={free_port()}",
        "--metrics-address=127.0.0.1",
    ]


class ServiceAccountController:
    """``backupctl operator ARGS`` authenticating with its ServiceAccount's token."""

    def __init__(self, api: K8sApi, workdir: Path, args: list[str]) -> None:
        self.log_path = workdir / "operator.log"
        clock = workdir / "clock-offset"
        clock.write_text("0")
        kubeconfig = api.kubeconfig_for(SA_NAMESPACE, SA)
        env = operator_env({**api.env, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"})
        # As the Deployment's downward API sets them (the Lease's namespace and holder).
        env.update(POD_NAMESPACE=SA_NAMESPACE, POD_NAME="backupctl-controller-0")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                operator_command(clock, *args, "--verbose", "--image", "backupctl:test"),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self, tail: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def redis_target(api: K8sApi, namespace: str) -> None:
    """A StatefulSet "redis" with one ready pod (nothing listens: the Job is not run)."""
    labels = {"app": "redis"}
    container = {"name": "redis", "image": "redis:7", "ports": [{"containerPort": 6379}]}
    template = {"metadata": {"labels": labels}, "spec": {"containers": [container]}}
    sts = api.create(
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "redis"},
            "spec": {
                "serviceName": "redis",
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": template,
            },
        },
        namespace,
    )
    owner = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "redis",
             "uid": sts["metadata"]["uid"], "controller": True}  # fmt: skip
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "redis-0", "labels": labels, "ownerReferences": [owner]},
            "spec": {"nodeName": "node-a", "containers": [container]},
        },
        namespace,
    )
    ready = {"phase": "Running", "podIP": "127.0.0.1", "hostIP": "127.0.0.1",
             "conditions": [{"type": "Ready", "status": "True"}]}  # fmt: skip
    api.patch("pods", namespace, "redis-0", {"status": ready}, subresource="status")


def one_off_backup(api: K8sApi, namespace: str) -> None:
    storage = {"s3": {"bucket": "b", "region": "us-east-1",
                      "accessKeyIdSecret": {"name": "creds", "key": "id"},
                      "secretAccessKeySecret": {"name": "creds", "key": "secret"}}}  # fmt: skip
    spec = {"target": {"kind": "StatefulSet", "name": "redis", "port": 6379},
            "method": "replication", "storage": storage}  # fmt: skip
    body = {"apiVersion": "backupctl.dev/v1alpha1", "kind": "RedisBackup",
            "metadata": {"name": "now"}, "spec": spec}  # fmt: skip
    api.create(body, namespace)


def rbac_setup(api: K8sApi, docs: list[dict[str, Any]], namespaces: list[str]) -> None:
    """The install's objects (as admin), the watched namespaces, a target and a one-off
    RedisBackup in each; then RBAC is enforced for every non-admin token."""
    for ns in namespaces:
        api.create_namespace(ns)
    api.apply(docs)
    for ns in namespaces:
        redis_target(api, ns)
        one_off_backup(api, ns)
    api.enforce_rbac()


def wait_log(ctl: ServiceAccountController, condition: Callable[[], T | None], what: str) -> T:
    deadline = time.monotonic() + 30
    while True:
        value = condition()
        if value:
            return value
        assert ctl.proc.poll() is None, f"the controller exited\n{ctl.log()}"
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what}\n--- controller log ---\n{ctl.log()}")
        time.sleep(0.1)


def backup_jobs(api: K8sApi, namespace: str) -> list[dict[str, Any]]:
    return api.list("jobs", namespace, labels="backupctl.dev/backup=now")


@pytest.mark.parametrize("install", ["manifests", "manifests/namespaced"])
def test_controller_as_its_service_account_creates_the_job(
    k8s_api: K8sApi, tmp_path: Path, install: str
) -> None:
    api = k8s_api
    docs = built(install)
    rbac_setup(api, docs, ["redis"])
    ctl = ServiceAccountController(api, tmp_path, deployment_args(docs))
    try:
        (job,) = wait_log(ctl, lambda: backup_jobs(api, "redis"), "the backup Job")
    finally:
        ctl.stop()
    (owner,) = job["metadata"]["ownerReferences"]
    assert owner["kind"] == "RedisBackup" and owner["blockOwnerDeletion"] is True
    assert "Forbidden" not in ctl.log(1_000_000), ctl.log()


def test_without_the_finalizers_rule_the_job_is_refused_and_reported(
    k8s_api: K8sApi, tmp_path: Path
) -> None:
    api = k8s_api
    docs = built("manifests")
    (role,) = [d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == SA]
    before = len(role["rules"])
    role["rules"] = [
        r for r in role["rules"] if not any("/finalizers" in x for x in r["resources"])
    ]
    assert len(role["rules"]) == before - 1
    rbac_setup(api, docs, ["redis"])
    ctl = ServiceAccountController(api, tmp_path, deployment_args(docs))

    def rejected() -> dict[str, Any] | None:
        obj = api.get("redisbackups", "redis", "now") or {}
        conds = (obj.get("status") or {}).get("conditions") or []
        return next((c for c in conds if c.get("reason") == "JobRejected"), None)

    try:
        cond = wait_log(ctl, rejected, "Ready=False JobRejected on the RedisBackup")
    finally:
        ctl.stop()
    assert cond["type"] == "Ready" and cond["status"] == "False"
    # the API server's own words: what was refused and why
    assert "cannot set blockOwnerDeletion" in cond["message"], cond
    assert 'cannot update resource "redisbackups/finalizers"' in cond["message"], cond
    assert backup_jobs(api, "redis") == []


def test_namespaced_install_cannot_create_jobs_outside_its_namespaces(
    k8s_api: K8sApi, tmp_path: Path
) -> None:
    api = k8s_api
    docs = built("manifests/namespaced")
    rbac_setup(api, docs, ["redis", "elsewhere"])
    ctl = ServiceAccountController(api, tmp_path, deployment_args(docs))
    try:
        wait_log(ctl, lambda: backup_jobs(api, "redis"), "the backup Job in the watched namespace")
    finally:
        ctl.stop()
    assert backup_jobs(api, "elsewhere") == []  # not watched ...
    as_controller = api.client_for(SA_NAMESPACE, SA)
    pod = {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"},
           "spec": {"template": {"spec": pod}}}  # fmt: skip
    with pytest.raises(ApiStatusError) as refused:  # ... and not writable
        as_controller.create(job, "elsewhere")
    assert refused.value.status == 403
    as_controller.create(job, "redis")  # where it is allowed
