"""``backupctl verify``: download a backup and check every checksum and RDB,
without restoring it anywhere."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from backupctl.cli.logs import LogFormatOpt, QuietOpt, VerboseOpt
from backupctl.cli.options import (
    EndpointOpt,
    IdentityOpt,
    JsonOpt,
    LimitDownloadOpt,
    RequireSignaturesOpt,
    StoreArg,
    TargetOpt,
    TermLogOpt,
    VerifyKeyOpt,
    get_store,
    identities,
    trust,
)
from backupctl.cli.output import (
    CommandResult,
    backup_progress,
    human,
    note,
    plural,
    report,
    user_errors,
)
from backupctl.core.malloc import tune_for_bulk_reading
from backupctl.ops.scratch import check_parent
from backupctl.ops.verify import VerifyReport, verify_backup
from backupctl.store import catalog

BackupArg = Annotated[str, typer.Argument(help="Backup id, or 'latest'.", show_default=False)]
TmpDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--tmp-dir",
        help="Where to unpack temporarily (default: system temp). A killed run's folder there "
        "is removed by the next run.",
    ),
]


@dataclass(frozen=True)
class Verified(CommandResult):
    report: VerifyReport

    def to_json(self) -> dict[str, Any]:
        r = self.report
        return {
            "ok": True,
            "id": r.id,
            "target": r.target,
            "nodes": [{"name": n} for n in r.nodes],
            "files": r.files,
            "size": r.bytes,
            "keys": r.keys,
            "types": r.types,
        }

    def print_text(self) -> None:
        r = self.report
        typer.echo(
            f"{r.id}: OK ({plural(r.files, 'file')} in {plural(len(r.nodes), 'archive')}, "
            f"{human(r.bytes)} checked)"
        )


def verify(
    store_url: StoreArg,
    backup: BackupArg,
    target: TargetOpt = None,
    tmp_dir: TmpDirOpt = None,
    endpoint: EndpointOpt = None,
    as_json: JsonOpt = False,
    termination_log: TermLogOpt = None,
    identity: IdentityOpt = None,
    verify_key: VerifyKeyOpt = None,
    require_signatures: RequireSignaturesOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    log_format: LogFormatOpt = "text",
    limit_download: LimitDownloadOpt = None,
) -> None:
    """Download a backup and check every checksum and RDB, without restoring it."""
    with user_errors(termination_log):
        if tmp_dir is not None:
            check_parent(tmp_dir)  # before any download
        keys = identities(identity)
        signed_by = trust(verify_key, require_signatures)
        store = get_store(store_url, endpoint, limit_download=limit_download)
        entry = catalog.find(store, backup, target, trust=signed_by)
        tune_for_bulk_reading()
        with backup_progress("verify", entry, not as_json) as advance:
            result = verify_backup(
                store, entry, tmp_dir=tmp_dir, progress=advance, note=note, identities=keys
            )
        report(Verified(result), as_json=as_json, termination_log=termination_log)
