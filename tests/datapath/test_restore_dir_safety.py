"""``restore --to-dir`` into a directory it does not own alone: planted
links are refused (never followed) as root, the staging folder is not handed
to the Redis user, a directory a running Redis works in is refused (unless
``--force``), leftovers of killed runs are removed and ``--discard-staged``
says what it removed, and filesystem problems are one clear line."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import zstandard

from backupctl.cli.options import get_store
from backupctl.core.datadir import STAGING_PREFIX, SWAP_RECORD
from backupctl.store import catalog
from backupctl.store.archive import extract_verified
from backupctl.store.backends.base import put_bytes
from backupctl.store.catalog import ArchiveEntry, FileEntry

from support.cli_runner import assert_one_clear_error, cli
from support.redis_servers import RedisFactory, populate

TARGET = "ns/app"
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.relative_to(folder).parts[0].startswith(".")
    }


@pytest.fixture
def backed_up(redis_factory: RedisFactory, tmp_path: Path) -> tuple[str, str]:
    """(store url, backup id) of a small backup in a file:// store."""
    store = tmp_path / "store"
    store.mkdir()
    src = redis_factory()
    populate(src.client(), 500)
    out = cli("run", "--redis", src.url, "--to", store.as_uri(), "--target", TARGET, "--json")
    return store.as_uri(), json.loads(out.stdout)["id"]


def redis_owned_dir(path: Path) -> Path:
    """A data directory owned by another user (as Redis' own would be)."""
    path.mkdir()
    (path / "dump.rdb").write_bytes(b"old data")
    os.chown(path, 65534, 65534)
    os.chown(path / "dump.rdb", 65534, 65534)
    return path


@as_root
def test_a_symlink_planted_at_the_record_temp_name_is_refused_and_its_target_unchanged(
    backed_up: tuple[str, str], tmp_path: Path
) -> None:
    store, bid = backed_up
    victim = tmp_path / "root-file"
    victim.write_text("root's own file")
    data = redis_owned_dir(tmp_path / "data")
    os.symlink(victim, data / (SWAP_RECORD + ".tmp"))  # what the Redis user can do in DIR
    proc = cli("restore", store, bid, "--target", TARGET, "--to-dir", data, check=False)
    assert_one_clear_error(proc, SWAP_RECORD + ".tmp", "symbolic link", "refused")
    assert victim.read_text() == "root's own file"
    assert (data / "dump.rdb").read_bytes() == b"old data"
    assert not list(data.glob(STAGING_PREFIX + "*"))


@as_root
def test_stage_only_keeps_the_staging_folder_root_owned_and_swap_refuses_a_planted_link(
    backed_up: tuple[str, str], tmp_path: Path
) -> None:
    store, bid = backed_up
    victim = tmp_path / "root-file"
    victim.write_text("root's own file")
    data = redis_owned_dir(tmp_path / "data")
    cli("restore", store, bid, "--target", TARGET, "--to-dir", data, "--stage-only")
    (staging,) = data.glob(STAGING_PREFIX + "*")
    # The Redis user cannot plant anything in it: root's, not writable by others.
    assert staging.stat().st_uid == 0 and not staging.stat().st_mode & 0o022
    assert (staging / "archive" / "dump.rdb").stat().st_uid == 65534  # what Redis will load

    os.symlink(victim, data / (SWAP_RECORD + ".tmp"))
    proc = cli("restore", store, bid, "--to-dir", data, "--swap", check=False)
    assert_one_clear_error(proc, "symbolic link", "refused")
    assert victim.read_text() == "root's own file"
    assert (data / "dump.rdb").read_bytes() == b"old data"

    (data / (SWAP_RECORD + ".tmp")).unlink()
    out = json.loads(cli("restore", store, bid, "--to-dir", data, "--swap", "--json").stdout)
    assert out["previous"] and (Path(out["previous"]) / "dump.rdb").read_bytes() == b"old data"
    assert (data / "dump.rdb").stat().st_uid == 65534
    assert victim.read_text() == "root's own file"


def test_a_directory_a_running_redis_works_in_is_refused_unless_forced(
    backed_up: tuple[str, str], redis_factory: RedisFactory, tmp_path: Path
) -> None:
    store, bid = backed_up
    data = tmp_path / "live"
    server = redis_factory(dir=data)  # redis-server chdirs into its dir
    assert server.pid is not None
    proc = cli("restore", store, bid, "--target", TARGET, "--to-dir", data, check=False)
    line = assert_one_clear_error(proc, f"pid {server.pid}", "redis-server", "--force")
    assert "working directory" in line
    assert not list(data.glob(STAGING_PREFIX + "*")) and not (data / "dump.rdb").exists()

    cli("restore", store, bid, "--target", TARGET, "--to-dir", data, "--stage-only")
    swap = cli("restore", store, bid, "--to-dir", data, "--swap", check=False)
    assert_one_clear_error(swap, f"pid {server.pid}")
    assert list(data.glob(STAGING_PREFIX + "*"))  # still staged for a later swap

    forced = cli("restore", store, bid, "--to-dir", data, "--swap", "--force")
    assert forced.stdout.startswith(f"restored {bid}")
    assert (data / "dump.rdb").exists()


