"""Temporary folders a later run can clean up: ``verify`` and ``restore
--to-redis`` unpack backups into them.

Why a module of its own: a ``tempfile.TemporaryDirectory`` is removed on
normal exit and on exceptions (SIGTERM and SIGINT unwind as one, see
:mod:`backupctl.cli.signals`), but not after SIGKILL or an OOM kill -- and a
killed backup verification leaves gigabytes behind. So every folder is named
``<prefix><pid>-<random>`` and holds a lock file its owner keeps
``flock``-ed while it lives; the next run in the same parent removes every
folder of its prefix whose lock it can take (its owner is dead, whatever its
pid) and says which. A folder whose lock file does not exist yet (its owner
was killed right after ``mkdir``) goes when that pid is not alive.

Only folders owned by this user, that are real directories (never a symlink)
and match the pattern exactly, are touched. The parent folder (``--tmp-dir``)
is checked first, so a missing, unwritable or full one is one clear line.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

__all__ = ["LOCK_NAME", "TempDirError", "check_parent", "scratch_dir", "sweep"]

LOCK_NAME = ".backupctl.lock"
#: Errors that mean "no room" when writing into the folder.
_FULL = {errno.ENOSPC, errno.EDQUOT}


class TempDirError(Exception):
    """The temporary folder's parent cannot be used; ``str()`` says how to fix it."""


def check_parent(parent: Path, *, need: int = 0, option: str = "--tmp-dir") -> None:
    """Refuse, in one line, a ``parent`` that is missing, not a folder, not
    writable, or has less than ``need`` bytes free."""
    try:
        st = os.stat(parent)
    except FileNotFoundError:
        raise TempDirError(
            f"{option} {parent} does not exist: create it (mkdir -p {parent}) or pick another "
            "folder"
        ) from None
    except OSError as exc:
        raise TempDirError(f"{option} {parent}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise TempDirError(f"{option} {parent} is not a folder: pick a folder to unpack into")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise TempDirError(f"{option} {parent} is not writable by this user: pick another folder")
    if need > 0:
        free = shutil.disk_usage(parent).free
        if free < need:
            raise TempDirError(
                f"{option} {parent} has {_mib(free)} free but this needs about {_mib(need)}: "
                "free some space or pick another folder"
            )


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _owner_dead(folder: Path, pid: int) -> bool:
    """True when nobody holds the folder's lock (or, with no lock file, when
    ``pid`` is gone)."""
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return not _pid_alive(pid)
    except OSError:
        return False  # a link planted there, or unreadable: leave it alone
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # its owner holds the lock: alive
    finally:
        os.close(fd)  # (releases the lock if we got it)
    return True


def sweep(parent: Path, prefix: str) -> list[str]:
    """Remove the folders of dead runs (see the module docstring) under
    ``parent``; returns their paths."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)-[A-Za-z0-9_]+$")
    removed: list[str] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    uid = os.getuid()
    for entry in entries:
        m = pattern.match(entry.name)
        if m is None:
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
            continue
        folder = Path(entry.path)
        if int(m.group(1)) == os.getpid() or not _owner_dead(folder, int(m.group(1))):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            removed.append(str(folder))
    return removed


@contextmanager
def scratch_dir(
    parent: Path | None,
    prefix: str,
    *,
    need: int = 0,
    note: Callable[[str], None] | None = None,
    option: str = "--tmp-dir",
) -> Iterator[Path]:
    """A private folder ``<parent>/<prefix><pid>-<random>``, locked while the
    block runs and removed after it (also when it raises). Leftovers of dead
    runs under ``parent`` (default: the system temp folder) are removed first
    and reported through ``note`` in one line. ``need`` bytes must be free.
    A write that runs out of room in it becomes a :class:`TempDirError`."""
    base = parent if parent is not None else Path(tempfile.gettempdir())
    check_parent(base, need=need, option=option)
    removed = sweep(base, prefix)
    if removed and note is not None:
        folders = "folder" if len(removed) == 1 else "folders"
        note(f"removed {len(removed)} leftover temp {folders} of killed runs: {', '.join(removed)}")
    try:
        folder = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=base))
    except OSError as exc:
        raise TempDirError(
            f"cannot create a temporary folder in {option} {base}: {exc.strerror or exc}"
        ) from None
    lock = -1
    try:
        lock = os.open(
            folder / LOCK_NAME,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
        )
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield folder
    except OSError as exc:
        if exc.errno in _FULL:
            raise TempDirError(
                f"no room left in {option} {base} while unpacking ({exc.strerror}): free some "
                "space or pick another folder"
            ) from None
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if lock >= 0:
            with suppress(OSError):
                os.close(lock)
