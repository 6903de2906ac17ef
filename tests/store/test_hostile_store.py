"""A hostile or damaged store: archives that inflate past what their manifest
declares, special tar members, truncated entries, manifests that are huge,
links, FIFOs, absurd counts or copied from another folder, a multipart
upload whose store reports it as started in 2010, and a store mounted
read-only. Each case is what a user would meet: one clear error, or the
backup listed as invalid with the reason, never a traceback, a hang, a full
disk or memory proportional to what the store claims."""

from __future__ import annotations

import hashlib
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import zstandard
from typer.testing import CliRunner

from backupctl.cli.app import app
from backupctl.store import backup_set, catalog
from backupctl.store.archive import ArchiveError, Member, extract_verified, write_archive
from backupctl.store.backends import AccessDenied, open_store
from backupctl.store.backends.base import put_bytes
from backupctl.store.backends.local import LocalBackend
from backupctl.store.catalog import CatalogError, FileEntry
from backupctl.store.prune import prune
from backupctl.store.retention import Policy

from support import object_stores
from support.cli_runner import assert_one_clear_error
from support.fake_backups import add_backup
from support.object_stores import StoreURL, store_env

s3_server = object_stores.s3_server
s3_store = object_stores.s3_store

T0 = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
MiB = 1024 * 1024


@pytest.fixture
def store(tmp_path: Path) -> LocalBackend:
    (tmp_path / "store").mkdir()
    return LocalBackend(tmp_path / "store")


