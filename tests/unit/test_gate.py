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


def test_work_that_may_wait_goes_after_every_pass_that_waits() -> None:
    async def scenario() -> list[str]:
        gate, order = Gate(1), []
        await gate.acquire()  # held: everything below waits

        async def work(name: str, later: bool) -> None:
            async with gate.held(later=later):
                order.append(name)
                await asyncio.sleep(0)

        tasks = [asyncio.create_task(work("status-1", True))]
        await asyncio.sleep(0)
        tasks += [asyncio.create_task(work(f"pass-{i}", False)) for i in range(3)]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(work("status-2", True)))
        await asyncio.sleep(0)
        gate.release()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)
        assert gate.free == 1
        return order

    assert asyncio.run(scenario()) == ["pass-0", "pass-1", "pass-2", "status-1", "status-2"]


def test_work_that_waited_its_patience_goes_before_the_passes() -> None:
    async def scenario() -> list[str]:
        gate, order = Gate(1, patience=0.05), []
        await gate.acquire()

        async def work(name: str, later: bool) -> None:
            async with gate.held(later=later):
                order.append(name)

        tasks = [asyncio.create_task(work("status", True))]
        await asyncio.sleep(0)
        tasks += [asyncio.create_task(work(f"pass-{i}", False)) for i in range(2)]
        await asyncio.sleep(0.1)  # the status has waited longer than its patience
        gate.release()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)
        return order

    assert asyncio.run(scenario()) == ["status", "pass-0", "pass-1"]
