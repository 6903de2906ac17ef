"""``restore --to-redis``'s writes as packed RESTORE commands
(``load.Server.write_packed``, fed by the string hot path): a key the target
already holds with exactly the payload is fine, one holding other data stops
the load naming it -- read back from the packed command only then -- and
batches go through a TLS connection (no low-water mark there) as through
plain TCP."""

from __future__ import annotations

import pytest

from backupctl.redis.address import parse_redis_url
from backupctl.redis.load import LoadError, open_target
from backupctl.redis.resp_pipeline import pack_restore

from support.redis_servers import RedisFactory


def test_a_key_holding_the_payload_is_fine_one_with_other_data_is_named(
    redis_factory: RedisFactory,
) -> None:
    srv = redis_factory()
    c = srv.client(decode_responses=False)
    c.set(b"same", b"1")
    c.set(b"other", b"2")
    c.set(b"tmp", b"3")
    same, three = c.dump(b"same"), c.dump(b"tmp")
    assert same is not None and three is not None
    c.delete(b"tmp")
    with open_target(parse_redis_url(srv.url), flush=True, timeout=30) as dest:  # no FLUSHALL
        dest.write_packed(0, [pack_restore(b"same", 0, same, False, None, None),
                              pack_restore(b"new", 0, same, False, None, None)],
                          replace=False)  # fmt: skip
        assert dest.sync() == {0: 2}  # "same" already held it: counted as written
        dest.write_packed(0, [pack_restore(b"x%d" % i, 0, three, False, None, None)
                              for i in range(5)] + [pack_restore(b"other", 0, three, False,
                                                                 None, None)],
                          replace=False)  # fmt: skip
        with pytest.raises(LoadError, match="key 'other' already exists with other data"):
            dest.sync()
    assert c.get(b"other") == b"2" and c.get(b"new") == b"1" and c.get(b"x4") == b"3"


def test_batches_over_tls_are_written_and_counted_like_over_tcp(
    redis_factory: RedisFactory,
) -> None:
    srv = redis_factory(tls=True)
    c = srv.client(decode_responses=False)
    c.set(b"v", b"x" * 100)
    payload = c.dump(b"v")
    assert payload is not None
    c.delete(b"v")
    written = 0
    with open_target(parse_redis_url(srv.url), flush=False, timeout=30) as dest:
        for batch in range(20):
            packed = [pack_restore(b"k:%d:%d" % (batch, i), 0, payload, False, None, None)
                      for i in range(500)]  # fmt: skip
            written += dest.write_packed(0, packed, replace=False)
        written += sum(dest.sync().values())
    assert written == 10_000 == c.dbsize()
