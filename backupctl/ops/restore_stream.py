"""``restore --to-redis --no-tmp``: a node's RDB streamed from the store, twice, never on disk.

Why it exists: ``--to-redis`` verifies an archive completely before it writes
anything; by default it unpacks it into a temporary folder for that. On a
machine (or Job) with no disk room for the archive, ``--no-tmp`` streams it
from the store twice instead:

1. :func:`verify_streaming` reads the whole stored object: its size and
   sha256, the tar structure, every file's size and sha256 (a file stored in
   parts joined back), and the RDB's structure and CRC-64 with the reader
   (:func:`backupctl.redis.rdb_reader.read_rdb`), whose report gives the
   value types to route. It also records the sha256 of every
   :data:`BLOCK`-sized block of the RDB's bytes (32 bytes per 4 MiB);
2. :func:`rdb_again` streams the object again and hands the RDB's bytes on
   a block at a time, each only once its sha256 equals the first pass's: a
   stored object that changed between the passes stops the load at the
   first changed block (:class:`StoreChanged`), and bytes not verified are
   never parsed, so never written.

An encrypted archive (age, docs/encryption.md) is decrypted as it is read
in both passes, between the stored object's sha256 and the decompressor:
the first pass reads the age stream to its end, so every chunk's
authentication tag and the end of the stream are checked before anything
is written.

Memory: one block, whatever the archive's size. ``redis-check-rdb`` (the
second opinion of the unpacked route) needs a file, so it is not run here.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import BinaryIO

import zstandard

from backupctl.redis.rdb_reader import RdbFormatError, RdbReport, read_rdb
from backupctl.store import catalog
from backupctl.store.archive import (
    COPY_CHUNK,
    ArchiveError,
    HashingReader,
    Progress,
    decompressing_reader,
    iter_members,
)
from backupctl.store.archive_guard import ExpectedFiles, TarBudget
from backupctl.store.backends.base import Backend
from backupctl.store.catalog import FileEntry, Manifest, NodeEntry
from backupctl.store.encryption import Identities, decrypting_reader, require_keys

__all__ = ["BLOCK", "StoreChanged", "rdb_again", "verify_streaming"]

#: Bytes of the RDB per recorded sha256.
BLOCK = 4 << 20


class StoreChanged(ArchiveError):
    """The stored object's RDB bytes differ from what the first pass verified."""

    def __init__(self, offset: int) -> None:
        super().__init__(
            f"the stored archive changed after it was verified: the RDB's bytes from offset "
            f"{offset} differ from the first pass"
        )
        self.offset = offset


