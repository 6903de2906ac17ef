"""The controller's metrics: the values (pure, table tests) and what /metrics shows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import generate_latest

from backupctl.controller.metric_values import (
    BACKUP_GAUGES,
    FAILURE_REASONS,
    backup_gauges,
    consecutive_failures,
    failure_reason,
    restore_gauges,
    schedule_interval,
    status_class,
)
from backupctl.controller.metrics import Metrics

CREATED = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 1, 7, 12, 0, tzinfo=UTC)


def test_a_new_backup_has_every_gauge_with_zero_timestamps() -> None:
    gauges = backup_gauges({}, created=CREATED, interval=3600.0, suspended=False)
    assert set(gauges) == set(BACKUP_GAUGES)
    assert gauges["backup_last_success_timestamp_seconds"] == 0.0
    assert gauges["backup_last_attempt_timestamp_seconds"] == 0.0
    assert gauges["backup_created_timestamp_seconds"] == CREATED.timestamp()
    assert gauges["backup_schedule_interval_seconds"] == 3600.0


def test_gauges_follow_the_status() -> None:
    status: dict[str, Any] = {
        "lastScheduleTime": "2026-01-07T11:00:00Z",
        "nextScheduleTime": "2026-01-07T13:00:00Z",
        "lastSuccessfulBackup": {
            "time": "2026-01-07T10:00:05Z",
            "durationSeconds": 4.5,
            "size": 1234,
            "keys": 56,
        },
        "lastRetention": {"time": "2026-01-07T10:01:00Z", "message": "failed: bucket gone"},
        "history": [
            {"slot": "2026-01-07T11:00:00Z", "phase": "Failed"},
            {"slot": "2026-01-07T10:00:00Z", "phase": "Succeeded"},
        ],
    }
    gauges = backup_gauges(status, created=CREATED, interval=3600.0, suspended=False)
    assert (
        gauges["backup_last_success_timestamp_seconds"]
        == datetime(2026, 1, 7, 10, 0, 5, tzinfo=UTC).timestamp()
    )
    assert (
        gauges["backup_last_attempt_timestamp_seconds"]
        == datetime(2026, 1, 7, 11, tzinfo=UTC).timestamp()
    )
    assert (
        gauges["backup_next_run_timestamp_seconds"]
        == datetime(2026, 1, 7, 13, tzinfo=UTC).timestamp()
    )
    assert (gauges["backup_last_size_bytes"], gauges["backup_last_keys"]) == (1234.0, 56.0)
    assert gauges["backup_last_duration_seconds"] == 4.5
    assert gauges["backup_consecutive_failures"] == 1.0
    assert gauges["retention_last_run_failed"] == 1.0
    suspended = backup_gauges(status, created=CREATED, interval=3600.0, suspended=True)
    assert suspended["backup_suspended"] == 1.0
    assert suspended["backup_next_run_timestamp_seconds"] == 0.0


@pytest.mark.parametrize(
    ("phases", "expected"),
    [
        ([], 0),
        (["Succeeded"], 0),
        (["Failed", "Failed", "Succeeded", "Failed"], 2),
        (["Running", "Failed", "Failed", "Failed"], 3),
    ],
)
def test_consecutive_failures_count_back_to_the_last_success(
    phases: list[str], expected: int
) -> None:
    # newest first: slots descend
    history = [{"slot": f"2026-01-0{9 - i}T00:00:00Z", "phase": p} for i, p in enumerate(phases)]
    assert consecutive_failures(list(reversed(history))) == expected


@pytest.mark.parametrize(
    ("cron", "seconds"),
    [
        (None, 0.0),
        ("*/5 * * * *", 300.0),
        ("0 2 * * *", 86400.0),
        ("0 2 * * 1-5", 3 * 86400.0),  # over the weekend
    ],
)
def test_schedule_interval_is_the_longest_gap(cron: str | None, seconds: float) -> None:
    assert schedule_interval(cron, "UTC", NOW) == seconds


def test_restore_gauges() -> None:
    assert restore_gauges({}, NOW) == ("Pending", 0.0, 0.0)
    running = {"phase": "Staging", "startTime": "2026-01-07T11:59:00Z"}
    assert restore_gauges(running, NOW)[2] == 60.0
    done = {**running, "phase": "Failed", "completionTime": "2026-01-07T11:59:30Z"}
    assert restore_gauges(done, NOW)[0::2] == ("Failed", 30.0)


def test_failure_reasons_and_status_classes() -> None:
    assert failure_reason("", lost=True, not_starting=False) == "JobLost"
    assert failure_reason("DeadlineExceeded: ran too long", lost=False, not_starting=False) == (
        "DeadlineExceeded"
    )
    assert failure_reason("exit 1", lost=False, not_starting=False) == "JobFailed"
    assert (status_class(200), status_class(404), status_class(0)) == ("2xx", "4xx", "error")


def test_exposition_has_every_series_from_the_start_and_forgets_deleted_ones() -> None:
    metrics = Metrics()
    gauges = backup_gauges({}, created=CREATED, interval=60.0, suspended=False)
    metrics.backup("ns", "nightly", gauges)
    metrics.failure("ns", "nightly", "JobLost")
    metrics.restore("ns", "r1", {"phase": "Failed"}, NOW)
    metrics.api_request("GET", 0.02, 200)
    text = generate_latest(metrics.registry).decode()
    labels = 'name="nightly",namespace="ns"'
    assert f"backupctl_backup_last_success_timestamp_seconds{{{labels}}} 0.0" in text
    for reason in FAILURE_REASONS:
        value = "1.0" if reason == "JobLost" else "0.0"
        assert f'backupctl_backup_failures_total{{{labels},reason="{reason}"}} {value}' in text
    assert 'backupctl_restore_phase{name="r1",namespace="ns",phase="Failed"} 1.0' in text
    assert 'backupctl_restore_phase{name="r1",namespace="ns",phase="Completed"} 0.0' in text
    assert 'backupctl_controller_api_requests_total{code="2xx",verb="GET"} 1.0' in text
    assert 'backupctl_controller_reconcile_errors_total{controller="RedisBackup"} 0.0' in text
    metrics.forget("ns", "nightly")
    metrics.forget_restore("ns", "r1")
    text = generate_latest(metrics.registry).decode()
    assert 'name="nightly"' not in text and 'name="r1"' not in text
