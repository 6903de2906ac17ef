"""What a node says about itself: INFO (parsed), CONFIG GET, and
:class:`NodeInfo`, the facts a backup or a restore decides on.

Why a module of its own: Redis renames or forbids CONFIG on many managed
services and old servers answer INFO without fields newer ones have
(``rdb_saves`` since 7.0). Reading around that -- a default and a note in
``NodeInfo.missing`` instead of a failure -- is done here once, for the
BGSAVE loop, the replication snapshot, the live checks and the loaders.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from backupctl.core.timing import Sleep
from backupctl.redis.connection import (
    as_text,
    call,
    client_spec,
    command_error,
    error_for,
    exec_command,
    reply_map,
)

__all__ = [
    "NodeInfo",
    "config_get",
    "config_value",
    "int_field",
    "node_info",
    "parse_info",
    "read_info",
    "server_flavour",
]


def read_info(
    client: redis.Redis, section: str | None = None, *, sleep: Sleep = time.sleep
) -> dict[str, Any]:
    """INFO (one section, or the default ones) as a dict; errors mapped, a
    dropped connection retried (see :func:`~backupctl.redis.connection.call`)."""
    args: tuple[str, ...] = ("INFO", section) if section else ("INFO",)
    raw = call(client, *args, sleep=sleep)
    if isinstance(raw, dict):
        return {as_text(k): v for k, v in raw.items()}
    return parse_info(as_text(raw))


def parse_info(text: str) -> dict[str, Any]:
    """Parse INFO text (used when a client returns it unparsed)."""
    out: dict[str, Any] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        if key.startswith("db") and "keys=" in value:
            out[key] = {
                k: int(v) if v.lstrip("-").isdigit() else v
                for k, _, v in (p.partition("=") for p in value.split(","))
            }
        else:
            out[key] = int(value) if value.lstrip("-").isdigit() else value
    return out


def int_field(info: Mapping[str, Any], key: str, default: int = 0) -> int:
    """``info[key]`` as an int; ``default`` when it is missing or not a number."""
    try:
        return int(info.get(key, default))
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True)
class NodeInfo:
    """What a backup needs to know about one node.

    ``dir``/``dbfilename``/``appenddirname`` come from CONFIG GET. When CONFIG
    is renamed or forbidden, ``dir`` is None (Redis reports it nowhere else),
    the file names are Redis' defaults, ``appendonly`` comes from INFO, and
    ``missing`` says what could not be read and why. ``appenddirname`` only
    means something on Redis >= 7.0 (older versions keep one AOF file).
    """

    redis_version: str
    role: str  # "master" | "replica"
    run_id: str
    dir: str | None
    dbfilename: str
    appendonly: bool
    appenddirname: str
    aof_rewrite_in_progress: bool
    rdb_bgsave_in_progress: bool
    keys: int
    cluster_enabled: bool
    tcp_port: int = 0
    rdb_saves: int | None = None  # Redis >= 7.0
    rdb_last_bgsave_status: str = "ok"
    missing: tuple[str, ...] = ()
    #: "redis" or "valkey" (INFO ``server_name:valkey`` / ``valkey_version``)
    flavour: str = "redis"
    #: the server's own version: ``valkey_version`` on Valkey (whose
    #: ``redis_version`` is a compatibility level, 7.2.4), else ``redis_version``
    server_version: str = ""

    @property
    def version(self) -> str:
        return self.server_version or self.redis_version

    @property
    def major_version(self) -> int:
        head = self.redis_version.split(".", 1)[0]
        return int(head) if head.isdigit() else 0

    @property
    def rdb_path(self) -> str | None:
        """Absolute path of the RDB file on the node, when dir is known."""
        if self.dir is None:
            return None
        return os.path.join(self.dir, self.dbfilename)

    @property
    def aof_dir_path(self) -> str | None:
        """Absolute path of the AOF directory (Redis >= 7.0), when known."""
        if self.dir is None:
            return None
        return os.path.join(self.dir, self.appenddirname)


def config_get(client: redis.Redis, name: str) -> tuple[str | None, str | None]:
    """(value, None) or (None, why it could not be read)."""
    try:
        raw = exec_command(client, "CONFIG", "GET", name)
    except redis.ResponseError as exc:
        msg = as_text(exc)
        if "unknown command" in msg.lower():
            return None, "CONFIG is renamed or disabled"
        return None, " ".join(msg.split())
    except redis.RedisError as exc:
        raise error_for(exc, client_spec(client), 0) from None
    items = reply_map(raw)
    if name not in items:
        return None, "not known to this Redis version"
    return as_text(items[name]), None


def node_info(client: redis.Redis) -> NodeInfo:
    """Facts about the node behind ``client`` (INFO + CONFIG GET)."""
    info = read_info(client)  # the default sections include all we need
    missing: list[str] = []

    def config(name: str) -> str | None:
        value, why = config_get(client, name)
        if value is None:
            missing.append(f"{name}: {why}")
        return value

    def config_or(name: str, default: str) -> str:
        value, why = config_get(client, name)
        if value is None:
            missing.append(f"{name}: {why}, assuming {default!r}")
            return default
        return value

    version = as_text(info.get("redis_version", "0"))
    major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else 0
    directory = config("dir")
    dbfilename = config_or("dbfilename", "dump.rdb")
    appendonly_cfg = config("appendonly")
    appendonly = (
        appendonly_cfg.lower() == "yes"
        if appendonly_cfg is not None
        else bool(int_field(info, "aof_enabled"))
    )
    appenddirname = config_or("appenddirname", "appendonlydir") if major >= 7 else "appendonlydir"
    keys = sum(
        int_field(v, "keys")
        for k, v in info.items()
        if re.fullmatch(r"db\d+", k) and isinstance(v, dict)
    )
    role = as_text(info.get("role", "master"))
    flavour, server_version = server_flavour(info)
    return NodeInfo(
        redis_version=version,
        role="replica" if role in ("slave", "replica") else role,
        run_id=as_text(info.get("run_id", "")),
        dir=directory,
        dbfilename=dbfilename,
        appendonly=appendonly,
        appenddirname=appenddirname,
        aof_rewrite_in_progress=bool(int_field(info, "aof_rewrite_in_progress")),
        rdb_bgsave_in_progress=bool(int_field(info, "rdb_bgsave_in_progress")),
        keys=keys,
        cluster_enabled=bool(int_field(info, "cluster_enabled")),
        tcp_port=int_field(info, "tcp_port"),
        rdb_saves=int_field(info, "rdb_saves") if "rdb_saves" in info else None,
        rdb_last_bgsave_status=as_text(info.get("rdb_last_bgsave_status", "ok")),
        missing=tuple(missing),
        flavour=flavour,
        server_version=server_version,
    )


def server_flavour(info: Mapping[str, Any]) -> tuple[str, str]:
    """("valkey", valkey_version) or ("redis", redis_version) from INFO server.
    Valkey 8 and 9 say ``server_name:valkey`` and ``valkey_version:9.1.2``, and
    ``redis_version:7.2.4`` for clients that check it; Redis says neither."""
    valkey = as_text(info.get("valkey_version", "") or "")
    if valkey or as_text(info.get("server_name", "") or "").lower() == "valkey":
        return "valkey", valkey or as_text(info.get("redis_version", "0"))
    return "redis", as_text(info.get("redis_version", "0"))


def config_value(client: redis.Redis, name: str, default: str) -> str:
    """CONFIG GET ``name``; ``default`` when it is empty, unknown or CONFIG is
    refused. A failure to talk to the node raises :class:`RedisNodeError` with
    redis-py's words (see :func:`command_error`)."""
    try:
        raw = exec_command(client, "CONFIG", "GET", name)
    except redis.ResponseError:
        return default
    except redis.RedisError as exc:
        raise command_error(exc, client) from None
    value = reply_map(raw).get(name)
    return (as_text(value) if value is not None else "") or default
