"""The Jobs a RedisRestore runs, as manifests (pure).

Each step of a restore is one ``backupctl`` command in a Job with a
deterministic name (:func:`backupctl.controller.restore.model.job_name`):
``resolve`` and ``check`` before anything is touched, then per data volume
``stage``, ``quiesce`` (in place), ``swap``, and for the undo ``resume`` and
``discard``; ``verify`` at the end. :class:`Commands` builds them from the
spec and the pods recorded in the status, and :meth:`Commands.ensure` asks
for a Job once: it is planned only while the controller has not seen it.
"""

from __future__ import annotations

from typing import Any

from backupctl.controller.identity import RunAs, probe_args
from backupctl.controller.job_limits import CHECK, PROBE, STAGE, SWAP
from backupctl.controller.jobs import JobView
from backupctl.controller.manifests import (
    DATA_DIR,
    TERMINATION_LOG,
    TargetPod,
    owner_reference,
    redis_url,
    restore_job,
)
from backupctl.controller.restore.draft import Draft, Failure, cannot_start
from backupctl.controller.restore.model import KIND, PodView, job_name
from backupctl.controller.spec import GROUP_VERSION, RestoreSpec, store_url
from backupctl.core.datadir import STAGING_PREFIX

#: ``check-redis --wait`` of the preflight and of the verification Job.
CHECK_WAIT_SECONDS = 60
VERIFY_WAIT_SECONDS = 300


