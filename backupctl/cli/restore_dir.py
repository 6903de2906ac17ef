"""``backupctl restore --to-dir``: a backup into a (stopped) Redis' data
directory, whole or in steps (``--stage-only`` while Redis runs, ``--swap``
once it is stopped, ``--discard-staged`` to give up); and ``--dry-run``,
which only resolves the backup."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from backupctl.cli.options import get_store
from backupctl.cli.output import (
    CommandResult,
    backup_progress,
    backup_summary,
    report,
    user_errors,
)
from backupctl.cli.restore_modes import RestoreRequest
from backupctl.core.compat import display
from backupctl.ops.restore_dir import (
    RestoreError,
    RestoreResult,
    discard_staged,
    restore_to_dir,
    stage_to_dir,
    swap_staged,
)
from backupctl.store import catalog
from backupctl.store.catalog import Manifest


@dataclass(frozen=True)
class DirRestored(CommandResult):
    """A backup restored (or staged, or swapped in) in a data directory."""

    result: RestoreResult
    staged: bool

    def to_json(self) -> dict[str, Any]:
        r = self.result
        return {
            "ok": True,
            "id": r.id,
            "target": r.target,
            "node": r.node,
            "dir": str(r.dir),
            "files": r.files,
            "previous": str(r.previous) if r.previous else None,
            "keys": r.keys,
            "staged": self.staged,
        }

    def print_text(self) -> None:
        r = self.result
        if self.staged:
            typer.echo(f"staged {r.id} ({r.keys} keys) in {r.dir}; run --swap next")
        else:
            prev = f"; previous data kept in {r.previous}" if r.previous else ""
            typer.echo(f"restored {r.id} ({r.keys} keys) into {r.dir}{prev}")


@dataclass(frozen=True)
class StagedDiscarded(CommandResult):
    id: str
    removed: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"ok": True, "id": self.id, "removed": self.removed}

    def print_text(self) -> None:
        typer.echo(f"removed {', '.join(self.removed)}")


@dataclass(frozen=True)
class WouldRestore(CommandResult):
    """What a restore of the resolved backup would load (``--dry-run``)."""

    manifest: Manifest

    def to_json(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "ok": True,
            "dryRun": True,
            **backup_summary(m),
            "redisVersion": m.redis_version,
            "flavour": m.flavour,
            "serverVersion": m.version,
            "mode": m.mode,
            "nodes": [
                {
                    "name": n.name,
                    "role": n.role,
                    "keys": n.keys,
                    "redisVersion": n.redis_version,
                    "flavour": n.flavour,
                    "serverVersion": n.version,
                    "rdbMagic": n.rdb_magic,
                    "rdbVersion": n.rdb_version,
                    "aofEnabled": n.aof_enabled,
                    "nodeId": n.node_id,
                    "slots": n.slots,
                }
                for n in m.nodes
            ],
        }

    def print_text(self) -> None:
        m = self.manifest
        typer.echo(
            f"would restore {m.id} of {m.target} ({m.keys} keys, {display(m.flavour, m.version)}, "
            f"{len(m.nodes)} node(s): {', '.join(n.name for n in m.nodes)})"
        )


def restore_dry_run(req: RestoreRequest) -> None:
    """Resolve the backup (e.g. 'latest') once and say what a restore would load."""
    with user_errors(req.termination_log):
        entry = catalog.find(get_store(req.store_url, req.endpoint), req.backup, req.target)
        assert entry.manifest is not None  # find() returns complete backups only
        report(WouldRestore(entry.manifest), as_json=req.as_json,
               termination_log=req.termination_log)  # fmt: skip


def restore_into_dir(req: RestoreRequest) -> None:
    """``--to-dir``: download, verify and swap in; or one of those steps."""
    assert req.to_dir is not None
    with user_errors(req.termination_log):
        if req.swap or req.discard_staged:
            result = _staged_step(req, req.to_dir)
        else:
            result = DirRestored(_download(req, req.to_dir), staged=req.stage_only)
        report(result, as_json=req.as_json, termination_log=req.termination_log)


def _download(req: RestoreRequest, to_dir: Path) -> RestoreResult:
    store = get_store(req.store_url, req.endpoint)
    entry = catalog.find(store, req.backup, req.target)
    with backup_progress("restore", entry, not req.as_json) as advance:
        return (stage_to_dir if req.stage_only else restore_to_dir)(
            store,
            entry,
            to_dir,
            appendonly=req.appendonly,
            node=req.node,
            prefer_aof=req.prefer_aof,
            progress=advance,
            redis_server=req.redis_server,
        )


def _staged_step(req: RestoreRequest, to_dir: Path) -> CommandResult:
    """``--swap`` or ``--discard-staged``: what an earlier ``--stage-only`` left."""
    step = "--swap" if req.swap else "--discard-staged"
    backup_id = catalog.normalize_ref(req.backup)
    if backup_id == "latest":
        raise RestoreError(f"{step} needs the id of the staged backup, not 'latest'")
    if req.discard_staged:
        return StagedDiscarded(backup_id, discard_staged(to_dir, backup_id))
    return DirRestored(swap_staged(to_dir, backup_id), staged=False)
