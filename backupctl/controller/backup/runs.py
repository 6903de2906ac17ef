"""Runs of a RedisBackup and whether the status has their result (pure).

A run is one Job, or -- for a Redis Cluster backed up one Job per shard --
the N Jobs ``<name>-<slot>-shard<I>`` of one slot. :func:`runs` merges each
run's shard Jobs into one :class:`~backupctl.controller.jobs.JobView` named
after the run, so that recording, history limits and conditions see runs,
never shards. :func:`is_recorded` / :func:`unrecorded` tell the operator
which finished Jobs' termination messages it still has to read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from backupctl.controller.jobs import (
    BACKUP,
    FAILED,
    PRUNE,
    RUNNING,
    SUCCEEDED,
    VERIFY,
    JobState,
    JobView,
)
from backupctl.controller.status import clip
from backupctl.core.timefmt import format_time, parse_time


def find_entry(history: Iterable[dict[str, Any]], job: str) -> dict[str, Any] | None:
    """The ``status.history`` entry of the run named ``job``, if any."""
    return next((e for e in history if e.get("jobName") == job), None)


def is_recorded(status: Mapping[str, Any], job: JobView) -> bool:
    """Whether a finished Job's result is already in ``status`` (a shard
    Job's: whether its run's is)."""
    if job.component == PRUNE:
        last = status.get("lastRetention") or {}
        if last.get("jobName") == job.name:
            return True
        done = parse_time(last.get("time"))
        return done is not None and job.finished is not None and job.finished <= done
    if job.component == VERIFY:
        return (status.get("lastVerification") or {}).get("jobName") == job.name
    entry = find_entry(status.get("history") or [], job.run_name)
    return entry is not None and entry.get("phase") in (SUCCEEDED, FAILED)


def unrecorded(status: Mapping[str, Any], jobs: Iterable[JobView]) -> list[str]:
    """Names of finished Jobs whose results the status lacks: the operator
    reads their pods' termination messages before planning."""
    return [j.name for j in jobs if j.state != RUNNING and not is_recorded(status, j)]


def runs(jobs: Iterable[JobView]) -> list[JobView]:
    """``jobs`` with the shard Jobs of each run merged into one view named
    after the run: Failed as soon as one shard Job failed (the error names
    each failed shard), Succeeded when all N did (sizes and keys added up,
    the newest time), else Running. Other Jobs are returned as they are."""
    out: list[JobView] = []
    groups: dict[str, list[JobView]] = {}
    for job in jobs:
        if job.component == BACKUP and job.shard is not None:
            groups.setdefault(job.run_name, []).append(job)
        else:
            out.append(job)
    out += [_merge_run(name, members) for name, members in groups.items()]
    return out


def failure_message(job: JobView) -> str:
    """Why a Job failed: the CLI's own error from the termination message,
    else the Job's condition (BackoffLimitExceeded, DeadlineExceeded...)."""
    result = job.result or {}
    error = result.get("error")
    if isinstance(error, str) and error:
        return clip(error)
    return job.message or "the Job failed without a message"


def label(name: str, shards: int | None) -> str:
    """How Events and conditions name a run: its Job, or its shard Jobs."""
    if shards:
        return f"Run {name} ({shards} shard Jobs)"
    return f"Job {name}"


def valid_field(key: str, value: Any) -> bool:
    """Whether a termination message's ``id`` / ``size`` / ``keys`` is usable."""
    if key == "id":
        return isinstance(value, str) and bool(value)
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _merge_run(name: str, members: Sequence[JobView]) -> JobView:
    members = sorted(members, key=lambda j: j.shard or 0)
    count = max(j.shards or 0 for j in members)
    failed = [j for j in members if j.state == FAILED]
    state: JobState
    result: dict[str, Any] | None = None
    if failed:
        state = FAILED
        errors = [
            f"shard {j.shard} of {count} (Job {j.name}): {failure_message(j)}" for j in failed
        ]
        result = {"ok": False, "error": "; ".join(errors)}
    elif any(j.state == RUNNING for j in members) or len({j.shard for j in members}) < count:
        state = RUNNING
    else:
        state = SUCCEEDED
        result = _sum_results([j.result or {} for j in members])
    finished = [j.finished for j in members if j.finished is not None]
    started = [j.started for j in members if j.started is not None]
    return JobView(
        name=name,
        component=BACKUP,
        slot=members[0].slot,
        state=state,
        started=min(started, default=None),
        finished=max(finished, default=None) if state != RUNNING else None,
        ready=any(j.ready for j in members),
        result=result,
        waiting=next((j.waiting for j in members if j.waiting is not None), None),
        run=name,
        shards=count,
    )


def _sum_results(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One run's result from its shard Jobs' results (all must be ok)."""
    merged: dict[str, Any] = {"ok": all(r.get("ok") is True for r in results)}
    ids = {r.get("id") for r in results}
    if len(ids) == 1:
        merged["id"] = ids.pop()
    for key in ("size", "keys"):
        values = [r.get(key) for r in results]
        if all(valid_field(key, v) for v in values):
            merged[key] = sum(int(v) for v in values if v is not None)
    times = [t for t in (parse_time(r.get("time")) for r in results) if t is not None]
    if len(times) == len(results):
        merged["time"] = format_time(max(times))
    return merged


__all__ = ["failure_message", "find_entry", "is_recorded", "label", "runs", "unrecorded"]
