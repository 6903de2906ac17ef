"""A throwaway local ``redis-server`` that reads one RDB of a backup, for
``restore --to-redis`` to copy from, key by key.

Why a module of its own: Redis itself is the only complete RDB parser, so a
backup is loaded into a private ``redis-server`` (a unix socket in a private
temp folder, no TCP port, ``--save ''``, ``--appendonly no``, active expiry
off so no key vanishes while it is scanned) and read back with SCAN, DUMP
and PTTL. Starting it, telling why it could not read the RDB, and always
stopping it -- also when we are killed -- is done here; what to copy where
is :mod:`backupctl.ops.restore_server`'s business.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import redis

from backupctl.core.compat import parse_server_version
from backupctl.redis.connection import as_text, exec_command
from backupctl.redis.load import Item, LoadError, select_db

__all__ = ["LocalDatabase", "LocalServer", "local_server", "server_version", "socket_parent"]

#: Longest unix socket path Linux accepts (sun_path is 108 bytes with the NUL).
_MAX_SOCKET_PATH = 100
_KEYSPACE_DB = re.compile(r"^db(\d+)$")
_LOG_TAIL = 3


class LocalServer:
    """The running local server, seen through a bytes client."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def keyspace(self) -> dict[int, int]:
        """db number -> keys, for the databases that hold any."""
        raw: Any = self._client.info("keyspace")
        out: dict[int, int] = {}
        for name, value in raw.items():
            m = _KEYSPACE_DB.match(name.decode() if isinstance(name, bytes) else str(name))
            if m and isinstance(value, dict) and int(value.get("keys", 0)):
                out[int(m.group(1))] = int(value["keys"])
        return out

    def libraries(self) -> dict[str, str]:
        """name -> code of the Redis Functions libraries it loaded."""
        try:
            raw: Any = exec_command(self._client, "FUNCTION", "LIST", "WITHCODE")
        except redis.ResponseError:
            return {}  # a local server older than 7.0 has no functions
        out: dict[str, str] = {}
        for entry in raw or []:
            if isinstance(entry, list):
                entry = dict(zip(entry[::2], entry[1::2], strict=False))
            fields = {as_text(k): v for k, v in entry.items()}
            out[as_text(fields.get("library_name", ""))] = as_text(fields.get("library_code", ""))
        return out

    def function_dump(self) -> bytes:
        """FUNCTION DUMP: every library, in the form FUNCTION RESTORE takes."""
        payload: bytes = exec_command(self._client, "FUNCTION", "DUMP")
        return payload

    @contextmanager
    def database(self, db: int) -> Iterator[LocalDatabase]:
        """Database ``db``, through its own connection (SELECT is per connection)."""
        client = select_db(self._client, db)
        try:
            yield LocalDatabase(client)
        finally:
            client.close()


class LocalDatabase:
    """One database of the local server: SCAN it, DUMP what it finds."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def scan(self, cursor: int, count: int) -> tuple[int, list[bytes]]:
        """One SCAN step: the next cursor (0 at the end) and the keys found."""
        cursor, found = self._client.scan(cursor, count=count)
        return cursor, [k if isinstance(k, bytes) else k.encode() for k in found]

    def dump(self, keys: list[bytes]) -> tuple[list[Item], int]:
        """DUMP + PTTL of ``keys``: the items still there, and their payload bytes."""
        read = self._client.pipeline(transaction=False)
        for key in keys:
            read.dump(key)
            read.pttl(key)
        values = read.execute()
        items: list[Item] = []
        size = 0
        for i, key in enumerate(keys):
            payload, pttl = values[2 * i], values[2 * i + 1]
            if payload is None or pttl == -2:
                continue  # expired since the server loaded it
            items.append((key, max(0, int(pttl)), payload))
            size += len(payload)
        return items, size


def socket_parent() -> Path:
    """Where a private folder for the unix socket gets a path short enough for one."""
    base = tempfile.gettempdir()
    if len(base) > _MAX_SOCKET_PATH - 40:
        base = "/tmp"
    return Path(base)


@contextmanager
def local_server(
    server_bin: str,
    rdb_path: Path,
    databases: int,
    timeout: float,
    socket_dir: Path | None = None,
) -> Iterator[LocalServer]:
    """``redis-server`` (the binary ``server_bin``) on ``rdb_path``, reachable
    only through a unix socket in ``socket_dir`` (a private folder the caller
    removes; default: one made and removed here); yields it once the RDB is
    loaded; always stopped. :class:`~backupctl.redis.load.LoadError` saying
    why when it cannot read the RDB."""
    own_dir = socket_dir is None
    sock_dir = socket_dir or Path(tempfile.mkdtemp(prefix="bkctl-", dir=socket_parent()))
    sock = str(sock_dir / "redis.sock")
    log = rdb_path.parent / "local-redis.log"
    args = [
        server_bin,
        "--port", "0",
        "--unixsocket", sock,
        "--unixsocketperm", "700",
        "--dir", str(rdb_path.parent),
        "--dbfilename", rdb_path.name,
        "--save", "",
        "--appendonly", "no",
        "--databases", str(databases),
        "--daemonize", "no",
        "--logfile", str(log),
        "--loglevel", "warning",
        "--enable-debug-command", "local",
        "--maxmemory", "0",
    ]  # fmt: skip
    setpriv = shutil.which("setpriv")
    if setpriv is not None:  # util-linux: the server goes when we do, even on SIGKILL
        args = [setpriv, "--pdeathsig", "TERM", "--", *args]
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C reaches us; we stop it ourselves
    )
    client = redis.Redis(unix_socket_path=sock, socket_timeout=60, decode_responses=False)
    try:
        _wait_loaded(client, proc, log, timeout)
        # No key may vanish while we SCAN it (a rehash could repeat keys).
        exec_command(client, "DEBUG", "SET-ACTIVE-EXPIRE", "0")
        yield LocalServer(client)
    finally:
        client.close()
        _stop(proc)
        if own_dir:
            shutil.rmtree(sock_dir, ignore_errors=True)


def _wait_loaded(
    client: redis.Redis, proc: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise LoadError(_why_local_failed(log))
        try:
            client.ping()
            return
        except (redis.ConnectionError, redis.BusyLoadingError):
            pass
        if time.monotonic() > deadline:
            raise LoadError(f"the local redis-server did not load the backup within {timeout:g} s")
        time.sleep(0.05)


def server_version(server_bin: str) -> tuple[str, str] | None:
    """(flavour, version) of the ``redis-server`` / ``valkey-server`` binary
    ``server_bin`` from its ``--version``; None when it does not say."""
    try:
        proc = subprocess.run(
            [server_bin, "--version"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_server_version(proc.stdout.decode("utf-8", "replace"))


def _why_local_failed(log: Path) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    lines = [ln.split(" # ", 1)[-1].strip() for ln in text.splitlines() if ln.strip()]
    tail = "; ".join(lines[-_LOG_TAIL:]) or "no log output"
    hint = ""
    if "RDB format version" in text:
        hint = " (the backup was written by a newer Redis: install a newer redis-server here)"
    return f"the local redis-server could not read the backup's RDB: {tail}{hint}"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)  # --save '': nothing is written on the way out
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
