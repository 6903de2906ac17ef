"""PartUploadWriter (the multipart writer of S3, Azure and GCS): every byte
arrives in order, and the part buffers are filled again rather than
allocated per part (a fresh multi-MiB buffer is faulted in page by page)."""

from __future__ import annotations

import threading

import pytest

from backupctl.store.backends.base import PartUploadWriter

PART = 64 * 1024


class _Recording(PartUploadWriter):
    def __init__(self, workers: int) -> None:
        super().__init__("test://bucket/key", workers=workers)
        self.parts: dict[int, bytes] = {}
        self.buffers: list[object] = []  # every buffer handed over (kept alive: ids stay unique)
        self.tail = b""
        self._rec = threading.Lock()

    def part_size(self, number: int) -> int:
        return PART

    def _upload_part(self, number: int, data: bytes | bytearray) -> object:
        with self._rec:
            self.parts[number] = bytes(data)
            if all(b is not data for b in self.buffers):
                self.buffers.append(data)
        return number

    def _finish(self, tail: bytes, parts: int, results: dict[int, object]) -> None:
        self.tail = tail


@pytest.mark.parametrize("piece", [1000, PART, 3 * PART + 17])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_every_byte_arrives_in_order_through_at_most_workers_plus_one_buffers(
    piece: int, workers: int
) -> None:
    data = bytes(i * 7 % 251 for i in range(20 * PART + 123))
    w = _Recording(workers)
    with w:
        for i in range(0, len(data), piece):
            w.write(data[i : i + piece])
        w.commit()
    joined = b"".join(w.parts[n] for n in sorted(w.parts)) + w.tail
    assert joined == data
    assert sorted(w.parts) == list(range(1, 21)) and len(w.tail) == 123
    assert len(w.buffers) <= workers + 1, f"{len(w.buffers)} part buffers for 20 parts"


class _Gated(_Recording):
    """Part 2 stays in flight until the last part has started (or 5 s pass)."""

    tail_as_part = True

    def __init__(self) -> None:
        super().__init__(workers=2)
        self.tail_started = threading.Event()
        self.tail_started_while_part_2_in_flight = False

    def _upload_part(self, number: int, data: bytes | bytearray) -> object:
        if number == 3:
            self.tail_started.set()
        if number == 2:
            self.tail_started_while_part_2_in_flight = self.tail_started.wait(5)
        return super()._upload_part(number, data)


def test_a_short_last_part_is_uploaded_beside_the_parts_in_flight() -> None:
    # S3 takes a short last part: commit() queues it with the others instead of
    # uploading it once they are done (one part upload less after the last byte).
    data = bytes(i % 253 for i in range(2 * PART + 100))
    w = _Gated()
    with w:
        w.write(data)
        w.commit()
    assert w.tail_started_while_part_2_in_flight
    assert sorted(w.parts) == [1, 2, 3] and w.tail == b""
    assert b"".join(w.parts[n] for n in (1, 2, 3)) == data


def test_an_object_smaller_than_a_part_is_still_one_upload() -> None:
    w = _Gated()
    with w:
        w.write(b"small")
        w.commit()
    assert w.parts == {} and w.tail == b"small"
