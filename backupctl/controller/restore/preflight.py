"""The ``Pending`` phase of a RedisRestore: may it start, and can it work (pure).

A restore waits (``Ready=False`` with the reason) while its ``fromBackup``
RedisBackup or its target is missing, while a pod has no data volume or
node, or while another restore of the same target runs (or an older one
waits). Then it records the target -- pods, PVCs, StatefulSets and their
replica counts, the route -- and that status is written before any Job
exists. The ``resolve`` and ``check`` Jobs follow; their reports go to
:func:`backupctl.controller.restore.accept.accept`, and on success the
restore enters ``Staging``.
"""

from __future__ import annotations

import re
from typing import Any

from backupctl.controller.identity import RunAs, probe_owner
from backupctl.controller.jobs import FAILED, RUNNING, SUCCEEDED
from backupctl.controller.restore.accept import accept
from backupctl.controller.restore.commands import Commands
from backupctl.controller.restore.draft import Draft, Failure, job_error
from backupctl.controller.restore.model import job_name, spec_target_key
from backupctl.controller.spec import restore_source_target
from backupctl.controller.status import Event
from backupctl.core.timefmt import format_time


class Preflight:
    """``Pending``: wait for the turn, record the target, resolve and check."""

    def __init__(self, draft: Draft, commands: Commands) -> None:
        self.draft, self.commands = draft, commands

    def run(self) -> bool:
        """True once the restore entered ``Staging``."""
        draft, st, obs = self.draft, self.draft.status, self.draft.obs
        st.setdefault("phase", "Pending")
        if not st.get("startTime"):
            if self.may_start():
                self.start()  # the recorded start goes to the API before any Job exists
            return False
        probed = self.probe()
        names = [job_name(obs.name, "resolve"), job_name(obs.name, "check")]
        resolved, checked = (obs.jobs.get(n) for n in names)
        if resolved is None:
            draft.jobs.append(self.commands.resolve())
        if checked is None:
            draft.jobs.append(self.commands.check())
        if resolved is not None and resolved.state == FAILED:
            raise Failure("BackupNotFound", f"resolving the backup failed: {job_error(resolved)}")
        if checked is not None and checked.state == FAILED:
            raise Failure(
                "TargetCheckFailed", f"checking the target Redis failed: {job_error(checked)}"
            )
        draft.progress(
            "Resolving", "resolving the backup and checking the target", (resolved, checked)
        )
        if (
            not probed
            or resolved is None
            or checked is None
            or resolved.state != SUCCEEDED
            or checked.state != SUCCEEDED
        ):
            draft.look_again(2.0)
            return False
        accept(st, resolved.result or {}, checked.result or {})
        draft.enter("Staging", "StagingStarted", f"staging backup {st['backupId']} on every volume")
        return True

    def may_start(self) -> bool:
        """Whether everything needed is there and it is this restore's turn;
        else ``Pending`` with the reason."""
        draft, obs = self.draft, self.draft.obs
        if obs.source_problem is not None:
            draft.waiting("BackupSourceNotFound", obs.source_problem)
            return False
        if obs.target is None:
            reason, message = obs.target_problem or ("TargetNotFound", "the target was not found")
            draft.waiting(reason, message)
            return False
        if not obs.target.pods:
            draft.waiting("TargetNotReady", f"{obs.target.label} has no pods")
            return False
        if any(not p.target.data_pvc or not p.target.node_name for p in obs.target.pods):
            draft.waiting(
                "DataVolumeNotFound",
                f"every pod of {obs.target.label} needs a PersistentVolumeClaim at its data "
                "directory and a node",
            )
            return False
        if obs.backups:
            draft.waiting("WaitingForBackup", _backups_text(obs.backups))
            return False
        mine = (obs.created, obs.name)
        key = spec_target_key(self.commands.spec)
        for other in obs.others:
            if other.target_key != key or other.name == obs.name:
                continue
            if other.active or (not other.started and (other.created, other.name) < mine):
                draft.waiting(
                    "WaitingForRestore",
                    f"RedisRestore {other.name} restores the same target; this one starts when "
                    "it has finished",
                )
                return False
        return True

    def probe(self) -> bool:
        """Each pod's user as recorded at the start; where the manifests set
        none, a ``probe-<i>`` Job reads the data volume's owner first (the
        image decides the user, e.g. redis's entrypoint steps down to 999).
        True once every pod's user is known."""
        done = True
        for i, pod in enumerate(self.draft.status["pods"]):
            if pod.get("runAsUser") is not None:
                continue
            view = self.commands.ensure(self.commands.probe(i), pod, record=False)
            if view is None or view.state == RUNNING:
                done = False
            elif view.state == FAILED:
                raise Failure(
                    "ProbeFailed",
                    f"reading the owner of {pod['pvc']} (pod {pod['name']}) failed: "
                    f"{job_error(view)}",
                )
            else:
                owner = probe_owner(view.result)
                if owner is None:
                    raise Failure(
                        "ProbeFailed", f"Job {view.name} reported no owner of {pod['pvc']}"
                    )
                run_as = RunAs.from_status(pod).with_owner(*owner)
                _refuse_root(run_as, pod["name"], f"the owner of {pod['pvc']}")
                pod.update(run_as.to_status())
        return done

    def start(self) -> None:
        """Record the target as it is now: what every later step works on."""
        draft, st, target = self.draft, self.draft.status, self.draft.obs.target
        assert target is not None
        for p in target.pods:
            _refuse_root(p.target.run_as, p.name, "its Redis container")
        st.update(
            phase="Pending",
            startTime=format_time(draft.now),
            stepStartTime=format_time(draft.now),
            target=target.label,
            route=target.route,
            sourceTarget=restore_source_target(self.commands.spec, draft.obs.namespace),
            statefulSets=[
                {"name": n, "replicas": r} for n, r in sorted(target.statefulsets.items())
            ],
            pods=[
                _drop_none(
                    {
                        "name": p.name,
                        "pvc": p.target.data_pvc,
                        "dataSubPath": p.target.data_sub_path,
                        "node": p.target.node_name,
                        "phase": "Pending",
                        **(p.target.run_as or RunAs()).to_status(),
                    }
                )
                for p in sorted(target.pods, key=lambda p: _ordinal_key(p.name))
            ],
            message=f"restoring into {target.label}",
        )
        draft.condition("Ready", False, "Restoring", f"restoring into {target.label}")
        draft.condition("Progressing", True, "Started", "the restore started")
        draft.condition("Failed", False, "Started", "")
        draft.events.append(
            Event("Normal", "Started", f"restoring into {target.label} ({target.route} route)")
        )
        draft.look_again(0.0)


def _refuse_root(run_as: RunAs | None, pod: str, whose: str) -> None:
    if run_as is not None and run_as.user == 0:
        raise Failure(
            "RunsAsRoot",
            f"pod {pod}: {whose} is root (uid 0), and backupctl's Jobs never run as root: set "
            "securityContext.runAsUser/runAsGroup/fsGroup on the Redis container to a non-root "
            "user that owns the data directory",
        )


def _backups_text(names: tuple[str, ...]) -> str:
    return (
        f"backup Job {', '.join(names)} of the same target is running; the restore goes on "
        "when it has finished (a BGSAVE after the swap would overwrite the restored data)"
    )


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _ordinal_key(name: str) -> tuple[str, int]:
    m = re.match(r"^(.*)-(\d+)$", name)
    return (m.group(1), int(m.group(2))) if m else (name, -1)


__all__ = ["Preflight"]
