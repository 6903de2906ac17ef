"""Everything backupctl says to Redis, in one place.

Why a module of its own: the pure modules (spec, plan, catalog, ...) must not
import redis, and every way of talking to a node -- redis-py commands, the raw
replication handshake, the ``redis-check-rdb`` tool -- has to fail the same
way: with a :class:`RedisNodeError` whose ``str()`` is one line a user can act
on (and never contains a password). The CLI and the Jobs print that line; the
controller copies it into the CR's ``Failed`` condition.

What is here:

* :func:`parse_redis_url` / :class:`ConnectionSpec` / :func:`connect`: where
  the node is, how to authenticate (password precedence documented on the
  function), TLS options.
* :func:`node_info`: version, role, persistence config and state, key count.
* :func:`bgsave`: a snapshot that *started after the call* (so it holds every
  write acknowledged before it), judged by ``INFO persistence`` counters and
  not by ``LASTSAVE`` alone (one-second resolution).
* :func:`replication_rdb`: the RDB streamed over the replication protocol
  (like ``redis-cli --rdb``) for nodes whose disk the Job cannot mount.
* RDB checks: header version, CRC-64 trailer (pure Python, accelerated by the
  ``anycrc`` package when it is installed), ``redis-check-rdb`` on a file or
  on a pipe while the data streams past (:class:`RdbStreamChecker`).
* :func:`cluster_shards`: cluster topology (CLUSTER SHARDS, or CLUSTER NODES
  on servers older than 7.0).
"""

from __future__ import annotations

import errno
import fcntl
import io
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any, BinaryIO
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "FAST_CRC64",
    "ClusterNode",
    "ConnectionSpec",
    "Crc64",
    "NodeInfo",
    "RdbCompressionPause",
    "RdbStreamChecker",
    "RdbTrailerCheck",
    "Redis",
    "RedisNodeError",
    "ReplicationRDB",
    "Shard",
    "as_text",
    "bgsave",
    "check_rdb",
    "cluster_shards",
    "connect",
    "count_rdb_keys",
    "crc64_redis",
    "exec_command",
    "node_info",
    "parse_redis_url",
    "rdb_trailer_check",
    "rdb_trailer_ok",
    "rdb_version_from_header",
    "replication_rdb",
    "wait_aof_rewrite_idle",
]

#: The client type :func:`connect` returns (so callers need not import redis).
Redis = redis.Redis

Clock = Callable[[], float]
Sleep = Callable[[float], None]

URL_EXAMPLE = "redis://[user:pass@]host:port[/db] (or rediss:// for TLS)"
_PASSWORD_HINT = "check --password / REDIS_PASSWORD / --password-file"


class RedisNodeError(Exception):
    """Talking to a Redis node failed. ``str()`` is one actionable line.

    ``reason`` is a short machine-readable word for status conditions and exit
    codes: ``auth``, ``noauth``, ``unreachable``, ``timeout``, ``tls``,
    ``protocol``, ``permission``, ``loading``, ``bgsave``, ``replication``,
    ``config``, ``rdb``, ``error``.
    """

    def __init__(self, message: str, *, reason: str = "error") -> None:
        super().__init__(" ".join(message.split()))  # always one line
        self.reason = reason


# --------------------------------------------------------------------------
# Where the node is and how to log in
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectionSpec:
    """Address, credentials and TLS options of one Redis node.

    The password never appears in ``repr()``/``str()``; use :attr:`display`
    in messages.
    """

    host: str
    port: int = 6379
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    tls_ca_certs: str | None = None  # ?ssl_ca_certs=/path/ca.pem
    tls_insecure: bool = False  # ?ssl_cert_reqs=none: no certificate verification
    tls_certfile: str | None = None  # ?ssl_certfile= (client certificate, mutual TLS)
    tls_keyfile: str | None = None  # ?ssl_keyfile=
    tls_check_hostname: bool = True  # ?ssl_check_hostname=false
    db: int = 0

    def __post_init__(self) -> None:
        if not self.host:
            raise RedisNodeError(f"a Redis address needs a host: {URL_EXAMPLE}", reason="config")
        if not 0 < self.port < 65536:
            raise RedisNodeError(
                f"Redis port {self.port} is out of range (1-65535)", reason="config"
            )

    @property
    def display(self) -> str:
        """``host:port`` (``[v6addr]:port``), safe for messages and logs."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.display}/{self.db}"

    def ssl_context(self) -> ssl.SSLContext:
        """The client-side TLS context these options describe."""
        ctx = ssl.create_default_context(cafile=self.tls_ca_certs)
        if self.tls_insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx.check_hostname = self.tls_check_hostname
        if self.tls_certfile:
            ctx.load_cert_chain(self.tls_certfile, self.tls_keyfile)
        return ctx


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_TLS_QUERY = {"ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname"}


def default_node_name(spec: ConnectionSpec) -> str:
    """``host-port`` with anything but ``[A-Za-z0-9._-]`` replaced: the
    default archive name and target folder of a node."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", f"{spec.host}-{spec.port}")


def _redact_url(url: str) -> str:
    """``url`` with any password in its userinfo replaced by ``***``."""
    return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)


def _read_password_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            value = fh.read()
    except OSError as exc:
        raise RedisNodeError(
            f"cannot read password file {path}: {exc.strerror or exc}", reason="config"
        ) from None
    value = value.rstrip("\r\n")
    if not value:
        raise RedisNodeError(f"password file {path} is empty", reason="config")
    return value


