"""DUMP payloads built from RDB value bytes; the payload route per target (pure)."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from backupctl.core.compat import value_route
from backupctl.redis.dump_payload import dump_payload, payload_version, split_payload
from backupctl.redis.rdb_commands import temp_name


def test_payload_is_the_bytes_redis_dump_gives() -> None:
    # redis.io's DUMP example: SET mykey 10 on an RDB 9 server.
    assert dump_payload(b"\x00\xc0\n", 9) == b"\x00\xc0\n\t\x00\xbem\x06\x89Z(\x00\n"


def test_relabelled_payload_keeps_the_value_and_a_right_crc() -> None:
    payload = dump_payload(b"\x00\x05hello", 12)
    relabelled = dump_payload(split_payload(payload)[0], 10)
    assert payload_version(relabelled) == 10
    assert split_payload(relabelled) == (b"\x00\x05hello", 10)
    with pytest.raises(ValueError, match="CRC"):
        split_payload(relabelled[:-1] + bytes([relabelled[-1] ^ 1]))


@pytest.mark.parametrize(
    ("magic", "rdb", "type_id", "since", "kind", "ttls", "target", "how", "version"),
    [
        ("REDIS", 10, 0, 1, "string", False, ("redis", "8.0.2"), "payload", 10),
        ("REDIS", 12, 0, 1, "string", False, ("redis", "7.0.15"), "payload", 10),
        ("REDIS", 12, 20, 11, "set", False, ("redis", "7.0.15"), "rebuild", 0),
        ("REDIS", 12, 21, 11, "stream", False, ("redis", "7.0.15"), "rebuild", 0),
        ("REDIS", 12, 25, 12, "hash", True, ("valkey", "8.1.1"), "refuse", 0),
        ("REDIS", 12, 25, 12, "hash", True, ("valkey", "9.1.2"), "rebuild", 0),
        ("REDIS", 12, 17, 10, "zset", False, ("valkey", "9.1.2"), "payload", 11),
        ("VALKEY", 80, 20, 11, "set", False, ("valkey", "9.1.2"), "payload", 80),
        ("VALKEY", 80, 20, 11, "set", False, ("redis", "8.0.2"), "payload", 12),
        ("VALKEY", 80, 22, 80, "hash", True, ("redis", "8.0.2"), "rebuild", 0),
        ("VALKEY", 80, 7, 8, "module", False, ("redis", "8.0.2"), "payload", 12),
        ("REDIS", 11, 0, 1, "string", False, ("redis", "99.0"), "payload", 11),
    ],
)
def test_value_route_table(
    magic: str, rdb: int, type_id: int, since: int, kind: str, ttls: bool,
    target: tuple[str, str], how: str, version: int,
) -> None:  # fmt: skip
    route = value_route(magic, rdb, type_id, since, kind, ttls, *target)
    assert (route.how, route.version) == (how, version)
    if how == "refuse":
        assert kind in route.reason or "field TTLs" in route.reason


@pytest.mark.parametrize("key", [b"plain", b"user:{42}:name", b"a{b", b"\xff\x00bin", b"x" * 300])
def test_temp_name_is_in_the_key_slot(key: bytes) -> None:
    tmp = temp_name(key, b"abc")
    assert tmp != key and key_slot(tmp) == key_slot(key)


def test_temp_name_of_a_key_that_cannot_be_wrapped_is_the_key() -> None:
    for key in (b"a}b", b"{}odd"):
        assert temp_name(key, b"abc") == key
