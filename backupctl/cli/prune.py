"""The ``backupctl prune`` command (registered into the main typer app by
:func:`register`).

Errors a user can cause end in one line on stderr and exit code 1; typer's
own usage errors (an unknown option, a count that is not a number) exit 2.
Set ``BACKUPCTL_DEBUG=1`` for tracebacks of unexpected errors.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from backupctl.store.backends import RetryingBackend, open_store
from backupctl.store.backends.base import Backend, StorageError
from backupctl.store.catalog import CatalogError
from backupctl.store.prune import PruneError, PruneResult, check_request, prune
from backupctl.store.retention import Policy, PolicyError, parse_duration

#: Test hook: seconds to sleep after each delete (and report it on stderr),
#: so a test can SIGKILL a prune in the middle of its work.
PAUSE_ENV = "BACKUPCTL_PRUNE_TEST_PAUSE"


def _count(value: str | int) -> int:
    """A keep count: a whole number, or ``unlimited`` (-1) as in restic."""
    if isinstance(value, int):  # the default
        return value
    if value.strip().lower() in ("unlimited", "all"):
        return -1
    try:
        return int(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a whole number (or 'unlimited')") from None


def _count_opt(name: str, what: str) -> object:
    text = (
        "Keep the N most recent backups"
        if what == "backups"
        else f"Keep the newest backup of each of the N most recent {what} that have one"
    )
    return typer.Option(
        name, parser=_count, metavar="N", help=f"{text} (-1 or 'unlimited': all)."
    )


def fail(message: str, termination_log: Path | None = None) -> NoReturn:
    if termination_log is not None:
        write_termination_log(termination_log, {"ok": False, "error": message})
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def write_termination_log(path: Path, data: dict[str, object]) -> None:
    """One line of JSON for the Kubernetes controller (at most 4 KiB are kept)."""
    try:
        path.write_text(json.dumps(data, separators=(",", ":"))[:4096])
    except OSError as e:
        typer.echo(f"warning: cannot write termination log {path}: {e}", err=True)


def open_backend(url: str, endpoint: str | None) -> Backend:
    """The store behind ``url``, with the storage package's retry wrapper."""
    return RetryingBackend(open_store(url, endpoint=endpoint))


def prune_command(
    store_url: Annotated[
        str,
        typer.Argument(
            metavar="STORE",
            help="Store URL: /path or file:///path, s3://bucket/prefix, az://container/prefix, "
            "gs://bucket/prefix",
            show_default=False,
        ),
    ],
    target: Annotated[
        str | None,
        typer.Option("--target", help="Only this target (default: every target in the store)."),
    ] = None,
    keep_last: Annotated[int, _count_opt("--keep-last", "backups")] = 0,
    keep_hourly: Annotated[int, _count_opt("--keep-hourly", "hours")] = 0,
    keep_daily: Annotated[int, _count_opt("--keep-daily", "days")] = 0,
    keep_weekly: Annotated[int, _count_opt("--keep-weekly", "ISO weeks")] = 0,
    keep_monthly: Annotated[int, _count_opt("--keep-monthly", "months")] = 0,
    keep_yearly: Annotated[int, _count_opt("--keep-yearly", "years")] = 0,
    keep_within: Annotated[
        str | None,
        typer.Option(
            "--keep-within",
            metavar="DURATION",
            help="Keep every backup newer than this before the newest one, e.g. 30d, 1y6m, 36h.",
        ),
    ] = None,
    timezone: Annotated[
        str,
        typer.Option("--timezone", help="Time zone of hours/days/weeks/... (IANA name)."),
    ] = "UTC",
    incomplete_grace: Annotated[
        str,
        typer.Option(
            "--incomplete-grace",
            metavar="DURATION",
            help="Folders without a manifest and unfinished uploads older than this are "
            "removed; younger ones mean a backup is running and its target is left alone.",
        ),
    ] = "24h",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be removed; delete nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    termination_log: Annotated[
        Path | None,
        typer.Option(
            "--termination-log",
            help="Also write the result (or the error) as compact JSON to this file "
            "(Kubernetes: /dev/termination-log).",
        ),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(
            "--endpoint",
            help="Object-store endpoint for S3-compatible stores, Azurite or a GCS emulator.",
        ),
    ] = None,
) -> None:
    """Apply a retention policy (restic's forget semantics) to the backups in a
    store, and sweep incomplete backups and unfinished uploads."""
    now = datetime.now(UTC)
    try:
        within = parse_duration(keep_within) if keep_within is not None else None
        grace_duration = parse_duration(incomplete_grace)
    except PolicyError as e:
        fail(f"--keep-within/--incomplete-grace: {e}", termination_log)
    grace = now - grace_duration.before(now)
    policy = Policy(
        last=keep_last,
        hourly=keep_hourly,
        daily=keep_daily,
        weekly=keep_weekly,
        monthly=keep_monthly,
        yearly=keep_yearly,
        within=within,
        tz=timezone,
    )
    try:
        check_request(policy, dry_run)  # before the store is opened
        backend = open_backend(store_url, endpoint)
        result = prune(
            backend,
            policy,
            now=now,
            target=target,
            incomplete_grace=grace,
            dry_run=dry_run,
            on_delete=_pause_hook(),
        )
    except (PolicyError, PruneError, StorageError, CatalogError) as e:
        fail(str(e), termination_log)
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        fail("interrupted (run prune again to finish)", termination_log)
    except Exception as e:
        if os.environ.get("BACKUPCTL_DEBUG"):
            raise
        fail(
            f"unexpected {type(e).__name__}: {e} (this is a bug; rerun with BACKUPCTL_DEBUG=1 "
            "and report the traceback)",
            termination_log,
        )
    if termination_log is not None:
        write_termination_log(
            termination_log,
            {
                "ok": True,
                "kept": len(result.keep),
                "removed": len(result.remove),
                "swept": sum(1 for i in result.incomplete if i.action == "remove"),
                "aborted": len(result.aborted_uploads),
                "dryRun": result.dry_run,
            },
        )
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    elif sys.stdout.isatty():
        print_rich(result)
    else:
        print_plain(result)
    for s in result.skipped:
        typer.echo(f"warning: target {s.target} skipped: {s.reason}", err=True)


