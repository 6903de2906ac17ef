"""What loading keys into one Redis node needs, for both kinds of target in
:mod:`backupctl.redis.load` (a standalone server, a cluster's masters): the
key record, one-line errors with the password scrubbed, binary clients per
database, the check of a key that already holds a value, and the redis-py
pipelines of the cluster route and of rebuilt values.

Why a module of its own: :mod:`backupctl.redis.load` holds the two targets and
their routing; these are the node-level pieces both use.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import suppress
from typing import Any, NamedTuple, overload

import redis

from backupctl.redis import resp_pipeline as rp
from backupctl.redis.address import ConnectionSpec
from backupctl.redis.connection import connect, exec_command
from backupctl.redis.errors import RedisNodeError
from backupctl.redis.resp_pipeline import Packed
from backupctl.redis.restore_strings import restore_parts

#: One command of a value rebuilt with commands (rdb_commands).
Command = tuple[bytes, ...]

Payload = bytes | rp.FileSlice  # a DUMP payload, or one sent from the RDB file where it lies


class Item(NamedTuple):
    """One key to write with RESTORE ... ABSTTL [IDLETIME s | FREQ f]."""

    key: bytes
    expire_ms: int  # absolute Unix time in ms; 0 = no expiry
    payload: Payload
    idle: int | None = None  # LRU idle seconds
    freq: int | None = None  # LFU frequency


class PackedRestores(Sequence[Item]):
    """The keys of a batch of packed RESTOREs, read back from a command only
    when asked (an error reply): nothing is built per key on the way."""

    __slots__ = ("_packed",)

    def __init__(self, packed: Sequence[Packed]) -> None:
        self._packed = packed

    def __len__(self) -> int:
        return len(self._packed)

    @overload
    def __getitem__(self, index: int) -> Item: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Item]: ...
    def __getitem__(self, index: int | slice) -> Item | Sequence[Item]:
        if isinstance(index, slice):
            return [Item(*restore_parts(p)) for p in self._packed[index]]
        return Item(*restore_parts(self._packed[index]))


class LoadError(RedisNodeError):
    """The load was refused or failed; ``str()`` is one line."""


def fail(spec: ConnectionSpec, what: str, exc: BaseException) -> LoadError:
    """One clear line for ``what`` failing on ``spec`` (the password scrubbed)."""
    text = str(exc)
    if spec.password:
        text = text.replace(spec.password, "***")
    text = " ".join(text.split())
    if "DUMP payload version" in text:
        text += " (the target does not take this payload's RDB version)"
    return LoadError(f"{spec.display}: {what} failed: {text}")


def run_command(client: redis.Redis, spec: ConnectionSpec, *args: Any) -> Any:
    try:
        return exec_command(client, *args)
    except redis.RedisError as exc:
        raise fail(spec, " ".join(str(a) for a in args[:2]), exc) from None


def binary_client(spec: ConnectionSpec, timeout: float) -> redis.Redis:
    """A redis-py client for ``spec`` returning bytes (keys may be any bytes)."""
    decoded = connect(spec, timeout=min(timeout, 60.0))
    pool = decoded.connection_pool
    kwargs = {**pool.connection_kwargs, "decode_responses": False}
    decoded.close()
    return redis.Redis(
        connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    )


def select_db(client: redis.Redis, db: int) -> redis.Redis:
    """The same server's database ``db``, through a new pool (SELECT is per connection)."""
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "db": db}
    return redis.Redis(
        connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    )


def databases(client: redis.Redis) -> int:
    """How many databases the server has (16 when CONFIG is not allowed)."""
    try:
        raw: Any = client.config_get("databases")
        return max(16, int(raw.get("databases", 16)))
    except (redis.RedisError, ValueError, TypeError):
        return 16


def shown_key(key: bytes) -> str:
    return repr(key[:80].decode("utf-8", "replace"))


def same_value(client: redis.Redis, key: bytes, payload: Payload, *, asking: bool = False) -> bool:
    """Whether ``key`` already holds exactly ``payload`` (SCAN may return a key twice)."""
    if isinstance(payload, rp.FileSlice):  # rare (a key twice): held for the comparison
        payload = rp.slice_payload(payload)
    with suppress(redis.RedisError):
        if asking:
            pipe = client.pipeline(transaction=False)
            exec_command(pipe, "ASKING")
            pipe.dump(key)
            return bool(pipe.execute()[1] == payload)
        return bool(client.dump(key) == payload)
    return False


def busy_error(spec: ConnectionSpec, key: bytes) -> LoadError:
    return LoadError(
        f"{spec.display}: key {shown_key(key)} already exists with other data (written by another "
        "client while loading?); stop writers and load again with --flush"
    )


def queue_restore(pipe: Any, item: Item, replace: bool) -> None:
    key, expire, payload, idle, freq = item  # a FileSlice whole: redis-py needs it so (cluster)
    payload = rp.slice_payload(payload) if isinstance(payload, rp.FileSlice) else payload
    pipe.restore(key, expire, payload, replace=replace, absttl=True, idletime=idle,
                 frequency=freq if idle is None else None)  # fmt: skip


def pipelined(
    client: redis.Redis, spec: ConnectionSpec, key: bytes, commands: Iterable[Command], budget: int
) -> None:
    """``commands`` in pipelines of at most ``budget`` bytes; the first error raises."""
    pipe = client.pipeline(transaction=False)
    size = 0
    for command in commands:
        exec_command(pipe, *command)
        size += sum(len(a) for a in command)
        if size >= budget:
            flush_pipe(pipe, spec, key)
            size = 0
    flush_pipe(pipe, spec, key)


def flush_pipe(pipe: Any, spec: ConnectionSpec, key: bytes) -> None:
    try:
        results = pipe.execute(raise_on_error=False)
    except redis.RedisError as exc:
        raise fail(spec, f"rebuilding key {shown_key(key)}", exc) from None
    for result in results:
        if isinstance(result, Exception):
            if "no such key" in str(result):  # every field's TTL had passed: nothing to rename
                continue
            raise fail(spec, f"rebuilding key {shown_key(key)}", result)
