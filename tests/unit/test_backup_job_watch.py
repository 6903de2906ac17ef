"""The controller's own index of the RedisBackups' Jobs (controller/backup/job_watch.py):
filled by a list, kept by a watch, listed again when the watch is too old, every change
reported for the resource whose Jobs changed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from backupctl.controller.backup.job_watch import JobWatch
from backupctl.controller.jobs import RUNNING, SUCCEEDED
from backupctl.controller.manifests import LABEL_BACKUP

NS = "redis"


def job(name: str, backup: str, *, done: bool = False, rv: str = "1") -> dict[str, Any]:
    status = {"conditions": [{"type": "Complete", "status": "True"}]} if done else {}
    return {
        "metadata": {
            "name": name,
            "namespace": NS,
            "resourceVersion": rv,
            "labels": {LABEL_BACKUP: backup},
            "ownerReferences": [{"uid": f"uid-{backup}"}],
        },
        "status": status,
    }


class FakeKube:
    """Answers lists from ``lists`` and watches from ``watches``, in turn; then a watch
    that waits for ever (as an open one does)."""

    def __init__(self, lists: list[list[dict[str, Any]]], watches: list[list[Any]]) -> None:
        self.lists, self.watches = lists, watches
        self.listed = 0
        self.watched_from: list[str] = []

    async def list_page(self, *args: Any) -> dict[str, Any]:
        items = self.lists[min(self.listed, len(self.lists) - 1)]
        self.listed += 1
        return {"metadata": {"resourceVersion": f"list-{self.listed}"}, "items": items}

    async def watch(self, *args: Any, resource_version: str, **_: Any) -> AsyncIterator[Any]:
        self.watched_from.append(resource_version)
        events = self.watches.pop(0) if self.watches else None
        if events is None:
            await asyncio.Event().wait()
        for event in events or ():
            yield event


def follow(kube: FakeKube, until: Any) -> tuple[JobWatch, list[tuple[str, str]]]:
    """Run the watch until ``until(watch)`` holds (at most 5 s)."""
    changed: list[tuple[str, str]] = []
    watch = JobWatch(kube, "sel", [NS], changed.append)  # type: ignore[arg-type]

    async def go() -> None:
        task = asyncio.create_task(watch.run())
        try:
            for _ in range(500):
                if until(watch):
                    return
                await asyncio.sleep(0.01)
            raise AssertionError("the index never got there")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())
    return watch, changed


def states(watch: JobWatch, backup: str) -> dict[str, str]:
    return {view.name: view.state for _, view in watch.get((NS, backup))}


def test_the_first_list_fills_the_index_by_resource_and_then_lets_the_daemons_start() -> None:
    kube = FakeKube([[job("a-1", "a"), job("a-2", "a", done=True), job("b-1", "b")]], [])
    watch, changed = follow(kube, lambda w: w.listed.is_set())
    assert states(watch, "a") == {"a-1": RUNNING, "a-2": SUCCEEDED}
    assert [owner for owner, _ in watch.get((NS, "b"))] == ["uid-b"]
    assert list(watch.get((NS, "c"))) == []
    assert sorted(changed) == [(NS, "a"), (NS, "b")]
    assert kube.watched_from == ["list-1"]  # the watch starts where the list ended


def test_watch_events_add_change_and_delete_jobs_and_report_their_resource() -> None:
    events = [
        {"type": "ADDED", "object": job("a-1", "a", rv="5")},
        {"type": "MODIFIED", "object": job("a-1", "a", done=True, rv="6")},
        {"type": "ADDED", "object": job("b-1", "b", rv="7")},
        {"type": "DELETED", "object": job("b-1", "b", rv="8")},
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}},
    ]
    kube = FakeKube([[]], [events])
    watch, changed = follow(kube, lambda w: len(kube.watched_from) == 2)
    assert states(watch, "a") == {"a-1": SUCCEEDED}
    assert list(watch.get((NS, "b"))) == []
    assert changed == [(NS, "a"), (NS, "a"), (NS, "b"), (NS, "b")]
    assert kube.watched_from == ["list-1", "9"]  # resumed after the last event, no new list
    assert kube.listed == 1


def test_a_watch_too_old_lists_again_and_reports_the_jobs_gone_meanwhile() -> None:
    gone = {"type": "ERROR", "object": {"code": 410, "reason": "Expired"}}
    kube = FakeKube([[job("a-1", "a"), job("b-1", "b")], [job("b-1", "b")]], [[gone]])
    watch, changed = follow(kube, lambda w: kube.listed == 2 and len(kube.watched_from) == 2)
    assert list(watch.get((NS, "a"))) == []
    assert states(watch, "b") == {"b-1": RUNNING}
    assert sorted(changed) == [(NS, "a"), (NS, "a"), (NS, "b")]  # b did not change
    assert kube.watched_from == ["list-1", "list-2"]
