"""Which Redis or Valkey a local ``redis-server`` binary is.

Why a module of its own: ``restore --to-dir --redis-server PATH`` refuses a
backup that the server which will load DIR cannot read, so it asks the
binary (``--version``) which flavour and version it is. (``restore
--to-redis`` no longer starts a local server: it reads keys straight from
the archive, :mod:`backupctl.redis.rdb_keys`.)
"""

from __future__ import annotations

import subprocess

from backupctl.core.compat import parse_server_version

__all__ = ["server_version"]


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
