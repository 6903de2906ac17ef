"""Leader election for ``backupctl operator --leader-elect``: the Lease's API calls.

Why a module of its own: with two replicas (or one per shard and a standby each),
exactly one process may create Jobs for a set of RedisBackups. :class:`LeaderElector`
waits until this process holds the shard's ``coordination.k8s.io/v1`` Lease (before kopf
starts: a standby watches nothing and creates nothing), then renews it every retry period
and returns from :meth:`LeaderElector.keep_leading` as soon as it has not renewed for the
renew deadline, so the caller can stop handling before another candidate may take over.
The decisions are pure (:mod:`backupctl.controller.leader_rules`); here are the reads and
writes (merge patches carrying the ``resourceVersion`` read: optimistic concurrency), the
clocks and the gauge ``backupctl_controller_leader{shard}`` (1 while leading, in
prometheus_client's default registry).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Gauge

from backupctl.controller.kube import AlreadyExists, ApiError, Kube
from backupctl.controller.leader_rules import (
    JITTER,
    Action,
    Observed,
    Record,
    Timings,
    attempt_timeout,
    decide,
    lease_spec,
    must_stop,
    observe,
    release_spec,
)

#: The Lease resource (written out in every call: tests/unit/test_kustomize.py reads the
#: calls to check the RBAC grants exactly them).
LEASE_GROUP, LEASE_VERSION, LEASES = "coordination.k8s.io", "v1", "leases"
log = logging.getLogger("backupctl.leader")
#: ``asyncio.wait_for``'s shape: run a request, TimeoutError after this many seconds.
Deadline = Callable[[Coroutine[Any, Any, Any], float], Awaitable[Any]]

LEADER = Gauge(
    "backupctl_controller_leader",
    "1 while this process leads its shard (holds the shard's Lease), else 0.",
    ["shard"],
)


def shard_label(shard: str | None) -> str:
    """The ``shard`` label of the gauge: ``all`` unsharded, ``default`` for ``--shard ''``."""
    if shard is None:
        return "all"
    return shard or "default"


class LeaderElector:
    """Acquire, hold and release one Lease for ``identity``."""

    def __init__(
        self,
        kube: Kube,
        *,
        namespace: str,
        name: str,
        identity: str,
        timings: Timings,
        shard: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        within: Deadline = asyncio.wait_for,
    ) -> None:
        self.kube = kube
        self.namespace, self.name, self.identity = namespace, name, identity
        self.timings = timings
        self.monotonic, self.wall, self.sleep, self.within = monotonic, wall, sleep, within
        self.observed: Observed | None = None
        self.last_renewed: float | None = None
        self.gauge = LEADER.labels(shard_label(shard))
        self.gauge.set(0)

    @property
    def where(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    async def try_acquire_or_renew(self) -> bool:
        """One attempt: read the Lease and, if ours to write, write it. True: we hold it."""
        lease = await self.kube.get(LEASE_GROUP, LEASE_VERSION, LEASES, self.namespace, self.name)
        now = self.monotonic()
        if lease is not None:
            self.observed = observe(self.observed, Record.of(lease), now)
        action = decide(self.identity, self.observed if lease is not None else None, now)
        if action is Action.WAIT:
            return False
        previous = self.observed.record if lease is not None and self.observed else None
        spec = lease_spec(self.identity, action, previous, self.wall(), self.timings)
        try:
            if action is Action.CREATE:
                body = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": spec,
                }
                written = await self.kube.create(
                    LEASE_GROUP, LEASE_VERSION, LEASES, self.namespace, body
                )
            else:
                assert previous is not None
                patch = {"metadata": {"resourceVersion": previous.resource_version}, "spec": spec}
                written = await self.kube.patch(
                    LEASE_GROUP, LEASE_VERSION, LEASES, self.namespace, self.name, patch
                )
        except AlreadyExists:
            return False  # another candidate created it first
        except ApiError as e:
            if e.status == 409:
                return False  # another candidate wrote it since we read it
            raise
        self.observed = observe(self.observed, Record.of(written), self.monotonic())
        if action is not Action.RENEW:
            log.info("%s acquired by %s", self.where, self.identity)
        return True

    async def acquire(self) -> None:
        """Wait until this process holds the Lease (retrying every retry period, jittered)."""
        log.info("waiting to lead: %s, as %s", self.where, self.identity)
        while True:
            started = self.monotonic()
            try:
                held = await self.within(self.try_acquire_or_renew(), self.timings.renew_deadline)
            except (ApiError, TimeoutError) as e:
                log.warning("%s: cannot acquire yet: %s", self.where, e)
                held = False
            if held:
                self.last_renewed = started
                self.gauge.set(1)
                return
            await self.sleep(self.timings.retry_period * (1 + JITTER * random.random()))

    async def keep_leading(self) -> None:
        """Renew every retry period; return once the renew deadline has passed without a
        renewal (or another holder is seen): the caller must stop handling now."""
        assert self.last_renewed is not None, "acquire() first"
        while True:
            # Every retry period, but never past the renew deadline (a renewal that
            # hung until the deadline is followed at once by the stop).
            left = self.last_renewed + self.timings.renew_deadline - self.monotonic()
            await self.sleep(min(self.timings.retry_period, max(0.0, left)))
            started = self.monotonic()
            if must_stop(self.last_renewed, started, self.timings):
                break
            budget = attempt_timeout(self.last_renewed, started, self.timings)
            try:
                held = await self.within(self.try_acquire_or_renew(), budget)
            except (ApiError, TimeoutError) as e:
                log.warning("%s: renewal failed: %s", self.where, e or "timed out")
                continue
            if held:
                self.last_renewed = started
            elif self.observed is not None and self.observed.record.holder != self.identity:
                log.error("%s is held by %s now", self.where, self.observed.record.holder)
                break
        self.gauge.set(0)
        log.error(
            "%s: not renewed for %g s (the renew deadline): this process stops leading",
            self.where,
            self.timings.renew_deadline,
        )

    async def release(self) -> None:
        """Give the Lease up (on a clean stop), so a standby takes over at its next retry."""
        self.gauge.set(0)
        observed = self.observed
        if observed is None or observed.record.holder != self.identity:
            return
        patch = {
            "metadata": {"resourceVersion": observed.record.resource_version},
            "spec": release_spec(observed.record, self.wall()),
        }
        try:
            await self.within(
                self.kube.patch(
                    LEASE_GROUP, LEASE_VERSION, LEASES, self.namespace, self.name, patch
                ),
                self.timings.retry_period,
            )
            log.info("%s released by %s", self.where, self.identity)
        except (ApiError, TimeoutError) as e:
            log.warning("%s: could not release it (it expires by itself): %s", self.where, e)


__all__ = ["LEADER", "LEASES", "LEASE_GROUP", "LEASE_VERSION", "LeaderElector", "shard_label"]
