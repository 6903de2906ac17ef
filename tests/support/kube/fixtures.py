"""pytest fixtures: ``k8s_api`` (the API emulator on a free loopback port) and ``kubelet``.

Registered for the whole suite by ``pytest_plugins = [..., "support.kube.fixtures"]`` in
tests/conftest.py. A controller test writes::

    def test_backup(k8s_api, kubelet, tmp_path):
        k8s_api.apply(Path("crds/redisbackup.yaml"))          # CRDs: discovery + validation
        k8s_api.create_namespace("ns")                        # namespaces must exist
        kubelet.volumes["data-redis-0"] = tmp_path / "pvc"     # PVC claim name -> local folder
        proc = subprocess.Popen(["kopf", "run", "--standalone", "-n", "ns", "operator.py"],
                                env=k8s_api.env)              # KUBECONFIG=k8s_api.kubeconfig
        k8s_api.create(redis_backup, "ns")
        job = k8s_api.wait_for(lambda: k8s_api.list("jobs", "ns"), timeout=20)
        assert kubelet.logs(job[0]["metadata"]["name"]) ...

``k8s_api`` also offers ``get/list/create/replace/patch/delete/apply`` (resource given as
plural, kind, short name or ``group/version/plural``), ``kubectl(...)``, ``close_watches()``
(simulate an API server restart), ``emulator`` (kmock's DSL for fault injection, e.g.
``k8s_api.call(lambda: k8s_api.emulator["post", kmock.resource("batch", "v1", "jobs")] << 503)``,
``emulator.objects`` and ``emulator.requests`` for assertions) and ``wait_for`` (bounded polling).
Users: ``token_for(ns, sa)``, ``kubeconfig_for(ns, sa)``, ``client_for(ns, sa)``,
``load_rbac(path)`` (a YAML file or a kustomize folder such as ``manifests/``) and
``enforce_rbac()`` (RBAC + OwnerReferencesPermissionEnforcement for non-admin users); the
default kubeconfig stays a cluster-admin. ``partition(token)`` cuts one client off (its
requests hang, its watches go quiet) until ``partition(token, cut=False)``;
``delay_creates(token, s)`` slows its POSTs.
``terminating()`` lists what is stuck Terminating.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest
import yaml

from .api_client import K8sClient, run_kubectl, wait_for
from .api_server import EmulatorThread, KubeEmulator, write_kubeconfig

T = TypeVar("T")
JsonDict = dict[str, Any]


class K8sApi(K8sClient):
    """A running emulator: its URL, a kubeconfig for it, and client conveniences."""

    def __init__(self, thread: EmulatorThread, workdir: Path) -> None:
        super().__init__(thread.url)
        self.thread = thread
        self.workdir = workdir
        self.kubeconfig = write_kubeconfig(workdir / "kubeconfig", thread.url)
        self.kubectl_cache = workdir / "kubectl-cache"

    @property
    def emulator(self) -> KubeEmulator:
        """The server (kmock DSL, ``objects``, ``requests``); mutate it only via :meth:`call`."""
        assert self.thread.emulator is not None
        return self.thread.emulator

    @property
    def env(self) -> dict[str, str]:
        """Environment for a subprocess (e.g. ``kopf run``) that should talk to the emulator."""
        return dict(os.environ, KUBECONFIG=str(self.kubeconfig))

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the emulator's event loop (e.g. to add a kmock reaction)."""
        return self.thread.call(fn)  # type: ignore[no-any-return]

    def close_watches(self) -> int:
        """End all open watch streams (clients must reconnect); returns how many there were."""
        return self.thread.close_watches()

    # -- users and RBAC (support.kube.rbac) -------------------------------------------------

    def enforce_rbac(self, on: bool = True) -> None:
        """Authorize non-admin requests by the stored RBAC objects, and run
        OwnerReferencesPermissionEnforcement (off by default: every token is then allowed)."""
        self.call(lambda: setattr(self.emulator.auth, "enforce", on))

    def token_for(self, namespace: str, service_account: str) -> str:
        """A bearer token for ``system:serviceaccount:<namespace>:<service_account>``."""
        return str(self.call(lambda: self.emulator.auth.token_for(namespace, service_account)))

    def kubeconfig_for(self, namespace: str, service_account: str) -> Path:
        """A kubeconfig authenticating as the ServiceAccount (e.g. for ``kopf run``)."""
        token = self.token_for(namespace, service_account)
        path = self.workdir / f"kubeconfig-{namespace}-{service_account}"
        return write_kubeconfig(path, self.thread.url, namespace, token)

    def client_for(self, namespace: str, service_account: str) -> K8sClient:
        return K8sClient(self.thread.url, token=self.token_for(namespace, service_account))

    def load_rbac(self, source: Path, namespace: str | None = None) -> list[JsonDict]:
        """Apply the RBAC objects (ServiceAccounts, Roles, ClusterRoles and bindings) of a YAML
        file, or of ``kubectl kustomize`` of a folder; ``namespace`` overrides theirs."""
        if source.is_dir():
            text = self.kubectl("kustomize", str(source)).stdout
        else:
            text = source.read_text()
        kinds = {"ServiceAccount", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
        docs = [d for d in yaml.safe_load_all(text) if d and d.get("kind") in kinds]
        for doc in docs:
            if namespace and doc["kind"] in ("ServiceAccount", "Role", "RoleBinding"):
                doc["metadata"]["namespace"] = namespace
            if namespace:
                for subject in doc.get("subjects") or []:
                    if subject.get("kind") == "ServiceAccount":
                        subject["namespace"] = namespace
            ns = doc["metadata"].get("namespace")
            if ns and self.get("namespaces", None, ns) is None:
                self.create_namespace(ns)
        return self.apply(docs)

    def partition(self, token: str, cut: bool = True) -> None:
        """Cut the client using ``token`` off from the server (``cut=False``: heal it):
        its requests hang, its watches go quiet (support.kube.partition)."""

        def switch() -> None:
            tokens = self.emulator.partitions.tokens
            tokens.add(token) if cut else tokens.discard(token)

        self.call(switch)

    def delay_creates(self, token: str, seconds: float) -> None:
        """Hold every POST of the client using ``token`` ``seconds`` before the server
        carries it out (0: no delay)."""
        self.call(lambda: self.emulator.partitions.create_delay.__setitem__(token, seconds))

    def partitioned_requests(self) -> int:
        """How many requests of partitioned clients the server has held so far."""
        return int(self.call(lambda: self.emulator.partitions.held))

    def terminating(self) -> list[str]:
        """Everything stuck Terminating, as ``resource.group/namespace/name [finalizers]``."""

        def collect() -> list[str]:
            found = []
            for key, ns, name in self.emulator.store.terminating():
                rt = self.emulator.registry.storage_type(key)
                obj = None if rt is None else self.emulator.store.get(rt, ns, name)
                if rt is not None and obj is not None:
                    where = f"{ns}/{name}" if ns else name
                    fins = ",".join(obj["metadata"].get("finalizers") or [])
                    found.append(f"{rt.qualified_resource}/{where} [{fins}]")
            return found

        return list(self.call(collect))

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> Any:
        return run_kubectl(self.kubeconfig, self.kubectl_cache, *args, input=input, check=check)

    @staticmethod
    def wait_for(
        condition: Callable[[], T | Literal[False] | None],
        timeout: float = 10.0,
        interval: float = 0.05,
        message: str = "condition",
    ) -> T:
        return wait_for(condition, timeout, interval, message)


@pytest.fixture
def k8s_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[K8sApi]:
    """A fresh API emulator per test; fails the test if the emulator itself crashed."""
    thread = EmulatorThread().start()
    api = K8sApi(thread, tmp_path_factory.mktemp("k8s"))
    try:
        yield api
    finally:
        errors = list(api.emulator.internal_errors)
        thread.stop(timeout=5.0)
    assert not errors, "the emulator failed internally:\n" + "\n".join(errors)


@pytest.fixture
def kubelet(k8s_api: K8sApi, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The Job controller + kubelet stand-in, running Jobs of ``k8s_api`` as local processes."""
    from .kubelet import Kubelet

    stand_in = Kubelet(k8s_api, workdir=tmp_path_factory.mktemp("kubelet"))
    stand_in.start()
    try:
        yield stand_in
    finally:
        stand_in.stop()
