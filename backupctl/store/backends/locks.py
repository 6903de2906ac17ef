"""Immutability of a backup's objects, one vocabulary for three stores (pure).

Why a module of its own: S3 Object Lock, Azure version-level immutability
and GCS object retention are the same idea (every object of a backup may not
be deleted or overwritten until a retain-until time) under three names and two
pairs of modes. ``run --lock-mode M --lock-days N`` is parsed here once, checked
against the store it is used with, and each backend asks this module what its
requests carry; prune and delete read a lock back as ``(mode, until)`` and
describe it with :func:`describe_lock`. Table tests check it without a server.

Modes per store (the service's own words):

- ``s3://``: ``governance`` (users with ``s3:BypassGovernanceRetention`` may
  delete or shorten it) or ``compliance`` (nobody may, not even root);
- ``az://`` and ``gs://``: ``unlocked`` (the policy may still be shortened or
  removed by someone with that permission) or ``locked`` (it may only be
  extended). ``unlocked`` is the nearest to S3's governance, ``locked`` to
  compliance.

A hold (Azure legal hold, GCS temporary or event-based hold) has no end: it is
read back as the mode of the hold until :data:`HELD`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from backupctl.core.timefmt import format_time
from backupctl.store.backends.base import StoreURLError

#: Modes by URL scheme, as the flag spells them.
STORE_MODES: dict[str, tuple[str, str]] = {
    "s3": ("governance", "compliance"),
    "az": ("unlocked", "locked"),
    "gs": ("unlocked", "locked"),
}
LOCK_MODES = tuple(dict.fromkeys(m for modes in STORE_MODES.values() for m in modes))
#: S3 Object Lock allows at most 100 years (Azure and GCS: more; one limit for all).
MAX_LOCK_DAYS = 36_500
#: The "until" of a hold: it lasts until someone releases it.
HELD = datetime.max.replace(tzinfo=UTC)
_NAMES = {"s3": "S3 Object Lock", "az": "Azure immutability", "gs": "GCS object retention"}


@dataclass(frozen=True)
class ObjectLock:
    """The lock of every object a run writes: mode (upper case), and days from the write."""

    mode: str  # "GOVERNANCE" | "COMPLIANCE" (S3) | "UNLOCKED" | "LOCKED" (Azure, GCS)
    days: int

    def retain_until(self, now: datetime) -> datetime:
        return now + timedelta(days=self.days)

    def write_args(self, now: datetime) -> dict[str, Any]:
        """What S3's PutObject / CreateMultipartUpload carry."""
        return {"ObjectLockMode": self.mode, "ObjectLockRetainUntilDate": self.retain_until(now)}

    @property
    def service_mode(self) -> str:
        """The mode as Azure and GCS spell it: ``Unlocked`` / ``Locked``."""
        return self.mode.capitalize()


def parse_lock(mode: str | None, days: int | None) -> ObjectLock | None:
    """``--lock-mode`` / ``--lock-days`` (both or neither); StoreURLError: one line.
    Which modes the store takes is checked by :func:`lock_for_store`."""
    if mode is None and days is None:
        return None
    if mode is None or days is None:
        raise StoreURLError(
            "--lock-mode and --lock-days go together: e.g. --lock-mode governance --lock-days 30 "
            "(set the days to how long retention keeps a backup)"
        )
    if mode.lower() not in LOCK_MODES:
        raise StoreURLError(
            f"--lock-mode must be governance or compliance (s3://), or unlocked or locked "
            f"(az://, gs://), not {mode[:40]!r}"
        )
    if not 1 <= days <= MAX_LOCK_DAYS:
        raise StoreURLError(f"--lock-days must be 1..{MAX_LOCK_DAYS}, not {days}")
    return ObjectLock(mode=mode.upper(), days=days)


def lock_for_store(lock: ObjectLock | None, scheme: str) -> ObjectLock | None:
    """``lock`` when the store of ``scheme`` takes its mode; StoreURLError (one
    line, with the mode to use instead) when not."""
    if lock is None:
        return None
    modes = STORE_MODES.get(scheme.lower())
    if modes is None:
        raise StoreURLError(
            "--lock-mode/--lock-days work on s3://, az:// and gs:// stores only (S3 Object "
            "Lock, Azure immutability, GCS object retention); a file store cannot lock"
        )
    if lock.mode.lower() in modes:
        return lock
    other = modes[LOCK_MODES.index(lock.mode.lower()) % 2]
    return _refuse(scheme, lock.mode.lower(), modes, other)


def _refuse(scheme: str, mode: str, modes: tuple[str, str], other: str) -> ObjectLock:
    raise StoreURLError(
        f"--lock-mode {mode} is not a mode of {_NAMES[scheme]} ({scheme}://): use "
        f"{modes[0]} or {modes[1]} (the nearest to {mode} is {other})"
    )


def describe_lock(mode: str, until: datetime) -> str:
    """``locked (governance) until 2026-01-10T02:00:00Z``, ``locked (unlocked policy)
    until ...`` (Azure, GCS) or ``held (legal hold) until released``."""
    if until >= HELD:
        return f"held ({mode.lower()}) until released"
    kind = mode.lower() or "object lock"
    if kind in ("unlocked", "locked"):  # Azure / GCS: the mode is the policy's
        kind += " policy"
    return f"locked ({kind}) until {format_time(until)}"


__all__ = [
    "HELD",
    "LOCK_MODES",
    "MAX_LOCK_DAYS",
    "STORE_MODES",
    "ObjectLock",
    "describe_lock",
    "lock_for_store",
    "parse_lock",
]
