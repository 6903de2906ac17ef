"""A stand-in for the StatefulSet controller and the kubelet, for Redis pods.

Why: restore tests need what a cluster does to Redis pods -- scale a StatefulSet to 0 and
back, recreate a deleted pod, restart a crashed container, mount each pod's own PVC -- with
real ``redis-server`` processes whose data folders are those PVCs. :class:`StatefulSets`
polls apps/v1 StatefulSets in the emulator and, for each, plays:

* the StatefulSet controller: Pods ``<sts>-<ordinal>`` for ``spec.replicas`` (labels from
  the template plus ``statefulset.kubernetes.io/pod-name`` and ``apps.kubernetes.io/pod-index``,
  a controller ownerReference), created in ordinal order one at a time once the previous one
  is Ready (``OrderedReady``; all at once with ``podManagementPolicy: Parallel``), removed
  from the highest ordinal on scale-down; a PersistentVolumeClaim ``<template>-<sts>-<i>`` per
  ``volumeClaimTemplates`` entry, kept after scale-down as Kubernetes does; ``status``
  (``replicas``, ``readyReplicas``, ``currentReplicas``, ``availableReplicas``).
* the kubelet: the Redis container (named ``redis``, or the first) runs as a local
  ``redis-server`` with its ``args`` (``$(VAR)`` expanded from the container env, Secrets
  resolved, as the Job kubelet stand-in does) plus, last so they win, ``--bind 127.0.0.1
  --port P --dir <the PVC's folder> --daemonize no``. Each ordinal keeps one free port ``P``
  for the stand-in's lifetime (a stable address, like a pod's DNS name); it is written into
  the pod's ``containerPort`` and ``status.podIP`` is 127.0.0.1, so a client that reads the
  port from the pod reaches the process. With the annotation ``test.backupctl.dev/replicaof:
  "0"`` on the StatefulSet, ordinals > 0 also get ``--replicaof 127.0.0.1 <port of -0>`` (a
  primary with replicas). A process that exits is restarted (``restartCount`` + 1). The pod
  is Ready while the server answers PING (``-NOAUTH`` counts) and is not loading.
* graceful deletion: Pods carry a finalizer of the stand-in, so deleting one (or scaling
  down) leaves it Terminating until its process has been stopped with SIGTERM (Redis then
  saves or fsyncs as configured), as a real kubelet would; then the object goes, and a
  missing ordinal is created again with a new uid.

Pods are placed by the kubelet stand-in's scheduler (:mod:`.scheduling`; an Unschedulable or
ContainerCreating pod gets no process) and a refused pod creation (PodSecurity) becomes a
``FailedCreate`` Event, retried. The process runs as the container's effective user
(:mod:`.security_context`: the official ``redis``/``valkey`` images re-own the data dir and
run as 999; ``runAsNonRoot`` with a root user leaves the pod waiting in
``CreateContainerConfigError``) in its own mount namespace (:mod:`.mount_namespace`).

The PVC folders are those of the Job kubelet stand-in (``kubelet.volumes[claim]``, created
under ``workdir`` when the test did not map a claim), so restore Jobs and Redis share them.
Every process is stopped at :meth:`stop`. Not emulated: rolling updates, ``updateStrategy``,
``minReadySeconds``, probes other than PING, init containers, sidecars.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .api_client import ApiStatusError, K8sClient
from .container_setup import ConfigError, expand, rewrite
from .kubelet import Kubelet
from .mount_namespace import Mount, launcher
from .scheduling import event
from .security_context import Identity, entrypoint_chown

JsonDict = dict[str, Any]
FINALIZER = "test.backupctl.dev/redis-process"
REPLICAOF = "test.backupctl.dev/replicaof"
STOP_TIMEOUT = 15.0
REDIS_SERVER = shutil.which("redis-server") or "redis-server"


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _free_port() -> int:
    """A free port P whose cluster bus port P + 10000 is free too (so at most 55535): a pod
    may run Redis in cluster mode."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port > 55535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port with a free cluster bus port")


