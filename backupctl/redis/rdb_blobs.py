"""The compact encodings Redis stores inside one RDB string: listpack,
ziplist, intset, zipmap, and the layout of a stream's listpack nodes.

Why a module of its own: these are pure functions of a byte string (no
stream, no state), checked the way Redis's own integrity checks do before it
trusts a blob -- header sizes, every entry's encoding and back-length,
the terminator, declared counts -- so that a file the reader calls sound is
one Redis will load. Each walk is a loop bounded by the blob's size and
raises :class:`BlobError` with the position inside the blob.
"""

from __future__ import annotations

import struct

__all__ = [
    "BlobError",
    "intset_values",
    "intset_walk",
    "listpack_walk",
    "stream_listpack_walk",
    "ziplist_walk",
    "zipmap_pairs",
    "zipmap_walk",
]


class BlobError(ValueError):
    """A structural error inside an encoded blob, at byte ``pos`` of the blob."""

    def __init__(self, what: str, pos: int) -> None:
        super().__init__(what)
        self.pos = pos


_LP_INT_SIZES = {0xF1: 2, 0xF2: 3, 0xF3: 4, 0xF4: 8}


def _backlen(n: int) -> bytes:
    """A listpack entry's back-length: the entry size, 7 bits a byte, read right to left."""
    if n <= 127:
        return bytes((n,))
    groups = 2 if n < 16383 else 3 if n < 2097151 else 4 if n < 268435455 else 5
    out = [(n >> (7 * (groups - 1 - i))) & 127 for i in range(groups)]
    return bytes([out[0]] + [b | 128 for b in out[1:]])


def listpack_walk(blob: bytes, collect: list[int | bytes] | None = None) -> int:
    """Check a listpack and return its number of entries (appending them to ``collect``)."""
    size = len(blob)
    if size < 7:
        raise BlobError(f"listpack of {size} bytes is shorter than its header", 0)
    total = int.from_bytes(blob[0:4], "little")
    if total != size:
        raise BlobError(f"listpack header says {total} bytes, the blob has {size}", 0)
    declared = blob[4] | (blob[5] << 8)
    p = 6
    count = 0
    for _ in range(size):  # every entry takes at least 2 bytes
        if p >= size - 1:
            break
        b = blob[p]
        value: int | bytes | None = None
        if b < 0x80:
            head, data = 1, 0
            value = b
        elif b < 0xC0:
            head, data = 1, b & 0x3F
        elif b < 0xE0:
            head, data = 2, 0
            raw = ((b & 0x1F) << 8) | blob[p + 1]
            value = raw - (1 << 13) if raw >= 1 << 12 else raw
        elif b < 0xF0:
            head, data = 2, ((b & 0x0F) << 8) | blob[p + 1]
        elif b == 0xF0:
            head, data = 5, int.from_bytes(blob[p + 1 : p + 5], "little")
        elif b in _LP_INT_SIZES:
            head, data = 1, _LP_INT_SIZES[b]
        elif b == 0xFF:
            break
        else:
            raise BlobError(f"bad listpack entry encoding 0x{b:02x}", p)
        entry = head + data
        if entry <= 127:
            end = p + entry + 1
            if end > size - 1:
                raise BlobError("listpack entry runs past the terminator", p)
            if blob[end - 1] != entry:
                raise BlobError("bad listpack entry back-length", end - 1)
        else:
            back = _backlen(entry)
            end = p + entry + len(back)
            if end > size - 1:
                raise BlobError("listpack entry runs past the terminator", p)
            if blob[p + entry : end] != back:
                raise BlobError("bad listpack entry back-length", p + entry)
        if collect is not None:
            if value is None and b >= 0xF1:
                value = int.from_bytes(blob[p + 1 : p + entry], "little", signed=True)
            collect.append(blob[p + head : p + entry] if value is None else value)
        count += 1
        p = end
    if p != size - 1 or blob[p] != 0xFF:
        raise BlobError("bad listpack terminator", p)
    if declared != 65535 and declared != count:
        raise BlobError(f"listpack header counts {declared} entries, it holds {count}", 4)
    return count