def parse_redis_url(
    url: str,
    *,
    password: str | None = None,
    password_file: str | None = None,
    username: str | None = None,
    env: Mapping[str, str] = os.environ,
) -> ConnectionSpec:
    """Parse ``redis://[user:pass@]host:port[/db][?options]`` (``rediss://`` = TLS).

    Password precedence: ``password`` > ``password_file`` (trailing newline
    stripped) > password in the URL > ``$REDIS_PASSWORD``. Username: explicit
    ``username`` > URL > ``$REDIS_USERNAME``. Empty values count as unset.

    Query options: ``db``, and for rediss:// ``ssl_cert_reqs=none|required``,
    ``ssl_ca_certs=PATH``, ``ssl_certfile=PATH``, ``ssl_keyfile=PATH``,
    ``ssl_check_hostname=true|false``.
    """
    shown = _redact_url(url.strip())

    def bad(why: str) -> RedisNodeError:
        return RedisNodeError(
            f"invalid Redis URL {shown!r}: {why}; expected {URL_EXAMPLE}", reason="config"
        )

    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise bad(str(exc).replace(url, shown)) from None
    if parts.scheme not in ("redis", "rediss"):
        raise bad(f"unsupported scheme {parts.scheme + '://' if parts.scheme else '(none)'}")
    host = parts.hostname
    if not host:
        raise bad("no host")
    db = 0
    path = parts.path.strip("/")
    if path:
        if not path.isdigit():
            raise bad(f"the path must be a database number, not {path!r}")
        db = int(path)
    tls = parts.scheme == "rediss"
    opts: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key != "db" and key not in _TLS_QUERY:
            known = ", ".join(sorted({"db", *_TLS_QUERY}))
            raise bad(f"unknown option {key!r} (known: {known})")
        opts[key] = value
    if "db" in opts:
        if not opts["db"].isdigit():
            raise bad("db must be a number")
        db = int(opts["db"])
    if not tls and _TLS_QUERY & opts.keys():
        raise bad("ssl_* options need the rediss:// scheme")
    insecure = False
    if "ssl_cert_reqs" in opts:
        reqs = opts["ssl_cert_reqs"].lower()
        if reqs in ("none", "cert_none"):
            insecure = True
        elif reqs not in ("required", "cert_required", "optional", "cert_optional"):
            raise bad("ssl_cert_reqs must be none or required")
    check_hostname = True
    if "ssl_check_hostname" in opts:
        flag = opts["ssl_check_hostname"].lower()
        if flag not in _TRUE | _FALSE:
            raise bad("ssl_check_hostname must be true or false")
        check_hostname = flag in _TRUE

    if password:
        secret: str | None = password
    elif password_file:
        secret = _read_password_file(password_file)
    elif parts.password:
        secret = unquote(parts.password)
    else:
        secret = env.get("REDIS_PASSWORD") or None
    user = username or (unquote(parts.username) if parts.username else None)
    user = user or env.get("REDIS_USERNAME") or None

    return ConnectionSpec(
        host=host,
        port=port if port is not None else 6379,
        username=user,
        password=secret,
        tls=tls,
        tls_ca_certs=opts.get("ssl_ca_certs") or None,
        tls_insecure=insecure,
        tls_certfile=opts.get("ssl_certfile") or None,
        tls_keyfile=opts.get("ssl_keyfile") or None,
        tls_check_hostname=check_hostname,
        db=db,
    )


# --------------------------------------------------------------------------
# Errors: one line a user can act on
# --------------------------------------------------------------------------


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen and len(seen) < 10:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def _scrub(text: str, spec: ConnectionSpec) -> str:
    if spec.password:
        text = text.replace(spec.password, "***")
    return " ".join(text.split())


def _error_for(exc: BaseException, spec: ConnectionSpec, timeout: float) -> RedisNodeError:
    """Map anything raised while talking to ``spec`` to a RedisNodeError."""
    if isinstance(exc, RedisNodeError):
        return exc
    where = spec.display
    chain = _chain(exc)
    text = _scrub(" | ".join(str(e) for e in chain), spec)
    upper = text.upper()

    auth_words = ("WRONGPASS", "NOAUTH", "AUTHENTICATION REQUIRED", "INVALID PASSWORD")
    hello_unauth = "HELLO MUST BE CALLED WITH THE CLIENT ALREADY AUTHENTICATED"
    if (
        isinstance(exc, redis.AuthenticationError)
        or any(w in upper for w in auth_words)
        or hello_unauth in upper
    ):
        if not spec.password or "NOAUTH" in upper or hello_unauth in upper:
            return RedisNodeError(
                f"Redis at {where} requires a password: {_PASSWORD_HINT}", reason="noauth"
            )
        return RedisNodeError(
            f"Redis at {where} rejected the password"
            f"{' for user ' + spec.username if spec.username else ''}: {_PASSWORD_HINT}",
            reason="auth",
        )
    if "CALLED WITHOUT ANY PASSWORD CONFIGURED" in upper:
        return RedisNodeError(
            f"Redis at {where} has no password set, but one was given: drop --password / "
            "REDIS_PASSWORD / --password-file, or set requirepass on the server",
            reason="auth",
        )
    if isinstance(exc, redis.exceptions.NoPermissionError) or upper.startswith("NOPERM"):
        return RedisNodeError(
            f"the Redis user at {where} lacks a permission: {text} -- grant it in the ACL "
            "(backups need at least +ping +info +config|get +bgsave +lastsave, or +psync for "
            "method replication)",
            reason="permission",
        )
    if isinstance(exc, redis.BusyLoadingError) or upper.startswith("LOADING "):
        return RedisNodeError(
            f"Redis at {where} is still loading its dataset into memory: retry when it is done",
            reason="loading",
        )
    ssl_errs = [e for e in chain if isinstance(e, ssl.SSLError)]
    if ssl_errs:
        detail = _scrub(getattr(ssl_errs[0], "reason", None) or str(ssl_errs[0]), spec)
        hint = "check the CA (ssl_ca_certs=...) or skip verification with ssl_cert_reqs=none"
        if "WRONG_VERSION_NUMBER" in detail.upper() or "RECORD LAYER" in detail.upper():
            hint = "is TLS enabled on that port? use redis:// for a plain-text port"
        return RedisNodeError(
            f"TLS handshake with Redis at {where} failed ({detail}): {hint}", reason="tls"
        )
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "CONNECTION REFUSED" in upper:
        return RedisNodeError(
            f"cannot connect to Redis at {where}: connection refused"
            " — is the address right and the server up?",
            reason="unreachable",
        )
    if any(isinstance(e, socket.gaierror) for e in chain) or "NAME OR SERVICE NOT KNOWN" in upper:
        return RedisNodeError(
            f"cannot connect to Redis at {where}: the host name does not resolve"
            " — check the address",
            reason="unreachable",
        )
    is_timeout = any(isinstance(e, TimeoutError | redis.TimeoutError) for e in chain)
    if is_timeout:
        if spec.tls and "HANDSHAKE" in upper:
            return RedisNodeError(
                f"TLS handshake with Redis at {where} timed out after {timeout:g} s:"
                " is TLS enabled on that port? use redis:// for a plain-text port",
                reason="tls",
            )
        return RedisNodeError(
            f"Redis at {where} did not answer within {timeout:g} s"
            " — is the address right, the server overloaded, or a firewall dropping packets?",
            reason="timeout",
        )
    if "CONNECTION CLOSED BY SERVER" in upper or "CONNECTION RESET" in upper:
        hint = (
            "is it a Redis server, and under its connection limit?"
            if spec.tls
            else "does it require TLS (use rediss://), or is it not a Redis server?"
        )
        return RedisNodeError(
            f"Redis at {where} closed the connection: {hint}", reason="unreachable"
        )
    if isinstance(exc, redis.exceptions.InvalidResponse) or "PROTOCOL ERROR" in upper:
        return RedisNodeError(
            f"the server at {where} did not answer like a Redis server ({text}):"
            " is the port right?",
            reason="protocol",
        )
    if isinstance(exc, redis.ResponseError):
        return RedisNodeError(f"Redis at {where} answered with an error: {text}", reason="error")
    if isinstance(exc, OSError | redis.ConnectionError):
        return RedisNodeError(f"cannot talk to Redis at {where}: {text}", reason="unreachable")
    return RedisNodeError(f"talking to Redis at {where} failed: {text}", reason="error")


