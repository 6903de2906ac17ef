"""Delete named backups from a store (``backupctl delete``), crash-safe.

Why a module of its own: prune decides *which* backups go by a policy;
``delete`` is told which, and must still refuse what a user would regret.
Both remove a backup the same way (prune's marker, manifest, archives,
marker sequence, :func:`backupctl.store.prune.delete_folder`), so a delete
killed at any step leaves either a complete backup or a folder that is not
listed as complete and that the next ``delete`` of the same id, or the next
prune, finishes.

Refused (before anything is deleted):

- an id that is not in the store, or in several targets without ``--target``;
- the newest complete backup of a target, unless ``force`` (restic keeps the
  last snapshot only by policy; a one-off delete of the only good copy is
  almost always a mistake);
- a folder without a manifest that is not half-deleted (it may be a backup
  being written right now), unless ``force``;
- a backup that is still locked (S3 Object Lock, Azure immutability policy,
  GCS retention, or a hold), even with ``force``: the store would refuse the
  delete anyway, maybe after the manifest is gone. The error names each locked
  backup and until when (one request per named backup, as prune asks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from backupctl.core.timefmt import format_time
from backupctl.store import catalog
from backupctl.store.backends.base import Backend
from backupctl.store.backends.wrappers import DryRunBackend, ObservingBackend
from backupctl.store.catalog import BackupEntry
from backupctl.store.prune import DELETING_MARKER, PruneError, delete_folder, lock_reason


class DeleteError(PruneError):
    """A delete that must not run as asked. ``str()`` is one line."""


class DeleteNotFound(DeleteError, catalog.BackupNotFound):
    """An id that names no backup in the store (exit code: not found)."""


class DeleteRefused(DeleteError):
    """A delete refused as unsafe: the newest complete backup without
    ``--force``, a backup that may be being written, a locked one."""


@dataclass(frozen=True, slots=True)
class Deleted:
    target: str
    id: str
    created: str
    #: "complete", "half-deleted" (a killed delete or prune) or "incomplete"
    state: str
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "id": self.id,
            "created": self.created,
            "state": self.state,
            "bytes": self.bytes,
        }


@dataclass
class DeleteResult:
    store: str
    dry_run: bool
    deleted: list[Deleted] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(d.bytes for d in self.deleted)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "store": self.store,
            "dryRun": self.dry_run,
            "deleted": [d.to_json() for d in self.deleted],
            "bytes": self.bytes,
        }


def _state(e: BackupEntry) -> str:
    if e.complete:
        return "complete"
    if any(o.key.rsplit("/", 1)[-1] == DELETING_MARKER for o in e.objects):
        return "half-deleted"
    return "incomplete"


def plan_delete(
    entries: Sequence[BackupEntry],
    ids: Sequence[str],
    *,
    target: str | None,
    force: bool,
    url: str = "the store",
) -> list[BackupEntry]:
    """Which folders of ``entries`` (a scan of the store, newest first) to
    delete for ``ids`` (pure); :class:`DeleteError` with one line for the
    first id that may not be deleted."""
    if not ids:
        raise DeleteError("no backup id given: name one or more ids (see 'backupctl list')")
    chosen: list[BackupEntry] = []
    for ref in ids:
        bid = catalog.validate_id(ref)
        matches = [e for e in entries if e.id == bid and (target is None or e.target == target)]
        if not matches:
            where = f" of target {target!r}" if target else ""
            raise DeleteNotFound(f"backup {bid!r}{where} not found in {url} (see 'backupctl list')")
        if len(matches) > 1:
            names = ", ".join(sorted(e.target for e in matches))
            raise DeleteError(
                f"backup id {bid!r} exists for several targets ({names}); pass --target"
            )
        e = matches[0]
        if e not in chosen:
            chosen.append(e)
    for e in chosen:
        state = _state(e)
        if state == "incomplete" and e.invalid and not force:
            raise DeleteError(
                f"backup {e.id} of {e.target} has a manifest that cannot be used "
                f"({e.manifest_error}); check it, then pass --force to delete it"
            )
        if state == "incomplete" and not force:
            raise DeleteRefused(
                f"backup {e.id} of {e.target} has no manifest: it may be being written right "
                "now; prune sweeps it after its grace period, or pass --force to delete it now"
            )
        newest = next((x for x in entries if x.target == e.target and x.complete), None)
        if newest is e and not force:
            raise DeleteRefused(
                f"refusing to delete {e.id}: it is the newest complete backup of {e.target}; "
                "pass --force if you really want it gone"
            )
    return chosen


def delete_backups(
    backend: Backend,
    ids: Sequence[str],
    *,
    target: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    on_delete: Callable[[str], None] | None = None,
    now: datetime | None = None,
) -> DeleteResult:
    """Delete the backups ``ids`` (see the module docstring). ``on_delete``
    is called with each key after it is deleted (progress, tests); ``now``
    (default: the clock) decides whether a lock has passed."""
    if target is not None:
        catalog.validate_target(target)
    for ref in ids:
        catalog.validate_id(ref)
    entries = catalog.scan(backend, target)
    chosen = plan_delete(entries, ids, target=target, force=force, url=backend.url)
    check_locks(backend, chosen, now or datetime.now(UTC))
    sink: Backend = DryRunBackend(backend) if dry_run else backend
    if on_delete is not None:
        sink = ObservingBackend(sink, on_delete)
    result = DeleteResult(store=backend.url, dry_run=dry_run)
    for e in chosen:
        state = _state(e)
        delete_folder(sink, e, again="run delete again to finish")
        result.deleted.append(
            Deleted(e.target, e.id, format_time(e.created), state, e.stored_bytes)
        )
    return result


def check_locks(backend: Backend, chosen: Sequence[BackupEntry], now: datetime) -> None:
    """:class:`DeleteError` naming every backup of ``chosen`` that is still locked,
    before anything is deleted."""
    locked = [
        f"{e.id} of {e.target} is {why}"
        for e in chosen
        if (why := lock_reason(backend, e, now, after="a delete after"))
    ]
    if locked:
        raise DeleteRefused(
            f"refusing to delete: backup {'; backup '.join(locked)} (nothing was deleted; "
            "name the other backups alone)"
            if len(chosen) > 1
            else f"refusing to delete: backup {locked[0]} (nothing was deleted)"
        )


__all__ = [
    "DeleteError",
    "DeleteNotFound",
    "DeleteRefused",
    "DeleteResult",
    "Deleted",
    "check_locks",
    "delete_backups",
    "plan_delete",
]
