"""``RESTORE`` commands packed straight from a run of plain string records of
an RDB, and a packed ``RESTORE`` read back when its reply is an error.

Why it exists: ``restore --to-redis`` spends most of its load pass on the
most common record of all, a string key with a short value. Through the
general route each one costs a record object, a DUMP payload built with
three copies, an :class:`~backupctl.redis.load.Item` (twice) and a RESP
command built from several pieces: ~10 us of Python per key, more than the
target spends restoring it, on 300,000 keys of 2.5 KB the load's bottleneck
(profiled: ``docs/benchmarks.md``, issue 12). Here a run of such records
lying wholly in the reader's buffer becomes one ``bytes`` per key, formatted
in one step from the record's own bytes, with its CRC-64 (C, ``anycrc``)
computed over them where they lie. Nothing per key outlives the batch.

What it takes (the rest is left to the general route, which reads it and
names what is wrong): type 0 records, maybe after a millisecond expire time
(not yet passed), an LRU idle time or an LFU frequency; a key that is a raw
string of a 6- or 14-bit length; a value that is a raw string (6-, 14- or
32-bit length), an integer, or an LZF string whose 6- or 14-bit lengths are
plausible (the checks ``RdbSource.skip_string`` makes; the target checks
the payload's CRC-64 and decompresses it). The payload is exactly what
:func:`backupctl.redis.dump_payload.dump_payload` builds from the same
bytes; the command exactly what
:func:`backupctl.redis.resp_pipeline.pack_restore` packs.

Pure: functions of bytes.
"""

from __future__ import annotations

from typing import NamedTuple

from backupctl.redis.rdb import crc64_redis
from backupctl.redis.rdb_reader import lzf_string_end
from backupctl.redis.resp_pipeline import FileSlice, Packed

__all__ = ["Restore", "StringRun", "pack_string_run", "restore_parts"]

_STRING, _EXPIRETIME_MS, _IDLE, _FREQ = 0, 252, 248, 249
#: Room kept before the buffer's end: every header byte read (an expire time,
#: an idle time, two string headers) lies inside it.
_SLACK = 32
_INT_WIDTH = {0xC0: 1, 0xC1: 2, 0xC2: 4}


class StringRun(NamedTuple):
    """What :func:`pack_string_run` packed: the position after the last record
    packed, how many records (``records``), how many bytes of commands."""

    end: int
    records: int
    size: int


def _pieces(replace: bool) -> tuple[bytes, bytes, bytes, bytes]:
    """The constant pieces of a command: its start (up to the key's length),
    the expiry of a key without one, the options after the payload, and the
    array length once IDLETIME/FREQ follow."""
    n = 5 + replace
    opts = (b"$7\r\nREPLACE\r\n" if replace else b"") + b"$6\r\nABSTTL\r\n"
    return b"*%d\r\n$7\r\nRESTORE\r\n$" % n, b"\r\n$1\r\n0\r\n", b"\r\n" + opts, b"*%d" % (n + 2)


