"""LeaderElector (backupctl.controller.leader) against an in-memory Lease API with
resourceVersion conflicts, on a fake monotonic clock: who wins, when a leader gives up."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from backupctl.controller.kube import AlreadyExists, ApiError
from backupctl.controller.leader import LEADER, LeaderElector
from backupctl.controller.leader_rules import Timings

JsonDict = dict[str, Any]
T = Timings(6, 4, 0.5)


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)

    async def within(self, request: Any, seconds: float) -> Any:
        """asyncio.wait_for on this clock: a request still pending after a few turns of
        the loop has hung; the clock moves on by ``seconds`` and it times out."""
        task = asyncio.ensure_future(request)
        for _ in range(10):
            if task.done():
                return task.result()
            await asyncio.sleep(0)
        task.cancel()
        self.now += seconds
        raise TimeoutError


class Leases:
    """One Lease store shared by candidates: 409 on a stale resourceVersion."""

    def __init__(self) -> None:
        self.obj: JsonDict | None = None
        self.rv = 0
        self.hang = False  # the API unreachable: requests never answer

    async def _maybe_hang(self) -> None:
        if self.hang:
            await asyncio.Event().wait()

    async def get(self, *_: str) -> JsonDict | None:
        await self._maybe_hang()
        return copy.deepcopy(self.obj)

    async def create(self, _g: str, _v: str, _p: str, ns: str, body: JsonDict) -> JsonDict:
        await self._maybe_hang()
        if self.obj is not None:
            raise AlreadyExists(409, "AlreadyExists", "exists")
        self.rv += 1
        self.obj = {**body, "metadata": {**body["metadata"], "resourceVersion": str(self.rv)}}
        return copy.deepcopy(self.obj)

    async def patch(
        self, _g: str, _v: str, _p: str, ns: str, name: str, patch: JsonDict
    ) -> JsonDict:
        await self._maybe_hang()
        assert self.obj is not None
        if patch["metadata"]["resourceVersion"] != self.obj["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "the object has been modified")
        self.rv += 1
        spec = {**self.obj["spec"], **patch["spec"]}
        self.obj = {**self.obj, "spec": {k: v for k, v in spec.items() if v is not None}}
        self.obj["metadata"] = {**self.obj["metadata"], "resourceVersion": str(self.rv)}
        return copy.deepcopy(self.obj)


def elector(api: Leases, clock: FakeTime, identity: str) -> LeaderElector:
    return LeaderElector(
        api,  # type: ignore[arg-type]
        namespace="ns",
        name="lease",
        identity=identity,
        timings=T,
        shard="unit",
        monotonic=clock.monotonic,
        wall=lambda: datetime(2030, 1, 1, tzinfo=UTC),
        sleep=clock.sleep,
        within=clock.within,
    )


def gauge() -> float:
    return float(LEADER.labels("unit")._value.get())


def test_first_candidate_creates_the_lease_the_second_waits_then_takes_it_when_expired() -> None:
    async def scenario() -> None:
        api, clock = Leases(), FakeTime()
        a, b = elector(api, clock, "a"), elector(api, clock, "b")
        await a.acquire()
        assert api.obj and api.obj["spec"]["holderIdentity"] == "a"
        assert await b.try_acquire_or_renew() is False  # held, fresh
        clock.now += 5.9
        assert await b.try_acquire_or_renew() is False  # not yet 6 s since b saw a change
        clock.now += 0.2
        assert await b.try_acquire_or_renew() is True  # expired: b takes it
        assert api.obj["spec"]["holderIdentity"] == "b"
        assert api.obj["spec"]["leaseTransitions"] == 1

    asyncio.run(scenario())


def test_of_two_racing_candidates_exactly_one_wins_by_resource_version() -> None:
    async def scenario() -> None:
        api, clock = Leases(), FakeTime()
        a, b = elector(api, clock, "a"), elector(api, clock, "b")
        await a.acquire()
        await b.try_acquire_or_renew()  # both observe a's Lease
        c = elector(api, clock, "c")
        await c.try_acquire_or_renew()
        clock.now += 7  # expired for both b and c
        # b and c both read the same resourceVersion; b writes first, c's write is stale.
        lease = await api.get()
        assert lease is not None
        results = await asyncio.gather(b.try_acquire_or_renew(), c.try_acquire_or_renew())
        assert sorted(results) == [False, True]
        assert api.obj and api.obj["spec"]["holderIdentity"] in ("b", "c")

    asyncio.run(scenario())


def test_a_leader_cut_off_from_the_api_stops_at_its_renew_deadline_before_expiry() -> None:
    async def scenario() -> None:
        api, clock = Leases(), FakeTime()
        a = elector(api, clock, "a")
        await a.acquire()
        assert gauge() == 1
        renewed = clock.now
        keeper = asyncio.create_task(a.keep_leading())
        for _ in range(20):  # a few renewals go through
            await asyncio.sleep(0)
        assert not keeper.done()
        api.hang = True
        cut = clock.now
        await asyncio.wait_for(keeper, timeout=10)  # the hanging renewal is abandoned
        assert a.last_renewed is not None
        stopped = clock.now
        assert stopped - a.last_renewed >= T.renew_deadline
        assert stopped < a.last_renewed + T.lease_duration  # before anyone may take over
        assert stopped >= cut and renewed <= a.last_renewed
        assert gauge() == 0

    asyncio.run(scenario())


def test_release_lets_a_standby_take_over_at_once() -> None:
    async def scenario() -> None:
        api, clock = Leases(), FakeTime()
        a, b = elector(api, clock, "a"), elector(api, clock, "b")
        await a.acquire()
        assert await b.try_acquire_or_renew() is False
        await a.release()
        assert api.obj and "holderIdentity" not in api.obj["spec"]
        assert await b.try_acquire_or_renew() is True  # no wait for the lease duration

    asyncio.run(scenario())


@pytest.mark.parametrize("status", [500, 403])
def test_other_api_errors_are_not_a_lost_race(status: int) -> None:
    class Failing(Leases):
        async def create(self, *args: Any) -> JsonDict:
            raise ApiError(status, "Boom", "no")

    async def scenario() -> None:
        a = elector(Failing(), FakeTime(), "a")
        with pytest.raises(ApiError):
            await a.try_acquire_or_renew()

    asyncio.run(scenario())
