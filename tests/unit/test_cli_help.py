"""Discoverability (issue 17): ``--version`` and ``-h``, shell completion,
help with examples, options in panels, metavars that say what a value is.

Before this change there was no ``--version`` or ``-h``, completion was
off, and help showed ``<str>``, ``<bool>`` and ``<list[str]>`` with
restore's 22 options in one panel."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from backupctl import __version__
from backupctl.cli.app import app

COMMANDS = ["run", "list", "verify", "restore", "check-redis", "quiesce-redis", "prune"]


def app_commands() -> list[str]:
    return [c.name or "" for c in app.registered_commands if not c.hidden]


def _help(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "-h"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_version_flag_prints_the_version_and_the_supported_servers() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith(f"backupctl {__version__} (supports Redis 7.0 to 8.x")


def test_no_arguments_prints_help_and_exits_0() -> None:
    result = CliRunner().invoke(app, [])
    assert result.exit_code == 0 and "Usage: backupctl" in result.stdout


def test_top_level_help_has_examples_exit_codes_and_completion() -> None:
    text = " ".join(_help().split())
    assert "backupctl run --redis redis://127.0.0.1:6379 --to s3://bucket/backups" in text
    assert "2 usage" in text and "130/143 interrupted" in text
    assert "--install-completion" in text


@pytest.mark.parametrize("command", [[]] + [[c] for c in sorted(app_commands())])
def test_help_shows_metavars_not_python_types(command: list[str]) -> None:
    """Arguments, options, click's own --help and the root's completion flags."""
    text = _help(*command)
    for line in text.splitlines():
        assert not re.search(r"<(str|bool|int|float|path|list\[str\])>", line), line
    assert "-h" in text


def test_restore_groups_its_options_by_destination() -> None:
    text = _help("restore")
    for panel in ("Destination (pick one)", "With --to-dir", "With --to-redis", "With --to-cluster",
                  "Store", "Output"):  # fmt: skip
        assert f"─ {panel} ─" in text, panel
    destination = text[text.index("Destination (pick one)") :]
    destination = destination[: destination.index("╰")]
    assert "--to-dir" in destination and "--flush" not in destination
    assert re.search(r"--to-redis\s+URL", text) and re.search(r"--to-dir\s+PATH", text)


def test_run_shows_urls_seconds_and_levels() -> None:
    text = _help("run")
    assert re.search(r"--to\s+URL", text) and re.search(r"--timeout\s+SECONDS", text)
    assert "zstd 1-22" in text
    assert re.search(r"--quiet\s+-q", text) and "--log-format" in text
