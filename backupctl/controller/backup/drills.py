"""Planning step 4b: restore drills, ``spec.verify`` (pure).

A drill is a Job ``<name>-<slot>-verify`` running ``backupctl verify`` on the
newest successful backup (named by its id, so a backup finishing meanwhile
does not change what is checked): every archive downloaded, every sha256 and
RDB checked. With ``afterEachBackup: true`` it follows each successful
backup, once (named after that backup's slot); with ``schedule`` it runs at
the latest slot of that cron (missed slots are not made up), as soon as
there is a backup to check.

The result goes to ``status.lastVerification`` (``result: Passed|Failed``,
the backup id, files and bytes checked, or the error), a
``VerificationPassed`` / ``VerificationFailed`` Event and the
``backupctl_verification_*`` metrics. A failed drill does not touch the
``Failed`` condition of the backups themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from backupctl.controller.backup.draft import Draft
from backupctl.controller.backup.model import CreateJob
from backupctl.controller.backup.runs import failure_message, find_entry
from backupctl.controller.jobs import SUCCEEDED, VERIFY, JobView
from backupctl.controller.schedule import job_name, next_run, prev_run
from backupctl.controller.spec import BackupSpec
from backupctl.controller.status import clip
from backupctl.core.timefmt import format_time, parse_time

STATUS_FIELD = "lastVerification"
PASSED, FAILED = "Passed", "Failed"


def plan(d: Draft, spec: BackupSpec, jobs: Sequence[JobView]) -> None:
    """The drill due now, if any."""
    verify = spec.verify
    if verify is None:
        return
    last = d.status.get("lastSuccessfulBackup") or {}
    backup_id = last.get("id")
    if verify.schedule is not None:
        d.wake.append(next_run(verify.schedule, spec.time_zone, d.now))
        slot: datetime | None = prev_run(verify.schedule, spec.time_zone, d.now)
        if slot is not None and slot <= d.obs.created:
            return
    else:
        entry = find_entry(d.history, last.get("jobName") or "")
        slot = parse_time(entry.get("slot")) if entry else None
    if slot is None or not isinstance(backup_id, str) or not backup_id:
        return
    name = job_name(d.obs.name, slot, VERIFY)
    done = (d.status.get(STATUS_FIELD) or {}).get("jobName") == name
    if done or name in {j.name for j in jobs} or name in d.obs.seen:
        return
    d.creates.append(
        CreateJob(VERIFY, name, slot, note=f"a restore drill of {backup_id}", backup_id=backup_id)
    )


def record(d: Draft, job: JobView) -> None:
    """A finished drill into ``status.lastVerification``, an Event and metrics."""
    result = job.result or {}
    out: dict[str, Any] = {"time": format_time(job.finished or d.now), "jobName": job.name}
    if isinstance(result.get("id"), str):
        out["backupId"] = result["id"]
    if job.state == SUCCEEDED and result.get("ok"):
        out["result"] = PASSED
        for key, field in (
            ("files", "files"),
            ("size", "bytes"),
            ("bytes", "bytes"),
            ("keys", "keys"),
        ):
            if isinstance(result.get(key), int):  # verify says "size" (older: "bytes")
                out.setdefault(field, result[key])
        types = result.get("types")
        if isinstance(types, dict):
            out["types"] = {str(k): v for k, v in types.items() if isinstance(v, int)}
        nodes = result.get("nodes")
        if isinstance(nodes, list):
            out["nodes"] = len(nodes)
        out["message"] = (
            f"backup {out.get('backupId', '?')}: {out.get('keys', '?')} keys, "
            f"{out.get('files', '?')} files, {out.get('bytes', '?')} bytes checked"
        )
        d.event("Normal", "VerificationPassed", f"Job {job.name}: {out['message']}")
    else:
        out["result"] = FAILED
        message = failure_message(job) if job.state != SUCCEEDED else "no result reported"
        out["message"] = clip(message)
        d.event("Warning", "VerificationFailed", f"Job {job.name}: {message}")
    d.status[STATUS_FIELD] = out


__all__ = ["FAILED", "PASSED", "STATUS_FIELD", "plan", "record"]
