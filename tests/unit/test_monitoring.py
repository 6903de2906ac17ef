"""manifests/components/monitoring: it builds, validates, scrapes the controller, and
every query in it parses and uses only metrics the controller serves.

- ``kubectl kustomize`` builds it; the ConfigMap validates against Kubernetes
  1.29-1.32 (kubernetes-validate), the ServiceMonitor and PrometheusRule against the
  Prometheus Operator's CRD schemas vendored in tests/data/prometheus-operator
  (unknown fields refused);
- the ServiceMonitor selects the install's metrics Service and port, in its namespace;
- every PromQL expression of the Grafana dashboard parses (wrapped as recording rules,
  checked by ``promtool check rules``), and every metric it or an alert names is one
  the controller's registry serves (the leader gauge comes from the leader election).
  tests/controller/test_operating_e2e.py checks the same names against a running
  controller's /metrics.
"""

from __future__ import annotations

import json
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from unit.test_alerts import promtool
from unit.test_kustomize import K8S_VERSIONS, _to_json_schema, build, kubectl

from backupctl.controller.metric_values import backup_gauges
from backupctl.controller.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
COMPONENT = ROOT / "manifests/components/monitoring"
CRDS = ROOT / "tests/data/prometheus-operator"
#: Metrics that other modules define (controller/leader*.py) or Prometheus itself makes.
OTHERS = {"backupctl_controller_leader", "up"}
#: PromQL words that look like metric names but are not.
PROMQL_WORDS = {
    "sum", "by", "count", "or", "and", "unless", "on", "time", "vector", "rate", "increase",
    "histogram_quantile", "max_over_time", "absent", "le", "max", "min", "ignoring",
}  # fmt: skip


def component() -> list[dict[str, Any]]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(COMPONENT)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def crd_schema(kind: str) -> dict[str, Any]:
    for path in sorted(CRDS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["spec"]["names"]["kind"] == kind:
                schema: dict[str, Any] = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
                return schema
    raise AssertionError(f"no vendored CRD for {kind} in {CRDS}")


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_component_builds_and_every_object_validates(version: str) -> None:
    docs = component()
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "PrometheusRule", "ServiceMonitor"]
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            schema = _to_json_schema(crd_schema(doc["kind"]))
            errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]
            assert errors == [], f"{doc['kind']}: {errors}"
        else:
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_vendored_schema_refuses_unknown_fields() -> None:
    monitor = next(d for d in component() if d["kind"] == "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    schema = _to_json_schema(crd_schema("ServiceMonitor"))
    assert list(jsonschema.Draft7Validator(schema).iter_errors(monitor))


def test_service_monitor_scrapes_the_controllers_metrics_service() -> None:
    monitor = next(d for d in component() if d["kind"] == "ServiceMonitor")
    (service,) = [d for d in build("cluster-wide") if d["kind"] == "Service"]
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["metadata"]["namespace"] in monitor["spec"]["namespaceSelector"]["matchNames"]
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports
    # The alert on a controller that is down looks for the job Prometheus gives it.
    rule = next(d for d in component() if d["kind"] == "PrometheusRule")
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert any(f'job="{service["metadata"]["name"]}"' in e for e in exprs)


def dashboard() -> dict[str, Any]:
    docs = component()
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = config_map["data"].values()
    board: dict[str, Any] = json.loads(text)
    return board


def dashboard_exprs() -> list[str]:
    board = dashboard()
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    for var in board["templating"]["list"]:
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        match = re.fullmatch(r"label_values\((.*),\s*\w+\)", query or "")
        if match:
            exprs.append(match.group(1))
    return exprs


def grafana_to_promql(expr: str) -> str:
    """Grafana's variables replaced by values they take."""
    for var, value in (
        ("$__rate_interval", "5m"),
        ("$__interval", "1m"),
        ("$__range", "1d"),
        ("$namespace", ".*"),
        ("$name", ".*"),
    ):
        expr = expr.replace(var, value)
    assert "$" not in expr, f"an unknown Grafana variable in {expr}"
    return expr


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 15
    rules = [
        {"record": f"backupctl:dashboard_query_{i}", "expr": grafana_to_promql(e)}
        for i, e in enumerate(exprs)
    ]
    path = tmp_path / "dashboard_rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [promtool(), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label matchers and strings removed)."""
    expr = re.sub(r'"[^"]*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"(by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    words = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", expr))
    return {w for w in words if w not in PROMQL_WORDS and not re.fullmatch(r"\d.*|e", w)}


def used_metric_names() -> set[str]:
    rule = next(d for d in component() if d["kind"] == "PrometheusRule")
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    exprs += [grafana_to_promql(e) for e in dashboard_exprs()]
    return {n for e in exprs for n in metric_names(e)}


def served_names(metrics: Metrics) -> set[str]:
    return {s.name for family in metrics.registry.collect() for s in family.samples}


def populated() -> Metrics:
    """The registry after one RedisBackup, one RedisRestore and one API request."""
    metrics = Metrics()
    now = datetime(2030, 1, 1, tzinfo=UTC)
    metrics.backup("ns", "b", backup_gauges({}, created=now, interval=60.0, suspended=False))
    metrics.restore("ns", "r", {"phase": "Pending"}, now)
    metrics.api_request("GET", 0.01, 200)
    return metrics


def test_every_metric_used_is_served() -> None:
    used = used_metric_names()
    assert "backupctl_backup_last_success_timestamp_seconds" in used
    assert "le" not in used and "shard" not in used
    missing = used - served_names(populated()) - OTHERS
    assert missing == set(), f"rules or dashboard use metrics nobody serves: {sorted(missing)}"
