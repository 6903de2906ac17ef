"""Staging folders that earlier, killed runs left in a data directory.

Why it exists: a ``restore --to-dir`` killed mid-download leaves
``DIR/.backupctl-staging-<id>-<pid>`` behind (a whole copy of the data),
and nothing else would ever remove it. Every restore command holds an
exclusive lock on DIR while it works, so any staging folder it finds then
belongs to a run that is over: the next run removes those (and says so),
keeping only the complete copies ``--stage-only`` made for a later
``--swap``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from backupctl.core.datadir import STAGED_MARKER, is_staging_of
from backupctl.core.safe_files import SafeDir, UnsafePathError


def staging_folders(data: SafeDir, backup_id: str | None = None) -> list[str]:
    """The names of the staging folders in ``data`` (of ``backup_id`` when given)."""
    return sorted(n for n in os.listdir(data.fd) if is_staging_of(n, backup_id))


def is_complete(data: SafeDir, name: str) -> bool:
    """A ``--stage-only`` copy whose marker (written last) is in place."""
    try:
        with data.subdir(name) as sub:
            st = sub.lstat(STAGED_MARKER)
    except (OSError, UnsafePathError):
        return False
    return st is not None and stat.S_ISREG(st.st_mode)


def remove(data: SafeDir, name: str) -> Path:
    """Remove the staging folder ``name`` without following any link in it;
    refuse a link, file or device planted at a staging name."""
    st = data.lstat(name)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        data.clear_leftover(name)  # our own stray file goes; anything else is refused
    else:
        data.rmtree(name)
    return data.path / name


def sweep(data: SafeDir, *, keep_complete: bool, backup_id: str | None = None) -> list[Path]:
    """Remove the staging folders of runs that are over (of ``backup_id``
    when given); with ``keep_complete`` the complete ``--stage-only`` copies
    stay. The caller holds the lock on ``data``. Returns the paths removed."""
    return [
        remove(data, name)
        for name in staging_folders(data, backup_id)
        if not (keep_complete and is_complete(data, name))
    ]
