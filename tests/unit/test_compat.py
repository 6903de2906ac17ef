"""The one compatibility table: what each server writes and which backup it
loads, as the real servers did it (see backupctl.core.compat's docstring)."""

from __future__ import annotations

import pytest

from backupctl.core.compat import (
    display,
    load_problem,
    parse_server_version,
    parse_version,
    reads,
    supported,
    tool_reads,
    writes,
)


@pytest.mark.parametrize(
    ("flavour", "version", "header"),
    [
        ("redis", "7.0.15", ("REDIS", 10)),  # seen
        ("redis", "7.2.4", ("REDIS", 11)),
        ("redis", "7.4.1", ("REDIS", 12)),
        ("redis", "8.0.2", ("REDIS", 12)),  # seen
        ("redis", "8.2.1", ("REDIS", 12)),
        ("redis", "6.2.14", ("REDIS", 9)),
        ("valkey", "8.1.1", ("REDIS", 11)),  # seen
        ("valkey", "8.0.1", ("REDIS", 11)),
        ("valkey", "9.1.2", ("VALKEY", 80)),  # seen
        ("valkey", "9.0.0", ("VALKEY", 80)),
        ("redis", "1.2.0", None),
        ("redis", "unknown", None),
    ],
)
def test_what_each_server_writes(
    flavour: str, version: str, header: tuple[str, int] | None
) -> None:
    assert writes(flavour, version) == header


# What the real servers did on the test machine: every server started on every dump.
SEEN = {
    ("redis", "7.0.15"): ("REDIS", 10),
    ("redis", "8.0.2"): ("REDIS", 12),
    ("valkey", "8.1.1"): ("REDIS", 11),
    ("valkey", "9.1.2"): ("VALKEY", 80),
}
LOADS = {  # (target, backup writer) -> loaded
    ("7.0.15", "7.0.15"): True,
    ("7.0.15", "8.0.2"): False,
    ("7.0.15", "8.1.1"): False,
    ("7.0.15", "9.1.2"): False,
    ("8.0.2", "7.0.15"): True,
    ("8.0.2", "8.0.2"): True,
    ("8.0.2", "8.1.1"): True,
    ("8.0.2", "9.1.2"): False,
    ("8.1.1", "7.0.15"): True,
    ("8.1.1", "8.0.2"): False,
    ("8.1.1", "8.1.1"): True,
    ("8.1.1", "9.1.2"): False,
    ("9.1.2", "7.0.15"): True,
    ("9.1.2", "8.0.2"): False,  # strict (the default); relaxed loads it
    ("9.1.2", "8.1.1"): True,
    ("9.1.2", "9.1.2"): True,
}


@pytest.mark.parametrize(("target", "source"), sorted(LOADS))
def test_the_table_says_what_the_real_servers_did(target: str, source: str) -> None:
    flavour_of = {v: f for f, v in SEEN}
    b_flavour, t_flavour = flavour_of[source], flavour_of[target]
    magic, rdb = SEEN[(b_flavour, source)]
    assert reads(t_flavour, target, magic, rdb) is LOADS[(target, source)]
    problem = load_problem(b_flavour, source, magic, rdb, t_flavour, target)
    assert (problem is None) is LOADS[(target, source)]
    if problem is not None:  # both sides named
        assert display(b_flavour, source) in problem and display(t_flavour, target) in problem


@pytest.mark.parametrize(
    ("backup", "rdb", "target", "ok"),
    [  # the cases of the table this one replaced (core/versions.py), unchanged
        ("7.0.15", 10, "7.0.11", True),
        ("7.2.4", 11, "7.0.15", False),
        ("7.4.1", 12, "7.2.5", False),
        ("6.2.14", 9, "7.4.0", True),
        ("8.0.2", 12, "7.4.0", False),
        ("7.4.0", 12, "8.2.1", True),
        ("unknown", None, "7.0.0", True),
    ],
)
def test_redis_to_redis(backup: str, rdb: int | None, target: str, ok: bool) -> None:
    magic = "REDIS" if rdb is not None else None
    assert (load_problem("redis", backup, magic, rdb, "redis", target) is None) == ok


