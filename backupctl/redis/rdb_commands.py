"""A value rebuilt as bounded chunks of ordinary commands, read from the RDB.

Why it exists: a DUMP payload holds a whole value, so a value larger than
``restore --to-redis``'s threshold, or one whose RDB type the target's
version does not know (a set listpack, type 20, for Redis 7.0), is written
with commands instead: string -> SET + APPEND, list -> RPUSH, set -> SADD,
zset -> ZADD (scores exact: binary doubles printed with ``repr``, which
round-trips; text scores passed as written), hash -> HSET + HPEXPIREAT for
field TTLs. Each command holds at most ``chunk`` bytes of data (or 1024
elements), so memory stays bounded whatever the value's size. The commands
build a temporary name (:func:`temp_name`, in the key's cluster slot), set
the expiry, then RENAME it over the key: a half-built key is never visible.
stream -> XADD per entry + XSETID + XGROUP + XCLAIM
(:mod:`backupctl.redis.stream_commands`). Module values are refused with the
key and the reason.

Pure: functions of an :class:`RdbSource` positioned at the value's first byte
(no I/O beyond reading it); the caller sends the commands.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

from backupctl.redis.rdb_blobs import (
    BlobError,
    intset_values,
    listpack_walk,
    ziplist_walk,
    zipmap_pairs,
)
from backupctl.redis.rdb_source import RdbFormatError, RdbSource
from backupctl.redis.stream_commands import stream_commands

__all__ = ["CHUNK", "Command", "RebuildRefused", "rebuild", "temp_name"]

#: Data bytes one command carries at most (and elements per command).
CHUNK = 1 << 20
_ELEMENTS = 1024

Command = tuple[bytes, ...]
Element = bytes | int


class RebuildRefused(Exception):
    """The value cannot be rebuilt with commands; ``str()`` says why."""


def temp_name(key: bytes, nonce: bytes) -> bytes:
    """A temporary name in ``key``'s cluster slot: the key's own ``{hashtag}``
    kept, or the whole key made the hashtag. A key with a ``}`` and no
    hashtag cannot be wrapped: then the key itself (built in place)."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key + b":backupctl-tmp-" + nonce
    if b"}" in key:
        return key
    return b"{" + key + b"}:backupctl-tmp-" + nonce


def _b(value: Element) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _batches(verb: bytes, key: bytes, items: Iterator[Element], per: int) -> Iterator[Command]:
    """``verb key item...`` commands of at most CHUNK bytes / _ELEMENTS*per items."""
    args: list[bytes] = []
    size = 0
    for item in items:
        data = _b(item)
        args.append(data)
        size += len(data)
        if (size >= CHUNK or len(args) >= _ELEMENTS * per) and len(args) % per == 0:
            yield (verb, key, *args)
            args, size = [], 0
    if args:
        if len(args) % per:
            raise RdbFormatError(f"{verb.decode()} items are not a multiple of {per}", 0)
        yield (verb, key, *args)


def _blob(src: RdbSource, what: str, walk: Callable[[bytes], list[Element]]) -> list[Element]:
    data, at, _ = src.blob(what)
    try:
        return walk(data)
    except BlobError as exc:
        raise RdbFormatError(str(exc), at) from None


def _lp(data: bytes) -> list[Element]:
    out: list[int | bytes] = []
    listpack_walk(data, out)
    return out


def _zl(data: bytes) -> list[Element]:
    out: list[int | bytes] = []
    ziplist_walk(data, out)
    return out


def _intset(data: bytes) -> list[Element]:
    return list(intset_values(data))


def _zipmap(data: bytes) -> list[Element]:
    return list(zipmap_pairs(data))


# --- elements of each type, in RDB order ------------------------------------------


def _strings(src: RdbSource, what: str) -> Iterator[Element]:
    for _ in range(src.length(f"the {what} count")):
        yield src.string(f"a {what} element")


def _list(src: RdbSource, type_id: int) -> Iterator[Element]:
    if type_id in (1, 2):
        yield from _strings(src, "list or set")
    elif type_id == 10:
        yield from _blob(src, "list ziplist", _zl)
    elif type_id == 11:
        yield from _blob(src, "intset", _intset)
    elif type_id == 20:
        yield from _blob(src, "set listpack", _lp)
    elif type_id == 14:
        for _ in range(src.length("the quicklist node count")):
            yield from _blob(src, "quicklist ziplist node", _zl)
    elif type_id == 18:
        for _ in range(src.length("the quicklist node count")):
            container = src.length("a quicklist container")
            if container == 1:
                yield src.string("a quicklist node")
            elif container == 2:
                yield from _blob(src, "quicklist listpack node", _lp)
            else:
                raise RdbFormatError(f"bad quicklist container {container}", src.offset)


def _score(value: Element) -> bytes:
    return _b(value)


