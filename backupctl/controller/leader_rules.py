"""Leader election on a ``coordination.k8s.io/v1`` Lease: the decisions, as pure functions.

Why a module of its own: who may hold the Lease, when a holder must give up and what
the Lease says after each write are the whole safety argument of running two controller
replicas; they are kept apart from the API calls (:mod:`backupctl.controller.leader`)
so a table test can check every case. The rules are client-go's ``leaderelection``:

* a Lease is held by ``spec.holderIdentity`` until ``leaseDurationSeconds`` after this
  process last *saw it change* (its own monotonic clock, as client-go's
  ``observedTime``: clocks of different nodes need not agree, only run at one rate);
* anyone may take an expired or released Lease (holder empty); the holder renews it;
* every write carries the ``resourceVersion`` read, so of two racing candidates the API
  server lets one win (409 Conflict for the other);
* a holder that has not renewed for ``renew_deadline`` stops leading, which is before
  any other candidate can take the Lease (``renew_deadline < lease_duration``).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

JsonDict = dict[str, Any]

#: Label of the shard a resource belongs to (``backupctl operator --shard NAME``).
SHARD_LABEL = "backupctl.dev/shard"
#: Label of the Jobs (and their pods) a sharded controller creates: its shard. Not
#: ``backupctl.dev/shard``, which on a Job names the Redis Cluster shard it backs up.
JOB_SHARD_LABEL = "backupctl.dev/controller-shard"
#: The Lease of an unsharded controller; a shard's is ``<LEASE_NAME>-shard-<name>``.
LEASE_NAME = "backupctl-controller"
#: client-go's retry jitter: a candidate waits retry_period * (1 + up to this).
JITTER = 1.2


@dataclass(frozen=True)
class Timings:
    """client-go's three durations, in seconds (its defaults: 15 / 10 / 2)."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def problem(self) -> str | None:
        """What is wrong with these timings (client-go's checks), or None."""
        if min(self.lease_duration, self.renew_deadline, self.retry_period) <= 0:
            return "lease duration, renew deadline and retry period must be above 0"
        if self.lease_duration <= self.renew_deadline:
            return (
                f"the lease duration ({self.lease_duration:g} s) must be longer than the "
                f"renew deadline ({self.renew_deadline:g} s)"
            )
        if self.renew_deadline <= JITTER * self.retry_period:
            return (
                f"the renew deadline ({self.renew_deadline:g} s) must be longer than "
                f"{JITTER:g} x the retry period ({self.retry_period:g} s)"
            )
        return None


@dataclass(frozen=True)
class Record:
    """What a Lease says (its ``spec`` and ``resourceVersion``)."""

    holder: str = ""
    lease_duration: float = 0.0
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0
    resource_version: str = ""

    @classmethod
    def of(cls, lease: JsonDict) -> Record:
        spec = lease.get("spec") or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            lease_duration=float(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
            resource_version=str((lease.get("metadata") or {}).get("resourceVersion") or ""),
        )

    def same_content(self, other: Record) -> bool:
        """Equal apart from the resourceVersion (client-go compares the raw record)."""
        return (
            self.holder,
            self.lease_duration,
            self.acquire_time,
            self.renew_time,
            self.transitions,
        ) == (
            other.holder,
            other.lease_duration,
            other.acquire_time,
            other.renew_time,
            other.transitions,
        )


@dataclass(frozen=True)
class Observed:
    """The Lease as this process last read it, and when (monotonic seconds) it last
    saw the Lease change."""

    record: Record
    changed_at: float


def observe(previous: Observed | None, record: Record, now: float) -> Observed:
    """The observation after reading ``record`` at ``now``: a Lease whose content did not
    change since the previous read keeps its time, so a holder that stops renewing
    expires ``lease_duration`` after the last change this process saw."""
    if previous is not None and previous.record.same_content(record):
        return Observed(record, previous.changed_at)
    return Observed(record, now)


class Action(enum.Enum):
    CREATE = "create"  # no Lease yet: create it, held by us
    TAKE = "take"  # expired or released: write ourselves in (a transition)
    RENEW = "renew"  # ours: move renewTime on
    WAIT = "wait"  # someone else holds it, not expired


def decide(identity: str, observed: Observed | None, now: float) -> Action:
    """What a candidate (or the holder) ``identity`` does with the Lease it observed
    (None: there is no Lease)."""
    if observed is None:
        return Action.CREATE
    record = observed.record
    if record.holder == identity:
        return Action.RENEW
    if record.holder and observed.changed_at + record.lease_duration > now:
        return Action.WAIT
    return Action.TAKE


