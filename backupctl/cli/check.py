"""``backupctl check [STORE]``: every manifest and archive of a store, like
``restic check`` (the work is :func:`backupctl.ops.check.check_store`).
Exits non-zero when a backup would not restore."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import typer

from backupctl.cli.defaults import resolve_args
from backupctl.cli.exit_codes import ExitCode
from backupctl.cli.options import EndpointOpt, JsonOpt, LimitDownloadOpt, TargetOpt, get_store
from backupctl.cli.output import (
    CommandResult,
    error_json,
    human,
    print_json,
    progress_bar,
    user_errors,
)
from backupctl.ops.check import CheckReport, CheckRequestError, check_store, parse_subset

StoreOptArg = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="[STORE]",
        help="Store URL (default: BACKUPCTL_STORE or the config file).",
        show_default=False,
    ),
]
ReadDataOpt = Annotated[
    bool,
    typer.Option(
        "--read-data",
        help="Also download every archive and check every sha256 (nothing is written to disk).",
    ),
]
SubsetOpt = Annotated[
    str | None,
    typer.Option(
        "--read-data-subset",
        metavar="N%|n/t",
        help="Read only some archives: a random N% of them, or group n of t (run n = 1..t "
        "on successive days to read everything once).",
    ),
]


@dataclass(frozen=True)
class Checked(CommandResult):
    report: CheckReport

    def to_json(self) -> dict[str, Any]:
        return self.report.to_json()

    def print_text(self) -> None:
        r = self.report
        for w in r.warnings:
            typer.echo(f"warning: {w.target}/{w.id}: {w.message}", err=True)
        for e in r.errors:
            typer.echo(f"{e.target}/{e.id}: {e.message}")
        read = f", {r.archives_read} read ({human(r.bytes_read)})" if r.read_data else ""
        verdict = (
            "no errors" if r.ok else f"{len(r.errors)} error{'s' if len(r.errors) != 1 else ''}"
        )
        typer.echo(f"{r.store}: {r.backups} backups, {r.archives} archives{read}: {verdict}")


def check_command(
    args: StoreOptArg = None,
    target: TargetOpt = None,
    read_data: ReadDataOpt = False,
    read_data_subset: SubsetOpt = None,
    endpoint: EndpointOpt = None,
    limit_download: LimitDownloadOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check every manifest and archive in a store; with --read-data also every byte.

    Example: backupctl check s3://bucket/redis --read-data-subset 10%
    """
    r = resolve_args(args or [], target=target, endpoint=endpoint)
    if r.ids:
        raise typer.BadParameter("check takes a store, not backup ids", param_hint="'[STORE]'")
    if read_data and read_data_subset is not None:
        raise typer.BadParameter(
            "use --read-data or --read-data-subset, not both", param_hint="'--read-data'"
        )
    try:
        subset = parse_subset(read_data_subset) if read_data_subset is not None else None
    except CheckRequestError as e:
        raise typer.BadParameter(str(e), param_hint="'--read-data-subset'") from None
    with user_errors(), progress_bar("check", not as_json) as (advance, _):
        result = check_store(
            get_store(r.stores[0], r.endpoint, limit_download=limit_download),
            target=r.target,
            read_data=read_data,
            subset=subset,
            progress=advance,
        )
    message = f"check found {len(result.errors)} error(s) in {result.store}"
    if as_json:  # one JSON document: the report, and the error when it found any
        failed = {} if result.ok else error_json(message, ExitCode.INTEGRITY)
        print_json({**result.to_json(), **failed})
    else:
        Checked(result).print_text()
    if not result.ok:
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(int(ExitCode.INTEGRITY))
