"""Every backup and restore checks the RDB with backupctl's own reader, and
asks ``redis-check-rdb`` only when it reads that version; a restore refuses
up front an RDB the target cannot load. The real CLI, a real ``redis-server``
(Debian 12's 7.0.15, RDB 10), and stand-ins for an older tool or server:
tiny scripts on PATH that answer as the old versions do."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from support.cli_runner import assert_one_clear_error, cli
from support.damaged_archives import damage_rdb_in_archive
from support.redis_servers import RedisFactory, populate

#: What redis-check-rdb 7.0.15 prints for an RDB newer than it knows (here: for any file).
OLD_TOOL = """#!/bin/sh
echo "$*" >> "{log}"
if [ "$1" = "--version" ]; then echo "redis-check-rdb 6.2.14"; exit 0; fi
echo "[offset 0] Checking RDB file $1"
echo "--- RDB ERROR DETECTED ---"
echo "[offset 9] Can't handle RDB format version 10"
echo "[additional info] While doing: start"
echo "[info] 0 keys read"
exit 1
"""

OLD_SERVER = """#!/bin/sh
if [ "$1" = "--version" ]; then
  echo "Redis server v=6.2.14 sha=00000000:0 malloc=jemalloc-5.1.0 bits=64 build=1"; exit 0
fi
exit 1
"""


def _script(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def old_tool(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose only redis-check-rdb is too old for RDB 10, and its call log."""
    bin_dir, log = tmp_path / "old-bin", tmp_path / "old-tool.log"
    _script(bin_dir, "redis-check-rdb", OLD_TOOL.format(log=log))
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}, log


@pytest.mark.parametrize("method", ["bgsave", "replication"])
def test_a_checker_too_old_for_the_rdb_is_a_note_and_the_backup_restores_equal(
    method: str,
    old_tool: tuple[dict[str, str], Path],
    redis_factory: RedisFactory,
    tmp_path: Path,
) -> None:
    env, log = old_tool
    src = redis_factory()
    populate(src.client(), 20_000)
    digest, dbsize = src.digest(), src.dbsize()
    store = tmp_path / "store"
    store.mkdir()

    run = cli("run", "--redis", src.url, "--to", store, "--method", method, "--json", env=env)
    note = "note: redis-check-rdb 6.2.14 does not read RDB 10; checked with backupctl's own reader"
    assert run.stderr.strip().splitlines() == [note]
    manifest = json.loads(run.stdout)
    node = manifest["nodes"][0]
    assert manifest["keys"] == dbsize  # counted by the reader
    assert (node["rdbMagic"], node["rdbVersion"]) == ("REDIS", 10)
    assert (node["flavour"], node["serverVersion"]) == (
        "redis",
        src.client().info()["redis_version"],
    )
    assert manifest["redis"]["flavour"] == "redis"

    verified = cli("verify", store, "latest", env=env)
    assert [x for x in verified.stderr.splitlines() if not x.startswith("progress: ")] == [note]
    data = tmp_path / "restored"
    restored = cli("restore", store, "latest", "--to-dir", data, "--appendonly", "no", env=env)
    assert [x for x in restored.stderr.splitlines() if not x.startswith("progress: ")] == [note]
    server = redis_factory(dir=data)
    assert server.dbsize() == dbsize and server.digest() == digest
    if method == "bgsave":  # --to-redis runs no redis-check-rdb: no note (the target checks)
        target = redis_factory()
        loaded = cli("restore", store, "latest", "--to-redis", target.url, env=env)
        assert [x for x in loaded.stderr.splitlines() if not x.startswith("progress: ")] == []
        assert target.digest() == digest
    # The old tool was asked its version, never to judge a file.
    assert set(log.read_text().split()) == {"--version"}


#: A redis-check-rdb new enough for every RDB that calls every file corrupt.
REJECTING_TOOL = """#!/bin/sh
echo "$*" >> "{log}"
if [ "$1" = "--version" ]; then echo "redis-check-rdb 99.0.0"; exit 0; fi
echo "[offset 0] Checking RDB file $1"
echo "--- RDB ERROR DETECTED ---"
echo "[offset 9] Invalid object type"
echo "[info] 0 keys read"
exit 1
"""


