"""``backupctl delete [STORE] ID...``: remove named backups, crash-safe like
prune (the work is :func:`backupctl.store.delete.delete_backups`; this is
its options and its report).

A program that runs the CLI in-process can watch the deletes: pass a
:class:`~backupctl.cli.prune.PruneHooks` as click's context object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import typer

from backupctl.cli.defaults import resolve_args
from backupctl.cli.options import EndpointOpt, JsonOpt, TargetOpt, get_store
from backupctl.cli.output import CommandResult, human, print_table, report, user_errors
from backupctl.cli.prune import PruneHooks
from backupctl.store.delete import DeleteResult, delete_backups

StoreIdsArgs = Annotated[
    list[str],
    typer.Argument(
        metavar="[STORE] ID",
        help="Store URL (default: BACKUPCTL_STORE or the config file) and one or more backup ids.",
        show_default=False,
    ),
]
ForceOpt = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Also delete the newest complete backup of a target, or a folder without a "
        "manifest (which may be a backup being written).",
    ),
]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Print what would be deleted; delete nothing.")
]


@dataclass(frozen=True)
class DeletedReport(CommandResult):
    result: DeleteResult

    def to_json(self) -> dict[str, Any]:
        return self.result.to_json()

    def termination_json(self) -> dict[str, Any]:
        return self.to_json()

    def print_text(self) -> None:
        r = self.result
        rows = [(d.target, d.id, d.created, d.state, human(d.bytes)) for d in r.deleted]
        print_table(("TARGET", "ID", "CREATED", "STATE", "SIZE"), rows)
        n = len(r.deleted)
        verb = "would delete" if r.dry_run else "deleted"
        tail = " (dry run: nothing was deleted)" if r.dry_run else ""
        typer.echo(f"{verb} {n} backup{'s' if n != 1 else ''}, {human(r.bytes)} freed{tail}")


def delete_command(
    ctx: typer.Context,
    args: StoreIdsArgs,
    target: TargetOpt = None,
    force: ForceOpt = False,
    dry_run: DryRunOpt = False,
    endpoint: EndpointOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete backups by id (the newest complete backup of a target only with --force).

    Killed midway, it leaves no half backup listed as complete: run it again
    (or prune) to finish.

    Example: backupctl delete s3://bucket/redis backup-20250101-020000
    """
    r = resolve_args(args, target=target, endpoint=endpoint)
    hooks = ctx.find_object(PruneHooks) or PruneHooks()
    with user_errors(interrupted="interrupted (run delete again to finish)"):
        result = delete_backups(
            get_store(r.stores[0], r.endpoint),
            r.ids,
            target=r.target,
            force=force,
            dry_run=dry_run,
            on_delete=hooks.on_delete,
        )
        report(DeletedReport(result), as_json=as_json, termination_log=None)
