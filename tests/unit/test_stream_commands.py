"""A stream rebuilt with commands from its RDB bytes (pure: hand-built RDB values)."""

from __future__ import annotations

import io

import pytest

from backupctl.redis.rdb_commands import rebuild
from backupctl.redis.rdb_source import RdbSource
from backupctl.redis.stream_commands import stream_commands

from support.rdb_build import listpack, ln, st, stream_node, stream_value

ID_1000 = (1000).to_bytes(8, "big") + (0).to_bytes(8, "big")


def commands(value: bytes, type_id: int) -> list[tuple[bytes, ...]]:
    return list(stream_commands(RdbSource(io.BytesIO(value), len(value)), type_id, b"s"))


NODE = stream_node([{"a": "1"}, {"a": "2"}, {"b": "x", "c": "y"}])


@pytest.mark.parametrize(
    ("type_id", "layout", "counters", "group"),
    [
        (21, 3, (b"ENTRIESADDED", b"2", b"MAXDELETEDID", b"0-0"), (b"ENTRIESREAD", b"2")),
        (19, 2, (b"ENTRIESADDED", b"2", b"MAXDELETEDID", b"0-0"), (b"ENTRIESREAD", b"2")),
        (15, 1, (), ()),  # RDB 9: no counters, XSETID with the last ID only
    ],
    ids=["rdb11", "rdb10", "rdb9"],
)
def test_entries_ids_counters_groups_consumers_and_pending_entries(
    type_id: int, layout: int, counters: tuple[bytes, ...], group: tuple[bytes, ...]
) -> None:
    got = commands(stream_value(layout, NODE), type_id)
    assert got == [
        (b"XADD", b"s", b"1000-0", b"a", b"1"),
        (b"XADD", b"s", b"1000-1", b"a", b"2"),
        (b"XADD", b"s", b"1000-2", b"b", b"x", b"c", b"y"),
        (b"XSETID", b"s", b"1000-1", *counters),
        (b"XGROUP", b"CREATE", b"s", b"group0", b"1000-1", *group),
        (b"XGROUP", b"CREATECONSUMER", b"s", b"group0", b"alice"),
        (b"XCLAIM", b"s", b"group0", b"alice", b"0", b"1000-0", b"TIME", b"5",
         b"RETRYCOUNT", b"1", b"FORCE", b"JUSTID"),
    ]  # fmt: skip


def test_deleted_entries_are_left_out_and_the_max_deleted_id_kept() -> None:
    # master fields [f]; entry 0 live (same fields), entry 1 deleted (flag 1|2), entry 2
    # deleted with its own fields (flag 1), entry 3 live with its own fields
    items: list[int | bytes | str] = [2, 2, 1, "f", 0]
    items += [2, 0, 0, "v0", 4]
    items += [3, 0, 1, "v1", 4]
    items += [1, 5, 0, 1, "g", "v2", 6]
    items += [0, 7, 3, 1, "h", "v3", 6]
    value = ln(1) + st(ID_1000) + st(listpack(items))
    value += ln(2) + ln(1007) + ln(3)  # length, last ID 1007-3
    value += ln(1000) + ln(0) + ln(1005) + ln(0) + ln(4)  # first, max deleted, added
    value += ln(0)  # no groups
    assert commands(value, 21) == [
        (b"XADD", b"s", b"1000-0", b"f", b"v0"),
        (b"XADD", b"s", b"1007-3", b"h", b"v3"),
        (b"XSETID", b"s", b"1007-3", b"ENTRIESADDED", b"4", b"MAXDELETEDID", b"1005-0"),
    ]


def test_an_empty_stream_with_a_group_whose_entries_read_is_unknown() -> None:
    value = ln(0) + ln(0) + ln(42) + ln(7)  # no nodes, length 0, last ID 42-7
    value += ln(0) + ln(0) + ln(42) + ln(7) + ln(3)
    value += ln(1) + st("g") + ln(42) + ln(7) + ln((1 << 64) - 1)  # entries read: -1
    value += ln(0) + ln(0)  # no PEL, no consumers
    assert commands(value, 21) == [
        (b"XGROUP", b"CREATE", b"s", b"backupctl-empty-stream", b"$", b"MKSTREAM"),
        (b"XGROUP", b"DESTROY", b"s", b"backupctl-empty-stream"),
        (b"XSETID", b"s", b"42-7", b"ENTRIESADDED", b"3", b"MAXDELETEDID", b"42-7"),
        (b"XGROUP", b"CREATE", b"s", b"g", b"42-7"),
    ]


def test_a_stream_is_built_under_the_temp_name_then_renamed_with_its_expiry() -> None:
    value = stream_value(3, NODE)
    got = list(rebuild(RdbSource(io.BytesIO(value), len(value)), 21, "stream", b"s", b"t",
                       expire_ms=99, replace=False))  # fmt: skip
    assert got[0] == (b"DEL", b"t")
    assert got[1][:3] == (b"XADD", b"t", b"1000-0")
    assert got[-2:] == [(b"PEXPIREAT", b"t", b"99"), (b"RENAMENX", b"t", b"s")]
