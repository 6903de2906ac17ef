"""The words of the RedisBackup plan (pure): what the controller observed
(:class:`Observed`, :class:`Problem`) and what it should do (:class:`Plan`
and its actions), with the limits the planning steps share.

They live apart from :func:`backupctl.controller.backup.plan.plan` so that
every planning step (:mod:`.history`, :mod:`.schedule_runs`,
:mod:`.housekeeping`, :mod:`.conditions`) can use them without importing the
driver that calls the steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from backupctl.controller.jobs import JobView
from backupctl.controller.spec import BackupSpec
from backupctl.controller.spec_fields import SpecError
from backupctl.controller.status import Event
from backupctl.core.timefmt import format_time

#: History entries kept in ``status.history`` (newest first; the CRD allows 50).
HISTORY_LIMIT = 20
#: Delays between attempts to resolve a target or create a Job that failed.
RETRY_BASE_SECONDS = 5.0
RETRY_MAX_SECONDS = 300.0
#: A backup Job is made from a target resolution at most this old (pods move).
TARGET_FRESH = timedelta(seconds=60)
#: A schedule resolves its target this long before each slot, so that the slot
#: itself costs two writes: the status, then the Job.
PREFETCH = timedelta(seconds=30)

#: The reason of the "problem" of a target whose data volume's owner is being
#: read (:mod:`.owner_probe`): a step of resolving it, not a failure (Ready stays).
PROBING = "ProbingDataOwner"

#: The status fields the controller owns (everything else in status is left alone).
STATUS_FIELDS = (
    "phase",
    "message",
    "observedGeneration",
    "target",
    "conditions",
    "lastScheduleTime",
    "nextScheduleTime",
    "activeJobs",
    "lastSuccessfulBackup",
    "lastRetention",
    "history",
    "lastRunNow",
    "lastVerification",
)


# --- what the controller observed ---------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """The last attempt to resolve the target (or to create a Job) failed."""

    reason: str
    message: str
    attempts: int
    retry_at: datetime


def retry_delay(attempts: int) -> float:
    """Seconds before attempt ``attempts + 1``: 5, 10, 20, ... at most 300."""
    exponent = min(max(attempts, 1) - 1, 16)
    return min(RETRY_BASE_SECONDS * 2.0**exponent, RETRY_MAX_SECONDS)


@dataclass(frozen=True)
class Observed:
    """Everything :func:`~backupctl.controller.backup.plan.plan` looks at for
    one RedisBackup.

    ``created`` is ``metadata.creationTimestamp`` (the one-off's slot and the
    start of a schedule that never ran). ``seen`` holds the names of Jobs
    this controller process has observed at least once. ``target`` describes
    the last successful resolution of the target (made at ``resolved_at``, for
    the current spec); ``problem`` is the last failed one (kept until one
    succeeds or the spec changes). ``shards``: the resolved target is a Redis
    Cluster backed up by one Job per shard, this many. ``restoring``: the
    name of a running RedisRestore of the same target (runs wait for it).
    ``run_now``: the value of the ``backupctl.dev/run-now`` annotation.
    """

    name: str
    namespace: str
    generation: int
    created: datetime
    spec: BackupSpec | SpecError
    status: Mapping[str, Any]
    jobs: Sequence[JobView] = ()
    seen: frozenset[str] = frozenset()
    target: str | None = None
    resolved_at: datetime | None = None
    problem: Problem | None = None
    shards: int | None = None
    restoring: str | None = None  # a RedisRestore of the same target runs: its name
    run_now: str | None = None  # the backupctl.dev/run-now annotation's value


# --- what the controller should do --------------------------------------------------


@dataclass(frozen=True)
class CreateJob:
    """Create the ``component`` Job ``name`` for ``slot`` (409 means done).

    The operator posts the ``JobCreated`` Event (with ``note``) only when the
    API server really created the Job, so a create planned again before the
    Job shows in the watch cache is silent. A shard Job has ``run``, ``shard``
    and ``shards`` as :class:`~backupctl.controller.jobs.JobView` does."""

    component: str
    name: str
    slot: datetime
    note: str = ""
    run: str = ""
    shard: int | None = None
    shards: int | None = None
    backup_id: str = ""  # a restore drill's backup

    @property
    def run_name(self) -> str:
        return self.run or self.name

    @property
    def message(self) -> str:
        what = f"Created Job {self.name} for the run at {format_time(self.slot)}"
        if self.shard is not None:
            what += f" (shard {self.shard} of {self.shards})"
        return what + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class DeleteJob:
    name: str
    reason: str


@dataclass(frozen=True)
class Outcome:
    """A backup run that just ended, for metrics."""

    job: str
    succeeded: bool
    time: datetime | None = None
    duration: float | None = None
    size: int | None = None
    keys: int | None = None
    reason: str = ""  # a failure's, for backupctl_backup_failures_total{reason}


Action = DeleteJob | CreateJob | Event | Outcome


@dataclass(frozen=True)
class Plan:
    """The new ``status`` (write it first), then ``deletes``, ``creates``,
    ``events`` and ``outcomes``, in that order; look again at ``wake_at``
    (None: only when something changes). ``needs_target``: resolve the
    target and plan again (nothing else is set then)."""

    status: dict[str, Any]
    deletes: tuple[DeleteJob, ...] = ()
    creates: tuple[CreateJob, ...] = ()
    events: tuple[Event, ...] = ()
    outcomes: tuple[Outcome, ...] = ()
    wake_at: datetime | None = None
    needs_target: bool = False

    @property
    def actions(self) -> list[Action]:
        """Everything besides the status, in the order to execute it."""
        return [*self.deletes, *self.creates, *self.events, *self.outcomes]


__all__ = [
    "HISTORY_LIMIT",
    "PREFETCH",
    "PROBING",
    "STATUS_FIELDS",
    "TARGET_FRESH",
    "Action",
    "CreateJob",
    "DeleteJob",
    "Observed",
    "Outcome",
    "Plan",
    "Problem",
    "retry_delay",
]
