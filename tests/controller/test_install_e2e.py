"""The install and the uninstall as documented, on the API emulator, with the real
controller (``backupctl operator``) and the real kubectl.

- ``kubectl apply -k manifests/`` installs; the controller puts its finalizer on
  the RedisBackups and RedisRestores of the examples; README's uninstall steps,
  run as written, leave nothing Terminating (resources, CRDs, namespace gone);
- the wrong order (``kubectl delete -k manifests/`` first, the controller gone)
  leaves the resources and CRDs Terminating, and the recovery command of
  docs/install.md, run as written, ends that.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from support.kube.api_client import ApiStatusError
from support.kube.fixtures import K8sApi
from support.kube.operator_process import Operator

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

    script = sh_block(REPO / "README.md", "### Uninstall")
    lines = [ln for ln in script.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    first, second = lines  # custom resources first (controller running), then the install
    run_documented(api, first)
    assert custom_resources(api) == []
    run_documented(api, second.split("#")[0])
    operator.stop()  # the Deployment is gone: in a cluster its pod would stop now

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
