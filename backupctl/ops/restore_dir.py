"""``backupctl restore --to-dir``: stage a backup into a Redis data directory.

Safety order (the reason this module exists rather than ``tar x``):

1. download every archive byte into a hidden staging folder *inside* DIR
   (same filesystem, so the final moves are renames), checking each file's
   sha256, the archive's sha256, and the RDB itself (backupctl's reader walks every
   value to the CRC64 trailer; ``redis-check-rdb`` beside it when it reads that version);
2. only then move the files Redis would load (``dump.rdb``, the AOF folder)
   into a dated ``.backupctl-previous-<time>`` folder of DIR;
3. rename the staged files into place.

A failure in step 1 leaves DIR as it was. The restore point is always the
backup's RDB snapshot: for a server with ``appendonly yes`` a multi-part AOF
folder is built whose base is that RDB, so the server loads the same dataset
whatever its ``appendonly`` setting. ``prefer_aof`` stages the AOF files that
were copied at backup time instead (they may hold a few seconds more writes).

The Kubernetes controller splits the same steps in two Jobs so Redis keeps
serving while the (slow) download runs, and is stopped only for the (fast)
swap: :func:`stage_to_dir` does step 1 into ``DIR/.backupctl-staging-<id>/``
and leaves it there with a marker written last; :func:`swap_staged` does
steps 2-3 later. Steps 2-3 are one journaled swap (:mod:`backupctl.ops.
swap_journal`): a rerun of ``--swap`` after a kill at any point finishes the
same swap, any other restore command rolls it back first, and either says
so (and a swap run again after it finished reports the same result).
:func:`discard_staged` removes a staged copy that will not be used.

DIR may belong to another user (the Redis user) while this runs as root:
every name in DIR is handled relative to one opened directory, without
following links (:mod:`backupctl.core.safe_files`); the staging folder and
the tool's records stay this user's, only the files Redis loads are given
DIR's owner. Each command holds a lock on DIR, so staging folders found
meanwhile are leftovers of runs that are over (:mod:`backupctl.ops.leftovers`).

Several data directories restored from one archive (the nodes of a
cluster shard) download it once: :func:`stage_to_dir` with ``source`` copies
the verified files of another staging folder, checking every sha256 again.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backupctl.core.compat import load_problem
from backupctl.core.datadir import (
    ARCHIVE_FOLDER,
    PREVIOUS_PREFIX,
    STAGED_MARKER,
    SWAP_JOURNAL,
    SWAP_RECORD,
    staging_name,
)
from backupctl.core.safe_files import SafeDir, UnsafePathError
from backupctl.ops import leftovers
from backupctl.ops.dir_in_use import processes_in
from backupctl.ops.restore_unpack import download_node
from backupctl.ops.swap_journal import Recovered, StepHook, SwapError, recover, swap
from backupctl.redis.local_server import server_version
from backupctl.store.archive import COPY_CHUNK, ArchiveError, Progress
from backupctl.store.backends.base import Backend
from backupctl.store.catalog import BackupEntry, Manifest, NodeEntry
from backupctl.store.encryption import Identities, require_keys

APPENDONLY_MODES = ("auto", "yes", "no")
__all__ = ["STAGED_MARKER", "SWAP_RECORD"]  # re-exported: the names tests and docs use


class RestoreError(Exception):
    """The restore was refused or failed; DIR is unchanged unless it says so."""


@dataclass(frozen=True)
class RestoreResult:
    id: str
    target: str
    node: str
    dir: Path
    files: list[str]
    previous: Path | None
    keys: int
    appendonly: str
    #: What this run did with a swap an earlier, killed run left half-done.
    recovered: Recovered | None = None
    #: Staging folders of earlier runs that this one removed.
    leftovers: list[Path] = field(default_factory=list)

    def notes(self) -> list[str]:
        """One line each for what this run found and cleaned up."""
        lines = [self.recovered.line()] if self.recovered else []
        if self.leftovers:
            lines.append(
                "removed what earlier, unfinished restores left: "
                + ", ".join(str(p) for p in self.leftovers)
            )
        return lines


def pick_node(manifest: Manifest, node: str | None) -> NodeEntry:
    if node is None:
        if len(manifest.nodes) != 1:
            names = ", ".join(n.name for n in manifest.nodes)
            raise RestoreError(
                f"backup {manifest.id} holds {len(manifest.nodes)} nodes ({names}); "
                "pass --node NAME to choose which one to stage"
            )
        return manifest.nodes[0]
    for n in manifest.nodes:
        if n.name == node:
            return n
    raise RestoreError(f"backup {manifest.id} has no node {node!r}")


def copy_node_files(node: NodeEntry, source: Path, dest: Path) -> None:
    """Copy the archive files of ``node`` from ``source`` (a folder they were
    verified into) to ``dest``, checking each copy's size and sha256 against
    the manifest; raises :class:`ArchiveError`."""
    for f in node.files:
        out = dest / f.path
        digest, size = hashlib.sha256(), 0
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            with open(source / f.path, "rb") as src, open(out, "xb") as dst:
                while chunk := src.read(COPY_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
        except OSError as e:
            raise ArchiveError(f"{f.path}: cannot copy the staged file: {e}") from e
        if size != f.size or digest.hexdigest() != f.sha256:
            raise ArchiveError(
                f"{f.path}: the staged copy in {source} does not match the manifest "
                f"(size {size} vs {f.size}): it changed after it was verified"
            )


def refuse_unloadable(node: NodeEntry, redis_server: str) -> None:
    """:class:`RestoreError` (nothing touched yet) when the server binary
    ``redis_server`` cannot load ``node``'s RDB, both sides named."""
    server = server_version(redis_server)
    if server is None:
        raise RestoreError(
            f"{redis_server} --version does not say which Redis or Valkey it is: pass the "
            "path of the redis-server (or valkey-server) that will load DIR"
        )
    problem = load_problem(node.flavour, node.version, node.rdb_magic, node.rdb_version, *server)
    if problem is not None:
        raise RestoreError(f"refused, nothing was touched: {problem}")


