"""One node's backup: snapshot it, and stream its files as one archive
into the backup folder.

Why a module of its own: this is the data path, the same for a standalone
server, one shard of a cluster set, or every shard in parallel
(:mod:`backupctl.ops.backup` decides which nodes). It picks the snapshot
method -- BGSAVE and the files on the node's disk (RDB, plus the AOF
directory held open against rewrites), or the RDB streamed over replication
-- and returns the :class:`~backupctl.store.catalog.NodeEntry` the manifest
records; the archive is committed only once backupctl's RDB reader (and
redis-check-rdb, when it reads that version) accepted it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

from backupctl.core.timefmt import format_time
from backupctl.ops.backup_options import BackupError, RunOptions
from backupctl.ops.backup_rdb_check import watch_rdb
from backupctl.redis.address import ConnectionSpec
from backupctl.redis.bgsave import bgsave, wait_aof_rewrite_idle
from backupctl.redis.connection import Redis
from backupctl.redis.info import NodeInfo
from backupctl.redis.replication import RdbCompressionPause, replication_rdb
from backupctl.store import catalog
from backupctl.store.archive import (
    RAW_RDB_ZSTD_LEVEL,
    ArchiveResult,
    Member,
    Progress,
    file_member,
    write_archive,
)
from backupctl.store.catalog import ArchiveEntry, NodeEntry

__all__ = ["backup_node"]

#: How far the RDB's mtime may lag the snapshot before we call it stale.
MTIME_SLACK_SECONDS = 5.0
AOF_SNAPSHOT_ATTEMPTS = 5
#: zstd's worker threads for a replication stream: none. The server's fork
#: child producing the stream keeps a core busy for the whole transfer, so
#: workers add no parallelism on a small node, only the copy of every byte
#: into their job buffers and ~3 MiB of peak RSS (measured on 2 cores, 304
#: MiB RDB: the same CPU, lower wall). BGSAVE's file is read from the page
#: cache: there one worker per core keeps pace with sha256sum (issue 2).
REPLICATION_ZSTD_THREADS = 0

log = logging.getLogger(__name__)


def backup_node(
    opts: RunOptions,
    spec: ConnectionSpec,
    client: Redis,
    info: NodeInfo,
    backup_id: str | Future[str],
    node_name: str,
    now: Callable[[], datetime],
    progress: Progress | None,
    on_size: Callable[[int], None] | None,
) -> NodeEntry:
    """Snapshot one node and stream its archive into the backup folder.

    ``backup_id`` may still be being picked (a future, see
    :func:`backupctl.ops.backup.run_backup`): it is waited for once the
    snapshot has started, before the archive's first byte is stored."""
    with ExitStack() as stack:
        if opts.method == "bgsave":
            members, snapshot_time = _bgsave_members(opts, client, info, stack, now)
            raw = False
        elif opts.method == "replication":
            members, snapshot_time, raw = _replication_members(spec, opts, client, info, stack, now)
        else:
            raise BackupError(f"unknown method {opts.method!r}: use bgsave or replication")
        if isinstance(backup_id, Future):
            backup_id = backup_id.result()  # the stream is received meanwhile
        archive_key = catalog.backup_dir(opts.target, backup_id) + catalog.archive_name(
            node_name, opts.compression, encrypted=opts.encrypt_to is not None
        )
        sizes = [m.size for m in members]
        if on_size is not None and None not in sizes:
            on_size(sum(s for s in sizes if s is not None))
        members, header, checker = watch_rdb(
            members, check=opts.check_rdb, timeout=opts.timeout, stack=stack
        )
        with opts.store.writer(archive_key) as w:
            level = opts.level
            if level is None and raw and opts.compression == "zstd":
                level = RAW_RDB_ZSTD_LEVEL
            result: ArchiveResult = write_archive(
                w,
                members,
                opts.compression,
                level=level,
                progress=_first_call(opts, progress),
                encrypt_to=opts.encrypt_to,
                zstd_threads=REPLICATION_ZSTD_THREADS if opts.method == "replication" else -1,
            )
            keys = info.keys
            if checker is not None:
                verdict = checker.close()
                if verdict.problem is not None:
                    raise BackupError(
                        f"the RDB snapshot is not valid, so it was not kept: {verdict.problem}"
                    )
                if verdict.keys is not None:
                    keys = verdict.keys
            w.commit()
    return NodeEntry(
        name=node_name,
        role=info.role,
        redis_version=info.redis_version,
        rdb_version=header.version,
        flavour=info.flavour,
        server_version=catalog.own_version(info.version, info.redis_version),
        rdb_magic=header.magic,
        snapshot_time=format_time(snapshot_time),
        keys=keys,
        aof_enabled=info.appendonly,
        archive=ArchiveEntry(
            key=archive_key.rsplit("/", 1)[-1],
            size=result.size,
            sha256=result.sha256,
            compression=opts.compression,
            encrypted_to=list(opts.encrypt_to.fingerprints) if opts.encrypt_to else [],
        ),
        files=result.files,
    )


