"""The controller's heap frozen out of the cyclic GC once settled (controller/heap.py):
at 2,000 RedisBackups each full collection stopped the loop 0.1-0.5 s, also inside a
cron slot. Frozen once the daemons had their first passes, again only when the fleet
grew by a tenth (a freeze keeps the cycles dropped after it)."""

from __future__ import annotations

import asyncio

import pytest

from backupctl.controller.backup import state
from backupctl.controller.backup.state import Controller
from backupctl.controller.heap import Heap, freeze_due


@pytest.mark.parametrize(
    ("resources", "frozen_at", "due"),
    [
        (0, None, False),  # nothing to settle yet
        (1, None, True),
        (2000, None, True),
        (2000, 2000, False),
        (2099, 2000, False),  # grew by less than a tenth
        (2200, 2000, True),
        (150, 100, False),  # ... and by at least 100
        (200, 100, True),
        (1500, 2000, False),  # shrank: the frozen objects go with their reference counts
    ],
)
def test_a_freeze_is_due_first_and_then_when_the_fleet_grew(
    resources: int, frozen_at: int | None, due: bool
) -> None:
    assert freeze_due(resources, frozen_at) is due


def scan(controller: Controller, *, first_passes: int, busy: bool) -> int:
    """Two full scans of watch_changes; how often it froze the heap."""
    frozen: list[int] = []
    controller.heap = Heap(lambda: frozen.append(1))
    for i in range(3):
        tracker = controller.tracker("ns", f"rb-{i}")
        tracker.body = {"metadata": {"generation": 1}}  # type: ignore[assignment]
        if i < first_passes:
            tracker.seen_state = controller.state_of(tracker)

    async def go() -> None:
        if busy:
            await controller.passes.acquire()
        task = asyncio.create_task(controller.watch_changes())
        await asyncio.sleep(state.CHANGE_POLL * state.FULL_SCAN_POLLS * 2 + 0.2)
        task.cancel()

    asyncio.run(go())
    return len(frozen)


def test_it_freezes_once_every_resource_had_its_first_pass_and_no_pass_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(state, "CHANGE_POLL", 0.02)
    make = lambda: Controller(kube=None, image="img", clock=None)  # type: ignore[arg-type]  # noqa: E731
    assert scan(make(), first_passes=3, busy=False) == 1  # once: the fleet did not grow
    assert scan(make(), first_passes=2, busy=False) == 0  # one daemon has not had its pass
    assert scan(make(), first_passes=3, busy=True) == 0  # a pass runs
