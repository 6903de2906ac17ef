"""Wake: a daemon's wake-up flag, waited on with a timeout but without a task."""

from __future__ import annotations

import asyncio

from backupctl.controller.wake import Wake


def test_a_set_flag_returns_at_once_until_cleared_and_a_timeout_says_false() -> None:
    async def run() -> tuple[bool, bool, bool]:
        wake = Wake()
        wake.set()
        at_once = await asyncio.wait_for(wake.wait(60), 1)
        wake.clear()
        timed_out = await wake.wait(0.05)
        return at_once, timed_out, wake.is_set()

    assert asyncio.run(run()) == (True, False, False)


def test_a_set_wakes_every_waiter_and_leaves_no_waiter_behind() -> None:
    async def run() -> tuple[list[bool], bool]:
        wake = Wake()
        waiters = [asyncio.ensure_future(wake.wait(30)) for _ in range(3)]
        await asyncio.sleep(0.01)  # all three are waiting now
        assert not any(w.done() for w in waiters)
        wake.set()
        woken = await asyncio.wait_for(asyncio.gather(*waiters), 1)
        return woken, wake._waiters is None

    assert asyncio.run(run()) == ([True, True, True], True)


def test_a_cancelled_waiter_is_forgotten_and_its_timer_cancelled() -> None:
    async def run() -> tuple[bool, bool, bool]:
        loop = asyncio.get_running_loop()
        wake = Wake()
        waiter = asyncio.ensure_future(wake.wait(30))
        await asyncio.sleep(0.01)
        timer = any(not h.cancelled() for h in loop._scheduled)  # type: ignore[attr-defined]
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        left = any(not h.cancelled() for h in loop._scheduled)  # type: ignore[attr-defined]
        return timer, left, wake._waiters is None

    assert asyncio.run(run()) == (True, False, True)
