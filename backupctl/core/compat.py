"""Which server writes which RDB, and which server loads which backup (pure).

Why a module of its own: one table answers every "can this go there?" of the
project -- the restore routes (``--to-dir`` with ``--redis-server``,
``--to-redis``, ``--to-cluster``), the RedisRestore controller's accept step,
``check-redis`` and whether an installed ``redis-check-rdb`` can give a second
opinion on a file. A second table somewhere else would drift from it.

Sources, per row (``RELEASES``):

* ``rdb.h`` of redis/redis at each release tag: ``RDB_VERSION`` is 6 up to
  3.0, 7 in 3.2, 8 in 4.0, 9 in 5.0-6.2, 10 in 7.0, 11 in 7.2, 12 in 7.4 and
  8.0 (new types 22-25: hashes with field TTLs; opcode 244: slot info). Redis
  refuses any version above its own (``rdbLoadRioWithLoadingCtx``: "Can't
  handle RDB format version") and any magic but ``REDIS`` ("Wrong signature").
* ``rdb.h`` of valkey-io/valkey: 7.2-8.1 write ``REDIS0011`` ("RDB 11 is the
  last open-source Redis RDB version"); 9.0 writes ``VALKEY080`` (9.2:
  ``VALKEY081``, from ``RDB_VERSION_MAP``); RDB 12-79 are "foreign" Redis
  formats that Valkey 9 loads only with ``rdb-version-check relaxed`` and only
  without the foreign types 22-243 (hash field TTLs among them).
* What the real servers did on this project's test machine (2026-12; each
  server wrote a dump with every core type, then every server was started on
  every dump, and every ``*-check-rdb`` was run on every dump):

  ======================  ============  =========  ==========  ===========  ===========
  backup written by       header        Redis 7.0  Redis 8.0   Valkey 8.1   Valkey 9.1
  ======================  ============  =========  ==========  ===========  ===========
  Redis 7.0.15            REDIS0010     loads      loads       loads        loads
  Redis 8.0.2             REDIS0012     refuses    loads       refuses      relaxed only
  Valkey 8.1.1            REDIS0011     refuses    loads       loads        loads
  Valkey 9.1.2            VALKEY080     refuses    refuses     refuses      loads
  ======================  ============  =========  ==========  ===========  ===========

  "relaxed only": Valkey 9.1.2 refused RDB 12 ("Can't handle RDB format
  version 12"), loaded it with ``--rdb-version-check relaxed`` (same DEBUG
  DIGEST); Valkey 8.1.1 refused it either way. ``redis-check-rdb`` 7.0.15
  calls RDB 11, 12 and VALKEY080 errors; ``valkey-check-rdb`` 8.1.1 accepts
  10 and 11; ``redis-check-rdb`` 8.0.2 accepts 10, 11, 12.
  Over replication Valkey 9.1.2 writes the format of the version the replica
  announces (``REPLCONF version``); without one it sent ``REDIS0011`` and
  failed the sync on a key that needs ``VALKEY080`` ("Can't store key (db 0)
  in RDB version 11"), so backupctl announces the server's own version. The
  manifest records the header actually read, never the table's guess.
  ``redis-check-rdb --version`` prints ``redis-check-rdb 7.0.15`` (7.0) or
  ``redis-check-rdb v=8.0.2 sha=...`` (8.x; Valkey: ``valkey-check-rdb
  v=8.1.1``). INFO of Valkey says ``server_name:valkey``, ``valkey_version``
  and, for clients, ``redis_version:7.2.4``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "FLAVOURS",
    "RELEASES",
    "SUPPORTED",
    "Release",
    "display",
    "load_problem",
    "parse_server_version",
    "parse_version",
    "payload_accepted",
    "reads",
    "release",
    "supported",
    "tool_reads",
    "value_route",
    "writes",
]

FLAVOURS = ("redis", "valkey")
REDIS_MAGIC = "REDIS"
VALKEY_MAGIC = "VALKEY"


@dataclass(frozen=True)
class Release:
    """From ``since`` (major, minor) on, until the next row of its flavour."""

    flavour: str
    since: tuple[int, int]
    magic: str  # what it writes: "REDIS" or "VALKEY"
    rdb: int  # the RDB version it writes
    reads_redis: int  # the newest REDIS-magic version it loads
    reads_valkey: int = 0  # the newest VALKEY-magic version it loads (0: none)
    relaxed_redis: int = 0  # with rdb-version-check relaxed, REDIS versions up to this


RELEASES: tuple[Release, ...] = (
    # redis/redis src/rdb.h RDB_VERSION at the tags 2.6.0 ... 8.0.0.
    Release("redis", (2, 6), "REDIS", 6, 6),
    Release("redis", (3, 2), "REDIS", 7, 7),
    Release("redis", (4, 0), "REDIS", 8, 8),
    Release("redis", (5, 0), "REDIS", 9, 9),
    Release("redis", (7, 0), "REDIS", 10, 10),  # seen: 7.0.15 writes REDIS0010
    Release("redis", (7, 2), "REDIS", 11, 11),
    Release("redis", (7, 4), "REDIS", 12, 12),  # field-TTL hash types 22-25
    Release("redis", (8, 0), "REDIS", 12, 12),  # seen: 8.0.2 writes REDIS0012, loads 10-12
    # valkey-io/valkey src/rdb.h: RDB 11 is the last open-source Redis format.
    Release("valkey", (7, 2), "REDIS", 11, 11),
    Release("valkey", (8, 0), "REDIS", 11, 11),  # seen: 8.1.1 writes REDIS0011, refuses 12
    # 9.0: VALKEY magic, RDB 80; REDIS 12-79 "foreign", loaded only when relaxed.
    Release("valkey", (9, 0), "VALKEY", 80, 11, 80, 79),  # seen: 9.1.2 writes VALKEY080
    Release("valkey", (9, 2), "VALKEY", 81, 11, 81, 79),  # RDB_VERSION_MAP {81, 9.2}
)

#: The versions the project runs in its suite and supports: (flavour, first, last) major.minor.
SUPPORTED: tuple[tuple[str, tuple[int, int], tuple[int, int]], ...] = (
    ("redis", (7, 0), (8, 99)),
    ("valkey", (8, 0), (9, 99)),
)

_NAMES = {"redis": "Redis", "valkey": "Valkey"}


def parse_version(version: str) -> tuple[int, int] | None:
    """``"8.0.2"`` -> (8, 0); ``"v7.4"`` -> (7, 4); None when it is no version."""
    m = re.match(r"^v?(\d+)\.(\d+)", (version or "").strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


def display(flavour: str, version: str) -> str:
    """``("valkey", "9.1.2")`` -> ``"Valkey 9.1.2"``."""
    return f"{_NAMES.get(flavour, flavour or 'Redis')} {version or '(version unknown)'}"


def release(flavour: str, version: str) -> Release | None:
    """The row describing ``flavour`` ``version`` (a newer version than the
    table knows gets the newest row); None when unknown or older than the table."""
    mm = parse_version(version)
    if mm is None:
        return None
    rows = [r for r in RELEASES if r.flavour == flavour and r.since <= mm]
    return max(rows, key=lambda r: r.since) if rows else None


def writes(flavour: str, version: str) -> tuple[str, int] | None:
    """(magic, RDB version) that ``flavour`` ``version`` writes, or None when unknown."""
    r = release(flavour, version)
    return (r.magic, r.rdb) if r is not None else None


def reads(flavour: str, version: str, magic: str, rdb_version: int) -> bool | None:
    """Whether ``flavour`` ``version`` loads that RDB (strict settings); None when unknown."""
    r = release(flavour, version)
    if r is None:
        return None
    return _loads(r, magic, rdb_version)


def supported(flavour: str, version: str) -> bool:
    """Whether the project supports (and tests) this server version."""
    mm = parse_version(version)
    return mm is not None and any(f == flavour and lo <= mm <= hi for f, lo, hi in SUPPORTED)


def _loads(r: Release, magic: str, rdb_version: int) -> bool:
    if magic == REDIS_MAGIC:
        return rdb_version <= r.reads_redis
    if magic == VALKEY_MAGIC:
        return rdb_version <= r.reads_valkey
    return False


def _readable(r: Release) -> str:
    parts = [f"REDIS RDB up to {r.reads_redis}"]
    if r.reads_valkey:
        parts.append(f"VALKEY RDB up to {r.reads_valkey}")
    else:
        parts.append("no VALKEY RDB")
    return " and ".join(parts)


def load_problem(
    backup_flavour: str,
    backup_version: str,
    magic: str | None,
    rdb_version: int | None,
    target_flavour: str,
    target_version: str,
) -> str | None:
    """Why ``target_flavour`` ``target_version`` cannot load the RDB (``magic``
    ``rdb_version``) that ``backup_flavour`` ``backup_version`` wrote, naming
    both sides; None when it can, or when the table cannot tell (an unknown
    target version). A missing magic or RDB version (a manifest written before
    they were recorded) is taken from what the backup's server writes."""
    backup_flavour = backup_flavour or "redis"
    target_flavour = target_flavour or "redis"
    source = display(backup_flavour, backup_version)
    target = display(target_flavour, target_version)
    t = release(target_flavour, target_version)
    if t is None:
        return None
    if magic is None or rdb_version is None:
        known = writes(backup_flavour, backup_version)
        if known is None:
            return None
        magic = magic or known[0]
        rdb_version = rdb_version if rdb_version is not None else known[1]
    if _loads(t, magic, rdb_version):
        b_mm, t_mm = parse_version(backup_version), parse_version(target_version)
        same = backup_flavour == target_flavour and b_mm is not None and t_mm is not None
        if same and b_mm is not None and t_mm is not None and b_mm[0] > t_mm[0]:
            return (
                f"the backup was taken by {source}, the target runs {target}: a newer "
                "major version's RDB does not load in an older one"
            )
        return None
    what = f"{magic}{rdb_version:04d}" if magic == REDIS_MAGIC else f"{magic}{rdb_version:03d}"
    newest = {REDIS_MAGIC: t.reads_redis, VALKEY_MAGIC: t.reads_valkey}.get(magic, 0)
    how = f"is newer than {target} reads" if newest else f"is a format {target} does not read"
    problem = f"the backup's RDB ({what}, written by {source}) {how} ({_readable(t)})"
    if magic == REDIS_MAGIC and rdb_version <= t.relaxed_redis:
        problem += (
            f"; {target} loads it only with `rdb-version-check relaxed`, and only when the "
            "data holds no hash field TTLs"
        )
    return problem