def _zset(src: RdbSource, type_id: int) -> Iterator[Element]:
    """score, member, score, member ... (ZADD's order)."""
    if type_id in (3, 5):
        for _ in range(src.length("the sorted set count")):
            member = src.string("a member")
            if type_id == 5:
                (score,) = struct.unpack("<d", src.take(8, "a score"))
                yield repr(score).encode()
            else:
                n = src.u8("a score")
                special = {253: b"nan", 254: b"inf", 255: b"-inf"}
                yield special[n] if n in special else src.take(n, "a score")
            yield member
    else:
        pairs = _blob(src, "sorted set pairs", _zl if type_id == 12 else _lp)
        for i in range(0, len(pairs) - 1, 2):
            yield _score(pairs[i + 1])
            yield pairs[i]


def _hash(
    src: RdbSource, type_id: int, valkey: bool, ttls: dict[int, list[bytes]]
) -> Iterator[Element]:
    """field, value, ... ; field TTLs (absolute ms) collected into ``ttls``."""
    if type_id == 4:
        for _ in range(src.length("the hash count")):
            yield src.string("a field")
            yield src.string("a value")
    elif type_id in (9, 13, 16):
        walk = {9: _zipmap, 13: _zl, 16: _lp}[type_id]
        yield from _blob(src, "hash pairs", walk)
    elif valkey and type_id == 22:
        for _ in range(src.length("the hash count")):
            field = src.string("a field")
            value = src.string("a value")
            expire = src.ms_time("a field expiry")
            if expire > 0:
                ttls.setdefault(expire, []).append(field)
            yield field
            yield value
    elif type_id in (22, 24):
        base = src.ms_time("the hash's minimum field expiry") - 1 if type_id == 24 else 0
        for _ in range(src.length("the hash count")):
            ttl = src.length("a field TTL")
            field = src.string("a field")
            yield field
            yield src.string("a value")
            if ttl:
                ttls.setdefault(base + ttl, []).append(field)
    elif type_id in (23, 25):
        if type_id == 25:
            src.ms_time("the hash's minimum field expiry")
        items = _blob(src, "listpack of field-value-TTL triples", _lp)
        for i in range(0, len(items) - 2, 3):
            name, ttl_ms = _b(items[i]), items[i + 2]
            at_ms = ttl_ms if isinstance(ttl_ms, int) else int(ttl_ms or b"0")
            if at_ms > 0:
                ttls.setdefault(at_ms, []).append(name)
            yield name
            yield items[i + 1]


_KINDS = {"string", "list", "set", "zset", "hash", "stream"}


def rebuild(
    src: RdbSource,
    type_id: int,
    kind: str,
    key: bytes,
    tmp: bytes,
    *,
    valkey: bool = False,
    expire_ms: int | None = None,
    now_ms: int = 0,
    replace: bool = True,
) -> Iterator[Command]:
    """The commands that write the value at ``src`` (type ``type_id``) as
    ``key``, built under ``tmp`` (the key itself when equal) and renamed
    over it at the end; fields whose TTL is before ``now_ms`` are left out.
    :class:`RebuildRefused` for module values, before any command."""
    if kind not in _KINDS:
        shown = key[:80].decode("utf-8", "replace")
        if kind == "module":
            raise RebuildRefused(
                f"key {shown!r} holds a module value (type {type_id}): it is restored only as a "
                "payload, by a server with that module loaded"
            )
        raise RebuildRefused(
            f"key {shown!r} is a {kind}: a {kind} larger than --large-value-threshold, or one "
            "the target's version cannot take as a payload, is not rebuilt with commands yet"
        )
    yield (b"DEL", tmp)
    ttls: dict[int, list[bytes]] = {}
    if kind == "string":
        yield from _string(src, tmp)
    elif kind == "stream":
        yield from stream_commands(src, type_id, tmp)
    elif kind in ("list", "set"):
        verb = b"RPUSH" if kind == "list" else b"SADD"
        yield from _batches(verb, tmp, _list(src, type_id), 1)
    elif kind == "zset":
        yield from _batches(b"ZADD", tmp, _zset(src, type_id), 2)
    else:
        yield from _batches(b"HSET", tmp, _hash(src, type_id, valkey, ttls), 2)
        for expire in sorted(ttls):
            if expire < now_ms:
                yield (b"HDEL", tmp, *ttls[expire])
                continue
            fields = ttls[expire]
            for i in range(0, len(fields), _ELEMENTS):
                part = fields[i : i + _ELEMENTS]
                yield (b"HPEXPIREAT", tmp, str(expire).encode(), b"FIELDS",
                       str(len(part)).encode(), *part)  # fmt: skip
    if expire_ms is not None:
        yield (b"PEXPIREAT", tmp, str(expire_ms).encode())
    if tmp != key:
        yield (b"RENAME" if replace else b"RENAMENX", tmp, key)


def _string(src: RdbSource, tmp: bytes) -> Iterator[Command]:
    """SET the first chunk, APPEND the others."""
    first = True
    for piece in src.string_pieces("the string value", CHUNK):
        yield (b"SET" if first else b"APPEND", tmp, piece)
        first = False
    if first:
        yield (b"SET", tmp, b"")
