"""The kopf handlers of the RedisBackup controller (registered on import).

One async daemon per RedisBackup (:func:`backup_daemon`) runs
:func:`~backupctl.controller.backup.reconcile.reconcile` passes and sleeps
until the plan's wake-up time, at most
:data:`~backupctl.controller.backup.state.MAX_SLEEP`; a spec change or a
change of one of its Jobs (both noticed by
:meth:`~backupctl.controller.backup.state.Controller.watch_changes` in kopf's
caches), or a jump of the clock, wakes it early. Jobs reach the daemons
through a kopf index (:func:`backup_jobs`).

Failures the user can fix (bad spec, missing target, missing Secret) show as
``Ready=False`` and are retried inside the loop, so a fix applies at once;
API failures raise :class:`kopf.TemporaryError` with a growing delay and kopf
restarts the daemon. The controller never reads Secrets or backup data: Jobs
do.
"""

from __future__ import annotations

from typing import Any

import kopf

from backupctl.controller.backup.model import retry_delay
from backupctl.controller.backup.reconcile import PLURAL, reconcile
from backupctl.controller.backup.state import Controller, JobIndex
from backupctl.controller.jobs import JobView
from backupctl.controller.kube import ApiError
from backupctl.controller.manifests import LABEL_BACKUP
from backupctl.controller.observe import job_view
from backupctl.controller.spec import API_GROUP, API_VERSION


@kopf.index("batch", "v1", "jobs", labels={LABEL_BACKUP: kopf.PRESENT})
async def backup_jobs(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, memo: Any, **_: Any
) -> dict[tuple[str, str], tuple[str, JobView]]:
    """The Jobs of each RedisBackup, by (namespace, backup label): the
    owner's uid (a re-created RedisBackup of the same name is another
    owner) and the Job as the planner sees it. Tells the controller which
    resource's Jobs changed (:meth:`Controller.watch_changes` compares those)."""
    owners = [o.get("uid", "") for o in body.get("metadata", {}).get("ownerReferences") or []]
    key = (namespace or "", str(labels[LABEL_BACKUP]))
    controller: Controller | None = memo.get("controller")
    if controller is not None:
        controller.job_changed(key)
    return {key: (owners[0] if owners else "", job_view(body))}


@kopf.daemon(API_GROUP, API_VERSION, PLURAL, cancellation_timeout=5.0, backoff=30.0)
async def backup_daemon(
    name: str,
    namespace: str | None,
    body: kopf.Body,
    stopped: kopf.DaemonStopped,
    memo: Any,
    retry: int,
    **kwargs: Any,
) -> None:
    """Run the RedisBackup: observe -> plan -> execute, then sleep."""
    controller: Controller = memo.controller
    backup_jobs: JobIndex = kwargs["backup_jobs"]  # the kopf index above
    controller.jobs = backup_jobs
    namespace = namespace or ""
    tracker = controller.tracker(namespace, name)
    tracker.body, tracker.stopped = body, stopped
    try:
        while not stopped:
            tracker.wake.clear()
            tracker.seen_state = controller.state_of(tracker)
            try:
                async with controller.passes.held():  # a cron slot wakes thousands at once
                    delay = await reconcile(controller, tracker, body, backup_jobs)
            except (ApiError, OSError) as e:  # the API server, not the user
                tracker.status = None  # re-read the status on the next attempt
                controller.metrics.reconcile_error("RedisBackup")
                raise kopf.TemporaryError(
                    f"Kubernetes API: {e}", delay=retry_delay(retry + 1)
                ) from e
            await tracker.sleep(delay, stopped)
    finally:
        if (
            stopped.reason is not None
            and stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED
        ):
            controller.forget(namespace, name)


__all__ = ["backup_daemon", "backup_jobs"]
