"""The Redis side's node protocol (backupctl.redis: address, connection,
info, bgsave, replication, rdb, rdb_tool, cluster) against real redis-server
processes (and a few fakes).

Servers come from the ``redis_factory`` fixture (tests/support/redis_servers.py);
everything binds 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import redis

from backupctl.redis import replication
from backupctl.redis.address import ConnectionSpec, parse_redis_url
from backupctl.redis.bgsave import bgsave, wait_aof_rewrite_idle
from backupctl.redis.cluster import _shards_from_cluster_nodes, cluster_shards
from backupctl.redis.connection import connect
from backupctl.redis.errors import RedisNodeError
from backupctl.redis.info import node_info
from backupctl.redis.rdb import (
    Crc64,
    crc64_redis,
    rdb_trailer_check,
    rdb_trailer_ok,
    rdb_version_from_header,
)
from backupctl.redis.rdb_tool import RdbStreamChecker, check_rdb, count_rdb_keys
from backupctl.redis.replication import replication_rdb

from support.redis_servers import RedisFactory, RedisServer, free_port, populate, wait_for

HAVE_CHECK_RDB = shutil.which("redis-check-rdb") is not None
needs_check_rdb = pytest.mark.skipif(not HAVE_CHECK_RDB, reason="redis-check-rdb not installed")


def load_rdb(redis_factory: RedisFactory, rdb: Path) -> RedisServer:
    """A fresh server that loaded ``rdb`` at start."""
    server = redis_factory()
    server.stop()
    shutil.copyfile(rdb, server.dir / "dump.rdb")
    server.start()
    return server


def saves(server: RedisServer) -> int:
    return int(server.info("persistence")["rdb_saves"])


# --------------------------------------------------------------------------
# URL parsing and credentials
# --------------------------------------------------------------------------


def test_parse_url_fields() -> None:
    spec = parse_redis_url("redis://db.example:6380/2", env={})
    assert (spec.host, spec.port, spec.db, spec.tls) == ("db.example", 6380, 2, False)
    assert spec.username is None and spec.password is None
    assert spec.display == "db.example:6380"
    assert parse_redis_url("redis://h", env={}).port == 6379

    tls = parse_redis_url("rediss://h:7000?ssl_cert_reqs=none&db=3", env={})
    assert tls.tls and tls.tls_insecure and tls.db == 3
    ca = parse_redis_url("rediss://h:7000/0?ssl_ca_certs=/etc/ca.pem", env={})
    assert ca.tls_ca_certs == "/etc/ca.pem" and not ca.tls_insecure
    v6 = parse_redis_url("redis://[::1]:7001", env={})
    assert v6.host == "::1" and v6.display == "[::1]:7001"


def test_password_precedence(tmp_path: Path) -> None:
    pw_file = tmp_path / "pw"
    pw_file.write_text("from-file\n")
    env = {"REDIS_PASSWORD": "from-env", "REDIS_USERNAME": "envuser"}
    url = "redis://urluser:from%40url@h:1"
    both: dict[str, Any] = {"password_file": str(pw_file), "env": env}
    assert parse_redis_url(url, password="explicit", **both).password == "explicit"
    assert parse_redis_url(url, **both).password == "from-file"  # newline stripped
    assert parse_redis_url(url, env=env).password == "from@url"  # percent-decoded
    assert parse_redis_url("redis://h:1", env=env).password == "from-env"
    assert parse_redis_url("redis://h:1", env={}).password is None
    # username: explicit > URL > env
    assert parse_redis_url(url, env=env).username == "urluser"
    assert parse_redis_url(url, env=env, username="cli").username == "cli"
    assert parse_redis_url("redis://h:1", env=env).username == "envuser"
    # a CRLF-terminated file
    pw_file.write_bytes(b"crlf\r\n")
    assert parse_redis_url("redis://h", password_file=str(pw_file), env={}).password == "crlf"


def test_password_file_errors(tmp_path: Path) -> None:
    with pytest.raises(RedisNodeError, match="cannot read password file"):
        parse_redis_url("redis://h", password_file=str(tmp_path / "missing"), env={})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(RedisNodeError, match="is empty"):
        parse_redis_url("redis://h", password_file=str(tmp_path / "empty"), env={})


@pytest.mark.parametrize(
    "url",
    [
        "http://h:1",
        "localhost:6379",
        "redis://",
        "redis://:hunter2@h:99999",
        "redis://:hunter2@h:port",
        "redis://h/abc",
        "redis://h?bogus=1",
        "redis://h?ssl_cert_reqs=none",
        "rediss://h?ssl_cert_reqs=maybe",
    ],
)
def test_malformed_urls(url: str) -> None:
    with pytest.raises(RedisNodeError) as err:
        parse_redis_url(url, env={})
    msg = str(err.value)
    assert "redis://[user:pass@]host:port" in msg
    assert "hunter2" not in msg and "\n" not in msg


def test_password_never_in_repr_or_str() -> None:
    spec = parse_redis_url("rediss://alice:hunter2@h:1", env={})
    assert spec.password == "hunter2"
    for text in (repr(spec), str(spec), spec.display, f"{spec}"):
        assert "hunter2" not in text
    assert "alice" in repr(spec)


# --------------------------------------------------------------------------
# One-line errors
# --------------------------------------------------------------------------


def test_wrong_password_and_noauth(redis_factory: RedisFactory) -> None:
    server = redis_factory(password="s3cret-pw")
    where = f"127.0.0.1:{server.port}"
    bad = parse_redis_url(f"redis://127.0.0.1:{server.port}", password="wrong-pw", env={})
    with pytest.raises(RedisNodeError) as err:
        connect(bad)
    assert str(err.value) == (
        f"Redis at {where} rejected the password: "
        "check the password in the URL (redis://[user]:PASSWORD@host:port), --password-file "
        "or REDIS_PASSWORD"
    )
    assert err.value.reason == "auth" and "wrong-pw" not in str(err.value)

    none = parse_redis_url(f"redis://127.0.0.1:{server.port}", env={})
    with pytest.raises(RedisNodeError) as err:
        connect(none)
    assert str(err.value) == (
        f"Redis at {where} requires a password: check the password in the URL "
        "(redis://[user]:PASSWORD@host:port), --password-file or REDIS_PASSWORD"
    )
    assert err.value.reason == "noauth"

    good = parse_redis_url(server.url, env={})
    assert connect(good).ping()

    # the raw replication handshake maps the same way
    with pytest.raises(RedisNodeError, match="rejected the password"), replication_rdb(bad):
        pass
    with pytest.raises(RedisNodeError, match="requires a password"), replication_rdb(none):
        pass


def test_unreachable() -> None:
    port = free_port()  # nothing listens there
    spec = ConnectionSpec(host="127.0.0.1", port=port)
    with pytest.raises(RedisNodeError) as err:
        connect(spec, timeout=2)
    assert str(err.value) == (
        f"cannot connect to Redis at 127.0.0.1:{port}: connection refused"
        " — is the address right and the server up?"
    )
    assert err.value.reason == "unreachable"
    with pytest.raises(RedisNodeError, match="connection refused"), replication_rdb(spec):
        pass


@contextmanager
def fake_server(handler: Callable[[socket.socket], None]) -> Iterator[int]:
    """A one-connection-at-a-time TCP server on 127.0.0.1 running ``handler``."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(10)
                with suppress(OSError):
                    handler(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def test_not_a_redis_server() -> None:
    def http(conn: socket.socket) -> None:
        conn.recv(1024)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        time.sleep(0.2)

    with fake_server(http) as port:
        spec = ConnectionSpec(host="127.0.0.1", port=port)
        with pytest.raises(RedisNodeError) as err:
            connect(spec, timeout=2)
        assert "did not answer like a Redis server" in str(err.value)
        assert err.value.reason == "protocol"
        with (
            pytest.raises(RedisNodeError, match="did not answer like a Redis server"),
            replication_rdb(spec, connect_timeout=2),
        ):
            pass


def test_timeout() -> None:
    # A listener that never accepts: the TCP connect succeeds (backlog), PING never answers.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        port = listener.getsockname()[1]
        spec = ConnectionSpec(host="127.0.0.1", port=port)
        started = time.monotonic()
        with pytest.raises(RedisNodeError) as err:
            connect(spec, timeout=0.3)
        assert time.monotonic() - started < 5
        assert str(err.value).startswith(f"Redis at 127.0.0.1:{port} did not answer within 0.3 s")
        assert err.value.reason == "timeout"
    finally:
        listener.close()


def test_tls(redis_factory: RedisFactory, tmp_path: Path) -> None:
    server = redis_factory(tls=True, password="tls-pw")
    populate(server.client(), 100)
    spec = parse_redis_url(server.url, env={})
    assert spec.tls and spec.tls_ca_certs
    assert connect(spec).ping()
    insecure = parse_redis_url(
        f"rediss://:tls-pw@127.0.0.1:{server.port}?ssl_cert_reqs=none", env={}
    )
    assert connect(insecure).ping()

    # no CA given: the self-signed certificate does not verify
    unverified = parse_redis_url(f"rediss://:tls-pw@127.0.0.1:{server.port}", env={})
    with pytest.raises(RedisNodeError) as err:
        connect(unverified, timeout=5)
    assert err.value.reason == "tls" and "TLS handshake" in str(err.value)
    assert "tls-pw" not in str(err.value)
    with pytest.raises(RedisNodeError, match="TLS handshake"), replication_rdb(unverified):
        pass

    # plain text against the TLS port
    plain = parse_redis_url(f"redis://:tls-pw@127.0.0.1:{server.port}", env={})
    with pytest.raises(RedisNodeError) as err:
        connect(plain, timeout=2)
    assert "rediss://" in str(err.value) or "did not answer" in str(err.value)

    # the replication stream over TLS
    with replication_rdb(spec) as rdb:
        out = tmp_path / "dump.rdb"
        with open(out, "wb") as fh:
            shutil.copyfileobj(rdb.stream, fh)
    assert rdb_trailer_ok(out)
    assert load_rdb(redis_factory, out).digest() == server.digest()


def test_tls_to_plain_port(redis_factory: RedisFactory) -> None:
    server = redis_factory()
    spec = parse_redis_url(f"rediss://127.0.0.1:{server.port}?ssl_cert_reqs=none", env={})
    with pytest.raises(RedisNodeError) as err:
        connect(spec, timeout=0.5)
    assert err.value.reason == "tls"
    assert "is TLS enabled on that port" in str(err.value)


# --------------------------------------------------------------------------
# node_info
# --------------------------------------------------------------------------


def test_node_info(redis_factory: RedisFactory) -> None:
    server = redis_factory(appendonly=True)
    client = connect(parse_redis_url(server.url, env={}))
    written = populate(client, 500)
    info = node_info(client)
    assert info.redis_version.startswith("7.") and info.major_version == 7
    assert info.role == "master" and len(info.run_id) == 40
    assert Path(info.dir or "") == server.dir and info.dbfilename == "dump.rdb"
    assert info.appendonly and info.appenddirname == "appendonlydir"
    assert info.keys == written == server.dbsize()
    assert not info.cluster_enabled and info.missing == ()
    assert info.rdb_path == str(server.dir / "dump.rdb")
    assert info.aof_dir_path == str(server.dir / "appendonlydir")


def test_node_info_without_config(redis_factory: RedisFactory) -> None:
    server = redis_factory(appendonly=True, extra_args=["--rename-command", "CONFIG", ""])
    info = node_info(server.client())
    assert info.dir is None and info.rdb_path is None
    assert info.dbfilename == "dump.rdb" and info.appendonly  # from INFO aof_enabled
    assert any(m.startswith("dir: CONFIG is renamed or disabled") for m in info.missing)


def test_replica(redis_factory: RedisFactory, tmp_path: Path) -> None:
    master = redis_factory(password="pw")
    populate(master.client(), 300)
    replica = redis_factory(password="pw", extra_args=["--masterauth", "pw"])
    replica.client().replicaof("127.0.0.1", master.port)
    wait_for(
        lambda: (
            replica.info("replication").get("master_link_status") == "up"
            and replica.dbsize() == master.dbsize()
        ),
        what="the replica to sync",
    )
    info = node_info(replica.client())
    assert info.role == "replica" and info.keys == master.dbsize()
    # a replica serves the replication stream too (chained replication)
    out = tmp_path / "from-replica.rdb"
    with replication_rdb(parse_redis_url(replica.url, env={})) as rdb, open(out, "wb") as fh:
        shutil.copyfileobj(rdb.stream, fh)
    assert load_rdb(redis_factory, out).digest() == master.digest()


# --------------------------------------------------------------------------
# bgsave
# --------------------------------------------------------------------------


@needs_check_rdb
@pytest.mark.serial  # two BGSAVEs within 1.5 s: not while another worker loads the machine
def test_bgsave_twice_within_a_second(redis_factory: RedisFactory) -> None:
    server = redis_factory()
    client = connect(parse_redis_url(server.url, env={}))
    n = populate(client, 200)
    rdb = server.dir / "dump.rdb"
    started = time.monotonic()
    before = saves(server)
    first = bgsave(client)
    assert count_rdb_keys(rdb) == n
    client.set("written-between", "1")
    second = bgsave(client)
    assert count_rdb_keys(rdb) == n + 1  # the second snapshot is a new one
    assert saves(server) == before + 2
    assert time.monotonic() - started < 1.5
    assert first.tzinfo is not None and second >= first
    assert abs(second.timestamp() - time.time()) < 5


@needs_check_rdb
def test_bgsave_while_another_runs(redis_factory: RedisFactory) -> None:
    server = redis_factory()
    client = server.client()
    n = populate(client, 1000)
    client.config_set("rdb-key-save-delay", 1000)  # 1 ms per key: ~1 s save
    assert client.bgsave()
    client.config_set("rdb-key-save-delay", 0)  # our own save is fast
    client.set("acked-after-first-save-started", "1")
    before = saves(server)
    assert server.info("persistence")["rdb_bgsave_in_progress"] == 1

    bgsave(connect(parse_redis_url(server.url, env={})))
    assert saves(server) == before + 1  # ours, after the running one
    assert count_rdb_keys(server.dir / "dump.rdb") == n + 1


@needs_check_rdb
def test_bgsave_during_aof_rewrite(redis_factory: RedisFactory) -> None:
    server = redis_factory(appendonly=True)
    client = server.client()
    n = populate(client, 1000)
    wait_aof_rewrite_idle(client, timeout=10)
    client.config_set("rdb-key-save-delay", 500)  # the rewrite's RDB preamble: ~0.5 s
    client.bgrewriteaof()
    client.config_set("rdb-key-save-delay", 0)
    client.set("acked-during-rewrite", "1")
    assert server.info("persistence")["aof_rewrite_in_progress"] == 1

    bgsave(client, timeout=30)
    assert count_rdb_keys(server.dir / "dump.rdb") == n + 1
    wait_aof_rewrite_idle(client, timeout=10)
    assert server.info("persistence")["aof_rewrite_in_progress"] == 0


def test_bgsave_failure(redis_factory: RedisFactory) -> None:
    server = redis_factory()
    client = server.client()
    populate(client, 10)
    # The child writes temp-<pid>.rdb and renames it over dump.rdb; a non-empty
    # directory of that name makes the rename fail (EISDIR), even as root.
    (server.dir / "dump.rdb").mkdir()
    (server.dir / "dump.rdb" / "keep").write_text("x")
    with pytest.raises(RedisNodeError) as err:
        bgsave(client, timeout=20)
    msg = str(err.value)
    assert "rdb_last_bgsave_status:err" in msg and "Redis log" in msg
    assert str(server.dir) in msg and err.value.reason == "bgsave"


def test_bgsave_timeout(redis_factory: RedisFactory) -> None:
    server = redis_factory()
    client = server.client()
    populate(client, 1000)
    client.config_set("rdb-key-save-delay", 10_000)  # 10 s
    started = time.monotonic()
    with pytest.raises(RedisNodeError, match=r"did not finish within 0\.3 s") as err:
        bgsave(client, timeout=0.3)
    assert err.value.reason == "timeout" and time.monotonic() - started < 3


class NoRdbSaves(redis.Redis):
    """A client that hides ``rdb_saves`` from INFO, like Redis < 7.0."""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        result = super().execute_command(*args, **options)
        if args and str(args[0]).upper() == "INFO" and isinstance(result, dict):
            result.pop("rdb_saves", None)
        return result


@needs_check_rdb
def test_bgsave_lastsave_fallback(redis_factory: RedisFactory) -> None:
    server = redis_factory()
    client = NoRdbSaves(host="127.0.0.1", port=server.port, decode_responses=True)
    n = populate(client, 100)
    first = bgsave(client, timeout=10)
    client.set("between", "1")
    second = bgsave(client, timeout=10)  # must wait for LASTSAVE's next second
    assert second > first
    assert count_rdb_keys(server.dir / "dump.rdb") == n + 1


def test_bgsave_lastsave_fallback_failure(redis_factory: RedisFactory) -> None:
    server = redis_factory()
    client = NoRdbSaves(host="127.0.0.1", port=server.port, decode_responses=True)
    (server.dir / "dump.rdb").mkdir()
    (server.dir / "dump.rdb" / "keep").write_text("x")
    with pytest.raises(RedisNodeError, match="rdb_last_bgsave_status:err"):
        bgsave(client, timeout=10)


# --------------------------------------------------------------------------
# replication_rdb
# --------------------------------------------------------------------------


@pytest.mark.parametrize(("password", "diskless"), [(None, True), ("repl-pw", True), (None, False)])
def test_replication_rdb_matches_dataset(
    redis_factory: RedisFactory, tmp_path: Path, password: str | None, diskless: bool
) -> None:
    server = redis_factory(password=password)
    populate(server.client(), 2000)
    spec = parse_redis_url(server.url, env={})
    out = tmp_path / "repl.rdb"
    forks: list[int] = []
    with (
        replication_rdb(spec, diskless=diskless, on_fork=lambda: forks.append(1)) as rdb,
        open(out, "wb") as fh,
    ):
        assert forks == [1]  # called once the child exists, before any RDB byte
        assert rdb.replid and rdb.offset is not None
        shutil.copyfileobj(rdb.stream, fh)
        assert rdb.stream.read(1) == b""  # EOF after the last RDB byte
        assert rdb.rdb_version == 10
    assert rdb.diskless is diskless
    assert out.stat().st_size == rdb.received == (rdb.size or rdb.received)
    assert rdb_trailer_ok(out)
    if diskless:  # streamed from the child: nothing written on the node's disk
        assert not (server.dir / "dump.rdb").exists()
    else:  # disk-based sync: the master wrote the same snapshot as its dump.rdb
        assert (server.dir / "dump.rdb").read_bytes() == out.read_bytes()
    assert load_rdb(redis_factory, out).digest() == server.digest()


def test_replication_rdb_streams(redis_factory: RedisFactory) -> None:
    server = redis_factory()
    server.client().execute_command("DEBUG", "POPULATE", 200_000, "big", 64)
    spec = parse_redis_url(server.url, env={})
    chunks = 0
    total = 0
    tracemalloc.start()
    try:
        with replication_rdb(spec) as rdb:
            for _ in range(100_000):
                chunk = rdb.stream.read(64 * 1024)
                if not chunk:
                    break
                chunks += 1
                total += len(chunk)
            size = rdb.received
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == size > 6 * 1024 * 1024
    assert chunks > 50
    # bounded: the receiving thread's buffers (RECEIVE_CHUNKS of RECEIVE_CHUNK) plus 2 MiB
    ahead = replication.RECEIVE_CHUNK * replication.RECEIVE_CHUNKS
    assert peak < ahead + 2 * 1024 * 1024, f"peak {peak} bytes while streaming {size}"


def test_replication_rdb_timeout(redis_factory: RedisFactory) -> None:
    server = redis_factory()
    client = server.client()
    populate(client, 1000)
    client.config_set("rdb-key-save-delay", 10_000)
    spec = parse_redis_url(server.url, env={})
    started = time.monotonic()
    with (
        pytest.raises(RedisNodeError, match=r"did not start sending the RDB within 0\.5 s"),
        replication_rdb(spec, timeout=0.5),
    ):
        pass
    assert time.monotonic() - started < 5


def fake_master(
    payload: bytes, header: bytes | None = None, trailer: bytes = b""
) -> Callable[[socket.socket], None]:
    """A master that answers the handshake, sends keepalives, then ``payload``
    (and ``trailer``, e.g. a diskless end mark)."""

    def handler(conn: socket.socket) -> None:
        buf = b""
        for _ in range(5):  # PING, REPLCONF capa eof, REPLCONF rdb-only, PSYNC
            while buf.count(b"\r\n") < 1 or not _full_command(buf):
                data = conn.recv(4096)
                if not data:
                    return
                buf += data
            cmd, buf = _split_command(buf)
            if cmd[0].upper() == b"PING":
                conn.sendall(b"+PONG\r\n")
            elif cmd[0].upper() == b"REPLCONF":
                conn.sendall(b"+OK\r\n")
            elif cmd[0].upper() == b"PSYNC":
                conn.sendall(b"+FULLRESYNC " + b"a" * 40 + b" 1234\r\n\n\n")
                time.sleep(0.05)
                conn.sendall(b"\n")
                conn.sendall(header if header is not None else b"$%d\r\n" % len(payload))
                for i in range(0, len(payload), 7777):  # uneven pieces, like a real socket
                    conn.sendall(payload[i : i + 7777])
                conn.sendall(trailer)
                time.sleep(0.2)
                return

    return handler


def _full_command(buf: bytes) -> bool:
    try:
        _split_command(buf)
    except (IndexError, ValueError):
        return False
    return True


def _split_command(buf: bytes) -> tuple[list[bytes], bytes]:
    lines = buf.split(b"\r\n")
    count = int(lines[0][1:])
    args = [lines[2 + 2 * i] for i in range(count)]
    consumed = len(b"\r\n".join(lines[: 1 + 2 * count])) + 2
    if consumed > len(buf):
        raise ValueError("incomplete")
    return args, buf[consumed:]


def test_replication_rdb_against_fake_master(redis_factory: RedisFactory, tmp_path: Path) -> None:
    server = redis_factory()
    populate(server.client(), 300)
    bgsave(server.client())
    good = (server.dir / "dump.rdb").read_bytes()

    with fake_server(fake_master(good)) as port:
        spec = ConnectionSpec(host="127.0.0.1", port=port)
        with replication_rdb(spec) as rdb:
            assert (rdb.replid, rdb.offset) == ("a" * 40, 1234)
            assert rdb.stream.read() == good

    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x01
    with fake_server(fake_master(bytes(bad))) as port:
        spec = ConnectionSpec(host="127.0.0.1", port=port)
        with replication_rdb(spec, verify=True) as rdb:
            assert rdb.verified
            with pytest.raises(RedisNodeError, match="damaged: CRC64 mismatch"):
                rdb.stream.read()

    mark = b"0123456789abcdef0123456789abcdef01234567"
    eof_header = b"$EOF:" + mark + b"\r\n"
    with fake_server(fake_master(good, header=eof_header, trailer=mark)) as port:
        spec = ConnectionSpec(host="127.0.0.1", port=port)
        with replication_rdb(spec, verify=True) as rdb:
            assert rdb.diskless and rdb.size is None
            assert rdb.stream.read() == good  # the end mark is not part of the RDB
            assert rdb.received == len(good) and rdb.rdb_version == rdb_version_from_header(
                good[:9]
            )

    with fake_server(fake_master(good, header=eof_header, trailer=mark)) as port:
        spec = ConnectionSpec(host="127.0.0.1", port=port)
        with replication_rdb(spec, verify=True) as rdb:  # tiny reads on the raw stream
            raw = rdb.stream.raw  # type: ignore[attr-defined]
            got = bytearray()
            for _ in range(len(good)):
                piece = bytearray(7)
                n = raw.readinto(piece)
                if not n:
                    break
                got += piece[:n]
            assert bytes(got) == good

    with fake_server(fake_master(bytes(bad), header=eof_header, trailer=mark)) as port:
        spec = ConnectionSpec(host="127.0.0.1", port=port)
        with (
            replication_rdb(spec, verify=True) as rdb,
            pytest.raises(RedisNodeError, match="damaged: CRC64 mismatch"),
        ):
            rdb.stream.read()

    with fake_server(fake_master(good[:5000], header=eof_header)) as port:  # no end mark
        spec = ConnectionSpec(host="127.0.0.1", port=port)
        with (
            replication_rdb(spec, io_timeout=5) as rdb,
            pytest.raises(RedisNodeError, match="closed the replication connection"),
        ):
            rdb.stream.read()

    with fake_server(fake_master(b"", header=b"$EOF:short\r\n")) as port:
        spec = ConnectionSpec(host="127.0.0.1", port=port)
        with pytest.raises(RedisNodeError, match="malformed end mark"), replication_rdb(spec):
            pass

    with fake_server(fake_master(good[:100], header=b"$%d\r\n" % len(good))) as port:
        spec = ConnectionSpec(host="127.0.0.1", port=port)
        with (
            replication_rdb(spec, io_timeout=5) as rdb,
            pytest.raises(RedisNodeError, match=f"after 100 of {len(good)} bytes"),
        ):
            rdb.stream.read()


# --------------------------------------------------------------------------
# RDB checks
# --------------------------------------------------------------------------


def test_crc64_known_value(monkeypatch: pytest.MonkeyPatch) -> None:
    assert crc64_redis(b"123456789") == 0xE9C6D914C4B8D9CA
    data = os.urandom(10_000)
    whole = crc64_redis(data)
    crc = Crc64()
    for i in range(0, len(data), 777):
        crc.update(memoryview(data)[i : i + 777])
    assert crc.value == whole
    monkeypatch.setattr("backupctl.redis.rdb._ANYCRC", None)  # the pure-Python path agrees
    assert crc64_redis(b"123456789") == 0xE9C6D914C4B8D9CA
    assert crc64_redis(data) == whole


def test_rdb_version_from_header() -> None:
    assert rdb_version_from_header(b"REDIS0010") == 10
    assert rdb_version_from_header(b"REDIS0009\xfa") == 9
    for bad in (b"REDIS", b"RUBIS0010", b"REDIS00x0", b""):
        with pytest.raises(ValueError):
            rdb_version_from_header(bad)


def test_rdb_trailer(redis_factory: RedisFactory, tmp_path: Path) -> None:
    server = redis_factory()
    populate(server.client(), 500)
    bgsave(server.client())
    good = (server.dir / "dump.rdb").read_bytes()
    path = tmp_path / "x.rdb"
    path.write_bytes(good)
    check = rdb_trailer_check(path)
    assert check.ok and check.version == 10 and check.message == "CRC64 OK"
    assert rdb_trailer_check(path, chunk_size=7).ok  # chunk borders don't matter

    for pos in (9, len(good) // 2, len(good) - 10, len(good) - 1):
        flipped = bytearray(good)
        flipped[pos] ^= 0x40
        path.write_bytes(bytes(flipped))
        assert not rdb_trailer_ok(path), pos
    path.write_bytes(good[:-3])
    assert not rdb_trailer_ok(path)
    path.write_bytes(b"GARBAGE" * 10)
    assert "not an RDB file" in rdb_trailer_check(path).message


def test_rdb_trailer_checksum_disabled(redis_factory: RedisFactory) -> None:
    server = redis_factory(extra_args=["--rdbchecksum", "no"])
    populate(server.client(), 10)
    bgsave(server.client())
    check = rdb_trailer_check(server.dir / "dump.rdb")
    assert check.ok and "checksum disabled" in check.message


@needs_check_rdb
def test_count_and_check_rdb(
    redis_factory: RedisFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = redis_factory()
    n = populate(server.client(), 3000)
    bgsave(server.client())
    rdb = server.dir / "dump.rdb"
    assert count_rdb_keys(rdb) == n == server.dbsize()
    ok, tail = check_rdb(rdb)
    assert ok and f"{n} keys read" in tail and "\n" not in tail

    broken = tmp_path / "broken.rdb"
    data = bytearray(rdb.read_bytes())
    data[len(data) // 2] ^= 0xFF
    broken.write_bytes(bytes(data))
    ok, tail = check_rdb(broken)
    assert not ok and tail
    with pytest.raises(RedisNodeError, match="corrupt"):
        count_rdb_keys(broken)

    monkeypatch.setattr("backupctl.redis.rdb_tool._check_rdb_tool", lambda: None)
    assert count_rdb_keys(rdb) is None
    ok, tail = check_rdb(rdb)
    assert ok and "not on PATH" in tail
    assert not check_rdb(broken)[0]


@needs_check_rdb
def test_rdb_stream_checker(redis_factory: RedisFactory) -> None:
    server = redis_factory()
    n = populate(server.client(), 20_000)
    bgsave(server.client())
    data = (server.dir / "dump.rdb").read_bytes()
    assert len(data) > 256 * 1024  # more than a pipe buffer

    with RdbStreamChecker(timeout=30) as checker:
        for i in range(0, len(data), 10_000):
            checker.write(data[i : i + 10_000])
        assert checker.close() == (True, n)
    assert "RDB looks OK" in checker.summary

    bad = bytearray(data)
    bad[len(bad) // 3] ^= 0xFF
    with RdbStreamChecker(timeout=30) as checker:
        for i in range(0, len(bad), 10_000):
            checker.write(bad[i : i + 10_000])
        ok, _ = checker.close()
    assert not ok

    with RdbStreamChecker(timeout=30) as checker:
        checker.write(data[: len(data) // 2])  # truncated
    assert checker.close()[0] is False


# --------------------------------------------------------------------------
# cluster topology
# --------------------------------------------------------------------------


def test_cluster_shards(redis_factory: RedisFactory) -> None:
    cluster_args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
    a, b, c = (redis_factory(extra_args=cluster_args) for _ in range(3))
    ca, cb, cc = a.client(), b.client(), c.client()
    ca.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 8191)
    cb.execute_command("CLUSTER", "ADDSLOTSRANGE", 8192, 16383)
    ca.execute_command("CLUSTER", "MEET", "127.0.0.1", b.port)
    ca.execute_command("CLUSTER", "MEET", "127.0.0.1", c.port)
    a_id = ca.execute_command("CLUSTER", "MYID")
    wait_for(lambda: a_id in cc.execute_command("CLUSTER", "NODES"), what="C to know A")
    cc.execute_command("CLUSTER", "REPLICATE", a_id)

    def settled() -> bool:
        shards = cluster_shards(ca)
        return (
            len(shards) == 2
            and [len(s.nodes) for s in shards] == [2, 1]
            and all(n.host == "127.0.0.1" for s in shards for n in s.nodes)
        )

    wait_for(settled, timeout=15, what="the cluster to settle")
    shards = cluster_shards(ca)
    first, second = shards
    assert first.slots == ((0, 8191),) and second.slots == ((8192, 16383),)
    assert first.master is not None and first.master.port == a.port
    assert first.master.node_id == a_id
    assert [r.port for r in first.replicas] == [c.port]
    assert first.replicas[0].role == "replica"
    assert second.master is not None and second.master.port == b.port
    assert second.replicas == ()

    # the CLUSTER NODES fallback (Redis < 7.0) sees the same topology
    fallback = _shards_from_cluster_nodes(ca.execute_command("CLUSTER", "NODES"))
    assert [(s.slots, [(n.node_id, n.port, n.role) for n in s.nodes]) for s in fallback] == [
        (s.slots, [(n.node_id, n.port, n.role) for n in s.nodes]) for s in shards
    ]


def test_cluster_shards_not_cluster(redis_factory: RedisFactory) -> None:
    server = redis_factory()
    with pytest.raises(RedisNodeError, match="not in cluster mode"):
        cluster_shards(server.client())


def test_cluster_nodes_parsing() -> None:
    text = (
        "07c3 127.0.0.1:30004@31004,host-d slave e7d1 0 1426238317239 4 connected\n"
        "67ed 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922\n"
        "292f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383\n"
        "6ec2 127.0.0.1:30005@31005 slave,fail 67ed 0 1426238316232 5 connected\n"
        "e7d1 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5459 5460"
        " [5460->-67ed]\n"
        "abcd :0@0 handshake - 0 0 0 connected\n"
    )
    shards = _shards_from_cluster_nodes(text)
    assert [s.slots for s in shards] == [
        ((0, 5459), (5460, 5460)),
        ((5461, 10922),),
        ((10923, 16383),),
    ]
    assert [n.node_id for n in shards[0].nodes] == ["e7d1", "07c3"]
    assert shards[1].replicas[0].health == "failed"
