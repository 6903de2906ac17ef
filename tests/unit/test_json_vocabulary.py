"""One JSON vocabulary across commands (issue 17, docs/cli-output.md): the
real ``--json`` output of each command validates against its JSON Schema in
``docs/schemas/``, ``ok`` is always there, nodes are always objects, and the
same fact has the same name everywhere (``created``, ``size``, camelCase).

Before this change ``list --json`` was a bare array of entries whose nodes
were strings, ``prune`` said ``dry_run``, and ``verify`` said ``bytes``.
(``run``, ``verify`` of a real archive and ``check-redis`` are checked
against their schemas in tests/datapath/test_cli_findings.py.)"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from typer.testing import CliRunner

from backupctl.cli.app import app
from backupctl.store.backends.local import LocalBackend

from support.fake_backups import add_backup

SCHEMAS = Path(__file__).parents[2] / "docs" / "schemas"
T0 = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)


def schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / f"{name}.json").read_text())
    jsonschema.Draft202012Validator.check_schema(loaded)
    return loaded


def json_of(*args: str, code: int = 0) -> Any:
    result = CliRunner().invoke(app, [*args, "--json"] if args[0] != "--version" else [*args])
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


@pytest.fixture
def store(tmp_path: Path) -> str:
    backend = LocalBackend(str(tmp_path))
    for day in range(3):
        add_backup(backend, "ns/redis", T0 - timedelta(days=day), nodes=("redis-0", "redis-1"))
    add_backup(backend, "ns/redis", T0 + timedelta(hours=1), complete=False)
    return str(tmp_path)


def test_list_is_an_object_with_ok_and_backups_whose_nodes_are_objects(store: str) -> None:
    out = json_of("list", store, "--all")
    jsonschema.validate(out, schema("list"))
    assert out["ok"] is True and len(out["backups"]) == 4
    first_complete = next(b for b in out["backups"] if b["complete"])
    assert [n["name"] for n in first_complete["nodes"]] == ["redis-0", "redis-1"]


def test_prune_speaks_camel_case_and_says_what_it_frees(tmp_path: Path) -> None:
    for day in range(3):
        add_backup(LocalBackend(str(tmp_path)), "r", T0 - timedelta(days=day))
    out = json_of("prune", str(tmp_path), "--keep-last", "1", "--dry-run")
    jsonschema.validate(out, schema("prune"))
    assert out["dryRun"] is True and len(out["remove"]) == 2
    assert out["freed"] > 0


def test_restore_dry_run_names_the_time_created_like_list(store: str) -> None:
    out = json_of("restore", store, "latest", "--dry-run")
    jsonschema.validate(out, schema("restore-dry-run"))
    listed = json_of("list", store)["backups"][0]
    assert (out["id"], out["created"], out["size"]) == (
        listed["id"], listed["created"], listed["size"],
    )  # fmt: skip


def test_version_json_lists_the_supported_servers() -> None:
    out = json_of("--version", "--json")
    jsonschema.validate(out, schema("version"))
    assert {s["flavour"] for s in out["supported"]} == {"redis", "valkey"}
    assert json_of("version")["version"] == out["version"]


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["verify", "{store}", "backup-20000101-000000"], 5),
        (["list", "s4://bucket"], 2),
        (["restore", "{store}", "latest", "--to-dir", "d", "--flush"], 2),
        (["run", "--to", "{store}", "--level", "99"], 2),
    ],
)
def test_every_failure_under_json_matches_the_error_schema(
    store: str, args: list[str], code: int
) -> None:
    out = json_of(*(a.replace("{store}", store) for a in args), code=code)
    jsonschema.validate(out, schema("error"))
    assert out["error"]["exitCode"] == code


def test_the_same_fact_has_one_name_in_every_schema() -> None:
    """No schema uses a name the vocabulary replaced."""
    replaced = {"time", "bytes", "dry_run", "aborted_uploads", "skipped_targets", "upload_id"}
    for path in SCHEMAS.glob("*.json"):
        names = set(re.findall(r'"([A-Za-z_]+)":', path.read_text()))
        assert not names & replaced, (path.name, names & replaced)
        assert "ok" in json.loads(path.read_text())["required"], path.name
