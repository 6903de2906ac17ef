"""``backupctl list``: the backups in a store, newest first (complete ones,
or with ``--all`` the incomplete ones too, each with what is wrong)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import typer

from backupctl.cli.options import EndpointOpt, JsonOpt, StoreArg, TargetOpt, get_store
from backupctl.cli.output import CommandResult, human, print_table, report, user_errors
from backupctl.core.timefmt import format_time
from backupctl.store import catalog
from backupctl.store.catalog import BackupEntry

ShowAllOpt = Annotated[
    bool, typer.Option("--all", help="Also show incomplete backups (no manifest).")
]


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
        "created": format_time(e.created),
        "size": m.size if m else e.stored_bytes,
        "keys": m.keys if m else None,
        "nodes": [n.name for n in m.nodes] if m else [],
        "redisVersion": m.redis_version if m else None,
        "problem": None if m else (e.manifest_error or _incomplete_reason(e)),
    }


@dataclass(frozen=True)
class Listing(CommandResult):
    entries: list[BackupEntry]

    def to_json(self) -> list[dict[str, Any]]:
        return [entry_json(e) for e in self.entries]

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
                "complete" if e.complete else "INCOMPLETE",
            )
            for e in self.entries
        ]
        print_table(("ID", "CREATED", "TARGET", "SIZE", "KEYS", "STATUS"), rows)


def list_cmd(
    store_url: StoreArg,
    target: TargetOpt = None,
    show_all: ShowAllOpt = False,
    endpoint: EndpointOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List complete backups, newest first."""
    with user_errors():
        store = get_store(store_url, endpoint)
        store.check()
        entries = [
            e
            for e in catalog.scan(store, target, include_pending=show_all)
            if show_all or e.complete
        ]
        report(Listing(entries), as_json=as_json, termination_log=None)
