"""``backupctl ls [STORE] ID``: the files inside a backup's archives with
their sizes, like ``restic ls``. Read from the manifest (which lists every
file with its size and sha256): nothing is downloaded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import typer

from backupctl.cli.options import EndpointOpt, JsonOpt, TargetOpt
from backupctl.cli.output import CommandResult, human, print_table, report, user_errors
from backupctl.cli.show import StoreIdArgs, find_one, one_id
from backupctl.store.catalog import Manifest


@dataclass(frozen=True)
class Listed(CommandResult):
    manifest: Manifest

    def to_json(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "ok": True,
            "id": m.id,
            "target": m.target,
            "files": [
                {
                    "node": n.name,
                    "archive": n.archive.key,
                    "path": f.path,
                    "kind": f.kind,
                    "bytes": f.size,
                    "sha256": f.sha256,
                }
                for n in m.nodes
                for f in n.files
            ],
        }

    def print_text(self) -> None:
        m = self.manifest
        rows = [
            (n.name, f"{n.archive.key}:{f.path}", f.kind, str(f.size), human(f.size))
            for n in m.nodes
            for f in n.files
        ]
        print_table(("NODE", "FILE", "KIND", "BYTES", "SIZE"), rows)
        total = sum(f.size for n in m.nodes for f in n.files)
        count = len(rows)
        typer.echo(
            f"{count} file{'s' if count != 1 else ''}, {human(total)} unpacked "
            f"({human(m.size)} stored)"
        )


def ls(
    args: StoreIdArgs,
    target: TargetOpt = None,
    endpoint: EndpointOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the files in a backup's archives, with their sizes.

    Example: backupctl ls /backups backup-20250101-020000
    """
    r = one_id(args, target, endpoint)
    with user_errors():
        entry = find_one(r)
        assert entry.manifest is not None
        report(Listed(entry.manifest), as_json=as_json, termination_log=None)