def micro_time(t: datetime) -> str:
    """A ``MicroTime`` as the API writes it: UTC, microseconds, ``Z``."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_spec(
    identity: str, action: Action, previous: Record | None, wall: datetime, timings: Timings
) -> JsonDict:
    """The Lease ``spec`` that ``action`` writes at wall time ``wall``."""
    now = micro_time(wall)
    spec: JsonDict = {
        "holderIdentity": identity,
        "leaseDurationSeconds": max(1, round(timings.lease_duration)),
        "renewTime": now,
    }
    if action is Action.RENEW and previous is not None:
        spec["acquireTime"] = previous.acquire_time or now
        spec["leaseTransitions"] = previous.transitions
    else:
        spec["acquireTime"] = now
        transitions = 0 if previous is None else previous.transitions
        spec["leaseTransitions"] = transitions + 1 if previous and previous.holder else transitions
    return spec


def release_spec(previous: Record, wall: datetime) -> JsonDict:
    """What a holder that stops on purpose (SIGTERM, a rollout) writes: no holder, a
    one-second lease, so a standby takes over at its next retry instead of after
    a whole lease duration (client-go's ``ReleaseOnCancel``)."""
    now = micro_time(wall)
    return {
        "holderIdentity": None,
        "leaseDurationSeconds": 1,
        "acquireTime": now,
        "renewTime": now,
        "leaseTransitions": previous.transitions,
    }


def must_stop(last_renewed: float, now: float, timings: Timings) -> bool:
    """A leader that last renewed at ``last_renewed`` stops leading at ``now``: its
    renew deadline has passed (others may take the Lease lease_duration after it)."""
    return now - last_renewed >= timings.renew_deadline


def attempt_timeout(last_renewed: float, now: float, timings: Timings) -> float:
    """How long the next renewal may take: whatever is left of the renew deadline
    (a request hanging on a broken network must not carry the leader past it). Not
    less: a slow answer from a busy API server still renews, as in client-go, whose
    renew loop runs every attempt under one deadline. (Measured: capping an attempt at
    half the deadline lost healthy leaders, the retry queued again behind the same
    backlog; a lost connection fails at once and is retried anyway.)"""
    return max(0.0, timings.renew_deadline - (now - last_renewed))


def lease_name(shard: str | None) -> str:
    """The Lease of a controller: one per shard (``''``: the unlabelled-default shard)."""
    if shard is None:
        return LEASE_NAME
    return f"{LEASE_NAME}-shard-{shard or 'default'}"


def shard_selector(shard: str | None) -> str | None:
    """The label selector of a shard's resources (None: all of them); ``''`` is the
    unlabelled-default shard: resources without the label."""
    if shard is None:
        return None
    if shard == "":
        return f"!{SHARD_LABEL}"
    return f"{SHARD_LABEL}={shard}"


def job_shard_selector(shard: str | None) -> str | None:
    """The label selector of the Jobs a shard's controller watches (None: all of them):
    those it labelled with its shard; ``''``: unlabelled ones, which include every Job
    made before the label existed (:func:`adoptable_jobs` moves the others)."""
    if shard is None:
        return None
    if shard == "":
        return f"!{JOB_SHARD_LABEL}"
    return f"{JOB_SHARD_LABEL}={shard}"


def with_job_shard(job: JsonDict, shard: str | None) -> JsonDict:
    """``job`` with :data:`JOB_SHARD_LABEL` on it and on its pods (unchanged for an
    unsharded controller or the unlabelled-default shard)."""
    if not shard:
        return job
    meta = job.get("metadata") or {}
    spec = job.get("spec") or {}
    template = spec.get("template") or {}
    pod_meta = template.get("metadata") or {}
    label = {JOB_SHARD_LABEL: shard}
    return {
        **job,
        "metadata": {**meta, "labels": {**(meta.get("labels") or {}), **label}},
        "spec": {
            **spec,
            "template": {
                **template,
                "metadata": {**pod_meta, "labels": {**(pod_meta.get("labels") or {}), **label}},
            },
        },
    }


def adoptable_jobs(jobs: list[JsonDict], owners: set[str]) -> list[tuple[str, str]]:
    """(namespace, name) of the Jobs without :data:`JOB_SHARD_LABEL` owned by one of
    ``owners`` (the uids of this shard's RedisBackups and RedisRestores): Jobs created
    before Jobs carried the label, which the shard's Job watch would otherwise never see."""
    found = []
    for job in jobs:
        meta = job.get("metadata") or {}
        if JOB_SHARD_LABEL in (meta.get("labels") or {}):
            continue
        if any(o.get("uid") in owners for o in meta.get("ownerReferences") or []):
            found.append((str(meta.get("namespace") or ""), str(meta.get("name"))))
    return found


def shard_problem(shard: str) -> str | None:
    """Why ``shard`` cannot be a label value (None: it can)."""
    if shard == "":
        return None
    if len(shard) > 63 or not re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", shard):
        return (
            f"--shard {shard!r} is not a label value: up to 63 letters, digits, '-', '_' "
            "or '.', starting and ending with a letter or digit"
        )
    if shard == "default":
        return "--shard 'default' is reserved for the unlabelled shard: use --shard ''"
    return None


__all__ = [
    "JOB_SHARD_LABEL",
    "Action",
    "Observed",
    "Record",
    "Timings",
    "adoptable_jobs",
    "attempt_timeout",
    "decide",
    "job_shard_selector",
    "lease_name",
    "lease_spec",
    "must_stop",
    "observe",
    "release_spec",
    "shard_selector",
    "with_job_shard",
]
