"""restic 0.14 as the oracle for retention: the same 400 timestamps, the same
policy, the same keep set and the same reasons.

400 backups spread irregularly over two years (several a day, gaps of
weeks) from a seeded RNG are stored twice: as fake backups in a file store,
pruned by the command (``python -m backupctl.store.prune STORE --dry-run --json``),
and as restic snapshots (see ``tests/support/restic_repo.py`` for how they are made
quickly). A second copy of
the snapshots carries Europe/Paris offsets, which restic uses for its
calendar, so the time-zone path is checked against restic too.

restic 0.14 predates the "keep the oldest when a rule has count left"
rule: the issue's policy never has count left over two calendar years, and
the other policies are compared with ``keep_oldest=False`` (plus a check that
the default adds exactly the oldest backup).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from backupctl.store.backends.local import LocalBackend
from backupctl.store.retention import Policy, apply_policy, parse_duration

from support.fake_backups import add_backup
from support.restic_repo import make_repo, restic, write_snapshot

pytestmark = pytest.mark.skipif(
    shutil.which("restic") is None, reason="restic is not installed (apt-get install restic)"
)

PARIS = ZoneInfo("Europe/Paris")
N = 400


def _timestamps(seed: int = 20240328) -> list[datetime]:
    """N distinct whole-second times over two years: bursts of several a
    day, ordinary gaps of a day or two, and a few gaps of weeks."""
    rng = random.Random(seed)
    gaps = []
    for _ in range(N - 1):
        r = rng.random()
        if r < 0.35:
            gaps.append(rng.uniform(600, 6 * 3600))
        elif r < 0.95:
            gaps.append(rng.uniform(0.5 * 86400, 3 * 86400))
        else:
            gaps.append(rng.uniform(7 * 86400, 30 * 86400))
    scale = (730 * 86400) / sum(gaps)
    start = datetime(2023, 7, 1, 9, 17, 23, tzinfo=UTC)
    out, t = [start], 0.0
    for g in gaps:
        t += g * scale
        out.append(start + timedelta(seconds=round(t)))
    assert len(set(out)) == N
    return out


@dataclass(frozen=True)
class Snap:
    id: str
    created: datetime


@dataclass
class Oracle:
    repo: Path
    times: list[datetime]

    def forget(self, *args: str) -> dict[str, dict[datetime, list[str]]]:
        """restic's keep set per host: {host: {time (UTC): reasons}}."""
        out = json.loads(restic(self.repo, "forget", "--dry-run", "--json", *args))
        result: dict[str, dict[datetime, list[str]]] = {}
        for group in out:
            reasons = {_utc(r["snapshot"]["time"]): list(r["matches"]) for r in group["reasons"]}
            kept = {_utc(s["time"]) for s in group["keep"]}
            assert kept == set(reasons)
            assert len(group["keep"]) + len(group["remove"] or []) == N
            result[group["host"]] = reasons
        return result


def _utc(s: str) -> datetime:
    # Go prints up to nanoseconds; our times are whole seconds.
    return datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(UTC).replace(microsecond=0)


def _kinds(reasons: list[str] | tuple[str, ...]) -> list[str]:
    """'daily snapshot 2024-03-28' -> 'daily snapshot' (restic has no labels)."""
    return [r if r.startswith("within ") else " ".join(r.split()[:2]) for r in reasons]


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Oracle]:
    started = time.monotonic()
    tmp = tmp_path_factory.mktemp("restic")
    times = _timestamps()
    real = [times[0], times[-1]]
    repo, key, template = make_repo(
        tmp, [t.strftime("%Y-%m-%d %H:%M:%S") for t in real], host="utc"
    )
    for t in times:
        if t not in real:
            write_snapshot(repo, key, {**template, "hostname": "utc", "time": _go(t)})
        write_snapshot(
            repo, key, {**template, "hostname": "paris", "time": _go(t.astimezone(PARIS))}
        )
    listed = json.loads(restic(repo, "snapshots", "--json"))
    by_host: dict[str, list[datetime]] = {}
    for s in listed:
        by_host.setdefault(s["hostname"], []).append(_utc(s["time"]))
    assert {h: sorted(v) for h, v in by_host.items()} == {"utc": times, "paris": times}
    yield Oracle(repo, times)
    assert time.monotonic() - started < 60


def _go(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def test_prune_dry_run_keeps_exactly_what_restic_forget_keeps(
    oracle: Oracle, tmp_path: Path
) -> None:
    """The issue's acceptance check, in UTC and in Europe/Paris."""
    args = ["--keep-daily", "7", "--keep-weekly", "4", "--keep-monthly", "6", "--keep-yearly", "2"]
    expected = oracle.forget(*args)
    (tmp_path / "store").mkdir()
    store = LocalBackend(tmp_path / "store")
    for t in oracle.times:
        add_backup(store, "utc/redis", t)
        add_backup(store, "paris/redis", t)
    for host, tz in (("utc", "UTC"), ("paris", "Europe/Paris")):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "backupctl",
                "prune",
                store.url,
                "--target",
                f"{host}/redis",
                "--timezone",
                tz,
                "--dry-run",
                "--json",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        ours = {_utc(r["created"]): _kinds(r["reasons"]) for r in result["keep"]}
        assert len(result["keep"]) + len(result["remove"]) == N
        assert set(ours) == set(expected[host]), host
        assert ours == expected[host], host
        assert len(ours) > 12  # the case is not trivial
    assert len({o.key for o in store.list("")}) == 4 * N, "dry run deleted something"


@pytest.mark.parametrize(
    ("args", "policy"),
    [
        (
            [
                "--keep-last",
                "3",
                "--keep-hourly",
                "30",
                "--keep-weekly",
                "150",
                "--keep-monthly",
                "30",
            ],
            Policy(last=3, hourly=30, weekly=150, monthly=30),
        ),
        (
            # restic 0.14 reads -1 as 0 (it removed everything); a count larger
            # than the number of periods is what -1 means in newer restic.
            ["--keep-within", "100d", "--keep-last", "2", "--keep-yearly", "100"],
            Policy(within=parse_duration("100d"), last=2, yearly=-1),
        ),
        (
            ["--keep-within", "1y2m3d4h", "--keep-daily", "100000"],
            Policy(within=parse_duration("1y2m3d4h"), daily=-1),
        ),
    ],
    ids=["counts-left", "within-unlimited-yearly", "within-calendar-unlimited-daily"],
)
def test_apply_policy_matches_restic_0_14(oracle: Oracle, args: list[str], policy: Policy) -> None:
    expected = oracle.forget(*args)
    snaps = [Snap(t.isoformat(), t) for t in oracle.times]
    for host, tz in (("utc", "UTC"), ("paris", "Europe/Paris")):
        p = dataclasses.replace(policy, tz=tz)
        old = apply_policy(snaps, p, keep_oldest=False)
        ours = {v.item.created: _kinds(v.reasons) for v in old.keep}
        assert ours == expected[host], host

        # Newer restic: the same, plus the oldest backup when a rule has count left.
        new = apply_policy(snaps, p)
        extra = {v.item.created: list(v.reasons) for v in new.keep}
        oldest = oracle.times[0]
        assert set(extra) - set(ours) <= {oldest}
        added = [r for r in extra.get(oldest, []) if r.startswith("oldest ")]
        assert (oldest in extra) == (oldest in ours or bool(added))
