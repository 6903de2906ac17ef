"""The exit-code table (docs/cli-output.md) as scripts see it (issue 17):
each kind of failure has its own code, usage errors are one ``error:``
line, and under ``--json`` a failure also prints ``{"ok": false, "error":
{...}}`` on stdout.

Before this change every runtime failure exited 1, Ctrl-C too, and click's
usage errors printed a multi-line box."""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from backupctl.cli.app import app
from backupctl.cli.exit_codes import ExitCode, classify
from backupctl.cli.output import user_errors
from backupctl.cli.signals import Terminated
from backupctl.ops.restore_dir import RestoreError
from backupctl.redis.errors import RedisNodeError
from backupctl.redis.live import LiveError
from backupctl.redis.load import LoadError
from backupctl.store.archive import ArchiveError
from backupctl.store.backends.base import AccessDenied, NotFound, StorageError, StoreURLError
from backupctl.store.backends.local import LocalBackend
from backupctl.store.catalog import BackupNotFound, CatalogError, InvalidReference
from backupctl.store.retention import PolicyError

from support.fake_backups import add_backup

T0 = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (StoreURLError("store URL 's4://b' ..."), ExitCode.USAGE),
        (PolicyError("unknown unit"), ExitCode.USAGE),
        (InvalidReference("'x' is not a backup id"), ExitCode.USAGE),
        (RedisNodeError("invalid Redis URL", reason="input"), ExitCode.USAGE),
        (RedisNodeError("rejected the password", reason="auth"), ExitCode.REDIS),
        (RedisNodeError("connection refused — is the server up?", reason="unreachable"), 3),
        (RedisNodeError("the RDB is corrupt", reason="rdb"), ExitCode.INTEGRITY),
        (AccessDenied("no credentials"), ExitCode.STORE),
        (StorageError("timed out", transient=True), ExitCode.STORE),
        (NotFound("bucket b does not exist"), ExitCode.NOT_FOUND),
        (BackupNotFound("backup 'x' not found"), ExitCode.NOT_FOUND),
        (ArchiveError("sha256 mismatch"), ExitCode.INTEGRITY),
        (CatalogError("manifest is not valid JSON"), ExitCode.INTEGRITY),
        (LiveError("r holds 5 keys, the backup holds 6"), ExitCode.INTEGRITY),
        (LiveError("r: CONFIG SET save failed: x"), ExitCode.REDIS),
        (RestoreError("d is the working directory of pid 1: ... pass --force"), ExitCode.UNSAFE),
        (RestoreError("refused, nothing was touched: RDB 12"), ExitCode.UNSAFE),
        (LoadError("r already holds 3 keys: pass --flush to replace them"), ExitCode.UNSAFE),
        (RestoreError("verification failed: x"), ExitCode.INTEGRITY),
        (RestoreError("cannot stage: disk full"), ExitCode.ERROR),
        (ValueError("a bug"), ExitCode.ERROR),
    ],
)
def test_each_failure_has_its_exit_code(error: Exception, code: int) -> None:
    assert classify(error) == code


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_by_a_signal_exits_128_plus_its_number(sig: signal.Signals, code: int) -> None:
    with pytest.raises(typer.Exit) as done, user_errors():
        raise Terminated(sig)
    assert done.value.exit_code == code


def _run(*args: str) -> tuple[int, str, list[str]]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr.strip().splitlines()


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--nosuch"],
        ["run", "--to", "x", "--level"],
        ["list"],
        ["verify", "/tmp", "latest", "extra"],
        ["prune", "/tmp", "--keep-daily", "many"],
        ["nosuch-command"],
    ],
)
def test_click_usage_errors_are_one_error_line_and_exit_2(args: list[str]) -> None:
    code, _, lines = _run(*args)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "╭" not in lines[0] and "Usage:" not in lines[0]


def test_a_usage_error_names_the_help_to_read() -> None:
    _, _, (line,) = _run("run", "--nosuch")
    assert line == "error: No such option: --nosuch (see 'backupctl run --help')"


def test_under_json_a_failure_prints_the_error_as_json_on_stdout_too(tmp_path: Path) -> None:
    code, out, lines = _run("verify", str(tmp_path), "backup-20240101-000000", "--json")
    assert code == 5
    assert json.loads(out) == {
        "ok": False,
        "error": {"code": "not_found", "exitCode": 5, "message": lines[0].removeprefix("error: ")},
    }
    code, out, _ = _run("run", "--to", str(tmp_path), "--method", "rsync", "--json")
    assert code == 2 and json.loads(out)["error"]["code"] == "usage"
    code, out, _ = _run("run", "--to", str(tmp_path), "--nosuch", "--json")
    assert code == 2 and json.loads(out)["error"]["code"] == "usage"


def test_not_found_integrity_and_store_codes_from_a_real_store(tmp_path: Path) -> None:
    store = LocalBackend(str(tmp_path))
    bid = add_backup(store, "r", T0)  # its archive is not zstd: verify finds it corrupt
    assert _run("verify", str(tmp_path), "backup-20000101-000000")[0] == 5
    assert _run("verify", str(tmp_path / "missing"), "latest")[0] == 5
    code, _, lines = _run("verify", str(tmp_path), bid)
    assert code == 6 and lines[-1].startswith("error: "), lines
    assert _run("list", "file:relative")[0] == 2


def test_list_of_a_malformed_target_is_a_usage_error_not_no_backups(tmp_path: Path) -> None:
    add_backup(LocalBackend(str(tmp_path)), "r", T0)
    code, out, lines = _run("list", str(tmp_path), "--target", "a b")
    assert code == 2 and out == ""
    assert lines == [
        "error: target 'a b' is not valid: use letters, digits, '.', '_', '-' and '/' between "
        "parts, e.g. 'redis/redis-cluster'"
    ]
