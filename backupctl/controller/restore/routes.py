"""The two ways to keep Redis from overwriting what a restore puts in place,
and to start it again on the restored data (pure).

:class:`ScaleDown`, for a plain StatefulSet: scale it to 0 (the original
replicas are in ``status.statefulSets``; ``scaledDown`` is written before
the scale so a rollback knows) and wait until its pods are gone; after the
swap, scale it back and wait until every pod is ready.

:class:`InPlace`, for anything an operator owns (OpsTree, Spotahome, a
selector), whose operator would undo a scale-down: a ``quiesce`` Job per
server (``save ""``, ``appendonly no``, ...) and the instance it quiesced
recorded (uid, restarts); after the swap, delete the primary's pod first and
its replicas' once it is ready (a Redis Cluster: every pod at once). On
both routes a server that came back on its own before the swap stops the
restore (:meth:`Route.check_still_quiesced`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from backupctl.controller.jobs import FAILED, SUCCEEDED
from backupctl.controller.restore.commands import Commands
from backupctl.controller.restore.draft import Draft, Failure, job_error
from backupctl.controller.restore.model import SCALE_DOWN, DeletePod


class Route(ABC):
    """How one restore quiesces and restarts its target."""

    def __init__(self, draft: Draft, commands: Commands) -> None:
        self.draft, self.commands = draft, commands

    @abstractmethod
    def quiesce_text(self) -> str:
        """What ``Quiescing`` does, for the status."""

    @abstractmethod
    def quiesce_pods(self) -> bool:
        """Take this pass's steps; False: look again before reporting."""

    @abstractmethod
    def check_still_quiesced(self) -> None:
        """:class:`Failure` when Redis may have restarted on its old files."""

    @abstractmethod
    def restart(self) -> None:
        """After every swap: start Redis on the restored data; each pod
        ``Ready`` once it serves again."""

    def quiesce(self) -> bool:
        """``Quiescing``; True once the restore entered ``Restarting``."""
        draft = self.draft
        if not self.quiesce_pods():
            return False
        draft.progress("Quiescing", self.quiesce_text())
        if not all(p["phase"] == "Quiesced" for p in draft.status["pods"]):
            draft.look_again(2.0)
            return False
        draft.enter("Restarting", "Swapping", "putting the staged data in place")
        return True


class ScaleDown(Route):
    """A plain StatefulSet: scaled to 0 and back."""

    def quiesce_text(self) -> str:
        names = ", ".join(s["name"] for s in self.draft.status.get("statefulSets") or [])
        return f"scaling StatefulSet {names} to 0 so Redis cannot overwrite the staged data"

    def quiesce_pods(self) -> bool:
        draft, target = self.draft, self.draft.obs.target
        for sts in draft.status.get("statefulSets") or []:
            sts["scaledDown"] = True  # written before the scale: the rollback knows
            if target is None or target.statefulsets.get(sts["name"], 0) != 0:
                draft.scale[sts["name"]] = 0
        left = [p.name for p in target.pods] if target is not None else []
        if left:
            draft.timeout(f"pods {', '.join(left)} still exist after scaling to 0")
            draft.look_again(1.0)
            return False
        for pod in draft.status["pods"]:
            pod["phase"] = "Quiesced"
        return True

    def check_still_quiesced(self) -> None:
        target = self.draft.obs.target
        if (
            target is not None
            and target.pods
            and any(p["phase"] == "Quiesced" for p in self.draft.status["pods"])
        ):
            raise Failure(
                "TargetRestarted",
                f"pods {', '.join(p.name for p in target.pods)} came back before the staged "
                "data was swapped in (was the StatefulSet scaled up?)",
            )

    def restart(self) -> None:
        draft, st, target = self.draft, self.draft.status, self.draft.obs.target
        for sts in st.get("statefulSets") or []:
            if target is None or target.statefulsets.get(sts["name"]) != sts["replicas"]:
                draft.scale[sts["name"]] = int(sts["replicas"])
            else:
                sts["scaledDown"] = False
        for pod in st["pods"]:
            pod["phase"] = "Restarting" if pod["phase"] == "Swapped" else pod["phase"]
        ready = {p.name for p in (target.pods if target else ()) if p.ready and not p.terminating}
        for pod in st["pods"]:
            if pod["name"] in ready:
                pod["phase"] = "Ready"
        draft.progress("Restarting", "starting Redis on the restored data")
        if not all(p["phase"] == "Ready" for p in st["pods"]):
            draft.timeout("Redis did not become ready on the restored data")
            draft.look_again(1.0)


class InPlace(Route):
    """An operator-managed target: each server quiesced, then its pod deleted."""

    def quiesce_text(self) -> str:
        return "stopping Redis from writing to its volumes (in place)"

    def quiesce_pods(self) -> bool:
        for i, pod in enumerate(self.draft.status["pods"]):
            if pod["phase"] == "Quiesced":
                continue
            live = self.draft.live_pod(pod)
            view = self.commands.ensure(self.commands.quiesce("quiesce", i, live), pod)
            if view is not None and view.state == FAILED:
                raise Failure("QuiesceFailed", f"pod {pod['name']}: {job_error(view)}")
            if view is not None and view.state == SUCCEEDED:
                # The instance that was quiesced: a restart would undo it.
                pod.update(phase="Quiesced", uid=live.uid, restarts=live.restarts)
        return True

    def check_still_quiesced(self) -> None:
        for pod in self.draft.status["pods"]:
            if pod["phase"] not in ("Quiesced", "Swapped"):
                continue
            live = self.draft.find_pod(pod)
            if live is None or live.uid != pod.get("uid") or live.restarts != pod.get("restarts"):
                raise Failure(
                    "TargetRestarted",
                    f"pod {pod['name']} restarted while quiesced (its settings are back to "
                    "normal, so it could overwrite the restored files); restore stopped",
                )

    def restart(self) -> None:
        """The primary first; its replicas once it is ready. A Redis Cluster:
        every pod at once (a node down longer than ``cluster-node-timeout``
        makes its replica take over, and a replica must not sync the old data
        from a master not restarted yet)."""
        draft, st = self.draft, self.draft.status
        pods = st["pods"]
        waves = (
            [pods]
            if st.get("cluster")
            else [
                [p for p in pods if p.get("role") == "primary"],
                [p for p in pods if p.get("role") != "primary"],
            ]
        )
        for wave in waves:
            for pod in wave:
                live = draft.find_pod(pod)
                if pod["phase"] == "Swapped":
                    pod["phase"] = "Restarting"  # uid recorded at the quiesce
                if pod["phase"] != "Restarting":
                    continue
                if live is not None and live.uid == pod.get("uid"):
                    draft.delete_pods.append(DeletePod(pod["name"], pod["uid"]))
                elif live is not None and live.ready and not live.terminating:
                    pod["phase"] = "Ready"
            if not all(p["phase"] == "Ready" for p in wave):
                draft.progress("Restarting", "restarting Redis on the restored data")
                draft.timeout("Redis did not become ready on the restored data")
                draft.look_again(1.0)
                return


def route_of(draft: Draft, commands: Commands) -> Route:
    """The route the restore recorded at its start."""
    if draft.status.get("route") == SCALE_DOWN:
        return ScaleDown(draft, commands)
    return InPlace(draft, commands)


__all__ = ["InPlace", "Route", "ScaleDown", "route_of"]