def test_to_redis_runs_no_redis_check_rdb_while_verify_still_asks_it(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    """--to-redis relies on our reader's deep walk and the target's own RESTORE
    checks (version, CRC-64): a tool that rejects everything stops ``verify``
    but is never asked by ``--to-redis``, which loads the backup equal."""
    src = redis_factory()
    populate(src.client(), 5_000)
    digest = src.digest()
    store = tmp_path / "store"
    store.mkdir()
    cli("run", "--redis", src.url, "--to", store)
    log = tmp_path / "tool.log"
    bin_dir = tmp_path / "rejecting-bin"
    _script(bin_dir, "redis-check-rdb", REJECTING_TOOL.format(log=log))
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}

    refused = cli("verify", store, "latest", env=env, check=False)
    assert_one_clear_error(refused, "dump.rdb", "redis-check-rdb rejects it")
    assert any(line.endswith("dump.rdb") for line in log.read_text().splitlines())
    log.unlink()

    target = redis_factory()
    loaded = cli("restore", store, "latest", "--to-redis", target.url, env=env)
    assert [x for x in loaded.stderr.splitlines() if not x.startswith("progress: ")] == []
    assert target.digest() == digest
    assert not log.exists()  # never asked, not even its version


@pytest.mark.parametrize(
    ("damage", "command"),
    [
        ("flipped", "verify"),
        ("flipped", "restore"),
        ("truncated", "verify"),
        ("truncated", "restore"),
        ("flipped", "to-redis"),
        ("truncated", "to-redis"),
    ],
)
def test_a_corrupt_rdb_is_refused_with_its_offset_and_the_data_dir_is_untouched(
    damage: str, command: str, redis_factory: RedisFactory, tmp_path: Path
) -> None:
    src = redis_factory()
    populate(src.client(), 20_000)
    store = tmp_path / "store"
    store.mkdir()
    cli("run", "--redis", src.url, "--to", store, "--compression", "none")
    if damage == "flipped":
        damage_rdb_in_archive(store, b"\xfe\xff\xff\xff\xff\xff")
    else:
        damage_rdb_in_archive(store, None, cut=4096)

    data = tmp_path / "live"
    data.mkdir()
    (data / "dump.rdb").write_bytes(b"the live data")
    before = sorted((p.name, p.read_bytes()) for p in data.iterdir())
    target = redis_factory() if command == "to-redis" else None
    if command == "verify":
        proc = cli("verify", store, "latest", check=False)
    elif target is not None:  # the RDB walked while it is unpacked: refused all the same
        target.client().set("keep", "me")
        proc = cli("restore", store, "latest", "--to-redis", target.url, "--flush", check=False)
    else:
        proc = cli("restore", store, "latest", "--to-dir", data, check=False)
    line = assert_one_clear_error(proc, "dump.rdb", "corrupt")
    assert re.search(r"at offset \d+", line), line
    assert sorted((p.name, p.read_bytes()) for p in data.iterdir()) == before
    if target is not None:  # never flushed: nothing is written before the RDB is verified
        assert target.client().keys("*") == ["keep"]


def test_restore_refuses_before_touching_anything_a_backup_the_target_cannot_load(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    src = redis_factory()
    populate(src.client(), 5_000)
    version = src.client().info()["redis_version"]
    store = tmp_path / "store"
    store.mkdir()
    cli("run", "--redis", src.url, "--to", store)
    old = _script(tmp_path / "old-server", "redis-server", OLD_SERVER)

    data = tmp_path / "live"
    data.mkdir()
    (data / "dump.rdb").write_bytes(b"the live data")
    proc = cli("restore", store, "latest", "--to-dir", data, "--redis-server", old, check=False)
    line = assert_one_clear_error(proc, "nothing was touched", f"Redis {version}", "Redis 6.2.14")
    assert "REDIS0010" in line
    assert sorted(p.name for p in data.iterdir()) == ["dump.rdb"]
    assert (data / "dump.rdb").read_bytes() == b"the live data"

    # --to-redis reads the archive itself (no local server since issue 12): --redis-server
    # there is a usage error, before any download or write.
    target = redis_factory()
    proc = cli(
        "restore", store, "latest", "--to-redis", target.url, "--redis-server", old, check=False
    )
    assert proc.returncode == 2
    assert_one_clear_error(proc, "--redis-server goes with --to-dir")
    assert target.dbsize() == 0

    # The real redis-server of the backup's version loads it: no refusal.
    cli("restore", store, "latest", "--to-dir", data, "--redis-server", "redis-server")
    assert redis_factory(dir=data).dbsize() == src.dbsize()


def test_check_redis_reports_the_flavour(redis_factory: RedisFactory) -> None:
    server = redis_factory()
    out = json.loads(cli("check-redis", "--redis", server.url, "--json").stdout)
    node = out["nodes"][0]
    assert node["flavour"] == "redis"
    assert node["server_version"] == node["version"] == server.client().info()["redis_version"]
    text = cli("check-redis", "--redis", server.url).stdout
    assert f"Redis {node['version']} master" in text
