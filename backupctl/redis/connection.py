"""redis-py clients: connect, send a command, and turn every failure into
one :class:`RedisNodeError` line.

Why a module of its own: redis-py, the socket and the TLS layer each fail in
their own way (``AuthenticationError``, ``WRONGPASS`` in a ``ResponseError``,
``ConnectionRefusedError`` three causes deep, ``SSLError`` reasons, ...).
:func:`error_for` is the one place that maps them all to a sentence naming the
node and what to do (``check --password``, ``use rediss://``, ``grant +psync``);
every other module of the Redis side connects and calls through here.
"""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from backupctl.core.timing import Sleep
from backupctl.redis.address import ConnectionSpec
from backupctl.redis.errors import RedisNodeError

__all__ = [
    "Redis",
    "as_text",
    "call",
    "client_address",
    "client_spec",
    "command_error",
    "connect",
    "error_for",
    "exec_command",
    "scrub",
]

#: The client type :func:`connect` returns (so callers need not import redis).
Redis = redis.Redis

_PASSWORD_HINT = (
    "check the password in the URL (redis://[user]:PASSWORD@host:port), "
    "--password-file or REDIS_PASSWORD"
)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen and len(seen) < 10:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def scrub(text: str, spec: ConnectionSpec) -> str:
    """``text`` on one line, with ``spec``'s password replaced by ``***``."""
    if spec.password:
        text = text.replace(spec.password, "***")
    return " ".join(text.split())


def error_for(exc: BaseException, spec: ConnectionSpec, timeout: float) -> RedisNodeError:
    """Map anything raised while talking to ``spec`` to a RedisNodeError."""
    if isinstance(exc, RedisNodeError):
        return exc
    where = spec.display
    chain = _chain(exc)
    text = scrub(" | ".join(str(e) for e in chain), spec)
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
            f"Redis at {where} has no password set, but one was given: drop the password "
            "from the URL, --password-file and REDIS_PASSWORD, or set requirepass on the server",
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
        detail = scrub(getattr(ssl_errs[0], "reason", None) or str(ssl_errs[0]), spec)
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
        raise error_for(exc, spec, timeout) from None
    return client


def client_address(client: redis.Redis) -> str:
    """``host:port`` of the node ``client`` talks to, for messages."""
    kw = client.connection_pool.connection_kwargs
    host, port = kw.get("host", "?"), kw.get("port", "?")
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def client_spec(client: redis.Redis) -> ConnectionSpec:
    """The :class:`ConnectionSpec` behind ``client`` (address and credentials
    only: enough to name the node and scrub its password from messages)."""
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
    no retries, no error mapping (see :func:`call` for those)."""
    command: Any = client.execute_command
    return command(*args)


def as_text(value: Any) -> str:
    """A reply as text, whether the client decodes responses or not."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def reply_map(value: Any) -> dict[str, Any]:
    """A map reply (RESP3's dict, or RESP2's flat ``[k1, v1, k2, v2, ...]``, as
    CONFIG GET and CLUSTER SHARDS give) with text keys; values as they came."""
    if isinstance(value, dict):
        return {as_text(k): v for k, v in value.items()}
    seq = list(value or [])
    return {as_text(seq[i]): seq[i + 1] for i in range(0, len(seq) - 1, 2)}


def call(client: redis.Redis, *args: Any, retries: int = 2, sleep: Sleep = time.sleep) -> Any:
    """``execute_command`` with a short retry on dropped connections, errors mapped."""
    spec = client_spec(client)
    timeout = float(client.connection_pool.connection_kwargs.get("socket_timeout") or 0)
    for attempt in range(retries + 1):
        try:
            return exec_command(client, *args)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if isinstance(exc, redis.AuthenticationError) or attempt == retries:
                raise error_for(exc, spec, timeout) from None
            sleep(0.2 * (attempt + 1))
        except redis.RedisError as exc:
            raise error_for(exc, spec, timeout) from None
    raise AssertionError("unreachable")  # pragma: no cover


def command_error(exc: redis.RedisError, client: redis.Redis) -> RedisNodeError:
    """redis-py's own words for a failed command (the password scrubbed), for
    callers that put them into a sentence of their own ("CLUSTER INFO failed:
    ...")."""
    if isinstance(exc, redis.TimeoutError):
        reason = "timeout"
    elif isinstance(exc, redis.ConnectionError):
        reason = "unreachable"
    else:
        reason = "error"
    return RedisNodeError(scrub(str(exc), client_spec(client)), reason=reason)
