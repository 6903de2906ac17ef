"""How each RDB value type is laid out, read from an :class:`RdbSource`.

Why a module of its own: one table maps every type id Redis (RDB 1-12) and
Valkey (RDB 80) write to its user-visible type, the RDB version that
introduced it and the function that walks it; the opcode loop in
``rdb_reader`` only dispatches. With ``deep`` the encoded blobs (listpacks,
ziplists, intsets, zipmaps, quicklist nodes, stream nodes) are decompressed
and checked entry by entry; without it they are skipped at buffer speed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from backupctl.redis.rdb_blobs import (
    BlobError,
    intset_walk,
    listpack_walk,
    stream_listpack_walk,
    ziplist_walk,
    zipmap_walk,
)
from backupctl.redis.rdb_source import RdbFormatError, RdbSource

__all__ = ["ValueType", "module_opcodes", "value_type"]

_QUICKLIST_PLAIN, _QUICKLIST_PACKED = 1, 2


def _elements(src: RdbSource, what: str, per: int = 1) -> int:
    """A count of elements, each at least ``per`` bytes: refused if it cannot fit."""
    n = src.length(f"the {what} count")
    src.check_fits(n * per, f"a {what} of {n} elements")
    return n


def _blob(src: RdbSource, what: str, walk: Callable[[bytes], int]) -> int:
    data, at, compressed = src.blob(what)
    try:
        return walk(data)
    except BlobError as exc:
        where = f" (byte {exc.pos} of the decompressed {what})" if compressed else ""
        raise RdbFormatError(f"{exc}{where}", at if compressed else at + exc.pos) from None


def _encoded(src: RdbSource, deep: bool, what: str, walk: Callable[[bytes], int], per: int) -> None:
    """One blob: walked when deep (its entry count a multiple of ``per``), else skipped."""
    if not deep:
        src.skip_string(what)
        return
    at = src.offset
    count = _blob(src, what, walk)
    if count % per:
        raise RdbFormatError(f"{what} holds {count} entries, not a multiple of {per}", at)


def _string(src: RdbSource, deep: bool) -> None:
    src.skip_string("the string value")


def _list_or_set(src: RdbSource, deep: bool) -> None:
    for _ in range(_elements(src, "list or set")):
        src.skip_string("an element")


def _zset_v1(src: RdbSource, deep: bool) -> None:
    for _ in range(_elements(src, "sorted set", 2)):
        src.skip_string("a member")
        n = src.u8("a score")
        if n < 253:
            src.skip(n, "a score")


def _zset_v2(src: RdbSource, deep: bool) -> None:
    for _ in range(_elements(src, "sorted set", 9)):
        src.skip_string("a member")
        src.skip(8, "a score")


def _hash(src: RdbSource, deep: bool) -> None:
    for _ in range(_elements(src, "hash", 2)):
        src.skip_string("a field")
        src.skip_string("a value")


def module_opcodes(src: RdbSource, what: str) -> None:
    """A module value saved self-describing: typed opcodes up to the EOF opcode."""
    for _ in range(1 << 62):  # each opcode consumes input: bounded by the file
        at = src.offset
        op = src.length(f"a {what} opcode")
        if op == 0:
            return
        if op in (1, 2):
            src.length(f"a {what} integer")
        elif op == 3:
            src.skip(4, f"a {what} float")
        elif op == 4:
            src.skip(8, f"a {what} double")
        elif op == 5:
            src.skip_string(f"a {what} string")
        else:
            raise RdbFormatError(f"unknown {what} opcode {op}", at)


def _module_v1(src: RdbSource, deep: bool) -> None:
    raise RdbFormatError(
        "module value of the pre-release type 6 cannot be walked without its module",
        src.offset,
    )


def _module_v2(src: RdbSource, deep: bool) -> None:
    src.length("a module id")
    module_opcodes(src, "module value")


def _ziplist(src: RdbSource, deep: bool) -> None:
    _encoded(src, deep, "list ziplist", ziplist_walk, 1)


def _intset(src: RdbSource, deep: bool) -> None:
    _encoded(src, deep, "intset", intset_walk, 1)


def _zipmap(src: RdbSource, deep: bool) -> None:
    _encoded(src, deep, "zipmap", zipmap_walk, 1)


def _pairs_ziplist(src: RdbSource, deep: bool) -> None:
    _encoded(src, deep, "ziplist of pairs", ziplist_walk, 2)


def _pairs_listpack(src: RdbSource, deep: bool) -> None:
    _encoded(src, deep, "listpack of pairs", listpack_walk, 2)


def _set_listpack(src: RdbSource, deep: bool) -> None:
    _encoded(src, deep, "set listpack", listpack_walk, 1)


def _quicklist(src: RdbSource, deep: bool) -> None:
    for _ in range(_elements(src, "quicklist node")):
        if deep:
            _blob(src, "quicklist ziplist node", ziplist_walk)
        else:
            src.skip_string("a quicklist node")


def _quicklist2(src: RdbSource, deep: bool) -> None:
    for _ in range(_elements(src, "quicklist node", 2)):
        at = src.offset
        container = src.length("a quicklist container")
        if container == _QUICKLIST_PLAIN or not deep:
            if container not in (_QUICKLIST_PLAIN, _QUICKLIST_PACKED):
                raise RdbFormatError(f"bad quicklist container {container}", at)
            src.skip_string("a quicklist node")
        elif container == _QUICKLIST_PACKED:
            _blob(src, "quicklist listpack node", listpack_walk)
        else:
            raise RdbFormatError(f"bad quicklist container {container}", at)


def _hash_ttl_redis(src: RdbSource, deep: bool, with_min: bool) -> None:
    if with_min:
        src.skip(8, "the hash's minimum field expiry")
    for _ in range(_elements(src, "hash", 3)):
        src.length("a field TTL")
        src.skip_string("a field")
        src.skip_string("a value")


def _hash_metadata_pre_ga(src: RdbSource, deep: bool) -> None:
    _hash_ttl_redis(src, deep, False)


def _hash_metadata(src: RdbSource, deep: bool) -> None:
    _hash_ttl_redis(src, deep, True)


def _hash_listpack_ex_pre_ga(src: RdbSource, deep: bool) -> None:
    _encoded(src, deep, "listpack of field-value-TTL triples", listpack_walk, 3)


def _hash_listpack_ex(src: RdbSource, deep: bool) -> None:
    src.skip(8, "the hash's minimum field expiry")
    _encoded(src, deep, "listpack of field-value-TTL triples", listpack_walk, 3)


def _hash_valkey(src: RdbSource, deep: bool) -> None:
    for _ in range(_elements(src, "hash", 10)):
        src.skip_string("a field")
        src.skip_string("a value")
        src.skip(8, "a field expiry")


def _stream(src: RdbSource, deep: bool, layout: int) -> None:
    nodes = src.length("the stream node count")
    src.check_fits(nodes * 2, f"a stream of {nodes} nodes")
    for _ in range(nodes):
        at = src.offset
        if len(src.string("a stream node key")) != 16:
            raise RdbFormatError("stream node key is not a 128-bit ID", at)
        if deep:
            at = src.offset
            if _blob(src, "stream listpack node", stream_listpack_walk) == 0:
                raise RdbFormatError("empty stream listpack node", at)
        else:
            src.skip_string("a stream listpack node")
    src.length("the stream length")
    src.length("the stream's last ID")
    src.length("the stream's last ID")
    if layout >= 2:
        for _ in range(5):  # first ID, max deleted ID, entries added
            src.length("a stream ID or counter")
    groups = src.length("the consumer group count")
    src.check_fits(groups * 3, f"{groups} consumer groups")
    for _ in range(groups):
        _consumer_group(src, layout)


def _consumer_group(src: RdbSource, layout: int) -> None:
    src.skip_string("a consumer group name")
    src.length("a group's last ID")
    src.length("a group's last ID")
    if layout >= 2:
        src.length("a group's entries read")
    pending = src.length("the group's pending count")
    src.check_fits(pending * 25, f"a pending list of {pending}")
    for _ in range(pending):
        src.skip(16 + 8, "a pending entry")
        src.length("a delivery count")
    consumers = src.length("the consumer count")
    src.check_fits(consumers * 10, f"{consumers} consumers")
    for _ in range(consumers):
        src.skip_string("a consumer name")
        src.skip(16 if layout >= 3 else 8, "a consumer's seen/active time")
        owned = src.length("a consumer's pending count")
        src.check_fits(owned * 16, f"a consumer pending list of {owned}")
        src.skip(owned * 16, "a consumer's pending IDs")


def _stream1(src: RdbSource, deep: bool) -> None:
    _stream(src, deep, 1)


def _stream2(src: RdbSource, deep: bool) -> None:
    _stream(src, deep, 2)


def _stream3(src: RdbSource, deep: bool) -> None:
    _stream(src, deep, 3)


@dataclass(frozen=True)
class ValueType:
    """One RDB type id: what users call it, its encoding, the RDB that introduced it."""

    kind: str  # "string" "list" "set" "zset" "hash" "stream" "module"
    encoding: str
    since: int
    read: Callable[[RdbSource, bool], None]


def _t(kind: str, encoding: str, since: int, read: Callable[[RdbSource, bool], None]) -> ValueType:
    return ValueType(kind, encoding, since, read)


# Type ids from redis/redis src/rdb.h (7.0, 7.2, 7.4, 8.0) and valkey-io/valkey
# src/rdb.h (8.1, 9.x). "since" is the first RDB version whose writers use the id.
_COMMON: dict[int, ValueType] = {
    0: _t("string", "string", 1, _string),
    1: _t("list", "linked list", 1, _list_or_set),
    2: _t("set", "hashtable", 1, _list_or_set),
    3: _t("zset", "skiplist (text scores)", 1, _zset_v1),
    4: _t("hash", "hashtable", 1, _hash),
    5: _t("zset", "skiplist", 8, _zset_v2),
    6: _t("module", "module (pre-release)", 8, _module_v1),
    7: _t("module", "module", 8, _module_v2),
    9: _t("hash", "zipmap", 1, _zipmap),
    10: _t("list", "ziplist", 1, _ziplist),
    11: _t("set", "intset", 1, _intset),
    12: _t("zset", "ziplist", 1, _pairs_ziplist),
    13: _t("hash", "ziplist", 1, _pairs_ziplist),
    14: _t("list", "quicklist", 7, _quicklist),
    15: _t("stream", "listpacks", 9, _stream1),
    16: _t("hash", "listpack", 10, _pairs_listpack),
    17: _t("zset", "listpack", 10, _pairs_listpack),
    18: _t("list", "quicklist 2", 10, _quicklist2),
    19: _t("stream", "listpacks 2", 10, _stream2),
    20: _t("set", "listpack", 11, _set_listpack),
    21: _t("stream", "listpacks 3", 11, _stream3),
}
_REDIS_ONLY: dict[int, ValueType] = {
    22: _t("hash", "hashtable with field TTLs (7.4 RC)", 12, _hash_metadata_pre_ga),
    23: _t("hash", "listpack with field TTLs (7.4 RC)", 12, _hash_listpack_ex_pre_ga),
    24: _t("hash", "hashtable with field TTLs", 12, _hash_metadata),
    25: _t("hash", "listpack with field TTLs", 12, _hash_listpack_ex),
}
_VALKEY_ONLY: dict[int, ValueType] = {
    22: _t("hash", "hashtable with field TTLs (Valkey)", 80, _hash_valkey),
}


def value_type(type_id: int, valkey: bool) -> ValueType | None:
    """The value type ``type_id`` means in a Redis (``valkey`` False) or Valkey RDB."""
    found = _COMMON.get(type_id)
    if found is not None:
        return found
    return (_VALKEY_ONLY if valkey else _REDIS_ONLY).get(type_id)
