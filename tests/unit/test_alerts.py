"""The alerts of manifests/components/monitoring, checked by Prometheus's own promtool.

- ``promtool check rules`` accepts the PrometheusRule's groups;
- ``promtool test rules`` runs tests/data/alerts/rules_test.yaml: every alert fires on
  synthetic series that should page and stays quiet on those that should not, with its
  labels and rendered summary/description;
- every alert has a unit test, a summary, a description, and a runbook_url naming a
  section of docs/operations.md that exists.

promtool comes from Debian's ``prometheus`` package (scripts/bootstrap.sh installs it);
without it these tests fail, they never skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULE = ROOT / "manifests/components/monitoring/prometheusrule.yaml"
TESTS = ROOT / "tests/data/alerts/rules_test.yaml"
OPERATIONS = ROOT / "docs/operations.md"


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is not installed: run scripts/bootstrap.sh (Debian's prometheus)"
    return path


def groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULE.read_text())["spec"]["groups"]
    return groups


def alerts() -> list[dict[str, Any]]:
    return [r for g in groups() for r in g["rules"] if "alert" in r]


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=120, check=False
    )


def write_rules(folder: Path) -> Path:
    rules = folder / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": groups()}, sort_keys=False))
    return rules


def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    done = run_promtool("check", "rules", str(write_rules(tmp_path)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in groups())} rules found" in done.stdout


def test_every_alert_passes_its_unit_tests(tmp_path: Path) -> None:
    write_rules(tmp_path)
    shutil.copy(TESTS, tmp_path / "rules_test.yaml")
    done = run_promtool("test", "rules", str(tmp_path / "rules_test.yaml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_a_broken_alert_fails_its_unit_tests(tmp_path: Path) -> None:
    """The unit tests can fail: the failing-streak threshold moved by one is caught."""
    rules = write_rules(tmp_path)
    rules.write_text(
        rules.read_text().replace("consecutive_failures >= 3", "consecutive_failures >= 4")
    )
    shutil.copy(TESTS, tmp_path / "rules_test.yaml")
    done = run_promtool("test", "rules", str(tmp_path / "rules_test.yaml"))
    assert done.returncode != 0
    assert "BackupctlBackupFailing" in done.stdout + done.stderr


def test_every_alert_is_tested_and_documented() -> None:
    tested = {
        t["alertname"]
        for test in yaml.safe_load(TESTS.read_text())["tests"]
        for t in test.get("alert_rule_test", [])
        if t.get("exp_alerts")
    }
    names = {a["alert"] for a in alerts()}
    assert names == tested, f"alerts without a firing test: {sorted(names - tested)}"
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in OPERATIONS.read_text().splitlines()
        if line.startswith("#")
    }
    for alert in alerts():
        notes = alert["annotations"]
        assert notes.get("summary") and notes.get("description"), alert["alert"]
        assert alert["labels"]["severity"] in ("critical", "warning"), alert["alert"]
        page, _, anchor = notes["runbook_url"].partition("#")
        assert page == "docs/operations.md" and anchor == alert["alert"].lower()
        assert anchor in headings, f"docs/operations.md has no section {alert['alert']}"
