"""Prune a store: apply a retention policy per target and sweep leftovers.

The side-effecting half of retention (:mod:`backupctl.store.retention` decides).
For each target in the store:

1. List its backup folders (one listing; manifests read unless
   ``read_manifests=False``, which trusts the id for the creation time).
2. If a backup of the target is being written (a folder without a manifest,
   or an unfinished upload, younger than ``incomplete_grace``), or a
   manifest cannot be read, touch nothing of that target and say why. An
   upload's age counts from the later of the store's start time and its
   backup id's time (:func:`upload_started`). A folder whose manifest names
   another folder is not this target's backup: neither counted nor deleted,
   only reported.
3. Otherwise decide over its *complete* backups with
   :func:`~backupctl.store.retention.apply_policy`; the newest complete backup is
   never removed, whatever the policy says.
4. Delete each removed backup: write a ``DELETING`` marker, delete the
   manifest (from then on the backup is not listed as restorable), the
   archives, then the marker. A prune killed at any point leaves complete
   backups and folders that the next prune recognises and finishes: a
   marked folder is swept at once, not after the grace period.
5. Sweep incomplete folders older than the grace period and abort unfinished
   uploads (S3 multipart, Azure uncommitted blocks) older than it.

Dry-run wraps the backend in :class:`~backupctl.store.backends.retry.DryRunBackend`
(writes, deletes and aborts do nothing); the decision and the report are
the same code path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from backupctl.core.timefmt import format_time
from backupctl.store import catalog
from backupctl.store.backends.base import (
    Backend,
    PendingUpload,
    StorageError,
    put_bytes,
)
from backupctl.store.backends.locks import HELD, describe_lock
from backupctl.store.backends.wrappers import (
    DryRunBackend,
    ObservingBackend,
    extend_retention,
    retention_of,
)
from backupctl.store.catalog import BackupEntry
from backupctl.store.retention import Policy, PolicyError, apply_policy

DEFAULT_INCOMPLETE_GRACE = timedelta(hours=24)
#: Written into a backup folder before its manifest is deleted.
DELETING_MARKER = "DELETING"
_MARKER_TEXT = b"backupctl prune is deleting this backup; the next prune finishes the job\n"


class PruneError(Exception):
    """A prune that must not run as asked. ``str()`` is one line."""


# --- report --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One backup folder in the report, with why it is kept or removed."""

    target: str
    id: str
    created: datetime
    reasons: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "id": self.id,
            "created": format_time(self.created),
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True, slots=True)
class IncompleteRow(Row):
    #: "remove" (swept) or "leave" (in progress, or a manifest we cannot read)
    action: str = "leave"

    def to_json(self) -> dict[str, Any]:
        # Row.to_json, not super(): slotted dataclasses break zero-argument super()
        return {**Row.to_json(self), "action": self.action}


@dataclass(frozen=True, slots=True)
class UploadRow:
    target: str
    key: str
    started: datetime
    upload_id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "key": self.key,
            "started": format_time(self.started),
            "upload_id": self.upload_id,
        }


@dataclass(frozen=True, slots=True)
class Skipped:
    target: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "reason": self.reason}


@dataclass
class PruneResult:
    store: str
    policy: Policy
    dry_run: bool
    keep: list[Row] = field(default_factory=list)
    remove: list[Row] = field(default_factory=list)
    incomplete: list[IncompleteRow] = field(default_factory=list)
    aborted_uploads: list[UploadRow] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    #: deletes the store refused although no lock was seen (kept, in ``keep``)
    refused: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "policy": self.policy.describe(),
            "dry_run": self.dry_run,
            "keep": [r.to_json() for r in self.keep],
            "remove": [r.to_json() for r in self.remove],
            "incomplete": [r.to_json() for r in self.incomplete],
            "aborted_uploads": [u.to_json() for u in self.aborted_uploads],
            "skipped_targets": [s.to_json() for s in self.skipped],
        }