_ZL_INT_SIZES = {0xC0: 2, 0xD0: 4, 0xE0: 8, 0xF0: 3, 0xFE: 1}


def ziplist_walk(blob: bytes, collect: list[int | bytes] | None = None) -> int:
    """Check a ziplist (RDB < 10) and return its number of entries (appending
    them to ``collect``)."""
    size = len(blob)
    if size < 11:
        raise BlobError(f"ziplist of {size} bytes is shorter than its header", 0)
    total, tail, declared = struct.unpack_from("<IIH", blob, 0)
    if total != size:
        raise BlobError(f"ziplist header says {total} bytes, the blob has {size}", 0)
    p = 10
    prev_size = 0
    last = 10
    count = 0
    for _ in range(size):  # every entry takes at least 2 bytes
        if p >= size - 1:
            break
        b = blob[p]
        if b == 0xFF:
            break
        if b < 254:
            prev, plen = b, 1
        else:
            prev, plen = int.from_bytes(blob[p + 1 : p + 5], "little"), 5
        if prev != prev_size:
            raise BlobError(f"ziplist entry says the previous is {prev} bytes, not {prev_size}", p)
        q = p + plen
        if q >= size - 1:
            raise BlobError("ziplist entry runs past the terminator", p)
        e = blob[q]
        kind = e >> 6
        if kind == 0:
            head, data = 1, e & 0x3F
        elif kind == 1:
            head, data = 2, ((e & 0x3F) << 8) | blob[q + 1]
        elif e == 0x80:
            head, data = 5, int.from_bytes(blob[q + 1 : q + 5], "big")
        elif e in _ZL_INT_SIZES:
            head, data = 1, _ZL_INT_SIZES[e]
        elif 0xF1 <= e <= 0xFD:
            head, data = 1, 0
        else:
            raise BlobError(f"bad ziplist entry encoding 0x{e:02x}", q)
        end = q + head + data
        if end > size - 1:
            raise BlobError("ziplist entry runs past the terminator", p)
        if collect is not None:
            collect.append(_ziplist_value(blob, e, q + head, end))
        last = p
        prev_size = end - p
        count += 1
        p = end
    if p != size - 1 or blob[p] != 0xFF:
        raise BlobError("bad ziplist terminator", p)
    if tail != last:
        raise BlobError(f"ziplist tail offset {tail} is not its last entry ({last})", 4)
    if declared != 65535 and declared != count:
        raise BlobError(f"ziplist header counts {declared} entries, it holds {count}", 8)
    return count


def _ziplist_value(blob: bytes, enc: int, start: int, end: int) -> int | bytes:
    if enc < 0xC0:
        return blob[start:end]
    if 0xF1 <= enc <= 0xFD:
        return (enc & 0x0F) - 1
    return int.from_bytes(blob[start:end], "little", signed=True)


def intset_values(blob: bytes) -> list[int]:
    """The integers of an intset (checked by :func:`intset_walk` first)."""
    intset_walk(blob, deep=False)
    width = int.from_bytes(blob[0:4], "little")
    code = {2: "<h", 4: "<i", 8: "<q"}[width]
    return [v for (v,) in struct.iter_unpack(code, blob[8:])]


def zipmap_pairs(blob: bytes) -> list[bytes]:
    """Field, value, field, value ... of a zipmap (checked first)."""
    zipmap_walk(blob)
    out: list[bytes] = []
    p = 1
    for _ in range(len(blob)):
        if blob[p] == 255:
            break
        klen, p = _zipmap_len(blob, p)
        out.append(blob[p : p + klen])
        p += klen
        vlen, p = _zipmap_len(blob, p)
        free = blob[p]
        p += 1
        out.append(blob[p : p + vlen])
        p += vlen + free
    return out


