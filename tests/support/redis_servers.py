"""Throwaway redis-server processes for tests (a pytest plugin).

Loaded from tests/conftest.py (``pytest_plugins = ["support.redis_servers", ...]``)::

    def test_x(redis_factory):
        server = redis_factory(appendonly=True, password="s3cret")
        populate(server.client(), 1000)
        assert server.dbsize() > 1000

Each server binds 127.0.0.1 on a free port, runs in the foreground as our
child (``--daemonize no``) with ``--save ''``, ``--enable-debug-command
local`` (DEBUG POPULATE / DEBUG DIGEST) and ``--repl-diskless-sync-delay 0``.
Every server a test started is stopped at teardown (SIGTERM, then SIGKILL).
``sentinel_factory`` starts ``redis-server --sentinel`` processes the same way.

``redis_factory(server="valkey-9.1")`` starts another server of the version
matrix (:mod:`support.server_versions`) with the same flags; the default is
Debian 12's Redis 7.0 on PATH, and tests using it are skipped when it is not
installed. A server asked for by name that is missing fails the test, naming
the bootstrap step that installs it.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest
import redis

from support.server_versions import DEFAULT, ServerVersion
from support.server_versions import server as server_version

REDIS_SERVER = shutil.which("redis-server")
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(*, cluster: bool = False) -> int:
    """A port nothing listens on now. ``cluster``: also port + 10000 (the bus),
    so the port is at most 55535."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not cluster:
            return port
        if port > 55535:
            port = 20000 + port % 35000
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port found")


@dataclass(frozen=True)
class TlsFiles:
    """A self-signed CA-less certificate for 127.0.0.1 (the cert is its own CA)."""

    cert: Path
    key: Path

    @property
    def ca(self) -> Path:
        return self.cert


def make_tls_files(folder: Path) -> TlsFiles:
    """Self-signed certificate for IP 127.0.0.1 made with the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed")
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "server.crt", folder / "server.key"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return TlsFiles(cert=cert, key=key)


@dataclass
class RedisServer:
    """One redis-server child process."""

    port: int
    dir: Path
    password: str | None
    args: list[str]
    log: Path
    tls: TlsFiles | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    server: ServerVersion = DEFAULT  # which server of the version matrix runs

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}?ssl_ca_certs={self.tls.ca}"
        return f"redis://{auth}127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> redis.Redis:
        opts: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "password": self.password,
            "decode_responses": True,
            "socket_timeout": 30,
        }
        if self.tls:
            opts.update(ssl=True, ssl_ca_certs=str(self.tls.ca))
        opts.update(kwargs)
        return redis.Redis(**opts)

    def digest(self) -> str:
        with self.client() as c:
            return str(c.execute_command("DEBUG", "DIGEST"))

    def dbsize(self) -> int:
        with self.client() as c:
            return int(c.dbsize())

    def info(self, section: str) -> dict[str, Any]:
        with self.client() as c:
            return dict(c.info(section))

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.server.id} on port {self.port} exited with {self.proc.returncode}: "
                    + self.log.read_text(errors="replace")[-600:]
                )
            try:
                with self.client(socket_timeout=1, socket_connect_timeout=1) as c:
                    if c.ping():
                        return
            except redis.BusyLoadingError as exc:
                last = exc
            except redis.ConnectionError as exc:
                last = exc
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.server.id} on port {self.port} did not answer PING: {last}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a bounded wait."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)

    def kill(self) -> None:
        """SIGKILL at once (a crash: nothing is flushed)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


class RedisFactory(Protocol):
    def __call__(
        self,
        *,
        appendonly: bool = False,
        password: str | None = None,
        dir: Path | str | None = None,
        extra_args: Sequence[str] = (),
        tls: bool = False,
        server: str | ServerVersion | None = None,
    ) -> RedisServer: ...


@pytest.fixture(scope="session")
def redis_tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("redis-tls"))