def _cli(*args: object, timeout: float = 60, memory: int | None = None) -> Any:
    """``backupctl ARGS`` in a subprocess (the caller's PYTHONPATH decides which
    backupctl), optionally with its address space capped to ``memory`` bytes."""

    def cap() -> None:
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return subprocess.run(
        [sys.executable, "-m", "backupctl", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        preexec_fn=cap,
        cwd="/",  # PYTHONPATH, not the working directory, decides which backupctl runs
    )


def _manifest_path(store: LocalBackend, target: str, bid: str) -> Path:
    return store.root / target / bid / "manifest.json"


def _listed(store: LocalBackend, *extra: str) -> dict[str, dict[str, Any]]:
    """``list --json`` run in this process (the CLI as a user calls it, without
    a subprocess's start-up time), by target/id."""
    result = CliRunner().invoke(app, ["list", store.url, "--json", *extra])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return {f"{e['target']}/{e['id']}": e for e in json.loads(result.stdout)["backups"]}


# --- archives that claim less than they hold -----------------------------------------


def _tar_member_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode = size, 0o640
    return info.tobuf(tarfile.PAX_FORMAT)


def _zstd_bomb(name: str, size: int) -> bytes:
    """A zstd tar whose one member ``name`` is ``size`` zero bytes (a few KiB stored)."""
    out = io.BytesIO()
    comp = zstandard.ZstdCompressor(level=1).stream_writer(out, closefd=False)
    comp.write(_tar_member_header(name, size))
    zeros = bytes(MiB)
    for _ in range(size // MiB):
        comp.write(zeros)
    comp.write(b"\0" * (2 * tarfile.BLOCKSIZE + tarfile.RECORDSIZE))
    comp.flush(zstandard.FLUSH_FRAME)
    return out.getvalue()


def test_an_entry_inflating_far_past_its_declared_size_stops_at_that_size(
    tmp_path: Path,
) -> None:
    """A ~16 KiB archive whose dump.rdb inflates to 512 MiB while the manifest
    says 39 KiB: extraction stops at 39 KiB (+ one copy buffer), with one line
    naming the entry and both sizes."""
    blob = _zstd_bomb("dump.rdb", 512 * MiB)
    assert len(blob) < 64 * 1024
    declared = 39 * 1024
    files = [FileEntry("dump.rdb", declared, hashlib.sha256(bytes(declared)).hexdigest(), "rdb")]
    dest = tmp_path / "out"
    with pytest.raises(ArchiveError) as err:
        extract_verified(io.BytesIO(blob), "zstd", files, dest)
    message = str(err.value)
    assert "dump.rdb" in message and str(declared) in message and str(512 * MiB) in message
    assert "\n" not in message
    written = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    assert written <= declared + MiB


def test_an_archive_longer_than_its_declared_size_is_read_no_further(tmp_path: Path) -> None:
    data = os.urandom(3000)
    out = io.BytesIO()
    result = write_archive(out, [Member("dump.rdb", len(data), "rdb", lambda: io.BytesIO(data))])
    served = out.getvalue() + bytes(50 * MiB)  # a store serving far more than the manifest says
    source = io.BytesIO(served)
    with pytest.raises(ArchiveError, match=f"larger than the {result.size} bytes"):
        extract_verified(source, "zstd", result.files, tmp_path / "x", archive_size=result.size)
    assert source.tell() <= result.size + MiB


def _special_tar(kind: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("dump.rdb")
        info.type = {
            "symlink": tarfile.SYMTYPE,
            "hardlink": tarfile.LNKTYPE,
            "device": tarfile.CHRTYPE,
            "fifo": tarfile.FIFOTYPE,
        }[kind]
        info.linkname = "/etc/passwd" if kind in ("symlink", "hardlink") else ""
        tar.addfile(info)
    return out.getvalue()


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "device", "fifo"])
def test_links_devices_and_fifos_in_an_archive_are_refused_and_never_created(
    tmp_path: Path, kind: str
) -> None:
    files = [FileEntry("dump.rdb", 0, hashlib.sha256(b"").hexdigest(), "rdb")]
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(ArchiveError, match="not a regular file: refused"):
        extract_verified(io.BytesIO(_special_tar(kind)), "none", files, dest)
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_an_archive_cut_in_the_middle_of_an_entry_is_one_clear_archive_error(
    tmp_path: Path, compression: str
) -> None:
    data = os.urandom(3 * MiB)
    out = io.BytesIO()
    result = write_archive(
        out, [Member("dump.rdb", len(data), "rdb", lambda: io.BytesIO(data))], compression
    )
    cut = out.getvalue()[: result.size * 6 // 10]
    with pytest.raises(ArchiveError, match="truncated") as err:
        extract_verified(io.BytesIO(cut), compression, result.files, tmp_path / "x")
    assert "\n" not in str(err.value)


def test_a_truncated_archive_in_a_store_is_one_clear_error_from_restore(
    store: LocalBackend, tmp_path: Path
) -> None:
    data = os.urandom(2 * MiB)
    bid = catalog.new_backup_id(T0)
    with store.writer(f"r/{bid}/redis-0.tar") as w:
        result = write_archive(
            w, [Member("dump.rdb", len(data), "rdb", lambda: io.BytesIO(data))], "none"
        )
        w.commit()
    manifest = catalog.Manifest(
        id=bid,
        target="r",
        created="2024-03-01T10:00:00Z",
        tool_version="0.1.0",
        redis_version="7.0.15",
        method="bgsave",
        compression="none",
        nodes=[
            catalog.NodeEntry(
                name="redis-0",
                role="master",
                redis_version="7.0.15",
                rdb_version=10,
                snapshot_time="2024-03-01T10:00:00Z",
                keys=1,
                archive=catalog.ArchiveEntry("redis-0.tar", result.size, result.sha256, "none"),
                files=result.files,
            )
        ],
    )
    catalog.write_manifest(store, manifest)
    archive = store.root / "r" / bid / "redis-0.tar"
    archive.write_bytes(archive.read_bytes()[: result.size // 2])
    proc = _cli("restore", store.url, "latest", "--to-dir", tmp_path / "data")
    assert_one_clear_error(proc, "truncated")


# --- manifests a store can make huge, endless or absurd ----------------------------------


def _edit_manifest(store: LocalBackend, target: str, bid: str, edit: Callable[[Any], Any]) -> None:
    path = _manifest_path(store, target, bid)
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))


def _node(m: Any) -> Any:
    return m["nodes"][0]


def _set(getter: Callable[[Any], Any], key: str, value: Any) -> Callable[[Any], Any]:
    def edit(m: Any) -> Any:
        getter(m)[key] = value
        return m

    return edit


ABSURD: dict[str, tuple[Callable[[Any], Any], str]] = {
    "a billion parts": (_set(lambda m: _node(m)["files"][0], "parts", 10**9), "parts"),
    "negative size": (_set(lambda m: _node(m)["files"][0], "size", -5), "outside 0.."),
    "a size of 2**70": (_set(lambda m: _node(m)["archive"], "size", 2**70), "archive.size"),
    "keys as text": (_set(_node, "keys", "many"), "keys must be a whole number"),
    "keys as a boolean": (_set(_node, "keys", True), "keys must be a whole number"),
    "100000 nodes": (_set(lambda m: m, "nodes", [{}] * 100_000), "at most"),
    "slots out of range": (_set(_node, "slots", [[0, 99999]]), "slots"),
    "a path that climbs": (
        _set(lambda m: _node(m)["files"][0], "path", "../../etc/passwd"),
        "not a plain relative path",
    ),
    "created is not a time": (_set(lambda m: m, "created", "yesterday"), "RFC 3339"),
    "nodes is an object": (_set(lambda m: m, "nodes", {"a": 1}), "nodes must be a list"),
    "the manifest is a list": (lambda m: [m], "must be an object"),
}


@pytest.mark.parametrize("case", sorted(ABSURD))
def test_absurd_manifest_values_list_the_backup_as_invalid_with_the_reason(
    store: LocalBackend, case: str
) -> None:
    edit, needle = ABSURD[case]
    good = add_backup(store, "r", T0)
    bad = add_backup(store, "r", T0 + timedelta(days=1))
    _edit_manifest(store, "r", bad, edit)

    tracemalloc.start()
    try:
        entries = {e.id: e for e in catalog.scan(store)}
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * MiB
    assert entries[good].complete
    assert entries[bad].invalid and not entries[bad].complete
    assert needle in (entries[bad].manifest_error or "")
    assert catalog.find(store, "latest", "r").id == good
    with pytest.raises(CatalogError, match="cannot be used"):
        catalog.find(store, bad, "r")

    listed = _listed(store)
    assert listed[f"r/{good}"]["status"] == "complete"
    assert listed[f"r/{bad}"]["status"] == "invalid"
    assert needle in listed[f"r/{bad}"]["problem"]


def test_a_manifest_claiming_millions_of_parts_costs_no_memory_to_extract(
    tmp_path: Path,
) -> None:
    files = [FileEntry("dump.rdb", 10**12, "0" * 64, "rdb", parts=2_000_000)]
    blob = _zstd_bomb("other", 0)
    tracemalloc.start()
    try:
        with pytest.raises(ArchiveError, match="does not list"):
            extract_verified(io.BytesIO(blob), "zstd", files, tmp_path / "x")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * MiB


@pytest.mark.parametrize("kind", ["symlink to /dev/zero", "fifo", "larger than 16 MiB"])
def test_a_manifest_that_is_a_link_a_fifo_or_huge_is_listed_invalid_without_reading_it_all(
    store: LocalBackend, kind: str
) -> None:
    good = add_backup(store, "r", T0)
    bad = add_backup(store, "r", T0 + timedelta(days=1))
    path = _manifest_path(store, "r", bad)
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
        needle = "FIFO"
    elif kind.startswith("symlink"):
        path.symlink_to("/dev/zero")
        needle = "symbolic link"
    else:
        path.write_bytes(b" " * (16 * MiB + 1))
        needle = "larger than"
    # A cap on memory: reading /dev/zero whole would fail it (MemoryError), not the test run.
    proc = _cli("list", store.url, "--json", timeout=30, memory=1024 * MiB)
    assert proc.returncode == 0, proc.stderr
    listed = {e["id"]: e for e in json.loads(proc.stdout)["backups"]}
    assert listed[good]["status"] == "complete"
    assert listed[bad]["status"] == "invalid" and needle in listed[bad]["problem"]
    text = _cli("list", store.url, timeout=30, memory=1024 * MiB)
    assert "INVALID" in text.stdout and needle in text.stderr


# --- a manifest must name the folder it sits in -----------------------------------------


def _plant_copy(store: LocalBackend, src: tuple[str, str], dst: tuple[str, str]) -> None:
    """Copy backup folder ``src`` (target, id) to ``dst``, manifest included."""
    shutil.copytree(store.root / src[0] / src[1], store.root / dst[0] / dst[1])


def test_a_manifest_copied_into_another_targets_folder_is_never_restored_or_counted(
    store: LocalBackend,
) -> None:
    prod = add_backup(store, "prod", T0)
    demo = add_backup(store, "demo", T0 + timedelta(days=2))
    planted = catalog.new_backup_id(T0 + timedelta(days=3))
    _plant_copy(store, ("demo", demo), ("prod", planted))

    listed = _listed(store)
    assert listed[f"prod/{planted}"]["status"] == "invalid"
    assert f"names demo/{demo}" in listed[f"prod/{planted}"]["problem"]
    assert listed[f"prod/{prod}"]["status"] == "complete"

    assert catalog.find(store, "latest", "prod").id == prod
    proc = _cli("restore", store.url, planted, "--target", "prod", "--to-dir", store.root / "x")
    assert_one_clear_error(proc, "copied or moved from another folder")

    result = prune(store, Policy(last=1), now=datetime.now(UTC), target="prod")
    assert [r.id for r in result.keep] == [prod] and result.remove == []
    assert [(r.id, r.action) for r in result.incomplete] == [(planted, "leave")]
    assert (store.root / "prod" / planted / "manifest.json").exists()
    assert (store.root / "prod" / prod / "manifest.json").exists()


def test_a_manifest_moved_to_another_id_of_its_own_target_is_not_counted(
    store: LocalBackend,
) -> None:
    old = add_backup(store, "r", T0)
    newer = add_backup(store, "r", T0 + timedelta(days=1))
    moved = catalog.new_backup_id(T0 + timedelta(days=9))
    _plant_copy(store, ("r", old), ("r", moved))
    result = prune(store, Policy(last=1), now=datetime.now(UTC))
    assert [r.id for r in result.keep] == [newer]
    assert [r.id for r in result.remove] == [old]
    assert (store.root / "r" / moved / "manifest.json").exists()
    assert catalog.find(store, "latest").id == newer


def test_a_cluster_set_never_adopts_a_record_or_manifest_from_another_folder(
    store: LocalBackend,
) -> None:
    bid = add_backup(store, "c", T0)
    other = catalog.new_backup_id(T0 + timedelta(days=1))
    _plant_copy(store, ("c", bid), ("c", other))
    with pytest.raises(CatalogError, match="copied or moved"):
        backup_set.existing_manifest(store, "c", other)

    manifest = catalog.Manifest.loads((_manifest_path(store, "c", bid)).read_bytes())
    record = backup_set.ShardRecord(
        id=bid,
        target="c",
        shard=1,
        shards=1,
        owner="cli",
        tool_version="0.1.0",
        method="bgsave",
        compression="zstd",
        node=manifest.nodes[0],
    )
    planted = store.root / "c" / other / "shards" / "1.json"
    planted.parent.mkdir(parents=True)
    planted.write_bytes(record.dumps())
    with pytest.raises(backup_set.ShardSetError, match="not the folder it sits in"):
        backup_set.own_record(store, "c", other, 1, "cli")


# --- prune and a store whose clock says 2010 --------------------------------------------


def test_prune_never_aborts_a_live_multipart_upload_that_moto_dates_2010(
    s3_store: StoreURL, s3_server: Any
) -> None:
    url, env = s3_store
    bucket = url.removeprefix("s3://")
    client = s3_server.client()
    with store_env(env):
        backend = open_store(url)
        ids = [add_backup(backend, "r", T0 + timedelta(days=i)) for i in range(3)]
        running = catalog.new_backup_id(datetime.now(UTC) - timedelta(minutes=2))
        key = f"r/{running}/redis-0.tar.zst"
        up = client.create_multipart_upload(Bucket=bucket, Key=key)
        client.upload_part(
            Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=1, Body=b"x" * 1024
        )
        listed = client.list_multipart_uploads(Bucket=bucket)["Uploads"]
        assert listed[0]["Initiated"].year < 2020  # what moto reports

        result = prune(backend, Policy(last=1), now=datetime.now(UTC))
        assert result.aborted_uploads == []
        assert [s.target for s in result.skipped] == ["r"]
        assert "is unfinished" in result.skipped[0].reason
        uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        assert [u["UploadId"] for u in uploads] == [up["UploadId"]]
        assert {e.id for e in catalog.scan(backend) if e.complete} == set(ids)


# --- a read-only store -------------------------------------------------------------------


@pytest.fixture
def read_only_view(store: LocalBackend, tmp_path: Path) -> Iterator[Path]:
    """``store``'s directory bind-mounted read-only (root only)."""
    view = tmp_path / "ro"
    view.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a read-only bind mount needs root")
    bind = ["mount", "--bind", str(store.root), str(view)]
    mounted = subprocess.run(bind, capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount: {mounted.stderr!r}")
    try:
        ro = subprocess.run(
            ["mount", "-o", "remount,ro,bind", view], capture_output=True, check=False
        )
        if ro.returncode != 0:
            pytest.skip(f"cannot remount read-only: {ro.stderr!r}")
        yield view
    finally:
        subprocess.run(["umount", view], capture_output=True, check=False, timeout=30)


def test_list_works_on_a_read_only_store(store: LocalBackend, read_only_view: Path) -> None:
    ids = [add_backup(store, "r", T0 + timedelta(days=i)) for i in range(2)]
    add_backup(store, "r", T0 - timedelta(days=3), complete=False)
    assert not os.access(read_only_view, os.W_OK)
    for extra in ([], ["--all"]):
        proc = _cli("list", read_only_view, "--json", *extra)
        assert proc.returncode == 0, proc.stderr
        got = [e["id"] for e in json.loads(proc.stdout)["backups"]]
        assert got[:2] == ids[::-1] and len(got) == 2 + len(extra)


def _iam_user(iam: Any, name: str, actions: list[str]) -> dict[str, str]:
    """A moto IAM user allowed ``actions`` on everything; its credentials as env."""
    iam.create_user(UserName=name)
    document = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
    }
    arn = iam.create_policy(PolicyName=name, PolicyDocument=json.dumps(document))["Policy"]["Arn"]
    iam.attach_user_policy(UserName=name, PolicyArn=arn)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
    }


def test_list_works_with_read_only_s3_credentials(tmp_path: Path) -> None:
    """Credentials that may only get and list objects (moto enforcing IAM
    after the 8 requests that create the two users) list the backups, and
    ``--all`` lists them without the unfinished uploads it may not see."""
    import boto3

    emulator = object_stores.S3Emulator(tmp_path, extra_env={"INITIAL_NO_AUTH_ACTION_COUNT": "8"})
    try:
        iam = boto3.client(
            "iam",
            endpoint_url=emulator.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        admin = _iam_user(iam, "admin", ["s3:*"])
        reader = _iam_user(iam, "reader", ["s3:GetObject", "s3:ListBucket", "s3:ListObjectsV2"])
        bucket = object_stores.unique_bucket_name()
        with store_env({**emulator.env, **admin}):
            boto3.client("s3", endpoint_url=emulator.endpoint).create_bucket(Bucket=bucket)
            backend = open_store(f"s3://{bucket}")
            ids = [add_backup(backend, "r", T0 + timedelta(days=i)) for i in range(2)]
        with store_env({**emulator.env, **reader}):
            with pytest.raises(AccessDenied):  # the credentials are read-only indeed
                put_bytes(open_store(f"s3://{bucket}"), "r/x", b"x")
            for extra in ([], ["--all"]):
                result = CliRunner().invoke(app, ["list", f"s3://{bucket}", "--json", *extra])
                assert result.exit_code == 0, result.output
                assert [e["id"] for e in json.loads(result.stdout)["backups"]] == ids[::-1]
    finally:
        emulator.stop()


# --- user errors of prune ----------------------------------------------------------------


@pytest.mark.parametrize("option", ["--keep-within", "--incomplete-grace"])
@pytest.mark.parametrize("value", ["99999999y", "99999999999999999999999h", "1001y"])
def test_an_absurdly_long_duration_is_one_clear_error(
    store: LocalBackend, option: str, value: str
) -> None:
    add_backup(store, "r", T0)
    args = ["--keep-last", "1"] if option == "--incomplete-grace" else []
    proc = _cli("prune", store.url, option, value, *args)
    assert_one_clear_error(proc, "too long", "at most 1000 years")


def test_a_folder_named_like_a_backup_of_an_impossible_time_is_not_a_backup(
    store: LocalBackend,
) -> None:
    good = add_backup(store, "r", T0)
    bogus = store.root / "r" / "backup-20241399-999999"
    bogus.mkdir()
    (bogus / "manifest.json").write_text("{}")
    assert [e["id"] for e in _listed(store, "--all").values()] == [good]
    proc = _cli("prune", store.url, "--keep-last", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [k["id"] for k in json.loads(proc.stdout)["keep"]] == [good]
    assert (bogus / "manifest.json").exists()


# --- prune killed mid-run on a store with foreign folders ------------------------------

PRUNE_WITH_PAUSE = Path(__file__).resolve().parents[1] / "support" / "prune_with_pause.py"


@pytest.mark.parametrize("kill_after", [2, 7])
def test_prune_killed_mid_run_then_rerun_keeps_the_policy_and_leaves_foreign_folders(
    store: LocalBackend, kill_after: int
) -> None:
    ids = [add_backup(store, "r", T0 + timedelta(days=i), nodes=("n0", "n1")) for i in range(5)]
    planted = catalog.new_backup_id(T0 + timedelta(days=30))
    demo = add_backup(store, "demo", T0)
    _plant_copy(store, ("demo", demo), ("r", planted))
    args = [store.url, "--keep-last", "2", "--target", "r"]
    proc = subprocess.Popen(
        [sys.executable, str(PRUNE_WITH_PAUSE), "0.05", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd="/",
    )
    with proc:
        assert proc.stderr is not None
        seen = 0
        for _ in range(kill_after):  # bounded: one line per delete, the process is killed after
            if proc.stderr.readline().startswith("deleted "):
                seen += 1
        proc.kill()
        proc.wait(timeout=30)
    assert seen == kill_after, "prune ended before the kill"

    for e in catalog.scan(store, "r"):  # nothing listed as complete is missing an archive
        if e.complete:
            assert e.manifest is not None
            names = {o.key.rsplit("/", 1)[-1] for o in e.objects}
            assert {n.archive.key for n in e.manifest.nodes} <= names
    assert {ids[-1], ids[-2]} <= {e.id for e in catalog.scan(store, "r") if e.complete}

    rerun = _cli("prune", *args, "--json")
    assert rerun.returncode == 0, rerun.stderr
    assert {e.id for e in catalog.scan(store, "r") if e.complete} == {ids[-1], ids[-2]}
    folders = {e.id for e in catalog.scan(store, "r")}
    assert folders == {ids[-1], ids[-2], planted}
    assert (store.root / "r" / planted / "manifest.json").exists()
    assert {e.id for e in catalog.scan(store, "demo") if e.complete} == {demo}
