"""Prometheus metrics of the RedisBackup controller, per RedisBackup.

Served by ``backupctl operator --metrics-port N`` at ``/metrics``:

``backupctl_backup_last_success_timestamp_seconds{namespace,name}``
    when the last successful backup was taken (Unix time);
``backupctl_backup_last_duration_seconds{namespace,name}``
    how long its Job ran;
``backupctl_backup_last_size_bytes{namespace,name}``
    its archive size in the store;
``backupctl_backup_last_keys{namespace,name}``
    its key count;
``backupctl_backup_failures_total{namespace,name}``
    failed backup runs seen by this controller process;
``backupctl_backup_jobs_created_total{namespace,name}``
    backup Jobs this process created.

The "last" gauges are set from ``status.lastSuccessfulBackup`` when the
controller starts, so they survive restarts; counters start at 0, as
Prometheus counters do. A deleted RedisBackup's series are removed.
"""

from __future__ import annotations

import contextlib
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

LABELS = ("namespace", "name")


class Metrics:
    """The controller's metrics in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.last_success = Gauge(
            "backupctl_backup_last_success_timestamp_seconds",
            "Time of the last successful backup (Unix seconds).",
            LABELS,
            registry=r,
        )
        self.last_duration = Gauge(
            "backupctl_backup_last_duration_seconds",
            "How long the Job of the last successful backup ran.",
            LABELS,
            registry=r,
        )
        self.last_size = Gauge(
            "backupctl_backup_last_size_bytes",
            "Archive size of the last successful backup.",
            LABELS,
            registry=r,
        )
        self.last_keys = Gauge(
            "backupctl_backup_last_keys", "Keys in the last successful backup.", LABELS, registry=r
        )
        self.failures = Counter(
            "backupctl_backup_failures", "Failed backup runs.", LABELS, registry=r
        )
        self.jobs_created = Counter(
            "backupctl_backup_jobs_created", "Backup Jobs created.", LABELS, registry=r
        )

    def success(
        self,
        namespace: str,
        name: str,
        *,
        time: datetime | None,
        duration: float | None = None,
        size: int | None = None,
        keys: int | None = None,
    ) -> None:
        """Record a successful backup (also used to restore gauges on start)."""
        if time is not None:
            self.last_success.labels(namespace, name).set(time.timestamp())
        if duration is not None:
            self.last_duration.labels(namespace, name).set(duration)
        if size is not None:
            self.last_size.labels(namespace, name).set(size)
        if keys is not None:
            self.last_keys.labels(namespace, name).set(keys)
        self.failures.labels(namespace, name)  # show the series at 0

    def failure(self, namespace: str, name: str) -> None:
        self.failures.labels(namespace, name).inc()

    def job_created(self, namespace: str, name: str) -> None:
        self.jobs_created.labels(namespace, name).inc()

    def forget(self, namespace: str, name: str) -> None:
        """Drop a deleted RedisBackup's series."""
        for metric in (
            self.last_success,
            self.last_duration,
            self.last_size,
            self.last_keys,
            self.failures,
            self.jobs_created,
        ):
            with contextlib.suppress(KeyError):
                metric.remove(namespace, name)

    def serve(self, port: int, address: str = "0.0.0.0") -> None:
        """Serve ``/metrics`` over HTTP from a daemon thread."""
        start_http_server(port, addr=address, registry=self.registry)


__all__ = ["Metrics"]
