"""retention.schedule: prune on a cron of its own, whether backups succeed or not (pure plans)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from unit.test_backup_plan import CREATED, SLOT, STORAGE, job, nightly, observed, plan

from backupctl.controller.backup.model import Plan
from backupctl.controller.jobs import FAILED, PRUNE, SUCCEEDED
from backupctl.controller.spec import parse_backup
from backupctl.controller.spec_fields import SpecError

#: Prune every day at 04:00 (the backups run at 02:00).
RETENTION = {"keepLast": 3, "schedule": "0 4 * * *"}
PRUNE_SLOT = SLOT + timedelta(hours=2)


def prunes(p: Plan) -> list[str]:
    return [c.name for c in p.creates if c.component == PRUNE]


def test_a_prune_runs_at_each_retention_slot_even_when_every_backup_failed() -> None:
    failed = job(SLOT, FAILED)
    obs = observed(nightly(retention=RETENTION), jobs=(failed,))
    assert prunes(plan(obs, PRUNE_SLOT - timedelta(minutes=1))) == []
    p = plan(obs, PRUNE_SLOT + timedelta(seconds=2))
    assert prunes(p) == ["nb-20300101040000-prune"]
    assert p.wake_at is not None and p.wake_at <= PRUNE_SLOT + timedelta(days=1)


def test_suspended_backups_are_still_pruned_once_per_slot() -> None:
    obs = observed(nightly(retention=RETENTION, suspend=True))
    p = plan(obs, PRUNE_SLOT + timedelta(seconds=2))
    assert prunes(p) == ["nb-20300101040000-prune"]
    ran = job(PRUNE_SLOT, SUCCEEDED, component=PRUNE, result={"kept": 3, "removed": 2})
    later = plan(replace(obs, status=p.status, jobs=(ran,)), PRUNE_SLOT + timedelta(minutes=5))
    assert prunes(later) == []
    assert later.status["lastRetention"]["removed"] == 2
    # After the Job is gone (history limit), the slot is still done: lastRetention says so.
    gone = plan(replace(obs, status=later.status), PRUNE_SLOT + timedelta(minutes=9))
    assert prunes(gone) == []


def test_with_a_schedule_no_prune_follows_a_successful_backup() -> None:
    ok = {"ok": True, "id": "backup-1", "size": 1, "keys": 1}
    obs = observed(nightly(retention=RETENTION), jobs=(job(SLOT, SUCCEEDED, result=ok),))
    assert prunes(plan(obs, SLOT + timedelta(minutes=5))) == []
    without = replace(obs, spec=nightly(retention={"keepLast": 3}))
    assert prunes(plan(without, SLOT + timedelta(minutes=5))) == ["nb-20300101020000-prune"]


def test_a_slot_before_the_resource_existed_is_not_pruned() -> None:
    obs = observed(nightly(retention=RETENTION), created=CREATED + timedelta(hours=4))
    assert prunes(plan(obs, CREATED + timedelta(hours=4, minutes=1))) == []


@pytest.mark.parametrize(
    ("retention", "message"),
    [
        ({"schedule": "0 4 * * *"}, "needs at least one keep rule"),
        ({"keepLast": 1, "schedule": "61 * * * *"}, "spec.retention.schedule"),
    ],
)
def test_bad_retention_schedules_are_refused(retention: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_backup({"target": {"name": "redis"}, "storage": STORAGE, "retention": retention})
