"""``backupctl verify``: prove a stored backup restores, without restoring it.

Every archive is downloaded and unpacked into a temporary folder, every
sha256 in the manifest is checked, and each RDB passes the header/CRC64 check
and ``redis-check-rdb`` (when installed). The temporary copy is deleted
afterwards; nothing in the store changes.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from backupctl.ops.restore_dir import RestoreError, download_node
from backupctl.store.archive import Progress
from backupctl.store.backends.base import Backend
from backupctl.store.catalog import BackupEntry


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
) -> VerifyReport:
    manifest = entry.manifest
    if manifest is None:
        raise RestoreError(f"backup {entry.id} is incomplete (no manifest): nothing to verify")
    report = VerifyReport(id=manifest.id, target=manifest.target)
    for node in manifest.nodes:
        with tempfile.TemporaryDirectory(prefix="backupctl-verify-", dir=tmp_dir) as tmp:
            download_node(store, manifest, node, Path(tmp), progress=progress)
        report.nodes.append(node.name)
        report.files += len(node.files)
        report.bytes += node.archive.size
    return report