class Commands:
    """The Job manifests of one restore (its spec valid), and their planning."""

    def __init__(self, draft: Draft, spec: RestoreSpec) -> None:
        self.draft, self.spec = draft, spec

    @property
    def store(self) -> str:
        """The store URL (a ``fromBackup`` spec has its storage once resolved)."""
        assert self.spec.storage is not None, "no Job before the backup source is resolved"
        return store_url(self.spec.storage)

    @property
    def status(self) -> dict[str, Any]:
        return self.draft.status

    def ensure(
        self, job: dict[str, Any], pod: dict[str, Any], record: bool = True
    ) -> JobView | None:
        """The Job's view, or None after planning its creation. With ``record``
        the pod's ``jobName`` names it; the pod's message says while its pod
        cannot start."""
        name = job["metadata"]["name"]
        if record:
            pod["jobName"] = name
        view = self.draft.obs.jobs.get(name)
        waiting = f"Job {name} cannot start: "
        if view is None:
            self.draft.jobs.append(job)
        elif cannot_start(view) is not None:
            pod["message"] = waiting + str(cannot_start(view))
        elif str(pod.get("message", "")).startswith(waiting):
            del pod["message"]
        return view

    # -- before anything is touched -----------------------------------------------------

    def resolve(self) -> dict[str, Any]:
        """``restore --dry-run``: the backup resolved once (``latest`` too)."""
        args = ["restore", self.store, self.spec.backup, "--target",
                self.status["sourceTarget"], "--dry-run"]  # fmt: skip
        return self.manifest(job_name(self.draft.obs.name, "resolve"), args, storage=True)

    def check(self) -> dict[str, Any]:
        """``check-redis``: every server's version, role, cluster mode, CONFIG."""
        lives = [self.draft.live_pod(p) for p in self.status["pods"]]
        urls = [a for p in lives for a in ("--redis", redis_url(p.target, self.spec))]
        args = ["check-redis", *urls, "--wait", str(CHECK_WAIT_SECONDS)]
        name = job_name(self.draft.obs.name, "check")
        return self.manifest(name, args, redis=lives[0].target)

    # -- on each data volume --------------------------------------------------------------

    def stage(self, i: int) -> dict[str, Any]:
        """Download and verify pod ``i``'s archive into a hidden folder."""
        st = self.status
        pod = st["pods"][i]
        node = pod.get("sourceNode") or st.get("sourceNode")  # a cluster: the pod's shard
        if not node:
            raise Failure("InvalidStatus", f"the status names no backup node for {pod['name']}")
        args = ["restore", self.store, st["backupId"], "--target", st["sourceTarget"],
                "--node", node, "--to-dir", DATA_DIR, "--appendonly", "auto",
                "--stage-only"]  # fmt: skip
        return self.on_volume("stage", i, args)

    def quiesce(self, step: str, i: int, live: PodView) -> dict[str, Any]:
        """``quiesce-redis`` (``step`` ``quiesce``) or its undo (``resume``)."""
        state_file = f"{DATA_DIR}/{STAGING_PREFIX}{self.status['backupId']}/quiesce.json"
        args = ["quiesce-redis", "--redis", redis_url(live.target, self.spec),
                "--state-file", state_file]  # fmt: skip
        if step == "resume":
            args.append("--resume")
        return self.on_volume(step, i, args, storage=False, redis=live)

    def swap(self, i: int) -> dict[str, Any]:
        """The staged files into place, the previous ones into a dated folder
        (``--force``: an in-place target's Redis still runs there, quiesced)."""
        args = ["restore", self.store, self.status["backupId"], "--to-dir", DATA_DIR, "--swap",
                "--force"]  # fmt: skip
        return self.on_volume("swap", i, args, storage=False)

    def discard(self, i: int) -> dict[str, Any]:
        """Remove what was staged on pod ``i``'s volume."""
        args = ["restore", self.store, self.status["backupId"], "--to-dir", DATA_DIR,
                "--discard-staged"]  # fmt: skip
        return self.on_volume("discard", i, args, storage=False)

    def on_volume(
        self,
        step: str,
        i: int,
        args: list[str],
        storage: bool = True,
        redis: PodView | None = None,
    ) -> dict[str, Any]:
        """A Job on pod ``i``'s volume (as recorded at the start: the pod may be
        gone), pinned to its node; with ``redis``, also able to log in to it."""
        pod = self.status["pods"][i]
        recorded = _recorded(pod)
        return self.manifest(
            job_name(self.draft.obs.name, step, i),
            args,
            storage=storage,
            redis=redis.target if redis is not None else None,
            data=recorded,
            run_as=RunAs.from_status(pod),
            kind=STAGE if step == "stage" else SWAP,
        )

    def probe(self, i: int) -> dict[str, Any]:
        """Read the owner of pod ``i``'s data directory (the image's default
        non-root user runs it: a stat() needs no rights on the folder)."""
        pod = self.status["pods"][i]
        recorded = _recorded(pod)
        return self.manifest(
            job_name(self.draft.obs.name, "probe", i),
            [],
            data=recorded,
            kind=PROBE,
            command=probe_args(DATA_DIR, TERMINATION_LOG),
        )

    # -- at the end -------------------------------------------------------------------------

    def verify(self) -> dict[str, Any]:
        """The primary loaded exactly the backup's keys, replicas in sync; a
        cluster: per shard (``restore --to-cluster --verify-only``)."""
        st = self.status
        name = job_name(self.draft.obs.name, "verify")
        lives = [self.draft.live_pod(p) for p in st["pods"]]
        if st.get("cluster"):
            # Per shard: its master loaded exactly that shard's keys, replicas in
            # sync, cluster_state ok and every slot served on every node.
            args = ["restore", self.store, st["backupId"], "--target",
                    st["sourceTarget"], "--to-cluster", redis_url(lives[0].target, self.spec),
                    "--verify-only", "--timeout", str(VERIFY_WAIT_SECONDS)]  # fmt: skip
            return self.manifest(name, args, storage=True, redis=lives[0].target)
        urls = [a for p in lives for a in ("--redis", redis_url(p.target, self.spec))]
        args = ["check-redis", *urls, "--expect-keys", str(st["expectedKeys"]),
                "--wait", str(VERIFY_WAIT_SECONDS)]  # fmt: skip
        return self.manifest(name, args, redis=lives[0].target)

    def manifest(
        self,
        name: str,
        args: list[str],
        *,
        storage: bool = False,
        redis: TargetPod | None = None,
        data: TargetPod | None = None,
        run_as: RunAs | None = None,
        kind: str = CHECK,
        command: list[str] | None = None,
    ) -> dict[str, Any]:
        obs = self.draft.obs
        return restore_job(
            self.spec,
            name=name,
            namespace=obs.namespace,
            restore_name=obs.name,
            owner=owner_reference(GROUP_VERSION, KIND, obs.name, obs.uid),
            image=obs.image,
            args=args,
            storage=storage,
            redis=redis,
            data=data,
            run_as=run_as,
            kind=kind,
            command=command,
        )


__all__ = ["CHECK_WAIT_SECONDS", "VERIFY_WAIT_SECONDS", "Commands"]


def _recorded(pod: dict[str, Any]) -> TargetPod:
    """The target pod as ``status.pods[]`` recorded it at the start (it may be gone)."""
    return TargetPod(
        name=pod["name"],
        host=pod["name"],
        node_name=pod.get("node"),
        data_pvc=pod.get("pvc"),
        data_sub_path=pod.get("dataSubPath"),
    )
