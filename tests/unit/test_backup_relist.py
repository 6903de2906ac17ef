"""When the backup daemon asks the API for its Jobs and for RedisRestores.

A stalled watch must not leave a run ``Running`` forever (issue 14), yet thousands of
daemons wake at one slot: a list each per pass queued them behind the API client's
connections (issue 15's bench: p99 102 s at 2,000 RedisBackups). So a resource lists
its Jobs only while one is active, at most every RELIST_SECONDS, and one namespace's
daemons share one list of RedisRestores for RESTORES_TTL_SECONDS.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from backupctl.controller.backup import reconcile
from backupctl.controller.backup.state import Controller, Tracker
from backupctl.controller.manifests import LABEL_BACKUP, label_value
from backupctl.controller.observe import job_view

NS, NAME, UID = "redis", "nightly", "uid-1"
T0 = datetime(2027, 1, 1, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.t = T0

    def now(self) -> datetime:
        return self.t

    def from_real(self, t: datetime) -> datetime:
        return t


class FakeKube:
    """Counts lists; answers with the Jobs (and RedisRestores) it holds."""

    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []
        self.restores: list[dict[str, Any]] = []
        self.calls: list[str] = []

    async def list(self, group: str, version: str, plural: str, ns: str, *_: Any) -> Any:
        self.calls.append(plural)
        for _turn in range(3):  # a request takes a few turns of the loop to answer
            await asyncio.sleep(0)
        return self.jobs if plural == "jobs" else self.restores


def job(name: str, *, done: bool) -> dict[str, Any]:
    status: dict[str, Any] = {"startTime": "2027-01-01T00:00:00Z"}
    if done:
        status["conditions"] = [{"type": "Complete", "status": "True"}]
        status["completionTime"] = "2027-01-01T00:01:00Z"
    return {
        "metadata": {
            "name": name,
            "labels": {LABEL_BACKUP: label_value(NAME)},
            "ownerReferences": [{"uid": UID}],
        },
        "status": status,
    }


def setup(*indexed: dict[str, Any]) -> tuple[Controller, Tracker, FakeKube, FakeClock, Any]:
    kube, clock = FakeKube(), FakeClock()
    controller = Controller(kube=kube, image="img", clock=clock)  # type: ignore[arg-type]
    tracker = Tracker(NS, NAME)
    tracker.status = {}
    index = {(NS, label_value(NAME)): [(UID, job_view(j)) for j in indexed]}
    return controller, tracker, kube, clock, index


def names(jobs: list[Any]) -> set[str]:
    return {j.name for j in jobs}


def test_nothing_running_means_no_list_the_index_answers() -> None:
    controller, tracker, kube, _, index = setup(job("nightly-a", done=True))
    jobs = asyncio.run(reconcile.list_jobs(controller, tracker, UID, index))
    assert names(jobs) == {"nightly-a"}
    assert kube.calls == []


@pytest.mark.parametrize("via", ["index", "status"])
def test_a_running_job_is_checked_against_the_api_at_most_every_relist_interval(via: str) -> None:
    seen = job("nightly-b", done=False) if via == "index" else job("x", done=True)
    controller, tracker, kube, clock, index = setup(seen)
    if via == "status":
        tracker.status = {"activeJobs": ["nightly-b"]}
    kube.jobs = [job("nightly-b", done=True)]  # the watch missed its completion

    first = asyncio.run(reconcile.list_jobs(controller, tracker, UID, index))
    assert kube.calls == ["jobs"]
    assert next(j for j in first if j.name == "nightly-b").state != "Running"

    clock.t += timedelta(seconds=reconcile.RELIST_SECONDS - 1)
    asyncio.run(reconcile.list_jobs(controller, tracker, UID, index))
    assert kube.calls == ["jobs"]  # within the interval: the index alone

    clock.t += timedelta(seconds=1)
    asyncio.run(reconcile.list_jobs(controller, tracker, UID, index))
    assert kube.calls == ["jobs", "jobs"]


def test_a_clock_that_went_back_lists_again() -> None:
    controller, tracker, kube, clock, index = setup(job("nightly-b", done=False))
    asyncio.run(reconcile.list_jobs(controller, tracker, UID, index))
    clock.t -= timedelta(hours=1)
    asyncio.run(reconcile.list_jobs(controller, tracker, UID, index))
    assert kube.calls == ["jobs", "jobs"]


def test_a_namespace_shares_one_list_of_restores_for_the_ttl() -> None:
    controller, _, kube, clock, _ = setup()
    spec = {"target": {"kind": "StatefulSet", "name": "redis"}}
    kube.restores = [
        {
            "metadata": {"name": "r1"},
            "spec": spec,
            "status": {"startTime": "2027-01-01T00:00:00Z"},
        }
    ]
    trackers = [Tracker(NS, f"b{i}") for i in range(50)]
    found = [asyncio.run(reconcile.restoring(controller, t, spec)) for t in trackers]
    assert found == ["r1"] * 50
    assert kube.calls == ["redisrestores"]

    kube.restores = []  # the restore ended
    clock.t += timedelta(seconds=reconcile.RESTORES_TTL_SECONDS)
    assert asyncio.run(reconcile.restoring(controller, trackers[0], spec)) is None
    assert kube.calls == ["redisrestores", "redisrestores"]


def test_daemons_asking_at_once_share_the_one_list_on_its_way() -> None:
    """At a cron slot every daemon of a namespace asks in the same second, the cache
    expired: one list answers all of them."""
    controller, _, kube, _, _ = setup()
    spec = {"target": {"kind": "StatefulSet", "name": "redis"}}
    kube.restores = [
        {"metadata": {"name": "r1"}, "spec": spec, "status": {"startTime": "2027-01-01T00:00:00Z"}}
    ]
    trackers = [Tracker(NS, f"b{i}") for i in range(50)]

    async def all_at_once() -> list[str | None]:
        return list(
            await asyncio.gather(*(reconcile.restoring(controller, t, spec) for t in trackers))
        )

    assert asyncio.run(all_at_once()) == ["r1"] * 50
    assert kube.calls == ["redisrestores"]
