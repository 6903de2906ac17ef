"""Retention policy: which backups to keep, and why (pure).

The semantics are restic's ``forget`` policy (``snapshot_policy.go``), so
users who know ``--keep-daily 7 --keep-weekly 4`` from restic get exactly
what those words mean there:

- backups are considered newest first;
- each counting rule (last, hourly, daily, weekly, monthly, yearly) keeps the
  newest backup of each of its N most recent calendar periods that contain a
  backup; ``-1`` means every period;
- a rule that still has count left when it reaches the oldest backup keeps
  that one too (newer restic; ``keep_oldest=False`` gives restic <= 0.15);
- ``within`` keeps every backup newer than that duration before the newest
  backup (backups in the future of ``now`` are not "the newest");
- a backup is kept if any rule keeps it; an empty policy removes nothing.

Periods are calendar periods in the policy's time zone: hours and days are
wall-clock ones, weeks are ISO weeks (Monday to Sunday, numbered within the
ISO year, so 2020-12-31 is in 2020-W53 and 2021-01-03 too).

No I/O and no clock reads: ``now`` is passed in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Generic, Protocol, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UNLIMITED = -1

#: The counting rules in restic's order: (field name, reason word).
RULES: tuple[tuple[str, str], ...] = (
    ("last", "last"),
    ("hourly", "hourly"),
    ("daily", "daily"),
    ("weekly", "weekly"),
    ("monthly", "monthly"),
    ("yearly", "yearly"),
)


class PolicyError(ValueError):
    """A retention policy or duration a user wrote that cannot be applied.
    ``str()`` is one line that says what to change."""


# --- durations -----------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+)(\D*)")
_UNITS = {"y": "years", "m": "months", "d": "days", "h": "hours"}
#: The longest duration accepted, in years: far beyond any retention, and
#: short enough that ``now`` minus it is still a date (Python's start at year 1).
MAX_DURATION_YEARS = 1000
#: Days in a year and a month on average (Gregorian), to weigh units against that limit.
_YEAR_DAYS, _MONTH_DAYS = 365.2425, 365.2425 / 12


@dataclass(frozen=True)
class Duration:
    """A calendar duration as restic writes it (``1y2m3d4h``).

    Years, months and days are counted on the calendar (``1m`` before
    March 31 is March 3 or 2, as Go's ``AddDate`` normalises), hours are
    exact: the same arithmetic as restic's ``--keep-within``.
    """

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    def __str__(self) -> str:
        parts = [
            f"{n}{unit}"
            for n, unit in (
                (self.years, "y"),
                (self.months, "m"),
                (self.days, "d"),
                (self.hours, "h"),
            )
            if n
        ]
        return "".join(parts) or "0h"

    @property
    def zero(self) -> bool:
        return not (self.years or self.months or self.days or self.hours)

    def before(self, t: datetime) -> datetime:
        """``t`` minus this duration, in UTC: calendar arithmetic on ``t``'s
        wall clock in its own zone, then exact hours (Go's
        ``t.AddDate(-y, -m, -d).Add(-h * time.Hour)``)."""
        month_index = t.year * 12 + (t.month - 1) - self.years * 12 - self.months
        year, month0 = divmod(month_index, 12)
        try:
            # Day overflow rolls into the next month, as Go's Date() does.
            day = date(year, month0 + 1, 1) + timedelta(days=t.day - 1 - self.days)
            # The same wall time on that day, in t's zone (its UTC offset may
            # differ across a DST change); then exact hours, counted in UTC.
            shifted = t.replace(year=day.year, month=day.month, day=day.day, fold=0)
            return shifted.astimezone(UTC) - timedelta(hours=self.hours)
        except (ValueError, OverflowError):  # before year 1: every time is later
            return datetime.min.replace(tzinfo=UTC)


def parse_duration(text: str) -> Duration:
    """Parse restic's duration syntax: one or more ``<number><unit>`` with
    units ``y`` (years), ``m`` (months), ``d`` (days), ``h`` (hours), e.g.
    ``30d``, ``1y6m``, ``2y5m7d3h``. Raises :class:`PolicyError`."""
    s = text.strip()
    hint = "use a number and a unit: y (years), m (months), d (days), h (hours), e.g. 30d or 1y6m"
    if not s:
        raise PolicyError(f"empty duration: {hint}")
    if s.startswith("-"):
        raise PolicyError(f"duration {text!r} is negative: {hint}")
    values: dict[str, int] = {}
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m:
            raise PolicyError(f"duration {text!r}: expected a number at {s[pos:]!r}: {hint}")
        num, unit = m.group(1), m.group(2).strip()
        if not unit:
            raise PolicyError(f"duration {text!r}: no unit after {num}: {hint}")
        if unit not in _UNITS:
            extra = " (restic has no weeks: write 7d)" if unit == "w" else ""
            raise PolicyError(f"duration {text!r}: unknown unit {unit!r}{extra}: {hint}")
        name = _UNITS[unit]
        if name in values:
            raise PolicyError(f"duration {text!r}: unit {unit!r} given twice: {hint}")
        if len(num) > 12:  # a number that long is never a duration: stop before arithmetic
            raise PolicyError(_too_long(text))
        values[name] = int(num)
        pos = m.end()
    d = Duration(**values)
    days = d.years * _YEAR_DAYS + d.months * _MONTH_DAYS + d.days + d.hours / 24
    if days > MAX_DURATION_YEARS * _YEAR_DAYS + 1e-6:
        raise PolicyError(_too_long(text))
    return d


def _too_long(text: str) -> str:
    shown = text if len(text) <= 40 else text[:39] + "…"
    return (
        f"duration {shown!r} is too long: at most {MAX_DURATION_YEARS} years "
        "(use -1/'unlimited' counts to keep everything)"
    )


def format_within(within: Duration | timedelta) -> str:
    """Short text for a ``within`` value: ``30d``, ``1y6m``, ``36h``."""
    if isinstance(within, Duration):
        return str(within)
    secs = int(within.total_seconds())
    if secs % 86400 == 0:
        return f"{secs // 86400}d"
    if secs % 3600 == 0:
        return f"{secs // 3600}h"
    return str(within)


# --- policy --------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """How many backups of each kind to keep. Counts are ``>= 0``, or ``-1``
    (:data:`UNLIMITED`) for every period; 0 disables a rule. ``within`` is a
    restic :class:`Duration` (calendar) or an exact ``timedelta``."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: Duration | timedelta | None = None
    tz: str = "UTC"

    def validate(self) -> None:
        """Raise :class:`PolicyError` naming the first bad field."""
        for name, _ in RULES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise PolicyError(f"keep-{name} must be a whole number, got {value!r}")
            if value < UNLIMITED:
                raise PolicyError(
                    f"keep-{name} must be 0 or more, or -1 for unlimited (got {value})"
                )
        if isinstance(self.within, Duration):
            if min(self.within.years, self.within.months, self.within.days, self.within.hours) < 0:
                raise PolicyError(f"keep-within must not be negative (got {self.within})")
        elif isinstance(self.within, timedelta):
            if self.within < timedelta(0):
                raise PolicyError(f"keep-within must not be negative (got {self.within})")
        elif self.within is not None:
            raise PolicyError(f"keep-within must be a duration such as 30d, got {self.within!r}")
        self.zone()

    def zone(self) -> ZoneInfo:
        """The policy's time zone; :class:`PolicyError` if it is unknown."""
        try:
            return ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise PolicyError(
                f"unknown time zone {self.tz!r}: use an IANA name such as UTC or Europe/Paris"
            ) from None

    @property
    def has_within(self) -> bool:
        if self.within is None:
            return False
        if isinstance(self.within, Duration):
            return not self.within.zero
        return self.within > timedelta(0)

    @property
    def empty(self) -> bool:
        """True when no rule is set: such a policy keeps everything."""
        return not self.has_within and all(getattr(self, name) == 0 for name, _ in RULES)

    def describe(self) -> str:
        """One line, e.g. ``keep 7 daily, 4 weekly, all monthly; within 30d (UTC)``."""
        parts = []
        for name, word in RULES:
            n = getattr(self, name)
            word = "latest" if name == "last" else word
            if n == UNLIMITED:
                parts.append(f"all {word}")
            elif n:
                parts.append(f"{n} {word}")
        text = "keep " + ", ".join(parts) if parts else ""
        if self.has_within:
            assert self.within is not None
            within = f"everything within {format_within(self.within)} of the newest"
            text = f"{text}; {within}" if text else f"keep {within}"
        return f"{text} ({self.tz})" if text else "empty policy (keeps everything)"


# --- decision ------------------------------------------------------------------


class Item(Protocol):
    """What retention needs of a backup: an id and an aware creation time."""

    @property
    def id(self) -> str: ...

    @property
    def created(self) -> datetime: ...


T = TypeVar("T", bound=Item)


@dataclass(frozen=True, slots=True)
class Verdict(Generic[T]):
    item: T
    keep: bool
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Decision(Generic[T]):
    """Every backup with keep/remove and reasons, newest first."""

    verdicts: tuple[Verdict[T], ...] = field(default_factory=tuple)

    @property
    def keep(self) -> list[Verdict[T]]:
        return [v for v in self.verdicts if v.keep]

    @property
    def remove(self) -> list[Verdict[T]]:
        return [v for v in self.verdicts if not v.keep]


# One period key and label function per counting rule. Keys are compared
# for equality only (restic's "bucker" integers), labels go into reasons.
_PeriodKey = Callable[[datetime, int], tuple[int, ...]]


def _iso(t: datetime) -> tuple[int, int]:
    y, w, _ = t.isocalendar()
    return (y, w)


_KEYS: dict[str, _PeriodKey] = {
    "last": lambda t, nr: (nr,),
    "hourly": lambda t, nr: (t.year, t.month, t.day, t.hour),
    "daily": lambda t, nr: (t.year, t.month, t.day),
    "weekly": lambda t, nr: _iso(t),
    "monthly": lambda t, nr: (t.year, t.month),
    "yearly": lambda t, nr: (t.year,),
}


def _label(rule: str, key: tuple[int, ...]) -> str:
    if rule == "last":
        return ""
    if rule == "hourly":
        return f" {key[0]:04d}-{key[1]:02d}-{key[2]:02d} {key[3]:02d}:00"
    if rule == "daily":
        return f" {key[0]:04d}-{key[1]:02d}-{key[2]:02d}"
    if rule == "weekly":
        return f" {key[0]:04d}-W{key[1]:02d}"
    if rule == "monthly":
        return f" {key[0]:04d}-{key[1]:02d}"
    return f" {key[0]:04d}"


def _sort_key(item: Item) -> tuple[datetime, str]:
    # In UTC: aware datetimes sharing a tzinfo compare by wall clock, which
    # gets the repeated hour of a DST change wrong.
    return (item.created.astimezone(UTC), item.id)


def apply_policy(
    backups: Sequence[T],
    policy: Policy,
    *,
    now: datetime | None = None,
    keep_oldest: bool = True,
) -> Decision[T]:
    """Decide keep/remove for every backup (see the module docstring).

    ``now`` only matters for ``within``: backups newer than ``now`` (clock
    skew) are kept by ``within`` but do not move its reference point, as in
    restic. ``keep_oldest=False`` drops the "oldest" rule, for comparing
    with restic <= 0.15. Raises :class:`PolicyError` for a bad policy and
    ``ValueError`` for a backup with a naive ``created``.
    """
    policy.validate()
    zone = policy.zone()
    for b in backups:
        if b.created.tzinfo is None or b.created.utcoffset() is None:
            raise ValueError(f"backup {b.id!r} has a creation time without a time zone")
    ordered = sorted(backups, key=_sort_key, reverse=True)
    if policy.empty:
        return Decision(tuple(Verdict(b, True, ("no policy",)) for b in ordered))
    if not ordered:
        return Decision(())
    utc = [b.created.astimezone(UTC) for b in ordered]

    cutoff: datetime | None = None
    within_reason = ""
    if policy.has_within:
        assert policy.within is not None
        # Newest first, so the first backup older than now is the newest one.
        latest = next((u for u in utc if now is None or u < now), None)
        if latest is not None:
            if isinstance(policy.within, Duration):
                cutoff = policy.within.before(latest.astimezone(zone))
            else:
                cutoff = latest - policy.within
        # else: every backup is in the future; as in restic, all are "within".
        within_reason = f"within {format_within(policy.within)}"

    counts = {name: getattr(policy, name) for name, _ in RULES}
    last_key: dict[str, tuple[int, ...] | None] = {name: None for name, _ in RULES}
    oldest_nr = len(ordered) - 1
    verdicts: list[Verdict[T]] = []
    for nr, b in enumerate(ordered):
        local = utc[nr].astimezone(zone)
        reasons: list[str] = []
        if within_reason and (cutoff is None or utc[nr] > cutoff):
            reasons.append(within_reason)
        for name, word in RULES:
            if counts[name] == 0:
                continue
            key = _KEYS[name](local, nr)
            is_oldest_extra = keep_oldest and nr == oldest_nr and key == last_key[name]
            if key != last_key[name] or is_oldest_extra:
                prefix = "oldest " if is_oldest_extra else ""
                reasons.append(f"{prefix}{word} snapshot{_label(name, key)}")
                last_key[name] = key
                if counts[name] > 0:
                    counts[name] -= 1
        verdicts.append(Verdict(b, bool(reasons), tuple(reasons)))
    return Decision(tuple(verdicts))
