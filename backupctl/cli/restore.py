"""``backupctl restore``: its options, and the dispatch to one function per
mode (:mod:`backupctl.cli.restore_dir`, :mod:`backupctl.cli.restore_live`)
after the flags were checked against the table in
:mod:`backupctl.cli.restore_modes`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperOption

from backupctl.cli.exit_codes import ExitCode
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
)
from backupctl.cli.output import fail
from backupctl.cli.restore_dir import restore_dry_run, restore_into_dir
from backupctl.cli.restore_live import restore_into_cluster, restore_into_redis
from backupctl.cli.restore_modes import (
    CLUSTER,
    DIR,
    REDIS,
    FlagError,
    RestoreRequest,
    mode_of,
    parse_size,
)
from backupctl.core.malloc import tune_for_bulk_reading
from backupctl.ops.restore_dir import APPENDONLY_MODES

#: The function of each mode (a dry run has its own).
MODES: dict[str, Callable[[RestoreRequest], None]] = {
    DIR: restore_into_dir,
    REDIS: restore_into_redis,
    CLUSTER: restore_into_cluster,
}

BackupArg = Annotated[
    str, typer.Argument(help="Backup id (or archive name), or 'latest'.", show_default=False)
]
ToDirOpt = Annotated[
    Path | None,
    typer.Option(DIR, help="Redis data directory to stage the backup into (stop Redis first)."),
]
ToRedisOpt = Annotated[
    str | None,
    typer.Option(
        REDIS,
        help="Load the backup into this running Redis, key by key (redis://[user:pass@]"
        "host:port; password also from --password-file or REDIS_PASSWORD).",
    ),
]
ToClusterOpt = Annotated[
    str | None,
    typer.Option(
        CLUSTER,
        help="Restore a cluster backup set in place into this running Redis Cluster "
        "(redis://host:port of any node): each shard's archive is staged into the data "
        "directory of every node now serving the same slots (they must be on this machine), "
        "then every node is quiesced and the files are swapped. Restart every node next, or "
        "pass --restart.",
    ),
]
RestartOpt = Annotated[
    bool,
    typer.Option(
        "--restart",
        help="With --to-cluster: then SHUTDOWN NOSAVE every node at once and wait (up to "
        "--timeout) until each is running again, and verify. Something must start them "
        "again: systemd, Kubernetes, a container restart policy.",
    ),
]
VerifyOnlyOpt = Annotated[
    bool,
    typer.Option(
        "--verify-only",
        help="With --to-cluster: change nothing, only verify that the cluster serves backup "
        "ID (cluster_state ok, all slots, each shard's master loaded the shard's key count, "
        "replicas in sync).",
    ),
]
TimeoutOpt = Annotated[
    float,
    typer.Option(
        "--timeout",
        min=1,
        help="With --to-cluster: seconds to wait for background saves to end, nodes to come "
        "back, load and sync.",
    ),
]
FlushOpt = Annotated[
    bool,
    typer.Option(
        "--flush",
        help="With --to-redis: FLUSHALL the server first (needed when it holds keys).",
    ),
]
PasswordFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--password-file", help="With --to-redis/--to-cluster: file holding the password."
    ),
]
TmpDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--tmp-dir", help="With --to-redis: where to unpack temporarily (default: system temp)."
    ),
]
RedisServerOpt = Annotated[
    str | None,
    typer.Option(
        "--redis-server",
        help="With --to-dir: the redis-server (or valkey-server) binary that will load DIR "
        "(a backup it cannot load is refused before DIR is touched).",
        show_default=False,
    ),
]
LargeValueOpt = Annotated[
    str,
    typer.Option(
        "--large-value-threshold",
        help="With --to-redis: a value whose RDB bytes are larger is never held in memory; it "
        "is rebuilt with bounded commands (SET+APPEND, RPUSH, SADD, ZADD, HSET, XADD) under a "
        "temporary name and renamed over the key. A size: 64MiB, 1MiB, or bytes.",
    ),
]
NoTmpOpt = Annotated[
    bool,
    typer.Option(
        "--no-tmp",
        help="With --to-redis: unpack nothing to disk; stream the archive from the store twice "
        "(the first pass verifies it, the second loads it, each block re-checked).",
    ),
]
StageOnlyOpt = Annotated[
    bool,
    typer.Option(
        "--stage-only",
        help="With --to-dir: download and verify into DIR/.backupctl-staging-ID/ and stop "
        "there (Redis may keep running); --swap puts it in place later.",
    ),
]
SwapOpt = Annotated[
    bool,
    typer.Option(
        "--swap",
        help="With --to-dir: move what --stage-only staged for ID into place (stop Redis "
        "first); no download. Safe to rerun.",
    ),
]
DiscardStagedOpt = Annotated[
    bool,
    typer.Option("--discard-staged", help="With --to-dir: remove what --stage-only staged for ID."),
]
DryRunOpt = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Only resolve the backup (e.g. 'latest') and print what would be restored.",
    ),
]
AppendonlyOpt = Annotated[
    str,
    typer.Option(
        "--appendonly",
        help="auto: stage both dump.rdb and an AOF folder so the server loads the backup "
        "with appendonly yes or no; yes: the same; no: dump.rdb only (an existing AOF folder "
        "is moved aside).",
    ),
]
PreferAofOpt = Annotated[
    bool,
    typer.Option(
        "--prefer-aof",
        help="Stage the AOF files copied at backup time instead of "
        "building the AOF folder from the RDB.",
    ),
]
ForceOpt = Annotated[
    bool,
    typer.Option(
        "--force",
        help="With --to-dir: restore (or --swap) even into a directory that a running process "
        "uses as its working directory (a running Redis would overwrite the restored files).",
    ),
]
NodeOpt = Annotated[str | None, typer.Option("--node", help="Which node of a multi-node backup.")]


def given_flags(ctx: typer.Context) -> set[str]:
    """The options the user gave (on the command line or by environment, not
    defaults), by flag."""
    given = set()
    for param in ctx.command.params:
        if isinstance(param, TyperOption) and param.name is not None:
            source = ctx.get_parameter_source(param.name)
            if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
                given.add(param.opts[0])
    return given


def restore(
    ctx: typer.Context,
    store_url: StoreArg,
    backup: BackupArg,
    to_dir: ToDirOpt = None,
    to_redis: ToRedisOpt = None,
    to_cluster: ToClusterOpt = None,
    restart: RestartOpt = False,
    verify_only: VerifyOnlyOpt = False,
    timeout: TimeoutOpt = 600.0,
    flush: FlushOpt = False,
    password_file: PasswordFileOpt = None,
    tmp_dir: TmpDirOpt = None,
    redis_server: RedisServerOpt = None,
    large_value_threshold: LargeValueOpt = "64MiB",
    no_tmp: NoTmpOpt = False,
    stage_only: StageOnlyOpt = False,
    swap: SwapOpt = False,
    discard_staged: DiscardStagedOpt = False,
    dry_run: DryRunOpt = False,
    appendonly: AppendonlyOpt = "auto",
    prefer_aof: PreferAofOpt = False,
    node: NodeOpt = None,
    force: ForceOpt = False,
    target: TargetOpt = None,
    endpoint: EndpointOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    log_format: LogFormatOpt = "text",
    termination_log: TermLogOpt = None,
    identity: IdentityOpt = None,
    verify_key: VerifyKeyOpt = None,
    require_signatures: RequireSignaturesOpt = False,
    limit_download: LimitDownloadOpt = None,
) -> None:
    """Restore a backup into a data directory (--to-dir), a running Redis (--to-redis) or,
    in place, a Redis Cluster whose nodes' data directories are on this machine (--to-cluster).

    Everything is verified before a data directory is touched, and the previous data is kept
    in DIR/.backupctl-previous-<time>/."""
    if appendonly not in APPENDONLY_MODES:
        fail(
            f"--appendonly must be one of {', '.join(APPENDONLY_MODES)}",
            code=ExitCode.USAGE,
            termination_log=termination_log,
        )
    try:
        mode = mode_of(given_flags(ctx))
        threshold = parse_size(large_value_threshold, "--large-value-threshold")
    except FlagError as e:
        fail(str(e), code=ExitCode.USAGE, termination_log=termination_log)
    req = RestoreRequest(
        store_url=store_url, backup=backup, target=target, endpoint=endpoint, as_json=as_json,
        termination_log=termination_log, to_dir=to_dir, to_redis=to_redis, to_cluster=to_cluster,
        appendonly=appendonly, node=node, prefer_aof=prefer_aof, stage_only=stage_only, swap=swap,
        discard_staged=discard_staged, flush=flush, tmp_dir=tmp_dir, password_file=password_file,
        restart=restart, verify_only=verify_only, timeout=timeout, redis_server=redis_server,
        force=force, large_value_threshold=threshold, no_tmp=no_tmp,
        identity=tuple(identity or ()), verify_key=tuple(verify_key or ()),
        require_signatures=require_signatures, limit_download=limit_download,
    )  # fmt: skip
    if dry_run or mode is None:  # mode_of allows no destination only with --dry-run
        restore_dry_run(req)
    else:
        tune_for_bulk_reading()
        MODES[mode](req)
