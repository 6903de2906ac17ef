"""plan.py and observe.py: what the controller decides, as pure functions (milliseconds each).

Each test builds what the controller observed (spec, status, Jobs, target, time) and checks
the plan: Jobs to create or delete, the new status, Events, metrics outcomes, wake-up time.
A plan fed back its own status must be quiet (no repeated Events or Jobs): the helper
``settle`` applies a plan's status the way the operator does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from backupctl.controller.backup import plan as planning
from backupctl.controller.backup.model import (
    HISTORY_LIMIT,
    PREFETCH,
    TARGET_FRESH,
    CreateJob,
    DeleteJob,
    Observed,
    Plan,
    Problem,
    retry_delay,
)
from backupctl.controller.backup.runs import unrecorded
from backupctl.controller.backup.schedule_runs import slots_around
from backupctl.controller.jobs import (
    BACKUP,
    FAILED,
    PRUNE,
    RUNNING,
    SUCCEEDED,
    JobView,
    PodProblem,
)
from backupctl.controller.observe import job_view, pod_problem, pod_result
from backupctl.controller.schedule import next_run, prev_run
from backupctl.controller.spec import parse_backup
from backupctl.controller.spec_fields import SpecError
from backupctl.core.timefmt import format_time

CREATED = datetime(2030, 1, 1, 1, 0, tzinfo=UTC)
SLOT = datetime(2030, 1, 1, 2, 0, tzinfo=UTC)
TARGET = "StatefulSet/redis, pod redis-0"
STORAGE = {"s3": {"bucket": "b"}}


def spec(**fields: Any) -> Any:
    return parse_backup({"target": {"name": "redis"}, "storage": STORAGE, **fields})


def nightly(**fields: Any) -> Any:
    return spec(schedule="0 2 * * *", **fields)


def observed(
    backup: Any = None,
    status: Mapping[str, Any] | None = None,
    jobs: tuple[JobView, ...] = (),
    *,
    target: str | None = TARGET,
    **kw: Any,
) -> Observed:
    return Observed(
        name="nb",
        namespace="ns",
        generation=kw.pop("generation", 1),
        created=kw.pop("created", CREATED),
        spec=backup if backup is not None else nightly(),
        status=status or {},
        jobs=jobs,
        target=target,
        **kw,
    )


def job(
    slot: datetime = SLOT,
    state: str = RUNNING,
    *,
    component: str = BACKUP,
    result: Mapping[str, Any] | None = None,
    **kw: Any,
) -> JobView:
    suffix = "-prune" if component == PRUNE else ""
    finished = slot + timedelta(minutes=1) if state != RUNNING else None
    return JobView(
        name=f"nb-{slot:%Y%m%d%H%M%S}{suffix}",
        component=component,
        slot=slot,
        state=state,  # type: ignore[arg-type]
        started=slot,
        finished=finished,
        result=result,
        **kw,
    )


def scheduled_status(**extra: Any) -> dict[str, Any]:
    """A resource the controller has seen once: announced its first slot."""
    return {"observedGeneration": 1, "nextScheduleTime": format_time(SLOT), **extra}


def plan(obs: Observed, now: datetime) -> Plan:
    """:func:`backupctl.controller.backup.plan.plan`, with a described target resolved just now
    unless the test says when."""
    if obs.target is not None and obs.resolved_at is None:
        obs = replace(obs, resolved_at=now)
    return planning.plan(obs, now)


def settle(obs: Observed, p: Plan, now: datetime) -> Plan:
    """Plan again from the status ``p`` wrote, as the next pass does."""
    return plan(replace(obs, status=p.status), now)


def reasons(p: Plan) -> list[str]:
    return [e.reason for e in p.events]


def cond(p: Plan, type_: str) -> dict[str, Any]:
    return next(c for c in p.status["conditions"] if c["type"] == type_)


OK = {"ok": True, "id": "backup-20300101-020003", "size": 1234, "keys": 42, "sha256": "ab" * 32}


# --- scheduling ---------------------------------------------------------------------


def test_first_sight_resolves_the_target_before_anything_else() -> None:
    p = plan(observed(target=None), SLOT - timedelta(minutes=5))
    assert p.needs_target and not p.creates and not p.events


def test_first_sight_announces_the_next_run_and_is_ready() -> None:
    now = SLOT - timedelta(minutes=5)
    p = plan(observed(), now)
    assert not p.creates
    assert p.status["nextScheduleTime"] == "2030-01-01T02:00:00Z"
    assert p.status["phase"] == "Scheduled"
    assert p.status["observedGeneration"] == 1
    assert p.status["target"] == TARGET
    assert cond(p, "Ready")["status"] == "True"
    assert p.wake_at == SLOT - PREFETCH  # to resolve the target again just before the slot
    assert "lastScheduleTime" not in p.status


def test_the_target_is_resolved_again_shortly_before_each_slot() -> None:
    status = scheduled_status()
    long_ago = SLOT - timedelta(hours=3)
    early = plan(observed(status=status, resolved_at=long_ago), SLOT - timedelta(minutes=5))
    assert not early.needs_target and early.wake_at == SLOT - PREFETCH
    close = plan(observed(status=status, resolved_at=long_ago), SLOT - timedelta(seconds=20))
    assert close.needs_target
    just = SLOT - timedelta(seconds=20)
    done = plan(observed(status=status, resolved_at=just), just)
    assert not done.needs_target and done.wake_at == SLOT
    # At the slot, that resolution is fresh: the Job is made without reading the cluster.
    at_slot = plan(observed(status=status, resolved_at=just), SLOT + timedelta(seconds=1))
    assert [c.slot for c in at_slot.creates] == [SLOT]


def test_a_job_is_never_made_from_a_stale_target() -> None:
    stale = SLOT - TARGET_FRESH - timedelta(seconds=5)
    p = plan(observed(status=scheduled_status(), resolved_at=stale), SLOT + timedelta(seconds=1))
    assert p.needs_target and not p.creates


def test_a_due_slot_makes_one_job_named_after_the_slot_and_records_it_first() -> None:
    now = SLOT + timedelta(seconds=3)
    p = plan(observed(status=scheduled_status()), now)
    assert p.creates == (CreateJob(BACKUP, "nb-20300101020000", SLOT),)
    assert p.status["lastScheduleTime"] == "2030-01-01T02:00:00Z"
    assert p.status["history"] == [
        {"slot": "2030-01-01T02:00:00Z", "jobName": "nb-20300101020000", "phase": RUNNING}
    ]
    assert p.status["activeJobs"] == ["nb-20300101020000"]
    assert p.status["phase"] == RUNNING
    assert p.status["nextScheduleTime"] == "2030-01-02T02:00:00Z"
    # The operator posts JobCreated only when the API server really creates the Job.
    assert p.events == ()
    assert (
        p.creates[0].message == "Created Job nb-20300101020000 for the run at 2030-01-01T02:00:00Z"
    )


def test_a_slot_is_never_planned_twice_whether_or_not_its_job_is_seen_yet() -> None:
    now = SLOT + timedelta(seconds=3)
    obs = observed(status=scheduled_status())
    first = plan(obs, now)
    # The Job is in the watch cache: nothing to do.
    with_job = plan(replace(obs, status=first.status, jobs=(job(),), seen=frozenset()), now)
    assert not with_job.creates and not with_job.events
    # The Job is not in the watch cache yet (or the controller died before creating it):
    # the same name is planned again, which the API answers with AlreadyExists.
    again = settle(obs, first, now + timedelta(seconds=1))
    assert [c.name for c in again.creates] == ["nb-20300101020000"]
    assert again.status["lastScheduleTime"] == first.status["lastScheduleTime"]
    assert again.status["history"] == first.status["history"]


def test_a_job_created_before_a_restart_counts_even_without_status() -> None:
    """Defence in depth: the Jobs are the source of truth for the last slot."""
    p = plan(observed(status=scheduled_status(), jobs=(job(),)), SLOT + timedelta(minutes=5))
    assert not p.creates
    assert p.status["history"][0]["jobName"] == "nb-20300101020000"
    assert p.status["phase"] == RUNNING


def test_a_one_off_runs_once_for_its_creation_time() -> None:
    once = spec()
    obs = observed(once, status={"observedGeneration": 1})
    now = CREATED + timedelta(seconds=2)
    p = plan(obs, now)
    assert p.creates == (CreateJob(BACKUP, "nb-20300101010000", CREATED),)
    assert "nextScheduleTime" not in p.status
    done = job(CREATED, SUCCEEDED, result=OK)
    later = plan(replace(obs, status=p.status, jobs=(done,)), now + timedelta(days=3))
    assert not later.creates
    assert later.status["phase"] == SUCCEEDED
    assert plan(replace(obs, status=later.status), now + timedelta(days=9)).creates == ()


def test_forbid_makes_the_next_run_wait_for_the_active_job() -> None:
    status = scheduled_status(lastScheduleTime=format_time(SLOT))
    running = job(SLOT)
    now = SLOT + timedelta(days=1, seconds=5)
    p = plan(observed(status=status, jobs=(running,)), now)
    assert not p.creates and not p.deletes
    assert "waits for Job nb-20300101020000" in p.status["message"]
    assert reasons(p) == ["RunNotStarted"]
    assert settle(observed(status=status, jobs=(running,)), p, now).events == ()
    # When it finishes, the waiting run starts (still the latest slot).
    finished = replace(running, state=SUCCEEDED, result=OK, finished=now)
    after = plan(observed(status=p.status, jobs=(finished,)), now + timedelta(minutes=1))
    assert [c.name for c in after.creates] == ["nb-20300102020000"]


def test_replace_deletes_the_active_job_and_starts_the_new_one() -> None:
    status = scheduled_status(
        lastScheduleTime=format_time(SLOT),
        history=[{"slot": format_time(SLOT), "jobName": "nb-20300101020000", "phase": RUNNING}],
    )
    now = SLOT + timedelta(days=1, seconds=5)
    p = plan(observed(nightly(concurrencyPolicy="Replace"), status, (job(SLOT),)), now)
    assert [d.name for d in p.deletes] == ["nb-20300101020000"]
    assert [c.name for c in p.creates] == ["nb-20300102020000"]
    old = next(h for h in p.status["history"] if h["jobName"] == "nb-20300101020000")
    assert old["phase"] == FAILED and "replaced" in old["message"]
    assert "JobReplaced" in reasons(p)


def test_replace_keeps_the_active_job_when_the_new_one_cannot_start() -> None:
    status = scheduled_status(lastScheduleTime=format_time(SLOT))
    now = SLOT + timedelta(days=1, seconds=5)
    problem = Problem("TargetNotFound", "gone", 1, now + timedelta(seconds=5))
    obs = observed(nightly(concurrencyPolicy="Replace"), status, (job(SLOT),), target=None)
    p = plan(replace(obs, problem=problem), now)
    assert not p.deletes and not p.creates


def test_allow_runs_alongside_the_active_job() -> None:
    status = scheduled_status(lastScheduleTime=format_time(SLOT))
    now = SLOT + timedelta(days=1, seconds=5)
    p = plan(observed(nightly(concurrencyPolicy="Allow"), status, (job(SLOT),)), now)
    assert [c.name for c in p.creates] == ["nb-20300102020000"]
    assert not p.deletes
    assert sorted(p.status["activeJobs"]) == ["nb-20300101020000", "nb-20300102020000"]


def test_suspend_makes_no_new_jobs_and_says_so() -> None:
    p = plan(observed(nightly(suspend=True), scheduled_status()), SLOT + timedelta(hours=1))
    assert not p.creates
    assert p.status["phase"] == "Suspended"
    assert "nextScheduleTime" not in p.status
    assert p.status["message"] == "suspended: no new runs"


def test_after_a_three_day_outage_exactly_one_catch_up_run() -> None:
    hourly = spec(schedule="0 * * * *")
    status = scheduled_status(lastScheduleTime=format_time(SLOT))
    now = SLOT + timedelta(days=3, minutes=30)
    p = plan(observed(hourly, status), now)
    assert [c.slot for c in p.creates] == [SLOT + timedelta(days=3)]
    assert [c.message for c in p.creates] == [
        "Created Job nb-20300104020000 for the run at 2030-01-04T02:00:00Z "
        "(72 runs were missed; only the latest is made up for)"
    ]
    again = settle(observed(hourly, status), p, now + timedelta(minutes=1))
    assert again.events == () and [c.name for c in again.creates] == ["nb-20300104020000"]


def test_starting_deadline_skips_a_run_that_is_too_late() -> None:
    status = scheduled_status(lastScheduleTime=format_time(SLOT))
    late = SLOT + timedelta(days=1, minutes=10)
    p = plan(observed(nightly(startingDeadlineSeconds=300), status), late)
    assert not p.creates
    assert "more than 300s late" in p.status["message"]
    in_time = plan(observed(nightly(startingDeadlineSeconds=900), status), late)
    assert [c.slot for c in in_time.creates] == [SLOT + timedelta(days=1)]


def test_a_created_resource_catches_up_a_slot_missed_before_first_sight() -> None:
    """Like a CronJob: a schedule starts at creationTimestamp."""
    p = plan(observed(), SLOT + timedelta(minutes=3))
    assert [c.slot for c in p.creates] == [SLOT]


def test_a_changed_spec_restarts_the_schedule_from_now() -> None:
    status = scheduled_status(observedGeneration=1)
    now = SLOT - timedelta(minutes=30)
    p = plan(observed(spec(schedule="*/10 * * * *"), status, generation=2), now)
    assert not p.creates
    assert p.status["nextScheduleTime"] == "2030-01-01T01:40:00Z"
    assert p.status["observedGeneration"] == 2


# --- results ------------------------------------------------------------------------


def test_a_success_is_recorded_from_the_termination_message() -> None:
    status = scheduled_status(lastScheduleTime=format_time(SLOT))
    done = job(SLOT, SUCCEEDED, result=OK)
    now = SLOT + timedelta(minutes=2)
    p = plan(observed(status=status, jobs=(done,)), now)
    assert p.status["lastSuccessfulBackup"] == {
        "jobName": "nb-20300101020000",
        "id": "backup-20300101-020003",
        "size": 1234,
        "keys": 42,
        "sha256": "ab" * 32,
        "time": "2030-01-01T02:01:00Z",
        "durationSeconds": 60.0,
    }
    entry = p.status["history"][0]
    assert entry["phase"] == SUCCEEDED and entry["backupId"] == "backup-20300101-020003"
    assert entry["keys"] == 42 and entry["size"] == 1234
    assert cond(p, "Failed")["status"] == "False"
    assert p.status["phase"] == "Scheduled"
    assert [o.succeeded for o in p.outcomes] == [True] and p.outcomes[0].size == 1234
    assert "BackupSucceeded" in reasons(p)
    quiet = settle(observed(status=status, jobs=(done,)), p, now)
    assert quiet.events == () and quiet.outcomes == ()


def test_a_failure_is_recorded_with_the_cli_error() -> None:
    status = scheduled_status(lastScheduleTime=format_time(SLOT))
    failed = job(
        SLOT,
        FAILED,
        result={"ok": False, "error": "cannot reach Redis at 10.0.0.1:6379"},
        message="BackoffLimitExceeded: Job has reached the specified backoff limit",
    )
    p = plan(observed(status=status, jobs=(failed,)), SLOT + timedelta(minutes=2))
    entry = p.status["history"][0]
    assert entry["phase"] == FAILED and entry["message"] == "cannot reach Redis at 10.0.0.1:6379"
    failed_cond = cond(p, "Failed")
    assert failed_cond["status"] == "True" and failed_cond["reason"] == "BackupFailed"
    assert "cannot reach Redis" in failed_cond["message"]
    assert p.status["phase"] == FAILED
    assert [(e.type, e.reason) for e in p.events] == [("Warning", "BackupFailed")]
    assert [o.succeeded for o in p.outcomes] == [False]
    assert "lastSuccessfulBackup" not in p.status


def test_a_failed_job_without_a_message_reports_its_condition() -> None:
    failed = job(SLOT, FAILED, message="DeadlineExceeded: Job was active longer than specified")
    p = plan(observed(status=scheduled_status(), jobs=(failed,)), SLOT + timedelta(minutes=2))
    assert p.status["history"][0]["message"].startswith("DeadlineExceeded")


def test_unrecorded_lists_only_finished_jobs_the_status_lacks() -> None:
    done, running = job(SLOT, SUCCEEDED), job(SLOT + timedelta(days=1))
    assert unrecorded({}, [done, running]) == [done.name]
    recorded = plan(observed(status=scheduled_status(), jobs=(done,)), SLOT + timedelta(hours=1))
    assert unrecorded(recorded.status, [done, running]) == []


# --- retention ----------------------------------------------------------------------


def test_a_success_is_followed_by_one_prune_job_named_after_its_slot() -> None:
    backup = nightly(retention={"keepLast": 2})
    status = scheduled_status(lastScheduleTime=format_time(SLOT))
    done = job(SLOT, SUCCEEDED, result=OK)
    now = SLOT + timedelta(minutes=2)
    p = plan(observed(backup, status, (done,)), now)
    assert p.creates == (
        CreateJob(PRUNE, "nb-20300101020000-prune", SLOT, note="to apply the retention"),
    )
    pruning = job(SLOT, RUNNING, component=PRUNE)
    again = plan(observed(backup, p.status, (done, pruning)), now)
    assert not again.creates
    pruned = replace(
        pruning, state=SUCCEEDED, finished=now, result={"ok": True, "kept": 2, "removed": 1}
    )
    recorded = plan(observed(backup, again.status, (done, pruned)), now + timedelta(minutes=1))
    assert recorded.status["lastRetention"] == {
        "time": format_time(now),
        "jobName": "nb-20300101020000-prune",
        "kept": 2,
        "removed": 1,
        "message": "kept 2, removed 1 backup",
    }
    assert reasons(recorded) == ["RetentionApplied"]
    # Neither the prune Job's removal by history limits nor a restart runs it again.
    assert plan(observed(backup, recorded.status, (done,)), now + timedelta(hours=1)).creates == ()


def test_no_retention_rules_no_prune_job() -> None:
    done = job(SLOT, SUCCEEDED, result=OK)
    p = plan(observed(status=scheduled_status(), jobs=(done,)), SLOT + timedelta(minutes=2))
    assert not p.creates


def test_a_failed_prune_sets_the_failed_condition_until_one_succeeds() -> None:
    backup = nightly(retention={"keepDaily": 7})
    done = job(SLOT, SUCCEEDED, result=OK)
    bad = job(SLOT, FAILED, component=PRUNE, result={"ok": False, "error": "access denied"})
    p = plan(observed(backup, scheduled_status(), (done, bad)), SLOT + timedelta(minutes=5))
    assert cond(p, "Failed")["reason"] == "RetentionFailed"
    assert p.status["lastRetention"]["message"] == "failed: access denied"
    assert [(e.type, e.reason) for e in p.events if e.reason.startswith("Retention")] == [
        ("Warning", "RetentionFailed")
    ]


# --- a cluster backed up one Job per shard ------------------------------------------------

RUN = "nb-20300101020000"


def shard_job(
    shard: int, state: str = RUNNING, *, shards: int = 3, slot: datetime = SLOT, **kw: Any
) -> JobView:
    view = job(slot, state, **kw)
    return replace(
        view,
        name=f"nb-{slot:%Y%m%d%H%M%S}-shard{shard}",
        run=f"nb-{slot:%Y%m%d%H%M%S}",
        shard=shard,
        shards=shards,
    )


def shard_ok(shard: int) -> dict[str, Any]:
    return {
        "ok": True,
        "id": "backup-20300101-020000",
        "size": 100 * shard,
        "keys": 10 * shard,
        "sha256": f"{shard}" * 64,
        "time": f"2030-01-01T02:00:0{shard}Z",
        "shard": shard,
        "shards": 3,
        "complete": shard == 3,
    }


def test_a_sharded_target_gets_one_job_per_shard_and_one_history_entry() -> None:
    now = SLOT + timedelta(seconds=3)
    obs = observed(status=scheduled_status(), shards=3)
    p = plan(obs, now)
    assert p.creates == tuple(
        CreateJob(BACKUP, f"{RUN}-shard{i}", SLOT, run=RUN, shard=i, shards=3) for i in (1, 2, 3)
    )
    assert p.creates[1].message == (
        f"Created Job {RUN}-shard2 for the run at 2030-01-01T02:00:00Z (shard 2 of 3)"
    )
    assert p.status["history"] == [
        {"slot": "2030-01-01T02:00:00Z", "jobName": RUN, "phase": RUNNING}
    ]
    assert p.status["activeJobs"] == [f"{RUN}-shard{i}" for i in (1, 2, 3)]
    # Seen in the watch cache: nothing more to do; not seen yet: the same names again.
    jobs = tuple(shard_job(i) for i in (1, 2, 3))
    seen = plan(replace(obs, status=p.status, jobs=jobs), now + timedelta(seconds=1))
    assert not seen.creates and not seen.events and seen.status["phase"] == RUNNING
    assert [c.name for c in settle(obs, p, now).creates] == [c.name for c in p.creates]


def test_a_shard_run_succeeds_only_when_all_its_jobs_did_and_then_prunes_once() -> None:
    backup = nightly(retention={"keepLast": 2})
    status = scheduled_status(lastScheduleTime=format_time(SLOT))
    obs = observed(backup, status, shards=3)
    now = SLOT + timedelta(minutes=2)
    two_done = (
        shard_job(1, SUCCEEDED, result=shard_ok(1)),
        shard_job(2, SUCCEEDED, result=shard_ok(2)),
        shard_job(3),
    )
    waiting = plan(replace(obs, jobs=two_done), now)
    assert waiting.status["history"][0]["phase"] == RUNNING
    assert waiting.status["phase"] == RUNNING and waiting.status["activeJobs"] == [f"{RUN}-shard3"]
    assert not waiting.creates and not waiting.outcomes
    assert "BackupSucceeded" not in reasons(waiting)
    assert unrecorded(waiting.status, two_done) == [f"{RUN}-shard1", f"{RUN}-shard2"]

    all_done = (*two_done[:2], shard_job(3, SUCCEEDED, result=shard_ok(3)))
    done = plan(replace(obs, status=waiting.status, jobs=all_done), now)
    entry = done.status["history"][0]
    assert entry["phase"] == SUCCEEDED and entry["jobName"] == RUN
    assert (entry["backupId"], entry["size"], entry["keys"]) == ("backup-20300101-020000", 600, 60)
    last = done.status["lastSuccessfulBackup"]
    assert (last["jobName"], last["id"], last["keys"], last["time"]) == (
        RUN, "backup-20300101-020000", 60, "2030-01-01T02:00:03Z",
    )  # fmt: skip
    assert "sha256" not in last  # one per archive: in the manifest
    assert [e.message for e in done.events if e.reason == "BackupSucceeded"] == [
        f"Run {RUN} (3 shard Jobs): backup backup-20300101-020000 (keys 60, bytes 600)"
    ]
    assert [(o.succeeded, o.keys) for o in done.outcomes] == [(True, 60)]
    assert done.creates == (CreateJob(PRUNE, f"{RUN}-prune", SLOT, note="to apply the retention"),)
    assert unrecorded(done.status, all_done) == []
    quiet = settle(replace(obs, jobs=all_done), done, now)
    assert quiet.events == () and quiet.outcomes == ()


def test_one_failed_shard_job_fails_the_run_at_once_and_says_which() -> None:
    status = scheduled_status(lastScheduleTime=format_time(SLOT))
    obs = observed(status=status, shards=3)
    error = "the cluster has 4 shards serving slots, not 3"
    jobs = (
        shard_job(1, SUCCEEDED, result=shard_ok(1)),
        shard_job(2, FAILED, result={"ok": False, "error": error}),
        shard_job(3),
    )
    now = SLOT + timedelta(minutes=2)
    p = plan(replace(obs, jobs=jobs), now)
    entry = p.status["history"][0]
    expected = f"shard 2 of 3 (Job {RUN}-shard2): {error}"
    assert entry["phase"] == FAILED and entry["message"] == expected
    assert [(e.type, e.reason, e.message) for e in p.events if e.reason == "BackupFailed"] == [
        ("Warning", "BackupFailed", f"Run {RUN} (3 shard Jobs): {expected}")
    ]
    assert cond(p, "Failed")["status"] == "True" and "shard 2 of 3" in cond(p, "Failed")["message"]
    assert [o.succeeded for o in p.outcomes] == [False]
    assert p.status["activeJobs"] == [f"{RUN}-shard3"] and p.status["phase"] == RUNNING
    # The last shard Job finishing changes nothing: the run was recorded.
    finished = (*jobs[:2], shard_job(3, SUCCEEDED, result=shard_ok(3)))
    later = plan(replace(obs, status=p.status, jobs=finished), now + timedelta(minutes=1))
    assert later.events == () and later.outcomes == () and later.status["phase"] == FAILED
    assert "lastSuccessfulBackup" not in later.status


def test_a_missing_shard_job_is_created_again_or_fails_the_run_when_deleted() -> None:
    status = running_status()
    present = (shard_job(1, SUCCEEDED, result=shard_ok(1)), shard_job(3))
    obs = observed(status=status, jobs=present, shards=3)
    now = SLOT + timedelta(minutes=1)
    p = plan(obs, now)
    assert p.status["history"][0]["phase"] == RUNNING and not p.outcomes
    assert p.creates == (
        CreateJob(
            BACKUP, f"{RUN}-shard2", SLOT, note="created again: it was not found",
            run=RUN, shard=2, shards=3,
        ),
    )  # fmt: skip
    two_done = (present[0], shard_job(3, SUCCEEDED, result=shard_ok(3)))
    assert plan(replace(obs, jobs=two_done), now).status["history"][0]["phase"] == RUNNING
    deleted = plan(replace(obs, seen=frozenset({f"{RUN}-shard2", RUN})), now)
    assert not deleted.creates
    entry = deleted.status["history"][0]
    assert entry["phase"] == FAILED
    assert entry["message"] == (
        f"shard 2 of 3 (Job {RUN}-shard2): the Job was deleted before it finished"
    )
    # No Job of the run at all: all of them again, under the same names.
    again = plan(replace(obs, jobs=()), now)
    assert [c.name for c in again.creates] == [f"{RUN}-shard{i}" for i in (1, 2, 3)]
    gone = plan(replace(obs, jobs=(), seen=frozenset({RUN})), now)
    assert gone.status["history"][0]["phase"] == FAILED and not gone.creates


def test_history_limits_delete_a_shard_runs_jobs_together_once_none_runs() -> None:
    backup = nightly(successfulJobsHistoryLimit=1, failedJobsHistoryLimit=1)
    day2 = SLOT + timedelta(days=1)
    old = [shard_job(i, SUCCEEDED, result=shard_ok(i)) for i in (1, 2, 3)]
    new = [shard_job(i, SUCCEEDED, result=shard_ok(i), slot=day2) for i in (1, 2, 3)]
    status = scheduled_status(lastScheduleTime=format_time(day2))
    p = plan(observed(backup, status, (*old, *new), shards=3), day2 + timedelta(hours=1))
    assert sorted(d.name for d in p.deletes) == [f"{RUN}-shard{i}" for i in (1, 2, 3)]
    failed_old = [shard_job(1, FAILED), shard_job(2), shard_job(3)]  # failed, still running
    failed_new = [shard_job(i, FAILED, slot=day2) for i in (1, 2, 3)]
    p = plan(observed(backup, status, (*failed_old, *failed_new), shards=3), day2)
    assert p.deletes == ()


# --- lost Jobs, history ---------------------------------------------------------------


def running_status(slot: datetime = SLOT) -> dict[str, Any]:
    name = f"nb-{slot:%Y%m%d%H%M%S}"
    return scheduled_status(
        lastScheduleTime=format_time(slot),
        history=[{"slot": format_time(slot), "jobName": name, "phase": RUNNING}],
    )


def test_a_job_seen_and_then_deleted_while_running_is_a_failed_run() -> None:
    obs = observed(status=running_status(), seen=frozenset({"nb-20300101020000"}))
    p = plan(obs, SLOT + timedelta(minutes=5))
    assert not p.creates
    assert p.status["history"][0]["phase"] == FAILED
    assert "deleted before it finished" in p.status["history"][0]["message"]
    assert [o.succeeded for o in p.outcomes] == [False]


def test_a_job_never_seen_and_no_longer_current_is_reported_not_recreated() -> None:
    p = plan(observed(status=running_status()), SLOT + timedelta(days=1, hours=1))
    stale = next(h for h in p.status["history"] if h["jobName"] == "nb-20300101020000")
    assert stale["phase"] == FAILED and "not found" in stale["message"]
    assert [c.name for c in p.creates] == ["nb-20300102020000"]


def test_finished_jobs_beyond_the_history_limits_are_deleted_once_recorded() -> None:
    backup = nightly(successfulJobsHistoryLimit=1, failedJobsHistoryLimit=1)
    slots = [SLOT + timedelta(days=d) for d in range(4)]
    jobs = (
        job(slots[0], SUCCEEDED, result=OK),
        job(slots[1], FAILED),
        job(slots[2], SUCCEEDED, result=OK),
        job(slots[3], FAILED),
    )
    now = slots[3] + timedelta(hours=1)
    p = plan(observed(backup, scheduled_status(lastScheduleTime=format_time(slots[3])), jobs), now)
    assert sorted(d.name for d in p.deletes) == ["nb-20300101020000", "nb-20300102020000"]
    assert all(isinstance(d, DeleteJob) and d.reason == "history limit" for d in p.deletes)


def test_history_keeps_the_newest_entries() -> None:
    entries = [
        {"slot": format_time(SLOT + timedelta(hours=h)), "jobName": f"j{h}", "phase": SUCCEEDED}
        for h in range(HISTORY_LIMIT + 5)
    ]
    backup = nightly(suspend=True)
    p = plan(observed(backup, scheduled_status(history=entries)), SLOT + timedelta(days=2))
    assert len(p.status["history"]) == HISTORY_LIMIT
    assert p.status["history"][0]["jobName"] == f"j{HISTORY_LIMIT + 4}"


# --- problems -----------------------------------------------------------------------


def test_an_invalid_spec_is_ready_false_once_and_waits_for_a_change() -> None:
    error = SpecError("spec.schedule", "'61 * * * *' is not a valid cron expression")
    now = SLOT
    p = plan(observed(error), now)
    ready = cond(p, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "61 * * * *" in ready["message"]
    assert p.status["phase"] == FAILED and not p.creates and p.wake_at is None
    assert [(e.type, e.reason) for e in p.events] == [("Warning", "InvalidSpec")]
    assert settle(observed(error), p, now + timedelta(minutes=1)).events == ()


def test_a_missing_target_is_ready_false_and_retried_with_a_growing_delay() -> None:
    now = SLOT + timedelta(seconds=1)
    obs = observed(status=scheduled_status(), target=None)
    assert plan(obs, now).needs_target
    problem = Problem("TargetNotFound", "no StatefulSet named redis", 1, now + timedelta(seconds=5))
    p = plan(replace(obs, problem=problem), now)
    assert not p.needs_target and not p.creates
    ready = cond(p, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "TargetNotFound")
    assert p.status["phase"] == "Pending"
    assert "lastScheduleTime" not in p.status  # nothing recorded for a Job not made
    assert p.wake_at == problem.retry_at
    assert p.status["nextScheduleTime"] == format_time(SLOT)  # the run that waits
    assert [(e.type, e.reason) for e in p.events] == [("Warning", "TargetNotFound")]
    retry = plan(replace(obs, status=p.status, problem=problem), problem.retry_at)
    assert retry.needs_target
    fixed = plan(replace(obs, status=p.status, target=TARGET), problem.retry_at)
    assert [c.slot for c in fixed.creates] == [SLOT]
    assert cond(fixed, "Ready")["status"] == "True" and "Ready" in reasons(fixed)


@pytest.mark.parametrize(
    ("attempts", "delay"), [(1, 5), (2, 10), (3, 20), (6, 160), (7, 300), (99, 300)]
)
def test_retry_delay_grows_to_five_minutes(attempts: int, delay: float) -> None:
    assert retry_delay(attempts) == delay


def test_a_job_whose_pod_cannot_start_makes_ready_false_until_it_runs() -> None:
    stuck = job(SLOT, waiting=PodProblem("CreateContainerConfigError", 'secret "s3" not found'))
    obs = observed(status=running_status(), jobs=(stuck,))
    p = plan(obs, SLOT + timedelta(seconds=30))
    ready = cond(p, "Ready")
    assert ready["reason"] == "CreateContainerConfigError"
    assert ready["message"] == 'Job nb-20300101020000 cannot start: secret "s3" not found'
    assert p.status["phase"] == RUNNING
    running = plan(replace(obs, status=p.status, jobs=(replace(stuck, waiting=None),)), SLOT)
    assert cond(running, "Ready")["status"] == "True"


def test_conditions_keep_their_transition_time_while_their_status_holds() -> None:
    first = plan(observed(), SLOT - timedelta(hours=1))
    later = settle(observed(), first, SLOT - timedelta(minutes=1))
    assert cond(later, "Ready")["lastTransitionTime"] == cond(first, "Ready")["lastTransitionTime"]


# --- observe.py ---------------------------------------------------------------------


def k8s_job(conditions: list[dict[str, Any]], **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "nb-20300101020000",
            "labels": {
                "backupctl.dev/backup": "nb",
                "backupctl.dev/slot": "20300101020000",
                "app.kubernetes.io/component": "backup",
            },
        },
        "status": {"conditions": conditions, "startTime": "2030-01-01T02:00:01Z", **status},
    }


def test_job_view_reads_state_slot_and_failure_reason() -> None:
    running = job_view(k8s_job([], active=1, ready=1))
    assert (running.state, running.slot, running.ready) == (RUNNING, SLOT, True)
    done = job_view(
        k8s_job([{"type": "Complete", "status": "True"}], completionTime="2030-01-01T02:00:09Z")
    )
    assert done.state == SUCCEEDED and done.finished == SLOT + timedelta(seconds=9)
    failed = job_view(
        k8s_job(
            [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                    "lastTransitionTime": "2030-01-01T02:03:00Z",
                }
            ]
        )
    )
    assert failed.state == FAILED and failed.message.startswith("BackoffLimitExceeded: ")
    assert failed.finished == SLOT + timedelta(minutes=3)


def pod(name: str, created: str, state: dict[str, Any], **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "status": {"containerStatuses": [{"name": "backupctl", "state": state}], **status},
    }


def test_pod_result_reads_the_newest_termination_message() -> None:
    old = pod("a", "2030-01-01T02:00:00Z", {"terminated": {"message": '{"ok":false,"error":"x"}'}})
    new = pod("b", "2030-01-01T02:00:05Z", {"terminated": {"message": '{"ok":true,"id":"i"}'}})
    assert pod_result([new, old]) == {"ok": True, "id": "i"}
    text = pod("c", "2030-01-01T02:00:09Z", {"terminated": {"message": "panic:\n  boom"}})
    assert pod_result([old, text]) == {"ok": False, "error": "panic: boom"}
    assert pod_result([]) is None


def test_pod_problem_reports_config_errors_and_unschedulable_pods() -> None:
    waiting = {
        "waiting": {"reason": "CreateContainerConfigError", "message": 'secret "s" not found'}
    }
    assert pod_problem([pod("a", "t", waiting)]) == PodProblem(
        "CreateContainerConfigError", 'secret "s" not found', pod="a"
    )
    creating = pod_problem([pod("a", "t", {"waiting": {"reason": "ContainerCreating"}})])
    assert creating is not None and not creating.hard  # a problem only once it lasts
    pending = {
        "metadata": {"name": "p", "creationTimestamp": "t"},
        "status": {
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "m",
                }
            ]
        },
    }
    assert pod_problem([pending]) == PodProblem("Unschedulable", "m", pod="p")


@pytest.mark.parametrize(
    ("cron", "tz"),
    [("0 2 * * *", "UTC"), ("*/7 * * * *", "UTC"), ("30 2 * * *", "Europe/Paris")],
)
def test_the_shared_slot_cache_agrees_with_the_schedule_module(cron: str, tz: str) -> None:
    # Across the Paris spring-forward night (02:30 does not exist on 2030-03-31).
    start = datetime(2030, 3, 30, 23, 0, tzinfo=UTC)
    for minutes in range(0, 6 * 60, 13):
        now = start + timedelta(minutes=minutes, seconds=minutes % 60)
        assert slots_around(cron, tz, now) == (
            prev_run(cron, tz, now),
            next_run(cron, tz, now),
        )


# --- issue 14: stuck Jobs, a restore of the same target -----------------------------------


def test_a_stuck_backup_job_fails_its_run_at_the_grace_and_forbid_no_longer_blocks() -> None:
    entry = {"slot": format_time(SLOT), "jobName": "nb-20300101020000", "phase": RUNNING}
    status = scheduled_status(lastScheduleTime=format_time(SLOT), history=[entry])
    waiting = PodProblem("ContainerCreating", "Multi-Attach error for volume", since=SLOT,
                         pod="nb-20300101020000-x", hard=False)  # fmt: skip
    stuck = job(SLOT, waiting=waiting)
    # Before the grace (default 300 s): it waits, as a slow start would.
    early = plan(observed(status=status, jobs=(stuck,)), SLOT + timedelta(seconds=299))
    assert not early.deletes and early.status["history"][0]["phase"] == RUNNING
    # After it, with the next slot due: the stuck Job goes, its run failed, the next runs.
    now = SLOT + timedelta(days=1, seconds=5)
    p = plan(observed(status=status, jobs=(stuck,)), now)
    assert [d.name for d in p.deletes] == ["nb-20300101020000"]
    old = next(h for h in p.status["history"] if h["jobName"] == "nb-20300101020000")
    assert old["phase"] == FAILED and "could not start within 300 s" in old["message"]
    assert "ContainerCreating: Multi-Attach" in old["message"]
    assert [c.name for c in p.creates] == ["nb-20300102020000"]
    assert "BackupFailed" in reasons(p)


def test_the_start_timeout_is_the_specs() -> None:
    entry = {"slot": format_time(SLOT), "jobName": "nb-20300101020000", "phase": RUNNING}
    status = scheduled_status(lastScheduleTime=format_time(SLOT), history=[entry])
    stuck = job(SLOT, waiting=PodProblem("Unschedulable", "cordoned", since=SLOT))
    backup = nightly(startTimeoutSeconds=60)
    assert not plan(observed(backup, status, (stuck,)), SLOT + timedelta(seconds=59)).deletes
    assert plan(observed(backup, status, (stuck,)), SLOT + timedelta(seconds=61)).deletes


def test_a_run_waits_while_a_restore_of_the_target_runs_then_runs_as_a_missed_run() -> None:
    status = scheduled_status()
    now = SLOT + timedelta(seconds=5)
    p = plan(observed(status=status, restoring="restore-1"), now)
    assert not p.creates
    ready = next(c for c in p.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "WaitingForRestore")
    assert "RedisRestore restore-1" in ready["message"] and "restore-1" in p.status["message"]
    assert reasons(p) == ["WaitingForRestore"]
    assert p.wake_at is not None and p.wake_at <= now + timedelta(seconds=10)
    again = plan(observed(status=p.status, restoring="restore-1"), now + timedelta(seconds=10))
    assert reasons(again) == [] and not again.creates  # one Event, not one per pass
    # The restore ends: the slot still the latest, it runs now (as a CronJob's missed run).
    after = plan(observed(status=again.status), now + timedelta(minutes=30))
    assert [c.name for c in after.creates] == ["nb-20300101020000"]


def test_a_slot_missed_while_restoring_beyond_the_starting_deadline_is_skipped() -> None:
    backup = nightly(startingDeadlineSeconds=600)
    status = scheduled_status()
    p = plan(observed(backup, status, restoring="restore-1"), SLOT + timedelta(seconds=5))
    assert not p.creates
    late = plan(observed(backup, p.status), SLOT + timedelta(minutes=11))
    assert not late.creates and "startingDeadlineSeconds" in late.status["message"]


def test_a_one_off_backup_waits_for_a_restore_of_its_target() -> None:
    p = plan(observed(spec(), restoring="restore-1"), CREATED + timedelta(seconds=1))
    assert not p.creates and "restore-1" in p.status["message"]
    after = plan(observed(spec(), p.status), CREATED + timedelta(minutes=5))
    assert [c.name for c in after.creates] == ["nb-20300101010000"]
