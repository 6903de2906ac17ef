"""The ``Restarting`` and ``Verifying`` phases of a RedisRestore (pure).

``Restarting``: with every server quiesced, one ``swap`` Job per volume puts
the staged files into place and the previous ones into a dated folder
(``pods[].previousData``); then the route starts Redis on them. From the
first swap on, a failure no longer undoes anything: the old data stays in
that folder. ``Verifying``: one ``verify`` Job checks that the primary
loaded exactly the backup's key count and the replicas hold the same data
(a cluster: per shard); then ``Completed`` with ``restoredKeys``.
"""

from __future__ import annotations

from backupctl.controller.jobs import FAILED, RUNNING, SUCCEEDED
from backupctl.controller.restore.commands import Commands
from backupctl.controller.restore.draft import Draft, Failure, job_error
from backupctl.controller.restore.model import job_name
from backupctl.controller.restore.routes import Route
from backupctl.core.timefmt import format_time


class Restart:
    """``Restarting``: swap the staged data in, then start Redis on it."""

    def __init__(self, draft: Draft, commands: Commands, route: Route) -> None:
        self.draft, self.commands, self.route = draft, commands, route

    def run(self) -> bool:
        """True once the restore entered ``Verifying``."""
        draft = self.draft
        pods = draft.status["pods"]
        self.route.check_still_quiesced()
        for i, pod in enumerate(pods):
            if pod["phase"] != "Quiesced":
                continue
            view = self.commands.ensure(self.commands.swap(i), pod)
            if view is not None and view.state == FAILED:
                raise Failure("SwapFailed", f"swapping on {pod['pvc']} failed: {job_error(view)}")
            if view is not None and view.state == SUCCEEDED:
                previous = (view.result or {}).get("previous")
                pod["phase"] = "Swapped"
                if previous:
                    pod["previousData"] = str(previous).rstrip("/").rsplit("/", 1)[-1]
        if any(p["phase"] == "Quiesced" for p in pods):
            draft.progress("Swapping", "putting the staged data in place")
            draft.look_again(2.0)
            return False
        self.route.check_still_quiesced()
        self.route.restart()
        if not all(p["phase"] == "Ready" for p in pods):
            return False
        draft.enter("Verifying", "Verifying", "checking the restored data")
        return True


class Verify:
    """``Verifying``: the restored data checked, then ``Completed``."""

    def __init__(self, draft: Draft, commands: Commands) -> None:
        self.draft, self.commands = draft, commands

    def run(self) -> bool:
        """Always False: ``Completed`` (or a Failure) is the end."""
        draft, st = self.draft, self.draft.status
        view = draft.obs.jobs.get(job_name(draft.obs.name, "verify"))
        if view is None:
            draft.jobs.append(self.commands.verify())
        draft.progress("Verifying", "checking the restored data")
        if view is None or view.state == RUNNING:
            draft.look_again(2.0)
            return False
        if view.state == FAILED:
            raise Failure("VerificationFailed", job_error(view))
        restored = (view.result or {}).get("restoredKeys")
        for pod in st["pods"]:
            pod["phase"] = "Verified"
        st.update(
            phase="Completed",
            restoredKeys=int(restored) if restored is not None else None,
            completionTime=format_time(draft.now),
            message=f"restored {st['backupId']} into {st['target']}: {restored} keys",
        )
        draft.condition("Ready", True, "Restored", st["message"])
        draft.condition("Progressing", False, "Completed", st["message"])
        draft.condition("Failed", False, "Completed", "")
        return False


__all__ = ["Restart", "Verify"]
