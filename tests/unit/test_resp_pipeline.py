"""The raw RESTORE pipeline: replies walked to their end without decoding them,
errors kept with their place in the batch, at most ``depth`` batches in flight
(a socketpair plays the server; no network); a payload sent from its file
is the same bytes as one held."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from backupctl.redis.dump_payload import dump_payload
from backupctl.redis.resp_pipeline import (
    FILE_CHUNK,
    FileSlice,
    RawPipe,
    pack_command,
    pack_restore,
    reply_end,
    slice_payload,
)

REPLIES = [
    b"+OK\r\n",
    b"-BUSYKEY Target key name already exists.\r\n",
    b":1024\r\n",
    b"$3\r\nabc\r\n",
    b"$-1\r\n",
    b"$0\r\n\r\n",
    b"*2\r\n:1\r\n$5\r\nhe\r\nl\r\n",  # a bulk string holding CRLF
    b"*2\r\n*1\r\n:1\r\n*0\r\n",  # nested
    b"*-1\r\n",
    b"%1\r\n+field\r\n:-2\r\n",  # RESP3 map (HPEXPIREAT on RESP3 servers: arrays)
    b"_\r\n",
    b"!5\r\nERR x\r\n",  # RESP3 bulk error
]


@pytest.mark.parametrize("reply", REPLIES)
def test_a_reply_ends_where_it_ends_and_a_cut_one_is_not_complete(reply: bytes) -> None:
    buf = b"junk" + reply + b"+OK\r\n"
    assert reply_end(buf, 4) == 4 + len(reply)
    for cut in range(4, 4 + len(reply)):
        assert reply_end(buf[:cut], 4) == -1


def test_bytes_that_are_no_reply_are_an_error() -> None:
    with pytest.raises(redis.ResponseError, match="unexpected reply byte"):
        reply_end(b"?what\r\n", 0)


class _Conn:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.disconnected = False

    def disconnect(self) -> None:
        self.disconnected = True


class _Pool:
    def __init__(self, conn: _Conn) -> None:
        self.conn = conn
        self.released = False

    def get_connection(self) -> _Conn:
        return self.conn

    def release(self, conn: _Conn) -> None:
        self.released = True


class _Client:
    def __init__(self, sock: socket.socket) -> None:
        self.connection_pool = _Pool(_Conn(sock))


def _pipe(sock: socket.socket, depth: int = 2) -> RawPipe[str]:
    client: Any = _Client(sock)
    return RawPipe(client, depth)


def _read_commands(sock: socket.socket, count: int) -> int:
    """Read until ``count`` commands (RESP arrays) arrived; how many bytes."""
    buf = b""
    for _ in range(10_000):
        pos = got = 0
        while got < count and (end := reply_end(buf, pos)) >= 0:
            pos, got = end, got + 1
        if got == count:
            return len(buf)
        buf += sock.recv(1 << 16)
    raise AssertionError("commands never arrived")


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    """Two ends of a TCP connection on 127.0.0.1 (the pipe waits for replies
    with a low-water mark there, SO_RCVLOWAT; a socketpair has none)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        ours = socket.create_connection(listener.getsockname(), timeout=10)
        server, _ = listener.accept()
    return ours, server


PAIRS = {"socketpair": socket.socketpair, "tcp": _tcp_pair}


@pytest.mark.parametrize("pair", PAIRS)
def test_errors_are_kept_with_their_index_and_replies_may_arrive_in_pieces(pair: str) -> None:
    ours, server = PAIRS[pair]()
    with ours, server:
        server.settimeout(10)
        ours.settimeout(10)
        pipe = _pipe(ours)
        keys = [f"k{i}" for i in range(6)]
        assert pipe.send([pack_command("RESTORE", k, "0", "x") for k in keys], keys) == []
        _read_commands(server, 6)
        answer = b"+OK\r\n-BUSYKEY exists\r\n:3\r\n*2\r\n:1\r\n:-2\r\n+OK\r\n-ERR bad payload\r\n"

        def trickle() -> None:  # one byte at a time: every reply cut somewhere
            for i in range(len(answer)):
                server.sendall(answer[i : i + 1])

        thread = threading.Thread(target=trickle)
        thread.start()
        (batch,) = pipe.drain()
        thread.join(10)
        assert batch.tags == keys
        assert batch.errors == [(1, "BUSYKEY exists"), (5, "ERR bad payload")]
        pipe.close()
        if pair == "tcp":  # back to the pool as redis-py expects it: no low-water mark
            assert ours.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1


def test_the_shortest_replies_trickling_in_never_outwait_the_last_byte() -> None:
    ours, server = _tcp_pair()
    with ours, server:
        ours.settimeout(3)  # a read waiting for bytes that never come fails here
        pipe = _pipe(ours)
        pipe.send([pack_command("PING")] * 40, ["p"] * 40)
        _read_commands(server, 40)
        # longer replies first, then RESP3 nulls (3 bytes, the least a reply takes); the
        # first read wakes with 14 nulls still due and the first of them cut in two
        answer = b"+OK\r\n" * 20 + b"_\r\n" * 20

        def trickle() -> None:
            server.sendall(answer[:120])
            time.sleep(0.3)  # read by now
            for i in range(120, len(answer)):
                server.sendall(answer[i : i + 1])
                time.sleep(0.002)

        thread = threading.Thread(target=trickle)
        started = time.monotonic()
        thread.start()
        (batch,) = pipe.drain()
        thread.join(10)
        assert len(batch.tags) == 40 and batch.errors == []
        assert time.monotonic() - started < 2.5
        pipe.close()


