"""How every command ends, in one place: its result (text on stdout, or JSON
with ``--json``, and the termination log), or one ``error: ...`` line on
stderr with the exit code of :mod:`backupctl.cli.exit_codes` (and ``{"ok":
false, "error": ...}`` in the termination log, and on stdout under
``--json``). Also progress (:mod:`backupctl.cli.progress`) and the small
formatting helpers the commands share.

Errors a user can cause are :data:`USER_ERRORS`; anything else is our bug and
is reported in one line too, unless ``BACKUPCTL_DEBUG`` is set (then the
traceback). Click's own usage errors are handled by
:class:`backupctl.cli.app.BackupctlGroup` (exit 2) before any of this runs.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import typer
from typer._click.globals import get_current_context  # typer 0.29 vendors click

from backupctl.cli.exit_codes import ExitCode, classify
from backupctl.cli.exit_codes import interrupted as interrupted_code
from backupctl.cli.logs import log
from backupctl.cli.progress import progress
from backupctl.cli.signals import Terminated, unwinding_signals
from backupctl.cli.termination import termination_message
from backupctl.ops.backup_options import BackupError
from backupctl.ops.restore_dir import RestoreError
from backupctl.ops.scratch import TempDirError
from backupctl.redis.errors import RedisNodeError
from backupctl.redis.live import LiveError
from backupctl.store.archive import ArchiveError, Progress
from backupctl.store.backends.base import StorageError
from backupctl.store.backup_set import ShardSetError
from backupctl.store.catalog import BackupEntry, CatalogError, Manifest
from backupctl.store.prune import PruneError
from backupctl.store.retention import PolicyError

#: Exceptions that are a user's problem to fix; anything else is our bug.
USER_ERRORS: tuple[type[BaseException], ...] = (
    StorageError,
    RedisNodeError,
    LiveError,
    CatalogError,
    ArchiveError,
    BackupError,
    RestoreError,
    ShardSetError,
    PolicyError,
    PruneError,
    TempDirError,
)


class CommandResult(ABC):
    """What a command reports: JSON for ``--json``, the termination message,
    and text for people."""

    @abstractmethod
    def to_json(self) -> Any:
        """What ``--json`` prints."""

    def termination_json(self) -> dict[str, Any]:
        """What the termination log holds (by default ``ok`` and :meth:`to_json`)."""
        return {"ok": True, **self.to_json()}

    def termination_fallbacks(self) -> tuple[dict[str, Any], ...]:
        """Smaller variants of :meth:`termination_json`, tried in order when it
        is too big (see :mod:`backupctl.cli.termination`)."""
        return ()

    @abstractmethod
    def print_text(self) -> None:
        """Print the result for a person."""


def report(result: CommandResult, *, as_json: bool, termination_log: Path | None) -> None:
    """The success path of every command."""
    if termination_log is not None:
        write_termination_log(
            termination_log, result.termination_json(), *result.termination_fallbacks()
        )
    if as_json:
        print_json(result.to_json())
    else:
        result.print_text()


def fail(
    message: str, *, code: ExitCode = ExitCode.ERROR, termination_log: Path | None = None
) -> NoReturn:
    """The failure path of every command: one ``error:`` line on stderr, the
    exit code of :mod:`backupctl.cli.exit_codes` (a command's own checks of
    its flags pass ``ExitCode.USAGE``), and under ``--json``
    ``{"ok": false, "error": {"code", "exitCode", "message"}}`` on stdout."""
    message = " ".join(message.split())  # always one line
    if termination_log is not None:
        write_termination_log(termination_log, {"ok": False, "error": message})
    if _wants_json():
        print_json(error_json(message, code))
    log("error", message, code=code.word, exitCode=int(code))
    raise typer.Exit(int(code))


def error_json(message: str, code: ExitCode) -> dict[str, Any]:
    """What ``--json`` prints on stdout when a command fails."""
    return {"ok": False, "error": {"code": code.word, "exitCode": int(code), "message": message}}


def _wants_json() -> bool:
    """``--json`` was given to the running command (every command names it ``as_json``)."""
    ctx = get_current_context(silent=True)
    return bool(ctx is not None and ctx.params.get("as_json"))


@contextmanager
def user_errors(
    termination_log: Path | None = None, *, interrupted: str = "interrupted"
) -> Iterator[None]:
    """Turn known errors into one line and their exit code (and bugs into one
    line too, exit 1, unless BACKUPCTL_DEBUG is set). SIGTERM and SIGINT
    unwind the block, so its cleanup runs
    (:func:`~backupctl.cli.signals.unwinding_signals`), and end in
    ``interrupted`` (the message; "interrupted by SIGTERM" ...) with exit
    code 143 or 130."""
    try:
        with unwinding_signals():
            yield
    except typer.Exit:
        raise
    except USER_ERRORS as e:
        fail(str(e), code=classify(e), termination_log=termination_log)
    except KeyboardInterrupt as e:
        signal_name = "SIGINT"
        if isinstance(e, Terminated):  # "interrupted by SIGTERM (run prune again ...)"
            interrupted = interrupted.replace("interrupted", str(e), 1)
            signal_name = e.signal_name
        fail(interrupted, code=interrupted_code(signal_name), termination_log=termination_log)
    except Exception as e:
        if os.environ.get("BACKUPCTL_DEBUG"):
            raise
        fail(
            f"unexpected {type(e).__name__}: {e} (this is a bug; rerun with BACKUPCTL_DEBUG=1 "
            "and report the traceback)",
            code=ExitCode.ERROR,
            termination_log=termination_log,
        )


def write_termination_log(path: Path, data: dict[str, Any], *smaller: dict[str, Any]) -> None:
    """The termination message (fitted into 4096 bytes) to ``path``; a
    warning on stderr when it cannot be written."""
    try:
        path.write_bytes(termination_message(data, *smaller))
    except OSError as e:
        typer.echo(f"warning: cannot write termination log {path}: {e}", err=True)


def note(message: str) -> None:
    """A ``note: ...`` line on stderr (something the user should know, not an
    error; none with ``--quiet``)."""
    log("note", message)


def warning(message: str) -> None:
    """A ``warning: ...`` line on stderr."""
    log("warning", message)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


def print_table(headers: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    """Left-aligned columns, two spaces apart."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for line in (headers, *rows):
        typer.echo("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def human(n: float) -> str:
    """A byte count for people: 512 B, 1.5 KiB, 3.2 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def plural(n: int, word: str) -> str:
    """``1 file``, ``2 files``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def backup_json(m: Manifest) -> dict[str, Any]:
    """A backup in a few fields, in the JSON vocabulary (docs/cli-output.md)."""
    return {
        "id": m.id,
        "target": m.target,
        "created": m.created,
        "size": m.size,
        "keys": m.keys,
        "sha256": m.nodes[0].archive.sha256 if len(m.nodes) == 1 else None,
    }


def backup_summary(m: Manifest) -> dict[str, Any]:
    """``run``'s termination message: the controller reads ``time`` (its
    contract predates the vocabulary of ``--json``; keep it)."""
    return {
        "id": m.id,
        "target": m.target,
        "time": m.created,
        "size": m.size,
        "keys": m.keys,
        "sha256": m.nodes[0].archive.sha256 if len(m.nodes) == 1 else None,
    }


@contextmanager
def progress_bar(
    description: str, enabled: bool
) -> Iterator[tuple[Progress | None, Callable[[int], None] | None]]:
    """Progress on stderr (:func:`backupctl.cli.progress.progress`); yields
    (advance, set_total) callbacks for the ops functions."""
    with progress(description, enabled=enabled) as meter:
        yield meter.advance, meter.set_total


@contextmanager
def backup_progress(
    description: str, entry: BackupEntry, enabled: bool
) -> Iterator[Progress | None]:
    """Progress (see :func:`progress_bar`) sized to the backup's archives."""
    with progress(description, enabled=enabled) as meter:
        if entry.manifest:
            meter.set_total(entry.manifest.size)
        yield meter.advance