# --------------------------------------------------------------------------
# Connecting with redis-py
# --------------------------------------------------------------------------


def connect(spec: ConnectionSpec, *, timeout: float = 10.0) -> redis.Redis:
    """A redis-py client for ``spec`` (``decode_responses=True``) that answered PING.

    Commands time out after ``timeout`` seconds; redis-py's own retries are off
    so a wrong address fails at once (the loops here retry where it helps).
    """
    kwargs: dict[str, Any] = {
        "host": spec.host,
        "port": spec.port,
        "db": spec.db,
        "username": spec.username,
        "password": spec.password,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "decode_responses": True,
        "retry": Retry(NoBackoff(), 0),
    }
    if spec.tls:
        kwargs.update(
            ssl=True,
            ssl_ca_certs=spec.tls_ca_certs,
            ssl_cert_reqs="none" if spec.tls_insecure else "required",
            ssl_check_hostname=spec.tls_check_hostname and not spec.tls_insecure,
            ssl_certfile=spec.tls_certfile,
            ssl_keyfile=spec.tls_keyfile,
        )
    client = redis.Redis(**kwargs)
    try:
        client.ping()
    except Exception as exc:
        client.close()
        raise _error_for(exc, spec, timeout) from None
    return client


def _where(client: redis.Redis) -> str:
    kw = client.connection_pool.connection_kwargs
    host, port = kw.get("host", "?"), kw.get("port", "?")
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _client_spec(client: redis.Redis) -> ConnectionSpec:
    kw = client.connection_pool.connection_kwargs
    try:
        return ConnectionSpec(
            host=str(kw.get("host") or "?"),
            port=int(kw.get("port") or 6379),
            username=kw.get("username"),
            password=kw.get("password"),
        )
    except (RedisNodeError, TypeError, ValueError):
        return ConnectionSpec(host="?", port=6379)


def exec_command(client: redis.Redis, *args: Any) -> Any:
    """``client.execute_command`` (untyped in redis-py) with an Any result;
    no retries, no error mapping (see :func:`_call` for those)."""
    command: Any = client.execute_command
    return command(*args)


