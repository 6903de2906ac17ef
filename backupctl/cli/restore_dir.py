"""``backupctl restore --to-dir``: a backup into a (stopped) Redis' data
directory, whole or in steps (``--stage-only`` while Redis runs, ``--swap``
once it is stopped, ``--discard-staged`` to give up); and ``--dry-run``,
which only resolves the backup."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from backupctl.cli.exit_codes import ExitCode
from backupctl.cli.options import get_store, identities, trust
from backupctl.cli.output import (
    CommandResult,
    backup_json,
    fail,
    report,
    user_errors,
)
from backupctl.cli.progress import Meter, progress
from backupctl.cli.restore_modes import RestoreRequest
from backupctl.core.compat import display
from backupctl.ops.restore_dir import (
    Discarded,
    RestoreError,
    RestoreResult,
    discard_staged,
    refuse_in_use,
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
            "recovered": _recovered_json(r),
            "leftoversRemoved": [str(p) for p in r.leftovers],
        }

    def print_text(self) -> None:
        r = self.result
        for line in r.notes():
            typer.echo(line)
        if self.staged:
            typer.echo(f"staged {r.id} ({r.keys} keys) in {r.dir}; run --swap next")
        else:
            prev = f"; previous data kept in {r.previous}" if r.previous else ""
            typer.echo(f"restored {r.id} ({r.keys} keys) into {r.dir}{prev}")


def _recovered_json(r: RestoreResult) -> dict[str, Any] | None:
    rec = r.recovered
    if rec is None:
        return None
    return {"id": rec.id, "action": rec.action, "pid": rec.pid, "message": rec.line()}


@dataclass(frozen=True)
class StagedDiscarded(CommandResult):
    """What ``--discard-staged`` removed: the real paths."""

    id: str
    discarded: Discarded

    def to_json(self) -> dict[str, Any]:
        rec = self.discarded.recovered
        return {
            "ok": True,
            "id": self.id,
            "removed": [p.name for p in self.discarded.removed],
            "paths": [str(p) for p in self.discarded.removed],
            "recovered": None if rec is None else {"id": rec.id, "action": rec.action,
                                                   "pid": rec.pid, "message": rec.line()},
        }  # fmt: skip

    def print_text(self) -> None:
        if self.discarded.recovered is not None:
            typer.echo(self.discarded.recovered.line())
        if self.discarded.removed:
            typer.echo(f"removed {', '.join(str(p) for p in self.discarded.removed)}")


@dataclass(frozen=True)
class WouldRestore(CommandResult):
    """What a restore of the resolved backup would load (``--dry-run``)."""

    manifest: Manifest

    def to_json(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "ok": True,
            "dryRun": True,
            **backup_json(m),
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
        signed_by = trust(req.verify_key, req.require_signatures)
        store = get_store(req.store_url, req.endpoint, limit_download=req.limit_download)
        entry = catalog.find(store, req.backup, req.target, trust=signed_by)
        assert entry.manifest is not None  # find() returns complete backups only
        report(WouldRestore(entry.manifest), as_json=req.as_json,
               termination_log=req.termination_log)  # fmt: skip


def check_to_dir(to_dir: Path, *, termination_log: Path | None) -> None:
    """Refuse a DIR whose parent is missing (a typo, as ``run --to`` refuses
    a missing store folder); a new DIR in an existing folder is made."""
    if to_dir.exists():
        return
    parent = to_dir.absolute().parent
    if not parent.is_dir():
        fail(
            f"--to-dir {to_dir}: {parent} does not exist: check the path, or create it with "
            f"mkdir -p {to_dir}",
            code=ExitCode.NOT_FOUND,
            termination_log=termination_log,
        )


#: Called before each step of the swap (tests kill the process there).
StepHook = Callable[[str], None]


def restore_into_dir(req: RestoreRequest, *, before_step: StepHook | None = None) -> None:
    """``--to-dir``: download, verify and swap in; or one of those steps.
    SIGTERM, like Ctrl-C, stops it with the staging folder removed."""
    assert req.to_dir is not None
    check_to_dir(req.to_dir, termination_log=req.termination_log)
    with user_errors(req.termination_log):  # SIGTERM/SIGINT unwind: the clean-up runs
        if req.swap or req.discard_staged:
            result = _staged_step(req, req.to_dir, before_step)
        else:
            result = DirRestored(_download(req, req.to_dir, before_step), staged=req.stage_only)
        report(result, as_json=req.as_json, termination_log=req.termination_log)


def _download(req: RestoreRequest, to_dir: Path, before_step: StepHook | None) -> RestoreResult:
    keys = identities(list(req.identity))
    signed_by = trust(req.verify_key, req.require_signatures)
    store = get_store(req.store_url, req.endpoint, limit_download=req.limit_download)
    entry = catalog.find(store, req.backup, req.target, trust=signed_by)
    if not req.stage_only and not req.force:
        refuse_in_use(to_dir)
    with progress("download and verify", enabled=not req.as_json) as meter:
        meter.set_total(entry.manifest.size if entry.manifest else 0)
        if req.stage_only:
            return stage_to_dir(store, entry, to_dir, appendonly=req.appendonly, node=req.node,
                                prefer_aof=req.prefer_aof, progress=meter.advance,
                                redis_server=req.redis_server, identities=keys)  # fmt: skip
        return restore_to_dir(store, entry, to_dir, appendonly=req.appendonly, node=req.node,
                              prefer_aof=req.prefer_aof, progress=meter.advance,
                              redis_server=req.redis_server,
                              before_step=_labelled(meter, before_step),
                              identities=keys)  # fmt: skip


def _labelled(meter: Meter, before_step: StepHook | None) -> StepHook:
    """``before_step``, also naming each swap step on the progress line."""

    def step(name: str) -> None:
        meter.step(f"swap: {name}")
        if before_step is not None:
            before_step(name)

    return step


def _staged_step(req: RestoreRequest, to_dir: Path, before_step: StepHook | None) -> CommandResult:
    """``--swap`` or ``--discard-staged``: what an earlier ``--stage-only`` left."""
    step = "--swap" if req.swap else "--discard-staged"
    backup_id = catalog.normalize_ref(req.backup)
    if backup_id == "latest":
        raise RestoreError(f"{step} needs the id of the staged backup, not 'latest'")
    if req.discard_staged:
        discarded = discard_staged(to_dir, backup_id)
        if not discarded.removed and discarded.recovered is None:
            raise RestoreError(f"nothing staged for {backup_id} in {to_dir}: nothing was removed")
        return StagedDiscarded(backup_id, discarded)
    with progress("swap", enabled=not req.as_json) as meter:
        result = swap_staged(to_dir, backup_id, before_step=_labelled(meter, before_step),
                             refuse_busy=not req.force)  # fmt: skip
    return DirRestored(result, staged=False)
