"""``backupctl show [STORE] ID``: one backup's manifest, for people or
(``--json``) as stored, like ``restic cat snapshot``. It reads only the
manifest: nothing is downloaded or changed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import typer

from backupctl.cli.defaults import Resolved, resolve_args
from backupctl.cli.options import EndpointOpt, JsonOpt, TargetOpt, get_store
from backupctl.cli.output import CommandResult, human, print_table, report, user_errors
from backupctl.store import catalog
from backupctl.store.catalog import Manifest

StoreIdArgs = Annotated[
    list[str],
    typer.Argument(
        metavar="[STORE] ID",
        help="Store URL (default: BACKUPCTL_STORE or the config file) and a backup id or 'latest'.",
        show_default=False,
    ),
]


@dataclass(frozen=True)
class Shown(CommandResult):
    manifest: Manifest

    def to_json(self) -> dict[str, Any]:
        return {"ok": True, "manifest": self.manifest.to_json()}

    def print_text(self) -> None:
        m = self.manifest
        for label, value in (
            ("id", m.id),
            ("target", m.target),
            ("created", m.created),
            ("server", f"{m.flavour} {m.version} ({m.mode})"),
            ("method", m.method),
            ("compression", m.compression),
            ("keys", str(m.keys)),
            ("size", f"{human(m.size)} ({m.size} bytes)"),
            ("written by", f"backupctl {m.tool_version}"),
        ):
            typer.echo(f"{label + ':':<13}{value}")
        typer.echo("")
        rows = [
            (
                n.name,
                n.role,
                n.version,
                str(n.keys),
                n.archive.key,
                human(n.archive.size),
                n.archive.sha256[:12],
            )
            for n in m.nodes
        ]
        print_table(("NODE", "ROLE", "VERSION", "KEYS", "ARCHIVE", "SIZE", "SHA256"), rows)


def one_id(args: list[str], target: str | None, endpoint: str | None) -> Resolved:
    """``[STORE] ID`` with the defaults applied; a usage error unless one id.
    Called outside :func:`user_errors` so usage errors exit 2."""
    r = resolve_args(args, target=target, endpoint=endpoint)
    if len(r.ids) != 1:
        raise typer.BadParameter(
            f"expected one backup id after the store, got {len(r.ids)}", param_hint="'ID'"
        )
    return r


def find_one(r: Resolved) -> catalog.BackupEntry:
    """The one complete backup ``r`` names."""
    return catalog.find(get_store(r.stores[0], r.endpoint), r.ids[0], r.target)


def show(
    args: StoreIdArgs,
    target: TargetOpt = None,
    endpoint: EndpointOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a backup's manifest: when, what server, which nodes and archives.

    Example: backupctl show s3://bucket/redis latest --target prod/cache
    """
    r = one_id(args, target, endpoint)
    with user_errors():
        entry = find_one(r)
        assert entry.manifest is not None  # find() returns complete backups only
        report(Shown(entry.manifest), as_json=as_json, termination_log=None)
