"""Fuzzing the ``redis://`` URL parser: whatever text a user passes as
``--redis``, ``--sentinel``, ``--to-redis`` or ``--to-cluster``, the parser
returns a :class:`ConnectionSpec` or raises the one documented error
(:class:`RedisNodeError`, reason ``config``) whose message is one line --
never another exception (a ``ValueError`` from urllib would be reported as
"this is a bug")."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as hs

from backupctl.redis.address import ConnectionSpec, parse_redis_url
from backupctl.redis.errors import RedisNodeError

PIECES = hs.sampled_from(
    ["redis://", "rediss://", "://", ":", "@", "/", "?", "#", "[", "]", "::1", "%", "%4",
     "%40", "127.0.0.1", "h", "6379", "99999", "-1", "0", "db=", "&", "=", "ssl_cert_reqs",
     "none", "ssl_check_hostname", "maybe", "ssl_ca_certs", " ", "\t", "é", "\u2028", "x"]
)  # fmt: skip
URLS = hs.one_of(
    hs.text(max_size=60),
    hs.lists(PIECES, max_size=12).map("".join),
    hs.tuples(hs.sampled_from(["redis://", "rediss://"]), hs.text(max_size=40)).map("".join),
)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(url=URLS)
def test_any_text_parses_or_raises_the_documented_error(url: str) -> None:
    try:
        spec = parse_redis_url(url, env={})
    except RedisNodeError as exc:
        assert exc.reason == "input"
        assert "\n" not in str(exc) and str(exc)
    else:
        assert isinstance(spec, ConnectionSpec)
        assert spec.host and 0 < spec.port < 65536 and spec.db >= 0
