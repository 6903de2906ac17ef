"""The archive reader's guards against a hostile or damaged store.

An archive comes from a store, and a 16 KiB zstd archive can inflate to
gigabytes: the reader (:func:`backupctl.store.archive.extract_verified`)
must never write, read or buffer more than the manifest declares. These are
the few pieces that bound it: the tar stream's read budget, the lookup of
the manifest's files by member name (parts recognised, never enumerated),
and the one error type of archives.
"""

from __future__ import annotations

import io
import tarfile
from typing import BinaryIO

from backupctl.store.catalog import FileEntry

#: The chunk in which archives are copied and read.
COPY_CHUNK = 1024 * 1024
PART_SUFFIX = ".part-"


class ArchiveError(Exception):
    """The archive is corrupt, truncated, or does not match its manifest."""


def part_name(name: str, number: int) -> str:
    return f"{name}{PART_SUFFIX}{number:06d}"


def member_kind(info: tarfile.TarInfo) -> str:
    if info.issym():
        return f"a symbolic link to {shown(info.linkname)}"
    if info.islnk():
        return f"a hard link to {shown(info.linkname)}"
    if info.ischr() or info.isblk():
        return "a device"
    if info.isfifo():
        return "a FIFO"
    return f"of tar type {info.type!r}"


def shown(name: str) -> str:
    return repr(name if len(name) <= 100 else name[:99] + "…")


#: Bytes of tar stream allowed beyond a member's data before the next member
#: starts: its padding, the next header (PAX records included) and tarfile's
#: read-ahead of one COPY_CHUNK. More than this between two listed files means
#: the stream holds something the manifest does not (a PAX header claiming a
#: gigabyte is refused here, before tarfile buffers it).
HEADER_SLACK = 2 * COPY_CHUNK


class TarBudget:
    """A decompressed tar stream that may be read only as far as the members
    accepted so far allow (:meth:`allow`); reading further raises
    :class:`ArchiveError`. Bounds the work and memory a small hostile archive
    can cause, whatever its compression ratio.

    Seekable forward only (:meth:`tell`; :meth:`seek` ahead by reading), so
    :mod:`tarfile` reads it in ``r:`` mode and hands a member's bytes straight
    through: its ``r|`` stream mode re-joins and re-slices a read-ahead
    buffer on every read, copying each byte several times (measured: a third
    of a 1 GiB restore's first pass, with the page faults of its large
    transient buffers)."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self.consumed = 0
        self._limit = HEADER_SLACK

    def allow(self, member_size: int) -> None:
        self._limit = self.consumed + member_size + HEADER_SLACK

    def read(self, n: int = -1) -> bytes:
        """``n`` bytes, fewer only at the end (tarfile's ``r:`` mode calls a short
        read the end of the data)."""
        room = self._limit - self.consumed
        want = room + 1 if n is None or n < 0 else min(n, room + 1)
        data = self._source.read(want)
        if 0 < len(data) < want:  # a source may return less: gather the rest
            parts = [data]
            got = len(data)
            for _ in range(want - got):  # each turn reads at least a byte
                more = self._source.read(want - got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
                if got >= want:
                    break
            data = b"".join(parts)
        self.consumed += len(data)
        if self.consumed > self._limit:
            start = self._limit - HEADER_SLACK
            raise ArchiveError(
                "the archive holds more data between its files than any archive backupctl "
                f"writes (over {HEADER_SLACK} bytes of headers after byte {start} of the tar "
                "stream): refused, nothing more is read"
            )
        return data

    def tell(self) -> int:
        return self.consumed

    def seek(self, offset: int, whence: int = 0) -> int:
        """Move ahead to ``offset`` (``whence`` 0) by reading through; tarfile
        never asks to go back in an archive it reads in order."""
        if whence != 0 or offset < self.consumed:
            raise io.UnsupportedOperation("the tar stream is read forward only")
        for _ in range(offset - self.consumed):  # each turn reads at least a byte
            if self.consumed >= offset or not self.read(min(COPY_CHUNK, offset - self.consumed)):
                break  # there, or the end (tarfile's next read says so)
        return self.consumed


class ExpectedFiles:
    """The manifest's files by archive member name; a stored-in-parts file's
    part names are recognised, not enumerated (a manifest claiming a billion
    parts costs nothing)."""

    def __init__(self, expected: list[FileEntry]) -> None:
        self.plain = {f.path: f for f in expected if not f.parts}
        self.parted = {f.path: f for f in expected if f.parts}

    def get(self, name: str) -> tuple[FileEntry | None, int]:
        if name in self.plain:
            return self.plain[name], 0
        base, sep, number = name.rpartition(PART_SUFFIX)
        want = self.parted.get(base) if sep and number.isdigit() else None
        if (
            want is None
            or not 1 <= int(number) <= want.parts
            or part_name(base, int(number)) != name
        ):
            return None, 0
        return want, int(number)
