"""Hand-built RDB byte strings for the reader's tests: lengths, strings and the
compact encodings (listpack, ziplist, intset, zipmap, stream nodes) written
from the format as redis/redis and valkey-io/valkey document it in rdb.h,
listpack.c, ziplist.c, intset.c, zipmap.c and t_stream.c -- independently of
backupctl's reader, so a test compares two readings of the format."""

from __future__ import annotations

import struct

from backupctl.redis.rdb import crc64_redis


def ln(n: int) -> bytes:
    """An RDB length."""
    if n < 64:
        return bytes([n])
    if n < 16384:
        return bytes([0x40 | n >> 8, n & 0xFF])
    if n < 1 << 32:
        return b"\x80" + n.to_bytes(4, "big")
    return b"\x81" + n.to_bytes(8, "big")


def st(value: bytes | str) -> bytes:
    """A raw RDB string."""
    data = value.encode() if isinstance(value, str) else value
    return ln(len(data)) + data


def rdb(body: bytes, version: int = 12, magic: str = "REDIS", checksum: bool = True) -> bytes:
    """A whole RDB: header, ``body``, EOF and (RDB 5+) the CRC-64 trailer."""
    head = f"REDIS{version:04d}" if magic == "REDIS" else f"{magic}{version:03d}"
    data = head.encode() + body + b"\xff"
    if version >= 5:
        data += (crc64_redis(data) if checksum else 0).to_bytes(8, "little")
    return data


def key(type_id: int, name: bytes | str, value: bytes) -> bytes:
    return bytes([type_id]) + st(name) + value


def _backlen(size: int) -> bytes:
    groups = []
    for _ in range(5):
        groups.append(size & 127)
        size >>= 7
        if not size:
            break
    groups.reverse()
    return bytes([groups[0]] + [g | 128 for g in groups[1:]])


def lp_entry(v: int | bytes | str) -> bytes:
    if isinstance(v, int):
        if 0 <= v < 128:
            enc = bytes([v])
        elif -4096 <= v < 4096:
            u = v & 0x1FFF
            enc = bytes([0xC0 | u >> 8, u & 0xFF])
        elif -(1 << 15) <= v < 1 << 15:
            enc = b"\xf1" + v.to_bytes(2, "little", signed=True)
        elif -(1 << 23) <= v < 1 << 23:
            enc = b"\xf2" + v.to_bytes(3, "little", signed=True)
        elif -(1 << 31) <= v < 1 << 31:
            enc = b"\xf3" + v.to_bytes(4, "little", signed=True)
        else:
            enc = b"\xf4" + v.to_bytes(8, "little", signed=True)
    else:
        b = v.encode() if isinstance(v, str) else v
        if len(b) < 64:
            enc = bytes([0x80 | len(b)]) + b
        elif len(b) < 4096:
            enc = bytes([0xE0 | len(b) >> 8, len(b) & 0xFF]) + b
        else:
            enc = b"\xf0" + len(b).to_bytes(4, "little") + b
    return enc + _backlen(len(enc))


def listpack(items: list[int | bytes | str]) -> bytes:
    body = b"".join(lp_entry(v) for v in items)
    total = 6 + len(body) + 1
    return (
        total.to_bytes(4, "little") + min(len(items), 65535).to_bytes(2, "little") + body + b"\xff"
    )


def _zl_entry(v: int | bytes | str, prev: int) -> bytes:
    head = bytes([prev]) if prev < 254 else b"\xfe" + prev.to_bytes(4, "little")
    if isinstance(v, int):
        if 0 <= v <= 12:
            return head + bytes([0xF1 + v])
        for code, width in ((0xFE, 1), (0xC0, 2), (0xF0, 3), (0xD0, 4), (0xE0, 8)):
            if -(1 << (8 * width - 1)) <= v < 1 << (8 * width - 1):
                return head + bytes([code]) + v.to_bytes(width, "little", signed=True)
        raise ValueError(v)
    b = v.encode() if isinstance(v, str) else v
    if len(b) < 64:
        return head + bytes([len(b)]) + b
    if len(b) < 16384:
        return head + bytes([0x40 | len(b) >> 8, len(b) & 0xFF]) + b
    return head + b"\x80" + len(b).to_bytes(4, "big") + b


def ziplist(items: list[int | bytes | str]) -> bytes:
    entries: list[bytes] = []
    prev = 0
    for v in items:
        entries.append(_zl_entry(v, prev))
        prev = len(entries[-1])
    tail = 10 + sum(len(e) for e in entries[:-1])
    body = b"".join(entries)
    return struct.pack("<IIH", 10 + len(body) + 1, tail, len(items)) + body + b"\xff"


def intset(values: list[int], width: int = 2) -> bytes:
    code = {2: "h", 4: "i", 8: "q"}[width]
    return struct.pack(f"<II{len(values)}{code}", width, len(values), *values)


def zipmap(pairs: list[tuple[bytes, bytes]]) -> bytes:
    out = bytes([len(pairs)])
    for k, v in pairs:
        out += bytes([len(k)]) + k + bytes([len(v), 0]) + v
    return out + b"\xff"


def stream_node(entries: list[dict[str, str]]) -> bytes:
    """One stream listpack node: the master entry takes the first entry's fields."""
    master = list(entries[0])
    items: list[int | bytes | str] = [len(entries), 0, len(master), *master, 0]
    for i, fields in enumerate(entries):
        if list(fields) == master:
            items += [2, 0, i, *fields.values(), 3 + len(fields)]
        else:
            items += [0, 0, i, len(fields)]
            for f, v in fields.items():
                items += [f, v]
            items.append(4 + 2 * len(fields))
    return listpack(items)


def stream_value(layout: int, node: bytes, groups: int = 1) -> bytes:
    """A stream of one node with ``groups`` consumer groups, one pending entry each."""
    entry_id = (1000).to_bytes(8, "big") + (0).to_bytes(8, "big")
    out = ln(1) + st(entry_id) + st(node)
    out += ln(2) + ln(1000) + ln(1)  # length, last id
    if layout >= 2:
        out += ln(1000) + ln(0) + ln(0) + ln(0) + ln(2)  # first id, max deleted, added
    out += ln(groups)
    for g in range(groups):
        out += st(f"group{g}") + ln(1000) + ln(1)
        if layout >= 2:
            out += ln(2)  # entries read
        out += ln(1) + entry_id + (5).to_bytes(8, "little") + ln(1)  # PEL
        out += ln(1) + st("alice") + (7).to_bytes(8, "little")
        if layout >= 3:
            out += (8).to_bytes(8, "little")
        out += ln(1) + entry_id
    return out
