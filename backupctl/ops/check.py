"""``backupctl check``: the whole store's health, like ``restic check``.

Why a module of its own: ``verify`` proves that one backup restores (it
unpacks it and runs the RDB checks); ``check`` sweeps every backup of a
store cheaply. Without reading data it reads every manifest and checks that
every archive it names exists with the size it declares; with
``read_data`` (or a subset) it also streams those archives through the
archive reader (nothing is written to disk) and checks every sha256, so a
flipped byte anywhere is found. Nothing in the store changes.

Findings are *errors* (a manifest that cannot be used, an archive missing,
short or corrupt: a backup that would not restore) or *warnings* (folders
without a manifest, which a running or killed backup leaves and prune
sweeps).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from backupctl.store import catalog
from backupctl.store.archive import ArchiveError, Progress, extract_verified
from backupctl.store.backends.base import Backend, NotFound, StorageError
from backupctl.store.catalog import BackupEntry, NodeEntry

_SUBSET = re.compile(r"^(?:(\d+(?:\.\d+)?)%|(\d+)/(\d+))$")


class CheckRequestError(ValueError):
    """A ``--read-data-subset`` that cannot be used. ``str()`` is one line."""


@dataclass(frozen=True)
class Subset:
    """Which archives to read: a fraction (random, like restic's ``N%``), or
    group ``n`` of ``of`` (restic's ``n/t``: over successive runs with
    n = 1..t every archive is read once)."""

    percent: float | None = None
    n: int = 1
    of: int = 1

    def pick(self, keys: Sequence[str], rng: random.Random) -> set[str]:
        """The keys to read (pure given ``rng``)."""
        if self.percent is not None:
            count = min(len(keys), math.ceil(len(keys) * self.percent / 100))
            return set(rng.sample(list(keys), count))
        return {k for k in keys if _bucket(k, self.of) == self.n - 1}


def _bucket(key: str, of: int) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % of


def parse_subset(text: str) -> Subset:
    """``"10%"``, ``"2.5%"`` or ``"1/5"`` (pure)."""
    m = _SUBSET.match(text.strip())
    if m is None:
        raise CheckRequestError(
            f"--read-data-subset {text!r}: use a percentage like 10% or a group like 1/5"
        )
    if m.group(1) is not None:
        pct = float(m.group(1))
        if not 0 < pct <= 100:
            raise CheckRequestError(
                f"--read-data-subset {text!r}: the percentage must be in (0, 100]"
            )
        return Subset(percent=pct)
    n, of = int(m.group(2)), int(m.group(3))
    if not 1 <= n <= of:
        raise CheckRequestError(f"--read-data-subset {text!r}: n/t needs 1 <= n <= t")
    return Subset(n=n, of=of)


@dataclass(frozen=True)
class Finding:
    target: str
    id: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"target": self.target, "id": self.id, "message": self.message}


@dataclass
class CheckReport:
    store: str
    read_data: bool
    backups: int = 0
    archives: int = 0
    archives_read: int = 0
    bytes_read: int = 0
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "store": self.store,
            "readData": self.read_data,
            "backups": self.backups,
            "archives": self.archives,
            "archivesRead": self.archives_read,
            "bytesRead": self.bytes_read,
            "errors": [f.to_json() for f in self.errors],
            "warnings": [f.to_json() for f in self.warnings],
        }


def check_store(
    store: Backend,
    *,
    target: str | None = None,
    read_data: bool = False,
    subset: Subset | None = None,
    rng: random.Random | None = None,
    progress: Progress | None = None,
    on_backup: Callable[[BackupEntry], None] | None = None,
) -> CheckReport:
    """Check every backup of ``store`` (or of ``target``); see the module
    docstring. ``subset`` implies reading data; ``on_backup`` hears of each
    backup as its turn comes (progress)."""
    if target is not None:
        catalog.validate_target(target)
    report = CheckReport(store=store.url, read_data=read_data or subset is not None)
    entries = catalog.scan(store, target)
    sizes = {o.key: o.size for e in entries for o in e.objects}
    archive_keys = [
        e.prefix + n.archive.key for e in entries if e.manifest for n in e.manifest.nodes
    ]
    if subset is not None:
        to_read = subset.pick(archive_keys, rng or random.Random())
    else:
        to_read = set(archive_keys) if read_data else set()
    for e in sorted(entries, key=lambda x: (x.target, x.id)):
        if on_backup is not None:
            on_backup(e)
        if e.invalid:
            report.errors.append(
                Finding(e.target, e.id, f"manifest cannot be used: {e.manifest_error}")
            )
            continue
        if e.manifest is None:
            report.warnings.append(
                Finding(
                    e.target,
                    e.id,
                    "no manifest: incomplete (running, or interrupted; prune sweeps it)",
                )
            )
            continue
        report.backups += 1
        for node in e.manifest.nodes:
            report.archives += 1
            key = e.prefix + node.archive.key
            problem = _check_archive(store, e, node, key, sizes, key in to_read, report, progress)
            if problem:
                report.errors.append(Finding(e.target, e.id, f"{node.archive.key}: {problem}"))
    return report


def _check_archive(
    store: Backend,
    e: BackupEntry,
    node: NodeEntry,
    key: str,
    sizes: dict[str, int],
    read: bool,
    report: CheckReport,
    progress: Progress | None,
) -> str:
    """What is wrong with one archive ("" when nothing)."""
    want = node.archive.size
    if key not in sizes:
        return "missing from the store"
    if sizes[key] != want:
        return f"stored size {sizes[key]} bytes, the manifest says {want}"
    if not read:
        return ""
    report.archives_read += 1
    try:
        with store.open(key) as src:
            size, sha = extract_verified(
                src,
                node.archive.compression,
                node.files,
                None,
                progress=progress,
                archive_size=want,
            )
    except ArchiveError as err:
        return str(err)
    except NotFound:
        return "missing from the store (deleted while checking?)"
    except StorageError as err:
        return f"cannot be read: {err}"
    report.bytes_read += size
    if size != want or sha != node.archive.sha256:
        return (
            f"checksum mismatch (sha256 {sha[:12]}…, {size} bytes; the manifest says "
            f"{node.archive.sha256[:12]}…, {want} bytes): the stored object is corrupt"
        )
    return ""


__all__ = ["CheckReport", "CheckRequestError", "Finding", "Subset", "check_store", "parse_subset"]
