"""Retention (pure): golden cases under tests/golden/retention/ plus
parsing and validation. Each golden file names a policy, the backups, and
what must be kept with which reasons; everything else must be removed."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backupctl.store.retention import (
    Duration,
    Policy,
    PolicyError,
    apply_policy,
    parse_duration,
)

GOLDEN = Path(__file__).parent / "golden" / "retention"
CASES = sorted(GOLDEN.glob("*.json"))


@dataclass(frozen=True)
class B:
    id: str
    created: datetime


def _t(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def _backups(case: dict[str, Any]) -> list[B]:
    if "generate" in case:
        g = case["generate"]
        t, last, step = _t(g["first"]), _t(g["last"]), timedelta(hours=g["step_hours"])
        out = []
        while t <= last:
            out.append(B(t.strftime("%Y-%m-%dT%H:%M:%SZ"), t))
            t += step
        return out
    return [
        B(b, _t(b)) if isinstance(b, str) else B(b["id"], _t(b["created"])) for b in case["backups"]
    ]


def _policy(d: dict[str, Any]) -> Policy:
    d = dict(d)
    if "within" in d:
        d["within"] = parse_duration(d["within"])
    return Policy(**d)


def test_golden_cases_exist() -> None:
    assert len(CASES) >= 25


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_golden_case_keeps_exactly_the_expected_backups_with_reasons(path: Path) -> None:
    case = json.loads(path.read_text())
    backups = _backups(case)
    now = _t(case["now"]) if "now" in case else None
    decision = apply_policy(
        backups, _policy(case["policy"]), now=now, keep_oldest=case.get("keep_oldest", True)
    )

    assert [v.item for v in decision.verdicts] == sorted(
        backups, key=lambda b: (b.created, b.id), reverse=True
    ), "verdicts come newest first, one per backup"
    kept = {v.item.id: list(v.reasons) for v in decision.keep}
    removed = {v.item.id for v in decision.remove}
    assert all(not v.reasons for v in decision.remove)
    assert len(kept) + len(removed) == len(backups)

    if "keep" in case:
        assert kept == case["keep"]
    for bid, reasons in case.get("keep_includes", {}).items():
        assert kept.get(bid) == reasons, bid
    for bid in case.get("remove_includes", []):
        assert bid in removed, bid
    if "expect" in case:
        assert len(kept) == case["expect"]["kept"]
        words = Counter(r.split()[0] for rs in kept.values() for r in rs)
        assert dict(words) == case["expect"]["reason_counts"]


def test_every_policy_keeps_the_newest_backup() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    backups = [B(str(i), start + timedelta(hours=7 * i)) for i in range(50)]
    for policy in [Policy(last=1), Policy(yearly=1), Policy(within=Duration(hours=1)), Policy()]:
        assert apply_policy(backups, policy).verdicts[0].keep


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", Duration(days=30)),
        ("1y2m3d4h", Duration(1, 2, 3, 4)),
        ("2y5m7d3h", Duration(2, 5, 7, 3)),
        (" 12h ", Duration(hours=12)),
        ("6m1y", Duration(years=1, months=6)),
        ("0d", Duration()),
        ("1000y", Duration(years=1000)),
        ("999y12m", Duration(years=999, months=12)),
        ("12000m", Duration(months=12000)),
        ("8765820h", Duration(hours=8765820)),
    ],
)
def test_parse_duration_accepts_restic_forms(text: str, expected: Duration) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2w", "unknown unit 'w'"),
        ("30", "no unit after 30"),
        ("", "empty duration"),
        ("-3d", "negative"),
        ("d", "expected a number"),
        ("1d1d", "given twice"),
        ("3 days", "unknown unit"),
        ("99999999y", "too long: at most 1000 years"),
        ("1000y1d", "too long"),
        ("12001m", "too long"),
        ("365243d", "too long"),
        ("9" * 40 + "h", "too long"),
    ],
)
def test_parse_duration_rejects_bad_input_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_duration(text)


@pytest.mark.parametrize("text", ["1000y", "12000m", "365242d", "8765820h", "999y11m29d"])
def test_the_longest_durations_reach_back_to_a_representable_time(text: str) -> None:
    for now in (datetime(2026, 12, 6, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC)):
        assert parse_duration(text).before(now) < now


def test_a_duration_reaching_before_year_1_means_every_time_is_within_it() -> None:
    assert Duration(years=1000).before(datetime(500, 6, 1, tzinfo=UTC)).year == 1


def test_duration_str_round_trips() -> None:
    assert str(Duration(1, 2, 3, 4)) == "1y2m3d4h"
    assert str(parse_duration("30d")) == "30d"


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (Policy(daily=-2), "keep-daily must be 0 or more, or -1 for unlimited"),
        (Policy(last=-5), "keep-last"),
        (Policy(tz="Europe/Pariss"), "unknown time zone 'Europe/Pariss'"),
        (Policy(tz="../etc/passwd"), "unknown time zone"),
        (Policy(tz=""), "unknown time zone"),
        (Policy(within=timedelta(hours=-1)), "keep-within must not be negative"),
        (Policy(within=Duration(days=-1)), "keep-within must not be negative"),
    ],
)
def test_invalid_policy_is_rejected_before_deciding_anything(policy: Policy, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        policy.validate()
    with pytest.raises(PolicyError):
        apply_policy([B("a", datetime(2024, 1, 1, tzinfo=UTC))], policy)


def test_naive_creation_time_is_refused() -> None:
    with pytest.raises(ValueError, match="without a time zone"):
        apply_policy([B("a", datetime(2024, 1, 1))], Policy(daily=1))


def test_policy_empty_and_describe() -> None:
    assert Policy().empty
    assert Policy(within=Duration()).empty
    assert not Policy(within=timedelta(hours=1)).empty
    assert not Policy(yearly=-1).empty
    assert Policy(daily=7, weekly=-1, within=Duration(days=30), tz="Europe/Paris").describe() == (
        "keep 7 daily, all weekly; everything within 30d of the newest (Europe/Paris)"
    )


def test_timedelta_within_is_exact() -> None:
    newest = datetime(2024, 3, 31, 12, tzinfo=UTC)
    backups = [
        B("new", newest),
        B("edge", newest - timedelta(hours=36)),
        B("in", newest - timedelta(hours=35)),
    ]
    d = apply_policy(backups, Policy(within=timedelta(hours=36)))
    assert {v.item.id: v.reasons for v in d.keep} == {"new": ("within 36h",), "in": ("within 36h",)}


def test_large_input_is_decided_quickly() -> None:
    start = datetime(2000, 1, 1, tzinfo=UTC)
    backups = [B(str(i), start + timedelta(minutes=97 * i)) for i in range(100_000)]
    d = apply_policy(backups, Policy(daily=7, weekly=4, monthly=6, yearly=2))
    assert 12 <= len(d.keep) <= 7 + 4 + 6 + 2
    assert d.verdicts[0].keep and d.verdicts[0].item.id == "99999"