def as_text(value: Any) -> str:
    """A reply as text, whether the client decodes responses or not."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _call(client: redis.Redis, *args: Any, retries: int = 2, sleep: Sleep = time.sleep) -> Any:
    """``execute_command`` with a short retry on dropped connections, errors mapped."""
    spec = _client_spec(client)
    timeout = float(client.connection_pool.connection_kwargs.get("socket_timeout") or 0)
    for attempt in range(retries + 1):
        try:
            return exec_command(client, *args)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if isinstance(exc, redis.AuthenticationError) or attempt == retries:
                raise _error_for(exc, spec, timeout) from None
            sleep(0.2 * (attempt + 1))
        except redis.RedisError as exc:
            raise _error_for(exc, spec, timeout) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _info(
    client: redis.Redis, section: str | None = None, *, sleep: Sleep = time.sleep
) -> dict[str, Any]:
    args: tuple[str, ...] = ("INFO", section) if section else ("INFO",)
    raw = _call(client, *args, sleep=sleep)
    if isinstance(raw, dict):
        return {as_text(k): v for k, v in raw.items()}
    return _parse_info(as_text(raw))


def _parse_info(text: str) -> dict[str, Any]:
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


def _int(info: Mapping[str, Any], key: str, default: int = 0) -> int:
    try:
        return int(info.get(key, default))
    except (TypeError, ValueError):
        return default


# --------------------------------------------------------------------------
# Node facts
# --------------------------------------------------------------------------


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


def _config_get(client: redis.Redis, name: str) -> tuple[str | None, str | None]:
    """(value, None) or (None, why it could not be read)."""
    try:
        raw = exec_command(client, "CONFIG", "GET", name)
    except redis.ResponseError as exc:
        msg = as_text(exc)
        if "unknown command" in msg.lower():
            return None, "CONFIG is renamed or disabled"
        return None, " ".join(msg.split())
    except redis.RedisError as exc:
        raise _error_for(exc, _client_spec(client), 0) from None
    if isinstance(raw, dict):
        items = {as_text(k): as_text(v) for k, v in raw.items()}
    else:
        seq = list(raw or [])
        items = {as_text(seq[i]): as_text(seq[i + 1]) for i in range(0, len(seq) - 1, 2)}
    if name not in items:
        return None, "not known to this Redis version"
    return items[name], None


def node_info(client: redis.Redis) -> NodeInfo:
    """Facts about the node behind ``client`` (INFO + CONFIG GET)."""
    info = _info(client)  # the default sections include all we need
    missing: list[str] = []

    def config(name: str) -> str | None:
        value, why = _config_get(client, name)
        if value is None:
            missing.append(f"{name}: {why}")
        return value

    def config_or(name: str, default: str) -> str:
        value, why = _config_get(client, name)
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
        else bool(_int(info, "aof_enabled"))
    )
    appenddirname = config_or("appenddirname", "appendonlydir") if major >= 7 else "appendonlydir"
    keys = sum(
        _int(v, "keys")
        for k, v in info.items()
        if re.fullmatch(r"db\d+", k) and isinstance(v, dict)
    )
    role = as_text(info.get("role", "master"))
    return NodeInfo(
        redis_version=version,
        role="replica" if role in ("slave", "replica") else role,
        run_id=as_text(info.get("run_id", "")),
        dir=directory,
        dbfilename=dbfilename,
        appendonly=appendonly,
        appenddirname=appenddirname,
        aof_rewrite_in_progress=bool(_int(info, "aof_rewrite_in_progress")),
        rdb_bgsave_in_progress=bool(_int(info, "rdb_bgsave_in_progress")),
        keys=keys,
        cluster_enabled=bool(_int(info, "cluster_enabled")),
        tcp_port=_int(info, "tcp_port"),
        rdb_saves=_int(info, "rdb_saves") if "rdb_saves" in info else None,
        rdb_last_bgsave_status=as_text(info.get("rdb_last_bgsave_status", "ok")),
        missing=tuple(missing),
    )


# --------------------------------------------------------------------------
# BGSAVE
# --------------------------------------------------------------------------


class _Deadline:
    def __init__(self, timeout: float, clock: Clock) -> None:
        self.clock = clock
        self.end = clock() + timeout
        self.timeout = timeout

    def left(self) -> float:
        return self.end - self.clock()

    def expired(self) -> bool:
        return self.left() <= 0


def _wait_until(
    cond: Callable[[], bool],
    deadline: _Deadline,
    poll: float,
    sleep: Sleep,
    on_timeout: Callable[[], RedisNodeError],
) -> None:
    """Poll ``cond`` until true; bounded by ``deadline`` (and a poll count)."""
    max_polls = int(deadline.timeout / max(poll, 1e-3)) + 1000
    for _ in range(max_polls):
        if cond():
            return
        if deadline.expired():
            break
        sleep(max(0.0, min(poll, deadline.left())))
    if cond():
        return
    raise on_timeout()


def _rdb_in_progress(p: Mapping[str, Any]) -> bool:
    return bool(_int(p, "rdb_bgsave_in_progress"))


def _bgsave_failed(client: redis.Redis, p: Mapping[str, Any]) -> RedisNodeError:
    where = _where(client)
    dir_value, _ = _config_get(client, "dir")
    in_dir = f" in {dir_value}" if dir_value else ""
    return RedisNodeError(
        f"BGSAVE on Redis at {where} failed "
        f"(rdb_last_bgsave_status:{as_text(p.get('rdb_last_bgsave_status', '?'))}): "
        f"look at the Redis log for the reason, and check free disk space and that "
        f"the data dir{in_dir} is writable",
        reason="bgsave",
    )


def _start_bgsave(client: redis.Redis) -> str:
    """Send BGSAVE SCHEDULE; returns "started", "scheduled" or "busy" (one already runs)."""
    spec = _client_spec(client)
    for args in (("BGSAVE", "SCHEDULE"), ("BGSAVE",)):
        try:
            reply = as_text(exec_command(client, *args)).lower()
        except redis.ResponseError as exc:
            msg = as_text(exc).lower()
            if "already in progress" in msg:
                return "busy"
            if "another child process is active" in msg:
                return "busy"  # plain BGSAVE during an AOF rewrite: wait and retry
            if args[-1] == "SCHEDULE" and ("syntax" in msg or "wrong number" in msg):
                continue  # Redis < 3.2: no SCHEDULE option
            raise _error_for(exc, spec, 0) from None
        except redis.RedisError as exc:
            raise _error_for(exc, spec, 0) from None
        return "scheduled" if "scheduled" in reply else "started"
    raise AssertionError("unreachable")  # pragma: no cover


def bgsave(
    client: redis.Redis,
    *,
    timeout: float = 3600,
    poll: float = 0.05,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
) -> datetime:
    """Make a NEW RDB snapshot on disk and return its completion time (UTC).

    The snapshot is one that *started after this call*, so it contains every
    write acknowledged before the call. A save already running when we are
    called is waited for, then ours is started. Completion is judged by
    ``rdb_saves`` (incremented by Redis when a BGSAVE forks; Redis >= 7.0)
    and ``rdb_bgsave_in_progress:0``, then ``rdb_last_bgsave_status:ok`` is
    required. Older servers fall back to ``rdb_last_save_time`` (LASTSAVE)
    moving; to beat its one-second resolution we only start our BGSAVE once
    the server clock is past the previous save's second.

    Raises RedisNodeError on failure or after ``timeout`` seconds.
    """
    deadline = _Deadline(timeout, clock)
    where = _where(client)

    state: dict[str, Any] = {}

    def persistence() -> dict[str, Any]:
        state["p"] = _info(client, "persistence", sleep=sleep)
        return dict(state["p"])

    def idle() -> bool:
        return not _rdb_in_progress(persistence())

    def too_slow(what: str) -> Callable[[], RedisNodeError]:
        return lambda: RedisNodeError(
            f"BGSAVE on Redis at {where} did not {what} within {timeout:g} s:"
            " raise the timeout for large datasets, or look at the Redis log",
            reason="timeout",
        )

    p = persistence()
    if "rdb_saves" not in p:
        return _bgsave_by_lastsave(client, deadline, poll, sleep, too_slow)

    # Start ours once no RDB child runs. "busy" means another save slipped in
    # between our check and our BGSAVE: wait for that one too (bounded).
    target = 0
    for _ in range(1000):
        _wait_until(idle, deadline, poll, sleep, too_slow("get a chance to start"))
        target = _int(state["p"], "rdb_saves") + 1
        outcome = _start_bgsave(client)
        if outcome != "busy":
            break
        if deadline.expired():
            raise too_slow("get a chance to start")()
    else:
        raise too_slow("get a chance to start")()

    # "started": our fork bumped rdb_saves to >= target. "scheduled" (an AOF
    # rewrite runs): Redis forks it later; any save counted from now on
    # started after our call, which is all we need.
    def done() -> bool:
        p = persistence()
        return _int(p, "rdb_saves") >= target and not _rdb_in_progress(p)

    _wait_until(done, deadline, poll, sleep, too_slow("finish"))
    p = state["p"]
    if as_text(p.get("rdb_last_bgsave_status", "ok")) != "ok":
        raise _bgsave_failed(client, p)
    return datetime.fromtimestamp(_int(p, "rdb_last_save_time"), UTC)


def _bgsave_by_lastsave(
    client: redis.Redis,
    deadline: _Deadline,
    poll: float,
    sleep: Sleep,
    too_slow: Callable[[str], Callable[[], RedisNodeError]],
) -> datetime:
    """bgsave() for servers without ``rdb_saves`` (Redis < 7.0)."""
    state: dict[str, Any] = {"last0": 0}

    def persistence() -> dict[str, Any]:
        state["p"] = _info(client, "persistence", sleep=sleep)
        return dict(state["p"])

    def idle() -> bool:
        return not _rdb_in_progress(persistence())

    # LASTSAVE has one-second resolution: start only once the server's clock
    # is past the previous save's second, so our completion time is later.
    def past_last0() -> bool:
        now = _call(client, "TIME", sleep=sleep)
        return int(as_text(now[0])) > int(state["last0"])

    outcome = "busy"
    last0 = 0
    status0 = "ok"
    for _ in range(1000):
        _wait_until(idle, deadline, poll, sleep, too_slow("get a chance to start"))
        last0 = state["last0"] = _int(state["p"], "rdb_last_save_time")
        status0 = as_text(state["p"].get("rdb_last_bgsave_status", "ok"))
        _wait_until(past_last0, deadline, poll, sleep, too_slow("get a chance to start"))
        outcome = _start_bgsave(client)
        if outcome != "busy":
            break
    else:
        raise too_slow("get a chance to start")()

    # Without rdb_saves a failed save is seen as LASTSAVE not moving plus
    # status err; a scheduled save that fails between two polls while the
    # status was already err before is only caught by the timeout.
    saw_running = outcome == "started"

    def done() -> bool:
        nonlocal saw_running
        p = persistence()
        if _rdb_in_progress(p):
            saw_running = True
            return False
        if _int(p, "rdb_last_save_time") > last0:
            return True
        status = as_text(p.get("rdb_last_bgsave_status", "ok"))
        return saw_running or (status != "ok" and status0 == "ok")

    _wait_until(done, deadline, poll, sleep, too_slow("finish"))
    p = state["p"]
    if _int(p, "rdb_last_save_time") <= last0 or as_text(p.get("rdb_last_bgsave_status")) != "ok":
        raise _bgsave_failed(client, p)
    return datetime.fromtimestamp(_int(p, "rdb_last_save_time"), UTC)


def wait_aof_rewrite_idle(
    client: redis.Redis,
    *,
    timeout: float = 3600,
    poll: float = 0.05,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
) -> None:
    """Wait until no AOF rewrite runs or is scheduled (the AOF dir is stable)."""
    deadline = _Deadline(timeout, clock)
    where = _where(client)

    def idle() -> bool:
        p = _info(client, "persistence", sleep=sleep)
        return not _int(p, "aof_rewrite_in_progress") and not _int(p, "aof_rewrite_scheduled")

    _wait_until(
        idle,
        deadline,
        poll,
        sleep,
        lambda: RedisNodeError(
            f"the AOF rewrite on Redis at {where} did not finish within {timeout:g} s",
            reason="timeout",
        ),
    )


# --------------------------------------------------------------------------
# RDB checks: header, CRC-64 trailer, redis-check-rdb
# --------------------------------------------------------------------------

try:  # anycrc: C (PCLMUL) implementation of the CRC-64/REDIS catalogue model
    import anycrc as _anycrc

    _ANYCRC: Any = _anycrc.Model("CRC64-REDIS")
    if _ANYCRC.calc(b"123456789") != 0xE9C6D914C4B8D9CA:  # pragma: no cover
        _ANYCRC = None
except Exception:  # pragma: no cover - optional dependency
    _ANYCRC = None

#: True when CRC-64 runs at GB/s (anycrc installed); the fallback does ~10 MB/s.
FAST_CRC64: bool = _ANYCRC is not None

_CRC64_POLY_REFLECTED = 0x95AC9329AC4BC9B5  # 0xad93d23594c935a9 bit-reversed


def _crc64_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ (_CRC64_POLY_REFLECTED if crc & 1 else 0)
        table.append(crc)
    return table


_CRC64_TABLE = _crc64_table()


def crc64_redis(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-64/Jones as Redis computes it (reflected, init 0, xorout 0).

    ``crc`` continues a previous result, so data can be fed in chunks.
    """
    if _ANYCRC is not None:
        return int(_ANYCRC.calc(data, crc)) if len(data) else crc
    table = _CRC64_TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