def restore_to_dir(
    store: Backend,
    entry: BackupEntry,
    to_dir: Path,
    *,
    appendonly: str = "auto",
    node: str | None = None,
    prefer_aof: bool = False,
    dbfilename: str | None = None,
    aof_dirname: str = "appendonlydir",
    aof_filename: str = "appendonly.aof",
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    progress: Progress | None = None,
    redis_server: str | None = None,
    before_step: StepHook | None = None,
    identities: Identities | None = None,
) -> RestoreResult:
    """Stage, then swap in (see the module docstring). With ``redis_server``
    (the binary that will load DIR) a backup it cannot load is refused first.
    A swap an earlier run left half-done is rolled back first; ``before_step``
    is called before each step of the swap (a fault-injection point)."""
    if entry.manifest is not None:
        require_keys(entry.manifest, identities, [pick_node(entry.manifest, node)])
    with _data_dir(to_dir, create=True) as data:
        recovered = recover(data, finish_id=None)
        swept = leftovers.sweep(data, keep_complete=True)
        name = staging_name(entry.id, os.getpid())
        plan = _stage(
            store, entry, data, name, appendonly, node, prefer_aof, dbfilename,
            aof_dirname, aof_filename, progress, redis_server=redis_server,
            identities=identities,
        )  # fmt: skip
        # Point of no return: everything is verified and on the same filesystem.
        previous = swap(data, name, plan, _previous_name(data, now), before_step=before_step)
        return _result(to_dir, plan, previous, recovered, swept)


