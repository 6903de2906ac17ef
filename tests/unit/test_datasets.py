"""The dataset generator's decisions (tests/support/datasets.py): which server
offers what, and the record of what a fill wrote. Its writing is exercised by
tests/datapath/test_restore_to_redis_matrix.py on every server."""

from __future__ import annotations

import pytest

from support.datasets import Features, Written, features, server_of


@pytest.mark.parametrize(
    ("flavour", "version", "want"),
    [
        ("redis", "7.0.15", Features(listpack_small=False, field_ttls=False, hsetex=False)),
        ("redis", "7.2.4", Features(listpack_small=True, field_ttls=False, hsetex=False)),
        ("redis", "7.4.0", Features(listpack_small=True, field_ttls=True, hsetex=False)),
        ("redis", "8.0.2", Features(listpack_small=True, field_ttls=True, hsetex=True)),
        ("valkey", "8.1.1", Features(listpack_small=True, field_ttls=False, hsetex=False)),
        ("valkey", "9.0.0", Features(listpack_small=True, field_ttls=True, hsetex=True)),
        ("valkey", "9.1.2", Features(listpack_small=True, field_ttls=True, hsetex=True)),
        ("redis", "10", Features(listpack_small=True, field_ttls=True, hsetex=True)),
    ],
)
def test_features_follow_the_version_that_introduced_them(
    flavour: str, version: str, want: Features
) -> None:
    assert features(flavour, version) == want


def test_an_unknown_flavour_is_refused() -> None:
    with pytest.raises(ValueError, match="keydb"):
        features("keydb", "6.3.4")


@pytest.mark.parametrize(
    ("info", "want"),
    [
        ({"redis_version": "7.0.15"}, ("redis", "7.0.15")),
        ({"redis_version": "7.2.4", "valkey_version": "8.1.1"}, ("valkey", "8.1.1")),
    ],
)
def test_server_of_reads_valkey_version_before_the_redis_compatible_one(
    info: dict[str, str], want: tuple[str, str]
) -> None:
    assert server_of(info) == want


def test_written_counts_keys_per_database_and_merges() -> None:
    a = Written()
    a.add(0, "string", 3)
    a.add(0, "hash")
    a.expiring.append((0, b"soon"))
    b = Written(size=10)
    b.add(0, "string", 2)
    b.add(5, "list")
    b.field_ttls.append((5, b"h"))
    merged = a.merge(b)
    assert merged.counts == {0: {"string": 5, "hash": 1}, 5: {"list": 1}}
    assert merged.keys_per_db() == {0: 6, 5: 1}
    assert merged.keys == 7
    assert merged.size == 10
    assert merged.expiring == [(0, b"soon")] and merged.field_ttls == [(5, b"h")]
