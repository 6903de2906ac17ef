"""The archive format itself: files of known size, streams of unknown size
stored in parts, and what restore refuses. GNU tar is the outside judge."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from backupctl.store import archive, read_ahead
from backupctl.store.archive import ArchiveError, Member, extract_verified, write_archive
from backupctl.store.catalog import FileEntry

PART = 1000  # tiny parts, so a few KiB exercise the splitting


@pytest.fixture(autouse=True)
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive, "PART_SIZE", PART)


def stream_member(data: bytes, name: str = "dump.rdb") -> Member:
    return Member(name=name, size=None, kind="rdb", open=lambda: io.BytesIO(data))


def sized_member(data: bytes, name: str) -> Member:
    return Member(name=name, size=len(data), kind="aof", open=lambda: io.BytesIO(data))


def build(members: list[Member], compression: str = "zstd") -> tuple[bytes, list[FileEntry]]:
    out = io.BytesIO()
    result = write_archive(out, members, compression)
    blob = out.getvalue()
    assert result.size == len(blob) and result.sha256 == hashlib.sha256(blob).hexdigest()
    return blob, result.files


@pytest.mark.parametrize("size", [0, 1, PART - 1, PART, PART + 1, 2 * PART, 2 * PART + 500])
def test_a_stream_of_unknown_size_round_trips_and_is_split_only_when_larger_than_a_part(
    size: int, tmp_path: Path
) -> None:
    data = os.urandom(size)
    blob, files = build([stream_member(data), sized_member(b"aof bytes", "appendonly.aof")])
    rdb = files[0]
    assert (rdb.size, rdb.sha256) == (size, hashlib.sha256(data).hexdigest())
    expected_parts = 0 if size < PART else size // PART + (1 if size % PART else 0)
    assert rdb.parts == expected_parts

    dest = tmp_path / "out"
    size_read, sha = extract_verified(io.BytesIO(blob), "zstd", files, dest)
    assert (size_read, sha) == (len(blob), hashlib.sha256(blob).hexdigest())
    assert (dest / "dump.rdb").read_bytes() == data
    assert (dest / "appendonly.aof").read_bytes() == b"aof bytes"
    assert sorted(p.name for p in dest.iterdir()) == ["appendonly.aof", "dump.rdb"]


def test_gnu_tar_lists_the_parts_in_order_and_joins_them_into_the_file(tmp_path: Path) -> None:
    data = os.urandom(3 * PART + 10)
    blob, files = build([stream_member(data)])
    path = tmp_path / "node.tar.zst"
    path.write_bytes(blob)
    names = subprocess.run(
        f"zstd -dc '{path}' | tar -t", shell=True, check=True, capture_output=True, text=True
    ).stdout.split()
    assert names == [f"dump.rdb.part-{i:06d}" for i in range(1, 5)]
    joined = subprocess.run(
        f"zstd -dc '{path}' | tar -xO --wildcards 'dump.rdb.part-*'",
        shell=True,
        check=True,
        capture_output=True,
    ).stdout
    assert joined == data and files[0].parts == 4


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_parts_missing_out_of_order_or_miscounted_are_refused(tmp_path: Path) -> None:
    a, b, c = b"a" * PART, b"b" * PART, b"c" * 10
    whole = FileEntry(
        path="dump.rdb",
        size=len(a + b + c),
        sha256=hashlib.sha256(a + b + c).hexdigest(),
        kind="rdb",
        parts=3,
    )
    p = [f"dump.rdb.part-00000{i}" for i in (1, 2, 3)]
    ok = _tar([(p[0], a), (p[1], b), (p[2], c)])
    extract_verified(io.BytesIO(ok), "none", [whole], tmp_path / "ok")
    assert (tmp_path / "ok" / "dump.rdb").read_bytes() == a + b + c

    cases = {
        "missing": (_tar([(p[0], a), (p[1], b)]), [whole], "missing dump.rdb"),
        "order": (_tar([(p[1], b), (p[0], a), (p[2], c)]), [whole], "out of order"),
        "swapped content": (_tar([(p[0], b), (p[1], a), (p[2], c)]), [whole], "does not match"),
        "more than listed": (
            ok,
            [dataclasses.replace(whole, parts=2)],
            "does not match",  # the file ends after 2 parts: too short
        ),
        "plain member for a parted file": (
            _tar([("dump.rdb", a + b + c)]),
            [whole],
            "which the manifest does not list",
        ),
    }
    for why, (blob, files, needle) in cases.items():
        with pytest.raises(ArchiveError, match=needle):
            extract_verified(io.BytesIO(blob), "none", files, tmp_path / why)


class _HangsAfter(io.RawIOBase):
    """Gives ``data``, then blocks every further read until ``release`` is set."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.release = threading.Event()
        self.hung = threading.Event()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self.data:
            out, self.data = self.data, b""
            return out
        self.hung.set()
        self.release.wait(30)  # bounded: the test releases it at its end
        return b""


def test_a_corrupt_archive_is_reported_even_when_its_source_then_hangs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read-ahead thread stuck in a read must not hide the archive's own error."""
    monkeypatch.setattr(read_ahead, "JOIN_TIMEOUT", 0.2)
    source = _HangsAfter(_tar([("planted", b"x" * 10)]))
    listed = FileEntry(path="dump.rdb", size=1, sha256="0" * 64, kind="rdb")
    try:
        with pytest.raises(ArchiveError, match="which the manifest does not list"):
            extract_verified(source, "none", [listed], tmp_path / "out")  # type: ignore[arg-type]
        assert source.hung.is_set()  # the thread was indeed stuck in a read
    finally:
        source.release.set()
