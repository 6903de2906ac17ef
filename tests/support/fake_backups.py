"""Fake backups in a store for prune tests: a tiny archive object per node
and a valid manifest written last (through catalog), no Redis needed."""

from __future__ import annotations

import hashlib
from datetime import datetime

from backupctl.core.timefmt import format_time
from backupctl.store import catalog
from backupctl.store.backends.base import Backend, put_bytes
from backupctl.store.catalog import ArchiveEntry, FileEntry, Manifest, NodeEntry


def backup_id(created: datetime) -> str:
    return catalog.new_backup_id(created)


def add_backup(
    backend: Backend,
    target: str,
    created: datetime,
    *,
    complete: bool = True,
    bid: str | None = None,
    nodes: tuple[str, ...] = ("redis-0",),
) -> str:
    """Write archives (and, if ``complete``, the manifest) of one backup."""
    bid = bid or backup_id(created)
    entries = []
    for node in nodes:
        data = f"{target}/{bid}/{node}\n".encode()
        name = catalog.archive_name(node, "zstd")
        put_bytes(backend, catalog.backup_dir(target, bid) + name, data)
        sha = hashlib.sha256(data).hexdigest()
        entries.append(
            NodeEntry(
                name=node,
                role="master",
                redis_version="7.0.15",
                rdb_version=10,
                snapshot_time=format_time(created),
                keys=1,
                archive=ArchiveEntry(key=name, size=len(data), sha256=sha, compression="zstd"),
                files=[FileEntry(path="dump.rdb", size=len(data), sha256=sha, kind="rdb")],
            )
        )
    if complete:
        catalog.write_manifest(
            backend,
            Manifest(
                id=bid,
                target=target,
                created=format_time(created),
                tool_version="0.1.0",
                redis_version="7.0.15",
                method="bgsave",
                compression="zstd",
                nodes=entries,
            ),
        )
    return bid


def keys(backend: Backend) -> set[str]:
    return {o.key for o in backend.list("")}


def check_only_intact_backups_are_listed(backend: Backend) -> list[str]:
    """Every folder that catalog lists as complete has all its archives with
    the manifest's sizes; returns the complete ids."""
    present = {o.key: o.size for o in backend.list("")}
    ids = []
    for e in catalog.scan(backend):
        if not e.complete:
            continue
        assert e.manifest is not None
        for n in e.manifest.nodes:
            key = e.prefix + n.archive.key
            assert present.get(key) == n.archive.size, f"{e.id}: {key} missing or truncated"
        ids.append(e.id)
    return ids
