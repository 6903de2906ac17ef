"""A new RDB snapshot on the node's disk: BGSAVE, and waiting for the AOF
directory to hold still.

Why a module of its own: "the snapshot holds every write acknowledged before
the backup started" is the promise of ``method: bgsave``, and keeping it takes
care -- a save already running is not ours, ``LASTSAVE`` has one-second
resolution, ``BGSAVE SCHEDULE`` defers during an AOF rewrite. :func:`bgsave`
judges completion by the ``INFO persistence`` counters (``rdb_saves``,
Redis >= 7.0) and falls back to ``LASTSAVE`` only on older servers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import redis

from backupctl.core.timing import Monotonic, Sleep
from backupctl.redis.connection import (
    as_text,
    call,
    client_address,
    client_spec,
    error_for,
    exec_command,
)
from backupctl.redis.errors import RedisNodeError
from backupctl.redis.info import config_get, int_field, read_info
from backupctl.redis.polling import Deadline, wait_until

__all__ = ["bgsave", "wait_aof_rewrite_idle"]


def _rdb_in_progress(p: Mapping[str, Any]) -> bool:
    return bool(int_field(p, "rdb_bgsave_in_progress"))


def _bgsave_failed(client: redis.Redis, p: Mapping[str, Any]) -> RedisNodeError:
    where = client_address(client)
    dir_value, _ = config_get(client, "dir")
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
    spec = client_spec(client)
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
            raise error_for(exc, spec, 0) from None
        except redis.RedisError as exc:
            raise error_for(exc, spec, 0) from None
        return "scheduled" if "scheduled" in reply else "started"
    raise AssertionError("unreachable")  # pragma: no cover


def bgsave(
    client: redis.Redis,
    *,
    timeout: float = 3600,
    poll: float = 0.05,
    clock: Monotonic = time.monotonic,
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
    deadline = Deadline(timeout, clock)
    where = client_address(client)

    state: dict[str, Any] = {}

    def persistence() -> dict[str, Any]:
        state["p"] = read_info(client, "persistence", sleep=sleep)
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
        wait_until(idle, deadline, poll, sleep, too_slow("get a chance to start"))
        target = int_field(state["p"], "rdb_saves") + 1
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
        return int_field(p, "rdb_saves") >= target and not _rdb_in_progress(p)

    wait_until(done, deadline, poll, sleep, too_slow("finish"))
    p = state["p"]
    if as_text(p.get("rdb_last_bgsave_status", "ok")) != "ok":
        raise _bgsave_failed(client, p)
    return datetime.fromtimestamp(int_field(p, "rdb_last_save_time"), UTC)


def _bgsave_by_lastsave(
    client: redis.Redis,
    deadline: Deadline,
    poll: float,
    sleep: Sleep,
    too_slow: Callable[[str], Callable[[], RedisNodeError]],
) -> datetime:
    """bgsave() for servers without ``rdb_saves`` (Redis < 7.0)."""
    state: dict[str, Any] = {"last0": 0}

    def persistence() -> dict[str, Any]:
        state["p"] = read_info(client, "persistence", sleep=sleep)
        return dict(state["p"])

    def idle() -> bool:
        return not _rdb_in_progress(persistence())

    # LASTSAVE has one-second resolution: start only once the server's clock
    # is past the previous save's second, so our completion time is later.
    def past_last0() -> bool:
        now = call(client, "TIME", sleep=sleep)
        return int(as_text(now[0])) > int(state["last0"])

    outcome = "busy"
    last0 = 0
    status0 = "ok"
    for _ in range(1000):
        wait_until(idle, deadline, poll, sleep, too_slow("get a chance to start"))
        last0 = state["last0"] = int_field(state["p"], "rdb_last_save_time")
        status0 = as_text(state["p"].get("rdb_last_bgsave_status", "ok"))
        wait_until(past_last0, deadline, poll, sleep, too_slow("get a chance to start"))
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
        if int_field(p, "rdb_last_save_time") > last0:
            return True
        status = as_text(p.get("rdb_last_bgsave_status", "ok"))
        return saw_running or (status != "ok" and status0 == "ok")

    wait_until(done, deadline, poll, sleep, too_slow("finish"))
    p = state["p"]
    saved = int_field(p, "rdb_last_save_time")
    if saved <= last0 or as_text(p.get("rdb_last_bgsave_status")) != "ok":
        raise _bgsave_failed(client, p)
    return datetime.fromtimestamp(int_field(p, "rdb_last_save_time"), UTC)


def wait_aof_rewrite_idle(
    client: redis.Redis,
    *,
    timeout: float = 3600,
    poll: float = 0.05,
    clock: Monotonic = time.monotonic,
    sleep: Sleep = time.sleep,
) -> None:
    """Wait until no AOF rewrite runs or is scheduled (the AOF dir is stable)."""
    deadline = Deadline(timeout, clock)
    where = client_address(client)

    def idle() -> bool:
        p = read_info(client, "persistence", sleep=sleep)
        running = int_field(p, "aof_rewrite_in_progress")
        return not running and not int_field(p, "aof_rewrite_scheduled")

    wait_until(
        idle,
        deadline,
        poll,
        sleep,
        lambda: RedisNodeError(
            f"the AOF rewrite on Redis at {where} did not finish within {timeout:g} s",
            reason="timeout",
        ),
    )
