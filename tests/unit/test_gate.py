"""The controller's pass gate (backupctl.controller.gate): a limit, in arrival order,
that a cancelled waiter does not leak."""

from __future__ import annotations

import asyncio

from backupctl.controller.gate import Gate


def test_at_most_the_limit_run_and_the_others_go_in_arrival_order() -> None:
    async def scenario() -> tuple[int, list[int]]:
        gate, running, peak, order = Gate(3), 0, 0, []

        async def work(i: int) -> None:
            nonlocal running, peak
            async with gate.held():
                order.append(i)
                running += 1
                peak = max(peak, running)
                for _ in range(3):
                    await asyncio.sleep(0)
                running -= 1

        await asyncio.gather(*(work(i) for i in range(20)))
        return peak, order

    peak, order = asyncio.run(scenario())
    assert peak == 3
    assert order == list(range(20))


def test_a_cancelled_waiter_gives_its_turn_to_the_next() -> None:
    async def scenario() -> list[str]:
        gate, done = Gate(1), []
        await gate.acquire()  # held: the next two wait

        async def work(name: str) -> None:
            async with gate.held():
                done.append(name)

        first, second = asyncio.create_task(work("a")), asyncio.create_task(work("b"))
        await asyncio.sleep(0)
        first.cancel()
        gate.release()
        await asyncio.wait_for(second, timeout=5)  # not stuck behind the cancelled one
        assert first.cancelled()
        assert gate.free == 1 and not [w for w in gate.waiters if not w.done()]
        return done

    assert asyncio.run(scenario()) == ["b"]