class Crc64:
    """Streaming :func:`crc64_redis`."""

    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self.value = crc64_redis(data, self.value)


_RDB_MAGIC = b"REDIS"
_RDB_OPCODE_EOF = 0xFF


def rdb_version_from_header(first9: bytes) -> int:
    """``b"REDIS0010"`` -> 10. Raises ValueError when it is not an RDB header."""
    head = bytes(first9[:9])
    if len(head) < 9 or not head.startswith(_RDB_MAGIC) or not head[5:9].isdigit():
        raise ValueError(f"not an RDB header: {head!r}")
    return int(head[5:9])


class _RdbValidator:
    """Checks magic and CRC-64 trailer of an RDB seen as a stream of chunks.

    Holds back the last 8 bytes (the trailer) so nothing is buffered beyond
    one chunk. ``finish()`` returns (ok, message).
    """

    def __init__(self, crc: bool = True) -> None:
        self.crc = Crc64() if crc else None
        self.head = b""
        self.tail = b""
        self.total = 0

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        if not chunk:
            return
        self.total += len(chunk)
        if len(self.head) < 9:
            self.head += bytes(chunk[: 9 - len(self.head)])
        if self.crc is None:
            self.tail = (self.tail + bytes(chunk[-9:]))[-9:]
            return
        if len(chunk) >= 9:  # the held-back bytes are not the trailer: CRC them, no copy
            self.crc.update(self.tail)
            self.crc.update(memoryview(chunk)[:-9])
            self.tail = bytes(chunk[-9:])
            return
        data = self.tail + bytes(chunk)
        self.crc.update(data[:-9])
        self.tail = data[-9:]

    @property
    def version(self) -> int | None:
        try:
            return rdb_version_from_header(self.head)
        except ValueError:
            return None

    def finish(self) -> tuple[bool, str]:
        version = self.version
        if version is None:
            return False, f"not an RDB file (starts with {self.head[:9]!r})"
        if version < 5:  # no checksum before RDB 5
            ok = len(self.tail) >= 1 and self.tail[-1] == _RDB_OPCODE_EOF
            return ok, "RDB ends with EOF opcode" if ok else "RDB is truncated (no EOF opcode)"
        if self.total < 18 or self.tail[0] != _RDB_OPCODE_EOF:
            return False, "RDB is truncated (no EOF opcode before the checksum)"
        expected = int.from_bytes(self.tail[1:], "little")
        if expected == 0:
            return True, "checksum disabled on the server (rdbchecksum no): trailer not checked"
        if self.crc is None:
            return True, "CRC64 not computed"
        self.crc.update(self.tail[:1])  # the EOF opcode is covered by the CRC
        if self.crc.value != expected:
            return False, (
                f"CRC64 mismatch: trailer says {expected:016x}, data gives {self.crc.value:016x}"
            )
        return True, "CRC64 OK"


@dataclass(frozen=True)
class RdbTrailerCheck:
    ok: bool
    version: int | None
    message: str


def rdb_trailer_check(
    path: str | os.PathLike[str], *, chunk_size: int = 4 << 20
) -> RdbTrailerCheck:
    """Check an RDB file's magic, EOF opcode and CRC-64 trailer, streaming it."""
    validator = _RdbValidator()
    with open(path, "rb") as fh:
        for _ in range(1 << 40):  # bounded by the file size
            chunk = fh.read(chunk_size)
            if not chunk:
                break
            validator.update(chunk)
    ok, message = validator.finish()
    return RdbTrailerCheck(ok=ok, version=validator.version, message=message)


def rdb_trailer_ok(path: str | os.PathLike[str]) -> bool:
    """True when the RDB at ``path`` has a valid magic and CRC-64 trailer."""
    return rdb_trailer_check(path).ok


_KEYS_READ = re.compile(r"\[info\] (\d+) keys read")


def _check_rdb_tool() -> str | None:
    return shutil.which("redis-check-rdb")


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


# --------------------------------------------------------------------------
# RDB over the replication protocol
# --------------------------------------------------------------------------


def _resp_command(*args: str | bytes) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Wire:
    """A socket with a small read buffer: lines for the handshake, then raw bytes."""

    MAX_LINE = 64 * 1024

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def send(self, *args: str | bytes) -> None:
        self.sock.sendall(_resp_command(*args))

    def readline(self) -> bytes:
        for _ in range(self.MAX_LINE):  # bounded: each round adds >= 1 byte
            idx = self.buf.find(b"\n")
            if idx >= 0:
                line = bytes(self.buf[: idx + 1])
                del self.buf[: idx + 1]
                return line
            if len(self.buf) > self.MAX_LINE:
                raise RedisNodeError("a reply line is too long", reason="protocol")
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionResetError(errno.ECONNRESET, "Connection closed by server")
            self.buf += chunk
        raise RedisNodeError("a reply line is too long", reason="protocol")  # pragma: no cover

    def readinto(self, view: memoryview) -> int:
        if self.buf:
            n = min(len(view), len(self.buf))
            view[:n] = self.buf[:n]
            del self.buf[:n]
            return n
        return self.sock.recv_into(view)


