"""``backupctl copy``: backups from one store to another (an off-site copy),
like ``restic copy``: same target, same id, same manifest bytes.

Why a module of its own: a copy must be as trustworthy as the original,
and survive being stopped. So, per backup:

1. every object of the source folder except the manifest is streamed to the
   destination; an archive's bytes are hashed on the way and compared with
   the manifest's size and sha256 before the upload is committed (a
   mismatch aborts the upload, so a corrupt source never lands);
2. the manifest (its exact bytes, so a signed manifest stays signed) is
   written last: until then the copy is an incomplete folder that ``list``
   does not show and ``prune`` sweeps;
3. a rerun resumes: a backup complete in the destination with the same
   archives is skipped, an archive already there with the right size is read
   back and hashed, and kept only when it matches.

Data is streamed in chunks; nothing is held whole in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from backupctl.store import catalog
from backupctl.store.archive import ArchiveError, Progress
from backupctl.store.backends.base import CHUNK_SIZE, Backend, put_bytes, read_at_most
from backupctl.store.catalog import BackupEntry, CatalogError, Manifest
from backupctl.store.manifest_checks import MAX_MANIFEST_BYTES
from backupctl.store.prune import DELETING_MARKER


@dataclass(frozen=True)
class CopiedBackup:
    target: str
    id: str
    #: "copied" or "skipped" (already complete in the destination)
    action: str
    bytes: int
    #: archives found intact in the destination (a resumed copy)
    reused: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "id": self.id,
            "action": self.action,
            "bytes": self.bytes,
            "reused": self.reused,
        }


@dataclass
class CopyReport:
    source: str
    destination: str
    backups: list[CopiedBackup] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(b.bytes for b in self.backups)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "source": self.source,
            "destination": self.destination,
            "backups": [b.to_json() for b in self.backups],
            "bytes": self.bytes,
        }


def select(
    entries: Sequence[BackupEntry],
    ids: Sequence[str],
    *,
    target: str | None,
    latest: bool,
    url: str = "the source store",
) -> list[BackupEntry]:
    """The complete backups to copy (pure; ``entries`` newest first): the
    ``ids``, or with ``latest`` the newest of each target, or else all of
    them. :class:`CatalogError` with one line otherwise."""
    complete = [e for e in entries if e.complete and (target is None or e.target == target)]
    if ids and latest:
        raise CatalogError("give backup ids or --latest, not both")
    if latest:
        seen: dict[str, BackupEntry] = {}
        for e in complete:
            seen.setdefault(e.target, e)
        chosen = list(seen.values())
    elif ids:
        chosen = []
        for ref in ids:
            bid = catalog.validate_id(ref)
            matches = [e for e in complete if e.id == bid]
            if not matches:
                raise CatalogError(
                    f"backup {bid!r} is not a complete backup in {url} (see 'backupctl list')"
                )
            if len(matches) > 1:
                raise CatalogError(f"backup id {bid!r} exists for several targets; pass --target")
            if matches[0] not in chosen:
                chosen.append(matches[0])
    else:
        chosen = complete
    if not chosen:
        where = f" of target {target!r}" if target else ""
        raise CatalogError(f"no complete backup{where} in {url}: nothing to copy")
    return sorted(chosen, key=lambda e: (e.target, e.id))


def copy_backups(
    src: Backend,
    dst: Backend,
    *,
    ids: Sequence[str] = (),
    target: str | None = None,
    latest: bool = False,
    progress: Progress | None = None,
) -> CopyReport:
    """Copy backups from ``src`` to ``dst`` (see the module docstring)."""
    if target is not None:
        catalog.validate_target(target)
    chosen = select(catalog.scan(src, target), ids, target=target, latest=latest, url=src.url)
    there = {(e.target, e.id): e for e in catalog.scan(dst, target)}
    report = CopyReport(source=src.url, destination=dst.url)
    for e in chosen:
        report.backups.append(_copy_one(src, dst, e, there.get((e.target, e.id)), progress))
    return report


def _same_archives(a: Manifest, b: Manifest) -> bool:
    return [(n.archive.key, n.archive.sha256) for n in a.nodes] == [
        (n.archive.key, n.archive.sha256) for n in b.nodes
    ]


def _copy_one(
    src: Backend,
    dst: Backend,
    e: BackupEntry,
    existing: BackupEntry | None,
    progress: Progress | None,
) -> CopiedBackup:
    assert e.manifest is not None
    if existing is not None and existing.manifest is not None:
        if not _same_archives(existing.manifest, e.manifest):
            raise CatalogError(
                f"{e.target}/{e.id} already exists in {dst.url} with different archives: "
                "not overwritten (delete it there first if the source is the one to keep)"
            )
        return CopiedBackup(e.target, e.id, "skipped", 0)
    if existing is not None and existing.invalid:
        raise CatalogError(
            f"{e.target}/{e.id} exists in {dst.url} with a manifest that cannot be used "
            f"({existing.manifest_error}): not overwritten; delete it there first"
        )
    have = {o.key: o.size for o in existing.objects} if existing is not None else {}
    archives = {e.prefix + n.archive.key: n.archive for n in e.manifest.nodes}
    mkey = catalog.manifest_key(e.target, e.id)
    copied, reused = 0, 0
    for obj in e.objects:
        if obj.key == mkey or obj.key.rsplit("/", 1)[-1] == DELETING_MARKER:
            continue
        want = archives.get(obj.key)
        size = want.size if want is not None else obj.size
        if have.get(obj.key) == size and (want is None or _hash(dst, obj.key) == want.sha256):
            reused += 1
            continue
        copied += _stream(src, dst, obj.key, size, want.sha256 if want else None, progress)
    missing = sorted(set(archives) - {o.key for o in e.objects})
    if missing:
        raise ArchiveError(f"{e.target}/{e.id}: {missing[0]} is missing in {src.url}: not copied")
    raw = read_at_most(src, mkey, MAX_MANIFEST_BYTES)
    catalog.check_folder(Manifest.loads(raw), e.target, e.id)
    put_bytes(dst, mkey, raw)
    return CopiedBackup(e.target, e.id, "copied", copied + len(raw), reused)


def _hash(backend: Backend, key: str) -> str:
    digest = hashlib.sha256()
    with backend.open(key) as f:
        while chunk := f.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def _stream(
    src: Backend,
    dst: Backend,
    key: str,
    size: int,
    sha256: str | None,
    progress: Progress | None,
) -> int:
    """Copy one object; with ``sha256`` the upload is committed only when the
    bytes match it and ``size`` (else :class:`ArchiveError`, nothing written)."""
    digest, got = hashlib.sha256(), 0
    with src.open(key) as f, dst.writer(key) as w:
        while chunk := f.read(min(CHUNK_SIZE, size + 1 - got) if sha256 else CHUNK_SIZE):
            digest.update(chunk)
            got += len(chunk)
            if sha256 and got > size:
                break
            w.write(chunk)
            if progress is not None:
                progress(len(chunk))
        if sha256 is not None and (got != size or digest.hexdigest() != sha256):
            w.abort()
            raise ArchiveError(
                f"{src.url}/{key}: {got}{'+' if got > size else ''} bytes with sha256 "
                f"{digest.hexdigest()[:12]}…, the manifest says {size} bytes "
                f"{sha256[:12]}…: the source is corrupt, not copied (run 'backupctl check "
                "--read-data' on it)"
            )
        w.commit()
    return got


__all__ = ["CopiedBackup", "CopyReport", "copy_backups", "select"]
