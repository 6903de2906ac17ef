"""Cron slots, the missed-run policy and deterministic Job names (pure).

Time is always passed in (timezone-aware datetimes); nothing here reads the
clock. Slots come back as aware UTC datetimes.

Cron is evaluated on the wall clock of ``tz`` (default UTC), with these rules
for daylight-saving changes:

- a wall time that does not exist (spring forward: 02:30 in Europe/Paris on
  the last Sunday of March) fires at the moment the clocks jump, so a daily
  job is never skipped;
- a wall time that happens twice (fall back) fires once, at its first
  occurrence, so a daily job never runs twice.

The missed-run policy (:func:`due_slot`): after any downtime at most ONE
catch-up run, for the most recent missed slot, and only within
``startingDeadlineSeconds`` when that is set. Never a burst.

:func:`parse_cron` and :func:`check_time_zone` check ``spec.schedule`` and
``spec.timeZone`` for the spec parser, in the terms of the slots computed here.

Job names (:func:`job_name`) are a function of the resource name and the
slot only, so a retried reconcile or a restarted controller computes the
same name and gets AlreadyExists instead of making a second Job (the
CloudNativePG ScheduledBackup / CronJob approach).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import re
import zoneinfo
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from croniter import croniter
from croniter.croniter import CroniterError

from backupctl.controller.spec_fields import SpecError

#: The most a time zone's UTC offset moves in one day, with margin. Bounds
#: how far the naive wall-clock search starts from the instant asked about.
_DST_MARGIN = timedelta(hours=26)
_MINUTE = timedelta(minutes=1)
#: Kubernetes name limit for Jobs (their name becomes a pod label value).
MAX_NAME = 63
SLOT_FORMAT = "%Y%m%d%H%M%S"
_NOT_DNS = re.compile(r"[^a-z0-9-]+")

#: ``@`` shortcuts, as in cron(8) and Kubernetes CronJobs.
CRON_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
CRON_FORMAT = (
    "must be a 5-field cron expression (minute hour day-of-month month day-of-week), "
    "e.g. '0 2 * * *', or one of @hourly, @daily, @weekly, @monthly, @yearly"
)
# croniter extensions that are not cron: H (hashed) and R (random) make slots
# depend on something other than the expression.
_NON_CRON_TOKEN = re.compile(r"(^|[,/])[HR](\(|$|[,/])", re.IGNORECASE)


def parse_cron(expr: str, p: str = "spec.schedule") -> str:
    """Check a cron expression; return it with ``@`` macros expanded."""
    text = " ".join(expr.split())
    if text.lower() in CRON_MACROS:
        return CRON_MACROS[text.lower()]
    fields = text.split(" ")
    if len(fields) != 5 or text.startswith("@"):
        raise SpecError(p, f"{expr!r}: {CRON_FORMAT}")
    if any(_NON_CRON_TOKEN.search(f) for f in fields):
        raise SpecError(p, f"{expr!r}: hashed (H) and random (R) fields are not supported")
    try:
        croniter(text, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterError as e:
        raise SpecError(p, f"{expr!r} is not a valid cron expression: {e}") from None
    except (ValueError, KeyError) as e:  # croniter raises these for some odd input
        raise SpecError(p, f"{expr!r} is not a valid cron expression: {e}") from None
    return text


def check_time_zone(tz: str, p: str = "spec.timeZone") -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise SpecError(
            p, f"unknown time zone {tz!r}: use an IANA name like UTC or Europe/Paris"
        ) from None


def next_run(cron: str, tz: str, after: datetime) -> datetime:
    """The first slot strictly after ``after`` (UTC)."""
    zone, expr = _zone(tz), _cron(cron)
    after = _aware(after)
    offset = min(_offset(zone, after), _offset(zone, after + _DST_MARGIN))
    start = after.astimezone(UTC).replace(tzinfo=None) + offset - _MINUTE
    for wall in _walk(expr, start, forward=True):
        slot = _instant(wall, zone)
        if slot > after:
            return slot
    raise AssertionError("unreachable: croniter iterates forever")  # pragma: no cover


def prev_run(cron: str, tz: str, at: datetime) -> datetime:
    """The latest slot at or before ``at`` (UTC)."""
    zone, expr = _zone(tz), _cron(cron)
    at = _aware(at)
    offset = max(_offset(zone, at), _offset(zone, at - _DST_MARGIN))
    start = at.astimezone(UTC).replace(tzinfo=None) + offset + _MINUTE
    for wall in _walk(expr, start, forward=False):
        slot = _instant(wall, zone)
        if slot <= at:
            return slot
    raise AssertionError("unreachable: croniter iterates forever")  # pragma: no cover


def due_slot(
    cron: str,
    tz: str,
    last_schedule_time: datetime,
    now: datetime,
    starting_deadline_seconds: int | None = None,
) -> datetime | None:
    """The slot to start a Job for now, or None.

    ``last_schedule_time`` is the last slot a Job was made for (status
    ``lastScheduleTime``), or the resource's ``creationTimestamp`` when it
    never ran. Of the slots in ``(last_schedule_time, now]`` only the most
    recent is ever returned, so a 3-day outage of an hourly schedule yields
    one catch-up run, not 72. When ``starting_deadline_seconds`` is set and
    that slot is older than the deadline, nothing runs: the next slot will.
    """
    slot = prev_run(cron, tz, now)
    if slot <= _aware(last_schedule_time):
        return None
    late = (_aware(now) - slot).total_seconds()
    if starting_deadline_seconds is not None and late > starting_deadline_seconds:
        return None
    return slot


def missed_slots(
    cron: str, tz: str, last_schedule_time: datetime, now: datetime, limit: int = 100
) -> int:
    """How many slots fell in ``(last_schedule_time, now]``, counting at most
    ``limit`` (for an Event such as "missed 72 runs, ran the latest")."""
    count, t = 0, _aware(last_schedule_time)
    while count < limit:
        t = next_run(cron, tz, t)
        if t > _aware(now):
            break
        count += 1
    return count


def slot_stamp(slot: datetime) -> str:
    """``YYYYMMDDHHMMSS`` in UTC: the slot's part of a Job name and its
    ``backupctl.dev/slot`` label value."""
    return _aware(slot).astimezone(UTC).strftime(SLOT_FORMAT)


def job_name(backup_name: str, slot: datetime, suffix: str = "") -> str:
    """Deterministic Job name for a resource's slot:
    ``<backup_name>-<YYYYMMDDHHMMSS>[-<suffix>]``, a DNS-1123 label of at
    most 63 characters. A name that had to be shortened or changed keeps a
    short hash of the original so two resources never share Job names."""
    tail = "-" + slot_stamp(slot) + (f"-{suffix}" if suffix else "")
    return bounded_name(backup_name, tail)


def shard_job_name(backup_name: str, slot: datetime, shard: int) -> str:
    """The Job backing up shard ``shard`` (1-based) of a cluster for a slot:
    ``<backup_name>-<YYYYMMDDHHMMSS>-shard<I>``; the run's name (history,
    ``backupctl.dev/run``) stays :func:`job_name`."""
    return job_name(backup_name, slot, f"shard{shard}")


def bounded_name(base: str, tail: str = "", limit: int = MAX_NAME) -> str:
    """``base + tail`` as a DNS-1123 label of at most ``limit`` characters.
    ``tail`` (lower-case letters, digits, '-') is kept whole; ``base`` is
    lower-cased, its other characters become '-', and when that changed it
    or it has to be cut, a 6-character hash of ``base`` is added."""
    clean = _NOT_DNS.sub("-", base.lower()).strip("-")
    if clean == base and len(base) + len(tail) <= limit:
        return base + tail
    digest = hashlib.sha256(base.encode()).hexdigest()[:6]
    room = limit - len(tail) - len(digest) - 1
    if room < 1:
        raise ValueError(f"name tail {tail!r} leaves no room for a name")
    head = clean[:room].rstrip("-")
    return f"{head}-{digest}{tail}" if head else f"{digest}{tail}"


# --- internals ---------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _cron(cron: str) -> str:
    return parse_cron(cron)


def _zone(tz: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(tz)


def _aware(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ValueError(f"schedule times must be timezone-aware, got {t.isoformat()}")
    return t


def _offset(zone: zoneinfo.ZoneInfo, t: datetime) -> timedelta:
    return t.astimezone(zone).utcoffset() or timedelta(0)


@functools.lru_cache(maxsize=1024)
def _parsed(expr: str) -> croniter:
    """A croniter with ``expr`` expanded (the costly part), copied per use."""
    return croniter(expr, datetime(2000, 1, 1))


def _walk(expr: str, start: datetime, *, forward: bool) -> Iterator[datetime]:
    """Naive wall-clock matches of ``expr`` strictly after (or before) ``start``."""
    it = copy.copy(_parsed(expr))
    it.set_current(start, force=True)
    while True:
        yield it.get_next(datetime) if forward else it.get_prev(datetime)


def _instant(wall: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    """The UTC instant a naive wall-clock slot fires at (see module doc).
    Monotonic in ``wall``, which the searches above rely on."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first  # exists (its first occurrence when it happens twice)
    # In a gap: fire when the clocks jump, the first instant whose wall time
    # is past ``wall``. Offsets change on whole minutes, so step by minutes
    # from the earlier of the two readings of ``wall``.
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    t = min(first, second).replace(second=0, microsecond=0)
    while t.astimezone(zone).replace(tzinfo=None) < wall:
        t += _MINUTE
    return t


__all__ = [
    "CRON_FORMAT",
    "CRON_MACROS",
    "MAX_NAME",
    "bounded_name",
    "check_time_zone",
    "due_slot",
    "job_name",
    "missed_slots",
    "next_run",
    "parse_cron",
    "prev_run",
    "shard_job_name",
    "slot_stamp",
]