# --- DUMP payloads (restore --to-redis) ---------------------------------------------
#
# ``verifyDumpPayload`` (redis and valkey ``cluster.c``) checks the payload's
# 2-byte RDB version: Redis accepts any up to its own RDB version; Valkey 8
# up to 11; Valkey 9 up to 11 and its own VALKEY versions (80 ...), never the
# "foreign" 12-79. Seen on this machine (2026-12, a string's payload relabelled
# 9-13, 79-81): Redis 7.0.15 takes 9-10, Redis 8.0.2 9-12, Valkey 8.1.1 9-11,
# Valkey 9.1.2 9-11 and 80.

#: Types that need the hash field TTL commands (HPEXPIREAT) when rebuilt.
FIELD_TTL_SINCE = {"redis": (7, 4), "valkey": (9, 0)}
#: Kinds ``rdb_commands`` can rebuild with ordinary commands.
REBUILDABLE = ("string", "list", "set", "zset", "hash", "stream")


def payload_accepted(flavour: str, version: str, magic: str, rdb_version: int) -> bool | None:
    """Whether ``flavour`` ``version`` RESTOREs a DUMP payload of ``rdb_version``
    holding a value of an RDB with ``magic``; None when the server is unknown."""
    r = release(flavour, version)
    if r is None:
        return None
    if magic == VALKEY_MAGIC and rdb_version >= 80:
        return rdb_version <= r.reads_valkey
    return rdb_version <= r.reads_redis