def test_at_most_depth_batches_are_in_flight() -> None:
    ours, server = socket.socketpair()
    with ours, server:
        server.settimeout(10)
        ours.settimeout(10)
        pipe = _pipe(ours, depth=2)
        assert pipe.send([pack_command("PING")], ["a"]) == []
        assert pipe.send([pack_command("PING"), pack_command("PING")], ["b", "c"]) == []
        _read_commands(server, 3)
        server.sendall(b"+OK\r\n")  # batch a's reply: the third send may go out
        done = pipe.send([pack_command("PING")], ["d"])
        assert [b.tags for b in done] == [["a"]]
        server.sendall(b"+OK\r\n+OK\r\n-ERR no\r\n")
        rest = pipe.drain()
        assert [(b.tags, b.errors) for b in rest] == [(["b", "c"], []), (["d"], [(0, "ERR no")])]
        pipe.close()


def test_a_closed_connection_raises_and_the_connection_is_dropped() -> None:
    ours, server = socket.socketpair()
    with ours:
        ours.settimeout(10)
        client: Any = _Client(ours)
        pipe: RawPipe[str] = RawPipe(client)
        pipe.send([pack_command("PING")], ["a"])
        server.close()
        with pytest.raises(
            redis.ConnectionError, match=r"from the server failed|closed the connection"
        ):
            pipe.drain()
        assert client.connection_pool.conn.disconnected
        pipe.close()
        assert client.connection_pool.released


@pytest.mark.parametrize("replace", [False, True])
@pytest.mark.parametrize(("idle", "freq"), [(None, None), (0, None), (123456, None), (None, 255)])
@pytest.mark.parametrize("key", [b"k", "clé", b"\x00\r\n" * 50])
def test_restore_is_packed_as_the_generic_command_would_be(
    key: bytes | str, replace: bool, idle: int | None, freq: int | None
) -> None:
    payload = bytes(range(256)) * 3
    args: list[bytes | str] = ["RESTORE", key, b"1700000000123", payload]
    args += ["REPLACE"] * replace + ["ABSTTL"]
    if idle is not None:
        args += ["IDLETIME", str(idle)]
    elif freq is not None:
        args += ["FREQ", str(freq)]
    assert pack_restore(key, 1700000000123, payload, replace, idle, freq) == pack_command(*args)
    assert reply_end(pack_command(*args), 0) == len(pack_command(*args))  # one RESP array


def test_a_payload_sent_from_its_file_is_the_bytes_of_the_payload_held(tmp_path: Path) -> None:
    """A :class:`FileSlice` payload (value bytes left in the RDB file) goes on
    the wire exactly as the same DUMP payload held in memory would, beside
    held ones in one batch, in chunks: header, type byte, file bytes, version
    and the CRC-64 computed as they pass."""
    value = bytes(range(256)) * ((3 * FILE_CHUNK) // 256 + 7)  # over three chunks
    path = tmp_path / "dump.rdb"
    path.write_bytes(b"junk" + value + b"tail")
    fd = os.open(path, os.O_RDONLY)
    ours, server = socket.socketpair()
    try:
        with ours, server:
            server.settimeout(10)
            ours.settimeout(10)
            part = FileSlice(fd, 4, len(value), b"\x04", 11)
            held = dump_payload(b"\x04" + value, 11)
            assert slice_payload(part) == held and part.size == len(held)
            first = pack_restore(b"k", 0, b"\x00\x01x\x0b\x00" + b"\x00" * 8, False, None, None)
            want = first + pack_restore(b"big", 1700000000123, held, True, 5, None)
            sliced = pack_restore(b"big", 1700000000123, part, True, 5, None)
            got = bytearray()
            reader = threading.Thread(target=lambda: got.extend(_read_all(server, len(want))))
            reader.start()
            _pipe(ours).send([first, sliced], ["k", "big"])
            reader.join(20)
            assert bytes(got) == want
    finally:
        os.close(fd)


def test_a_file_that_ends_before_its_payload_drops_the_connection(tmp_path: Path) -> None:
    path = tmp_path / "dump.rdb"
    path.write_bytes(b"x" * 100)
    fd = os.open(path, os.O_RDONLY)
    ours, server = socket.socketpair()
    try:
        with ours, server:
            ours.settimeout(10)
            client: Any = _Client(ours)
            pipe: RawPipe[str] = RawPipe(client)
            packed = pack_restore(b"k", 0, FileSlice(fd, 50, 500, b"\x00", 10), False, None, None)
            with pytest.raises(redis.ConnectionError, match="ends at offset 100"):
                pipe.send([packed], ["k"])
            assert client.connection_pool.conn.disconnected
    finally:
        os.close(fd)


def _read_all(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    for _ in range(100_000):
        if len(buf) >= n:
            break
        data = sock.recv(1 << 20)
        if not data:
            break
        buf += data
    return bytes(buf)
