"""``backupctl list``: the backups in a store, newest first (complete ones and
those whose manifest cannot be used, marked INVALID with the reason; with
``--all`` the incomplete ones too, each with what is wrong). It only reads:
a read-only store, or read-only credentials, list."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import typer

from backupctl.cli.logs import LogFormatOpt, QuietOpt, VerboseOpt
from backupctl.cli.options import (
    EndpointOpt,
    JsonOpt,
    RequireSignaturesOpt,
    StoreArg,
    TargetOpt,
    VerifyKeyOpt,
    get_store,
    trust,
)
from backupctl.cli.output import CommandResult, human, print_table, report, user_errors
from backupctl.core.timefmt import format_time
from backupctl.store import catalog
from backupctl.store.catalog import BackupEntry
from backupctl.store.signing import signature_key

ShowAllOpt = Annotated[
    bool, typer.Option("--all", help="Also show incomplete backups (no manifest yet).")
]


def _status(e: BackupEntry) -> str:
    return "complete" if e.complete else "invalid" if e.invalid else "incomplete"


def _incomplete_reason(e: BackupEntry) -> str:
    if e.pending:
        return "incomplete: upload unfinished (running now, or interrupted)"
    return "incomplete: no manifest"


def entry_json(e: BackupEntry) -> dict[str, Any]:
    """One backup as ``list --json`` prints it."""
    m = e.manifest
    return {
        "id": e.id,
        "target": e.target,
        "complete": e.complete,
        "status": _status(e),
        "created": format_time(e.created),
        "size": m.size if m else e.stored_bytes,
        "keys": m.keys if m else None,
        "nodes": [{"name": n.name, "role": n.role, "keys": n.keys} for n in m.nodes] if m else [],
        "redisVersion": m.redis_version if m else None,
        "signed": any(o.key == signature_key(e.target, e.id) for o in e.objects),
        "problem": None if m else (e.manifest_error or _incomplete_reason(e)),
    }


@dataclass(frozen=True)
class Listing(CommandResult):
    entries: list[BackupEntry]

    def to_json(self) -> dict[str, Any]:
        return {"ok": True, "backups": [entry_json(e) for e in self.entries]}

    def print_text(self) -> None:
        if not self.entries:
            typer.echo("no backups", err=True)
            return
        rows = [
            (
                e.id,
                format_time(e.created),
                e.target,
                human(e.manifest.size if e.manifest else e.stored_bytes),
                str(e.manifest.keys) if e.manifest else "-",
                _status(e) if e.complete else _status(e).upper(),
            )
            for e in self.entries
        ]
        print_table(("ID", "CREATED", "TARGET", "SIZE", "KEYS", "STATUS"), rows)
        for e in self.entries:
            if e.invalid:
                typer.echo(f"warning: {e.target}/{e.id} is INVALID: {e.manifest_error}", err=True)


def list_cmd(
    store_url: StoreArg,
    target: TargetOpt = None,
    show_all: ShowAllOpt = False,
    endpoint: EndpointOpt = None,
    as_json: JsonOpt = False,
    verify_key: VerifyKeyOpt = None,
    require_signatures: RequireSignaturesOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    log_format: LogFormatOpt = "text",
) -> None:
    """List complete backups, newest first (and any whose manifest cannot be used)."""
    with user_errors():
        if target is not None:
            catalog.validate_target(target)  # a typo is an error, not "no backups"
        keys = trust(verify_key, require_signatures)
        store = get_store(store_url, endpoint)
        # No store.check(): it asks for write access, and listing needs only reads
        # (the listing itself reports a missing store or a denied read).
        entries = [
            e
            for e in catalog.scan(store, target, include_pending=show_all, trust=keys)
            if show_all or e.complete or e.invalid
        ]
        report(Listing(entries), as_json=as_json, termination_log=None)
