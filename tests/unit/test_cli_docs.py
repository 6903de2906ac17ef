"""docs/cli.md is what scripts/gen_cli_docs.py writes from the typer app: the
reference cannot drift from ``--help``."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gen_cli_docs.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_cli_docs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_cli_md_is_current() -> None:
    rendered = _load().render()
    current = (ROOT / "docs" / "cli.md").read_text()
    assert current == rendered, "docs/cli.md is stale: run python scripts/gen_cli_docs.py"


def test_every_command_and_option_is_documented() -> None:
    import typer

    from backupctl.cli.app import app

    text = (ROOT / "docs" / "cli.md").read_text()
    group = typer.main.get_command(app)
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        assert f"\n## {name}\n" in text
        for p in cmd.params:
            if getattr(p, "hidden", False):
                continue
            for opt in getattr(p, "opts", []):
                if opt.startswith("-") and opt != "--help":
                    assert f"`{opt}`" in text, (name, opt)


def test_check_mode_accepts_the_committed_file() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
