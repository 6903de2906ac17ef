"""--no-tmp's second pass hands on only blocks equal to the first pass's (pure, in memory)."""

from __future__ import annotations

import io

import pytest

from backupctl.ops import restore_stream
from backupctl.ops.restore_stream import StoreChanged, _Blocks

DATA = bytes(range(256)) * 100_000  # 25.6 MB: six full 4 MiB blocks and a partial one


def first_pass(data: bytes) -> list[bytes]:
    digests: list[bytes] = []
    assert _Blocks(io.BytesIO(data), digests, check=False).read() == data  # type: ignore[arg-type]
    return digests


def test_the_first_pass_keeps_one_digest_per_block() -> None:
    assert len(first_pass(DATA)) == -(-len(DATA) // restore_stream.BLOCK) == 7


def test_the_same_bytes_pass_the_second_time() -> None:
    again = _Blocks(io.BytesIO(DATA), first_pass(DATA), check=True)  # type: ignore[arg-type]
    assert again.read() == DATA


@pytest.mark.parametrize(
    ("changed", "handed_on"),
    [
        (DATA[:-1] + b"\x00", 6 * restore_stream.BLOCK),  # the last byte: 6 blocks pass
        (b"\x01" + DATA[1:], 0),  # the first byte: nothing passes
        (DATA[: 2 * restore_stream.BLOCK], 2 * restore_stream.BLOCK),  # truncated after 2
        (DATA + b"more", 6 * restore_stream.BLOCK),  # longer: its last block differs
    ],
    ids=["last-byte", "first-byte", "truncated", "longer"],
)
def test_a_changed_object_stops_at_the_first_changed_block(changed: bytes, handed_on: int) -> None:
    again = _Blocks(io.BytesIO(changed), first_pass(DATA), check=True)  # type: ignore[arg-type]
    got = bytearray()
    with pytest.raises(StoreChanged) as err:
        while chunk := again.read(1 << 20):
            got += chunk
    assert len(got) == handed_on == err.value.offset
    assert bytes(got) == DATA[:handed_on]
    assert f"from offset {handed_on} differ" in str(err.value)
