"""The kopf handlers of the RedisBackup controller (registered on import).

One async daemon per RedisBackup (:func:`backup_daemon`) runs
:func:`~backupctl.controller.backup.reconcile.reconcile` passes and sleeps
until the plan's wake-up time, at most
:data:`~backupctl.controller.backup.state.MAX_SLEEP`; a spec change or a
change of one of its Jobs (both noticed by
:meth:`~backupctl.controller.backup.state.Controller.watch_changes` in kopf's
caches), or a jump of the clock, wakes it early. Jobs reach the daemons
through the controller's own index (:mod:`backupctl.controller.backup.job_watch`,
started with the operator): a daemon's first pass waits for its first list.

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
from backupctl.controller.backup.state import Controller
from backupctl.controller.kube import ApiError
from backupctl.controller.spec import API_GROUP, API_VERSION


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
    await controller.jobs_listed.wait()  # the index of Jobs holds them all
    backup_jobs = controller.jobs
    assert backup_jobs is not None
    namespace = namespace or ""
    tracker = controller.tracker(namespace, name)
    tracker.body, tracker.stopped = body, stopped
    later = False  # a pass due only for a pod check waits behind the others
    try:
        while not stopped:
            tracker.wake.clear()
            tracker.seen_state = controller.state_of(tracker)
            try:
                delay = await reconcile(controller, tracker, body, backup_jobs, later)
            except (ApiError, OSError) as e:  # the API server, not the user
                tracker.status = None  # re-read the status on the next attempt
                controller.metrics.reconcile_error("RedisBackup")
                raise kopf.TemporaryError(
                    f"Kubernetes API: {e}", delay=retry_delay(retry + 1)
                ) from e
            woken = await tracker.sleep(delay, stopped)
            later = tracker.check_pass and not woken
    finally:
        if (
            stopped.reason is not None
            and stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED
        ):
            controller.forget(namespace, name)


__all__ = ["backup_daemon"]
