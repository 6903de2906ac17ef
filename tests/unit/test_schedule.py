"""schedule.py: cron slots in a time zone, DST, the missed-run policy, Job names."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from backupctl.controller.schedule import (
    bounded_name,
    due_slot,
    job_name,
    missed_slots,
    next_run,
    prev_run,
    slot_stamp,
)
from backupctl.controller.spec_fields import SpecError

PARIS = "Europe/Paris"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def slots(cron: str, tz: str, start: datetime, end: datetime) -> list[datetime]:
    out, t = [], start
    while (t := next_run(cron, tz, t)) <= end:
        out.append(t)
    return out


# --- next / prev -------------------------------------------------------------


def test_next_run_is_strictly_after() -> None:
    assert next_run("0 2 * * *", "UTC", utc(2024, 1, 1)) == utc(2024, 1, 1, 2)
    assert next_run("0 2 * * *", "UTC", utc(2024, 1, 1, 2)) == utc(2024, 1, 2, 2)
    assert next_run("0 2 * * *", "UTC", utc(2024, 1, 1, 1, 59, 59)) == utc(2024, 1, 1, 2)


@pytest.mark.parametrize(
    "macro, after, expected",
    [
        ("@hourly", utc(2024, 1, 1, 10, 30), utc(2024, 1, 1, 11)),
        ("@daily", utc(2024, 1, 1, 10), utc(2024, 1, 2)),
        ("@midnight", utc(2024, 1, 1, 10), utc(2024, 1, 2)),
        ("@weekly", utc(2024, 1, 1), utc(2024, 1, 7)),  # Sunday
        ("@monthly", utc(2024, 1, 15), utc(2024, 2, 1)),
        ("@yearly", utc(2024, 1, 15), utc(2025, 1, 1)),
        ("@annually", utc(2024, 1, 15), utc(2025, 1, 1)),
    ],
)
def test_macros(macro: str, after: datetime, expected: datetime) -> None:
    assert next_run(macro, "UTC", after) == expected


def test_slots_follow_the_time_zone_wall_clock() -> None:
    # 02:00 in Paris is 01:00 UTC in winter (CET) and 00:00 UTC in summer (CEST).
    assert next_run("0 2 * * *", PARIS, utc(2024, 1, 10)) == utc(2024, 1, 10, 1)
    assert next_run("0 2 * * *", PARIS, utc(2024, 7, 9, 12)) == utc(2024, 7, 10, 0)
    assert next_run("0 9 * * MON-FRI", "America/New_York", utc(2024, 7, 13)) == utc(2024, 7, 15, 13)


def test_spring_forward_runs_a_skipped_wall_time_when_the_clocks_jump() -> None:
    # 2024-03-31 02:00 CET -> 03:00 CEST (01:00 UTC): 02:30 does not exist.
    days = slots("30 2 * * *", PARIS, utc(2024, 3, 29), utc(2024, 4, 2))
    assert days == [utc(2024, 3, 29, 1, 30), utc(2024, 3, 30, 1, 30), utc(2024, 3, 31, 1),
                    utc(2024, 4, 1, 0, 30)]  # fmt: skip
    assert days[2].astimezone(ZoneInfo(PARIS)).strftime("%H:%M %Z") == "03:00 CEST"


def test_fall_back_runs_a_repeated_wall_time_once() -> None:
    # 2024-10-27 03:00 CEST -> 02:00 CET (01:00 UTC): 02:30 happens twice.
    days = slots("30 2 * * *", PARIS, utc(2024, 10, 25), utc(2024, 10, 29))
    assert days == [utc(2024, 10, 25, 0, 30), utc(2024, 10, 26, 0, 30), utc(2024, 10, 27, 0, 30),
                    utc(2024, 10, 28, 1, 30)]  # fmt: skip


@pytest.mark.parametrize("day", [utc(2024, 3, 30, 12), utc(2024, 10, 26, 12)])
@pytest.mark.parametrize("cron", ["0 * * * *", "*/20 * * * *", "30 2 * * *", "0 3 * * *"])
def test_slots_around_dst_are_strictly_increasing_and_prev_is_their_inverse(
    day: datetime, cron: str
) -> None:
    start, end = day, day + timedelta(days=1)
    expected = slots(cron, PARIS, start - timedelta(days=2), end + timedelta(days=1))
    assert expected == sorted(set(expected))
    t = start
    while t < end:
        assert prev_run(cron, PARIS, t) == max(s for s in expected if s <= t)
        assert next_run(cron, PARIS, t) == min(s for s in expected if s > t)
        t += timedelta(minutes=7, seconds=13)


def test_hourly_in_paris_never_fires_twice_at_once_on_dst_days() -> None:
    spring = slots("0 * * * *", PARIS, utc(2024, 3, 30, 22), utc(2024, 3, 31, 4))
    assert spring == [utc(2024, 3, 30, 23), utc(2024, 3, 31, 0), utc(2024, 3, 31, 1),
                      utc(2024, 3, 31, 2), utc(2024, 3, 31, 3), utc(2024, 3, 31, 4)]  # fmt: skip
    fall = slots("0 * * * *", PARIS, utc(2024, 10, 26, 22), utc(2024, 10, 27, 3))
    # 02:00 CEST (00:00 UTC) runs; its repeat at 02:00 CET (01:00 UTC) does not.
    assert fall == [utc(2024, 10, 26, 23), utc(2024, 10, 27, 0), utc(2024, 10, 27, 2),
                    utc(2024, 10, 27, 3)]  # fmt: skip


def test_prev_run_includes_a_slot_at_exactly_now() -> None:
    assert prev_run("0 2 * * *", "UTC", utc(2024, 1, 2, 2)) == utc(2024, 1, 2, 2)
    assert prev_run("0 2 * * *", "UTC", utc(2024, 1, 2, 1, 59)) == utc(2024, 1, 1, 2)


def test_naive_times_and_bad_expressions_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_run("0 2 * * *", "UTC", datetime(2024, 1, 1))
    with pytest.raises(SpecError):
        next_run("0 2 * *", "UTC", utc(2024, 1, 1))


# --- missed runs -------------------------------------------------------------


def test_due_slot_on_time_and_not_twice() -> None:
    slot = utc(2024, 1, 2, 2)
    assert due_slot("0 2 * * *", "UTC", utc(2024, 1, 1, 2), slot + timedelta(seconds=3)) == slot
    # Once lastScheduleTime is that slot, nothing is due until the next one.
    assert due_slot("0 2 * * *", "UTC", slot, slot + timedelta(hours=5)) is None
    assert due_slot("0 2 * * *", "UTC", slot, utc(2024, 1, 3, 2)) == utc(2024, 1, 3, 2)


def test_nothing_is_due_before_the_first_slot_after_creation() -> None:
    created = utc(2024, 1, 1, 12)
    assert due_slot("0 2 * * *", "UTC", created, utc(2024, 1, 1, 23)) is None
    assert due_slot("0 2 * * *", "UTC", created, utc(2024, 1, 2, 2)) == utc(2024, 1, 2, 2)


def test_three_day_outage_gives_exactly_one_catch_up_run_for_the_latest_slot() -> None:
    last = utc(2024, 1, 1, 10)  # last hourly run before the controller died
    back = utc(2024, 1, 4, 10, 25)  # 3 days later
    assert missed_slots("0 * * * *", "UTC", last, back) == 72
    assert due_slot("0 * * * *", "UTC", last, back) == utc(2024, 1, 4, 10)


def _simulate(
    cron: str,
    tz: str,
    created: datetime,
    end: datetime,
    down: tuple[datetime, datetime],
    deadline: int | None = None,
) -> list[datetime]:
    """A controller polling every 20 s (but not while down) that makes a Job
    for each due slot and records it as lastScheduleTime."""
    made: list[datetime] = []
    last, now = created, created
    while now < end:
        if not down[0] <= now < down[1]:
            slot = due_slot(cron, tz, last, now, deadline)
            if slot is not None:
                made.append(slot)
                last = slot
        now += timedelta(seconds=20)
    return made


def test_controller_timeline_with_outage_never_bursts() -> None:
    created, end = utc(2024, 1, 1), utc(2024, 1, 6)
    down = (utc(2024, 1, 2, 3, 30), utc(2024, 1, 5, 3, 30))
    made = _simulate("0 * * * *", "UTC", created, end, down)
    before = [s for s in made if s < down[0]]
    after = [s for s in made if s >= down[1]]
    catch_up = [s for s in made if down[0] <= s < down[1]]
    assert len(before) == 27 and len(after) == 20
    assert catch_up == [utc(2024, 1, 5, 3)]  # one, the latest missed slot
    assert len(made) == len(set(made)) == 48


def test_starting_deadline_skips_a_catch_up_that_is_too_late() -> None:
    last, slot = utc(2024, 1, 1, 2), utc(2024, 1, 2, 2)
    assert due_slot("0 2 * * *", "UTC", last, slot + timedelta(seconds=59), 60) == slot
    assert due_slot("0 2 * * *", "UTC", last, slot + timedelta(seconds=61), 60) is None
    created, end = utc(2024, 1, 1), utc(2024, 1, 8)
    down = (utc(2024, 1, 3, 1), utc(2024, 1, 5, 12))
    made = _simulate("0 2 * * *", "UTC", created, end, down, deadline=3600)
    assert made == [utc(2024, 1, d, 2) for d in (1, 2, 6, 7)]


def test_catch_up_in_a_time_zone() -> None:
    last = utc(2024, 3, 29, 1, 30)
    assert due_slot("30 2 * * *", PARIS, last, utc(2024, 4, 3, 12)) == utc(2024, 4, 3, 0, 30)


# --- names -------------------------------------------------------------------


def test_job_names_are_deterministic_per_slot() -> None:
    slot = utc(2024, 1, 1, 2)
    assert job_name("redis-cluster-backup", slot) == "redis-cluster-backup-20240101020000"
    assert job_name("redis-cluster-backup", slot) == job_name("redis-cluster-backup", slot)
    assert job_name("redis-cluster-backup", slot + timedelta(hours=1)) != job_name(
        "redis-cluster-backup", slot
    )
    assert job_name("nightly", slot, "prune") == "nightly-20240101020000-prune"
    assert slot_stamp(slot.astimezone(ZoneInfo(PARIS))) == "20240101020000"


@pytest.mark.parametrize(
    "name",
    [
        "a" * 63,
        "b" * 253,
        "my.backup.in.some.namespace",
        "x" * 48 + "." + "y" * 10,
        "redis-cluster-backup-with-a-rather-long-name-for-production-use",
    ],
)
def test_job_names_are_short_dns_labels(name: str) -> None:
    slot = utc(2024, 12, 31, 23, 59)
    for suffix in ("", "prune"):
        j = job_name(name, slot, suffix)
        assert len(j) <= 63 and DNS_LABEL.match(j), j
        assert j.endswith("-20241231235900" + (f"-{suffix}" if suffix else ""))


def test_shortened_names_keep_a_hash_so_they_do_not_collide() -> None:
    slot = utc(2024, 1, 1)
    a, b = "p" * 60 + "-one", "p" * 60 + "-two"
    assert job_name(a, slot) != job_name(b, slot)
    assert job_name("a.b", slot) != job_name("a-b", slot)
    assert job_name("a-b", slot) == "a-b-20240101000000"


def test_bounded_name_refuses_a_tail_that_leaves_no_room() -> None:
    with pytest.raises(ValueError):
        bounded_name("x", "-" + "t" * 62)
