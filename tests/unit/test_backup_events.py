"""The RedisBackup controller's Events: posted behind the passes waiting for their turn.

At a cron slot the Jobs come first (issue 15: a slot of 10,000 RedisBackups); each Event
still arrives, with the time it happened, once no pass waits -- or after MAX_DEFER.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from backupctl.controller import event_poster
from backupctl.controller.event_poster import EventPoster
from backupctl.controller.kube import ApiError

AT = datetime(2030, 1, 1, 2, 0, 5, tzinfo=UTC)
BACKUP = {
    "apiVersion": "backupctl.dev/v1alpha1",
    "kind": "RedisBackup",
    "metadata": {"name": "nightly", "namespace": "redis", "uid": "u-1"},
}


class FakeKube:
    def __init__(self, failures: int = 0, status: int = 503) -> None:
        self.posted: list[dict[str, Any]] = []
        self.failures, self.status = failures, status

    async def create(self, group: str, version: str, plural: str, ns: str, body: Any) -> Any:
        assert (group, version, plural, ns) == ("", "v1", "events", "redis")
        if self.failures:
            self.failures -= 1
            raise ApiError(self.status, "ServiceUnavailable", "down")
        self.posted.append(body)
        return body


async def until(predicate: Any, seconds: float = 3.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


def test_an_event_waits_while_passes_wait_then_is_posted_with_its_own_time() -> None:
    kube, busy = FakeKube(), [True]

    async def scenario() -> tuple[int, list[dict[str, Any]]]:
        poster = EventPoster(kube, lambda: busy[0])  # type: ignore[arg-type]
        task = asyncio.create_task(poster.run())
        await poster.post(BACKUP, "Normal", "JobCreated", "created Job nightly-1", AT)
        await until(lambda: poster.queue.empty())  # a worker holds it ...
        await asyncio.sleep(0.3)
        while_busy = len(kube.posted)  # ... and does not post it while passes wait
        busy[0] = False
        await until(lambda: bool(kube.posted))
        task.cancel()
        return while_busy, kube.posted

    while_busy, posted = asyncio.run(scenario())
    assert while_busy == 0
    [event] = posted
    assert event["involvedObject"] == {
        "apiVersion": "backupctl.dev/v1alpha1",
        "kind": "RedisBackup",
        "name": "nightly",
        "namespace": "redis",
        "uid": "u-1",
    }
    assert (event["type"], event["reason"], event["message"]) == (
        "Normal",
        "JobCreated",
        "created Job nightly-1",
    )
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2030-01-01T02:00:05Z"
    assert event["metadata"] == {"generateName": "nightly.", "namespace": "redis"}


def test_busy_for_ever_still_posts_after_max_defer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(event_poster, "MAX_DEFER", 0.2)
    kube = FakeKube()

    async def scenario() -> None:
        poster = EventPoster(kube, lambda: True)  # type: ignore[arg-type]
        task = asyncio.create_task(poster.run())
        await poster.post(BACKUP, "Warning", "JobRejected", "x", AT)
        await until(lambda: bool(kube.posted))
        task.cancel()

    asyncio.run(scenario())
    assert [e["reason"] for e in kube.posted] == ["JobRejected"]


def test_an_unavailable_server_is_tried_again_a_refusal_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(event_poster, "RETRIES", (0.01, 0.01, 0.01))
    flaky, refusing = FakeKube(failures=2), FakeKube(failures=1, status=403)

    async def scenario() -> None:
        for kube in (flaky, refusing):
            poster = EventPoster(kube, lambda: False)  # type: ignore[arg-type]
            await poster._send(poster_tuple(poster))

    def poster_tuple(poster: EventPoster) -> Any:
        poster.queue.put_nowait(("v", "K", "nightly", "redis", "u", "Normal", "R", "m", AT))
        return poster.queue.get_nowait()

    asyncio.run(scenario())
    assert len(flaky.posted) == 1
    assert refusing.posted == []


def test_a_long_message_is_cut_in_the_middle_to_what_the_api_accepts() -> None:
    message = "a" * 800 + "b" * 800
    event = event_poster.event_object(BACKUP, "Warning", "JobRejected", message, AT)
    assert len(event["message"]) <= event_poster.MAX_MESSAGE
    assert event["message"].startswith("aaa") and event["message"].endswith("bbb")


def test_a_graceful_stop_posts_the_queued_events_at_once_within_its_bound() -> None:
    kube = FakeKube()

    async def scenario() -> tuple[int, float]:
        poster = EventPoster(kube, lambda: True)  # type: ignore[arg-type]  # busy for ever
        task = asyncio.create_task(poster.run())
        for i in range(10):
            await poster.post(BACKUP, "Normal", "JobCreated", f"created Job nightly-{i}", AT)
        await until(lambda: poster.queue.qsize() < 10)  # the workers hold some, waiting
        assert kube.posted == []
        started = asyncio.get_running_loop().time()
        left = await poster.flush()
        task.cancel()
        return left, asyncio.get_running_loop().time() - started

    left, took = asyncio.run(scenario())
    assert left == 0 and took < 2.0
    assert sorted(e["message"] for e in kube.posted) == sorted(
        f"created Job nightly-{i}" for i in range(10)
    )


def test_a_flush_against_a_server_that_is_down_gives_up_after_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(event_poster, "RETRIES", (0.2,) * 20)
    kube = FakeKube(failures=10**6)

    async def scenario() -> tuple[int, float]:
        poster = EventPoster(kube, lambda: False)  # type: ignore[arg-type]
        task = asyncio.create_task(poster.run())
        await poster.post(BACKUP, "Normal", "JobCreated", "x", AT)
        started = asyncio.get_running_loop().time()
        left = await poster.flush(seconds=0.5)
        task.cancel()
        return left, asyncio.get_running_loop().time() - started

    left, took = asyncio.run(scenario())
    assert left == 1 and 0.5 <= took < 1.5
