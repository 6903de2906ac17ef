"""Leader election decisions (backupctl.controller.leader_rules): client-go's rules as tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from backupctl.controller.leader_rules import (
    Action,
    Observed,
    Record,
    Timings,
    adoptable_jobs,
    attempt_timeout,
    decide,
    job_shard_selector,
    lease_name,
    lease_spec,
    must_stop,
    observe,
    release_spec,
    shard_problem,
    shard_selector,
    with_job_shard,
)

T = Timings()  # 15 / 10 / 2
WALL = datetime(2030, 1, 1, 2, 0, 0, 123456, tzinfo=UTC)


def held(holder: str, duration: float = 15, rv: str = "7", renew: str = "r1") -> Record:
    return Record(holder, duration, "a0", renew, 2, rv)


@pytest.mark.parametrize(
    ("record", "seen_at", "now", "expected"),
    [
        (None, 0, 100, Action.CREATE),  # no Lease: create it
        (held("me"), 95, 100, Action.RENEW),  # ours: renew
        (held("me"), 0, 100, Action.RENEW),  # ours even if "expired": renew (no transition)
        (held("other"), 90, 100, Action.WAIT),  # 10 s since seen changing: still theirs
        (held("other"), 85.01, 100, Action.WAIT),  # just inside the lease duration
        (held("other"), 85, 100, Action.TAKE),  # exactly the lease duration: expired
        (held("other"), 50, 100, Action.TAKE),  # long expired
        (held(""), 99, 100, Action.TAKE),  # released: take at once
        (held("other", duration=1), 98.5, 100, Action.TAKE),  # released by a 1 s lease
        (held("other", duration=1), 99.5, 100, Action.WAIT),
    ],
)
def test_decide(record: Record | None, seen_at: float, now: float, expected: Action) -> None:
    observed = None if record is None else Observed(record, seen_at)
    assert decide("me", observed, now) is expected


def test_expiry_counts_from_when_this_process_saw_the_lease_change() -> None:
    # The holder renews (renewTime changes): each read that sees a change restarts the
    # count, whatever the holder's wall clock wrote; a stale holder's record stops changing.
    first = observe(None, held("other", renew="r1"), now=0)
    same = observe(first, held("other", renew="r1", rv="7"), now=14)
    assert same.changed_at == 0 and decide("me", same, 14) is Action.WAIT
    assert decide("me", observe(same, held("other", renew="r1"), now=15), 15) is Action.TAKE
    renewed = observe(same, held("other", renew="r2", rv="8"), now=14)
    assert renewed.changed_at == 14
    assert decide("me", observe(renewed, held("other", renew="r2", rv="8"), 28), 28) is (
        Action.WAIT
    )


@pytest.mark.parametrize(
    ("action", "previous", "acquire", "transitions"),
    [
        (Action.CREATE, None, "2030-01-01T02:00:00.123456Z", 0),
        (Action.RENEW, held("me"), "a0", 2),  # keeps acquireTime and the count
        (Action.TAKE, held("other"), "2030-01-01T02:00:00.123456Z", 3),  # a transition
        (Action.TAKE, held(""), "2030-01-01T02:00:00.123456Z", 2),  # after a release: none
    ],
)
def test_lease_spec(
    action: Action, previous: Record | None, acquire: str, transitions: int
) -> None:
    spec = lease_spec("me", action, previous, WALL, T)
    assert spec == {
        "holderIdentity": "me",
        "leaseDurationSeconds": 15,
        "renewTime": "2030-01-01T02:00:00.123456Z",
        "acquireTime": acquire,
        "leaseTransitions": transitions,
    }


def test_release_leaves_no_holder_and_a_one_second_lease() -> None:
    spec = release_spec(held("me"), WALL)
    assert spec["holderIdentity"] is None and spec["leaseDurationSeconds"] == 1
    assert spec["leaseTransitions"] == 2
    # what a standby then decides, one second after it saw the release
    released = Observed(Record.of({"spec": spec, "metadata": {"resourceVersion": "9"}}), 10)
    assert decide("standby", released, 10.5) is Action.TAKE  # no holder: at once


@pytest.mark.parametrize(
    ("last", "now", "stop", "budget"),
    [
        (100, 100, False, 10),
        (100, 109.9, False, 0.1),
        (100, 110, True, 0),  # the renew deadline: stop
        (100, 114.9, True, 0),  # (others may take over at 115 at the earliest)
    ],
)
def test_renew_deadline(last: float, now: float, stop: bool, budget: float) -> None:
    assert must_stop(last, now, T) is stop
    assert attempt_timeout(last, now, T) == pytest.approx(budget)


@pytest.mark.parametrize(
    ("timings", "problem"),
    [
        (Timings(), None),
        (Timings(15, 15, 2), "must be longer than the renew deadline"),
        (Timings(15, 10, 9), "1.2 x the retry period"),
        (Timings(15, 10, 0), "above 0"),
    ],
)
def test_timings(timings: Timings, problem: str | None) -> None:
    found = timings.problem()
    assert (found is None) if problem is None else (problem in (found or ""))


@pytest.mark.parametrize(
    ("shard", "lease", "selector"),
    [
        (None, "backupctl-controller", None),
        ("", "backupctl-controller-shard-default", "!backupctl.dev/shard"),
        ("eu-1", "backupctl-controller-shard-eu-1", "backupctl.dev/shard=eu-1"),
    ],
)
def test_shards(shard: str | None, lease: str, selector: str | None) -> None:
    assert lease_name(shard) == lease
    assert shard_selector(shard) == selector


@pytest.mark.parametrize(
    ("shard", "jobs", "labelled"),
    [
        (None, None, False),  # unsharded: every Job, none labelled
        ("", "!backupctl.dev/controller-shard", False),  # default shard: the unlabelled ones
        ("eu-1", "backupctl.dev/controller-shard=eu-1", True),
    ],
)
def test_a_shard_labels_its_jobs_and_pods_and_watches_only_those(
    shard: str | None, jobs: str | None, labelled: bool
) -> None:
    assert job_shard_selector(shard) == jobs
    job: dict[str, Any] = {
        "metadata": {"name": "j", "labels": {"backupctl.dev/shard": "0-of-3"}},
        "spec": {"backoffLimit": 0, "template": {"metadata": {"labels": {"a": "b"}}}},
    }
    out = with_job_shard(job, shard)
    job_labels, pod_labels = (
        out["metadata"]["labels"],
        out["spec"]["template"]["metadata"]["labels"],
    )
    assert job_labels.get("backupctl.dev/controller-shard") == (shard if labelled else None)
    assert pod_labels.get("backupctl.dev/controller-shard") == (shard if labelled else None)
    assert job_labels["backupctl.dev/shard"] == "0-of-3"  # a Redis Cluster shard: untouched
    assert pod_labels["a"] == "b" and out["spec"]["backoffLimit"] == 0
    assert "backupctl.dev/controller-shard" not in job["metadata"]["labels"]  # a copy


def test_older_unlabelled_jobs_of_the_shards_resources_are_adopted() -> None:
    def job(name: str, owner: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
        meta = {"name": name, "namespace": "ns", "labels": labels or {}}
        return {"metadata": {**meta, "ownerReferences": [{"uid": owner}]}}

    jobs: list[dict[str, Any]] = [
        job("mine-old", "uid-1"),
        job("mine-new", "uid-1", {"backupctl.dev/controller-shard": "eu-1"}),
        job("other-shard", "uid-9"),
        {"metadata": {"name": "no-owner", "namespace": "ns"}},
    ]
    assert adoptable_jobs(jobs, {"uid-1", "uid-2"}) == [("ns", "mine-old")]


@pytest.mark.parametrize(
    ("shard", "ok"),
    [("", True), ("a", True), ("eu-1.b_c", True), ("-a", False), ("a b", False),
     ("x" * 64, False), ("default", False)],
)  # fmt: skip
def test_shard_names(shard: str, ok: bool) -> None:
    assert (shard_problem(shard) is None) is ok
