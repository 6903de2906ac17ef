"""``backupctl restore --to-dir``: stage a backup into a Redis data directory.

Safety order (the reason this module exists rather than ``tar x``):

1. download every archive byte into a hidden staging folder *inside* DIR
   (same filesystem, so the final moves are renames), checking each file's
   sha256, the archive's sha256, and the RDB itself (backupctl's reader walks
   every value to the CRC64 trailer; ``redis-check-rdb`` too when it reads
   that version);
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
steps 2-3 later. The swap records its previous-data folder in the marker
before it moves anything, so a swap interrupted at any point and run again
finishes the same swap (and a swap run again after it finished reports the
same result). :func:`discard_staged` removes a staged copy that will not be
used. Several data directories restored from one archive (the nodes of a
cluster shard) download it once: :func:`stage_to_dir` with ``source`` copies
the verified files of another staging folder, checking every sha256 again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backupctl.core.compat import load_problem
from backupctl.core.datadir import PREVIOUS_PREFIX, STAGING_PREFIX
from backupctl.redis.local_server import server_version
from backupctl.redis.rdb_reader import RdbFormatError, RdbReport, read_rdb_file
from backupctl.redis.rdb_tool import check_rdb, second_opinion
from backupctl.store import catalog
from backupctl.store.archive import COPY_CHUNK, ArchiveError, Progress, extract_verified
from backupctl.store.backends.base import Backend
from backupctl.store.catalog import BackupEntry, Manifest, NodeEntry

APPENDONLY_MODES = ("auto", "yes", "no")
#: In a staging folder, written last by :func:`stage_to_dir`: what to swap in.
STAGED_MARKER = ".backupctl-staged.json"
#: In DIR, written by :func:`swap_staged`: the last swap's result.
SWAP_RECORD = ".backupctl-restore.json"


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
            src,
            node.archive.compression,
            node.files,
            dest,
            progress=progress,
            archive_size=node.archive.size,
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


def copy_node_files(node: NodeEntry, source: Path, dest: Path) -> None:
    """Copy the archive files of ``node`` from ``source`` (a folder they were
    verified into) to ``dest``, checking each copy's size and sha256 against
    the manifest; raises :class:`ArchiveError`."""
    for f in node.files:
        out = dest / f.path
        out.parent.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        try:
            with open(source / f.path, "rb") as src, open(out, "wb") as dst:
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
                f"{source / f.path}: the staged copy does not match the manifest "
                f"(size {size} vs {f.size}): it changed after it was verified"
            )


def check_rdb_file(path: Path) -> RdbReport:
    """Walk the whole RDB with backupctl's reader (every value, to the CRC64
    trailer); then ``redis-check-rdb`` as a second opinion when it reads that
    magic and version (else one note on stderr). :class:`ArchiveError` naming
    the offset of the first problem."""
    try:
        report = read_rdb_file(path, deep=True)
    except RdbFormatError as e:
        raise ArchiveError(f"{path.name}: the RDB is corrupt: {e}") from e
    except OSError as e:
        raise ArchiveError(f"{path.name}: cannot read the RDB: {e}") from e
    if second_opinion(report.magic, report.version):
        ok, tail = check_rdb(str(path))
        if not ok:
            raise ArchiveError(f"{path.name}: redis-check-rdb rejects it: {tail}")
    return report


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
) -> RestoreResult:
    """Stage, then swap in (see the module docstring). With ``redis_server``
    (the binary that will load DIR) a backup it cannot load is refused first."""
    staging = to_dir / f"{STAGING_PREFIX}{entry.id}-{os.getpid()}"
    plan = _stage(
        store, entry, to_dir, staging, appendonly, node, prefer_aof, dbfilename,
        aof_dirname, aof_filename, progress, redis_server=redis_server,
    )  # fmt: skip
    # Point of no return: everything is verified and on the same filesystem.
    plan["previous"] = _previous_name(to_dir, now)
    return _swap(to_dir, staging, plan)


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
) -> RestoreResult:
    """Download and verify into ``DIR/.backupctl-staging-<id>/`` and stop
    there: the files Redis loads are not touched (Redis may keep running).
    Staging folders left by earlier, unfinished restores are removed first
    (only one restore at a time prepares a data directory). With ``source``
    (the staging folder of the same backup and node in another data
    directory) the verified files are copied from there, not downloaded."""
    to_dir.mkdir(parents=True, exist_ok=True)
    for old in to_dir.glob(STAGING_PREFIX + "*"):
        shutil.rmtree(old, ignore_errors=True)
    staging = staged_dir(to_dir, entry.id)
    plan = _stage(
        store, entry, to_dir, staging, appendonly, node, prefer_aof, dbfilename,
        aof_dirname, aof_filename, progress, source, redis_server=redis_server,
    )  # fmt: skip
    _write_json(staging / STAGED_MARKER, plan)  # last: the staged copy is complete
    _fsync_dir(to_dir)
    return _result(to_dir, plan, previous=None)


def swap_staged(
    to_dir: Path,
    backup_id: str,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> RestoreResult:
    """Move what :func:`stage_to_dir` staged for ``backup_id`` into place,
    the current files into a dated ``.backupctl-previous-*`` folder. Stop
    Redis first. Safe to run again after an interruption."""
    staging = staged_dir(to_dir, backup_id)
    marker = staging / STAGED_MARKER
    if not marker.is_file():
        record = _read_json(to_dir / SWAP_RECORD)
        if record is not None and record.get("id") == backup_id and record.get("swapped"):
            return _result(to_dir, record, previous=record.get("previous"))  # done before
        raise RestoreError(
            f"nothing is staged for backup {backup_id} in {to_dir} (no complete "
            f"{staging.name}/): stage it first (restore --stage-only)"
        )
    plan = _read_json(marker)
    if plan is None or plan.get("id") != backup_id:
        raise RestoreError(f"{marker} is unreadable or names another backup; stage again")
    if not plan.get("previous"):
        # Decided once and recorded before anything moves, so a rerun reuses it.
        plan["previous"] = _previous_name(to_dir, now)
        _write_json(marker, plan)
    return _swap(to_dir, staging, plan)


def discard_staged(to_dir: Path, backup_id: str | None = None) -> list[str]:
    """Remove the staging folder of ``backup_id`` (all of them when None);
    returns the names removed. The files Redis loads are not touched."""
    pattern = STAGING_PREFIX + (backup_id if backup_id is not None else "*")
    removed = []
    for path in sorted(to_dir.glob(pattern)) if to_dir.is_dir() else []:
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    return removed


def staged_dir(to_dir: Path, backup_id: str) -> Path:
    return to_dir / f"{STAGING_PREFIX}{backup_id}"


def _stage(
    store: Backend,
    entry: BackupEntry,
    to_dir: Path,
    staging: Path,
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
) -> dict[str, Any]:
    """Download + verify into ``staging``; return the swap plan (JSON-able):
    ``files`` maps names in DIR to paths inside ``staging``, ``aside`` lists
    the names in DIR that move to the previous-data folder."""
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
    to_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        if source is None:
            download_node(store, manifest, n, staging, progress=progress)
        else:
            copy_node_files(n, source, staging)
        rdb_name = dbfilename or Path(rdb.path).name
        files = {rdb_name: rdb.path}
        if appendonly != "no":
            aof = _stage_aof(staging, n, rdb.path, aof_dirname, aof_filename, prefer_aof)
            files[aof_dirname] = aof.relative_to(staging).as_posix()
        _own_like(staging, to_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {
        "id": manifest.id,
        "target": manifest.target,
        "node": n.name,
        "keys": n.keys,
        "appendonly": appendonly,
        "files": files,
        "aside": [rdb_name, aof_dirname],
        "previous": None,
    }


def _swap(to_dir: Path, staging: Path, plan: dict[str, Any]) -> RestoreResult:
    """Steps 2-3; every step checks what is already done, so it can be rerun."""
    previous = to_dir / plan["previous"]
    files: dict[str, str] = plan["files"]
    for name in plan["aside"]:
        cur = to_dir / name
        pending = name not in files or (staging / files[name]).exists()
        if pending and (cur.exists() or cur.is_symlink()):
            previous.mkdir(exist_ok=True)
            os.replace(cur, _unique(previous / name))
    for name, rel in files.items():
        src = staging / rel
        if src.exists():
            os.replace(src, to_dir / name)
    _write_json(to_dir / SWAP_RECORD, {**plan, "swapped": True})
    shutil.rmtree(staging, ignore_errors=True)
    _fsync_dir(to_dir)
    return _result(to_dir, plan, previous=plan["previous"] if previous.exists() else None)


def _result(to_dir: Path, plan: dict[str, Any], previous: str | None) -> RestoreResult:
    return RestoreResult(
        id=plan["id"],
        target=plan["target"],
        node=plan["node"],
        dir=to_dir,
        files=sorted(plan["files"]),
        previous=to_dir / previous if previous else None,
        keys=int(plan["keys"]),
        appendonly=plan["appendonly"],
    )


def _previous_name(to_dir: Path, now: Callable[[], datetime]) -> str:
    return _unique(to_dir / f"{PREVIOUS_PREFIX}{now().astimezone(UTC):%Y%m%d-%H%M%S}").name


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Temp file + fsync + rename: the file is either old or new, never half."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


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


def _own_like(tree: Path, like: Path) -> None:
    """Run as root (sudo, a Job) into a directory Redis owns as its own user:
    give the staged files that owner, or Redis could not write into the AOF
    folder later. Best effort (a root-squashed NFS refuses chown)."""
    st = like.stat()
    if os.geteuid() != 0 or (st.st_uid, st.st_gid) == (0, 0):
        return
    try:
        for path in [tree, *tree.rglob("*")]:
            os.lchown(path, st.st_uid, st.st_gid)
    except OSError:
        pass


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
