"""A stream rebuilt with ordinary commands, read from its RDB bytes.

Why it exists: a stream larger than ``restore --to-redis``'s threshold, or
one whose payload the target's version does not take, cannot be sent as one
``RESTORE``. This module reads the stream's RDB encoding (listpack nodes,
then length / last ID / first ID / max deleted ID / entries added, then the
consumer groups with their pending entries and consumers; ``rdbLoadObject``
in redis and valkey ``rdb.c``) and yields the commands that rebuild it, the
way replication tools do (redis-shake, RIOT):

- ``XADD key <id> field value ...`` per live entry, with its explicit ID, in
  file order (deleted entries are skipped: they are tombstones in the node);
- ``XSETID key <last id> ENTRIESADDED n MAXDELETEDID <id>`` so the next
  auto-generated ID, ``XINFO STREAM``'s counters and lag stay as they were
  (only the last ID for an RDB 9 stream, which has no counters);
- ``XGROUP CREATE key group <last delivered id> ENTRIESREAD n`` per group;
- ``XGROUP CREATECONSUMER`` per consumer, then its pending entries with
  ``XCLAIM key group consumer 0 <ids> TIME <delivery ms> RETRYCOUNT <n>
  FORCE JUSTID`` (one per distinct delivery time and count).

An empty stream (every entry deleted, or a stream made by ``XGROUP CREATE
... MKSTREAM``) is created with ``XGROUP CREATE ... MKSTREAM`` (a group
dropped again at once). What the commands
cannot restore: a consumer's seen/active time (set to the restore's time),
and pending entries whose message was deleted (``XCLAIM`` drops them).
Memory: one listpack node (``stream-node-max-bytes``, 4 KiB by default) and
one group's pending list at a time.

Pure: a generator over an :class:`RdbSource` positioned at the value's first
byte; the caller sends the commands.
"""

from __future__ import annotations

from collections.abc import Iterator

from backupctl.redis.rdb_blobs import BlobError, listpack_walk
from backupctl.redis.rdb_source import RdbFormatError, RdbSource

__all__ = ["stream_commands"]

Command = tuple[bytes, ...]

#: Stream type ids -> layout (1: RDB 9, 2: RDB 10 counters, 3: RDB 11 active time).
STREAM_LAYOUTS = {15: 1, 19: 2, 21: 3}
_DELETED, _SAMEFIELDS = 1, 2
_INVALID = 1 << 63  # entries_read saved as -1 (unknown): a length that large
_PER_CLAIM = 1024
_EMPTY = b"backupctl-empty-stream"


def _id(ms: int, seq: int) -> bytes:
    return f"{ms}-{seq}".encode()


def _b(value: int | bytes) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _int(items: list[int | bytes], i: int) -> int:
    if i >= len(items):
        raise RdbFormatError("stream listpack node is cut short", 0)
    v = items[i]
    return v if isinstance(v, int) else int(v)


def node_entries(master: bytes, blob: bytes) -> Iterator[tuple[bytes, list[bytes]]]:
    """(ID, [field, value, ...]) of every live entry of one listpack node
    whose 16-byte master ID is ``master``."""
    items: list[int | bytes] = []
    try:
        listpack_walk(blob, items)
    except BlobError as exc:
        raise RdbFormatError(f"stream listpack node: {exc}", 0) from None
    base_ms, base_seq = int.from_bytes(master[:8], "big"), int.from_bytes(master[8:], "big")
    nfields = _int(items, 2)
    fields = [_b(f) for f in items[3 : 3 + nfields]]
    i = 4 + nfields  # past the master entry's terminating 0
    while i < len(items):
        flags = _int(items, i)
        ms, seq = base_ms + _int(items, i + 1), base_seq + _int(items, i + 2)
        if flags & _SAMEFIELDS:
            values = [_b(v) for v in items[i + 3 : i + 3 + nfields]]
            pairs = [x for pair in zip(fields, values, strict=True) for x in pair]
            i += 3 + nfields + 1
        else:
            n = _int(items, i + 3)
            pairs = [_b(v) for v in items[i + 4 : i + 4 + 2 * n]]
            i += 4 + 2 * n + 1
        if not flags & _DELETED:
            yield _id(ms, seq), pairs


def stream_commands(src: RdbSource, type_id: int, key: bytes) -> Iterator[Command]:
    """The commands that rebuild the stream at ``src`` (type ``type_id``) as ``key``."""
    layout = STREAM_LAYOUTS[type_id]
    created = False
    for _ in range(src.length("the stream node count")):
        master = src.string("a stream node key")
        if len(master) != 16:
            raise RdbFormatError("stream node key is not a 128-bit ID", src.offset)
        blob, _, _ = src.blob("a stream listpack node")
        for entry_id, pairs in node_entries(master, blob):
            created = True
            yield (b"XADD", key, entry_id, *pairs)
    src.length("the stream length")
    last = _id(src.length("the stream's last ID"), src.length("the stream's last ID"))
    if not created:  # an empty stream: made by a group created and dropped again
        yield (b"XGROUP", b"CREATE", key, _EMPTY, b"$", b"MKSTREAM")
        yield (b"XGROUP", b"DESTROY", key, _EMPTY)
    if layout >= 2:
        src.length("the stream's first ID")
        src.length("the stream's first ID")
        max_deleted = _id(src.length("a max deleted ID"), src.length("a max deleted ID"))
        added = src.length("the entries added")
        yield (b"XSETID", key, last, b"ENTRIESADDED", str(added).encode(),
               b"MAXDELETEDID", max_deleted)  # fmt: skip
    else:
        yield (b"XSETID", key, last)
    for _ in range(src.length("the consumer group count")):
        yield from _group(src, key, layout)


def _group(src: RdbSource, key: bytes, layout: int) -> Iterator[Command]:
    name = src.string("a consumer group name")
    last = _id(src.length("a group's last ID"), src.length("a group's last ID"))
    create: Command = (b"XGROUP", b"CREATE", key, name, last)
    if layout >= 2:
        read = src.length("a group's entries read")
        if read < _INVALID:
            create += (b"ENTRIESREAD", str(read).encode())
    yield create
    pending: dict[bytes, tuple[int, int]] = {}  # raw ID -> (delivery ms, delivery count)
    for _ in range(src.length("the group's pending count")):
        raw = src.take(16, "a pending entry ID")
        when = int.from_bytes(src.take(8, "a delivery time"), "little", signed=True)
        pending[raw] = (when, src.length("a delivery count"))
    for _ in range(src.length("the consumer count")):
        consumer = src.string("a consumer name")
        src.skip(16 if layout >= 3 else 8, "a consumer's seen/active time")
        yield (b"XGROUP", b"CREATECONSUMER", key, name, consumer)
        owned: dict[tuple[int, int], list[bytes]] = {}
        for _ in range(src.length("a consumer's pending count")):
            raw = src.take(16, "a consumer's pending ID")
            when, count = pending.get(raw, (0, 0))
            ids = owned.setdefault((when, count), [])
            ids.append(_id(int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:], "big")))
        for (when, count), ids in owned.items():
            for i in range(0, len(ids), _PER_CLAIM):
                yield (b"XCLAIM", key, name, consumer, b"0", *ids[i : i + _PER_CLAIM],
                       b"TIME", str(when).encode(), b"RETRYCOUNT", str(count).encode(),
                       b"FORCE", b"JUSTID")  # fmt: skip
