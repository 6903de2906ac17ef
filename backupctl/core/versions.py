"""Which Redis can load which backup (pure): the controller checks it before
a RedisRestore touches anything, and ``restore --to-cluster`` before it stages."""

from __future__ import annotations

import re
from collections.abc import Mapping

#: Redis ``major.minor`` -> the newest RDB format it loads.
RDB_FORMATS: Mapping[tuple[int, int], int] = {
    (2, 6): 6,
    (2, 8): 6,
    (3, 0): 7,
    (3, 2): 8,
    (4, 0): 8,
    (5, 0): 9,
    (6, 0): 9,
    (6, 2): 9,
    (7, 0): 10,
    (7, 2): 11,
    (7, 4): 12,
}


def version_problem(
    backup_version: str, rdb_version: int | None, target_version: str
) -> str | None:
    """Why ``target_version`` cannot load an RDB written by ``backup_version``
    (format ``rdb_version``), or None."""
    b, t = _major_minor(backup_version), _major_minor(target_version)
    if b is None or t is None:
        return None
    if b[0] > t[0]:
        return (
            f"the backup was taken by Redis {backup_version}, the target runs Redis "
            f"{target_version}: a newer major version's RDB does not load in an older one"
        )
    newest = RDB_FORMATS.get(t)
    if rdb_version is not None and newest is not None and rdb_version > newest:
        return (
            f"the backup's RDB format {rdb_version} (Redis {backup_version}) is newer than "
            f"Redis {target_version} reads (up to {newest})"
        )
    return None


def _major_minor(version: str) -> tuple[int, int] | None:
    m = re.match(r"^v?(\d+)\.(\d+)", version.strip())
    return (int(m.group(1)), int(m.group(2))) if m else None