def intset_walk(blob: bytes, deep: bool = True) -> int:
    """Check an intset (sorted, unique integers of 2, 4 or 8 bytes) and return its size."""
    if len(blob) < 8:
        raise BlobError(f"intset of {len(blob)} bytes is shorter than its header", 0)
    width, count = (int(v) for v in struct.unpack_from("<II", blob, 0))
    if width not in (2, 4, 8):
        raise BlobError(f"bad intset encoding {width}", 0)
    if len(blob) != 8 + width * count:
        raise BlobError(f"intset of {count} x {width} bytes cannot be {len(blob)} bytes long", 4)
    if deep and count > 1:
        code = {2: "<h", 4: "<i", 8: "<q"}[width]
        values = [v for (v,) in struct.iter_unpack(code, blob[8:])]
        for i in range(1, count):
            if values[i] <= values[i - 1]:
                raise BlobError("intset is not sorted and unique", 8 + i * width)
    return count


def _zipmap_len(blob: bytes, p: int) -> tuple[int, int]:
    b = blob[p]
    if b < 254:
        return b, p + 1
    if b == 254 and p + 5 <= len(blob):
        return int.from_bytes(blob[p + 1 : p + 5], "little"), p + 5
    raise BlobError("bad zipmap length", p)


def zipmap_walk(blob: bytes) -> int:
    """Check a zipmap (hashes of RDB < 4) and return its number of field-value pairs."""
    size = len(blob)
    if size < 2:
        raise BlobError("zipmap shorter than its header", 0)
    declared = blob[0]
    p = 1
    pairs = 0
    for _ in range(size):  # every pair takes at least 3 bytes
        if p >= size or blob[p] == 255:
            break
        klen, p = _zipmap_len(blob, p)
        p += klen
        if p >= size:
            raise BlobError("zipmap field runs past the end", p)
        vlen, p = _zipmap_len(blob, p)
        if p >= size:
            raise BlobError("zipmap value runs past the end", p)
        free = blob[p]
        p += 1 + vlen + free
        pairs += 1
    if p != size - 1 or blob[p] != 255:
        raise BlobError("bad zipmap terminator", min(p, size - 1))
    if declared < 254 and declared != pairs:
        raise BlobError(f"zipmap header counts {declared} pairs, it holds {pairs}", 0)
    return pairs


_SAMEFIELDS = 2


def _int_at(items: list[int | bytes], i: int, what: str) -> int:
    if i >= len(items):
        raise BlobError(f"stream listpack ends before its {what}", 0)
    value = items[i]
    if isinstance(value, bytes):
        try:
            number: int = int(value)
        except ValueError:
            raise BlobError(f"stream listpack {what} is not an integer", 0) from None
        return number
    return int(value)


def stream_listpack_walk(blob: bytes) -> int:
    """Check one listpack node of a stream (master entry, then entries) and return
    the number of entries it holds (live and deleted)."""
    items: list[int | bytes] = []
    listpack_walk(blob, items)
    count = _int_at(items, 0, "entry count")
    deleted = _int_at(items, 1, "deleted count")
    master_fields = _int_at(items, 2, "master field count")
    if count < 0 or deleted < 0 or master_fields < 0 or 3 + master_fields >= len(items):
        raise BlobError("stream listpack has a bad master entry", 0)
    i = 3 + master_fields
    if _int_at(items, i, "master entry terminator") != 0:
        raise BlobError("stream listpack master entry is not terminated", 0)
    i += 1
    entries = 0
    for _ in range(len(items)):  # every entry takes at least 4 items
        if i >= len(items):
            break
        flags = _int_at(items, i, "entry flags")
        if flags & _SAMEFIELDS:
            fields = master_fields
            i += 3 + fields
            expected_lp_count = 3 + fields
        else:
            fields = _int_at(items, i + 3, "entry field count")
            if fields < 0:
                raise BlobError("stream entry has a negative field count", 0)
            i += 4 + 2 * fields
            expected_lp_count = 4 + 2 * fields
        if _int_at(items, i, "entry lp-count") != expected_lp_count:
            raise BlobError("stream entry lp-count does not match its fields", 0)
        i += 1
        entries += 1
    if entries != count + deleted:
        raise BlobError(
            f"stream listpack holds {entries} entries, its master entry says {count + deleted}", 0
        )
    return entries
