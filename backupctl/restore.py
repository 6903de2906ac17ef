"""``backupctl restore --to-dir``: stage a backup into a Redis data directory.

Safety order (the reason this module exists rather than ``tar x``):

1. download every archive byte into a hidden staging folder *inside* DIR
   (same filesystem, so the final moves are renames), checking each file's
   sha256, the archive's sha256, and the RDB itself;
2. only then move the files Redis would load (``dump.rdb``, the AOF folder)
   into a dated ``.backupctl-previous-<time>`` folder of DIR;
3. rename the staged files into place.

A failure in step 1 leaves DIR as it was. The restore point is always the
backup's RDB snapshot: for a server with ``appendonly yes`` a multi-part AOF
folder is built whose base is that RDB, so the server loads the same dataset
whatever its ``appendonly`` setting. ``prefer_aof`` stages the AOF files that
were copied at backup time instead (they may hold a few seconds more writes).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from backupctl import catalog, redisnode
from backupctl.archive import ArchiveError, Progress, extract_verified
from backupctl.catalog import BackupEntry, Manifest, NodeEntry
from backupctl.storage.base import Backend

APPENDONLY_MODES = ("auto", "yes", "no")
STAGING_PREFIX = ".backupctl-staging-"
PREVIOUS_PREFIX = ".backupctl-previous-"


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


def download_node(
    store: Backend,
    manifest: Manifest,
    node: NodeEntry,
    dest: Path,
    *,
    progress: Progress | None = None,
) -> None:
    """Download and unpack one node's archive into ``dest``, verifying every
    checksum and the RDB; raises :class:`ArchiveError`/StorageError."""
    key = catalog.backup_dir(manifest.target, manifest.id) + node.archive.key
    with store.open(key) as src:
        size, sha = extract_verified(
            src, node.archive.compression, node.files, dest, progress=progress
        )
    if size != node.archive.size or sha != node.archive.sha256:
        raise ArchiveError(
            f"{node.archive.key}: archive checksum mismatch (sha256 {sha[:12]}… size {size}, "
            f"manifest says {node.archive.sha256[:12]}… size {node.archive.size}): "
            "the stored object is corrupt"
        )
    rdb = node.rdb_file
    if rdb is not None:
        check_rdb_file(dest / rdb.path)


def check_rdb_file(path: Path) -> None:
    """Header + CRC64 trailer in Python, then ``redis-check-rdb`` when installed."""
    try:
        ok = redisnode.rdb_trailer_ok(str(path))
    except ValueError as e:
        raise ArchiveError(f"{path.name}: not a valid RDB file: {e}") from e
    if not ok:
        raise ArchiveError(f"{path.name}: RDB checksum (CRC64) does not match: the RDB is corrupt")
    checked = redisnode.check_rdb(str(path))
    if checked is not None and not checked[0]:
        raise ArchiveError(f"{path.name}: redis-check-rdb rejects it: {checked[1]}")


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
) -> RestoreResult:
    if appendonly not in APPENDONLY_MODES:
        raise RestoreError(f"--appendonly must be one of {', '.join(APPENDONLY_MODES)}")
    manifest = entry.manifest
    if manifest is None:
        raise RestoreError(f"backup {entry.id} is incomplete and cannot be restored")
    n = pick_node(manifest, node)
    rdb = n.rdb_file
    if rdb is None:
        raise RestoreError(f"backup {manifest.id} node {n.name} has no RDB file")
    to_dir.mkdir(parents=True, exist_ok=True)
    staging = to_dir / f"{STAGING_PREFIX}{manifest.id}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        download_node(store, manifest, n, staging, progress=progress)
        rdb_name = dbfilename or Path(rdb.path).name
        staged: dict[str, Path] = {rdb_name: staging / rdb.path}
        if appendonly != "no":
            staged[aof_dirname] = _stage_aof(
                staging, n, rdb.path, aof_dirname, aof_filename, prefer_aof
            )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    # Point of no return: everything is verified and on the same filesystem.
    previous = _unique(to_dir / f"{PREVIOUS_PREFIX}{now().astimezone(UTC):%Y%m%d-%H%M%S}")
    moved_any = False
    for name in (rdb_name, aof_dirname):
        cur = to_dir / name
        if cur.exists() or cur.is_symlink():
            previous.mkdir(exist_ok=True)
            os.replace(cur, previous / name)
            moved_any = True
    for name, src in staged.items():
        os.replace(src, to_dir / name)
    shutil.rmtree(staging, ignore_errors=True)
    _fsync_dir(to_dir)
    return RestoreResult(
        id=manifest.id,
        target=manifest.target,
        node=n.name,
        dir=to_dir,
        files=sorted(staged),
        previous=previous if moved_any else None,
        keys=n.keys,
        appendonly=appendonly,
    )


def _stage_aof(
    staging: Path,
    node: NodeEntry,
    rdb_path: str,
    aof_dirname: str,
    aof_filename: str,
    prefer_aof: bool,
) -> Path:
    """Return a staged AOF folder for a server with ``appendonly yes``."""
    backed_up = [f for f in node.files if f.kind in ("aof", "aof-manifest")]
    if prefer_aof and backed_up:
        src_dir = staging / Path(backed_up[0].path).parts[0]
        return src_dir
    # Redis 7 multi-part AOF: manifest + base (an RDB) + an empty incr file.
    out = staging / f".aof-{aof_dirname}"
    out.mkdir()
    base = f"{aof_filename}.1.base.rdb"
    incr = f"{aof_filename}.1.incr.aof"
    try:
        os.link(staging / rdb_path, out / base)
    except OSError:
        shutil.copyfile(staging / rdb_path, out / base)
    (out / incr).touch()
    (out / f"{aof_filename}.manifest").write_text(
        f"file {base} seq 1 type b\nfile {incr} seq 1 type i\n"
    )
    for p in (out / base, out / incr, out / f"{aof_filename}.manifest"):
        with open(p, "rb") as fh:
            os.fsync(fh.fileno())
    return out


def _unique(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``... if it exists (two restores in one second)."""
    candidate, n = path, 2
    while candidate.exists():
        candidate = path.with_name(f"{path.name}-{n}")
        n += 1
    return candidate


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
