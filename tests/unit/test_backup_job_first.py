"""At a cron slot the Job is created first and the status written behind it (issue 15:
the status write and its watch event no longer delay the other resources' Jobs). A
controller stopped between the two -- the Job made, the status not written -- must,
once restarted, make no second Job and lose no run: the real pass (observe -> plan ->
execute) against an API that holds what the first process left."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from backupctl.controller.backup import reconcile
from backupctl.controller.backup.run_now import ANNOTATION as RUN_NOW
from backupctl.controller.backup.state import Controller
from backupctl.controller.jobs import RUNNING
from backupctl.controller.kube import AlreadyExists
from backupctl.controller.manifests import LABEL_BACKUP
from backupctl.controller.observe import job_view

NS, NAME, UID = "redis", "nightly", "uid-1"
SLOT = datetime(2030, 1, 1, 2, tzinfo=UTC)
JOB = "nightly-20300101020000"


class Killed(BaseException):
    """The process ends here (SIGKILL): nothing after this request runs."""


class FakeClock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def now(self) -> datetime:
        return self.t

    def from_real(self, t: datetime) -> datetime:
        return t


class FakeApi:
    """The API server: one StatefulSet and its ready pod, the RedisBackup, its Jobs.
    ``kill_at``: the request (``"status"``, ``"job"``) during which the process dies."""

    def __init__(self) -> None:
        self.backup: dict[str, Any] = {
            "apiVersion": "backupctl.dev/v1alpha1",
            "kind": "RedisBackup",
            "metadata": {
                "name": NAME,
                "namespace": NS,
                "uid": UID,
                "generation": 1,
                "creationTimestamp": "2030-01-01T01:00:00Z",
                "annotations": {},
            },
            "spec": {
                "target": {"kind": "StatefulSet", "name": "redis"},
                "schedule": "0 2 * * *",
                "method": "replication",
                "storage": {"s3": {"bucket": "b", "endpoint": "http://127.0.0.1:9"}},
            },
            "status": {},
        }
        self.jobs: dict[str, dict[str, Any]] = {}
        self.requests: list[str] = []
        self.kill_at: str | None = None

    async def get(self, group: str, version: str, plural: str, ns: str, name: str) -> Any:
        if plural == "statefulsets":
            return {
                "metadata": {"name": "redis"},
                "spec": {"selector": {"matchLabels": {"app": "redis"}}, "serviceName": "redis"},
            }
        return None

    async def list(self, group: str, version: str, plural: str, ns: str, *_: Any) -> Any:
        if plural == "pods":
            return [
                {
                    "metadata": {
                        "name": "redis-0",
                        "labels": {"app": "redis"},
                        "ownerReferences": [{"kind": "StatefulSet", "name": "redis"}],
                    },
                    "spec": {"nodeName": "node-a", "containers": [{"name": "redis"}]},
                    "status": {
                        "phase": "Running",
                        "podIP": "127.0.0.1",
                        "conditions": [{"type": "Ready", "status": "True"}],
                    },
                }
            ]
        if plural == "jobs":
            return list(self.jobs.values())
        return []

    async def create(self, group: str, version: str, plural: str, ns: str, body: Any) -> Any:
        if plural == "events":
            return body
        self.requests.append(f"create {body['metadata']['name']}")
        if body["metadata"]["name"] in self.jobs:
            raise AlreadyExists(409, "AlreadyExists", "exists")
        self.jobs[body["metadata"]["name"]] = copy.deepcopy(body)
        if self.kill_at == "job":
            raise Killed
        return body

    async def patch_status(self, *args: Any) -> Any:
        patch = args[-1]
        self.requests.append("status")
        if self.kill_at == "status":
            raise Killed
        status = self.backup["status"]
        for key, value in patch.items():
            if value is None:
                status.pop(key, None)
            else:
                status[key] = value
        return copy.deepcopy(self.backup)


def one_process(api: FakeApi, at: datetime) -> Controller:
    """A controller process: passes until there is nothing left to do now, or it is
    killed (at most 5 passes)."""
    clock = FakeClock(at)
    controller = Controller(kube=api, image="img", clock=clock)  # type: ignore[arg-type]
    tracker = controller.tracker(NS, NAME)

    async def passes() -> None:
        for _ in range(5):
            body = copy.deepcopy(api.backup)
            tracker.body = body  # type: ignore[assignment]
            index = {(NS, NAME): [(UID, job_view(j)) for j in api.jobs.values()]}
            before = len(api.requests)
            await reconcile.reconcile(controller, tracker, body, index)  # type: ignore[arg-type]
            if len(api.requests) == before:
                return

    with contextlib.suppress(Killed):
        asyncio.run(passes())
    return controller


def test_the_slots_job_is_created_before_its_status_is_written() -> None:
    api = FakeApi()
    one_process(api, SLOT - timedelta(minutes=10))  # scheduled: the next slot announced
    assert api.backup["status"]["nextScheduleTime"] == "2030-01-01T02:00:00Z"
    api.requests.clear()
    one_process(api, SLOT + timedelta(seconds=1))
    assert api.requests[:2] == [f"create {JOB}", "status"]
    status = api.backup["status"]
    assert status["lastScheduleTime"] == "2030-01-01T02:00:00Z"
    assert [(h["jobName"], h["phase"]) for h in status["history"]] == [(JOB, RUNNING)]


def test_killed_between_the_job_and_its_status_the_restart_makes_no_second_job() -> None:
    api = FakeApi()
    one_process(api, SLOT - timedelta(minutes=10))
    api.requests.clear()
    api.kill_at = "status"  # the Job is made; the process dies writing the status
    one_process(api, SLOT + timedelta(seconds=1))
    assert api.requests == [f"create {JOB}", "status"]
    assert "lastScheduleTime" not in api.backup["status"]  # the status knows nothing yet
    assert list(api.jobs) == [JOB]

    api.kill_at = None
    api.requests.clear()
    one_process(api, SLOT + timedelta(seconds=20))  # restarted
    assert list(api.jobs) == [JOB]
    assert not [r for r in api.requests if r.startswith("create")]  # not even a 409
    status = api.backup["status"]
    assert status["lastScheduleTime"] == "2030-01-01T02:00:00Z"
    assert [(h["jobName"], h["phase"]) for h in status["history"]] == [(JOB, RUNNING)]
    assert status["activeJobs"] == [JOB]
    assert status["nextScheduleTime"] == "2030-01-02T02:00:00Z"


def test_a_run_now_run_writes_its_status_first_its_slot_is_not_the_schedules() -> None:
    api = FakeApi()
    one_process(api, SLOT - timedelta(minutes=10))
    api.backup["metadata"]["annotations"][RUN_NOW] = "1"
    api.requests.clear()
    api.kill_at = "job"  # dies as soon as the Job is made
    one_process(api, SLOT - timedelta(minutes=5))
    assert api.requests[0] == "status"  # lastRunNow recorded before the Job
    assert api.backup["status"]["lastRunNow"] == "1"
    made = list(api.jobs)

    api.kill_at = None
    one_process(api, SLOT - timedelta(minutes=4))  # restarted a minute later
    assert list(api.jobs) == made  # the value is handled: no second run-now Job
    assert len(made) == 1 and made[0] != JOB
    assert LABEL_BACKUP in api.jobs[made[0]]["metadata"]["labels"]


def test_the_pass_that_only_checks_the_new_jobs_pod_may_wait_behind_the_slot() -> None:
    api = FakeApi()
    before = one_process(api, SLOT - timedelta(minutes=10))
    assert not before.tracker(NS, NAME).check_pass  # next: the slot, a pass of its own
    after = one_process(api, SLOT + timedelta(seconds=1))
    assert list(api.jobs) == [JOB]
    assert after.tracker(NS, NAME).check_pass  # next: its pod's first check, 5 s on


def test_a_sleep_says_whether_a_change_woke_it_or_the_time_ran_out() -> None:
    async def sleeps() -> tuple[bool, bool]:
        tracker = Controller(kube=None, image="i", clock=None).tracker(NS, NAME)  # type: ignore[arg-type]
        stopped: Any = type("Stopped", (), {"__bool__": lambda self: False})()
        timed_out = await tracker.sleep(0.05, stopped)
        asyncio.get_running_loop().call_later(0.05, tracker.wake.set)
        woken = await tracker.sleep(5.0, stopped)
        return timed_out, woken

    assert asyncio.run(sleeps()) == (False, True)
