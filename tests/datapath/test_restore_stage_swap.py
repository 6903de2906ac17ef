"""``restore --stage-only`` / ``--swap`` / ``--discard-staged`` / ``--dry-run``: the steps the
RedisRestore controller runs as separate Jobs, against a real ``redis-server`` whose data
directory is the one being restored into, and a ``file://`` store."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from backupctl.core.datadir import PREVIOUS_PREFIX, STAGING_PREFIX, SWAP_JOURNAL
from backupctl.ops.restore_dir import STAGED_MARKER, SWAP_RECORD, swap_staged

from support.cli_runner import assert_one_clear_error, cli
from support.redis_servers import RedisFactory, RedisServer, populate, wait_for

TARGET = "ns/app"


def tree(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file Redis loads (hidden folders excluded)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.relative_to(folder).parts[0].startswith(".")
    }


@pytest.fixture
def backed_up(redis_factory: RedisFactory, tmp_path: Path) -> tuple[str, str, str]:
    """(store url, backup id, digest of the backed-up dataset)."""
    store = tmp_path / "store"
    store.mkdir()
    src = redis_factory()
    populate(src.client(), 3_000)
    out = cli("run", "--redis", src.url, "--to", store.as_uri(), "--target", TARGET, "--json")
    return store.as_uri(), json.loads(out.stdout)["id"], src.digest()


def live_server(redis_factory: RedisFactory, data: Path) -> RedisServer:
    """A Redis with appendonly yes and data of its own in ``data``."""
    server = redis_factory(appendonly=True, dir=data)
    populate(server.client(), 500, prefix="old:")
    server.client().execute_command("BGREWRITEAOF")
    wait_for(
        lambda: (
            server.info("persistence")["aof_rewrite_in_progress"] == 0
            and server.info("persistence")["aof_rewrite_scheduled"] == 0
            and (data / "appendonlydir" / "appendonly.aof.2.base.rdb").exists()
        ),
        what="the AOF rewrite",
    )
    return server


def test_stage_only_leaves_the_live_files_alone_and_swap_puts_the_backup_in_place(
    backed_up: tuple[str, str, str], redis_factory: RedisFactory, tmp_path: Path
) -> None:
    store, bid, digest = backed_up
    data = tmp_path / "data"
    server = live_server(redis_factory, data)
    old_digest = server.digest()
    server.client().save()
    before = tree(data)

    out = cli("restore", store, "latest", "--target", TARGET, "--to-dir", data,
              "--stage-only", "--json")  # fmt: skip
    staged = json.loads(out.stdout)
    assert staged["id"] == bid and staged["staged"] is True and staged["previous"] is None
    assert tree(data) == before  # nothing Redis loads changed
    assert (data / f"{STAGING_PREFIX}{bid}" / STAGED_MARKER).is_file()
    assert server.digest() == old_digest

    server.stop()
    out = cli("restore", store, bid, "--to-dir", data, "--swap", "--json")
    swapped = json.loads(out.stdout)
    previous = Path(swapped["previous"])
    assert previous.name.startswith(PREVIOUS_PREFIX)
    assert tree(previous) == before  # the old data, kept whole
    assert not (data / f"{STAGING_PREFIX}{bid}").exists()
    assert swapped["files"] == ["appendonlydir", "dump.rdb"]

    server.start()  # appendonly yes: loads the staged AOF folder whose base is the backup
    assert server.digest() == digest

    again = json.loads(cli("restore", store, bid, "--to-dir", data, "--swap", "--json").stdout)
    assert again["previous"] == swapped["previous"]  # a rerun reports the same swap
    assert len(list(data.glob(PREVIOUS_PREFIX + "*"))) == 1


def test_a_swap_interrupted_after_moving_the_old_files_aside_finishes_on_rerun(
    backed_up: tuple[str, str, str], redis_factory: RedisFactory, tmp_path: Path
) -> None:
    store, bid, digest = backed_up
    data = tmp_path / "data"
    server = live_server(redis_factory, data)
    server.client().save()
    server.stop()
    before = tree(data)
    cli("restore", store, bid, "--target", TARGET, "--to-dir", data, "--stage-only")

    # Interrupted where a kill would leave it: dump.rdb swapped in and its old copy moved
    # aside, the AOF folder not yet touched.
    class Killed(BaseException):
        pass

    def kill_at_the_aof_folder(step: str) -> None:
        if step.startswith("replace appendonlydir"):
            raise Killed(step)

    with pytest.raises(Killed):
        swap_staged(data, bid, before_step=kill_at_the_aof_folder)
    staging = data / f"{STAGING_PREFIX}{bid}"
    assert (data / SWAP_JOURNAL).is_file()
    assert tree(data)["dump.rdb"] != before["dump.rdb"]
    assert (
        tree(data)["appendonlydir/appendonly.aof.2.base.rdb"]
        == before["appendonlydir/appendonly.aof.2.base.rdb"]
    )

    result = swap_staged(data, bid)
    assert result.recovered is not None and result.recovered.action == "finished"
    assert result.previous is not None and result.previous.name.startswith(PREVIOUS_PREFIX)
    assert tree(result.previous) == before
    assert not staging.exists() and not (data / SWAP_JOURNAL).exists()
    assert json.loads((data / SWAP_RECORD).read_text())["swapped"] is True
    server.start()
    assert server.digest() == digest


def test_stage_only_of_a_corrupt_archive_leaves_nothing_behind(
    backed_up: tuple[str, str, str], tmp_path: Path
) -> None:
    store, bid, _ = backed_up
    archive = next(Path(store.removeprefix("file://"), TARGET, bid).glob("*.tar.zst"))
    raw = bytearray(archive.read_bytes())
    raw[-100] ^= 0x55
    archive.write_bytes(bytes(raw))
    data = tmp_path / "data"
    data.mkdir()
    (data / "dump.rdb").write_bytes(b"live")
    leftover = data / f"{STAGING_PREFIX}backup-20000101-000000"
    leftover.mkdir()  # from an earlier, interrupted restore: swept

    proc = cli("restore", store, bid, "--target", TARGET, "--to-dir", data, "--stage-only",
               "--termination-log", tmp_path / "tlog", check=False)  # fmt: skip
    assert proc.returncode == 6  # integrity
    assert json.loads((tmp_path / "tlog").read_text())["ok"] is False
    assert sorted(p.name for p in data.iterdir()) == ["dump.rdb"]
    assert (data / "dump.rdb").read_bytes() == b"live"


def test_swap_without_a_staged_copy_and_discard_staged(
    backed_up: tuple[str, str, str], tmp_path: Path
) -> None:
    store, bid, _ = backed_up
    data = tmp_path / "data"
    data.mkdir()
    assert_one_clear_error(
        cli("restore", store, bid, "--to-dir", data, "--swap", check=False), "stage it first"
    )
    assert_one_clear_error(
        cli("restore", store, "latest", "--to-dir", data, "--swap", check=False), "latest"
    )
    assert_one_clear_error(
        cli("restore", store, bid, "--swap", "--stage-only", "--to-dir", data, check=False),
        "exclude each other",
    )
    assert_one_clear_error(
        cli("restore", store, bid, "--swap", check=False), "--swap goes with --to-dir"
    )

    cli("restore", store, bid, "--target", TARGET, "--to-dir", data, "--stage-only")
    out = cli("restore", store, bid, "--to-dir", data, "--discard-staged", "--json")
    assert json.loads(out.stdout)["removed"] == [f"{STAGING_PREFIX}{bid}"]
    assert list(data.iterdir()) == []


def test_dry_run_resolves_latest_once_and_reports_what_a_restore_loads(
    backed_up: tuple[str, str, str], tmp_path: Path
) -> None:
    store, bid, _ = backed_up
    tlog = tmp_path / "tlog"
    out = cli("restore", store, "latest", "--target", TARGET, "--dry-run", "--json",
              "--termination-log", tlog)  # fmt: skip
    result = json.loads(out.stdout)
    assert result == json.loads(tlog.read_text())
    assert result["id"] == bid and result["dryRun"] is True and result["mode"] == "standalone"
    assert result["redisVersion"].startswith("7.")
    (node,) = result["nodes"]
    assert node["role"] == "master" and node["keys"] == result["keys"] and node["rdbVersion"] >= 9
    missing = cli("restore", store, "backup-20000101-000000", "--target", TARGET, "--dry-run",
                  "--termination-log", tlog, check=False)  # fmt: skip
    assert_one_clear_error(missing, "not found")
    assert json.loads(tlog.read_text())["ok"] is False


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_restored_files_get_the_owner_of_the_data_directory_when_run_as_root(
    backed_up: tuple[str, str, str], tmp_path: Path
) -> None:
    # Redis runs as its own user; a restore run with sudo must leave files it can write to.
    store, _, _ = backed_up
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, 65534, 65534)
    cli("restore", store, "latest", "--target", TARGET, "--to-dir", data)
    restored = [data / "dump.rdb", data / "appendonlydir", *(data / "appendonlydir").iterdir()]
    assert len(restored) == 5  # dump.rdb, the folder, its manifest, base and incr files
    assert {(p.stat().st_uid, p.stat().st_gid) for p in restored} == {(65534, 65534)}
