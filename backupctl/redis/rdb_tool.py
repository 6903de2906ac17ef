"""``redis-check-rdb``: Redis' own RDB parser as a second opinion on a file
(``verify`` and every restore), or on a pipe.

Why a module of its own: backupctl's own reader
(:mod:`backupctl.redis.rdb_reader`) decides whether an RDB is valid; the
installed ``redis-check-rdb`` is asked as well only when it reads that
file's magic and version (:func:`second_opinion`: its ``--version`` against
the one table, :mod:`backupctl.core.compat`). An older tool (Debian 12's is
7.0.15, which reads up to RDB 10) would call every newer file corrupt; that
becomes one note instead. Running it is a subprocess with its own failure
modes (not installed, too slow, exits early on corrupt input); they are
handled here.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import re
import shutil
import subprocess
import tempfile
from contextlib import suppress
from typing import IO

from backupctl.core.compat import tool_reads
from backupctl.redis.errors import RedisNodeError
from backupctl.redis.rdb import rdb_trailer_check

__all__ = [
    "RdbStreamChecker",
    "check_rdb",
    "count_rdb_keys",
    "rdb_label",
    "second_opinion",
    "tool_version_output",
]

_KEYS_READ = re.compile(r"\[info\] (\d+) keys read")
log = logging.getLogger(__name__)
_NOTED: set[str] = set()  # notes already printed by this process


def _check_rdb_tool() -> str | None:
    return shutil.which("redis-check-rdb")


@functools.lru_cache(maxsize=8)
def tool_version_output(tool: str) -> str:
    """The first line of ``tool --version`` ("redis-check-rdb 7.0.15",
    "redis-check-rdb v=8.0.2 sha=..."); "" when it does not answer."""
    try:
        proc = subprocess.run(
            [tool, "--version"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = proc.stdout.decode("utf-8", "replace").strip().splitlines()
    return lines[0] if lines else ""


def rdb_label(magic: str, version: int) -> str:
    """``("REDIS", 12)`` -> "RDB 12"; ``("VALKEY", 80)`` -> "VALKEY080"."""
    return f"RDB {version}" if magic == "REDIS" else f"{magic}{version:03d}"


def second_opinion(magic: str, version: int, *, note: bool = True) -> bool:
    """Whether the installed ``redis-check-rdb`` should check this RDB too:
    installed and (per its ``--version`` and the compat table) reading that
    magic and version. When it is installed but cannot read it, one note on
    stderr per process (with ``note``) says the file was checked with
    backupctl's own reader instead; never "corrupt"."""
    tool = _check_rdb_tool()
    if tool is None:
        return False
    name, handles = tool_reads(tool_version_output(tool), magic, version)
    if handles:
        return True
    why = "does not read" if handles is False else "may not read"
    message = f"{name} {why} {rdb_label(magic, version)}; checked with backupctl's own reader"
    if note and message not in _NOTED:
        _NOTED.add(message)
        log.warning("note: %s", message)
    return False


def _tail(text: str, lines: int = 6) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())


def _parse_check_output(rc: int, out: str) -> tuple[bool, int | None]:
    match = _KEYS_READ.search(out)
    ok = rc == 0 and "RDB looks OK" in out
    return ok, int(match.group(1)) if match else None


