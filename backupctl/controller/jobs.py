"""What both controllers know of a Job they made (pure): one :class:`JobView`
per Job, read from the API object by :mod:`backupctl.controller.observe`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

JobState = Literal["Running", "Succeeded", "Failed"]
RUNNING: Final = "Running"
SUCCEEDED: Final = "Succeeded"
FAILED: Final = "Failed"
#: ``component`` of a RedisBackup's Jobs: a backup run, or the prune after it.
BACKUP: Final = "backup"
PRUNE: Final = "prune"
VERIFY: Final = "verify"  # a restore drill


@dataclass(frozen=True)
class PodProblem:
    """Why a Job's pod does not run (``CreateContainerConfigError``: a Secret
    or key is missing; ``Unschedulable``; image pull errors)."""

    reason: str
    message: str
    since: datetime | None = None  # when the problem began (on the controller's clock)
    pod: str = ""
    #: False for a state every pod passes through (``ContainerCreating``): a
    #: problem only once it lasts (:func:`backupctl.controller.job_limits.stuck`).
    hard: bool = True


@dataclass(frozen=True)
class JobView:
    """One Job made for a resource, as far as planning cares.

    ``result`` is the parsed termination message of the Job's last pod (the
    controller fills it in for finished Jobs it has not recorded yet);
    ``message`` says why a failed Job failed (its ``Failed`` condition);
    ``waiting`` why its pod cannot start. A RedisBackup's Jobs also carry their
    ``component`` (backup or prune) and cron ``slot``; a shard Job has ``run``
    (its run's name), ``shard`` (I) and ``shards`` (N); a whole run seen as
    one has ``shards`` and no ``shard``.
    """

    name: str
    state: JobState
    component: str = ""
    slot: datetime | None = None
    started: datetime | None = None
    finished: datetime | None = None
    ready: bool = False
    message: str = ""
    result: Mapping[str, Any] | None = None
    waiting: PodProblem | None = None
    run: str = ""
    shard: int | None = None
    shards: int | None = None

    @property
    def run_name(self) -> str:
        """The run this Job belongs to: its history entry's ``jobName``."""
        return self.run or self.name
