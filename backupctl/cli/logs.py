"""What a command says on stderr besides its result: notes, warnings,
errors and progress lines, as text or (``--log-format json``) one JSON
object per line, and how much of it (``--quiet``, ``--verbose``).

Why a module of its own: a Kubernetes Job's log and a log pipeline need
every line in one shape with stable field names, whichever command wrote
it; and the three options that choose that shape are declared once here and
read by every command (their values ride on click's context, so the
commands do not pass them around).

Fields of a JSON line: ``time`` (RFC 3339, UTC), ``level`` (``debug``,
``info``, ``progress``, ``note``, ``warning``, ``error``), ``message``;
progress lines add ``event: "progress"``, ``step``, ``bytes``, ``total``, ``rate`` (bytes/s),
``eta`` and ``elapsed`` (seconds); errors add ``code`` and ``exitCode``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from typer._click.globals import get_current_context  # typer 0.29 vendors click

from backupctl.core.timefmt import format_time

__all__ = [
    "LogFormatOpt",
    "LogSettings",
    "QuietOpt",
    "VerboseOpt",
    "log",
    "settings",
]

LEVELS = ("debug", "info", "progress", "note", "warning", "error")
_KEY = "backupctl.logs"


@dataclass
class LogSettings:
    quiet: bool = False  # no progress, no notes (warnings and errors still)
    verbose: bool = False  # progress step lines also on a terminal, and debug lines
    json: bool = False  # one JSON object per line


def settings() -> LogSettings:
    """The running command's settings (defaults outside a command)."""
    ctx = get_current_context(silent=True)
    if ctx is None:
        return LogSettings()
    found = ctx.find_root().meta.setdefault(_KEY, LogSettings())
    assert isinstance(found, LogSettings)
    return found


def _store(field: str) -> Any:
    def callback(ctx: typer.Context, value: Any) -> Any:
        current = ctx.find_root().meta.setdefault(_KEY, LogSettings())
        if field == "json":
            if value not in ("text", "json"):
                raise typer.BadParameter(f"{value!r}: use text or json")
            current.json = value == "json"
        elif value:
            setattr(current, field, True)
        return value

    return callback


QuietOpt = Annotated[
    bool,
    typer.Option("--quiet", "-q", callback=_store("quiet"), help="No progress and no notes."),
]
VerboseOpt = Annotated[
    bool,
    typer.Option(
        "--verbose", "-v", callback=_store("verbose"), help="Also a line per step, and details."
    ),
]
LogFormatOpt = Annotated[
    str,
    typer.Option(
        "--log-format",
        envvar="BACKUPCTL_LOG_FORMAT",
        callback=_store("json"),
        help="text, or json: every stderr line one JSON object (for Jobs and log pipelines).",
    ),
]


def log(level: str, message: str, **fields: Any) -> None:
    """One line on stderr: ``level: message``, or a JSON object."""
    s = settings()
    if s.quiet and level in ("note", "progress", "info", "debug"):
        return
    if level == "debug" and not s.verbose:
        return
    if s.json:
        record = {"time": format_time(datetime.now(UTC)), "level": level, "message": message}
        line = json.dumps({**record, **fields}, ensure_ascii=False)
    else:
        line = message if level == "info" else f"{level}: {message}"
    typer.echo(line, err=True)
    sys.stderr.flush()