def stage_to_dir(
    store: Backend,
    entry: BackupEntry,
    to_dir: Path,
    *,
    appendonly: str = "auto",
    node: str | None = None,
    prefer_aof: bool = False,
    dbfilename: str | None = None,
    aof_dirname: str = "appendonlydir",
    aof_filename: str = "appendonly.aof",
    progress: Progress | None = None,
    source: Path | None = None,
    redis_server: str | None = None,
    identities: Identities | None = None,
) -> RestoreResult:
    """Download and verify into ``DIR/.backupctl-staging-<id>/`` and stop
    there: the files Redis loads are not touched (Redis may keep running).
    Staging folders left by earlier restores are removed first (only one
    restore at a time prepares a data directory). With ``source`` (the
    staging folder of the same backup and node in another data directory)
    the verified files are copied from there, not downloaded."""
    if entry.manifest is not None:
        require_keys(entry.manifest, identities, [pick_node(entry.manifest, node)])
    with _data_dir(to_dir, create=True) as data:
        recovered = recover(data, finish_id=None)
        swept = leftovers.sweep(data, keep_complete=False)
        name = staging_name(entry.id)
        plan = _stage(
            store, entry, data, name, appendonly, node, prefer_aof, dbfilename,
            aof_dirname, aof_filename, progress, source, redis_server=redis_server,
            identities=identities,
        )  # fmt: skip
        try:
            with data.owned_subdir(name) as staging:  # last: the staged copy is complete
                staging.write_atomic(STAGED_MARKER, json.dumps(plan).encode())
        except BaseException:
            data.rmtree(name)
            raise
        data.fsync()
        return _result(to_dir, plan, None, recovered, swept)


def swap_staged(
    to_dir: Path,
    backup_id: str,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    before_step: StepHook | None = None,
    refuse_busy: bool = False,
) -> RestoreResult:
    """Move what :func:`stage_to_dir` staged for ``backup_id`` into place,
    the current files into a dated ``.backupctl-previous-*`` folder. Stop
    Redis first (``refuse_busy``: refuse while a process works in DIR, see
    :func:`refuse_in_use`). Run again after an interruption, it finishes the
    same swap."""
    with _data_dir(to_dir, create=False) as data:
        if refuse_busy and (
            data.lstat(SWAP_JOURNAL) is not None or _staged_plan(data, staging_name(backup_id))
        ):
            refuse_in_use(to_dir)  # only when files would move: a rerun after the swap reports
        recovered = recover(data, finish_id=backup_id)
        swept = leftovers.sweep(data, keep_complete=True)
        if recovered is not None and recovered.id == backup_id and recovered.action == "finished":
            return _result(to_dir, recovered.plan, recovered.previous, recovered, swept)
        name = staging_name(backup_id)
        plan = _staged_plan(data, name)
        if plan is None:
            record = _load_json(data.read(SWAP_RECORD))
            if record.get("id") == backup_id and record.get("swapped"):
                return _result(to_dir, record, record.get("previous"), recovered, swept)
            raise RestoreError(
                f"nothing is staged for backup {backup_id} in {to_dir} (no complete "
                f"{name}/): stage it first (restore --stage-only)"
            )
        if plan.get("id") != backup_id:
            raise RestoreError(f"{to_dir / name / STAGED_MARKER} names another backup; stage again")
        previous = swap(data, name, plan, _previous_name(data, now), before_step=before_step)
        return _result(to_dir, plan, previous, recovered, swept)


@dataclass(frozen=True)
class Discarded:
    """What :func:`discard_staged` removed (the real paths) and recovered."""

    removed: list[Path]
    recovered: Recovered | None


def discard_staged(to_dir: Path, backup_id: str | None = None) -> Discarded:
    """Remove every staging folder of ``backup_id`` (of all backups when
    None): the ``--stage-only`` copy and those of killed whole restores; a
    swap of it left half-done is rolled back first. The files Redis loads
    are not touched."""
    if not to_dir.is_dir():
        return Discarded([], None)
    with _data_dir(to_dir, create=False) as data:
        recovered = recover(data, finish_id=None)
        return Discarded(leftovers.sweep(data, keep_complete=False, backup_id=backup_id),
                         recovered)  # fmt: skip


def staged_dir(to_dir: Path, backup_id: str) -> Path:
    return to_dir / staging_name(backup_id)


def refuse_in_use(to_dir: Path) -> None:
    """:class:`RestoreError` when a running process (a Redis still serving
    from DIR) has ``to_dir`` as its working directory."""
    users = processes_in(to_dir)
    if users:
        who = ", ".join(f"pid {u.pid} ({u.command})" for u in users[:3])
        raise RestoreError(
            f"{to_dir} is the working directory of running process {who}: a Redis running "
            "there would overwrite the restored files at its next save; stop it first, or pass "
            "--force if it is not a Redis using this directory"
        )


