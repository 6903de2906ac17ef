"""Redis or Valkey, as INFO says it; and the manifest's new fields (flavour,
server version, RDB magic) written, read back, and defaulted for manifests
written before them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from backupctl.redis.info import server_flavour
from backupctl.redis.rdb import rdb_header
from backupctl.store.catalog import ArchiveEntry, FileEntry, Manifest, NodeEntry

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "docs" / "manifest.schema.json").read_text()
)


@pytest.mark.parametrize(
    ("info", "expected"),
    [  # INFO server as the real servers answer it
        ({"redis_version": "7.0.15"}, ("redis", "7.0.15")),
        ({"redis_version": "8.0.2"}, ("redis", "8.0.2")),
        ({"redis_version": "7.2.4", "server_name": "valkey", "valkey_version": "8.1.1"},
         ("valkey", "8.1.1")),
        ({"redis_version": "7.2.4", "server_name": "valkey", "valkey_version": "9.1.2"},
         ("valkey", "9.1.2")),
        ({"redis_version": "7.2.4", "server_name": "valkey"}, ("valkey", "7.2.4")),
        ({"redis_version": b"7.2.4", "valkey_version": b"9.1.2"}, ("valkey", "9.1.2")),
        ({}, ("redis", "0")),
    ],
)  # fmt: skip
def test_server_flavour(info: dict[str, Any], expected: tuple[str, str]) -> None:
    assert server_flavour(info) == expected


@pytest.mark.parametrize(
    ("head", "expected"),
    [(b"REDIS0010", ("REDIS", 10)), (b"REDIS0012", ("REDIS", 12)), (b"VALKEY080", ("VALKEY", 80))],
)
def test_rdb_header(head: bytes, expected: tuple[str, int]) -> None:
    assert rdb_header(head) == expected


@pytest.mark.parametrize("head", [b"VALKEY08", b"REDIS001x", b"KEYDB0010", b""])
def test_not_an_rdb_header(head: bytes) -> None:
    with pytest.raises(ValueError):
        rdb_header(head)


def _manifest(**node: Any) -> Manifest:
    entry = NodeEntry(
        name="redis-0",
        role="master",
        redis_version="7.2.4",
        rdb_version=80,
        snapshot_time="2026-12-06T11:00:00Z",
        keys=3,
        archive=ArchiveEntry(key="redis-0.tar.zst", size=10, sha256="a" * 64, compression="zstd"),
        files=[FileEntry(path="dump.rdb", size=5, sha256="b" * 64, kind="rdb")],
        **node,
    )
    return Manifest(
        id="backup-20261206-110000",
        target="ns/app",
        created="2026-12-06T11:00:00Z",
        tool_version="0.1.0",
        redis_version="7.2.4",
        method="bgsave",
        compression="zstd",
        nodes=[entry],
        flavour="valkey",
        server_version="9.1.2",
    )


def test_the_manifest_records_flavour_server_version_and_magic() -> None:
    m = _manifest(flavour="valkey", server_version="9.1.2", rdb_magic="VALKEY")
    doc = m.to_json()
    jsonschema.validate(doc, SCHEMA)
    assert doc["redis"] == {
        "version": "7.2.4", "mode": "standalone", "flavour": "valkey", "serverVersion": "9.1.2"
    }  # fmt: skip
    node = doc["nodes"][0]
    assert (node["flavour"], node["serverVersion"], node["redisVersion"]) == (
        "valkey", "9.1.2", "7.2.4")  # fmt: skip
    assert (node["rdbMagic"], node["rdbVersion"]) == ("VALKEY", 80)
    back = Manifest.loads(m.dumps())
    assert back == m and back.nodes[0].version == "9.1.2" and back.version == "9.1.2"


def test_a_manifest_written_before_these_fields_still_reads_as_redis() -> None:
    doc = _manifest().to_json()
    del doc["redis"]["flavour"], doc["redis"]["serverVersion"]
    for key in ("flavour", "serverVersion", "rdbMagic"):
        del doc["nodes"][0][key]
    jsonschema.validate(doc, SCHEMA)
    m = Manifest.from_json(doc)
    assert (m.flavour, m.version) == ("redis", "7.2.4")
    n = m.nodes[0]
    assert (n.flavour, n.version, n.rdb_magic) == ("redis", "7.2.4", None)
