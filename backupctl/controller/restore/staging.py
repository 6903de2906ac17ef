"""The ``Staging`` phase of a RedisRestore (pure).

One ``stage`` Job per data volume downloads and verifies the backup into a
hidden folder of the volume while Redis keeps serving: every replica gets
the same archive as its primary (in a cluster, as its shard's primary). A
failed one fails the restore with nothing Redis loads touched; when every
volume is staged the restore enters ``Quiescing`` on its route.
"""

from __future__ import annotations

from backupctl.controller.jobs import FAILED, RUNNING
from backupctl.controller.restore.commands import Commands
from backupctl.controller.restore.draft import Draft, Failure, job_error
from backupctl.controller.restore.routes import Route


class Staging:
    """``Staging``: the backup onto every volume, beside the live data."""

    def __init__(self, draft: Draft, commands: Commands, route: Route) -> None:
        self.draft, self.commands, self.route = draft, commands, route

    def run(self) -> bool:
        """True once the restore entered ``Quiescing``."""
        draft = self.draft
        pods = draft.status["pods"]
        for i, pod in enumerate(pods):
            if pod["phase"] == "Staged":
                continue
            view = self.commands.ensure(self.commands.stage(i), pod)
            if view is None or view.state == RUNNING:
                pod["phase"] = "Staging"
            elif view.state == FAILED:
                pod["message"] = job_error(view)
                raise Failure("StagingFailed", f"staging on {pod['pvc']} failed: {job_error(view)}")
            else:
                pod.update(phase="Staged", keys=(view.result or {}).get("keys"))
                pod.pop("message", None)
        draft.progress("Staging", "downloading and verifying into every volume")
        if not all(p["phase"] == "Staged" for p in pods):
            draft.look_again(2.0)
            return False
        if draft.obs.backups:  # started after the restore did: it ends before Redis stops
            draft.progress(
                "WaitingForBackup",
                f"backup Job {', '.join(draft.obs.backups)} of the same target is running; "
                "Redis is stopped when it has finished",
            )
            draft.look_again(5.0)
            return False
        draft.enter("Quiescing", "Quiescing", self.route.quiesce_text())
        return True


__all__ = ["Staging"]