@contextlib.contextmanager
def _data_dir(to_dir: Path, *, create: bool) -> Iterator[SafeDir]:
    """DIR opened and locked for this run; every OSError and refused name
    inside becomes one :class:`RestoreError` line naming DIR."""
    try:
        if create:
            to_dir.mkdir(parents=True, exist_ok=True)
        data = SafeDir.open(to_dir)
    except OSError as e:
        raise RestoreError(_os_problem(to_dir, e)) from None
    with data:
        if not data.try_lock():
            raise RestoreError(
                f"another backupctl restore is working in {to_dir}: wait for it to end"
            )
        try:
            for name in (SWAP_JOURNAL + ".tmp", SWAP_RECORD + ".tmp"):
                data.clear_leftover(name)  # a planted link is refused before any work
            yield data
        except OSError as e:
            swap_note = ""
            if data.lstat(SWAP_JOURNAL) is not None:
                swap_note = (
                    "; the swap is journaled: rerun the same --swap to finish it, or any other "
                    "restore command to roll it back"
                )
            raise RestoreError(_os_problem(to_dir, e) + swap_note) from None
        except (UnsafePathError, SwapError) as e:
            raise RestoreError(str(e)) from None


def _os_problem(to_dir: Path, e: OSError) -> str:
    """One line for a filesystem error in DIR: what, where, how to fix."""
    what = f"{e.filename}: " if e.filename and str(e.filename) != str(to_dir) else ""
    what = "" if "/proc/" in what else what
    if e.errno == errno.EROFS:
        return (f"cannot write in {to_dir}: it is on a read-only filesystem; remount it "
                "read-write or restore into another --to-dir")  # fmt: skip
    if e.errno in (errno.EACCES, errno.EPERM):
        return (f"cannot write in {to_dir}: {what}permission denied; run as the user that owns "
                "it (or root), or restore into another --to-dir")  # fmt: skip
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left in {to_dir}: the staged copy needs about the backup's size "
                "again; free some space and run again")  # fmt: skip
    if e.errno == errno.EEXIST:
        return (f"cannot write in {to_dir}: {what}already exists; remove it (it is not a file "
                "this restore made) and run again")  # fmt: skip
    return f"cannot restore into {to_dir}: {what}{e.strerror or e}"


def _staged_plan(data: SafeDir, name: str) -> dict[str, Any] | None:
    """The plan in the marker of the complete staged copy ``name`` (None: none)."""
    if data.lstat(name) is None:
        return None
    with data.owned_subdir(name) as staging:
        raw = staging.read(STAGED_MARKER)
    if raw is None:
        return None
    plan = _load_json(raw)
    if not isinstance(plan.get("files"), dict) or not isinstance(plan.get("aside"), list):
        raise RestoreError(f"{data.path / name / STAGED_MARKER} is unreadable; stage again")
    return plan


def _stage(
    store: Backend,
    entry: BackupEntry,
    data: SafeDir,
    name: str,
    appendonly: str,
    node: str | None,
    prefer_aof: bool,
    dbfilename: str | None,
    aof_dirname: str,
    aof_filename: str,
    progress: Progress | None,
    source: Path | None = None,
    *,
    redis_server: str | None = None,
    identities: Identities | None = None,
) -> dict[str, Any]:
    """Download + verify into the new staging folder ``name`` of ``data``;
    return the swap plan (JSON-able): ``files`` maps names in DIR to paths
    inside the staging folder, ``aside`` lists the names in DIR that move to
    the previous-data folder. The archive's files go into ``archive/`` of
    the staging folder, apart from the tool's own names."""
    if appendonly not in APPENDONLY_MODES:
        raise RestoreError(f"--appendonly must be one of {', '.join(APPENDONLY_MODES)}")
    manifest = entry.manifest
    if manifest is None:
        raise RestoreError(f"backup {entry.id} is incomplete and cannot be restored")
    n = pick_node(manifest, node)
    rdb = n.rdb_file
    if rdb is None:
        raise RestoreError(f"backup {manifest.id} node {n.name} has no RDB file")
    if redis_server is not None:
        refuse_unloadable(n, redis_server)
    staging = data.mkdir(name)
    try:
        with staging:
            with staging.mkdir(ARCHIVE_FOLDER) as archive:
                if source is None:
                    download_node(
                        store, manifest, n, archive.fd_path, progress=progress,
                        identities=identities,
                    )  # fmt: skip
                else:
                    copy_node_files(n, source / ARCHIVE_FOLDER, archive.fd_path)
            rdb_name = dbfilename or Path(rdb.path).name
            files = {rdb_name: f"{ARCHIVE_FOLDER}/{rdb.path}"}
            if appendonly != "no":
                files[aof_dirname] = _stage_aof(staging, n, rdb.path, aof_dirname, aof_filename,
                                                prefer_aof)  # fmt: skip
            _own_like(staging, data, files.values())
    except BaseException:
        data.rmtree(name)
        raise
    return {
        "id": manifest.id,
        "target": manifest.target,
        "node": n.name,
        "keys": n.keys,
        "appendonly": appendonly,
        "files": files,
        "aside": [rdb_name, aof_dirname],
    }