def pack_string_run(
    buf: bytes,
    pos: int,
    *,
    now_ms: int,
    version: int,
    replace: bool,
    hold: int,
    room: int,
    most: int,
    out: list[Packed],
) -> StringRun:
    """Pack, from ``buf[pos]``, the plain string records (see the module
    docstring) that lie wholly in ``buf`` as ``RESTORE key expiry payload
    [REPLACE] ABSTTL [IDLETIME s | FREQ f]`` commands appended to ``out``,
    the payload labelled with RDB ``version``; stop before a record it does
    not take, one whose expiry is before ``now_ms`` (the caller skips and
    counts it), a value over ``hold`` bytes, once ``room`` bytes or ``most``
    commands are packed, or near the buffer's end."""
    start, no_expiry, opts, more = _pieces(replace)
    ver = version.to_bytes(2, "little")
    stop = len(buf) - _SLACK
    count = size = 0
    for _ in range(min(most, len(buf))):  # every record packed is 3 bytes or more
        if pos >= stop or size >= room:
            break
        p = pos
        op = buf[p]
        expire = 0
        if op == _EXPIRETIME_MS:
            expire = int.from_bytes(buf[p + 1 : p + 9], "little", signed=True)
            if expire < now_ms:
                break
            p += 9
            op = buf[p]
        extra = b""
        if op == _IDLE:
            b = buf[p + 1]
            if b >= 0x80:
                break  # a 32/64-bit idle time: the general route
            idle, p = (b, p + 2) if b < 0x40 else (((b & 0x3F) << 8) | buf[p + 2], p + 3)
            text = b"%d" % idle
            extra = b"$8\r\nIDLETIME\r\n$%d\r\n%b\r\n" % (len(text), text)
            op = buf[p]
        elif op == _FREQ:
            text = b"%d" % buf[p + 1]
            extra = b"$4\r\nFREQ\r\n$%d\r\n%b\r\n" % (len(text), text)
            p += 2
            op = buf[p]
        if op != _STRING:
            break
        b = buf[p + 1]  # the key: a raw string
        if b < 0x40:
            k = p + 2
            p = k + b
        elif b < 0x80:
            k = p + 3
            p = k + (((b & 0x3F) << 8) | buf[p + 2])
        else:
            break
        if p >= stop:
            break
        v = p
        b = buf[p]  # the value
        if b < 0x40:
            p += 1 + b
        elif b < 0x80:
            p += 2 + (((b & 0x3F) << 8) | buf[p + 1])
        elif b == 0x80:
            p += 5 + int.from_bytes(buf[p + 1 : p + 5], "big")
        elif b == 0xC3:
            p = lzf_string_end(buf, p)
            if p < 0:
                break  # the general route says why
        elif b in _INT_WIDTH:
            p += 1 + _INT_WIDTH[b]
        else:
            break
        if p > len(buf) or p - v > hold:
            break
        value = buf[v:p]
        # the type byte (0) leaves a CRC-64 of init 0 at 0: the value's bytes start it
        trailer = ver + crc64_redis(ver, crc64_redis(value)).to_bytes(8, "little")
        expiry = no_expiry if not expire else b"\r\n$%d\r\n%d\r\n" % (len(b"%d" % expire), expire)
        # one join: the value's bytes copied once (a %-format copies them twice)
        cmd = b"".join((start, b"%d\r\n" % (v - k), buf[k:v], expiry,
                        b"$%d\r\n\x00" % (len(value) + 11), value, trailer, opts))  # fmt: skip
        if extra:
            cmd = more + cmd[cmd.index(b"\r\n") :] + extra
        out.append(cmd)
        size += len(cmd)
        count += 1
        pos = p
    return StringRun(pos, count, size)


def _bulk(data: bytes, pos: int) -> tuple[bytes, int]:
    """The bulk string at ``data[pos]`` (``$n\\r\\n`` + n bytes + CRLF) and where it ends."""
    eol = data.index(b"\r\n", pos)
    n = int(data[pos + 1 : eol])
    return data[eol + 2 : eol + 2 + n], eol + 4 + n


class Restore(NamedTuple):
    """A packed ``RESTORE`` read back: what :class:`backupctl.redis.load.Item` holds."""

    key: bytes
    expire_ms: int
    payload: bytes | FileSlice
    idle: int | None
    freq: int | None


def restore_parts(command: Packed) -> Restore:
    """A packed ``RESTORE key expiry payload [REPLACE] ABSTTL [IDLETIME s |
    FREQ f]`` read back (to name the key of an error reply, compare what a
    key holds, or route it through a cluster client); never on the hot path."""
    head = command if isinstance(command, bytes) else command[0]
    pos = head.index(b"\r\n") + 2  # *N
    _, pos = _bulk(head, pos)  # RESTORE
    key, pos = _bulk(head, pos)
    expire, pos = _bulk(head, pos)
    payload: bytes | FileSlice
    if isinstance(command, bytes):
        payload, pos = _bulk(command, pos)
        rest = command
    else:
        payload, rest, pos = command[1], command[2], 2  # after: CRLF, then the options
    opts = []
    for _ in range(len(rest)):  # every option takes 6 bytes or more
        if pos >= len(rest):
            break
        arg, pos = _bulk(rest, pos)
        opts.append(arg)
    idle = int(opts[opts.index(b"IDLETIME") + 1]) if b"IDLETIME" in opts else None
    freq = int(opts[opts.index(b"FREQ") + 1]) if b"FREQ" in opts else None
    return Restore(key, int(expire), payload, idle, freq)
