"""ReceiveAhead: while the archive writer is not reading yet, a thread takes
the replication stream off the socket (so the master's fork child is not held
up by our start-up), within its memory bound; then the reader gets every byte
in order, the end, or the socket's error in its turn."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from backupctl.redis.replication_receive import ReceiveAhead

KIB = 1024


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    for s in (a, b):  # small kernel buffers: what the thread holds shows
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * KIB)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * KIB)
    a.settimeout(10)
    b.settimeout(10)
    yield a, b
    a.close()
    b.close()


def _read_all(ahead: ReceiveAhead, limit: int) -> bytes:
    out = bytearray()
    buf = bytearray(100 * KIB)
    for _ in range(limit):  # bounded
        n = ahead.readinto(memoryview(buf))
        if n == 0:
            return bytes(out)
        out += buf[:n]
    raise AssertionError("the stream did not end")


def _sender(sock: socket.socket, data: bytes) -> tuple[threading.Thread, threading.Event]:
    sent = threading.Event()

    def send() -> None:
        sock.sendall(data)
        sent.set()
        sock.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    return t, sent


def test_the_stream_is_taken_off_the_socket_before_the_first_read(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    master, ours = pair
    data = bytes(i % 251 for i in range(2 * 1024 * KIB))
    ahead = ReceiveAhead(ours.recv_into, chunk=256 * KIB, chunks=16)  # 4 MiB
    t, sent = _sender(master, data)
    # The sender finishes although nobody has read yet: the thread holds it.
    assert sent.wait(10), "the sender was held up: nothing received ahead"
    assert _read_all(ahead, 10_000) == data
    t.join(5)


def test_what_is_held_is_bounded_and_the_rest_waits_for_the_reader(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    master, ours = pair
    data = bytes(i % 253 for i in range(3 * 1024 * KIB))
    ahead = ReceiveAhead(ours.recv_into, chunk=64 * KIB, chunks=4)  # 256 KiB at most
    t, sent = _sender(master, data)
    for _ in range(500):  # a positive sign first: the thread has filled its buffers
        if ahead.peak_buffers == 4:
            break
        sent.wait(0.01)
    assert ahead.peak_buffers == 4
    assert not sent.is_set(), "3 MiB went into 256 KiB of buffers and small socket buffers"
    assert _read_all(ahead, 100_000) == data  # the reader takes over: every byte, in order
    assert sent.wait(10)
    assert ahead.peak_buffers == 4
    t.join(5)


def test_the_end_and_errors_come_in_their_turn() -> None:
    pieces: list[bytes | BaseException] = [b"abc", b"def", ConnectionResetError(104, "reset")]
    got_all = threading.Event()

    def recv_into(view: memoryview) -> int:  # like a socket: at most len(view) bytes
        item = pieces.pop(0) if pieces else b""
        if isinstance(item, BaseException):
            got_all.set()
            raise item
        n = min(len(view), len(item))
        view[:n] = item[:n]
        if item[n:]:
            pieces.insert(0, item[n:])
        return n

    ahead = ReceiveAhead(recv_into, chunk=4, chunks=8)
    assert got_all.wait(5)
    buf = bytearray(100)
    seen = b""
    with pytest.raises(ConnectionResetError):
        for _ in range(10):
            n = ahead.readinto(memoryview(buf))
            seen += buf[:n]
    assert seen == b"abcdef"
    with pytest.raises(ConnectionResetError):  # and again on a later read
        ahead.readinto(memoryview(buf))

    ended = ReceiveAhead(lambda view: 0, chunk=4, chunks=2)
    assert ended.readinto(memoryview(buf)) == 0
    assert ended.readinto(memoryview(buf)) == 0