def _result(
    to_dir: Path,
    plan: dict[str, Any],
    previous: str | None,
    recovered: Recovered | None = None,
    swept: list[Path] | None = None,
) -> RestoreResult:
    return RestoreResult(
        id=plan["id"],
        target=plan["target"],
        node=plan["node"],
        dir=to_dir,
        files=sorted(plan["files"]),
        previous=to_dir / previous if previous else None,
        keys=int(plan["keys"]),
        appendonly=plan["appendonly"],
        recovered=recovered,
        leftovers=swept or [],
    )


def _previous_name(data: SafeDir, now: Callable[[], datetime]) -> str:
    """``.backupctl-previous-<time>``, or ``-2``, ``-3``... if taken (two restores a second)."""
    base = f"{PREVIOUS_PREFIX}{now().astimezone(UTC):%Y%m%d-%H%M%S}"
    candidate, n = base, 2
    while data.lstat(candidate) is not None:
        candidate = f"{base}-{n}"
        n += 1
    return candidate


def _load_json(raw: bytes | None) -> dict[str, Any]:
    try:
        data = json.loads(raw) if raw is not None else None
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _stage_aof(
    staging: SafeDir,
    node: NodeEntry,
    rdb_path: str,
    aof_dirname: str,
    aof_filename: str,
    prefer_aof: bool,
) -> str:
    """A staged AOF folder for a server with ``appendonly yes``; returns its
    path inside the staging folder."""
    backed_up = [f for f in node.files if f.kind in ("aof", "aof-manifest")]
    if prefer_aof and backed_up:
        return f"{ARCHIVE_FOLDER}/{Path(backed_up[0].path).parts[0]}"
    # Redis 7 multi-part AOF: manifest + base (an RDB) + an empty incr file.
    folder = f".aof-{aof_dirname}"
    base = f"{aof_filename}.1.base.rdb"
    incr = f"{aof_filename}.1.incr.aof"
    with staging.mkdir(folder) as out:
        try:
            os.link(f"{ARCHIVE_FOLDER}/{rdb_path}", base, src_dir_fd=staging.fd,
                    dst_dir_fd=out.fd, follow_symlinks=False)  # fmt: skip
        except OSError:
            with staging.subdir(ARCHIVE_FOLDER) as archive:
                shutil.copyfile(archive.fd_path / rdb_path, out.fd_path / base)
        with out.create(incr) as fh:
            os.fsync(fh.fileno())
        with out.create(f"{aof_filename}.manifest") as fh:
            fh.write(f"file {base} seq 1 type b\nfile {incr} seq 1 type i\n".encode())
            fh.flush()
            os.fsync(fh.fileno())
        fd = os.open(base, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=out.fd)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        out.fsync()
    return folder


def _own_like(staging: SafeDir, data: SafeDir, paths: Any) -> None:
    """Run as root (sudo, a Job) into a directory Redis owns as its own user:
    give the files Redis loads (not the staging folder, not the tool's
    records) that owner, or Redis could not write into the AOF folder later.
    Best effort (a root-squashed NFS refuses chown)."""
    st = os.fstat(data.fd)
    if os.geteuid() != 0 or (st.st_uid, st.st_gid) == (0, 0):
        return
    try:
        for rel in paths:
            staging.chown_tree(rel, st.st_uid, st.st_gid)
    except OSError:
        pass
