"""What the RedisRestore controller should do next (pure).

:func:`plan` takes what the controller observed about one RedisRestore (its
parsed spec, its status, its Jobs, the target's pods and StatefulSets, the
other restores of the namespace) and the time, and returns a :class:`Plan`:
the new status, the Jobs to create, the StatefulSets to scale, the pods to
delete, the Events to post and when to look again (``wake_at``). The operator writes the
status *first*, then acts; every action is idempotent (deterministic Job
names, AlreadyExists is done; scaling to a number; deleting a pod only with
its recorded uid as precondition), so a controller restarted between any
two steps redoes nothing and skips nothing. No kopf, kubernetes or redis.

This module is the entry: it runs the step of the current phase on one
:class:`~backupctl.controller.restore.draft.Draft` and lets a step that
finished go on to the next phase in the same pass. The steps live by
purpose: :mod:`~backupctl.controller.restore.preflight` and
:mod:`~backupctl.controller.restore.accept` (``Pending``),
:mod:`~backupctl.controller.restore.staging`,
:mod:`~backupctl.controller.restore.routes` (``Quiescing`` and the restart,
scale-down or in place), :mod:`~backupctl.controller.restore.restart`
(``Restarting``, ``Verifying``), :mod:`~backupctl.controller.restore.rollback`
(``Failed``); the Jobs they run are built by
:mod:`~backupctl.controller.restore.commands`.

The flow (``status.phase``; each pod's progress in ``status.pods[].phase``):

``Pending``
    Wait while the spec's ``fromBackup`` RedisBackup or the target is
    missing, or while another RedisRestore of the same target runs (or an
    older one waits): Ready=False with the reason. Then record the target's
    pods, PVCs and StatefulSets (their replica counts) and run two Jobs:
    ``<name>-resolve`` (``backupctl restore ... --dry-run``: the backup is
    resolved ONCE, ``latest`` included; missing or incomplete fails here)
    and ``<name>-check`` (``backupctl check-redis``: each server's version,
    role, cluster mode, CONFIG; in cluster mode the node id, cluster_state and
    the slots its shard serves). Refused: a backup taken by a newer Redis
    major (or RDB format) than the target runs, a target without exactly one
    primary, and for the in-place route a server without CONFIG.
    A cluster backup set into a Redis Cluster (in place only): each pod is
    mapped to the backup shard whose slot ranges its shard serves now
    (:func:`cluster_sources`, from what Redis said, never the pod name);
    another shard count or layout, or a cluster_state not ok: refused.
``Staging``
    ``<name>-stage-<i>`` per data PVC (``restore --stage-only``): download
    and verify into a hidden folder of the volume while Redis keeps
    serving. Every replica gets the same backup as the primary (a cluster:
    as its shard's primary).
``Quiescing``
    Stop Redis from writing to its volume. A plain StatefulSet is scaled to
    0 (the original replicas are in ``status.statefulSets``) and the pods
    must be gone. An operator-managed target (OpsTree, Spotahome, a
    selector), whose operator would undo a scale-down, goes the in-place
    route: ``<name>-quiesce-<i>`` (``quiesce-redis``: ``save ""``,
    ``appendonly no``, ``repl-diskless-sync yes``, ``replica-priority 0``).
``Restarting``
    ``<name>-swap-<i>`` (``restore --swap``): the staged files into place,
    the previous ones into ``.backupctl-previous-<time>/``. Then the plain
    StatefulSet is scaled back; in place, the primary's pod is deleted
    first (it restarts on the restored files with its own configuration),
    and once it is ready the replicas' pods; a Redis Cluster's pods all at
    once. A pod that restarted on its own while quiesced (its settings back
    to normal) stops the restore.
``Verifying``
    ``<name>-verify`` (``check-redis --expect-keys N``): the primary loaded
    exactly the backup's key count, every replica is in sync and holds the
    same data (DEBUG DIGEST where allowed); a cluster: ``restore
    --to-cluster --verify-only`` (per shard). Then ``Completed`` with
    ``restoredKeys``.
``Failed``
    With the reason in the ``Failed`` condition. Before the swap nothing
    the servers load was touched and the controller undoes its own steps
    (``Progressing=True``, reason ``RollingBack``, while it runs): staged
    copies discarded (``<name>-discard-<i>``), quiesced servers resumed
    (``<name>-resume-<i>``), the StatefulSet scaled back. After the swap the
    previous data stays in the dated folder on each volume (docs/kubernetes.md: how to
    roll back by hand).

A restore never runs twice: ``Completed``/``Failed`` are final, and the
status says how far it got, so later pod or controller restarts only
resume an unfinished restore at the step it was at.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from backupctl.controller.restore.commands import Commands
from backupctl.controller.restore.draft import Draft, Failure, Wait
from backupctl.controller.restore.model import Observed, Plan, is_finished
from backupctl.controller.restore.preflight import Preflight
from backupctl.controller.restore.restart import Restart, Verify
from backupctl.controller.restore.rollback import Rollback
from backupctl.controller.restore.routes import route_of
from backupctl.controller.restore.staging import Staging
from backupctl.controller.spec_fields import SpecError


def plan(obs: Observed, now: datetime) -> Plan:
    """The next step for one RedisRestore (see the module docstring)."""
    draft = Draft(obs, now)
    draft.status["observedGeneration"] = obs.generation
    if is_finished(obs.status):
        draft.look_again(None)
        return draft.plan()
    spec = None if isinstance(obs.spec, SpecError) else obs.spec
    commands = Commands(draft, spec) if spec is not None else None
    rollback = Rollback(draft, commands)
    try:
        if draft.status.get("phase") == "Failed":
            rollback.undo()
        elif commands is None:
            raise Failure("InvalidSpec", str(obs.spec))
        else:
            draft.fail_stuck()
            _advance(draft, commands)
    except Wait as w:
        try:
            draft.progress("Waiting", str(w))
            draft.timeout(str(w))
            draft.look_again(2.0)
        except Failure as f:
            rollback.fail(f.reason, f.message)
    except Failure as f:
        rollback.fail(f.reason, f.message)
    draft.transition_events()
    return draft.plan()


def _advance(draft: Draft, commands: Commands) -> None:
    """Run the current phase's step, and the next one's while a step says
    its phase is done."""
    while _step(draft, commands)():
        pass


def _step(draft: Draft, commands: Commands) -> Callable[[], bool]:
    phase = draft.status.get("phase")
    if phase in (None, "Pending"):
        return Preflight(draft, commands).run
    route = route_of(draft, commands)
    steps: dict[str, Callable[[], bool]] = {
        "Staging": Staging(draft, commands, route).run,
        "Quiescing": route.quiesce,
        "Restarting": Restart(draft, commands, route).run,
        "Verifying": Verify(draft, commands).run,
    }
    if phase not in steps:
        raise Failure("UnknownPhase", f"unknown phase {phase!r}")
    return steps[phase]


__all__ = ["plan"]