@pytest.fixture
def redis_factory(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[RedisFactory]:
    """Start throwaway redis-servers (``server=``: another of the version matrix);
    all are stopped when the test ends."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server not installed")
    servers: list[RedisServer] = []

    def factory(
        *,
        appendonly: bool = False,
        password: str | None = None,
        dir: Path | str | None = None,
        extra_args: Sequence[str] = (),
        tls: bool = False,
        server: str | ServerVersion | None = None,
    ) -> RedisServer:
        entry = server_version(server)
        if entry is DEFAULT:
            assert REDIS_SERVER is not None
            command = [REDIS_SERVER]
        else:
            missing = entry.missing()
            if missing is not None:
                pytest.fail(missing, pytrace=False)  # the matrix is the point: never a skip
            command = entry.server_argv()
        base = tmp_path_factory.mktemp("redis")
        data = Path(dir) if dir is not None else base / "data"
        data.mkdir(parents=True, exist_ok=True)
        tls_files = request.getfixturevalue("redis_tls_files") if tls else None
        last_error: Exception | None = None
        for _ in range(5):  # a free port can be taken by someone else before we bind it
            port = free_port(cluster="--cluster-enabled" in extra_args)
            args = [
                *command,
                "--bind", "127.0.0.1",
                "--dir", str(data),
                "--save", "",
                "--appendonly", "yes" if appendonly else "no",
                "--enable-debug-command", "local",
                "--repl-diskless-sync-delay", "0",
                "--daemonize", "no",
                "--logfile", "",
            ]  # fmt: skip
            if tls_files is not None:
                args += [
                    "--port", "0", "--tls-port", str(port),
                    "--tls-cert-file", str(tls_files.cert),
                    "--tls-key-file", str(tls_files.key),
                    "--tls-ca-cert-file", str(tls_files.ca),
                    "--tls-auth-clients", "no",
                ]  # fmt: skip
            else:
                args += ["--port", str(port)]
            if password is not None:
                args += ["--requirepass", password]
            args += list(extra_args)
            started = RedisServer(
                port=port,
                dir=data,
                password=password,
                args=args,
                log=base / "redis.log",
                tls=tls_files,
                server=entry,
            )
            servers.append(started)
            try:
                started.start()
                return started
            except RuntimeError as exc:
                last_error = exc
                if "Address already in use" not in str(exc):
                    raise
        raise RuntimeError(f"could not start {entry.id}: {last_error}")

    try:
        yield factory
    finally:
        for server in servers:
            server.stop()


class SentinelFactory(Protocol):
    def __call__(
        self,
        master_port: int,
        *,
        name: str = "mymaster",
        quorum: int = 2,
        password: str | None = None,
        extra_config: Sequence[str] = (),
    ) -> RedisServer: ...


@pytest.fixture
def sentinel_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelFactory]:
    """Start ``redis-server --sentinel`` processes monitoring ``name`` at
    127.0.0.1:``master_port`` (down after 1 s); all are stopped when the test ends.
    ``password``: the Sentinel's own ``requirepass``; ``extra_config``: more
    sentinel.conf lines (``sentinel auth-pass NAME PW`` for a master with a password)."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server not installed")
    servers: list[RedisServer] = []

    def factory(
        master_port: int,
        *,
        name: str = "mymaster",
        quorum: int = 2,
        password: str | None = None,
        extra_config: Sequence[str] = (),
    ) -> RedisServer:
        assert REDIS_SERVER is not None
        base = tmp_path_factory.mktemp("sentinel")
        last_error: Exception | None = None
        for _ in range(5):
            port = free_port()
            conf = base / "sentinel.conf"  # Sentinel rewrites it: one per process
            conf.write_text(
                "\n".join(
                    [
                        f"port {port}",
                        "bind 127.0.0.1",
                        f"dir {base}",
                        f"sentinel monitor {name} 127.0.0.1 {master_port} {quorum}",
                        *([f"requirepass {password}"] if password else []),
                        *extra_config,
                        f"sentinel down-after-milliseconds {name} 1000",
                        f"sentinel failover-timeout {name} 10000",
                    ]
                )
                + "\n"
            )
            server = RedisServer(
                port=port,
                dir=base,
                password=password,
                args=[REDIS_SERVER, str(conf), "--sentinel", "--daemonize", "no", "--logfile", ""],
                log=base / "sentinel.log",
            )
            servers.append(server)
            try:
                server.start()
                return server
            except RuntimeError as exc:
                last_error = exc
                if "Address already in use" not in str(exc):
                    raise
        raise RuntimeError(f"could not start a sentinel: {last_error}")

    try:
        yield factory
    finally:
        for server in servers:
            server.stop()


def populate(client: redis.Redis, n: int, *, prefix: str = "") -> int:
    """Write ``n`` strings (DEBUG POPULATE) plus a mix of other types.

    Adds max(1, n // 100) each of hashes, lists, sets, zsets, streams and
    strings with a TTL ten years out. Returns the number of keys written.
    """
    client.execute_command("DEBUG", "POPULATE", n, f"{prefix}key", 32)
    m = max(1, n // 100)
    ten_years = 10 * 365 * 24 * 3600
    pipe = client.pipeline(transaction=False)
    for i in range(m):
        pipe.hset(f"{prefix}hash:{i}", mapping={f"f{j}": f"v{i}-{j}" for j in range(5)})
        pipe.rpush(f"{prefix}list:{i}", *[f"item{j}" for j in range(5)])
        pipe.sadd(f"{prefix}set:{i}", *[f"m{j}" for j in range(5)])
        pipe.zadd(f"{prefix}zset:{i}", {f"z{j}": j * 1.5 for j in range(5)})
        pipe.xadd(f"{prefix}stream:{i}", {"field": f"value{i}"})
        pipe.set(f"{prefix}ttl:{i}", f"expires-{i}", ex=ten_years)
    pipe.execute()
    return n + 6 * m


def wait_for(cond: Any, *, timeout: float = 10.0, poll: float = 0.02, what: str = "") -> None:
    """Poll ``cond()`` until truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(poll)
    if not cond():
        raise AssertionError(f"timed out after {timeout} s waiting for {what or cond}")


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc)."""
    out: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    if not task_dir.exists():
        return out
    for task in task_dir.iterdir():
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


__all__ = [
    "RedisFactory",
    "RedisServer",
    "SentinelFactory",
    "TlsFiles",
    "child_pids",
    "free_port",
    "populate",
    "wait_for",
]