def test_leftovers_of_killed_runs_are_removed_by_the_next_run_and_discard_says_what_it_removed(
    backed_up: tuple[str, str], tmp_path: Path
) -> None:
    store, bid = backed_up
    data = tmp_path / "data"
    data.mkdir()
    # What two killed whole restores (pids long gone) leave: copies of the data.
    for pid in (4242, 4343):
        (data / f"{STAGING_PREFIX}{bid}-{pid}" / "archive").mkdir(parents=True)
        (data / f"{STAGING_PREFIX}{bid}-{pid}" / "archive" / "dump.rdb").write_bytes(b"x" * 100)

    proc = cli("restore", store, bid, "--to-dir", data, "--discard-staged")
    removed = proc.stdout.strip()
    assert removed.startswith("removed ") and str(data / f"{STAGING_PREFIX}{bid}-4242") in removed
    assert str(data / f"{STAGING_PREFIX}{bid}-4343") in removed
    assert not list(data.glob(STAGING_PREFIX + "*"))

    nothing = cli("restore", store, bid, "--to-dir", data, "--discard-staged", check=False)
    assert_one_clear_error(nothing, f"nothing staged for {bid}")

    (data / f"{STAGING_PREFIX}{bid}-4444").mkdir()
    out = json.loads(cli("restore", store, bid, "--target", TARGET, "--to-dir", data,
                         "--json").stdout)  # fmt: skip
    assert out["leftoversRemoved"] == [str(data / f"{STAGING_PREFIX}{bid}-4444")]
    assert not list(data.glob(STAGING_PREFIX + "*"))
    text = cli("restore", store, bid, "--target", TARGET, "--to-dir", data, "--stage-only")
    assert text.stdout.startswith("staged ")  # no leftovers this time: no extra line


def with_extra_entry(store_url: str, bid: str, name: str, tmp_path: Path) -> None:
    """Rewrite the backup's archive with one more file, ``name``, listed in
    its manifest (a backup of a data directory that held such a file)."""
    store = get_store(store_url, None)
    manifest = catalog.find(store, bid, TARGET).manifest
    assert manifest is not None
    node = manifest.nodes[0]
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    key = catalog.backup_dir(TARGET, bid) + node.archive.key
    with store.open(key) as src:
        extract_verified(src, node.archive.compression, node.files, unpacked)
    extra = b"a file that happens to carry an internal name\n"
    (unpacked / name).write_bytes(extra)
    sha = hashlib.sha256(extra).hexdigest()
    files = [*node.files, FileEntry(path=name, size=len(extra), sha256=sha, kind="aof")]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for f in files:
            tar.add(unpacked / f.path, arcname=f.path)
    blob = zstandard.ZstdCompressor().compress(raw.getvalue())
    put_bytes(store, key, blob)
    archive = ArchiveEntry(key=node.archive.key, size=len(blob),
                           sha256=hashlib.sha256(blob).hexdigest(), compression="zstd")  # fmt: skip
    node = dataclasses.replace(node, files=files, archive=archive)
    catalog.write_manifest(store, dataclasses.replace(manifest, nodes=[node]))


@pytest.mark.parametrize("name", [".aof-appendonlydir", ".backupctl-staged.json"])
def test_an_archive_entry_named_like_an_internal_staging_name_does_not_clash(
    backed_up: tuple[str, str], tmp_path: Path, name: str
) -> None:
    store, bid = backed_up
    with_extra_entry(store, bid, name, tmp_path)
    data = tmp_path / "data"
    out = cli("restore", store, bid, "--target", TARGET, "--to-dir", data, "--stage-only")
    assert out.stdout.startswith("staged ")
    swapped = json.loads(cli("restore", store, bid, "--to-dir", data, "--swap", "--json").stdout)
    assert swapped["files"] == ["appendonlydir", "dump.rdb"]
    assert (data / "appendonlydir" / "appendonly.aof.manifest").is_file()
    assert not (data / name).exists()


@as_root
def test_a_read_only_target_directory_is_one_clear_line(
    backed_up: tuple[str, str], tmp_path: Path
) -> None:
    store, bid = backed_up
    data = tmp_path / "ro"
    data.mkdir()
    (data / "dump.rdb").write_bytes(b"old data")
    subprocess.run(["mount", "--bind", str(data), str(data)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(data)], check=True)
        proc = cli("restore", store, bid, "--target", TARGET, "--to-dir", data, check=False)
    finally:
        subprocess.run(["umount", str(data)], check=True)
    assert_one_clear_error(proc, str(data), "read-only", "another --to-dir")
    assert (data / "dump.rdb").read_bytes() == b"old data"


@as_root
def test_a_target_directory_another_user_owns_and_root_cannot_write_is_one_clear_line(
    backed_up: tuple[str, str], tmp_path: Path
) -> None:
    # Root without CAP_DAC_OVERRIDE (as on a root-squashed share) cannot write there.
    store, bid = backed_up
    data = tmp_path / "theirs"
    data.mkdir(mode=0o755)
    os.chown(data, 65534, 65534)
    proc = subprocess.run(
        ["setpriv", "--bounding-set=-dac_override,-fowner", "--inh-caps=-all", "--",
         sys.executable, "-m", "backupctl", "restore", store, bid, "--target", TARGET,
         "--to-dir", str(data)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert_one_clear_error(proc, str(data), "permission denied", "owns it")
    assert list(data.iterdir()) == []


def test_the_shell_that_runs_the_restore_from_inside_the_directory_does_not_count_as_a_user(
    backed_up: tuple[str, str], tmp_path: Path
) -> None:
    store, bid = backed_up
    data = tmp_path / "data"
    data.mkdir()
    proc = subprocess.run(
        ["sh", "-c", 'cd "$1" && "$2" -m backupctl restore "$3" "$4" --target "$5" --to-dir .',
         "sh", str(data), sys.executable, store, bid, TARGET],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"restored {bid}")
    assert (data / "dump.rdb").is_file()
