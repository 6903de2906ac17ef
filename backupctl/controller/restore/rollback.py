"""A RedisRestore that fails, and the undo of its steps (pure).

:meth:`Rollback.fail` makes the restore ``Failed`` with the reason and says
what happened to the data. Before the swap nothing Redis loads was touched,
so it plans the undo of each step taken, per pod in ``pods[].rollback``:
``Resume`` (a quiesced server back to its settings), then ``Discard`` (the
staged copy removed); ``Restart`` for an in-place pod already swapped (it
loads the restored files, so all servers agree again); and a scaled-down
StatefulSet scaled back. While that runs the restore says
``Progressing=True``, reason ``RollingBack``; :meth:`Rollback.undo` takes
one pass of it. After the swap the previous data stays in the dated folder
on each volume (docs/kubernetes.md says how to roll back by hand).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backupctl.controller.jobs import FAILED, RUNNING
from backupctl.controller.restore.commands import Commands
from backupctl.controller.restore.draft import Draft, job_error
from backupctl.controller.restore.model import IN_PLACE, DeletePod, job_name
from backupctl.controller.status import clip, condition
from backupctl.core.timefmt import format_time

#: Pod phases before the swap: nothing Redis loads has been touched.
_BEFORE_SWAP = ("Pending", "Staging", "Staged", "Quiesced")


class Rollback:
    """``Failed``, and the undo of what the restore did before the swap.
    Without a valid spec (``commands`` None) no Job can run: only the
    StatefulSets are scaled back."""

    def __init__(self, draft: Draft, commands: Commands | None) -> None:
        self.draft, self.commands = draft, commands

    def fail(self, reason: str, message: str) -> None:
        """``Failed``; before the swap, plan the undo of each step taken and
        start it."""
        draft, st = self.draft, self.draft.status
        message = clip(message)
        route, swapped = st.get("route"), False
        for pod in st.get("pods") or []:
            phase = pod.get("phase")
            if phase in ("Swapped", "Restarting", "Ready", "Verified"):
                swapped = True
            if not st.get("backupId") or st.get("phase") == "Verifying":
                continue
            if phase == "Quiesced" and route == IN_PLACE:
                pod["rollback"] = "Resume"
            elif phase in _BEFORE_SWAP:
                pod["rollback"] = "Discard"
            elif phase in ("Swapped", "Restarting") and route == IN_PLACE:
                pod["rollback"] = "Restart"  # it loads the restored files: all agree again
        if swapped:
            message += (
                f"; the volumes swapped so far keep their data from before the restore in "
                f"{_previous_names(st) or '.backupctl-previous-<time>'} (see docs/kubernetes.md "
                "to roll back)"
            )
        elif st.get("startTime"):
            message += "; the data Redis loads was not touched"
        st.update(phase="Failed", message=message, completionTime=format_time(draft.now))
        draft.condition("Failed", True, reason, message)
        draft.condition("Ready", False, reason, message)
        if self.left():
            draft.condition("Progressing", True, "RollingBack", "undoing the restore's steps")
            draft.look_again(0.0)
        else:
            draft.condition("Progressing", False, reason, message)

    def left(self) -> bool:
        """Whether any step is still to be undone."""
        st = self.draft.status
        return any(p.get("rollback") not in (None, "Done") for p in st.get("pods") or []) or any(
            sts.get("scaledDown") for sts in st.get("statefulSets") or []
        )

    def undo(self) -> None:
        """One pass of the undo planned by :meth:`fail`."""
        draft, st, target = self.draft, self.draft.status, self.draft.obs.target
        pods = st.get("pods") or []
        # A staging Job still running finishes first (its folder is removed next);
        # one whose pod cannot start (a missing Secret, past the start timeout) is not
        # waited for.
        busy = any(
            (v := draft.obs.jobs.get(job_name(draft.obs.name, "stage", i))) is not None
            and v.state == RUNNING
            and (v.waiting is None or not v.waiting.hard)
            and draft.stuck(v) is None  # one stuck past the start timeout is deleted
            for i in range(len(pods))
        )
        if not busy and self.commands is not None:
            for i, pod in enumerate(pods):
                self._undo_pod(self.commands, i, pod)
        for sts in st.get("statefulSets") or []:
            if not sts.get("scaledDown") or busy:
                continue
            if target is not None and target.statefulsets.get(sts["name"]) == sts["replicas"]:
                sts["scaledDown"] = False
            else:  # staged copies are hidden folders: Redis may start beside them
                draft.scale[sts["name"]] = int(sts["replicas"])
        if self.left():
            draft.look_again(2.0)
            return
        failed = condition(st, "Failed")
        draft.condition(
            "Progressing",
            False,
            str(failed.get("reason", "Failed")),
            "rolled back: Redis runs on the data it had before the restore",
        )

    def _undo_pod(self, commands: Commands, i: int, pod: dict[str, Any]) -> None:
        step = pod.get("rollback")
        if step in (None, "Done"):
            return
        draft = self.draft
        live = draft.find_pod(pod)
        if step in ("Resume", "Discard"):
            kind = "resume" if step == "Resume" else "discard"
            why = draft.stuck(draft.obs.jobs.get(job_name(draft.obs.name, kind, i)))
            if why is not None:  # its node is gone or cordoned: give up this undo
                pod["rollback"] = "Done"
                pod["message"] = f"{why}; " + (
                    "the server stays quiesced until its pod restarts"
                    if step == "Resume"
                    else f"the staged copy stays on {pod.get('pvc')} (a hidden "
                    ".backupctl-staging-* folder Redis ignores; remove it by hand)"
                )
                return
        if step == "Resume":
            if live is None or live.uid != pod.get("uid") or live.restarts != pod.get("restarts"):
                pod["rollback"] = "Discard"  # restarted: its settings are back anyway
            else:
                view = commands.ensure(commands.quiesce("resume", i, live), pod, record=False)
                if view is not None and view.state != RUNNING:
                    pod["rollback"] = "Discard"
                    if view.state == FAILED:
                        pod["message"] = f"resuming failed: {job_error(view)}"
        if pod["rollback"] == "Discard":
            view = commands.ensure(commands.discard(i), pod, record=False)
            if view is not None and view.state != RUNNING:
                pod["rollback"] = "Done"
        elif step == "Restart":
            if live is not None and live.uid == pod.get("uid"):
                draft.delete_pods.append(DeletePod(pod["name"], pod["uid"]))
            else:
                pod["rollback"] = "Done"


def _previous_names(status: Mapping[str, Any]) -> str:
    names = sorted(
        {str(p["previousData"]) for p in status.get("pods") or [] if p.get("previousData")}
    )
    return ", ".join(names)


__all__ = ["Rollback"]
