"""Prometheus metrics of both controllers, served at ``/metrics``.

Served by ``backupctl operator --metrics-port N``. docs/operations.md lists
every series with its meaning, and the alerts and dashboard built on them
(``manifests/components/monitoring``).

Per RedisBackup (labels ``namespace``, ``name``), set after every pass of its
daemon from the status it wrote, so each series exists from the moment the
resource does and survives a controller restart (:func:`backup_gauges`,
pure): timestamps are 0 until the first such event. Counters
(``..._total``) count what this process saw, from 0, as Prometheus counters
do; ``backupctl_backup_failures_total`` has a ``reason`` from the fixed set
:data:`FAILURE_REASONS`, every one shown at 0 from the start.

Per RedisRestore: its phase as a state set (one series per phase, 1 for the
current one) and its start time and duration (:func:`restore_gauges`, pure),
set on every change of the resource.

The controller: reconcile errors per controller, and the latency and answers
of its Kubernetes API requests. The leader gauge
``backupctl_controller_leader{shard}`` is defined with the leader election,
not here. A deleted resource's series are removed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from backupctl.controller.metric_series import BackupSeries
from backupctl.controller.metric_values import (
    JOB_FAILED,
    LABELS,
    RESTORE_PHASES,
    restore_gauges,
    status_class,
)


class Metrics:
    """Both controllers' metrics, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.series = BackupSeries()  # every RedisBackup's series, one row each
        r.register(self.series)
        self.restore_phase = Gauge(
            "backupctl_restore_phase",
            "1 for the current phase of a RedisRestore, 0 for the others.",
            (*LABELS, "phase"),
            registry=r,
        )
        self.restore_start = Gauge(
            "backupctl_restore_start_timestamp_seconds",
            "When the RedisRestore started (Unix seconds; 0: not yet).",
            LABELS,
            registry=r,
        )
        self.restore_duration = Gauge(
            "backupctl_restore_duration_seconds",
            "How long the RedisRestore ran (until now while it runs).",
            LABELS,
            registry=r,
        )
        self.reconcile_errors = Counter(
            "backupctl_controller_reconcile_errors",
            "Reconcile passes that failed on the Kubernetes API, by controller.",
            ("controller",),
            registry=r,
        )
        for kind in ("RedisBackup", "RedisRestore"):
            self.reconcile_errors.labels(kind)
        self.api_latency = Histogram(
            "backupctl_controller_api_request_duration_seconds",
            "Latency of the controller's Kubernetes API requests, by verb.",
            ("verb",),
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=r,
        )
        self.api_requests = Counter(
            "backupctl_controller_api_requests",
            "The controller's Kubernetes API requests, by verb and status class.",
            ("verb", "code"),
            registry=r,
        )

    # -- RedisBackup ----------------------------------------------------------------------

    def backup(self, namespace: str, name: str, gauges: Mapping[str, float]) -> None:
        """Set a RedisBackup's gauges (from :func:`backup_gauges`); its counters show
        from the start (every failure reason at 0)."""
        self.series.set_gauges(namespace, name, gauges)

    def failure(self, namespace: str, name: str, reason: str = JOB_FAILED) -> None:
        self.series.failure(namespace, name, reason)

    def job_created(self, namespace: str, name: str) -> None:
        self.series.job_created(namespace, name)

    def forget(self, namespace: str, name: str) -> None:
        """Drop a deleted RedisBackup's series."""
        self.series.forget(namespace, name)

    # -- RedisRestore ---------------------------------------------------------------------

    def restore(self, namespace: str, name: str, status: Mapping[str, Any], now: datetime) -> None:
        """Set a RedisRestore's series from its status."""
        phase, start, duration = restore_gauges(status, now)
        for known in RESTORE_PHASES:
            self.restore_phase.labels(namespace, name, known).set(1.0 if known == phase else 0.0)
        self.restore_start.labels(namespace, name).set(start)
        self.restore_duration.labels(namespace, name).set(duration)

    def forget_restore(self, namespace: str, name: str) -> None:
        for known in RESTORE_PHASES:
            with contextlib.suppress(KeyError):
                self.restore_phase.remove(namespace, name, known)
        for metric in (self.restore_start, self.restore_duration):
            with contextlib.suppress(KeyError):
                metric.remove(namespace, name)

    # -- the controller -------------------------------------------------------------------

    def reconcile_error(self, controller: str) -> None:
        self.reconcile_errors.labels(controller).inc()

    def api_request(self, verb: str, seconds: float, code: int) -> None:
        """One Kubernetes API request: its verb (HTTP method), time and status."""
        self.api_latency.labels(verb).observe(seconds)
        self.api_requests.labels(verb, status_class(code)).inc()


__all__ = ["Metrics"]
