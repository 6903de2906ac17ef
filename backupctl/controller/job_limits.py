"""How long a Job may run, and when a pod that does not start has failed (pure).

Why this exists: a Job without a deadline, or whose pod never starts
(Unschedulable on a cordoned or removed node, stuck in ``ContainerCreating``
on a volume that cannot be attached, an image that cannot be pulled), would
hold its step forever: a restore would leave Redis scaled to 0, a backup
under ``concurrencyPolicy: Forbid`` would block every later run. Every Job
gets ``activeDeadlineSeconds`` by its kind (:func:`deadline`), and
:func:`stuck` says when a pod that cannot start has waited long enough for
the step to fail with the pod's own reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Final

from backupctl.controller.jobs import RUNNING, JobView, PodProblem

#: The kinds of Jobs, each with its own default ``activeDeadlineSeconds``.
BACKUP: Final = "backup"
PRUNE: Final = "prune"
STAGE: Final = "stage"
SWAP: Final = "swap"
CHECK: Final = "check"
PROBE: Final = "probe"
DEFAULT_DEADLINES: Mapping[str, int] = {
    BACKUP: 6 * 3600,  # a large RDB over a slow link
    PRUNE: 3600,
    STAGE: 6 * 3600,  # download and verify a large archive
    SWAP: 900,  # renames on one volume (also quiesce, resume, discard)
    CHECK: 900,  # resolve, check and verify (verify waits up to 300 s for Redis)
    PROBE: 300,  # one stat()
}
KINDS: Final = tuple(DEFAULT_DEADLINES)
#: How long a pod may wait to start (scheduling, volumes, image) before its step fails.
DEFAULT_START_TIMEOUT_SECONDS: Final = 300


def deadline(kind: str, deadlines: Mapping[str, int], fallback: int | None = None) -> int:
    """``activeDeadlineSeconds`` of a Job of ``kind``: the spec's ``deadlines``
    entry, else ``fallback`` (the spec's older ``activeDeadlineSeconds``, for
    the main Job kind of a resource), else the default."""
    if kind in deadlines:
        return int(deadlines[kind])
    if fallback is not None:
        return fallback
    return DEFAULT_DEADLINES[kind]


def stuck(view: JobView, now: datetime, grace_seconds: float) -> PodProblem | None:
    """The problem of a running Job whose pod has not started for longer than
    ``grace_seconds`` (since the pod's problem began, or the Job started)."""
    problem = view.waiting
    if view.state != RUNNING or problem is None or view.ready:
        return None
    since = problem.since or view.started
    if since is None or (now - since).total_seconds() < grace_seconds:
        return None
    return problem


def first_seen(
    problem: PodProblem | None, key: str, now: datetime, seen: dict[str, datetime]
) -> PodProblem | None:
    """``problem`` dated from the earlier of its own time and when this
    controller first saw it (``seen``, updated; a key without a problem is
    forgotten). The controller's clock decides how long a pod has waited,
    also when it is not the API server's (a test clock moved forward)."""
    if problem is None:
        seen.pop(key, None)
        return None
    first = seen.setdefault(key, now)
    since = min(problem.since, first) if problem.since is not None else first
    return replace(problem, since=since)


def stuck_message(view: JobView, problem: PodProblem, grace_seconds: float) -> str:
    """One line: which Job, the pod's own reason and message, how long."""
    text = f"{problem.reason}: {problem.message}" if problem.message else problem.reason
    where = f" (pod {problem.pod})" if problem.pod else ""
    return f"Job {view.name}{where} could not start within {grace_seconds:.0f} s: {text}"


__all__ = [
    "BACKUP",
    "CHECK",
    "DEFAULT_DEADLINES",
    "DEFAULT_START_TIMEOUT_SECONDS",
    "KINDS",
    "PROBE",
    "PRUNE",
    "STAGE",
    "SWAP",
    "deadline",
    "first_seen",
    "stuck",
    "stuck_message",
]
