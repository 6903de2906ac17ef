"""What wakes a RedisBackup daemon for another pass after it created a Job.

The Job's own watch event does not (issue 15: at a cron slot that pass -- observe, list
the Jobs, plan, nothing to do -- was a third of the controller's work and delayed the
other resources' Jobs); any later change of the Job does, and the check of its pod is
still due POD_CHECK_FIRST seconds after it was created.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf

from backupctl.controller import app
from backupctl.controller.backup import reconcile
from backupctl.controller.backup.state import CHANGE_POLL, FULL_SCAN_POLLS, Controller, Tracker
from backupctl.controller.heap import Heap
from backupctl.controller.manifests import LABEL_BACKUP, label_value
from backupctl.controller.observe import job_view

NS, NAME, UID = "redis", "nightly", "uid-1"
T0 = datetime(2030, 1, 1, 2, tzinfo=UTC)


def job(done: bool = False) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if done:
        status = {"conditions": [{"type": "Complete", "status": "True"}]}
    labels = {LABEL_BACKUP: label_value(NAME)}
    return {"metadata": {"name": "nightly-1", "labels": labels}, "status": status}


def woken_after_index_shows(
    created: dict[str, Any], indexed: dict[str, Any] | None, *, reported: bool = True
) -> float | None:
    """Seconds until the daemon wakes (None: not within 6 s) once kopf's index holds
    ``indexed`` (None: the Job was deleted), after the pass that created ``created``
    (the index did not hold it yet when the pass began). ``reported``: kopf called the
    index handler (it does for an added or changed Job, not for a deleted one)."""
    controller = Controller(kube=None, image="img", clock=None, heap=Heap(lambda: None))  # type: ignore[arg-type]
    key = (NS, label_value(NAME))
    index: dict[tuple[str, str], list[Any]] = {}
    controller.jobs = index  # type: ignore[assignment]
    tracker = controller.tracker(NS, NAME)
    tracker.body = {"metadata": {"name": NAME, "generation": 1}}  # type: ignore[assignment]
    tracker.seen_state = controller.state_of(tracker)  # the pass begins
    tracker.expect(job_view(created), T0, T0 + timedelta(seconds=reconcile.POD_CHECK_FIRST))
    index[key] = [(UID, job_view(indexed))] if indexed is not None else []  # its watch event
    if reported:
        controller.job_changed(key)

    async def watch() -> float | None:
        task = asyncio.create_task(controller.watch_changes())
        started = time.monotonic()
        try:
            await asyncio.wait_for(tracker.wake.wait(), 6.0)
            return time.monotonic() - started
        except TimeoutError:
            return None
        finally:
            task.cancel()

    return asyncio.run(watch())


def test_the_created_jobs_own_watch_event_does_not_wake_the_daemon() -> None:
    assert woken_after_index_shows(job(), job()) is None


def test_a_change_of_that_job_wakes_it_at_the_next_scan() -> None:
    woken = woken_after_index_shows(job(), job(done=True))
    assert woken is not None and woken < 2 * CHANGE_POLL


def test_a_deleted_job_wakes_it_at_the_next_full_scan() -> None:
    woken = woken_after_index_shows(job(), None, reported=False)
    assert woken is not None and woken < (FULL_SCAN_POLLS + 1) * CHANGE_POLL


def test_its_pod_is_checked_after_pod_check_first_and_it_counts_as_seen() -> None:
    tracker = Tracker(NS, NAME)
    tracker.expect(job_view(job()), T0, T0 + timedelta(seconds=5))
    assert tracker.pod_checks == {"nightly-1": (0, T0 + timedelta(seconds=5))}
    assert "nightly-1" in tracker.seen
    assert tracker.listed_at == T0


def test_the_operator_has_no_change_handlers_so_it_keeps_no_diff_base() -> None:
    """app.NoDiffBase gives kopf no diff base: right only while no handler reacts to
    changes (@kopf.on.create/update/delete/field); one added must bring kopf's back."""
    registry = kopf.get_default_registry()
    assert [h.id for h in registry._changing.get_all_handlers()] == []
    assert {h.id for h in registry._spawning.get_all_handlers()} == {
        "backup_daemon",
        "restore_daemon",
    }
    assert app.NoDiffBase().fetch(body=kopf.Body({"metadata": {}})) is None
