"""Fuzzing the archive reader with real archives (zstd, gzip and plain tar,
one file of known size and one stored in parts), mutated: flipped bytes, cut
short, bytes inserted, a stretch repeated. Whatever the bytes, extraction
either yields exactly the original files or raises its one documented error,
``ArchiveError``, with one line -- and it never writes more than the
manifest declares nor reads past the archive's declared size plus one
buffer."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from backupctl.store import archive
from backupctl.store.archive import COPY_CHUNK, ArchiveError, Member, extract_verified
from backupctl.store.catalog import FileEntry

FUZZ = settings(
    max_examples=60,
    deadline=3000,  # ms per example: a hang fails the test
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
RDB = os.urandom(2500) + bytes(3000)  # stored in parts of 1000 bytes
AOF = b"*1\r\n$4\r\nPING\r\n" * 50


def _build(compression: str) -> tuple[bytes, list[FileEntry]]:
    saved = archive.PART_SIZE
    archive.PART_SIZE = 1000  # tiny parts: a few KiB exercise the splitting
    try:
        out = io.BytesIO()
        result = archive.write_archive(
            out,
            [
                Member("dump.rdb", None, "rdb", lambda: io.BytesIO(RDB)),
                Member("appendonlydir/a.aof", len(AOF), "aof", lambda: io.BytesIO(AOF)),
            ],
            compression,
        )
    finally:
        archive.PART_SIZE = saved
    assert result.files[0].parts == 6
    return out.getvalue(), result.files


ARCHIVES = {c: _build(c) for c in ("zstd", "gzip", "none")}
DECLARED = len(RDB) + len(AOF)


class _Counting(io.BytesIO):
    """The stored object, counting what the reader takes from it."""

    taken = 0

    def read(self, n: int | None = -1) -> bytes:
        data = super().read(n)
        self.taken += len(data)
        return data


def _check(compression: str, blob: bytes, files: list[FileEntry], declared_size: int) -> None:
    source = _Counting(blob)
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp)
        try:
            extract_verified(source, compression, files, dest, archive_size=declared_size)
        except ArchiveError as e:
            assert "\n" not in str(e), str(e)
        else:
            assert (dest / "dump.rdb").read_bytes() == RDB
            assert (dest / "appendonlydir" / "a.aof").read_bytes() == AOF
        written = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    assert written <= DECLARED
    assert source.taken <= declared_size + COPY_CHUNK


positions = hs.floats(min_value=0, max_value=1, exclude_max=True)
compressions = hs.sampled_from(sorted(ARCHIVES))


@FUZZ
@given(
    compression=compressions,
    flips=hs.lists(hs.tuples(positions, hs.integers(1, 255)), min_size=1, max_size=4),
)
def test_flipped_bytes(compression: str, flips: list[tuple[float, int]]) -> None:
    blob, files = ARCHIVES[compression]
    data = bytearray(blob)
    for where, mask in flips:
        data[int(where * len(data))] ^= mask
    _check(compression, bytes(data), files, len(blob))


@FUZZ
@given(compression=compressions, where=positions)
def test_cut_short(compression: str, where: float) -> None:
    """Cut in the files: ArchiveError; cut in the trailing padding: the files
    are whole and the returned size says the object is short (the caller
    compares it with the manifest's)."""
    blob, files = ARCHIVES[compression]
    cut = blob[: int(where * len(blob))]
    try:
        size, _ = extract_verified(
            io.BytesIO(cut), compression, files, None, archive_size=len(blob)
        )
    except ArchiveError as e:
        assert "\n" not in str(e)
    else:
        assert size == len(cut) < len(blob)


@FUZZ
@given(
    compression=compressions,
    where=positions,
    extra=hs.binary(min_size=1, max_size=64),
)
def test_inserted_bytes(compression: str, where: float, extra: bytes) -> None:
    blob, files = ARCHIVES[compression]
    at = int(where * len(blob))
    _check(compression, blob[:at] + extra + blob[at:], files, len(blob))


@FUZZ
@given(compression=compressions, start=positions, length=positions, times=hs.integers(2, 200))
def test_a_stretch_repeated(compression: str, start: float, length: float, times: int) -> None:
    blob, files = ARCHIVES[compression]
    a = int(start * len(blob))
    b = a + max(1, int(length * (len(blob) - a)))
    _check(compression, blob[:a] + blob[a:b] * times + blob[b:], files, len(blob))


@FUZZ
@given(
    compression=compressions,
    which=hs.integers(0, 1),
    size=hs.sampled_from([0, 1, 999, 1000, 2**40]),
    parts=hs.sampled_from([0, 1, 5, 7, 10**9]),
    declared=hs.sampled_from([1.0, 0.5, 0.0]),
)
def test_the_manifest_lying_about_a_file_or_the_archive_size(
    compression: str, which: int, size: int, parts: int, declared: float
) -> None:
    blob, files = ARCHIVES[compression]
    lied = list(files)
    f = lied[which]
    lied[which] = FileEntry(f.path, size, hashlib.sha256(b"").hexdigest(), f.kind, parts)
    _check(compression, blob, lied, int(declared * len(blob)))