def _pause_hook() -> Callable[[str], None] | None:
    raw = os.environ.get(PAUSE_ENV)
    if not raw:
        return None
    pause = float(raw)

    def hook(key: str) -> None:
        sys.stderr.write(f"deleted {key}\n")
        sys.stderr.flush()
        time.sleep(pause)

    return hook


def _rows(result: PruneResult) -> list[tuple[str, str, str, str, str]]:
    out = []
    for action, rows in (("keep", result.keep), ("remove", result.remove)):
        for r in rows:
            d = r.to_json()
            out.append((action, r.target, r.id, d["created"], "; ".join(r.reasons)))
    for inc in result.incomplete:
        action = "sweep" if inc.action == "remove" else "leave"
        d = inc.to_json()
        out.append((action, inc.target, inc.id, d["created"], "; ".join(inc.reasons)))
    for u in result.aborted_uploads:
        d = u.to_json()
        out.append(("abort", u.target, u.key, d["started"], f"unfinished upload {u.upload_id}"))
    return out


def _summary(result: PruneResult) -> str:
    swept = sum(1 for i in result.incomplete if i.action == "remove")
    verb = "would remove" if result.dry_run else "removed"
    text = (
        f"{len(result.keep)} kept, {verb} {len(result.remove)} backups and {swept} incomplete, "
        f"{'would abort' if result.dry_run else 'aborted'} {len(result.aborted_uploads)} uploads"
    )
    return text + (" (dry run: nothing was deleted)" if result.dry_run else "")


def print_plain(result: PruneResult) -> None:
    typer.echo(f"store {result.store}: {result.policy.describe()}")
    headers = ("ACTION", "TARGET", "ID", "CREATED", "REASONS")
    rows = _rows(result)
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for line in (headers, *rows):
        typer.echo("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    typer.echo(_summary(result))


def print_rich(result: PruneResult) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result.store}: {result.policy.describe()}", title_justify="left")
    for h in ("action", "target", "id", "created", "reasons"):
        table.add_column(h)
    styles = {"keep": "green", "remove": "red", "sweep": "red", "abort": "red", "leave": "yellow"}
    for row in _rows(result):
        table.add_row(*row, style=styles.get(row[0]))
    console = Console()
    console.print(table)
    console.print(_summary(result))


def register(app: typer.Typer) -> None:
    """Add ``prune`` to the main CLI."""
    app.command("prune")(prune_command)

