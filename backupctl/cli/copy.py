"""``backupctl copy [SRC] DST [ID...|--latest]``: backups to a second store
(off-site), verified, resumable, ids kept (the work is
:func:`backupctl.ops.copy.copy_backups`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import typer

from backupctl.cli.defaults import resolve_args
from backupctl.cli.options import (
    ConcurrencyOpt,
    EndpointOpt,
    JsonOpt,
    LimitDownloadOpt,
    LimitUploadOpt,
    PartSizeOpt,
    TargetOpt,
    get_store,
    transfer,
)
from backupctl.cli.output import (
    CommandResult,
    human,
    print_table,
    progress_bar,
    report,
    user_errors,
)
from backupctl.ops.copy import CopyReport, copy_backups

StoresIdsArgs = Annotated[
    list[str],
    typer.Argument(
        metavar="[SRC] DST [ID]",
        help="Source store (default: BACKUPCTL_STORE or the config file), destination store, "
        "and the backup ids to copy (default: every complete backup).",
        show_default=False,
    ),
]
LatestOpt = Annotated[
    bool, typer.Option("--latest", help="Copy only the newest complete backup of each target.")
]
ToEndpointOpt = Annotated[
    str | None,
    typer.Option(
        "--to-endpoint",
        help="Object-store endpoint of the destination (default: the store type's environment "
        "variable, as for --endpoint).",
    ),
]


@dataclass(frozen=True)
class Copied(CommandResult):
    report: CopyReport

    def to_json(self) -> dict[str, Any]:
        return self.report.to_json()

    def termination_json(self) -> dict[str, Any]:
        return self.to_json()

    def print_text(self) -> None:
        r = self.report
        rows = [
            (b.target, b.id, b.action, human(b.bytes), str(b.reused) if b.reused else "-")
            for b in r.backups
        ]
        print_table(("TARGET", "ID", "ACTION", "COPIED", "RESUMED"), rows)
        n = sum(1 for b in r.backups if b.action == "copied")
        skipped = len(r.backups) - n
        typer.echo(
            f"copied {n} backup{'s' if n != 1 else ''} ({human(r.bytes)}) to {r.destination}"
            + (f"; {skipped} already there" if skipped else "")
        )


def copy_command(
    args: StoresIdsArgs,
    target: TargetOpt = None,
    latest: LatestOpt = False,
    endpoint: EndpointOpt = None,
    to_endpoint: ToEndpointOpt = None,
    limit_upload: LimitUploadOpt = None,
    limit_download: LimitDownloadOpt = None,
    part_size: PartSizeOpt = None,
    concurrency: ConcurrencyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Copy backups to another store (off-site), keeping their ids.

    Every archive's sha256 is checked before it is committed, and a stopped
    copy resumes when rerun.

    Example: backupctl copy /backups s3://offsite/redis --latest
    """
    r = resolve_args(args, target=target, endpoint=endpoint, stores=2)
    if r.ids and latest:
        raise typer.BadParameter("give backup ids or --latest, not both", param_hint="'--latest'")
    uploads = transfer(part_size, concurrency)
    with user_errors(interrupted="interrupted (run copy again to resume)"):
        src = get_store(r.stores[0], r.endpoint, limit_download=limit_download)
        dst = get_store(r.stores[1], to_endpoint, transfer=uploads, limit_upload=limit_upload)
        dst.check()  # a missing bucket or read-only credentials: before any download
        with progress_bar("copy", not as_json) as (advance, _):
            result = copy_backups(
                src, dst, ids=r.ids, target=r.target, latest=latest, progress=advance
            )
        report(Copied(result), as_json=as_json, termination_log=None)