class _Tally:
    """Size and sha256 of one file of the archive, its parts in order."""

    def __init__(self, want: FileEntry) -> None:
        self.want = want
        self.hash = hashlib.sha256()
        self.size = 0
        self.parts = 0

    def add(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        if self.size > self.want.size:
            raise ArchiveError(
                f"{self.want.path}: the archive holds more than the {self.want.size} bytes "
                "the manifest declares: the archive is corrupt or was tampered with"
            )
        self.hash.update(data)

    @property
    def complete(self) -> bool:
        return self.parts >= max(1, self.want.parts)

    def check(self) -> None:
        if self.size != self.want.size or self.hash.hexdigest() != self.want.sha256:
            raise ArchiveError(
                f"{self.want.path}: sha256/size mismatch (size {self.size}, the manifest says "
                f"{self.want.size}): the stored object is corrupt"
            )


class _FileReader(io.RawIOBase):
    """The bytes of one file (``want``) of a tar stream, its parts joined;
    members of the other files met on the way are read through and tallied."""

    def __init__(self, tar: TarBudget, expected: list[FileEntry], want: FileEntry) -> None:
        self._budget = tar
        self._members = iter_members(tar)  # type: ignore[arg-type]
        self._expected = ExpectedFiles(expected)
        self._want = want
        self.tallies: dict[str, _Tally] = {}
        self._reader: BinaryIO | None = None
        self.done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            for _ in range(1 << 40):  # each turn reads a member or data: bounded by the archive
                if self.done:
                    return 0
                if self._reader is not None:
                    data = self._reader.read(min(len(b), COPY_CHUNK))
                    if data:
                        self._tally(self._want).add(data)
                        b[: len(data)] = data
                        return len(data)
                    self._reader = None
                    self.done = self._tally(self._want).complete
                else:
                    self._next()
            return 0
        except (tarfile.TarError, zstandard.ZstdError, EOFError, OSError) as e:
            raise ArchiveError(f"archive is corrupt or truncated: {e}") from e

    def _tally(self, f: FileEntry) -> _Tally:
        if f.path not in self.tallies:
            self.tallies[f.path] = _Tally(f)
        return self.tallies[f.path]

    def _next(self) -> bool:
        """Open the next member: the wanted file's next part, or another file's
        member read through. False at the end of the tar stream."""
        got = next(self._members, None)
        if got is None:
            if not self.done:
                raise ArchiveError(f"archive is missing {self._want.path} (or part of it)")
            return False
        info, reader = got
        want, number = self._expected.get(info.name)
        if want is None:
            raise ArchiveError(f"archive holds {info.name!r}, which the manifest does not list")
        tally = self._tally(want)
        if tally.complete or (number > 1 and tally.parts != number - 1):
            raise ArchiveError(f"{info.name}: part repeated or out of order: corrupt archive")
        tally.parts += 1
        self._budget.allow(info.size)
        if want is self._want:
            self._reader = reader
        else:
            while data := reader.read(COPY_CHUNK):
                tally.add(data)
        return True

    def read_rest(self) -> None:
        """The members after the wanted file, tallied; then every file checked."""
        try:
            while self._next():
                pass
        except (tarfile.TarError, zstandard.ZstdError, EOFError, OSError) as e:
            raise ArchiveError(f"archive is corrupt or truncated: {e}") from e
        for f in [*self._expected.plain.values(), *self._expected.parted.values()]:
            tally = self.tallies.get(f.path)
            if tally is None or not tally.complete:
                raise ArchiveError(f"archive is missing {f.path} listed in the manifest")
            tally.check()


class _Blocks(io.RawIOBase):
    """``source`` handed on a :data:`BLOCK` at a time: with ``check`` each
    block's sha256 must equal ``digests``' (else :class:`StoreChanged`),
    without it the digests are recorded."""

    def __init__(self, source: BinaryIO, digests: list[bytes], *, check: bool) -> None:
        self._source = source
        self._digests = digests
        self._check = check
        self._buf = memoryview(b"")
        self._index = 0
        self.offset = 0  # bytes of the source handed on

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if not self._buf:
            self._fill()
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        self.offset += n
        return n

    def _fill(self) -> None:
        chunks, size = [], 0
        while size < BLOCK and (data := self._source.read(min(COPY_CHUNK, BLOCK - size))):
            chunks.append(data)
            size += len(data)
        block = b"".join(chunks)
        if not block and self._index == len(self._digests):
            return  # the end, where the first pass ended
        digest = hashlib.sha256(block).digest()
        if not self._check:
            if block:
                self._digests.append(digest)
        elif self._index >= len(self._digests) or self._digests[self._index] != digest:
            raise StoreChanged(self.offset)
        self._index += 1
        self._buf = memoryview(block)


def _object_key(manifest: Manifest, node: NodeEntry) -> str:
    return catalog.backup_dir(manifest.target, manifest.id) + node.archive.key


def _plain(
    stack: ExitStack, hashed: HashingReader, node: NodeEntry, identities: Identities | None
) -> BinaryIO:
    """The stored bytes as the compressed tar stream: decrypted (age) when the
    archive is encrypted, the decrypting reader closed when ``stack`` ends."""
    if not node.archive.encrypted:
        return hashed  # type: ignore[return-value]
    assert identities is not None  # require_keys checked
    return stack.enter_context(decrypting_reader(hashed, identities, node.archive.key))  # type: ignore[arg-type]


def _read_to_end(plain: BinaryIO) -> None:
    """Read what is left of the decrypted stream (after the tar's end): age
    checks its last chunk's tag and the end of the stream only there, and its
    thread is done reading the stored object before the caller drains it."""
    for _ in range(1 << 40):  # bounded by the archive's size
        if not plain.read(COPY_CHUNK):
            return


def verify_streaming(
    store: Backend,
    manifest: Manifest,
    node: NodeEntry,
    digests: list[bytes],
    *,
    progress: Progress | None = None,
    identities: Identities | None = None,
) -> RdbReport:
    """Pass 1: the node's stored archive read through and checked (see the
    module docstring), the RDB's block digests appended to ``digests``;
    :class:`ArchiveError` naming the first problem. An encrypted archive needs
    ``identities`` (checked before the object is opened)."""
    rdb = node.rdb_file
    if rdb is None:
        raise ArchiveError(f"backup {manifest.id} node {node.name} has no RDB file")
    require_keys(manifest, identities, [node])
    with store.open(_object_key(manifest, node)) as obj, ExitStack() as stack:
        hashed = HashingReader(obj, progress, limit=node.archive.size)
        plain = _plain(stack, hashed, node, identities)
        tar = TarBudget(decompressing_reader(plain, node.archive.compression))
        files = _FileReader(tar, node.files, rdb)
        blocks = _Blocks(files, digests, check=False)  # type: ignore[arg-type]
        try:
            report = read_rdb(blocks, deep=True, size=rdb.size)  # type: ignore[arg-type]
        except RdbFormatError as e:
            raise ArchiveError(f"{rdb.path}: the RDB is corrupt: {e}") from e
        if not files.done:  # the reader stopped at the trailer: anything after it is not RDB
            raise ArchiveError(f"{rdb.path}: data after the end of the RDB")
        files.read_rest()
        if node.archive.encrypted:
            _read_to_end(plain)
        hashed.drain()
    if hashed.size != node.archive.size or hashed.hexdigest() != node.archive.sha256:
        raise ArchiveError(
            f"{node.archive.key}: archive checksum mismatch (size {hashed.size}, the manifest "
            f"says {node.archive.size}): the stored object is corrupt"
        )
    return report


@contextmanager
def rdb_again(
    store: Backend,
    manifest: Manifest,
    node: NodeEntry,
    digests: list[bytes],
    identities: Identities | None = None,
) -> Iterator[BinaryIO]:
    """Pass 2: the node's RDB bytes streamed from the store again (decrypted
    with ``identities`` when encrypted), each block handed on only once it
    matches the first pass (:class:`StoreChanged`)."""
    rdb = node.rdb_file
    assert rdb is not None  # verify_streaming checked
    with store.open(_object_key(manifest, node)) as obj, ExitStack() as stack:
        hashed = HashingReader(obj, None, limit=node.archive.size)
        plain = _plain(stack, hashed, node, identities)
        tar = TarBudget(decompressing_reader(plain, node.archive.compression))
        yield _Blocks(_FileReader(tar, node.files, rdb), digests, check=True)  # type: ignore[arg-type,misc]