# --- prune ---------------------------------------------------------------------


def _ago(delta: timedelta) -> str:
    secs = max(0, int(delta.total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def _span(delta: timedelta) -> str:
    """A grace period as the user would write it: 24h, 3d, 90m."""
    secs = int(delta.total_seconds())
    if secs >= 2 * 86400 and secs % 86400 == 0:
        return f"{secs // 86400}d"
    for unit, size in (("h", 3600), ("m", 60)):
        if secs and secs % size == 0:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def _has(entry: BackupEntry, name: str) -> bool:
    return any(o.key.rsplit("/", 1)[-1] == name for o in entry.objects)


def _last_activity(entry: BackupEntry) -> datetime:
    """The later of the backup's start (its id) and its newest object."""
    started = catalog.id_time(entry.id)
    modified = entry.last_modified
    return max(started, modified) if modified else started


def upload_started(up: PendingUpload) -> datetime:
    """When an unfinished upload started, as prune judges its age: the later
    (younger) of the store's own time and the time in its backup id, so
    neither a store that reports old times (moto says 2010) nor a skewed
    clock on either side makes a running upload look abandoned."""
    where = catalog.split_key(up.key)
    if where is None:
        return up.started
    return max(up.started, catalog.id_time(where[1]))


def _upload_target(key: str) -> str:
    """The target of an unfinished upload's key (``""`` outside any backup folder)."""
    where = catalog.split_key(key)
    return where[0] if where is not None else ""


@dataclass
class _Target:
    name: str
    complete: list[BackupEntry] = field(default_factory=list)
    unreadable: list[BackupEntry] = field(default_factory=list)
    #: folders whose manifest names another folder: not this target's backups
    foreign: list[BackupEntry] = field(default_factory=list)
    half_deleted: list[BackupEntry] = field(default_factory=list)
    incomplete: list[BackupEntry] = field(default_factory=list)
    uploads: list[PendingUpload] = field(default_factory=list)


class _CreatedFromId:
    """A complete backup whose manifest was not read: created = id time."""

    __slots__ = ("created", "entry", "id")

    def __init__(self, entry: BackupEntry) -> None:
        self.entry = entry
        self.id = entry.id
        self.created = catalog.id_time(entry.id)


def check_request(policy: Policy, dry_run: bool) -> None:
    """Refuse a policy that may not be used to delete (raises before any I/O)."""
    policy.validate()
    if policy.empty and not dry_run:
        raise PruneError(
            "refusing to prune with an empty policy: it would keep every backup and only "
            "sweep leftovers; set at least one --keep-* option (e.g. --keep-last 1), "
            "or use --dry-run to see the listing"
        )


def prune(
    backend: Backend,
    policy: Policy,
    *,
    now: datetime,
    target: str | None = None,
    incomplete_grace: timedelta = DEFAULT_INCOMPLETE_GRACE,
    dry_run: bool = False,
    read_manifests: bool = True,
    keep_oldest: bool = True,
    on_delete: Callable[[str], None] | None = None,
    trust: catalog.ManifestCheck | None = None,
    extend_lock: timedelta | None = None,
) -> PruneResult:
    """Apply ``policy`` to every target in ``backend`` (or only ``target``)
    and sweep leftovers; see the module docstring. ``on_delete`` is called
    with each key after it is deleted (progress, tests). ``trust`` checks manifest
    signatures: a backup failing it is neither counted nor deleted. ``extend_lock``:
    each kept backup that has a lock (S3, Azure, GCS) is locked until at least ``now +
    extend_lock`` (retention keeps it longer than its first lock). Raises
    :class:`PolicyError` / :class:`PruneError` before touching anything when
    the request is bad, and :class:`StorageError` from the store."""
    policy.validate()
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if incomplete_grace < timedelta(0):
        raise PruneError("--incomplete-grace must not be negative")
    check_request(policy, dry_run)
    if target is not None:
        catalog.validate_target(target)

    sink: Backend = DryRunBackend(backend) if dry_run else backend
    if on_delete is not None:
        sink = ObservingBackend(sink, on_delete)
    result = PruneResult(store=backend.url, policy=policy, dry_run=dry_run)
    cutoff = now - incomplete_grace
    grace = _span(incomplete_grace)

    targets = _classify(backend, target, read_manifests or trust is not None, trust)
    prefix = f"{target}/" if target else ""
    stale_uploads: list[PendingUpload] = []
    for up in backend.pending_uploads(prefix):
        owner = _upload_target(up.key)
        if target is not None and owner != target:
            continue  # a nested target's upload, e.g. a/b/... under --target a
        if up.key.rsplit("/", 1)[-1] == DELETING_MARKER:
            stale_uploads.append(up)  # a killed prune's marker: not a backup
        elif upload_started(up) > cutoff:
            if owner:
                targets.setdefault(owner, _Target(owner)).uploads.append(up)
        else:
            stale_uploads.append(up)

    blocked: set[str] = set()
    for name in sorted(targets):
        # pop: a target's listing is garbage once it is done (memory on huge stores)
        t = targets.pop(name)
        why = _blocked_reason(t, cutoff, now)
        if why:
            blocked.add(name)
            result.skipped.append(Skipped(name, why))
            _report_blocked(result, t, cutoff, now, grace, why)
            continue
        _prune_target(sink, result, t, policy, now, grace, keep_oldest, extend_lock)

    for up in stale_uploads:
        t_name = _upload_target(up.key)
        if t_name in blocked:
            continue
        sink.abort_upload(up)
        result.aborted_uploads.append(UploadRow(t_name, up.key, up.started, up.upload_id))
    if result.refused:
        raise StorageError(
            f"{len(result.refused)} backup(s) could not be deleted, the rest of the prune is "
            f"done: {result.refused[0]}"
        )
    return result


def _classify(
    backend: Backend, target: str | None, read_manifests: bool, trust: catalog.ManifestCheck | None
) -> dict[str, _Target]:
    targets: dict[str, _Target] = {}
    for e in catalog.scan(backend, target, load_manifests=read_manifests, trust=trust):
        t = targets.setdefault(e.target, _Target(e.target))
        has_manifest = _has(e, catalog.MANIFEST_NAME)
        if has_manifest and (e.manifest is not None or not read_manifests):
            t.complete.append(e)
        elif has_manifest and e.foreign:
            t.foreign.append(e)
        elif has_manifest:
            t.unreadable.append(e)
        elif _has(e, DELETING_MARKER):
            t.half_deleted.append(e)
        else:
            t.incomplete.append(e)
    return targets


def _blocked_reason(t: _Target, cutoff: datetime, now: datetime) -> str:
    young = [e for e in t.incomplete if _last_activity(e) > cutoff]
    if young:
        e = max(young, key=_last_activity)
        return (
            f"backup {e.id} is being written (no manifest yet, last written "
            f"{_ago(now - _last_activity(e))} ago): nothing of this target is pruned"
        )
    if t.uploads:
        up = max(t.uploads, key=upload_started)
        return (
            f"an upload to {up.key} started {_ago(now - upload_started(up))} ago is unfinished: "
            "nothing of this target is pruned"
        )
    if t.unreadable:
        e = t.unreadable[0]
        return (
            f"{len(t.unreadable)} backup(s) have a manifest that cannot be read "
            f"({e.id}: {e.manifest_error}): nothing of this target is pruned; "
            "check them with 'backupctl verify'"
        )
    return ""


def _report_blocked(
    result: PruneResult, t: _Target, cutoff: datetime, now: datetime, grace: str, why: str
) -> None:
    for e in t.complete:
        result.keep.append(Row(t.name, e.id, _created(e), (f"target skipped: {why}",)))
    for e in t.unreadable:
        reason = f"manifest unreadable: {e.manifest_error}"
        result.incomplete.append(IncompleteRow(t.name, e.id, e.created, (reason,), "leave"))
    for e in t.incomplete:
        age = _ago(now - _last_activity(e))
        if _last_activity(e) > cutoff:
            reason = f"in progress: no manifest, last written {age} ago (grace {grace})"
        else:
            reason = f"target skipped: {why}"
        result.incomplete.append(IncompleteRow(t.name, e.id, e.created, (reason,), "leave"))
    for e in t.half_deleted:
        reason = f"target skipped: {why}"
        result.incomplete.append(IncompleteRow(t.name, e.id, e.created, (reason,), "leave"))
    _report_foreign(result, t)


def _report_foreign(result: PruneResult, t: _Target) -> None:
    """Folders holding another folder's manifest are neither counted nor
    deleted (restic leaves what it cannot attribute to the user to sort out)."""
    for e in t.foreign:
        reason = f"not counted, not deleted: {e.manifest_error}"
        result.incomplete.append(IncompleteRow(t.name, e.id, e.created, (reason,), "leave"))


def _created(e: BackupEntry) -> datetime:
    return e.created if e.manifest is not None else catalog.id_time(e.id)


def _prune_target(
    sink: Backend,
    result: PruneResult,
    t: _Target,
    policy: Policy,
    now: datetime,
    grace: str,
    keep_oldest: bool,
    extend_lock: timedelta | None = None,
) -> None:
    items = [_CreatedFromId(e) if e.manifest is None else e for e in t.complete]
    decision = apply_policy(items, policy, now=now, keep_oldest=keep_oldest)
    to_remove: list[BackupEntry] = []
    for i, v in enumerate(decision.verdicts):
        entry = v.item.entry if isinstance(v.item, _CreatedFromId) else v.item
        keep, reasons = v.keep, v.reasons
        if i == 0 and not keep:  # belt and braces: retention keeps it anyway
            keep, reasons = True, ("newest complete backup (never removed)",)
        if keep and extend_lock is not None:
            reasons = (*reasons, *_extend_lock(sink, entry, _whole_second(now + extend_lock)))
        row = Row(t.name, entry.id, v.item.created, reasons)
        if keep:
            result.keep.append(row)
            if _has(entry, DELETING_MARKER):  # a marker left by a killed prune
                sink.delete(entry.prefix + DELETING_MARKER)
        elif locked := _lock_reason(sink, entry, now):
            result.keep.append(Row(t.name, entry.id, v.item.created, (*reasons, locked)))
        else:
            result.remove.append(row)
            to_remove.append(entry)

    half = [(e, "half-deleted by an interrupted prune") for e in t.half_deleted]
    for e, reason in half + [  # all older than the grace, or the target is blocked
        (e, f"incomplete: no manifest, last written {_ago(now - _last_activity(e))} ago "
            f"(older than {grace})")
        for e in t.incomplete
    ]:  # fmt: skip
        locked = _lock_reason(sink, e, now)
        action = "leave" if locked else "remove"
        reasons = (reason, locked) if locked else (reason,)
        result.incomplete.append(IncompleteRow(t.name, e.id, e.created, reasons, action))
        if not locked:
            to_remove.append(e)

    _report_foreign(result, t)
    for e in to_remove:
        _delete_or_keep(sink, result, e)


def _delete_or_keep(sink: Backend, result: PruneResult, e: BackupEntry) -> None:
    """Delete ``e``; when the store refuses (a lock prune could not see: a bucket or
    container policy, a permission), keep it with the store's reason and go on with
    the others; :func:`prune` fails at the end, after the rest is done (a transient
    error, an unreachable store, fails at once)."""
    try:
        _delete_backup(sink, e)
    except StorageError as err:
        if err.transient:
            raise
        result.refused.append(str(err))
        why = f"not deleted: the store refused ({err}); a later prune tries again"
        for i, r in enumerate(result.remove):
            if (r.target, r.id) == (e.target, e.id):
                del result.remove[i]
                result.keep.append(Row(r.target, r.id, r.created, (*r.reasons, why)))
                return
        for i, ir in enumerate(result.incomplete):
            if (ir.target, ir.id) == (e.target, e.id):
                result.incomplete[i] = IncompleteRow(
                    ir.target, ir.id, ir.created, (*ir.reasons, why), "leave"
                )


def _whole_second(t: datetime) -> datetime:
    """``t`` rounded up to a whole second: Azure keeps an expiry to the second, so
    the next prune at the same time sees the lock long enough and leaves it."""
    return t if not t.microsecond else t.replace(microsecond=0) + timedelta(seconds=1)


def _extend_lock(backend: Backend, e: BackupEntry, until: datetime) -> tuple[str, ...]:
    """Lock every object of ``e`` until ``until`` when its manifest is locked for
    less (same mode); the reason to show, or nothing when there was no lock."""
    lock = retention_of(backend, catalog.manifest_key(e.target, e.id))
    if lock is None or lock[1] >= until:
        return ()
    try:
        for o in e.objects:
            extend_retention(backend, o.key, lock[0], until)
    except StorageError as err:
        if err.transient:
            raise
        return (f"lock ({lock[0].lower()}) not extended: {err}",)
    return (f"lock extended to {format_time(until)} ({lock[0].lower()})",)


def lock_reason(backend: Backend, e: BackupEntry, now: datetime, *, after: str) -> str:
    """Why ``e`` may not be deleted yet: a lock (S3 Object Lock, Azure immutability
    policy, GCS retention) or a hold on its manifest (written last, so locked
    longest), or on its newest object when it has none; "" if free. ``after``:
    what removes it once the lock has passed (e.g. "a prune after that")."""
    newest = max(e.objects, key=lambda o: o.modified, default=None)
    key = catalog.manifest_key(e.target, e.id)
    if not any(o.key == key for o in e.objects):
        if newest is None:
            return ""
        key = newest.key
    lock = retention_of(backend, key)
    if lock is None or lock[1] <= now:
        return ""
    mode, until = lock
    when = "it is released" if until >= HELD else "that"
    return f"{describe_lock(mode, until)}: not deleted; {after} {when} removes it"


def _lock_reason(backend: Backend, e: BackupEntry, now: datetime) -> str:
    return lock_reason(backend, e, now, after="a prune after")


def _delete_backup(sink: Backend, e: BackupEntry) -> None:
    delete_folder(sink, e)


def delete_folder(
    sink: Backend, e: BackupEntry, *, again: str = "run prune again to finish"
) -> None:
    """Marker, manifest, archives, marker: every prefix of this sequence
    leaves either a complete backup or a folder the next prune sweeps
    (also used by ``backupctl delete``; ``again`` is the error's hint)."""
    marker = e.prefix + DELETING_MARKER
    try:
        if not _has(e, DELETING_MARKER):
            put_bytes(sink, marker, _MARKER_TEXT)
        rest = [o for o in e.objects if o.key != marker]
        # catalog.delete_backup deletes the manifest first, then the rest.
        catalog.delete_backup(sink, dataclasses.replace(e, objects=rest))
        sink.delete(marker)
    except StorageError as err:
        raise StorageError(
            f"while deleting backup {e.id} of {e.target}: {err} ({again})",
            transient=err.transient,
        ) from err


__all__ = [
    "DEFAULT_INCOMPLETE_GRACE",
    "DELETING_MARKER",
    "IncompleteRow",
    "PolicyError",
    "PruneError",
    "PruneResult",
    "Row",
    "Skipped",
    "UploadRow",
    "check_request",
    "delete_folder",
    "lock_reason",
    "prune",
]
