"""Directory store: ``file:///abs/path`` or a plain path.

For backups to a mounted volume (NFS, a PVC) and for tests. An object is a
file under the root directory; keys map to relative paths. Writes go to a
hidden temp file next to the target (``.<name>.part-<random>``) which is
fsynced and renamed over the target on commit, so a reader sees either the
old object or the whole new one, never a partial file. Temp files left by a
crash are what :meth:`LocalBackend.pending_uploads` reports, so prune can
sweep them like S3's unfinished multipart uploads.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat as stat_mode
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, NoReturn

from backupctl.store.backends.base import (
    AccessDenied,
    ManagedWriter,
    NotFound,
    ObjectInfo,
    ObjectWriter,
    PendingUpload,
    StorageError,
    check_key,
    check_prefix,
)

#: Temp files: ``.<name>.part-<12 hex digits>``; never listed as objects.
TEMP_PATTERN = re.compile(r"^\.(?P<name>.+)\.part-[0-9a-f]{12}$")


def _raise_os(err: OSError, what: str) -> NoReturn:
    """Map an OSError to the storage error a user can act on."""
    reason = err.strerror or str(err)
    if isinstance(err, FileNotFoundError):
        raise NotFound(f"{what}: {reason}") from err
    if isinstance(err, PermissionError):
        raise AccessDenied(
            f"{what}: permission denied (check the directory's owner and mode)"
        ) from err
    if err.errno == errno.ENOSPC:
        raise StorageError(f"{what}: no space left on device") from err
    raise StorageError(f"{what}: {reason}") from err


def _file_type(mode: int) -> str:
    for test, name in (
        (stat_mode.S_ISLNK, "a symbolic link"),
        (stat_mode.S_ISFIFO, "a FIFO"),
        (stat_mode.S_ISCHR, "a character device"),
        (stat_mode.S_ISBLK, "a block device"),
        (stat_mode.S_ISSOCK, "a socket"),
        (stat_mode.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _mtime(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime, UTC)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBackend:
    """A :class:`~backupctl.store.backends.base.Backend` over a directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(os.path.abspath(os.path.expanduser(root)))
        self.url = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def check(self) -> None:
        try:
            self.root.stat()
        except FileNotFoundError:
            raise NotFound(
                f"directory {self.root} does not exist: create it with mkdir -p {self.root}"
            ) from None
        except OSError as err:
            _raise_os(err, f"cannot access {self.root}")
        if not self.root.is_dir():
            raise StorageError(f"{self.root} is not a directory")
        if not os.access(self.root, os.R_OK | os.W_OK | os.X_OK):
            raise AccessDenied(
                f"cannot read and write {self.root}: check the directory's owner and mode"
            )

    def writer(self, key: str) -> ObjectWriter:
        path = self._path(key)
        if not self.root.is_dir():
            self.check()  # raises the "mkdir -p" hint
        return _LocalWriter(self, path)

    def open(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            if TEMP_PATTERN.match(path.name) or path.is_dir():
                raise FileNotFoundError(errno.ENOENT, "No such file")
            # Never follow a link planted as an object (a manifest.json -> /dev/zero)
            # and never block on a FIFO: open without following or waiting, then
            # accept only a regular file.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise StorageError(
                    f"object {key!r} in {self.url} is a symbolic link, not a regular file: "
                    "refused (replace it with the file itself)"
                ) from err
            self._not_found(err, key)
        try:
            st = os.fstat(fd)
            if not stat_mode.S_ISREG(st.st_mode):
                raise StorageError(
                    f"object {key!r} in {self.url} is not a regular file "
                    f"({_file_type(st.st_mode)}): refused"
                )
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")  # the caller closes it
        except BaseException:
            os.close(fd)
            raise

    def _not_found(self, err: OSError, key: str) -> NoReturn:
        if isinstance(err, FileNotFoundError | NotADirectoryError):
            if not self.root.is_dir():
                self.check()
            raise NotFound(f"object {key!r} not found in {self.url}") from err
        _raise_os(err, f"cannot read {key!r} in {self.url}")

    def _walk(self, prefix: str) -> Iterator[tuple[str, Path, bool]]:
        """(key, path, is_temp) for every file under ``prefix``'s directory."""
        check_prefix(prefix)
        if not self.root.is_dir():
            self.check()
        start_rel = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root.joinpath(*start_rel.split("/")) if start_rel else self.root

        def onerror(err: OSError) -> None:
            # Vanished while walking, or the prefix names a file: nothing to list.
            if not isinstance(err, FileNotFoundError | NotADirectoryError):
                _raise_os(err, f"cannot list {err.filename}")

        for dirpath, dirnames, filenames in os.walk(start, onerror=onerror):
            dirnames.sort()
            rel = os.path.relpath(dirpath, self.root)
            base = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            for name in sorted(filenames):
                key = base + name
                if key.startswith(prefix):
                    yield key, Path(dirpath, name), bool(TEMP_PATTERN.match(name))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for key, path, is_temp in self._walk(prefix):
            if is_temp:
                continue
            try:
                st = path.lstat()  # a link is listed as itself; open() refuses it
            except FileNotFoundError:
                continue  # deleted while listing
            except OSError as err:
                _raise_os(err, f"cannot stat {path}")
            yield ObjectInfo(key, st.st_size, _mtime(st))

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = path.lstat()
            if stat_mode.S_ISDIR(st.st_mode) or TEMP_PATTERN.match(path.name):
                raise FileNotFoundError(errno.ENOENT, "No such file")
        except OSError as err:
            self._not_found(err, key)
        return ObjectInfo(key, st.st_size, _mtime(st))

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return
        except OSError as err:
            _raise_os(err, f"cannot delete {key!r} in {self.url}")
        self._prune_dirs(path.parent)

    def _prune_dirs(self, directory: Path) -> None:
        """Remove directories left empty, up to (not including) the root."""
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return  # not empty (or a writer just created it): stop
            directory = directory.parent

    def pending_uploads(self, prefix: str = "") -> Iterator[PendingUpload]:
        # Walk the prefix's directory, then match on the target key's name so
        # prefixes select unfinished uploads the way they select objects.
        check_prefix(prefix)
        directory = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
        for key, path, is_temp in self._walk(directory):
            m = TEMP_PATTERN.match(path.name) if is_temp else None
            if m is None:
                continue
            target = key[: len(key) - len(path.name)] + m.group("name")
            if not target.startswith(prefix):
                continue
            try:
                started = _mtime(path.stat())
            except FileNotFoundError:
                continue  # committed or aborted meanwhile
            yield PendingUpload(target, started, key)

    def abort_upload(self, upload: PendingUpload) -> None:
        path = self._path(upload.upload_id)
        if not TEMP_PATTERN.match(path.name):
            raise StorageError(f"{upload.upload_id!r} is not an unfinished upload in {self.url}")
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as err:
            _raise_os(err, f"cannot delete {upload.upload_id!r} in {self.url}")
        self._prune_dirs(path.parent)


