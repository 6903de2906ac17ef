"""Which restore a ``backupctl restore`` command line asks for.

``restore`` has one mode per destination (``--to-dir``, ``--to-redis``,
``--to-cluster``) and a dry run; most of its options belong to one or two of
them. :data:`FLAG_MODES` is the one table of which flag goes with which
destination, :data:`EXCLUSIVE` the flags of which at most one may be given;
:func:`mode_of` checks a command line against both and names the mode, or
raises :class:`FlagError` with one message naming the flag and the mode.
:class:`RestoreRequest` is what the mode functions receive.

No typer here: the flags come in as the names the user typed.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

DIR = "--to-dir"
REDIS = "--to-redis"
CLUSTER = "--to-cluster"
#: The destinations: exactly one per restore (none for a dry run).
DESTINATIONS = (DIR, REDIS, CLUSTER)

#: Which destinations each flag goes with. Flags not listed (--target,
#: --endpoint, --json, --termination-log, --dry-run, --verify-key,
#: --require-signatures, --limit-download) go with every mode.
FLAG_MODES: dict[str, tuple[str, ...]] = {
    "--stage-only": (DIR,),
    "--swap": (DIR,),
    "--discard-staged": (DIR,),
    "--prefer-aof": (DIR,),
    "--node": (DIR, REDIS),
    "--appendonly": (DIR, CLUSTER),
    "--flush": (REDIS,),
    "--tmp-dir": (REDIS,),
    "--no-tmp": (REDIS,),
    "--redis-server": (DIR,),
    "--large-value-threshold": (REDIS,),
    "--password-file": (REDIS, CLUSTER),
    "--restart": (CLUSTER,),
    "--verify-only": (CLUSTER,),
    "--timeout": (CLUSTER,),
    "--force": (DIR,),
    "--identity": (DIR, REDIS, CLUSTER),
}

#: Groups of flags of which at most one may be given: the steps of a
#: restore to a directory (and the dry run), and the two ends of a cluster
#: restore.
EXCLUSIVE: tuple[tuple[str, ...], ...] = (
    ("--stage-only", "--swap", "--discard-staged", "--dry-run"),
    ("--restart", "--verify-only"),
    ("--tmp-dir", "--no-tmp"),
)

EXACTLY_ONE = (
    "pass exactly one of --to-dir DIR (a stopped Redis' data directory), "
    "--to-redis URL (a running Redis, key by key) or --to-cluster URL (a Redis Cluster "
    "whose nodes' data directories are on this machine)"
)


class FlagError(Exception):
    """Flags that do not go together; ``str()`` is the one-line message."""


_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str, flag: str) -> int:
    """``64MiB``, ``1MiB``, ``512KiB``, ``1G``, ``1048576`` (bytes) -> bytes (binary
    units: ``MB`` is read as ``MiB``); :class:`FlagError` naming ``flag`` otherwise."""
    m = _SIZE.match(text or "")
    if m is None or int(m.group(1)) <= 0:
        raise FlagError(
            f"{flag} {text!r} is not a size: give a positive number of bytes, or one with a "
            "unit (KiB, MiB, GiB), e.g. 64MiB"
        )
    unit = (m.group(2) or "").lower()[:1]
    return int(m.group(1)) * _UNITS[unit]


def mode_of(given: Collection[str]) -> str | None:
    """The destination flag of the command line whose flags are ``given``
    (None: a dry run without one), or :class:`FlagError`."""
    for group in EXCLUSIVE:
        chosen = [f for f in group if f in given]
        if len(chosen) > 1:
            raise FlagError(f"{' and '.join(chosen)} exclude each other")
    destinations = [d for d in DESTINATIONS if d in given]
    if len(destinations) > 1:
        raise FlagError(EXACTLY_ONE)
    mode = destinations[0] if destinations else None
    shown = mode or ("--dry-run" if "--dry-run" in given else None)
    for flag, modes in FLAG_MODES.items():
        if flag in given and mode not in modes:
            where = " or ".join(modes)
            raise FlagError(f"{flag} goes with {where}" + (f", not with {shown}" if shown else ""))
    if mode is None and "--dry-run" not in given:
        raise FlagError(EXACTLY_ONE)
    return mode


@dataclass(frozen=True)
class RestoreRequest:
    """A restore as the user asked for it (the flags already checked)."""

    store_url: str
    backup: str
    target: str | None
    endpoint: str | None
    as_json: bool
    termination_log: Path | None
    to_dir: Path | None = None
    to_redis: str | None = None
    to_cluster: str | None = None
    # --to-dir (and --to-cluster: appendonly)
    appendonly: str = "auto"
    node: str | None = None
    prefer_aof: bool = False
    stage_only: bool = False
    swap: bool = False
    discard_staged: bool = False
    force: bool = False  # restore into a directory a running process works in
    # --to-redis (and --to-cluster: password_file)
    flush: bool = False
    tmp_dir: Path | None = None
    redis_server: str | None = None  # --to-dir: the server that will load DIR
    large_value_threshold: int = 64 << 20  # --to-redis: larger values are rebuilt with commands
    no_tmp: bool = False  # --to-redis: stream the archive twice instead of unpacking it
    password_file: Path | None = None
    # --to-cluster
    restart: bool = False
    verify_only: bool = False
    timeout: float = 600.0
    # every destination: --identity files for encrypted backups (docs/encryption.md)
    identity: tuple[Path, ...] = ()
    # every mode: --verify-key files and --require-signatures (docs/encryption.md)
    verify_key: tuple[Path, ...] = ()
    require_signatures: bool = False
    # every mode: --limit-download (KiB/s)
    limit_download: float | None = None
