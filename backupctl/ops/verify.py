"""``backupctl verify``: prove a stored backup restores, without restoring it.

Every archive is downloaded and unpacked into a temporary folder, every
sha256 in the manifest is checked, and each RDB passes the header/CRC64 check
and ``redis-check-rdb`` (when installed). The keys backupctl's RDB reader
finds in a node's RDB are counted by type and must be the manifest's figure
for that node (a node backed up with its AOF is counted, not compared: its
keys are the RDB's and the AOF's). The temporary copy is deleted
afterwards (also when stopped by SIGTERM/SIGINT; a killed run's folder is
removed by the next one, see :mod:`backupctl.ops.scratch`); nothing in the
store changes.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from backupctl.ops.restore_dir import RestoreError
from backupctl.ops.restore_unpack import download_node
from backupctl.ops.scratch import scratch_dir
from backupctl.redis.rdb_reader import RdbFormatError, RdbReport, read_rdb_file
from backupctl.store.archive import Progress
from backupctl.store.backends.base import Backend
from backupctl.store.catalog import BackupEntry, NodeEntry
from backupctl.store.encryption import Identities, require_keys

#: Name start of verify's temp folders (``<prefix><pid>-<random>``).
SCRATCH_PREFIX = "backupctl-verify-"


@dataclass
class VerifyReport:
    id: str
    target: str
    nodes: list[str] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    keys: int = 0  # in the RDBs, as backupctl's reader counts them
    types: dict[str, int] = field(default_factory=dict)  # "string", "hash", ... -> keys


def verify_backup(
    store: Backend,
    entry: BackupEntry,
    *,
    tmp_dir: Path | None = None,
    progress: Progress | None = None,
    note: Callable[[str], None] | None = None,
    identities: Identities | None = None,
) -> VerifyReport:
    """Unpack and check every node of ``entry`` in turn, under ``tmp_dir``
    (default: the system temp folder); ``note`` hears of leftovers removed."""
    manifest = entry.manifest
    if manifest is None:
        raise RestoreError(f"backup {entry.id} is incomplete (no manifest): nothing to verify")
    require_keys(manifest, identities)
    report = VerifyReport(id=manifest.id, target=manifest.target)
    need = max((sum(f.size for f in n.files) for n in manifest.nodes), default=0)
    with scratch_dir(tmp_dir, SCRATCH_PREFIX, need=need, note=note) as tmp:
        for i, node in enumerate(manifest.nodes):
            folder = tmp / f"node-{i}"
            folder.mkdir()
            walked = download_node(
                store, manifest, node, folder, progress=progress, identities=identities
            )
            _count_keys(report, node, folder, walked)
            shutil.rmtree(folder)  # one node's files at a time
            _count(report, node)
    return report


def _count_keys(
    report: VerifyReport, node: NodeEntry, folder: Path, walked: RdbReport | None
) -> None:
    """Add the keys of ``node``'s RDB (unpacked in ``folder``) to the report;
    :class:`RestoreError` when they are not the manifest's count. ``walked`` is
    what unpacking's deep walk found in the node's (first) RDB: it is not read
    again (a 1 GiB RDB took seconds to re-read)."""
    rdbs = [f for f in node.files if f.kind == "rdb"]
    keys = 0
    for f in rdbs:
        try:
            if f is node.rdb_file and walked is not None:
                found = walked
            else:
                found = read_rdb_file(folder / f.path, deep=False)
        except (RdbFormatError, OSError) as e:  # download_node walked it already
            raise RestoreError(f"{node.name}: {f.path}: cannot read the RDB: {e}") from e
        keys += found.total_keys
        for kind, count in found.types.items():
            report.types[kind] = report.types.get(kind, 0) + count
    report.keys += keys
    with_aof = any(f.kind != "rdb" for f in node.files)
    if len(rdbs) == 1 and not with_aof and keys != node.keys:
        raise RestoreError(
            f"{node.name}: the RDB holds {keys} keys, the manifest says {node.keys}: "
            "the backup does not hold what was backed up"
        )


def _count(report: VerifyReport, node: NodeEntry) -> None:
    report.nodes.append(node.name)
    report.files += len(node.files)
    report.bytes += node.archive.size
