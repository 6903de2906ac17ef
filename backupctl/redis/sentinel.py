"""Which node ``backupctl run`` backs up in a replication or Sentinel setup.

- With Sentinel (``--sentinel URL --master-name NAME``): the Sentinels are
  asked in the order given; the first that names a master it considers up
  (not ``s_down``/``o_down``, no failover in progress) wins, once that node
  itself says it is a master. With ``prefer_replica``: a replica of it that
  the Sentinel considers healthy (not ``s_down``/``o_down``/``disconnected``,
  ``master-link-status ok``, replicating from that master), freshest offset
  first, once the replica itself says its link is up.
- Without Sentinel, ``prefer_replica`` on a primary: a replica that the
  primary's ``INFO replication`` lists as ``state=online``, checked the same
  way. A replica given directly is backed up as it is.

When no replica qualifies, the primary is chosen and :attr:`Choice.note` says
why (or, with ``require_replica``, :class:`SentinelError` is raised). Data
nodes are reached with the user, password and TLS options of the template
``ConnectionSpec`` (``--redis``/``--password-file``/``REDIS_PASSWORD``);
Sentinels with their own (``--sentinel-password-file``,
``REDIS_SENTINEL_PASSWORD``).

Reading the answers is pure (:func:`master_problem`, :func:`healthy_replicas`,
:func:`online_replicas`); asking goes through redis-py. ``redis.sentinel.Sentinel``
is not used: its ``discover_master`` folds "unknown name", "wrong password" and
"unreachable" into one ``MasterNotFoundError`` and its replica filter ignores
``master-link-status``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import redis

from backupctl.redis.address import ConnectionSpec, default_node_name, parse_redis_url
from backupctl.redis.connection import as_text, connect
from backupctl.redis.errors import RedisNodeError
from backupctl.redis.info import node_info

#: Seconds to wait for each Sentinel and each candidate node.
TIMEOUT = 5.0
SENTINEL_PORT = 26379
SENTINEL_PASSWORD_ENV = "REDIS_SENTINEL_PASSWORD"
#: Host of the data-node template when ``--redis`` is not given (replaced by
#: the address Sentinel names).
ANY_HOST = "redis://sentinel-named-node"
_UNHEALTHY = {"s_down", "o_down", "disconnected"}
_SLAVE_KEY = re.compile(r"^slave\d+$")

Address = tuple[str, int]


class SentinelError(RedisNodeError):
    """No node could be chosen; ``str()`` says why and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="config")


@dataclass(frozen=True)
class Choice:
    spec: ConnectionSpec  # the node to back up
    target: str  # default name to file the backup under
    note: str | None = None  # a fallback the user should hear about


# --- reading answers (pure) ----------------------------------------------------------


def _fields(raw: Any) -> dict[str, Any]:
    """A Sentinel state (a dict, or a flat name/value list) with str keys."""
    if isinstance(raw, Mapping):
        return {as_text(k): v for k, v in raw.items()}
    seq = list(raw)
    return {as_text(seq[i]): seq[i + 1] for i in range(0, len(seq) - 1, 2)}


def _flags(state: Mapping[str, Any]) -> set[str]:
    flags = state.get("flags", "")
    if isinstance(flags, set | frozenset | list | tuple):
        return {as_text(f) for f in flags}
    return set(as_text(flags).split(","))


def _address(state: Mapping[str, Any], host: str = "ip", port: str = "port") -> Address:
    return as_text(state.get(host, "")), int(as_text(state.get(port, 0)) or 0)


def _shown(addr: Address) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def master_problem(state: Mapping[str, Any]) -> str | None:
    """Why a Sentinel's ``SENTINEL MASTER`` answer is not a master to back up, or None."""
    flags = _flags(state)
    bad = sorted(flags & {"s_down", "o_down", "disconnected"})
    if bad:
        return f"it sees the master as {'/'.join(bad)}"
    if "failover_in_progress" in flags or "promoted" in flags:
        return "a failover is in progress"
    if "master" not in flags:
        return f"it reports flags {','.join(sorted(flags))}"
    return None


def healthy_replicas(replicas: Sequence[Any], master: Address) -> list[Address]:
    """Replicas from ``SENTINEL REPLICAS`` fit to back up: not down or
    disconnected, link to ``master`` ok; the freshest (largest offset) first."""
    fit: list[tuple[int, Address]] = []
    for raw in replicas:
        state = _fields(raw)
        if _flags(state) & _UNHEALTHY:
            continue
        if as_text(state.get("master-link-status", "")) != "ok":
            continue
        if "master-host" in state and _address(state, "master-host", "master-port") != master:
            continue
        offset = int(as_text(state.get("slave-repl-offset", 0)) or 0)
        fit.append((-offset, _address(state)))
    return [addr for _, addr in sorted(fit)]


def _info_pairs(value: Any) -> dict[str, str]:
    """``ip=...,port=...,state=online`` (as text, or as redis-py parsed it)."""
    if isinstance(value, Mapping):
        return {as_text(k): as_text(v) for k, v in value.items()}
    return dict(p.partition("=")[::2] for p in as_text(value).split(","))