class _PayloadStream(io.RawIOBase):
    """Exactly ``size`` bytes of RDB from the wire, then EOF; checked as it passes."""

    def __init__(self, wire: _Wire, size: int, where: str, validator: _RdbValidator | None) -> None:
        super().__init__()
        self.wire = wire
        self.size = size
        self.remaining = size
        self.where = where
        self.validator = validator

    def readable(self) -> bool:
        return True

    def _received(self) -> str:
        return f"{self.size - self.remaining} of {self.size} bytes"

    def _recv(self, view: memoryview) -> int:
        """One socket read into ``view``; every failure becomes a RedisNodeError."""
        try:
            n = self.wire.readinto(view)
        except TimeoutError:
            raise RedisNodeError(
                f"the RDB stream from Redis at {self.where} stalled after {self._received()}",
                reason="timeout",
            ) from None
        except OSError as exc:
            raise RedisNodeError(
                f"the RDB stream from Redis at {self.where} broke after "
                f"{self._received()}: {exc.strerror or exc}",
                reason="replication",
            ) from None
        if n == 0:
            raise RedisNodeError(
                f"Redis at {self.where} closed the replication connection after "
                f"{self._received()} of the RDB",
                reason="replication",
            )
        return n

    def _check(self, data: memoryview, last: bool) -> None:
        if self.validator is None:
            return
        self.validator.update(data)
        if last:
            ok, message = self.validator.finish()
            if not ok:
                raise RedisNodeError(
                    f"the RDB received from Redis at {self.where} is damaged: {message}",
                    reason="rdb",
                )

    def readinto(self, buffer: Any) -> int:
        if self.remaining <= 0:
            return 0
        view = memoryview(buffer).cast("B")
        n = self._recv(view[: min(len(view), self.remaining)])
        self.remaining -= n
        self._check(view[:n], last=self.remaining == 0)
        return n


class _EofPayloadStream(_PayloadStream):
    """A diskless RDB: bytes until the 40-byte end mark the master announced
    with ``$EOF:<mark>``, then EOF.

    As in Redis's own replica code (and redis-cli), the mark is looked for
    only at the end of what has arrived: the master sends nothing after it
    until the replica acknowledges the load (``REPLCONF ACK``), which we never
    do; with ``REPLCONF rdb-only`` it closes the connection. The last 40 bytes
    received are held back until more arrive, so the mark is never handed
    out. Bytes are received straight into the caller's buffer."""

    MARK_LEN = 40
    SCRATCH = 64 * 1024  # for callers asking for tiny reads

    def __init__(
        self, wire: _Wire, mark: bytes, where: str, validator: _RdbValidator | None
    ) -> None:
        super().__init__(wire, 0, where, validator)
        self.mark = mark
        self.received = 0
        self.done = False
        self._tail = b""  # received, maybe the start of the mark: not handed out yet
        self._ready = b""  # checked RDB bytes a tiny read left over

    def _received(self) -> str:
        return f"{self.received} bytes"

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if not len(view):
            return 0
        if self._ready:
            n = min(len(view), len(self._ready))
            view[:n] = self._ready[:n]
            self._ready = self._ready[n:]
            return n
        if self.done:
            return 0
        if len(view) <= 2 * self.MARK_LEN:
            scratch = bytearray(self.SCRATCH)
            self._ready = bytes(scratch[: self._receive(memoryview(scratch))])
            return self.readinto(view)
        return self._receive(view)

    def _receive(self, view: memoryview) -> int:
        """Fill ``view`` (longer than the mark) with the next RDB bytes."""
        mark_len = self.MARK_LEN
        for _ in range(1 << 40):  # bounded by the stream: each round reads >= 1 byte
            held = len(self._tail)
            view[:held] = self._tail
            total = held + self._recv(view[held:])
            out = max(total - mark_len, 0)
            if total >= mark_len and view[out:total] == self.mark:
                self.done = True
                self._tail = b""
            else:
                self._tail = bytes(view[out:total])
            self.received += out
            self._check(view[:out], last=self.done)
            if out or self.done:
                return out
        raise AssertionError("unreachable")  # pragma: no cover


@dataclass
class ReplicationRDB:
    """An RDB being received over replication.

    ``stream`` is a buffered binary reader giving the RDB's bytes, then EOF;
    ``read(n)`` returns n bytes except at the end. ``size`` is the byte count
    the master announced for a disk-based sync, or None for a diskless one
    (the size is known only at the end: ``received``).
    ``replid``/``offset`` come from ``+FULLRESYNC`` (the replication position
    the snapshot corresponds to).
    """

    size: int | None
    stream: BinaryIO
    replid: str | None = None
    offset: int | None = None
    verified: bool = False  # True when magic + CRC64 are checked as the stream is read

    @property
    def _raw(self) -> _PayloadStream | None:
        raw = getattr(self.stream, "raw", None)
        return raw if isinstance(raw, _PayloadStream) else None

    @property
    def diskless(self) -> bool:
        return self.size is None

    @property
    def rdb_version(self) -> int | None:
        raw = self._raw
        return raw.validator.version if raw is not None and raw.validator is not None else None

    @property
    def received(self) -> int:
        raw = self._raw
        if isinstance(raw, _EofPayloadStream):
            return raw.received
        return 0 if raw is None else raw.size - raw.remaining


def _simple_reply(wire: _Wire, spec: ConnectionSpec) -> str:
    line = wire.readline()
    if not line[:1] or line[:1] not in b"+-:$*":
        raise RedisNodeError(
            f"the server at {spec.display} did not answer like a Redis server"
            f" (got {line[:20]!r}): is the port right?",
            reason="protocol",
        )
    return _scrub(line.decode("utf-8", "replace").strip(), spec)


