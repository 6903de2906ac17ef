"""``backupctl run``: take a backup of one Redis server (or every shard of a
cluster, or the node Sentinel names) and stream it to a store.

Hooks into the run's steps (:class:`~backupctl.ops.backup_options.RunHooks`)
come as click's context object (``app(args, obj=RunHooks(...))``).

The options are declared at module level so the command reads as what it
does: check the flags, pick the node, back up, report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from backupctl.cli.exit_codes import ExitCode
from backupctl.cli.logs import LogFormatOpt, QuietOpt, VerboseOpt, log
from backupctl.cli.options import (
    ConcurrencyOpt,
    EncryptToFileOpt,
    EncryptToOpt,
    EndpointOpt,
    JsonOpt,
    LimitUploadOpt,
    LockDaysOpt,
    LockModeOpt,
    PartSizeOpt,
    SigningKeyOpt,
    TermLogOpt,
    get_store,
    recipients,
    redis_spec,
    transfer,
)
from backupctl.cli.output import (
    CommandResult,
    backup_summary,
    fail,
    human,
    note,
    plural,
    report,
    user_errors,
)
from backupctl.cli.progress import Meter, progress
from backupctl.ops.backup import run_backup, run_shard_backup
from backupctl.ops.backup_options import RunHooks, RunOptions
from backupctl.redis import sentinel
from backupctl.store import catalog
from backupctl.store.archive import COMPRESSIONS
from backupctl.store.backends.s3_options import parse_lock
from backupctl.store.backup_set import DEFAULT_OWNER, ShardOutcome, parse_shard
from backupctl.store.catalog import Manifest
from backupctl.store.signing import load_signer

ToOpt = Annotated[
    str, typer.Option("--to", help="Store URL to write the backup to.", show_default=False)
]
RedisOpt = Annotated[
    str | None,
    typer.Option(
        "--redis",
        help="redis://[user:pass@]host:port (rediss:// for TLS). Password also from "
        "--password-file or REDIS_PASSWORD. With --sentinel: only the user, password and "
        "TLS options of the nodes Sentinel names (optional).",
        show_default=False,
    ),
]
TargetOpt = Annotated[
    str | None,
    typer.Option(
        "--target",
        help="Name to file the backup under (default: host-port, or the --master-name).",
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Where this server's data directory is readable (bgsave; default: the "
        "server's CONFIG GET dir).",
    ),
]
MethodOpt = Annotated[
    str, typer.Option("--method", help="bgsave (read the RDB file) or replication (stream it).")
]
PauseRdbCompressionOpt = Annotated[
    bool,
    typer.Option(
        "--pause-rdbcompression",
        help="With --method replication: switch the server's rdbcompression off until the "
        "snapshot child is forked (then back on; also when stopped by SIGTERM or Ctrl-C), so "
        "the child skips LZF and zstd alone compresses the stream: less work on the server, "
        "smaller archives. Off by default: the server's settings are never touched.",
    ),
]
KeepRdbCompressionOpt = Annotated[
    bool,
    typer.Option(
        "--keep-rdbcompression",
        hidden=True,
        help="Deprecated, does nothing: leaving rdbcompression alone is now the default "
        "(see --pause-rdbcompression).",
    ),
]
CompressionOpt = Annotated[str, typer.Option("--compression", help="zstd, gzip or none.")]
LevelOpt = Annotated[
    int | None,
    typer.Option("--level", help="Compression level: zstd 1-22 (default 3), gzip 1-9 (default 6)."),
]
#: The levels each compression accepts.
LEVELS = {"zstd": range(1, 23), "gzip": range(1, 10)}
NodeNameOpt = Annotated[
    str | None,
    typer.Option("--node-name", help="Archive name for this node (default: host-port)."),
]
PasswordFileOpt = Annotated[
    Path | None, typer.Option("--password-file", help="File holding the Redis password.")
]
ClusterOpt = Annotated[
    bool,
    typer.Option(
        "--cluster",
        help="Back up every shard of the Redis Cluster this node belongs to, in parallel, "
        "as one backup set.",
    ),
]
PreferReplicaOpt = Annotated[
    bool,
    typer.Option(
        "--prefer-replica",
        help="Back up a healthy replica: of each shard (--cluster), of the master Sentinel "
        "names (--sentinel), else of the primary given (an online one in its INFO "
        "replication); the primary when there is none (a note on stderr says so).",
    ),
]
RequireReplicaOpt = Annotated[
    bool,
    typer.Option(
        "--require-replica",
        help="Like --prefer-replica, but fail when no healthy replica is found "
        "(not with --cluster).",
    ),
]
SentinelOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--sentinel",
        help="redis://[user:pass@]host[:26379] of a Sentinel (repeat for several): back up "
        "the current master of --master-name (or a replica with --prefer-replica).",
        show_default=False,
    ),
]
MasterNameOpt = Annotated[
    str | None,
    typer.Option("--master-name", help="With --sentinel: the monitored master's name."),
]
SentinelPasswordFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--sentinel-password-file",
        help="File holding the Sentinels' password (also REDIS_SENTINEL_PASSWORD).",
    ),
]
ShardOpt = Annotated[
    str | None,
    typer.Option(
        "--shard",
        help="With --cluster and --id: back up only shard I of N (I/N; shards in the order "
        "of their first slot). Run all N, in any order or at once, with the same --id; the "
        "last one to finish writes the manifest.",
        show_default=False,
    ),
]
BackupIdOpt = Annotated[
    str | None,
    typer.Option(
        "--id",
        help="Write into this backup id (backup-YYYYMMDD-HHMMSS) instead of a new one; "
        "refused when that backup is already complete.",
        show_default=False,
    ),
]
OwnerOpt = Annotated[
    str,
    typer.Option(
        "--owner",
        help="With --shard: who writes the set. Shard runs of another owner under the "
        "same --id are refused.",
    ),
]
TimeoutOpt = Annotated[
    float,
    typer.Option("--timeout", min=1, help="Seconds to wait for the snapshot."),
]


@dataclass(frozen=True)
class BackupDone(CommandResult):
    """A whole backup (one server, or every shard of a cluster) was stored."""

    manifest: Manifest
    store: str
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"ok": True, **self.manifest.to_json(), "store": self.store,
                "seconds": round(self.seconds, 3)}  # fmt: skip

    def termination_json(self) -> dict[str, Any]:
        return {"ok": True, **backup_summary(self.manifest)}

    def print_text(self) -> None:
        m = self.manifest
        typer.echo(m.id)  # stdout: the id alone, for id=$(backupctl run ...)
        log(
            "info",
            f"stored {m.id} of {m.target} in {self.store}: {human(m.size)}, "
            f"{plural(m.keys, 'key')}, {plural(len(m.nodes), 'node')}, {self.seconds:.1f} s",
            event="stored", id=m.id, target=m.target, store=self.store, size=m.size,
            keys=m.keys, seconds=round(self.seconds, 3),
        )  # fmt: skip


@dataclass(frozen=True)
class ShardDone(CommandResult):
    """One shard's result: the shard's own figures (the controller adds up
    the N shard Jobs), and whether the set is complete."""

    outcome: ShardOutcome

    def to_json(self) -> dict[str, Any]:
        outcome, record = self.outcome, self.outcome.record
        return {
            "ok": True,
            "id": record.id,
            "target": record.target,
            "shard": record.shard,
            "shards": record.shards,
            "node": catalog.node_to_json(record.node),
            "recorded": outcome.recorded,
            "complete": outcome.complete,
            "manifest": outcome.manifest.to_json() if outcome.manifest else None,
        }

    def termination_json(self) -> dict[str, Any]:
        record, node = self.outcome.record, self.outcome.record.node
        return {
            "ok": True,
            "id": record.id,
            "target": record.target,
            "time": node.snapshot_time,
            "size": node.archive.size,
            "keys": node.keys,
            "sha256": node.archive.sha256,
            "shard": record.shard,
            "shards": record.shards,
            "complete": self.outcome.complete,
        }

    def print_text(self) -> None:
        outcome, record, node = self.outcome, self.outcome.record, self.outcome.record.node
        typer.echo(record.id)
        done = "already stored" if outcome.reused else f"stored ({node.name}, {node.keys} keys)"
        state = (
            "the set is complete"
            if outcome.complete
            else f"{outcome.recorded} of {record.shards} shards stored so far"
        )
        typer.echo(f"shard {record.shard}/{record.shards} {done}; {state}", err=True)


def run(
    ctx: typer.Context,
    to: ToOpt,
    redis_url: RedisOpt = None,
    target: TargetOpt = None,
    data_dir: DataDirOpt = None,
    method: MethodOpt = "bgsave",
    pause_rdbcompression: PauseRdbCompressionOpt = False,
    keep_rdbcompression: KeepRdbCompressionOpt = False,
    compression: CompressionOpt = "zstd",
    level: LevelOpt = None,
    node_name: NodeNameOpt = None,
    password_file: PasswordFileOpt = None,
    cluster: ClusterOpt = False,
    prefer_replica: PreferReplicaOpt = False,
    require_replica: RequireReplicaOpt = False,
    sentinels: SentinelOpt = None,
    master_name: MasterNameOpt = None,
    sentinel_password_file: SentinelPasswordFileOpt = None,
    shard: ShardOpt = None,
    backup_id: BackupIdOpt = None,
    owner: OwnerOpt = DEFAULT_OWNER,
    endpoint: EndpointOpt = None,
    timeout: TimeoutOpt = 3600.0,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    log_format: LogFormatOpt = "text",
    termination_log: TermLogOpt = None,
    encrypt_to: EncryptToOpt = None,
    encrypt_to_file: EncryptToFileOpt = None,
    signing_key: SigningKeyOpt = None,
    lock_mode: LockModeOpt = None,
    lock_days: LockDaysOpt = None,
    limit_upload: LimitUploadOpt = None,
    part_size: PartSizeOpt = None,
    concurrency: ConcurrencyOpt = None,
) -> None:
    """Take a backup of one Redis server and stream it to a store."""
    try:
        uploads = transfer(part_size, concurrency)
    except typer.BadParameter as e:
        fail(e.format_message(), code=ExitCode.USAGE, termination_log=termination_log)
    if method not in ("bgsave", "replication"):
        fail(
            f"--method must be bgsave or replication, not {method!r}",
            code=ExitCode.USAGE,
            termination_log=termination_log,
        )
    if compression not in COMPRESSIONS:
        fail(
            f"--compression must be one of {', '.join(COMPRESSIONS)}, not {compression!r}",
            code=ExitCode.USAGE,
            termination_log=termination_log,
        )
    if level is not None and level not in LEVELS.get(compression, range(0)):
        allowed = LEVELS.get(compression)
        fail(
            f"--level {level} is out of range for --compression {compression}: use "
            + (f"{allowed.start}-{allowed.stop - 1}" if allowed else "no --level with none"),
            code=ExitCode.USAGE,
            termination_log=termination_log,
        )
    if pause_rdbcompression and keep_rdbcompression:
        fail(
            "--pause-rdbcompression and --keep-rdbcompression contradict each other: pick one "
            "(--keep-rdbcompression is the default now and can be left out)",
            code=ExitCode.USAGE,
            termination_log=termination_log,
        )
    if shard is not None and not (cluster and backup_id):
        fail(
            "--shard needs --cluster and --id: every shard's run writes into the same backup",
            code=ExitCode.USAGE,
            termination_log=termination_log,
        )
    with user_errors(termination_log):
        spec = redis_spec(redis_url or sentinel.ANY_HOST, password_file)
        choice = sentinel.choose_node(
            spec, redis_url is not None, sentinels or [], master_name,
            sentinel_password_file=str(sentinel_password_file) if sentinel_password_file else None,
            prefer_replica=prefer_replica, require_replica=require_replica, cluster=cluster,
        )  # fmt: skip
        if choice.note:
            note(choice.note)
        result: CommandResult
        started = time.monotonic()
        with progress("connect", enabled=not as_json) as meter:
            hooks = _labelled(ctx.find_object(RunHooks) or RunHooks(), meter)
            result = _backup(meter, started, RunOptions(
            redis=choice.spec,
            store=get_store(
                to, endpoint, lock=parse_lock(lock_mode, lock_days), transfer=uploads,
                limit_upload=limit_upload,
            ),
            target=target or choice.target,
            method=method,
            compression=compression,
            level=level,
            data_dir=data_dir,
            node_name=node_name,
            timeout=timeout,
            cluster=cluster,
            prefer_replica=prefer_replica,
            pause_rdbcompression=pause_rdbcompression,
            backup_id=backup_id,
            shard=parse_shard(shard) if shard is not None else None,
            owner=owner,
            encrypt_to=recipients(encrypt_to, encrypt_to_file),
            signer=load_signer(signing_key),
            hooks=hooks,
            ))  # fmt: skip
        report(result, as_json=as_json, termination_log=termination_log)


#: What the progress line calls each step of :data:`~backupctl.ops.backup_options.STEPS`.
STEP_LABELS = {
    "snapshot": "waiting for BGSAVE",
    "stream": "replication stream",
    "upload": "upload",
    "manifest": "writing manifest",
}


def _labelled(hooks: RunHooks, meter: Meter) -> RunHooks:
    """``hooks``, also naming each step on the progress line."""

    def on_step(step: str) -> None:
        # the archive's size is known before its first bytes: keep it for "upload"
        meter.step(STEP_LABELS.get(step, step), keep_total=step == "upload")
        hooks.on_step(step)

    return RunHooks(on_step=on_step)


def _backup(meter: Meter, started: float, opts: RunOptions) -> CommandResult:
    if opts.shard is not None:
        outcome = run_shard_backup(opts, progress=meter.advance, on_size=meter.set_total)
        return ShardDone(outcome)
    manifest = run_backup(opts, progress=meter.advance, on_size=meter.set_total)
    return BackupDone(manifest, opts.store.url, time.monotonic() - started)
