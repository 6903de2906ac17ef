"""Streaming LZF decompression (``lzf_pieces``): what a big compressed string
in an RDB becomes when ``restore --to-redis`` rebuilds it piece by piece. It
must give the same bytes as liblzf whatever the input's chunking, hold only a
piece plus the back-reference window, and fail like the whole-buffer decoder."""

from __future__ import annotations

import os
import random

import lzf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backupctl.redis.lzf import WINDOW, LzfError, lzf_decompress, lzf_pieces


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def sample(n: int, seed: int) -> bytes:
    """Repetitive text (long back-references, overlapping ones) then noise (literal runs)."""
    rng = random.Random(seed)
    motif = bytes(rng.choice(b"abcab ") for _ in range(300))
    return (motif * (n // 300 + 1))[:n] + rng.randbytes(n // 8)


@pytest.mark.parametrize("n", [60, 500, 9_000, 70_000, 400_000])
@pytest.mark.parametrize("chunk", [1, 3, 34, 4096, 1 << 20])
@pytest.mark.parametrize("piece", [1, 1000, 65536])
def test_pieces_join_to_what_liblzf_decompresses(n: int, chunk: int, piece: int) -> None:
    data = sample(n, n)
    packed = lzf.compress(data)
    assert packed is not None
    pieces = list(lzf_pieces(chunked(packed, chunk), len(packed), len(data), piece))
    assert b"".join(pieces) == data == lzf_decompress(packed, len(data))
    assert all(len(p) < piece + 300 for p in pieces)  # a piece, plus at most one token


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=5000), st.integers(1, 64), st.integers(1, 5000))
def test_any_input_round_trips(data: bytes, chunk: int, piece: int) -> None:
    packed = lzf.compress(data * 3)
    if packed is None:  # liblzf gives up on input it cannot shrink
        return
    pieces = lzf_pieces(chunked(packed, chunk), len(packed), 3 * len(data), piece)
    assert b"".join(pieces) == data * 3


def test_history_kept_is_the_window_not_the_value() -> None:
    """A back-reference reaching the full WINDOW still decodes after many pieces."""
    head = os.urandom(WINDOW // 2)
    data = head + bytes(WINDOW // 2 - 100) + head[:200] + bytes(3 * WINDOW)
    packed = lzf.compress(data)
    assert packed is not None
    assert b"".join(lzf_pieces([packed], len(packed), len(data), 100)) == data


@pytest.mark.parametrize(
    ("cut", "declared", "message"),
    [
        (-1, 0, "past the end|cut short|declared"),  # compressed input one byte short
        (0, -1, "longer than declared"),
        (0, +1, "declared"),  # one byte short of what it declares
    ],
)
def test_damage_is_an_lzf_error_like_the_whole_buffer_decoder(
    cut: int, declared: int, message: str
) -> None:
    data = sample(5_000, 7)
    packed = lzf.compress(data)
    assert packed is not None
    bad = packed[: len(packed) + cut] if cut else packed
    with pytest.raises(LzfError, match=message):
        b"".join(lzf_pieces(chunked(bad, 100), len(bad), len(data) + declared, 1000))
    with pytest.raises(LzfError, match=message):
        lzf_decompress(bad, len(data) + declared)


def test_a_reference_before_the_start_is_refused_with_its_position() -> None:
    bad = bytes([0x20, 0x05])  # a back-reference of 3 bytes, distance 6, at output 0
    with pytest.raises(LzfError, match="before the start") as info:
        list(lzf_pieces([bad], len(bad), 3, 10))
    assert info.value.pos == 0
