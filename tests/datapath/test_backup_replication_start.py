"""``run --method replication`` asks for the RDB before the store is ready:
the store is checked and the backup id picked while the master forks and
streams (the stream is held meanwhile), so the store's set-up is no longer
ahead of the snapshot in the backup's wall time. A broken store still fails
the run with the store's error, and the replication connection is let go."""

from __future__ import annotations

import time

import pytest
import redis

from backupctl.ops.backup import run_backup
from backupctl.ops.backup_options import RunOptions
from backupctl.redis.address import parse_redis_url
from backupctl.store import catalog
from backupctl.store.backends.base import StorageError
from backupctl.store.backends.memory import MemoryBackend

from support.redis_servers import RedisFactory, populate, wait_for


def _full_syncs(client: redis.Redis) -> int:
    return int(client.info("stats")["sync_full"])


class _SlowStore(MemoryBackend):
    """A store whose check takes until the server has started a full sync
    (at most 5 s), noting whether it had."""

    def __init__(self, name: str, client: redis.Redis, fail: bool = False) -> None:
        super().__init__(name)
        self._client = client
        self._fail = fail
        self.sync_started_before_ready: bool | None = None

    def check(self) -> None:
        deadline = time.monotonic() + 5
        while _full_syncs(self._client) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        self.sync_started_before_ready = _full_syncs(self._client) > 0
        if self._fail:
            raise StorageError("memory://slow: access denied (test)")
        super().check()


def test_the_rdb_is_asked_for_while_the_store_is_being_set_up(
    redis_factory: RedisFactory,
) -> None:
    server = redis_factory()
    client = server.client()
    keys = populate(client, 2000)
    store = _SlowStore("replication-start", client)
    opts = RunOptions(
        redis=parse_redis_url(server.url, env={}),
        store=store,
        target="t/start",
        method="replication",
    )
    manifest = run_backup(opts)
    assert store.sync_started_before_ready is True
    assert manifest.nodes[0].keys == keys
    listed = [e.id for e in catalog.scan(store, "t/start") if e.complete]
    assert listed == [manifest.id]


def test_a_broken_store_fails_the_run_and_lets_the_stream_go(
    redis_factory: RedisFactory,
) -> None:
    server = redis_factory()
    client = server.client()
    populate(client, 2000)
    store = _SlowStore("replication-broken", client, fail=True)
    opts = RunOptions(
        redis=parse_redis_url(server.url, env={}),
        store=store,
        target="t/broken",
        method="replication",
    )
    with pytest.raises(StorageError, match="access denied"):
        run_backup(opts)
    assert store.sync_started_before_ready is True
    # the replica connection the run opened is gone (a positive sign first:
    # the server did count the sync above)
    wait_for(
        lambda: int(client.info("replication")["connected_slaves"]) == 0,
        timeout=10,
        what="the run's replication connection closed",
    )
    assert list(catalog.scan(store, "t/broken")) == []


def test_with_redis_unreachable_a_broken_store_is_still_named_first(
    redis_factory: RedisFactory,
) -> None:
    server = redis_factory()

    class _Broken(MemoryBackend):
        def check(self) -> None:
            raise StorageError("memory://broken: access denied (test)")

    spec = parse_redis_url(server.url, env={})
    server.stop()
    opts = RunOptions(redis=spec, store=_Broken("broken-first"), target="t/x", method="replication")
    with pytest.raises(StorageError, match="access denied"):
        run_backup(opts)