def check_rdb(path: str | os.PathLike[str], *, timeout: float = 3600) -> tuple[bool, str]:
    """Run ``redis-check-rdb`` on ``path``: (ok, the tool's last lines).

    Without the tool on PATH, checks magic and CRC-64 trailer in Python and
    says so in the message.
    """
    tool = _check_rdb_tool()
    if tool is None:
        res = rdb_trailer_check(path)
        return res.ok, f"redis-check-rdb not on PATH; checked magic and CRC64 only: {res.message}"
    try:
        proc = subprocess.run(
            [tool, os.fspath(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, f"redis-check-rdb did not finish within {timeout:g} s"
    out = proc.stdout.decode("utf-8", "replace")
    ok, _ = _parse_check_output(proc.returncode, out)
    return ok, _tail(out)


def count_rdb_keys(path: str | os.PathLike[str], *, timeout: float = 3600) -> int | None:
    """Keys in the RDB per ``redis-check-rdb`` ("[info] N keys read").

    None when the tool is not installed. Counts every key in the file,
    including ones whose TTL had passed when it was written. Raises
    RedisNodeError when the tool finds the RDB corrupt.
    """
    tool = _check_rdb_tool()
    if tool is None:
        return None
    try:
        proc = subprocess.run(
            [tool, os.fspath(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RedisNodeError(
            f"redis-check-rdb did not finish within {timeout:g} s on {os.fspath(path)}",
            reason="timeout",
        ) from None
    out = proc.stdout.decode("utf-8", "replace")
    ok, keys = _parse_check_output(proc.returncode, out)
    if not ok or keys is None:
        raise RedisNodeError(
            f"redis-check-rdb found {os.fspath(path)} corrupt: {_tail(out)}", reason="rdb"
        )
    return keys


class RdbStreamChecker:
    """``redis-check-rdb`` fed through a pipe while the RDB streams past.

    redis-check-rdb 7.0 reads its input strictly sequentially, so
    ``redis-check-rdb /dev/stdin`` (or a FIFO) works: the RDB can be verified
    during the upload instead of reading it back afterwards::

        with RdbStreamChecker() as checker:
            for chunk in chunks:
                checker.write(chunk)
            ok, keys = checker.close()

    The tool's output goes to a temp file (no pipe to drain, no deadlock).
    If the tool exits early (corrupt data), further writes are dropped and
    ``close()`` reports the failure. Raises RedisNodeError on enter when the
    tool is not installed (check :meth:`available` first).
    """

    def __init__(self, *, timeout: float = 3600) -> None:
        self.timeout = timeout
        self.output = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None
        self._broken = False
        self._result: tuple[bool, int | None] | None = None

    @staticmethod
    def available() -> bool:
        return _check_rdb_tool() is not None

    def __enter__(self) -> RdbStreamChecker:
        tool = _check_rdb_tool()
        if tool is None:
            raise RedisNodeError("redis-check-rdb is not on PATH", reason="rdb")
        self._out = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            [tool, "/dev/stdin"],
            stdin=subprocess.PIPE,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        if self._proc.stdin is not None:
            # 1 MiB instead of 64 KiB: a write is one hand-over to the tool
            # rather than 16 (fewer context switches); the limit unprivileged
            # processes get by default. Best effort.
            with suppress(OSError, AttributeError):
                fcntl.fcntl(self._proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, 1024 * 1024)
        return self

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._proc is None or self._proc.stdin is None:
            raise ValueError("RdbStreamChecker is not open")
        if self._broken:
            return
        try:
            self._proc.stdin.write(data)
        except (BrokenPipeError, ValueError):
            self._broken = True  # the tool stopped reading: close() tells why

    def close(self) -> tuple[bool, int | None]:
        """Finish the check: (ok, keys read). Idempotent."""
        if self._result is not None:
            return self._result
        if self._proc is None or self._out is None:
            raise ValueError("RdbStreamChecker was never opened")
        if self._proc.stdin is not None:
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                self._broken = True
        try:
            rc = self._proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            rc = self._proc.wait(timeout=10)
        self._out.seek(0)
        self.output = self._out.read().decode("utf-8", "replace")
        self._out.close()
        ok, keys = _parse_check_output(rc, self.output)
        self._result = (ok and not self._broken, keys)
        return self._result

    @property
    def summary(self) -> str:
        """The tool's last lines (after close)."""
        return _tail(self.output)

    def __exit__(self, *exc: object) -> None:
        if self._result is None and self._proc is not None:
            if exc[0] is not None:
                self._proc.kill()
            try:
                self.close()
            except Exception:
                if exc[0] is None:
                    raise
