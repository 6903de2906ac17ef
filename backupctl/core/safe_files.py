"""Files in a directory someone else may own, handled without following links.

Why this module exists: a restore often runs as root into a Redis data
directory that the Redis user owns. That user can plant a symlink, FIFO or
device at any name the tool is about to write (``DIR/.backupctl-restore.json.tmp
-> /etc/shadow``), or swap a folder the tool made for a link to elsewhere.
Every name is therefore resolved relative to a directory opened once
(:class:`SafeDir`, an ``O_DIRECTORY`` file descriptor), files are created
with ``O_CREAT|O_EXCL|O_NOFOLLOW`` and checked with ``fstat`` to be the
regular file just made, and renames go from one directory descriptor to
another. :func:`exchange` swaps two names atomically with Linux
``renameat2(RENAME_EXCHANGE)``. Anything planted at a name the tool uses is
refused with :class:`UnsafePathError` (one line), never followed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import shutil
import stat
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
#: Open flags of every directory this module opens.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class UnsafePathError(Exception):
    """Something the tool did not make sits at a name it uses (one line)."""


class ExchangeUnsupported(OSError):
    """The kernel or filesystem cannot swap two names atomically."""


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "a regular file"


class SafeDir:
    """An opened directory; every name below is relative to its descriptor.

    ``path`` is for messages only; :attr:`fd_path` names the same directory
    through ``/proc`` for code that takes paths (it stays the directory that
    was opened, whatever is renamed meanwhile)."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path

    @classmethod
    def open(cls, path: Path) -> SafeDir:
        """Open a directory the user named (its own path may be a link the user chose)."""
        return cls(os.open(path, DIR_FLAGS), path)

    def __enter__(self) -> SafeDir:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @property
    def fd_path(self) -> Path:
        return Path(f"/proc/{os.getpid()}/fd/{self.fd}")

    def lstat(self, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def identity(self, name: str) -> tuple[int, int] | None:
        st = self.lstat(name)
        return None if st is None else (st.st_dev, st.st_ino)

    def subdir(self, name: str) -> SafeDir:
        """Open the folder ``name`` without following a link; refuse anything else,
        and (as root) a folder another user made."""
        try:
            fd = os.open(name, DIR_FLAGS | os.O_NOFOLLOW, dir_fd=self.fd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                st = self.lstat(name)
                what = _kind(st.st_mode) if st else "not a folder"
                raise UnsafePathError(
                    f"{self.path / name} is {what}, not a folder backupctl made: remove it"
                ) from None
            raise
        return SafeDir(fd, self.path / name)

    def owned_subdir(self, name: str) -> SafeDir:
        """:meth:`subdir`, refused unless this process' user owns it."""
        sub = self.subdir(name)
        if os.fstat(sub.fd).st_uid != os.geteuid():
            sub.close()
            raise UnsafePathError(
                f"{self.path / name} belongs to another user, not to the backupctl run that "
                "made it: remove it and run again"
            )
        return sub

    def mkdir(self, name: str, mode: int = 0o755) -> SafeDir:
        """Create the folder ``name`` (FileExistsError if anything is there) and open it."""
        os.mkdir(name, mode, dir_fd=self.fd)
        return self.owned_subdir(name)

    def create(self, name: str, mode: int = 0o644) -> BinaryIO:
        """A new regular file ``name``, opened for writing; anything at ``name``
        is refused (our own leftover regular file is replaced)."""
        self.clear_leftover(name)
        fd = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            mode,
            dir_fd=self.fd,
        )
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            raise UnsafePathError(f"{self.path / name} is not the new file backupctl created")
        return os.fdopen(fd, "wb")

    def clear_leftover(self, name: str) -> None:
        """Remove ``name`` if it is a regular file this user owns (a leftover
        of an earlier run); refuse a link, FIFO, device, folder or another
        user's file."""
        st = self.lstat(name)
        if st is None:
            return
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
            os.unlink(name, dir_fd=self.fd)
            return
        owner = "" if st.st_uid == os.geteuid() else f" owned by uid {st.st_uid}"
        raise UnsafePathError(
            f"{self.path / name} is {_kind(st.st_mode)}{owner}, where backupctl writes its own "
            "file: refused (nothing followed); remove it and run again"
        )

    def write_atomic(self, name: str, data: bytes) -> None:
        """``name.tmp`` created exclusively, fsync'd, renamed over ``name``:
        the file is either old or new, never half, and no link is followed."""
        tmp = name + ".tmp"
        with self.create(tmp) as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        self.fsync()

    def read(self, name: str, limit: int = 1 << 20) -> bytes | None:
        """The bytes of the regular file ``name`` (None if missing or not a
        regular file; links are not followed)."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=self.fd)  # fmt: skip
        except OSError:
            return None
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            return fh.read(limit)

    def rename(self, name: str, to: SafeDir, to_name: str, *, noreplace: bool = False) -> None:
        if noreplace:
            try:
                renameat2(self.fd, name, to.fd, to_name, RENAME_NOREPLACE)
                return
            except ExchangeUnsupported:
                if to.lstat(to_name) is not None:
                    raise FileExistsError(errno.EEXIST, "exists", str(to.path / to_name)) from None
        os.rename(name, to_name, src_dir_fd=self.fd, dst_dir_fd=to.fd)

    def unlink(self, name: str) -> None:
        os.unlink(name, dir_fd=self.fd)

    def rmtree(self, name: str) -> bool:
        """Remove ``name`` and everything below without following links;
        False if nothing was there."""
        st = self.lstat(name)
        if st is None:
            return False
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(name, dir_fd=self.fd)
        else:
            os.unlink(name, dir_fd=self.fd)
        return True

    def fsync(self) -> None:
        os.fsync(self.fd)

    def try_lock(self) -> bool:
        """An exclusive ``flock`` on this directory, without waiting (held
        until closed); False when another process holds it."""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def chown_tree(self, name: str, uid: int, gid: int) -> None:
        """``lchown`` ``name`` and everything below it, by descriptor."""
        os.chown(name, uid, gid, dir_fd=self.fd, follow_symlinks=False)
        st = self.lstat(name)
        if st is None or not stat.S_ISDIR(st.st_mode):
            return
        with self.subdir(name) as sub:
            for entry in os.listdir(sub.fd):
                sub.chown_tree(entry, uid, gid)


_libc: ctypes.CDLL | None = None


def renameat2(src_fd: int, src: str, dst_fd: int, dst: str, flags: int) -> None:
    """Linux ``renameat2``; :class:`ExchangeUnsupported` when the C library,
    kernel or filesystem does not offer it."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fn = getattr(_libc, "renameat2", None)
    if fn is None:
        raise ExchangeUnsupported(errno.ENOSYS, "renameat2 is not in the C library")
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(src_fd, os.fsencode(src), dst_fd, os.fsencode(dst), flags) == 0:
        return
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        raise ExchangeUnsupported(err, f"renameat2: {os.strerror(err)}")
    raise OSError(err, os.strerror(err), src, None, dst)


def exchange(a: SafeDir, a_name: str, b: SafeDir, b_name: str) -> None:
    """Swap two existing names atomically (both stay in place at every instant)."""
    renameat2(a.fd, a_name, b.fd, b_name, RENAME_EXCHANGE)