def online_replicas(info: Mapping[str, Any]) -> list[Address]:
    """Replicas a primary's ``INFO replication`` lists as ``state=online``,
    the freshest (largest offset) first."""
    fit: list[tuple[int, Address]] = []
    for key, value in info.items():
        if not _SLAVE_KEY.match(as_text(key)):
            continue
        entry = _info_pairs(value)
        if entry.get("state") != "online" or not entry.get("port", "").isdigit():
            continue
        offset = int(entry["offset"]) if entry.get("offset", "").isdigit() else 0
        fit.append((-offset, (entry.get("ip", ""), int(entry["port"]))))
    return [addr for _, addr in sorted(fit)]


def target_name(name: str) -> str:
    """A backup target (folder) name made of ``name``: characters a target
    may not hold become ``-``."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "-", name).lstrip("._-")
    return safe or "redis"


# --- asking ---------------------------------------------------------------------------


def sentinel_specs(
    urls: Sequence[str], *, password_file: str | None = None, env: Mapping[str, str] = os.environ
) -> list[ConnectionSpec]:
    """``--sentinel`` URLs (``redis://[user:pass@]host:26379``) as specs. The
    password: ``password_file`` > the URL's > ``$REDIS_SENTINEL_PASSWORD``
    (never the data nodes' ``$REDIS_PASSWORD``)."""
    own_env = {"REDIS_PASSWORD": env.get(SENTINEL_PASSWORD_ENV, "")}
    specs = []
    for url in urls:
        specs.append(
            parse_redis_url(
                url, password_file=password_file, env=own_env, default_port=SENTINEL_PORT
            )
        )
    return specs


def _node(template: ConnectionSpec, addr: Address) -> ConnectionSpec:
    return dataclasses.replace(template, host=addr[0], port=addr[1])


def _role(spec: ConnectionSpec) -> tuple[str, dict[str, Any]]:
    """The node's own role (``master``/``replica``) and INFO replication."""
    client = connect(spec, timeout=TIMEOUT)
    try:
        info: dict[str, Any] = {as_text(k): v for k, v in client.info("replication").items()}
    except redis.RedisError as exc:
        raise RedisNodeError(f"Redis at {spec.display}: INFO failed: {exc}") from None
    finally:
        client.close()
    role = as_text(info.get("role", "master"))
    return ("replica" if role in ("slave", "replica") else role), info


def _replica_ok(spec: ConnectionSpec) -> str | None:
    """Why the node at ``spec`` is not a replica in sync, or None."""
    try:
        role, info = _role(spec)
    except RedisNodeError as exc:
        return str(exc)
    if role != "replica":
        return f"{spec.display} says it is a {role}"
    if as_text(info.get("master_link_status", "")) != "up":
        return f"{spec.display}: master_link_status is {info.get('master_link_status')}"
    return None


def _pick_replica(
    template: ConnectionSpec, candidates: Sequence[Address], why_none: str
) -> tuple[ConnectionSpec | None, str]:
    """The first candidate that says it is a replica with its link up, or
    (None, why none was)."""
    problems = []
    for addr in candidates:
        spec = _node(template, addr)
        problem = _replica_ok(spec)
        if problem is None:
            return spec, ""
        problems.append(problem)
    return None, "; ".join(problems) or why_none


def via_sentinel(
    sentinels: Sequence[ConnectionSpec],
    master_name: str,
    template: ConnectionSpec,
    *,
    prefer_replica: bool = False,
    require_replica: bool = False,
) -> Choice:
    """Ask ``sentinels`` for ``master_name``'s current master (or a healthy
    replica of it) and return the node to back up."""
    if not sentinels:
        raise SentinelError("no --sentinel given")
    problems: list[str] = []
    unknown: list[str] = []  # sentinels that do not monitor master_name
    known_names: set[str] = set()
    for sentinel in sentinels:
        try:
            client = connect(sentinel, timeout=TIMEOUT)
        except RedisNodeError as exc:
            problems.append(_about_sentinel(exc))
            continue
        try:
            state = _fields(_ask(client, sentinel, "MASTER", master_name))
            replicas = _ask(client, sentinel, "REPLICAS", master_name) if prefer_replica else []
        except _NoSuchMaster:
            unknown.append(sentinel.display)
            with suppress(RedisNodeError):
                masters = _ask(client, sentinel, "MASTERS")
                known_names.update(as_text(_fields(m).get("name", "")) for m in masters)
            continue
        except RedisNodeError as exc:
            problems.append(str(exc))
            continue
        finally:
            client.close()
        problem = master_problem(state)
        master = _address(state)
        if problem is not None:
            problems.append(f"Sentinel at {sentinel.display}: {problem} ({_shown(master)})")
            continue
        master_spec = _node(template, master)
        try:
            role, _ = _role(master_spec)
        except RedisNodeError as exc:
            problems.append(f"Sentinel at {sentinel.display} names {_shown(master)}: {exc}")
            continue
        if role != "master":
            problems.append(
                f"Sentinel at {sentinel.display} names {_shown(master)} but it says it is a "
                f"{role} (a failover in progress?)"
            )
            continue
        target = target_name(master_name)
        if not prefer_replica:
            return Choice(master_spec, target)
        spec, why = _pick_replica(
            template,
            healthy_replicas(replicas, master),
            f"Sentinel at {sentinel.display} knows no healthy replica of it",
        )
        if spec is not None:
            return Choice(spec, target)
        if require_replica:
            raise SentinelError(
                f"no healthy replica of {master_name!r} (master {_shown(master)}) to back up: "
                f"{why}; drop --require-replica to back up the master"
            )
        note = f"no healthy replica of {master_name!r} ({why}): backing up the master"
        return Choice(master_spec, target, note=f"{note} {_shown(master)}")
    if unknown and not problems:
        names = ", ".join(sorted(n for n in known_names if n)) or "none"
        raise SentinelError(
            f"no Sentinel monitors a master named {master_name!r} (asked {', '.join(unknown)}; "
            f"they monitor: {names}): check --master-name"
        )
    if unknown:
        problems.append(f"{', '.join(unknown)}: no master named {master_name!r}")
    raise SentinelError(
        f"no Sentinel named a usable master for {master_name!r}: {'; '.join(problems)}"
    )


def replica_of(primary: ConnectionSpec, *, require_replica: bool = False) -> Choice:
    """Without Sentinel: a replica the primary at ``primary`` lists as online
    (a replica given directly is itself the choice)."""
    target = default_node_name(primary)
    client = connect(primary)
    try:
        if node_info(client).cluster_enabled:
            return Choice(primary, target)  # run --cluster chooses per shard
        info = {as_text(k): v for k, v in client.info("replication").items()}
    except redis.RedisError as exc:
        raise RedisNodeError(f"Redis at {primary.display}: INFO failed: {exc}") from None
    finally:
        client.close()
    if as_text(info.get("role")) in ("slave", "replica"):
        return Choice(primary, target)
    spec, why = _pick_replica(
        primary,
        online_replicas(info),
        f"INFO replication of {primary.display} lists no online replica",
    )
    if spec is not None:
        return Choice(spec, target)
    if require_replica:
        raise SentinelError(
            f"no healthy replica of {primary.display} to back up: {why}; drop "
            "--require-replica to back up the primary"
        )
    return Choice(primary, target, note=f"no healthy replica ({why}): backing up the primary")


def choose_node(
    template: ConnectionSpec,
    redis_given: bool,
    sentinels: Sequence[str],
    master_name: str | None,
    *,
    sentinel_password_file: str | None = None,
    prefer_replica: bool = False,
    require_replica: bool = False,
    cluster: bool = False,
) -> Choice:
    """What ``backupctl run`` backs up, from its options: the node given
    (``template``, from ``--redis``), or the one :func:`via_sentinel` or
    :func:`replica_of` chooses. ``--cluster`` chooses per shard later."""
    if sentinels and cluster:
        raise SentinelError("--sentinel and --cluster exclude each other")
    if bool(sentinels) != bool(master_name):
        raise SentinelError("--sentinel and --master-name go together")
    if require_replica and cluster:
        raise SentinelError("--require-replica does not go with --cluster (use --prefer-replica)")
    if sentinels:
        assert master_name is not None
        return via_sentinel(
            sentinel_specs(sentinels, password_file=sentinel_password_file),
            master_name,
            template,
            prefer_replica=prefer_replica or require_replica,
            require_replica=require_replica,
        )
    if not redis_given:
        raise SentinelError("pass --redis URL, or --sentinel URL with --master-name")
    if (prefer_replica or require_replica) and not cluster:
        return replica_of(template, require_replica=require_replica)
    return Choice(template, default_node_name(template))


class _NoSuchMaster(Exception):
    pass


def _about_sentinel(exc: RedisNodeError) -> str:
    """A connection error's text, saying Sentinel and naming the Sentinel's settings."""
    text = str(exc).replace("Redis at", "Sentinel at", 1)
    return text.replace(
        "the password in the URL (redis://[user]:PASSWORD@host:port), --password-file or "
        "REDIS_PASSWORD",
        "--sentinel-password-file, REDIS_SENTINEL_PASSWORD or the --sentinel URL",
    )


def _ask(client: redis.Redis, sentinel: ConnectionSpec, *args: str) -> Any:
    command: Any = client.execute_command
    try:
        return command("SENTINEL", *args)
    except redis.ResponseError as exc:
        if "no such master" in str(exc).lower():
            raise _NoSuchMaster from None
        raise RedisNodeError(
            f"Sentinel at {sentinel.display}: SENTINEL {args[0]} failed: {exc} (is it a Sentinel?)"
        ) from None
    except redis.RedisError as exc:
        raise RedisNodeError(f"Sentinel at {sentinel.display}: {exc}") from None


__all__ = [
    "Choice",
    "SentinelError",
    "choose_node",
    "healthy_replicas",
    "master_problem",
    "online_replicas",
    "replica_of",
    "sentinel_specs",
    "target_name",
    "via_sentinel",
]
