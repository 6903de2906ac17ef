"""Restore drills, ``spec.verify`` (pure plans): when a verify Job runs, what it checks, and
how its result is recorded."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from unit.test_backup_plan import (
    CREATED,
    OK,
    SLOT,
    STORAGE,
    job,
    nightly,
    observed,
    plan,
    reasons,
    scheduled_status,
)

from backupctl.controller.backup.model import Observed, Plan
from backupctl.controller.jobs import FAILED, SUCCEEDED, VERIFY, JobView
from backupctl.controller.metric_values import backup_gauges
from backupctl.controller.spec import parse_backup
from backupctl.controller.spec_fields import SpecError
from backupctl.controller.store_jobs import verify_job

AFTER = {"afterEachBackup": True}
HOURLY = {"schedule": "30 * * * *"}


def drills(p: Plan) -> list[tuple[str, str]]:
    return [(c.name, c.backup_id) for c in p.creates if c.component == VERIFY]


def backed_up(verify: dict[str, Any]) -> Observed:
    """The 02:00 backup succeeded and is recorded."""
    done = job(SLOT, SUCCEEDED, result=OK)
    obs = observed(nightly(verify=verify), scheduled_status(), (done,))
    first = plan(obs, SLOT + timedelta(minutes=2))
    return replace(obs, status=first.status)


def drill_job(slot: Any, state: str, result: dict[str, Any] | None) -> JobView:
    return replace(
        job(slot, state, result=result), name=f"nb-{slot:%Y%m%d%H%M%S}-verify", component=VERIFY
    )


def test_after_each_backup_one_drill_of_that_backup() -> None:
    obs = backed_up(AFTER)
    p = plan(obs, SLOT + timedelta(minutes=3))
    assert drills(p) == [("nb-20300101020000-verify", OK["id"])]
    # Seen (or already recorded): never a second one for the same backup.
    seen = replace(obs, status=p.status, seen=frozenset({"nb-20300101020000-verify"}))
    assert drills(plan(seen, SLOT + timedelta(minutes=4))) == []


def test_no_drill_without_a_successful_backup() -> None:
    obs = observed(nightly(verify=AFTER), scheduled_status(), (job(SLOT, FAILED),))
    assert drills(plan(obs, SLOT + timedelta(minutes=3))) == []
    hourly = observed(nightly(verify=HOURLY), scheduled_status())
    assert drills(plan(hourly, SLOT + timedelta(minutes=31))) == []


def test_a_scheduled_drill_runs_at_the_latest_slot_once() -> None:
    obs = backed_up(HOURLY)
    # The 01:30 slot found nothing to check; the first backup is checked at once.
    first = plan(obs, SLOT + timedelta(minutes=20))
    assert drills(first) == [("nb-20300101013000-verify", OK["id"])]
    recorded = {"jobName": "nb-20300101013000-verify", "result": "Passed"}
    status = {**first.status, "lastVerification": recorded}
    assert drills(plan(replace(obs, status=status), SLOT + timedelta(minutes=25))) == []
    at = plan(replace(obs, status=status), SLOT + timedelta(minutes=30, seconds=5))
    assert drills(at) == [("nb-20300101023000-verify", OK["id"])]
    assert at.wake_at is not None and at.wake_at <= SLOT + timedelta(minutes=90)
    # A slot before the RedisBackup existed is never checked.
    young = replace(obs, created=SLOT + timedelta(minutes=10))
    assert drills(plan(young, SLOT + timedelta(minutes=20))) == []


def test_a_passing_drill_is_recorded_with_its_numbers() -> None:
    obs = backed_up(AFTER)
    result = {
        "ok": True,
        "id": OK["id"],
        "nodes": ["redis-0"],
        "files": 1,
        "bytes": 2048,
        "keys": 42,
        "types": {"string": 40, "hash": 2},
    }
    done = drill_job(SLOT, SUCCEEDED, result)
    p = plan(replace(obs, jobs=(*obs.jobs, done)), SLOT + timedelta(minutes=5))
    last = p.status["lastVerification"]
    assert last["result"] == "Passed" and last["backupId"] == OK["id"]
    assert (last["files"], last["bytes"], last["nodes"], last["keys"]) == (1, 2048, 1, 42)
    assert last["types"] == {"string": 40, "hash": 2}
    assert "VerificationPassed" in reasons(p)
    assert drills(p) == []
    gauges = backup_gauges(p.status, created=CREATED, interval=86400.0, suspended=False)
    assert gauges["verification_last_failed"] == 0.0
    assert gauges["verification_last_bytes"] == 2048.0
    assert gauges["verification_last_timestamp_seconds"] > 0


def test_a_failing_drill_is_recorded_with_the_cli_error() -> None:
    obs = backed_up(AFTER)
    error = {"ok": False, "error": "archive redis-0.tar.zst: sha256 mismatch"}
    done = replace(drill_job(SLOT, FAILED, error), message="BackoffLimitExceeded")
    p = plan(replace(obs, jobs=(*obs.jobs, done)), SLOT + timedelta(minutes=5))
    last = p.status["lastVerification"]
    assert last["result"] == "Failed" and "sha256 mismatch" in last["message"]
    assert "VerificationFailed" in reasons(p)
    # The backups themselves are not marked failed by a drill.
    failed = next(c for c in p.status["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "False"
    gauges = backup_gauges(p.status, created=CREATED, interval=86400.0, suspended=False)
    assert gauges["verification_last_failed"] == 1.0


def test_the_drill_job_verifies_that_backup_of_the_target_hardened() -> None:
    spec = nightly(verify=AFTER)
    manifest = verify_job(
        spec,
        name="nb-20300101020000-verify",
        namespace="ns",
        backup_name="nb",
        backup_id=str(OK["id"]),
        owner=None,
        image="backupctl:test",
        slot=SLOT,
    )
    pod = manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert args[:3] == ["verify", "s3://b", OK["id"]]
    assert args[args.index("--target") + 1] == "ns/redis"
    assert "--termination-log" in args
    labels = manifest["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "verify"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize(
    "verify",
    [{}, {"schedule": "0 4 * * *", "afterEachBackup": True}, {"schedule": "61 * * * *"}],
)
def test_bad_verify_specs_are_refused(verify: dict[str, Any]) -> None:
    with pytest.raises(SpecError, match=r"spec\.verify"):
        parse_backup({"target": {"name": "redis"}, "storage": STORAGE, "verify": verify})