def _ping(port: int) -> bool:
    """PING answered with PONG or NOAUTH (alive, not loading)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
    except OSError:
        return False
    return reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH")


@dataclass
class RedisProcess:
    """The running "container" of one pod object (by uid)."""

    uid: str
    proc: subprocess.Popen[bytes]
    port: int
    restarts: int = 0
    ready: bool = False
    argv: list[str] = field(default_factory=list)
    log: Path | None = None
    identity: Identity | None = None


class StatefulSets:
    """Plays StatefulSet controller + kubelet for Redis pods (see the module docstring)."""

    def __init__(
        self,
        api: K8sClient,
        kubelet: Kubelet,
        workdir: Path,
        *,
        namespace: str | None = None,
        poll_interval: float = 0.1,
    ) -> None:
        self.api = K8sClient(api.url)  # our own connection settings, used from our thread
        self.kubelet = kubelet
        self.workdir = workdir
        self.namespace = namespace
        self.poll_interval = poll_interval
        self.ports: dict[tuple[str, str], int] = {}  # (namespace, pod) -> port
        self.procs: dict[tuple[str, str], RedisProcess] = {}  # (namespace, pod) -> process
        self.errors: list[str] = []
        self.starts: dict[tuple[str, str], int] = {}  # how often each pod's process started
        self.create_errors: dict[tuple[str, str], str] = {}  # pod -> last refusal of its create
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="statefulsets", daemon=True)

    # -- public -----------------------------------------------------------------------------

    def start(self) -> StatefulSets:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        with self._lock:
            for key in list(self.procs):
                self._stop_process(key)

    def port(self, pod: str, namespace: str = "") -> int:
        """The real port of ``pod``'s Redis (allocated on first use, stable)."""
        with self._lock:
            key = (namespace or self._only_namespace(), pod)
            if key not in self.ports:
                self.ports[key] = _free_port()
            return self.ports[key]

    def url(self, pod: str, namespace: str = "") -> str:
        return f"redis://127.0.0.1:{self.port(pod, namespace)}"

    def pid(self, pod: str, namespace: str = "") -> int | None:
        with self._lock:
            p = self.procs.get((namespace or self._only_namespace(), pod))
            return p.proc.pid if p is not None and p.proc.poll() is None else None

    def folder(self, claim: str) -> Path:
        """The local folder backing PVC ``claim`` (shared with the Job kubelet)."""
        if claim not in self.kubelet.volumes:
            path = self.workdir / "pvc" / claim
            path.mkdir(parents=True, exist_ok=True)
            self.kubelet.volumes[claim] = path
        return self.kubelet.volumes[claim]

    def _only_namespace(self) -> str:
        if self.namespace:
            return self.namespace
        namespaces = {ns for ns, _ in self.ports} | {ns for ns, _ in self.procs}
        if len(namespaces) == 1:
            return next(iter(namespaces))
        raise ValueError("pass the namespace")

    # -- the loop ---------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception as e:  # keep going; tests can assert on .errors
                self.errors.append(repr(e))
            self._stop.wait(self.poll_interval)

    def _sync(self) -> None:
        for sts in self.api.list("apps/v1/statefulsets", self.namespace):
            self._sync_sts(sts)
        # Processes whose pod object is gone (its StatefulSet was deleted, say).
        with self._lock:
            keys = list(self.procs)
        for ns, name in keys:
            pod = self.api.get("v1/pods", ns, name)
            if pod is None or pod["metadata"]["uid"] != self.procs[(ns, name)].uid:
                with self._lock:
                    self._stop_process((ns, name))

    def _sync_sts(self, sts: JsonDict) -> None:
        meta, spec = sts["metadata"], sts.get("spec") or {}
        ns, name = meta["namespace"], meta["name"]
        wanted = int(spec.get("replicas", 1))
        pods = {
            p["metadata"]["name"]: p
            for p in self.api.list("v1/pods", ns)
            if any(o.get("uid") == meta["uid"] for o in p["metadata"].get("ownerReferences") or [])
        }
        ordered = spec.get("podManagementPolicy", "OrderedReady") != "Parallel"
        for ordinal in range(wanted):
            pod_name = f"{name}-{ordinal}"
            pod = pods.get(pod_name)
            if pod is None:
                lower = [pods.get(f"{name}-{i}") for i in range(ordinal)]
                if ordered and not all(p is not None and _ready(p) for p in lower):
                    break
                try:
                    pods[pod_name] = self._create_pod(sts, ordinal)
                except ApiStatusError as e:  # PodSecurity...: FailedCreate, retried next sync
                    if e.status not in (403, 422):
                        raise
                    self._failed_create(sts, pod_name, e.message)
                    break
                if ordered:
                    break
        for pod_name, pod in pods.items():
            ordinal = int(pod_name.rsplit("-", 1)[1])
            if pod["metadata"].get("deletionTimestamp"):
                self._terminate(pod)
            elif ordinal >= wanted:
                self.api.delete("v1/pods", ns, pod_name)
            else:
                self._run(sts, pod)
        pods = {k: v for k, v in pods.items() if not v["metadata"].get("deletionTimestamp")}
        ready = sum(1 for p in pods.values() if _ready(p))
        status = {
            "observedGeneration": meta.get("generation", 1),
            "replicas": len(pods),
            "readyReplicas": ready,
            "currentReplicas": len(pods),
            "updatedReplicas": len(pods),
            "availableReplicas": ready,
        }
        if {k: (sts.get("status") or {}).get(k) for k in status} != status:
            with contextlib.suppress(ApiStatusError):
                self.api.patch("apps/v1/statefulsets", ns, name, {"status": status},
                               subresource="status")  # fmt: skip

    # -- pods -------------------------------------------------------------------------------

    def _create_pod(self, sts: JsonDict, ordinal: int) -> JsonDict:
        meta, spec = sts["metadata"], sts["spec"]
        ns, name = meta["namespace"], meta["name"]
        pod_name = f"{name}-{ordinal}"
        template = copy.deepcopy(spec.get("template") or {})
        pod_spec = template.get("spec") or {}
        volumes = list(pod_spec.get("volumes") or [])
        for tpl in spec.get("volumeClaimTemplates") or []:
            claim = f"{tpl['metadata']['name']}-{pod_name}"
            self.folder(claim)
            if self.api.get("v1/persistentvolumeclaims", ns, claim) is None:
                pvc = {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"name": claim, "labels": dict(
                        (spec.get("selector") or {}).get("matchLabels") or {})},
                    "spec": tpl.get("spec") or {"accessModes": ["ReadWriteOnce"],
                                                "resources": {"requests": {"storage": "1Gi"}}},
                }  # fmt: skip
                self.api.create(pvc, ns)
            volumes.append(
                {"name": tpl["metadata"]["name"], "persistentVolumeClaim": {"claimName": claim}}
            )
        pod_spec["volumes"] = volumes
        pod_spec["hostname"] = pod_name
        if spec.get("serviceName"):
            pod_spec["subdomain"] = spec["serviceName"]
        container = _redis_container(pod_spec)
        port = self.port(pod_name, ns)
        for p in container.get("ports") or []:
            p["containerPort"] = port
        labels = dict((template.get("metadata") or {}).get("labels") or {})
        labels.update(
            {
                "statefulset.kubernetes.io/pod-name": pod_name,
                "apps.kubernetes.io/pod-index": str(ordinal),
            }
        )
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "namespace": ns,
                "labels": labels,
                "annotations": dict((template.get("metadata") or {}).get("annotations") or {}),
                "finalizers": [FINALIZER],
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "StatefulSet",
                        "name": name,
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": pod_spec,
        }
        return self.api.create(pod, ns)

    def _failed_create(self, sts: JsonDict, pod_name: str, error: str) -> None:
        """The StatefulSet controller's FailedCreate Event (once per distinct error)."""
        key = (sts["metadata"]["namespace"], pod_name)
        if self.create_errors.get(key) == error:
            return
        self.create_errors[key] = error
        message = (
            f"create Pod {pod_name} in StatefulSet {sts['metadata']['name']} failed error: {error}"
        )
        with contextlib.suppress(ApiStatusError):
            self.api.create(event(sts, "FailedCreate", message, "statefulset-controller"),
                            sts["metadata"]["namespace"])  # fmt: skip

    def _run(self, sts: JsonDict, pod: JsonDict) -> None:
        """Start, restart or watch the pod's process; keep its status current."""
        ns, name, uid = (
            pod["metadata"]["namespace"],
            pod["metadata"]["name"],
            pod["metadata"]["uid"],
        )
        key = (ns, name)
        with self._lock:
            running = self.procs.get(key)
            if running is not None and running.uid != uid:
                self._stop_process(key)
                running = None
            try:
                if running is None:
                    placed = self.kubelet.scheduler.admit(pod, _redis_container(pod["spec"]))
                    if placed is None:  # Unschedulable or ContainerCreating: retried
                        return
                    running = self._start_process(sts, placed)
                    self.procs[key] = running
                elif running.proc.poll() is not None:  # crashed: restart, as the kubelet does
                    restarts = running.restarts + 1
                    running = self._start_process(sts, pod)
                    running.restarts = restarts
                    self.procs[key] = running
            except ConfigError as e:
                self._waiting(pod, e.reason, str(e))
                return
        ready = _ping(running.port)
        status = pod.get("status") or {}
        current = (status.get("containerStatuses") or [{}])[0]
        if (
            running.ready == ready
            and current.get("restartCount") == running.restarts
            and status.get("phase") == "Running"
        ):
            return
        running.ready = ready
        self._pod_status(pod, running)

    def _pod_status(self, pod: JsonDict, running: RedisProcess) -> None:
        container = _redis_container(pod["spec"])
        now = _now()
        ready = "True" if running.ready else "False"
        status = {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": now,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": ready, "lastTransitionTime": now},
                {"type": "Ready", "status": ready, "lastTransitionTime": now},
            ],
            "containerStatuses": [
                {
                    "name": container.get("name", "redis"),
                    "ready": running.ready,
                    "started": True,
                    "restartCount": running.restarts,
                    "image": container.get("image", ""),
                    "imageID": "",
                    "containerID": f"local://{running.proc.pid}",
                    "state": {"running": {"startedAt": now}},
                }
            ],
        }
        with contextlib.suppress(ApiStatusError):
            self.api.patch("v1/pods", pod["metadata"]["namespace"], pod["metadata"]["name"],
                           {"status": status}, subresource="status")  # fmt: skip

    def _waiting(self, pod: JsonDict, reason: str, message: str) -> None:
        """The container cannot start (CreateContainerConfigError...): Pending, waiting."""
        container = _redis_container(pod["spec"])
        waiting = {"reason": reason, "message": message}
        current = ((pod.get("status") or {}).get("containerStatuses") or [{}])[0]
        if current.get("state") == {"waiting": waiting}:
            return
        status = {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": _now()},
                {"type": "Ready", "status": "False", "reason": "ContainersNotReady",
                 "lastTransitionTime": _now()},
            ],
            "containerStatuses": [
                {"name": container.get("name", "redis"), "ready": False, "started": False,
                 "restartCount": 0, "image": container.get("image", ""), "imageID": "",
                 "state": {"waiting": waiting}},
            ],
        }  # fmt: skip
        with contextlib.suppress(ApiStatusError):
            self.api.patch("v1/pods", pod["metadata"]["namespace"], pod["metadata"]["name"],
                           {"status": status}, subresource="status")  # fmt: skip

    def _terminate(self, pod: JsonDict) -> None:
        """A Terminating pod: stop its process (SIGTERM), then let the object go."""
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        with self._lock:
            running = self.procs.get((ns, name))
            if running is not None and running.uid == pod["metadata"]["uid"]:
                self._stop_process((ns, name))
        finalizers = [f for f in pod["metadata"].get("finalizers") or [] if f != FINALIZER]
        with contextlib.suppress(ApiStatusError):
            self.api.patch("v1/pods", ns, name, {"metadata": {"finalizers": finalizers}})

    # -- processes ----------------------------------------------------------------------------

    def _start_process(self, sts: JsonDict, pod: JsonDict) -> RedisProcess:
        """Start the pod's redis-server as its effective user (raises ConfigError)."""
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        spec = pod["spec"]
        container = _redis_container(spec)
        setup = self.kubelet.container_setup()
        identity = setup.identity(pod, container)
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in spec.get("volumes") or []
            if "persistentVolumeClaim" in v
        }
        for claim in claims.values():
            self.folder(claim)
        sandbox = self.kubelet.sandbox(ns, name)
        sandbox.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(sandbox.parent, 0o711)
        sandbox.mkdir(exist_ok=True)
        os.chmod(sandbox, 0o755)
        mounts, mapping = setup.mounts(pod, container, sandbox)
        data: Mount | None = next(
            (
                m
                for m, vm in zip(mounts, container.get("volumeMounts") or [], strict=False)
                if vm["name"] in claims
            ),
            None,
        )
        if data is None:
            data_dir = sandbox / "emptydir"
            data_dir.mkdir(exist_ok=True)
            os.chmod(data_dir, 0o777)
            data = Mount(data_dir, data_dir)
        if identity.entrypoint_chown:  # the official image's entrypoint re-owns its data dir
            entrypoint_chown(data.source, identity.uid)
        env = setup.env(pod, container)
        args = [rewrite(expand(a, env), mapping) for a in container.get("args") or []]
        command = container.get("command") or ["redis-server"]
        args = [*command[1:], *args]
        port = self.port(name, ns)
        ordinal = int(name.rsplit("-", 1)[1])
        annotations = sts["metadata"].get("annotations") or {}
        if annotations.get(REPLICAOF) == "0" and ordinal > 0:
            primary = f"{sts['metadata']['name']}-0"
            args += ["--replicaof", "127.0.0.1", str(self.port(primary, ns))]
        server = [REDIS_SERVER, *args, "--bind", "127.0.0.1", "--port", str(port),
                  "--dir", str(data.source), "--daemonize", "no", "--logfile", ""]  # fmt: skip
        argv = launcher(mounts, identity, server, str(data.source))
        logdir = self.workdir / "logs" / ns
        logdir.mkdir(parents=True, exist_ok=True)
        log = logdir / f"{name}.log"
        with open(log, "ab") as out:
            out.write(f"--- {_now()} {json.dumps(server)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=sandbox,
                start_new_session=True,
            )
        self.starts[(ns, name)] = self.starts.get((ns, name), 0) + 1
        return RedisProcess(
            uid=pod["metadata"]["uid"], proc=proc, port=port, argv=server, log=log,
            identity=identity,
        )  # fmt: skip

    def _stop_process(self, key: tuple[str, str]) -> None:
        running = self.procs.pop(key, None)
        if running is None or running.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(running.proc.pid, signal.SIGTERM)
        try:
            running.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(running.proc.pid, signal.SIGKILL)
            running.proc.wait(5)


def _ready(pod: JsonDict) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def _redis_container(pod_spec: JsonDict) -> JsonDict:
    containers = pod_spec.get("containers") or [{}]
    return next((c for c in containers if c.get("name") == "redis"), containers[0])


def wait_ready(
    api: K8sClient, namespace: str, sts: str, replicas: int, timeout: float = 30
) -> None:
    """Until ``replicas`` pods of ``sts`` are Ready (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obj = api.get("apps/v1/statefulsets", namespace, sts)
        if obj and (obj.get("status") or {}).get("readyReplicas") == replicas:
            return
        time.sleep(0.05)
    raise TimeoutError(f"StatefulSet {namespace}/{sts} did not get {replicas} ready pods")