def _bgsave_members(
    opts: RunOptions,
    client: Redis,
    info: NodeInfo,
    stack: ExitStack,
    now: Callable[[], datetime],
) -> tuple[list[Member], datetime]:
    if opts.data_dir is None and info.dir is None:
        raise BackupError(
            "this server does not allow CONFIG GET dir, so its data directory is unknown: "
            "pass --data-dir, or use --method replication"
        )
    data_dir = opts.data_dir or Path(str(info.dir))
    if not data_dir.is_dir():
        raise BackupError(
            f"Redis data directory {str(data_dir)!r} is not accessible from here: pass "
            "--data-dir with the path where this server's files are mounted, or use "
            "--method replication (needs no file access)"
        )
    before = now()
    told = False

    def waiting(seconds: float) -> None:  # bgsave's poll sleep: the BGSAVE runs
        nonlocal told
        if not told:
            told = True
            opts.hooks.on_step("snapshot")
        time.sleep(seconds)

    snapshot_time = bgsave(client, timeout=opts.timeout, sleep=waiting)
    rdb_path = data_dir / info.dbfilename
    try:
        rdb = file_member(rdb_path, info.dbfilename, "rdb")
    except FileNotFoundError:
        raise BackupError(
            f"BGSAVE finished but {rdb_path} does not exist: --data-dir does not point at "
            f"this server's data directory ({info.dir!r} on the server)"
        ) from None
    stack.callback(_close_member, rdb)
    if rdb.mtime < before.timestamp() - MTIME_SLACK_SECONDS:
        raise BackupError(
            f"{rdb_path} is older than the snapshot just taken: --data-dir does not point at "
            f"this server's data directory ({info.dir!r} on the server)"
        )
    members = [rdb]
    if info.appendonly:
        members += _aof_members(client, data_dir / info.appenddirname, info, stack, opts.timeout)
    return members, snapshot_time


def _aof_members(
    client: Redis,
    aof_dir: Path,
    info: NodeInfo,
    stack: ExitStack,
    timeout: float,
) -> list[Member]:
    """Open the AOF manifest and every file it names while no rewrite runs.
    Open descriptors keep the files readable even if a rewrite starts later
    and deletes them; a rewrite finishing between reading the manifest and
    opening a file is detected (missing file) and retried."""
    for _ in range(AOF_SNAPSHOT_ATTEMPTS):
        wait_aof_rewrite_idle(client, timeout=timeout)
        manifests = sorted(aof_dir.glob("*.manifest"))
        if len(manifests) != 1:
            raise BackupError(
                f"AOF is on but {aof_dir} holds {len(manifests)} manifest files; expected one "
                "(is --data-dir right?)"
            )
        raw = manifests[0].read_bytes()
        names = _aof_manifest_files(raw)
        opened: list[Member] = []
        try:
            for name in names:
                opened.append(file_member(aof_dir / name, f"{info.appenddirname}/{name}", "aof"))
        except FileNotFoundError:
            for m in opened:
                _close_member(m)
            continue
        for m in opened:
            stack.callback(_close_member, m)
        manifest_member = Member(
            name=f"{info.appenddirname}/{manifests[0].name}",
            size=len(raw),
            kind="aof-manifest",
            open=lambda raw=raw: io.BytesIO(raw),  # type: ignore[misc]
        )
        return [*opened, manifest_member]
    raise BackupError(f"the AOF in {aof_dir} kept changing under us (AOF rewrites); try again")


def _aof_manifest_files(raw: bytes) -> list[str]:
    """File names from a Redis 7 multi-part AOF manifest
    (lines like ``file appendonly.aof.1.base.rdb seq 1 type b``)."""
    names = []
    for line in raw.decode().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "file":
            names.append(parts[1])
    return names


def _replication_members(
    spec: ConnectionSpec,
    opts: RunOptions,
    client: Redis,
    info: NodeInfo,
    stack: ExitStack,
    now: Callable[[], datetime],
) -> tuple[list[Member], datetime, bool]:
    """The RDB of a (preferably diskless) replication sync, as one member of
    unknown size when diskless (stored in parts, see archive.py); and whether
    it holds no LZF strings."""
    pause = RdbCompressionPause(client)
    if opts.compression != "none" and opts.pause_rdbcompression:
        stack.callback(_restore_rdbcompression, pause)  # first: no window without it
        pause.start()
    else:
        pause.observe()
    # Valkey writes for a replica the format of the version it announces: ours
    # is the server's own, so the stream is the RDB its BGSAVE would write.
    announce = info.version if info.flavour == "valkey" else None
    # With the RDB check on, the reader process walks every byte to the
    # CRC-64 trailer and compares it: the stream's own CRC-64 would be the
    # same sum over the same bytes again (verify=None: only without it).
    dump = stack.enter_context(
        replication_rdb(
            spec,
            timeout=opts.timeout,
            on_fork=pause.restore,
            announce_version=announce,
            verify=False if opts.check_rdb else None,
        )
    )
    _restore_rdbcompression(pause)  # the child exists by now (on_fork ran)
    opts.hooks.on_step("stream")
    snapshot_time = now()
    member = Member(name=info.dbfilename, size=dump.size, kind="rdb", open=lambda: dump.stream)
    return [member], snapshot_time, pause.uncompressed


def _first_call(opts: RunOptions, progress: Progress | None) -> Progress:
    """``progress``, telling the hooks of the upload step on the first bytes."""
    told = False

    def advance(n: int) -> None:
        nonlocal told
        if not told:
            told = True
            opts.hooks.on_step("upload")
        if progress is not None:
            progress(n)

    return advance


def _restore_rdbcompression(pause: RdbCompressionPause) -> None:
    pause.restore()
    if pause.restore_error is not None:
        log.warning("warning: %s", pause.restore_error)
        pause.restore_error = None


def _close_member(m: Member) -> None:
    with contextlib.suppress(OSError):
        m.open().close()
