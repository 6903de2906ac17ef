"""``backupctl verify``: prove a stored backup restores, without restoring it.

Every archive is downloaded and unpacked into a temporary folder, every
sha256 in the manifest is checked, and each RDB passes the header/CRC64 check
and ``redis-check-rdb`` (when installed). The temporary copy is deleted
afterwards (also when stopped by SIGTERM/SIGINT; a killed run's folder is
removed by the next one, see :mod:`backupctl.ops.scratch`); nothing in the
store changes.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from backupctl.ops.restore_dir import RestoreError, download_node
from backupctl.ops.scratch import scratch_dir
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
            download_node(store, manifest, node, folder, progress=progress, identities=identities)
            shutil.rmtree(folder)  # one node's files at a time
            _count(report, node)
    return report


def _count(report: VerifyReport, node: NodeEntry) -> None:
    report.nodes.append(node.name)
    report.files += len(node.files)
    report.bytes += node.archive.size