class _LocalWriter(ManagedWriter):
    """Writes ``.<name>.part-<random>`` then renames it over ``<name>``."""

    def __init__(self, backend: LocalBackend, path: Path) -> None:
        super().__init__(str(path))
        self._backend = backend
        self._path = path
        self._tmp = path.with_name(f".{path.name}.part-{secrets.token_hex(6)}")
        self._file = os.fdopen(self._create_temp(), "wb")

    def _create_temp(self) -> int:
        for _ in range(3):
            try:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                # O_EXCL: never clobber another writer's temp file.
                return os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileNotFoundError:
                continue  # a concurrent delete pruned the directory we just made
            except OSError as err:
                _raise_os(err, f"cannot write {self._path}")
        raise StorageError(f"cannot create {self._path.parent}: it keeps vanishing")

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self._file.write(data)
        except OSError as err:
            _raise_os(err, f"cannot write {self._path}")

    def _commit(self) -> None:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self._path)
            _fsync_dir(self._path.parent)
        except FileNotFoundError as err:
            raise StorageError(
                f"cannot commit {self._path}: its temp file was removed (aborted by a sweep?)"
            ) from err
        except OSError as err:
            _raise_os(err, f"cannot write {self._path}")

    def _abort(self) -> None:
        with contextlib.suppress(OSError):  # a failed flush of data we discard anyway
            self._file.close()
        try:
            self._tmp.unlink()
        except FileNotFoundError:
            pass
        except OSError as err:
            _raise_os(err, f"cannot remove {self._tmp}")
        self._backend._prune_dirs(self._tmp.parent)
