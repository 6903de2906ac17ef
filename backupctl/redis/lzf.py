"""LZF decompression in pure Python, bounded by the length the RDB declares.

Why a module of its own: Redis compresses strings of 20 bytes and more with
LZF when ``rdbcompression`` is on (the default), and a listpack, ziplist or
intset stored that way can only be walked once it is decompressed. The
decoder never allocates more than the declared uncompressed length (which the
caller caps first), so a hostile file cannot make it grow without bound: a
back-reference that reaches before the start, a run past the declared end or
a short result is an :class:`LzfError` with the position in the compressed
input. The pure-Python loop does ~15 MiB/s; with the optional ``python-lzf``
package (liblzf in C, which also stops at the declared length) the sound case
runs at C speed, and only a failure is decoded again in Python to say where.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

try:  # python-lzf: liblzf's lzf_decompress, bounded by the output size given
    import lzf as _lzf_c

    _C_LZF: Any = _lzf_c
except ImportError:  # pragma: no cover - optional dependency
    _C_LZF = None

__all__ = ["MAX_LZF_RATIO", "WINDOW", "LzfError", "lzf_decompress", "lzf_pieces"]

#: An LZF back-reference of 3 bytes yields at most 264 bytes; no real stream
#: expands more than this many times its compressed size.
MAX_LZF_RATIO = 90
#: The farthest an LZF back-reference reaches (13 bits + 1): all the history a
#: streaming decoder keeps.
WINDOW = 8192


class LzfError(ValueError):
    """The compressed bytes do not decode to exactly the declared length."""

    def __init__(self, what: str, pos: int) -> None:
        super().__init__(what)
        self.pos = pos


def lzf_decompress(data: bytes | bytearray | memoryview, expected: int) -> bytes:
    """Decompress ``data`` into exactly ``expected`` bytes or raise :class:`LzfError`."""
    src = bytes(data)
    size = len(src)
    if expected > size * MAX_LZF_RATIO + 64:
        raise LzfError(
            f"LZF declares {expected} bytes from {size} compressed (more than LZF can expand)", 0
        )
    if _C_LZF is not None and expected:
        try:
            fast = _C_LZF.decompress(src, expected)
        except ValueError:
            fast = None
        if isinstance(fast, bytes) and len(fast) == expected:
            return fast
    # the one pure-Python loop, in one piece: sound data the C decoder refused
    # (or no C decoder), or a failure to locate
    return b"".join(lzf_pieces([src], size, expected, max(1, expected)))


def lzf_pieces(chunks: Iterable[bytes], size: int, expected: int, piece: int) -> Iterator[bytes]:
    """Decompress ``size`` compressed bytes, arriving as ``chunks``, into pieces
    of about ``piece`` bytes, ``expected`` in all, holding only a piece plus
    :data:`WINDOW` bytes of history (a value far larger than memory streams).

    Pure Python (~15 MiB/s): for values above the load's large-value threshold,
    where memory matters more than speed. The same errors as
    :func:`lzf_decompress`, positions counted in the whole compressed input."""
    if expected > size * MAX_LZF_RATIO + 64:
        raise LzfError(
            f"LZF declares {expected} bytes from {size} compressed (more than LZF can expand)", 0
        )
    source = iter(chunks)
    src, ip, before = b"", 0, 0  # current input chunk, position in it, input bytes before it
    out = bytearray()  # history (at most WINDOW bytes) + what is not yielded yet
    fresh = 0  # where the not-yet-yielded bytes start in ``out``
    made = 0  # output bytes produced so far
    for _ in range(size + 1):  # every token consumes at least one input byte
        if len(src) - ip < 34:  # a token is at most 1 + 32 literal bytes, or 3
            parts = [src[ip:]]
            got = before + len(src)
            while sum(map(len, parts)) < 34 and got < size:
                more = next(source, b"")
                if not more:
                    break
                parts.append(more)
                got += len(more)
            before += ip
            src, ip = b"".join(parts), 0
        if ip >= len(src):
            break
        ctrl = src[ip]
        ip += 1
        if ctrl < 32:
            run = ctrl + 1
            if ip + run > len(src):
                raise LzfError(
                    "LZF literal run past the end of the compressed data", before + ip - 1
                )
            if made + run > expected:
                raise LzfError("LZF output longer than declared", before + ip - 1)
            out += src[ip : ip + run]
            ip += run
            made += run
        else:
            length = ctrl >> 5
            if length == 7:
                if ip >= len(src):
                    raise LzfError("LZF back-reference cut short", before + ip - 1)
                length += src[ip]
                ip += 1
            if ip >= len(src):
                raise LzfError("LZF back-reference cut short", before + ip - 1)
            distance = ((ctrl & 0x1F) << 8) + src[ip] + 1
            ip += 1
            length += 2
            start = len(out) - distance
            if distance > made:
                raise LzfError("LZF back-reference before the start of the output", before + ip - 2)
            if made + length > expected:
                raise LzfError("LZF output longer than declared", before + ip - 2)
            if distance >= length:
                out += out[start : start + length]
            else:  # overlapping copy: the pattern of `distance` bytes repeats
                pattern = bytes(out[start:])
                out += (pattern * (length // distance + 1))[:length]
            made += length
        if len(out) - fresh >= piece:
            yield bytes(out[fresh:])
            del out[: max(0, len(out) - WINDOW)]
            fresh = len(out)
    if made != expected or before + ip != size:
        raise LzfError(f"LZF output is {made} bytes, {expected} declared", before + ip)
    if len(out) > fresh:
        yield bytes(out[fresh:])
