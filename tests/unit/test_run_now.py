"""Run now (``backupctl.dev/run-now``): one extra run per new annotation value (pure plans)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from unit.test_backup_plan import (
    OK,
    SLOT,
    job,
    nightly,
    observed,
    plan,
    reasons,
    scheduled_status,
)

from backupctl.controller.backup.model import Observed
from backupctl.controller.jobs import RUNNING, SUCCEEDED
from backupctl.core.timefmt import format_time

NOW = SLOT + timedelta(hours=5, seconds=7)  # between two slots of the nightly schedule


def idle() -> Observed:
    """A nightly RedisBackup whose 02:00 run succeeded, seen at 07:00:07."""
    done = job(SLOT, SUCCEEDED, result=OK)
    first = plan(observed(status=scheduled_status(), jobs=(done,)), SLOT + timedelta(minutes=2))
    return observed(status=first.status, jobs=(done,))


def test_a_new_value_makes_one_run_now_recorded_before_its_job() -> None:
    obs = replace(idle(), run_now="1")
    p = plan(obs, NOW)
    slot = NOW.replace(microsecond=0)
    assert [c.name for c in p.creates] == [f"nb-{slot:%Y%m%d%H%M%S}"]
    assert p.status["lastRunNow"] == "1"
    assert p.status["lastScheduleTime"] == format_time(slot)
    entry = p.status["history"][0]
    assert entry == {
        "slot": format_time(slot),
        "jobName": p.creates[0].name,
        "phase": RUNNING,
        "trigger": "run-now",
    }
    assert "RunNow" in reasons(p)
    # The next pass (status written, Job not in the cache yet) plans the same name, once.
    again = plan(replace(obs, status=p.status), NOW + timedelta(seconds=1))
    assert [c.name for c in again.creates] == [p.creates[0].name]
    assert "RunNow" not in reasons(again)
    # With the Job seen: nothing more, and the schedule goes on at its next slot.
    seen = replace(obs, status=p.status, jobs=(*obs.jobs, job(slot)))
    assert plan(seen, NOW + timedelta(seconds=2)).creates == ()
    nightly_next = SLOT + timedelta(days=1)
    later = plan(replace(seen, jobs=(job(slot, SUCCEEDED, result=OK),)), nightly_next)
    assert [c.slot for c in later.creates] == [nightly_next]


def test_the_same_value_after_a_restart_makes_nothing_and_a_new_one_runs_again() -> None:
    obs = replace(idle(), run_now="a")
    p = plan(obs, NOW)
    slot = NOW.replace(microsecond=0)
    done = job(slot, SUCCEEDED, result=OK)
    # A restarted controller: only the status and the Jobs survive.
    restarted = replace(obs, status=p.status, jobs=(done,), seen=frozenset())
    assert plan(restarted, NOW + timedelta(minutes=10)).creates == ()
    fresh = plan(replace(restarted, run_now="b"), NOW + timedelta(minutes=10))
    assert len(fresh.creates) == 1 and fresh.status["lastRunNow"] == "b"


def test_a_run_now_job_never_created_before_a_restart_is_created_again() -> None:
    obs = replace(idle(), run_now="x")
    p = plan(obs, NOW)
    restarted = replace(obs, status=p.status, seen=frozenset())
    again = plan(restarted, NOW + timedelta(minutes=3))
    assert [c.name for c in again.creates] == [p.creates[0].name]


def test_run_now_runs_while_suspended_and_waits_under_forbid() -> None:
    suspended = replace(idle(), spec=nightly(suspend=True), run_now="1")
    assert len(plan(suspended, NOW).creates) == 1
    busy = replace(idle(), run_now="1", jobs=(job(SLOT),))
    p = plan(busy, NOW)
    assert p.creates == () and "lastRunNow" not in p.status
    assert "run-now=1 waits for Job" in p.status["message"]


def test_run_now_on_a_slot_second_gets_a_run_of_its_own() -> None:
    obs = replace(observed(status=scheduled_status()), run_now="1")
    p = plan(obs, SLOT)
    assert [c.slot for c in p.creates] == [SLOT, SLOT + timedelta(seconds=1)]
