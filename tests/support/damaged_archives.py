"""Backups whose RDB is damaged inside an archive that is otherwise intact: every
sha256 and size in the manifest matches the damaged file, so only an RDB check
(backupctl's reader) can find it, as with a snapshot that was written corrupt."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path


def damage_rdb_in_archive(store: Path, change: bytes | None, cut: int = 0) -> None:
    """Put a damaged dump.rdb into the (uncompressed) archive and make every
    sha256 and size of the manifest match it: a snapshot that was corrupt
    when it was written, which only the RDB check can find."""
    archive = next(store.rglob("*.tar"))
    manifest_path = archive.parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    with tarfile.open(archive) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m, raw in members:
            if m.name == "dump.rdb":
                rdb = bytearray(raw[: len(raw) - cut] if cut else raw)
                if change is not None:
                    middle = len(rdb) // 2
                    rdb[middle : middle + len(change)] = change
                raw = bytes(rdb)
                for f in manifest["nodes"][0]["files"]:
                    if f["path"] == "dump.rdb":
                        f["size"], f["sha256"] = len(raw), hashlib.sha256(raw).hexdigest()
            m.size = len(raw)
            tar.addfile(m, io.BytesIO(raw))
    data = out.getvalue()
    archive.write_bytes(data)
    manifest["nodes"][0]["archive"].update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    manifest["size"] = len(data)
    manifest_path.write_text(json.dumps(manifest))