@dataclass(frozen=True)
class ValueRoute:
    """How one value type of a backup reaches a target: ``payload`` (RESTORE
    with a payload of ``version``), ``rebuild`` (ordinary commands), or
    ``refuse`` (``reason`` says why)."""

    how: str
    version: int = 0
    reason: str = ""


def value_route(
    magic: str,
    rdb_version: int,
    type_id: int,
    since: int,
    kind: str,
    field_ttls: bool,
    target_flavour: str,
    target_version: str,
) -> ValueRoute:
    """How a value of type ``type_id`` (a ``kind`` first written by RDB
    ``since``; ``field_ttls`` when it holds hash field TTLs) of a ``magic``
    ``rdb_version`` RDB is written to ``target_flavour`` ``target_version``:
    its own payload version when the target accepts it; else relabelled with
    the newest version the target accepts that has the type (types 0-21 mean
    the same in every Redis and Valkey RDB); else rebuilt with commands when
    the target has every command the value needs; else refused."""
    accepted = payload_accepted(target_flavour, target_version, magic, rdb_version)
    if accepted is None or accepted:
        return ValueRoute("payload", rdb_version)
    t = release(target_flavour, target_version)
    assert t is not None  # accepted is not None
    target = display(target_flavour, target_version)
    if type_id < 22 and since <= t.reads_redis:
        return ValueRoute("payload", min(t.reads_redis, rdb_version))
    if kind not in REBUILDABLE:
        return ValueRoute("refuse", reason=f"{kind} values cannot be rebuilt on {target}")
    mm = parse_version(target_version)
    need = FIELD_TTL_SINCE.get(target_flavour)
    if field_ttls and (mm is None or need is None or mm < need):
        return ValueRoute(
            "refuse",
            reason=f"hashes with field TTLs need {target_flavour.capitalize()} "
            f"{need[0] if need else '?'}.{need[1] if need else '?'} or newer; {target} has no "
            "field TTLs",
        )
    return ValueRoute("rebuild")


_SERVER_VERSION = re.compile(r"\b(Redis|Valkey|KeyDB) server v=(\d+\.\d+(?:\.\d+)?)", re.I)


def parse_server_version(version_output: str) -> tuple[str, str] | None:
    """``redis-server --version`` ("Redis server v=7.0.15 sha=...", "Valkey
    server v=9.1.2 ...") -> ("redis", "7.0.15"); None when it is neither."""
    m = _SERVER_VERSION.search(version_output or "")
    if m is None or m.group(1).lower() not in FLAVOURS:
        return None
    return m.group(1).lower(), m.group(2)


_TOOL_VERSION = re.compile(r"(redis|valkey)-check-rdb\s+(?:v=)?(\d+\.\d+(?:\.\d+)?)")


def tool_reads(version_output: str, magic: str, rdb_version: int) -> tuple[str, bool | None]:
    """From ``redis-check-rdb --version``'s output: (the tool as "redis-check-rdb
    7.0.15", whether it reads that RDB; None when its version is not known)."""
    m = _TOOL_VERSION.search(version_output or "")
    if m is None:
        return "redis-check-rdb (version unknown)", None
    flavour, version = m.group(1), m.group(2)
    name = f"{flavour}-check-rdb {version}"
    return name, reads(flavour, version, magic, rdb_version)
