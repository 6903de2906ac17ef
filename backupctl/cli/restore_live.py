"""``backupctl restore --to-redis`` and ``--to-cluster``: a backup into
running servers: key by key into one Redis (or across a cluster's masters),
or in place into a Redis Cluster whose nodes' data directories are on this
machine (staged, swapped, optionally restarted, and verified)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from backupctl.cli.options import get_store, identities, redis_spec, trust
from backupctl.cli.output import CommandResult, backup_progress, note, plural, report, user_errors
from backupctl.cli.progress import progress
from backupctl.cli.restore_modes import RestoreRequest
from backupctl.ops.restore_dir import RestoreError
from backupctl.ops.scratch import check_parent
from backupctl.store import catalog

if TYPE_CHECKING:  # the ops modules themselves are imported by the commands that use them
    from backupctl.ops.restore_cluster import ClusterRestoreResult
    from backupctl.ops.restore_cluster_restart import ShardCheck
    from backupctl.ops.restore_server import LoadResult


@dataclass(frozen=True)
class Loaded(CommandResult):
    """A backup loaded key by key into a running Redis (or cluster)."""

    result: LoadResult

    def to_json(self) -> dict[str, Any]:
        r = self.result
        return {
            "ok": True,
            "id": r.id,
            "target": r.target,
            "node": r.nodes[0] if len(r.nodes) == 1 else None,
            "nodes": list(r.nodes),
            "redis": r.redis,
            "cluster": r.cluster,
            "keys": r.keys,
            "expired": r.expired,
            "databases": {str(db): n for db, n in r.databases.items()},
            "masters": r.masters,
            "functions": r.functions,
            "flushed": r.flushed,
            "rebuilt": r.rebuilt,
            "relabelled": r.relabelled,
        }

    def print_text(self) -> None:
        r = self.result
        expired = f", {r.expired} expired since the backup" if r.expired else ""
        where = plural(len(r.databases), "database")
        if r.cluster:
            per_master = ", ".join(f"{m}: {n}" for m, n in r.masters.items())
            where = f"{len(r.masters)} cluster masters ({per_master})"
        typer.echo(f"loaded {r.id} into {r.redis}: {r.keys} keys in {where}{expired}")


@dataclass(frozen=True)
class ClusterVerified(CommandResult):
    """``--to-cluster --verify-only``: the cluster serves the backup."""

    id: str
    keys: int
    checks: list[ShardCheck]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "id": self.id,
            "verified": True,
            "keys": self.keys,
            # Every shard's master loaded exactly its shard's keys at its last start.
            "restoredKeys": sum(c.keys for c in self.checks),
            "shards": [
                {
                    "slots": [list(r) for r in c.slots],
                    "backupNode": c.backup_node,
                    "keys": c.keys,
                    "nodes": [n.json() for n in c.nodes],
                }
                for c in self.checks
            ],
        }

    def termination_fallbacks(self) -> tuple[dict[str, Any], ...]:
        data = self.to_json()
        shards = [{k: v for k, v in shard.items() if k != "nodes"} for shard in data["shards"]]
        return ({**data, "shards": shards},)

    def print_text(self) -> None:
        from backupctl.core.slots import format_slots

        for c in self.checks:
            typer.echo(
                f"slots {format_slots(c.slots)}: {c.keys} keys of {c.backup_node} on "
                + ", ".join(f"{n.redis} ({n.role})" for n in c.nodes)
            )
        typer.echo(f"verified: the cluster serves {self.id} ({self.keys} keys)")


@dataclass(frozen=True)
class ClusterRestored(CommandResult):
    """A cluster backup set swapped in on every node (and maybe restarted)."""

    result: ClusterRestoreResult
    verify_cmd: str  # what to run after restarting the nodes by hand

    def to_json(self) -> dict[str, Any]:
        r = self.result
        return {
            "ok": True,
            "id": r.id,
            "target": r.target,
            "keys": r.keys,
            "restarted": r.restarted,
            "verified": r.checks is not None,
            "shards": [
                {
                    "slots": [list(s) for s in p.slots],
                    "backupNode": p.backup.name,
                    "keys": p.backup.keys,
                    "nodes": [
                        {
                            "redis": m.display,
                            "nodeId": m.node_id,
                            "role": m.role,
                            "dir": str(m.dir),
                            "previous": _str_or_none(r.previous[m.display]),
                        }
                        for m in p.members
                    ],
                }
                for p in r.shards
            ],
            "next": None if r.restarted else self.verify_cmd,
        }

    def print_text(self) -> None:
        from backupctl.core.slots import format_slots

        r = self.result
        for p in r.shards:
            typer.echo(
                f"slots {format_slots(p.slots)}: {p.backup.keys} keys of {p.backup.name} -> "
                + ", ".join(f"{m.display} ({m.role}, {m.dir})" for m in p.members)
            )
        typer.echo("previous data kept in each dir's .backupctl-previous-<time>/")
        if r.restarted:
            typer.echo(f"restarted and verified: the cluster serves {r.id} ({r.keys} keys)")
            return
        typer.echo(
            f"swapped {r.id} in on every node; they still serve the old data from memory "
            "and are quiesced (they write nothing to disk: what clients write now is lost).\n"
            "Next, restart every node, all at once (do not resume them: a save would write the "
            "old data over the restored files):"
        )
        for p in r.shards:
            for m in p.members:
                host, port = m.spec.host, m.spec.port
                typer.echo(f"  redis-cli -h {host} -p {port} SHUTDOWN NOSAVE NOW   # then start it")
        typer.echo(f"then verify:\n  {self.verify_cmd}")


def _str_or_none(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def restore_into_redis(req: RestoreRequest) -> None:
    """``--to-redis``: load the backup key by key into a running server."""
    from backupctl.ops.restore_server import restore_to_redis

    assert req.to_redis is not None
    with user_errors(req.termination_log):
        spec = redis_spec(req.to_redis, req.password_file)
        if req.tmp_dir is not None:
            check_parent(req.tmp_dir)  # before any download
        keys = identities(list(req.identity))
        signed_by = trust(req.verify_key, req.require_signatures)
        store = get_store(req.store_url, req.endpoint, limit_download=req.limit_download)
        entry = catalog.find(store, req.backup, req.target, trust=signed_by)
        # one display for both steps: "download" (and verify), then "load" (keys)
        with progress("download", enabled=not req.as_json) as meter:
            if entry.manifest:
                meter.set_total(entry.manifest.size)
            result = restore_to_redis(
                store, entry, spec, flush=req.flush, node=req.node, tmp_dir=req.tmp_dir,
                progress=meter.advance, note=note, no_tmp=req.no_tmp, identities=keys,
                large_value_threshold=req.large_value_threshold, load_progress=meter.load,
            )  # fmt: skip
        report(Loaded(result), as_json=req.as_json, termination_log=req.termination_log)


def restore_into_cluster(req: RestoreRequest) -> None:
    """``--to-cluster``: stage, swap (and with ``--restart`` restart and
    verify) in place; or with ``--verify-only`` only verify."""
    from backupctl.ops.restore_cluster import restore_to_cluster
    from backupctl.ops.restore_cluster_restart import verify

    assert req.to_cluster is not None
    with user_errors(req.termination_log):
        seed = redis_spec(req.to_cluster, req.password_file)
        if req.verify_only and catalog.normalize_ref(req.backup) == "latest":
            raise RestoreError(
                "--verify-only needs the id of the restored backup, not 'latest' (a newer "
                "backup may exist by now)"
            )
        keys = identities(list(req.identity))
        signed_by = trust(req.verify_key, req.require_signatures)
        store = get_store(req.store_url, req.endpoint, limit_download=req.limit_download)
        entry = catalog.find(store, req.backup, req.target, trust=signed_by)
        assert entry.manifest is not None  # find() returns complete backups only
        result: CommandResult
        if req.verify_only:
            checks = verify(entry.manifest, seed, wait=req.timeout)
            result = ClusterVerified(entry.id, entry.manifest.keys, checks)
        else:
            with backup_progress("restore", entry, not req.as_json) as advance:
                restored = restore_to_cluster(
                    store, entry, seed, appendonly=req.appendonly, restart_nodes=req.restart,
                    timeout=req.timeout, progress=advance, identities=keys,
                )  # fmt: skip
            verify_cmd = (
                f"backupctl restore {req.store_url} {restored.id} --target {restored.target} "
                f"--to-cluster {seed} --verify-only"
            )
            result = ClusterRestored(restored, verify_cmd)
        report(result, as_json=req.as_json, termination_log=req.termination_log)