@contextmanager
def replication_rdb(
    spec: ConnectionSpec,
    *,
    timeout: float = 3600,
    io_timeout: float = 60,
    connect_timeout: float = 10,
    verify: bool | None = None,
    diskless: bool = True,
    on_fork: Callable[[], None] | None = None,
    clock: Clock = time.monotonic,
) -> Iterator[ReplicationRDB]:
    """Stream the node's RDB over the replication protocol (like ``redis-cli --rdb``).

    Handshake, as redis-cli does it (no ``REPLCONF listening-port``: the
    master lists us as ``<unknown-replica-port>``): AUTH (if a password is
    set), PING, ``REPLCONF capa eof`` (with ``diskless``), ``REPLCONF
    rdb-only 1`` (Redis >= 7.0: the master drops us right after the RDB and
    keeps no replication buffer for us; older servers answer an error,
    ignored), then ``PSYNC ? -1``.

    With ``capa eof`` a master running ``repl-diskless-sync yes`` (the 7.0
    default) forks a child that writes the RDB straight to us: nothing
    touches the node's disk, and the transfer overlaps the serialisation.
    It announces ``$EOF:<40-byte mark>`` and ends the RDB with that mark, so
    the size is known only at the end (``ReplicationRDB.size`` is None). A
    master with ``repl-diskless-sync no`` (or without ``diskless``) BGSAVEs
    to its own RDB file (replacing its dump.rdb, like a BGSAVE) and sends
    ``$<size>`` plus exactly size bytes.

    ``on_fork`` is called once the master has forked the child producing the
    snapshot (``+FULLRESYNC`` is sent after the fork): settings the child
    reads, like ``rdbcompression``, can be put back from then on.

    ``timeout`` bounds the wait for the master to start sending (it sends a
    newline every second meanwhile); ``io_timeout`` bounds every socket
    read. ``verify`` (default: when fast CRC64 is available) checks the magic
    and CRC-64 trailer as the stream is read; a mismatch raises
    RedisNodeError from the final ``read``. The socket is closed on exit.
    """
    where = spec.display
    deadline = _Deadline(timeout, clock)
    sock: socket.socket | None = None
    try:
        try:
            raw_sock = socket.create_connection((spec.host, spec.port), timeout=connect_timeout)
            sock = raw_sock
            if spec.tls:
                sock = spec.ssl_context().wrap_socket(raw_sock, server_hostname=spec.host)
            sock.settimeout(min(io_timeout, max(deadline.left(), 0.001)))
            wire = _Wire(sock)
            if spec.password:
                auth = (spec.username, spec.password) if spec.username else (spec.password,)
                wire.send("AUTH", *auth)
                reply = _simple_reply(wire, spec)
                if reply.startswith("-"):
                    raise redis.AuthenticationError(reply[1:])
            wire.send("PING")
            reply = _simple_reply(wire, spec)
            if reply.startswith("-"):
                raise redis.ResponseError(reply[1:])
            replconf = [("capa", "eof")] if diskless else []
            replconf.append(("rdb-only", "1"))
            for name, value in replconf:
                wire.send("REPLCONF", name, value)
                reply = _simple_reply(wire, spec)
                if reply.startswith(("-NOAUTH", "-NOPERM")):
                    raise redis.ResponseError(reply[1:])
            wire.send("PSYNC", "?", "-1")
            replid, offset, size, mark = _read_sync_header(
                wire, spec, deadline, io_timeout, on_fork
            )
            sock.settimeout(io_timeout)
        except RedisNodeError:
            raise
        except Exception as exc:
            raise _error_for(exc, spec, connect_timeout) from None
        check = FAST_CRC64 if verify is None else verify
        validator = _RdbValidator() if check else None
        raw: _PayloadStream
        if mark is not None:
            raw = _EofPayloadStream(wire, mark, where, validator)
        else:
            assert size is not None
            raw = _PayloadStream(wire, size, where, validator)
        stream = io.BufferedReader(raw, buffer_size=256 * 1024)
        yield ReplicationRDB(size=size, stream=stream, replid=replid, offset=offset, verified=check)
    finally:
        if sock is not None:
            with suppress(OSError):
                sock.close()


