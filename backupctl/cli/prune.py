"""``backupctl prune``: apply a retention policy (restic's forget semantics)
to the backups in a store, and sweep incomplete backups and unfinished
uploads (the work is :func:`backupctl.store.prune.prune`; this is its options
and its report).

A program that runs the CLI in-process can watch the deletes: pass a
:class:`PruneHooks` as click's context object (``app(args, obj=PruneHooks(...))``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from backupctl.cli.exit_codes import ExitCode
from backupctl.cli.logs import LogFormatOpt, QuietOpt, VerboseOpt
from backupctl.cli.options import (
    JsonOpt,
    RequireSignaturesOpt,
    TermLogOpt,
    VerifyKeyOpt,
    get_store,
    trust,
)
from backupctl.cli.output import (
    CommandResult,
    fail,
    human,
    plural,
    print_table,
    report,
    user_errors,
)
from backupctl.store import catalog
from backupctl.store.backends.base import Backend
from backupctl.store.prune import PruneError, PruneResult, check_request, prune
from backupctl.store.retention import Policy, PolicyError, parse_duration


@dataclass(frozen=True)
class PruneHooks:
    """Callbacks of a prune run in-process: ``on_delete(key)`` after each
    object deleted (progress output, or a pause to stop a prune midway)."""

    on_delete: Callable[[str], None] | None = None


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


def _count_opt(name: str, what: str) -> Any:
    text = (
        "Keep the N most recent backups"
        if what == "backups"
        else f"Keep the newest backup of each of the N most recent {what} that have one"
    )
    return typer.Option(name, parser=_count, metavar="N", help=f"{text} (-1 or 'unlimited': all).")


ExtendLockOpt = Annotated[
    int | None,
    typer.Option(
        "--extend-lock-days",
        metavar="N",
        min=1,
        max=36_500,
        help="Every kept backup that is locked (S3 Object Lock, Azure immutability, GCS "
        "retention) stays locked until at least "
        "N days from now (retention keeps it longer than its first lock; docs/encryption.md).",
        show_default=False,
    ),
]
StoreArg = Annotated[
    str,
    typer.Argument(
        metavar="STORE",
        help="Store URL: /path or file:///path, s3://bucket/prefix, az://container/prefix, "
        "gs://bucket/prefix",
        show_default=False,
    ),
]
TargetOpt = Annotated[
    str | None,
    typer.Option("--target", help="Only this target (default: every target in the store)."),
]
KeepWithinOpt = Annotated[
    str | None,
    typer.Option(
        "--keep-within",
        metavar="DURATION",
        help="Keep every backup newer than this before the newest one, e.g. 30d, 1y6m, 36h.",
    ),
]
TimezoneOpt = Annotated[
    str, typer.Option("--timezone", help="Time zone of hours/days/weeks/... (IANA name).")
]
IncompleteGraceOpt = Annotated[
    str,
    typer.Option(
        "--incomplete-grace",
        metavar="DURATION",
        help="Folders without a manifest and unfinished uploads older than this are "
        "removed; younger ones mean a backup is running and its target is left alone.",
    ),
]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Print what would be removed; delete nothing.")
]
PruneEndpointOpt = Annotated[
    str | None,
    typer.Option(
        "--endpoint",
        help="Object-store endpoint for S3-compatible stores, Azurite or a GCS emulator.",
    ),
]


def camel(data: Any) -> Any:
    """``dry_run`` -> ``dryRun`` in every key (the JSON vocabulary is camelCase)."""
    if isinstance(data, dict):
        return {_camel_word(k): camel(v) for k, v in data.items()}
    if isinstance(data, list):
        return [camel(v) for v in data]
    return data


def _camel_word(key: str) -> str:
    first, *rest = key.split("_")
    return first + "".join(w.capitalize() for w in rest)


@dataclass(frozen=True)
class Pruned(CommandResult):
    result: PruneResult
    #: Bytes of each backup folder before the prune, by (target, id).
    sizes: dict[tuple[str, str], int]

    @property
    def freed(self) -> int:
        """Bytes the removed and swept backups held."""
        r = self.result
        gone = [*r.remove, *(i for i in r.incomplete if i.action == "remove")]
        return sum(self.sizes.get((row.target, row.id), 0) for row in gone)

    def to_json(self) -> dict[str, Any]:
        return {"ok": True, **camel(self.result.to_json()), "freed": self.freed}

    def termination_json(self) -> dict[str, Any]:
        r = self.result
        return {
            "ok": True,
            "kept": len(r.keep),
            "removed": len(r.remove),
            "swept": sum(1 for i in r.incomplete if i.action == "remove"),
            "aborted": len(r.aborted_uploads),
            "dryRun": r.dry_run,
            "freed": self.freed,
        }

    def print_text(self) -> None:
        if sys.stdout.isatty():
            self._print_rich()
            return
        typer.echo(f"store {self.result.store}: {self.result.policy.describe()}")
        print_table(("ACTION", "TARGET", "ID", "CREATED", "REASONS"), self._rows())
        typer.echo(self._summary())

    def _print_rich(self) -> None:
        from rich.console import Console
        from rich.table import Table

        r = self.result
        table = Table(title=f"{r.store}: {r.policy.describe()}", title_justify="left")
        for h in ("action", "target", "id", "created", "reasons"):
            table.add_column(h)
        styles = {
            "keep": "green", "remove": "red", "sweep": "red", "abort": "red", "leave": "yellow",
        }  # fmt: skip
        for row in self._rows():
            table.add_row(*row, style=styles.get(row[0]))
        console = Console()
        console.print(table)
        console.print(self._summary())

    def _rows(self) -> list[tuple[str, str, str, str, str]]:
        r = self.result
        out = []
        for action, rows in (("keep", r.keep), ("remove", r.remove)):
            for row in rows:
                created = row.to_json()["created"]
                out.append((action, row.target, row.id, created, "; ".join(row.reasons)))
        for inc in r.incomplete:
            action = "sweep" if inc.action == "remove" else "leave"
            created = inc.to_json()["created"]
            out.append((action, inc.target, inc.id, created, "; ".join(inc.reasons)))
        for u in r.aborted_uploads:
            started = u.to_json()["started"]
            out.append(("abort", u.target, u.key, started, f"unfinished upload {u.upload_id}"))
        return out

    def _summary(self) -> str:
        r = self.result
        swept = sum(1 for i in r.incomplete if i.action == "remove")
        verb = "would remove" if r.dry_run else "removed"
        text = (
            f"{len(r.keep)} kept, {verb} {plural(len(r.remove), 'backup')} and {swept} "
            f"incomplete ({human(self.freed)} {'would be ' if r.dry_run else ''}freed), "
            f"{'would abort' if r.dry_run else 'aborted'} "
            f"{plural(len(r.aborted_uploads), 'unfinished upload')}"
        )
        return text + (" (dry run: nothing was deleted)" if r.dry_run else "")


def _sizes(store: Backend, target: str | None) -> dict[tuple[str, str], int]:
    """What each backup folder holds now, to say how much the prune frees."""
    return {
        (e.target, e.id): e.manifest.size if e.manifest else e.stored_bytes
        for e in catalog.scan(store, target, include_pending=True)
    }


def prune_command(
    ctx: typer.Context,
    store_url: StoreArg,
    target: TargetOpt = None,
    keep_last: Annotated[int, _count_opt("--keep-last", "backups")] = 0,
    keep_hourly: Annotated[int, _count_opt("--keep-hourly", "hours")] = 0,
    keep_daily: Annotated[int, _count_opt("--keep-daily", "days")] = 0,
    keep_weekly: Annotated[int, _count_opt("--keep-weekly", "ISO weeks")] = 0,
    keep_monthly: Annotated[int, _count_opt("--keep-monthly", "months")] = 0,
    keep_yearly: Annotated[int, _count_opt("--keep-yearly", "years")] = 0,
    keep_within: KeepWithinOpt = None,
    timezone: TimezoneOpt = "UTC",
    incomplete_grace: IncompleteGraceOpt = "24h",
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    log_format: LogFormatOpt = "text",
    termination_log: TermLogOpt = None,
    endpoint: PruneEndpointOpt = None,
    verify_key: VerifyKeyOpt = None,
    require_signatures: RequireSignaturesOpt = False,
    extend_lock_days: ExtendLockOpt = None,
) -> None:
    """Apply a retention policy (restic's forget semantics) to the backups in a
    store, and sweep incomplete backups and unfinished uploads."""
    now = datetime.now(UTC)
    try:
        within = parse_duration(keep_within) if keep_within is not None else None
        grace_duration = parse_duration(incomplete_grace)
    except PolicyError as e:
        fail(
            f"--keep-within/--incomplete-grace: {e}",
            code=ExitCode.USAGE,
            termination_log=termination_log,
        )
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
    hooks = ctx.find_object(PruneHooks) or PruneHooks()
    with user_errors(termination_log, interrupted="interrupted (run prune again to finish)"):
        try:
            check_request(policy, dry_run)  # before the store is opened
        except PruneError as e:
            fail(str(e), code=ExitCode.USAGE, termination_log=termination_log)
        if target is not None:
            catalog.validate_target(target)
        signed_by = trust(verify_key, require_signatures)
        store = get_store(store_url, endpoint)
        sizes = _sizes(store, target)
        result = prune(
            store,
            policy,
            now=now,
            target=target,
            incomplete_grace=now - grace_duration.before(now),
            dry_run=dry_run,
            on_delete=hooks.on_delete,
            trust=signed_by,
            extend_lock=timedelta(days=extend_lock_days) if extend_lock_days else None,
        )
    report(Pruned(result, sizes), as_json=as_json, termination_log=termination_log)
    for s in result.skipped:
        typer.echo(f"warning: target {s.target} skipped: {s.reason}", err=True)
