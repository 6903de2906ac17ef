"""A stand-in for the Job controller and the kubelet, running Jobs as local processes.

Why: no container runtime exists on the test machines, yet the controller's Jobs must really
run (``backupctl run ...`` uploading to an S3 emulator) and report back through Pod and Job
status as they would in a cluster. :class:`Kubelet` polls batch/v1 Jobs in the emulator and,
for each, plays both parts:

* Job controller: creates Pods ``<job>-<5 chars>`` (labels ``job-name``, ``controller-uid``
  and the ``batch.kubernetes.io/`` ones, an ownerReference to the Job), retries failed pods up
  to ``backoffLimit`` (each attempt a new Pod, short exponential back-off), runs
  ``completions`` pods one after another, enforces ``activeDeadlineSeconds``, ``suspend``
  and ``ttlSecondsAfterFinished``, and writes Job status through ``/status``: ``active``,
  ``ready``, ``succeeded``, ``failed``, ``startTime``, ``completionTime`` and the conditions
  ``SuccessCriteriaMet``+``Complete`` or ``FailureTarget``+``Failed`` as Kubernetes 1.31+ does.
* kubelet: runs the first container's ``command``+``args`` (``$(VAR)`` expanded) as a local
  process with the container's env resolved (``value``; ``valueFrom`` ``secretKeyRef``,
  ``configMapKeyRef``, ``fieldRef``; ``envFrom``) from objects in the emulator. A missing
  Secret/ConfigMap or key leaves the Pod Pending with ``CreateContainerConfigError`` (retried,
  as a kubelet does). The exit code, reason (``Completed``/``Error``/``DeadlineExceeded``) and
  the termination message go into ``status.containerStatuses[0].state.terminated``.

Pods are placed by :mod:`.scheduling` first (Nodes ``nodes`` registered at start;
Unschedulable, ContainerCreating on Multi-Attach or ``failing_mounts``); a pod creation the API
refuses (PodSecurity) becomes a ``FailedCreate`` Event on the Job, retried with back-off.
:mod:`.container_setup` builds the container: each ``volumeMounts[].mountPath`` is backed by a
local folder (a PVC by ``volumes[claimName]``, supplied by the test; Secret/ConfigMap volumes
by materialised files or ``volumes["secret:<name>"]``; emptyDir by a 0777 folder; hostPath by
``volumes["hostPath:<path>"]``; ``subPath`` honoured), mount paths in ``command``, ``args``,
env and ``workingDir`` are rewritten to those folders (also in ``BACKUPCTL_PATH_MAP``), and
the termination-message path is a file in the pod's sandbox. The process runs as the
container's effective user with its groups and privileges (:mod:`.security_context`: the image
``USER`` from ``image_users``), in its own mount namespace where read-only mounts are really
read-only (:mod:`.mount_namespace`). The image is otherwise ignored: a command word in
``executables`` (default ``backupctl`` -> ``<venv>/bin/backupctl``) is resolved to that path,
anything else through ``PATH``; the env adds ``PATH``, ``PYTHONPATH`` (so Jobs run the test's
``backupctl``), ``HOME``, ``HOSTNAME`` and ``base_env``. Not emulated: resources, probes,
init/sidecar containers, ``readOnlyRootFilesystem``. Output of each attempt is kept
(:meth:`Kubelet.logs`, :meth:`Kubelet.runs`, ``pods/log``). Redis pods of StatefulSets are
:mod:`.statefulset_controller`'s, sharing ``volumes``, the scheduler and the set-up.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .api_client import ApiStatusError, K8sClient
from .container_setup import ConfigError, ContainerSetup
from .scheduling import Scheduler, event, unschedulable_status
from .security_context import IMAGE_USERS, Identity, ImageUser

JsonDict = dict[str, Any]
_POD_SUFFIX_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # what Kubernetes uses for generated names
MAX_MESSAGE = 4096  # the kubelet truncates termination messages to 4 KiB


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class PodRun:
    """One attempt: a Pod and, once it started, its local process."""

    namespace: str
    job: str
    pod: str
    root: Path
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    returncode: int | None = None
    reason: str = ""
    message: str = ""
    termination_log: Path | None = None
    config_error: str = ""
    identity: Identity | None = None  # who the process ran as, once it started

    @property
    def stdout(self) -> str:
        path = self.root / "stdout"
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def stderr(self) -> str:
        path = self.root / "stderr"
        return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class JobState:
    namespace: str
    name: str
    uid: str
    runs: list[PodRun] = field(default_factory=list)
    succeeded: int = 0
    failed: int = 0
    start: float | None = None
    next_attempt: float = 0.0
    finished_at: float | None = None
    done: bool = False
    create_failures: int = 0  # pod creations refused (FailedCreate Events)

    @property
    def active(self) -> PodRun | None:
        run = self.runs[-1] if self.runs else None
        return run if run is not None and run.returncode is None else None


class Kubelet:
    """Runs the emulator's Jobs as local processes (see the module docstring)."""

    def __init__(
        self,
        api: K8sClient,
        workdir: Path,
        *,
        volumes: dict[str, Path] | None = None,
        executables: dict[str, str] | None = None,
        namespace: str | None = None,
        node_name: str = "emulated-node",
        base_env: dict[str, str] | None = None,
        poll_interval: float = 0.1,
        backoff: float = 0.2,
        max_runtime: float = 300.0,
        image_users: dict[str, ImageUser] | None = None,
        nodes: list[str] | None = None,
    ) -> None:
        self.api = K8sClient(api.url)  # own connection settings; used from our thread only
        # The in-process emulator, if any, serves pods/log from the files we capture.
        self._log_registry: dict[tuple[str, str], Path] | None = getattr(
            getattr(api, "emulator", None), "pod_logs", None
        )
        self.workdir = workdir
        self.volumes: dict[str, Path] = dict(volumes or {})
        self.executables = {
            "backupctl": str(Path(sys.executable).parent / "backupctl"),
            **(executables or {}),
        }
        self.namespace = namespace
        self.node_name = node_name
        # The Nodes registered at start (node-a/node-b: the names existing tests give pods).
        self.nodes = list(nodes or [node_name, "node-a", "node-b"])
        self.failing_mounts: dict[str, str] = {}  # claim -> error: pods using it never mount
        self.scheduler = Scheduler(self.api, self.failing_mounts)
        self.base_env = dict(base_env or {})
        # image pattern -> its USER (None: security_context.IMAGE_USERS); tests may add some.
        self.image_users = dict(IMAGE_USERS if image_users is None else image_users)
        # Sandboxes (mount points, home, emptyDirs) live under a base any uid can traverse.
        self.run_base = Path(tempfile.mkdtemp(prefix="kubelet-"))
        os.chmod(self.run_base, 0o711)
        self.poll_interval, self.backoff, self.max_runtime = poll_interval, backoff, max_runtime
        self.jobs: dict[str, JobState] = {}
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="kubelet", daemon=True)

    # -- public -----------------------------------------------------------------------------

    def start(self) -> Kubelet:
        self.scheduler.register(self.nodes)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        with self._lock:
            for state in self.jobs.values():
                for run in state.runs:
                    self._kill(run)
        shutil.rmtree(self.run_base, ignore_errors=True)

    def runs(self, job: str, namespace: str | None = None) -> list[PodRun]:
        with self._lock:
            return [
                r
                for s in self.jobs.values()
                if s.name == job and (namespace is None or s.namespace == namespace)
                for r in s.runs
            ]

    def logs(self, job: str, namespace: str | None = None, attempt: int = -1) -> str:
        """Stdout then stderr of one attempt (the last by default) of a Job's pods."""
        runs = self.runs(job, namespace)
        if not runs:
            return ""
        run = runs[attempt]
        return run.stdout + run.stderr

    def container_setup(self) -> ContainerSetup:
        """How containers are set up, with the current volumes, executables and base env."""
        return ContainerSetup(
            self.api, self.volumes, self.executables, self.base_env, self.image_users
        )

    def sandbox(self, namespace: str, pod: str) -> Path:
        """The folder (under a base every uid can traverse) for a pod's mount points etc."""
        return self.run_base / namespace / pod

    def _sandbox(self, run: PodRun) -> Path:
        path = self.sandbox(run.namespace, run.pod)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o711)
        return path

    # -- the loop ---------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception as e:  # keep going; tests can assert on .errors
                self.errors.append(repr(e))
            self._stop.wait(self.poll_interval)

    def _sync(self) -> None:
        jobs = self.api.list("batch/v1/jobs", self.namespace)
        seen = set()
        for job in jobs:
            uid = job["metadata"]["uid"]
            seen.add(uid)
            with self._lock:
                state = self.jobs.setdefault(
                    uid, JobState(job["metadata"]["namespace"], job["metadata"]["name"], uid)
                )
            self._sync_job(job, state)
        with self._lock:
            gone = [s for uid, s in self.jobs.items() if uid not in seen and s.active]
        for state in gone:  # the Job was deleted: its running process goes too
            run = state.active
            if run is not None:
                self._kill(run)
                run.returncode, run.reason = -9, "Deleted"

    def _sync_job(self, job: JsonDict, state: JobState) -> None:
        spec, status = job.get("spec", {}), job.get("status") or {}
        now = time.monotonic()
        if state.done or any(
            c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            for c in status.get("conditions") or []
        ):
            state.done = True
            ttl = spec.get("ttlSecondsAfterFinished")
            if ttl is not None and state.finished_at is not None and now - state.finished_at >= ttl:
                self.api.delete("batch/v1/jobs", state.namespace, state.name, "Background")
                state.finished_at = None
            return
        run = state.active
        if spec.get("suspend"):
            if run is not None:
                self._kill(run)
                run.returncode, run.reason = -15, "Suspended"
                self.api.delete("v1/pods", state.namespace, run.pod)
            self._job_status(
                state,
                {
                    "active": 0,
                    "ready": 0,
                    "conditions": [self._condition("Suspended", "JobSuspended", "Job suspended")],
                },
            )
            return
        if state.start is None:
            state.start = now
            self._job_status(state, {"startTime": _now(), "active": 0})
        deadline = spec.get("activeDeadlineSeconds")
        if deadline is not None and now - state.start > deadline:
            if run is not None:
                self._kill(run)
                self._finish_pod(run, 137, "DeadlineExceeded")
            self._fail(state, "DeadlineExceeded", "Job was active longer than specified deadline")
            return
        if run is None:
            if now >= state.next_attempt:
                self._start_pod(job, state)
            return
        if run.process is None:  # Pending on a config error: retry like a kubelet
            self._try_run(job, run)
            return
        code = run.process.poll()
        if code is None and now - run.started > self.max_runtime:
            self._kill(run)
            code = run.process.poll() if run.process.poll() is not None else -9
        if code is None:
            return
        self._finish_pod(run, code, "Completed" if code == 0 else "Error")
        if code == 0:
            state.succeeded += 1
            if state.succeeded >= int(spec.get("completions") or 1):
                self._succeed(state)
            else:
                self._job_status(state, {"active": 0, "ready": 0, "succeeded": state.succeeded})
        else:
            state.failed += 1
            if state.failed > int(spec.get("backoffLimit", 6)):
                self._fail(
                    state, "BackoffLimitExceeded", "Job has reached the specified backoff limit"
                )
            else:
                state.next_attempt = now + min(self.backoff * 2 ** (state.failed - 1), 5.0)
                self._job_status(state, {"active": 0, "ready": 0, "failed": state.failed})

    # -- job status -------------------------------------------------------------------------

    @staticmethod
    def _condition(type_: str, reason: str, message: str) -> JsonDict:
        now = _now()
        return {
            "type": type_,
            "status": "True",
            "reason": reason,
            "message": message,
            "lastProbeTime": now,
            "lastTransitionTime": now,
        }

    def _job_status(self, state: JobState, status: JsonDict) -> None:
        try:
            self.api.patch(
                "batch/v1/jobs",
                state.namespace,
                state.name,
                {"status": status},
                subresource="status",
            )
        except ApiStatusError as e:
            if e.status != 404:
                raise

    def _succeed(self, state: JobState) -> None:
        state.done, state.finished_at = True, time.monotonic()
        self._job_status(
            state,
            {
                "active": 0,
                "ready": 0,
                "succeeded": state.succeeded,
                "failed": state.failed,
                "completionTime": _now(),
                "conditions": [
                    self._condition(
                        "SuccessCriteriaMet",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods",
                    ),
                    self._condition(
                        "Complete",
                        "CompletionsReached",
                        "Reached expected number of succeeded pods",
                    ),
                ],
            },
        )

    def _fail(self, state: JobState, reason: str, message: str) -> None:
        state.done, state.finished_at = True, time.monotonic()
        self._job_status(
            state,
            {
                "active": 0,
                "ready": 0,
                "succeeded": state.succeeded,
                "failed": state.failed,
                "conditions": [
                    self._condition("FailureTarget", reason, message),
                    self._condition("Failed", reason, message),
                ],
            },
        )

    # -- pods -------------------------------------------------------------------------------

    def _start_pod(self, job: JsonDict, state: JobState) -> None:
        template = job["spec"].get("template") or {}
        meta = job["metadata"]
        suffix = "".join(random.choices(_POD_SUFFIX_CHARS, k=5))
        name = f"{meta['name']}-{suffix}"
        labels = dict((template.get("metadata") or {}).get("labels") or {})
        labels.update(
            {
                "job-name": meta["name"],
                "controller-uid": meta["uid"],
                "batch.kubernetes.io/job-name": meta["name"],
                "batch.kubernetes.io/controller-uid": meta["uid"],
            }
        )
        pod_spec = json.loads(json.dumps(template.get("spec") or {}))
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": state.namespace,
                "labels": labels,
                "annotations": dict((template.get("metadata") or {}).get("annotations") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": pod_spec,
        }
        try:
            created = self.api.create(pod, state.namespace)
        except ApiStatusError as e:  # PodSecurity, quota...: the Job controller's FailedCreate
            if e.status not in (403, 422):
                raise
            state.create_failures += 1
            state.next_attempt = time.monotonic() + min(self.backoff * 2**state.create_failures, 10)
            with contextlib.suppress(ApiStatusError):
                self.api.create(event(job, "FailedCreate", f"Error creating: {e.message}",
                                      "job-controller"), state.namespace)  # fmt: skip
            return
        root = self.workdir / state.namespace / name
        root.mkdir(parents=True)
        run = PodRun(state.namespace, meta["name"], name, root)
        if self._log_registry is not None:
            self._log_registry[(state.namespace, name)] = root
        with self._lock:
            state.runs.append(run)
        self._job_status(state, {"active": 1, "ready": 0})
        self._try_run(job, run, created)

    def _pod_status(self, run: PodRun, status: JsonDict) -> None:
        try:
            self.api.patch(
                "v1/pods", run.namespace, run.pod, {"status": status}, subresource="status"
            )
        except ApiStatusError as e:
            if e.status != 404:
                raise

    def _try_run(self, job: JsonDict, run: PodRun, pod: JsonDict | None = None) -> None:
        pod = pod or self.api.get("v1/pods", run.namespace, run.pod)
        if pod is None:  # the pod was deleted before it started
            run.returncode, run.reason = -9, "Deleted"
            return
        containers = pod["spec"].get("containers") or []
        container = containers[0] if containers else {}
        placed = self.scheduler.admit(pod, container)
        if placed is None:  # Unschedulable, or ContainerCreating (volumes): retried
            return
        pod = placed
        try:
            prepared = self.container_setup().prepare(pod, container, self._sandbox(run))
        except ConfigError as e:
            if e.reason == "Unschedulable":
                status: JsonDict = unschedulable_status(str(e))
            else:
                status = {
                    "phase": "Pending",
                    "containerStatuses": [
                        {
                            "name": container.get("name", ""),
                            "ready": False,
                            "restartCount": 0,
                            "image": container.get("image", ""),
                            "imageID": "",
                            "started": False,
                            "state": {"waiting": {"reason": e.reason, "message": str(e)}},
                        }
                    ],
                }
            if run.config_error != str(e):
                run.config_error = str(e)
                self._pod_status(run, status)
            return
        run.termination_log = prepared.termination_log
        run.identity = prepared.identity
        started = _now()
        with open(run.root / "stdout", "wb") as out, open(run.root / "stderr", "wb") as err:
            try:
                run.process = subprocess.Popen(
                    prepared.argv,
                    env=prepared.env,
                    cwd=prepared.cwd,
                    stdout=out,
                    stderr=err,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError as e:  # like a runtime failing to start the container
                err.write(f"{e}\n".encode())
                run.process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(128)"])
        run.started = time.monotonic()
        self._pod_status(
            run,
            {
                "phase": "Running",
                "hostIP": "127.0.0.1",
                "podIP": "127.0.0.1",
                "startTime": started,
                "conditions": [
                    {"type": t, "status": "True", "lastTransitionTime": started}
                    for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
                ],
                "containerStatuses": [
                    {
                        "name": container.get("name", ""),
                        "ready": True,
                        "restartCount": 0,
                        "started": True,
                        "image": container.get("image", ""),
                        "imageID": "",
                        "containerID": f"local://{run.process.pid}",
                        "state": {"running": {"startedAt": started}},
                    }
                ],
            },
        )
        self._job_status_ready(run)

    def _job_status_ready(self, run: PodRun) -> None:
        with self._lock:
            state = next((s for s in self.jobs.values() if run in s.runs), None)
        if state is not None:
            self._job_status(state, {"active": 1, "ready": 1})

    def _finish_pod(self, run: PodRun, code: int, reason: str) -> None:
        run.returncode, run.reason = code, reason
        message = ""
        if run.termination_log is not None and run.termination_log.exists():
            message = run.termination_log.read_bytes()[:MAX_MESSAGE].decode(errors="replace")
        pod = self.api.get("v1/pods", run.namespace, run.pod)
        container = ((pod or {}).get("spec", {}).get("containers") or [{}])[0]
        if (
            not message
            and code != 0
            and container.get("terminationMessagePolicy") == "FallbackToLogsOnError"
        ):
            message = "\n".join((run.stdout + run.stderr).splitlines()[-80:])[-2048:]
        run.message = message
        terminated: JsonDict = {
            "exitCode": code if code >= 0 else 128 - code,
            "reason": reason,
            "startedAt": _now(),
            "finishedAt": _now(),
            "containerID": f"local://{run.process.pid if run.process else 0}",
        }
        if message:
            terminated["message"] = message
        self._pod_status(
            run,
            {
                "phase": "Succeeded" if code == 0 else "Failed",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "PodCompleted",
                        "lastTransitionTime": _now(),
                    }
                ],
                "containerStatuses": [
                    {
                        "name": container.get("name", ""),
                        "ready": False,
                        "restartCount": 0,
                        "started": False,
                        "image": container.get("image", ""),
                        "imageID": "",
                        "state": {"terminated": terminated},
                    }
                ],
            },
        )

    def _kill(self, run: PodRun, grace: float = 2.0) -> None:
        proc = run.process
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(grace)