class RdbCompressionPause:
    """Switch a server's ``rdbcompression`` off for the one fork that makes a
    diskless replication snapshot, and back on as soon as the child exists.

    Why: the child's LZF pass is most of the cost of serialising an RDB
    (measured on a 609 MiB RDB: 4.9 s with LZF, 1.9 s without) and LZF'd
    strings compress worse with zstd afterwards (376 vs 270 MB), so an RDB
    that is zstd-compressed anyway is cheaper and smaller without it.

    Only done when it touches nothing on disk and nothing lasting:
    ``repl-diskless-sync yes`` (the snapshot is streamed, never written to the
    node's disk), ``rdbcompression`` currently ``yes`` (a concurrent backupctl
    that already switched it off is left to put it back itself), and CONFIG
    allowed. :meth:`restore` is idempotent and also runs on every exit path.
    A BGSAVE the server starts on its own inside that window writes an
    uncompressed dump.rdb: as valid, a little larger.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self.active = False
        #: The snapshot will hold no LZF strings: switched off here, or the
        #: server runs with ``rdbcompression no`` anyway.
        self.uncompressed = False
        self.restore_error: str | None = None

    def start(self) -> None:
        """Switch it off if allowed (see the class); ``active`` says whether it did."""
        diskless, _ = _config_get(self._client, "repl-diskless-sync")
        current, _ = _config_get(self._client, "rdbcompression")
        self.uncompressed = current == "no"
        if diskless != "yes" or current != "yes":
            return
        try:
            exec_command(self._client, "CONFIG", "SET", "rdbcompression", "no")
        except redis.ResponseError:
            return  # CONFIG SET denied (ACL, protected config): keep LZF
        except redis.RedisError as exc:
            raise _error_for(exc, _client_spec(self._client), 0) from None
        self.active = self.uncompressed = True

    def restore(self) -> None:
        if not self.active:
            return
        self.active = False
        try:
            exec_command(self._client, "CONFIG", "SET", "rdbcompression", "yes")
        except redis.RedisError as exc:
            self.restore_error = (
                f"could not set rdbcompression back to yes on Redis at "
                f"{_where(self._client)} ({as_text(exc)}): run CONFIG SET rdbcompression yes"
            )


def _read_sync_header(
    wire: _Wire,
    spec: ConnectionSpec,
    deadline: _Deadline,
    io_timeout: float,
    on_fork: Callable[[], None] | None = None,
) -> tuple[str | None, int | None, int | None, bytes | None]:
    """Read up to ``$<size>\r\n`` or ``$EOF:<mark>\r\n``: skip keepalive
    newlines, note +FULLRESYNC. Returns (replid, offset, size, mark)."""
    where = spec.display
    replid: str | None = None
    offset: int | None = None
    forked = False

    def fork_seen() -> None:
        nonlocal forked
        if not forked:
            forked = True
            if on_fork is not None:
                on_fork()

    max_lines = int(deadline.timeout * 10) + 1000  # keepalives come about once a second
    for _ in range(max_lines):
        if deadline.expired():
            break
        wire.sock.settimeout(min(io_timeout, max(deadline.left(), 0.001)))
        try:
            line = wire.readline()
        except TimeoutError:
            if deadline.expired():
                break
            raise RedisNodeError(
                f"Redis at {where} sent nothing for {io_timeout:g} s while preparing"
                " the replication RDB",
                reason="timeout",
            ) from None
        text = line.decode("utf-8", "replace").strip()
        if not text:
            continue  # keepalive newline while the master waits or runs its BGSAVE
        if text.startswith("+FULLRESYNC"):
            fork_seen()
            fields = text.split()
            if len(fields) >= 3 and fields[2].isdigit():
                replid, offset = fields[1], int(fields[2])
            continue
        if text.startswith("$EOF:"):
            fork_seen()
            mark = text[5:].encode()
            if len(mark) != _EofPayloadStream.MARK_LEN:
                raise RedisNodeError(
                    f"Redis at {where} announced a diskless RDB with a malformed end mark",
                    reason="protocol",
                )
            return replid, offset, None, mark
        if text.startswith("$") and text[1:].isdigit():
            fork_seen()
            return replid, offset, int(text[1:]), None
        if text.startswith("-"):
            msg = _scrub(text[1:], spec)
            if "unknown command" in msg.lower():
                raise RedisNodeError(
                    f"Redis at {where} does not allow replication commands (PSYNC is renamed"
                    " or disabled, as on many managed services): use method bgsave",
                    reason="replication",
                )
            if msg.upper().startswith(("NOPERM", "NOAUTH")):
                raise redis.ResponseError(msg)
            raise RedisNodeError(
                f"Redis at {where} refused to start a replication sync: {msg}",
                reason="replication",
            )
        raise RedisNodeError(
            f"unexpected reply from Redis at {where} during the replication handshake:"
            f" {text[:60]!r}",
            reason="protocol",
        )
    raise RedisNodeError(
        f"Redis at {where} did not start sending the RDB within {deadline.timeout:g} s:"
        " raise the timeout for large datasets, or look at the Redis log",
        reason="timeout",
    )


# --------------------------------------------------------------------------
# Cluster topology
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterNode:
    node_id: str
    host: str
    port: int
    role: str  # "master" | "replica"
    health: str = "online"  # "online" | "failed" | "loading" | other as reported


@dataclass(frozen=True)
class Shard:
    """One master with its replicas and the slot ranges it serves."""

    slots: tuple[tuple[int, int], ...]
    nodes: tuple[ClusterNode, ...]

    @property
    def master(self) -> ClusterNode | None:
        return next((n for n in self.nodes if n.role == "master"), None)

    @property
    def replicas(self) -> tuple[ClusterNode, ...]:
        return tuple(n for n in self.nodes if n.role != "master")


def _pairs(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return {as_text(k): v for k, v in value.items()}
    seq = list(value)
    return {as_text(seq[i]): seq[i + 1] for i in range(0, len(seq) - 1, 2)}


def _shards_from_cluster_shards(raw: Sequence[Any], default_host: str = "") -> list[Shard]:
    shards: list[Shard] = []
    for item in raw:
        entry = _pairs(item)
        flat = [int(as_text(s)) for s in entry.get("slots", [])]
        slots = tuple((flat[i], flat[i + 1]) for i in range(0, len(flat) - 1, 2))
        nodes: list[ClusterNode] = []
        for node_raw in entry.get("nodes", []):
            node = _pairs(node_raw)
            # A node that has met no peer does not know its own IP: it is the one we asked.
            host = as_text(
                node.get("ip") or node.get("endpoint") or node.get("hostname") or default_host
            )
            port = int(as_text(node.get("port") or node.get("tls-port") or 0))
            role = as_text(node.get("role", "master"))
            nodes.append(
                ClusterNode(
                    node_id=as_text(node.get("id", "")),
                    host=host,
                    port=port,
                    role="replica" if role in ("replica", "slave") else role,
                    health=as_text(node.get("health", "online")),
                )
            )
        nodes.sort(key=lambda n: (n.role != "master", n.node_id))
        shards.append(Shard(slots=slots, nodes=tuple(nodes)))
    return _sorted_shards(shards)


def _sorted_shards(shards: list[Shard]) -> list[Shard]:
    def key(shard: Shard) -> tuple[int, str]:
        first = shard.slots[0][0] if shard.slots else 1 << 20
        return first, shard.nodes[0].node_id if shard.nodes else ""

    return sorted(shards, key=key)


def _shards_from_cluster_nodes(text: str, default_host: str = "") -> list[Shard]:
    """Parse CLUSTER NODES (Redis < 7.0) into shards."""
    masters: dict[str, tuple[ClusterNode, list[tuple[int, int]]]] = {}
    replicas: dict[str, list[ClusterNode]] = {}
    for line in text.splitlines()[:100_000]:
        fields = line.split()
        if len(fields) < 8:
            continue
        node_id, addr, flags_s, master_id = fields[0], fields[1], fields[2], fields[3]
        flags = set(flags_s.split(","))
        if flags & {"handshake", "noaddr"}:
            continue
        hostport = addr.split("@", 1)[0]
        host, _, port_s = hostport.rpartition(":")
        host = host.strip("[]") or default_host
        health = "failed" if flags & {"fail", "fail?"} else "online"
        if "master" in flags:
            ranges: list[tuple[int, int]] = []
            for slot in fields[8:]:
                if slot.startswith("["):
                    continue  # migrating/importing marker, not an owned range
                lo, _, hi = slot.partition("-")
                ranges.append((int(lo), int(hi or lo)))
            node = ClusterNode(node_id, host, int(port_s or 0), "master", health)
            masters[node_id] = (node, sorted(ranges))
        elif "slave" in flags or "replica" in flags:
            node = ClusterNode(node_id, host, int(port_s or 0), "replica", health)
            replicas.setdefault(master_id, []).append(node)
    shards = [
        Shard(
            slots=tuple(ranges),
            nodes=(node, *sorted(replicas.get(node_id, []), key=lambda n: n.node_id)),
        )
        for node_id, (node, ranges) in masters.items()
    ]
    return _sorted_shards(shards)


def cluster_shards(client: redis.Redis) -> list[Shard]:
    """Shards of the cluster ``client`` is connected to, sorted by first slot.

    Uses CLUSTER SHARDS (Redis >= 7.0) and falls back to CLUSTER NODES.
    Masters without slots appear as shards with no slot ranges.
    """
    spec = _client_spec(client)
    try:
        raw = exec_command(client, "CLUSTER SHARDS")
        if isinstance(raw, list | tuple):
            return _shards_from_cluster_shards(raw, spec.host)
    except redis.ResponseError as exc:
        msg = as_text(exc).lower()
        if "cluster support disabled" in msg or "cluster mode" in msg:
            raise RedisNodeError(
                f"Redis at {spec.display} is not in cluster mode", reason="config"
            ) from None
        if "unknown subcommand" not in msg and "unknown command" not in msg:
            raise _error_for(exc, spec, 0) from None
    except redis.RedisError as exc:
        raise _error_for(exc, spec, 0) from None
    try:
        # "CLUSTER", "NODES" as separate words: redis-py's parser for
        # "CLUSTER NODES" drops fields we need, this gets the raw text.
        text = exec_command(client, "CLUSTER", "NODES")
    except redis.RedisError as exc:
        raise _error_for(exc, spec, 0) from None
    return _shards_from_cluster_nodes(as_text(text), spec.host)
