"""The per-RedisBackup series, kept as one row of floats each and rendered on scrape.

Why a module of its own: prometheus_client keeps a child object per label set, with a
lock and a value object each: the 15 gauges, 4 failure counters and the Job counter of
one RedisBackup cost ~12.5 KB, 30 MiB for a shard of 2,500 RedisBackups. A controller
sized for thousands of resources keeps each resource's series as one ``array('d')``
(~0.3 KB) and turns them into metric families only when Prometheus scrapes. The series,
names and help texts are those of :mod:`backupctl.controller.metric_values`; only the
counters' ``_created`` samples are not emitted.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Mapping

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from backupctl.controller.metric_values import BACKUP_GAUGES, FAILURE_REASONS, LABELS

_GAUGES = tuple(BACKUP_GAUGES)
_REASONS = {reason: i for i, reason in enumerate(FAILURE_REASONS)}
_FAILURES = len(_GAUGES)  # the row: gauges, then failures by reason, then Jobs created
_JOBS = _FAILURES + len(FAILURE_REASONS)
_ROW = _JOBS + 1


def _labels(namespace: str, name: str) -> list[str]:
    by_name = {"namespace": namespace, "name": name}
    return [by_name[label] for label in LABELS]


class BackupSeries(Collector):
    """Every RedisBackup's gauges and counters (thread-safe enough for one writer, the
    event loop, and a scraping thread: rows are replaced or updated in place, and a
    scrape reads a snapshot of the row list)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], array[float]] = {}
        #: failures with a reason outside FAILURE_REASONS: (namespace, name, reason) -> count
        self.other_failures: dict[tuple[str, str, str], float] = {}

    def _row(self, namespace: str, name: str) -> array[float]:
        row = self.rows.get((namespace, name))
        if row is None:
            row = self.rows[(namespace, name)] = array("d", bytes(8 * _ROW))
        return row

    def set_gauges(self, namespace: str, name: str, gauges: Mapping[str, float]) -> None:
        row = self._row(namespace, name)
        for i, key in enumerate(_GAUGES):
            if key in gauges:
                row[i] = float(gauges[key])

    def failure(self, namespace: str, name: str, reason: str) -> None:
        index = _REASONS.get(reason)
        if index is None:
            key = (namespace, name, reason)
            self.other_failures[key] = self.other_failures.get(key, 0.0) + 1
        else:
            self._row(namespace, name)[_FAILURES + index] += 1

    def job_created(self, namespace: str, name: str) -> None:
        self._row(namespace, name)[_JOBS] += 1

    def forget(self, namespace: str, name: str) -> None:
        self.rows.pop((namespace, name), None)
        for key in [k for k in self.other_failures if k[:2] == (namespace, name)]:
            del self.other_failures[key]

    def collect(self) -> Iterator[Metric]:
        rows = list(self.rows.items())
        for i, key in enumerate(_GAUGES):
            gauge = GaugeMetricFamily(f"backupctl_{key}", BACKUP_GAUGES[key], labels=LABELS)
            for (namespace, name), row in rows:
                gauge.add_metric(_labels(namespace, name), row[i])
            yield gauge
        failures = CounterMetricFamily(
            "backupctl_backup_failures",
            "Failed backup runs, by reason.",
            labels=(*LABELS, "reason"),
        )
        for (namespace, name), row in rows:
            for reason, index in _REASONS.items():
                failures.add_metric([*_labels(namespace, name), reason], row[_FAILURES + index])
        for (namespace, name, reason), count in list(self.other_failures.items()):
            failures.add_metric([*_labels(namespace, name), reason], count)
        yield failures
        jobs = CounterMetricFamily(
            "backupctl_backup_jobs_created", "Backup Jobs created.", labels=LABELS
        )
        for (namespace, name), row in rows:
            jobs.add_metric(_labels(namespace, name), row[_JOBS])
        yield jobs

    def describe(self) -> Iterator[Metric]:
        return iter(())  # registered without describing: collect() on every scrape


__all__ = ["BackupSeries"]