def test_messages_name_both_sides_and_the_way_out() -> None:
    p = load_problem("valkey", "9.1.2", "VALKEY", 80, "redis", "8.0.2")
    assert p is not None
    assert "VALKEY080" in p and "Valkey 9.1.2" in p and "Redis 8.0.2" in p
    assert "no VALKEY RDB" in p
    p = load_problem("redis", "8.0.2", "REDIS", 12, "valkey", "9.1.2")
    assert p is not None and "REDIS0012" in p and "rdb-version-check relaxed" in p
    p = load_problem("redis", "8.0.2", "REDIS", 12, "valkey", "8.1.1")
    assert p is not None and "relaxed" not in p
    p = load_problem("redis", "8.0.2", "REDIS", 12, "redis", "7.0.15")
    assert p is not None and "REDIS0012" in p and "Redis 8.0.2" in p and "Redis 7.0.15" in p
    p = load_problem("redis", "8.0.2", "REDIS", 12, "redis", "7.4.1")  # same format, older major
    assert p is not None and "major" in p and "Redis 8.0.2" in p and "Redis 7.4.1" in p


@pytest.mark.parametrize(
    ("backup", "target", "ok"),
    [  # cross-version routes users take (the list)
        (("redis", "7.0.15"), ("redis", "8.0.2"), True),  # 7.0 backup into 8.0
        (("valkey", "8.1.1"), ("valkey", "9.1.2"), True),  # Valkey 8 into Valkey 9
        (("redis", "7.2.4"), ("valkey", "8.1.1"), True),  # Redis 7.2-format into Valkey
        (("redis", "7.2.4"), ("valkey", "9.1.2"), True),
        (("valkey", "9.1.2"), ("valkey", "8.1.1"), False),  # downgrade
        (("redis", "7.4.1"), ("valkey", "8.1.1"), False),
    ],
)
def test_cross_version_routes(backup: tuple[str, str], target: tuple[str, str], ok: bool) -> None:
    """A manifest without magic / RDB version (older backupctl): the writer's row decides."""
    assert (load_problem(*backup, None, None, *target) is None) == ok


def test_unknown_magic_and_unknown_target() -> None:
    assert load_problem("redis", "8.0.2", "KEYDB", 10, "redis", "8.0.2") is not None
    assert load_problem("redis", "8.0.2", "REDIS", 12, "redis", "") is None  # cannot tell
    assert load_problem("", "8.0.2", "REDIS", 12, "", "8.0.2") is None  # flavour defaults


@pytest.mark.parametrize(
    ("output", "magic", "rdb", "expected"),
    [  # what the tools print for --version, seen
        ("redis-check-rdb 7.0.15", "REDIS", 10, ("redis-check-rdb 7.0.15", True)),
        ("redis-check-rdb 7.0.15", "REDIS", 12, ("redis-check-rdb 7.0.15", False)),
        ("redis-check-rdb 7.0.15", "VALKEY", 80, ("redis-check-rdb 7.0.15", False)),
        (
            "redis-check-rdb v=8.0.2 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=b8",
            "REDIS",
            12,
            ("redis-check-rdb 8.0.2", True),
        ),
        ("valkey-check-rdb v=8.1.1 sha=0", "REDIS", 11, ("valkey-check-rdb 8.1.1", True)),
        ("valkey-check-rdb v=8.1.1 sha=0", "REDIS", 12, ("valkey-check-rdb 8.1.1", False)),
        (
            "[offset 0] Checking RDB file --version",
            "REDIS",
            10,
            ("redis-check-rdb (version unknown)", None),
        ),
    ],
)
def test_tool_reads(output: str, magic: str, rdb: int, expected: tuple[str, bool | None]) -> None:
    assert tool_reads(output, magic, rdb) == expected


def test_supported_and_parse() -> None:
    assert supported("redis", "7.0.15") and supported("redis", "8.2.1")
    assert supported("valkey", "8.1.1") and supported("valkey", "9.1.2")
    assert not supported("redis", "6.2.14") and not supported("valkey", "7.2.4")
    assert parse_version("v7.4") == (7, 4) and parse_version("x") is None


@pytest.mark.parametrize(
    ("output", "expected"),
    [  # `redis-server --version` / `valkey-server --version`, seen
        (
            "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=1",
            ("redis", "7.0.15"),
        ),
        ("Redis server v=8.0.2 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64", ("redis", "8.0.2")),
        ("Valkey server v=9.1.2 sha=00000000:0 malloc=libc bits=64 build=1", ("valkey", "9.1.2")),
        ("KeyDB server v=6.3.4", None),
        ("bash: redis-server: not found", None),
    ],
)
def test_parse_server_version(output: str, expected: tuple[str, str] | None) -> None:
    assert parse_server_version(output) == expected
