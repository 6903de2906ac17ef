"""The data path end to end, as a user runs it: the real ``backupctl`` CLI in
a subprocess, a real ``redis-server``, and each store over its real protocol
(file, moto's S3 server, Azurite, the GCS emulator) on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from support.cli_runner import assert_one_clear_error, cli
from support.redis_servers import RedisFactory, populate

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs" / "manifest.schema.json").read_text())


def as_manifest(run_json: dict[str, Any]) -> dict[str, Any]:
    """``run --json`` is the manifest plus ``ok``, ``store`` and ``seconds``."""
    return {k: v for k, v in run_json.items() if k not in ("ok", "store", "seconds")}


N_KEYS = 200_000


@pytest.mark.parametrize("method", ["bgsave", "replication"])
def test_backup_to_every_store_restores_same_digest_with_appendonly_yes_and_no(
    store_url: tuple[str, dict[str, str]],
    method: str,
    redis_factory: RedisFactory,
    tmp_path: Path,
) -> None:
    url, env = store_url
    src = redis_factory(appendonly=True)
    populate(src.client(), N_KEYS)
    digest, dbsize = src.digest(), src.dbsize()
    assert dbsize >= N_KEYS

    out = cli(
        "run",
        "--redis",
        src.url,
        "--to",
        url,
        "--target",
        "ns/app",
        "--method",
        method,
        "--json",
        env=env,
    )
    manifest = json.loads(out.stdout)
    jsonschema.validate(as_manifest(manifest), SCHEMA)
    assert manifest["keys"] == dbsize
    assert manifest["method"] == method
    node = manifest["nodes"][0]
    assert node["rdbVersion"] >= 9
    kinds = {f["kind"] for f in node["files"]}
    assert ("aof" in kinds) == (method == "bgsave")  # AOF folder only readable with bgsave

    listed = json.loads(cli("list", url, "--json", env=env).stdout)["backups"]
    assert [b["id"] for b in listed] == [manifest["id"]]
    assert cli("verify", url, "latest", env=env).returncode == 0

    for appendonly in ("yes", "no"):
        data = tmp_path / f"restored-{appendonly}"
        cli("restore", url, "latest", "--to-dir", data, "--appendonly", appendonly, env=env)
        restored = redis_factory(appendonly=appendonly == "yes", dir=data)
        assert restored.dbsize() == dbsize
        assert restored.digest() == digest


def _only_archive(store: Path) -> Path:
    archives = list(store.rglob("*.tar.zst"))
    assert len(archives) == 1, archives
    return archives[0]


def test_archive_opens_with_gnu_tar_and_zstd_and_its_rdb_passes_redis_check_rdb(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    src = redis_factory(appendonly=True)
    populate(src.client(), 20_000)
    store = tmp_path / "store"
    store.mkdir()
    manifest = json.loads(cli("run", "--redis", src.url, "--to", store, "--json").stdout)
    archive = _only_archive(store)
    assert (
        hashlib.sha256(archive.read_bytes()).hexdigest()
        == manifest["nodes"][0]["archive"]["sha256"]
    )
    out = tmp_path / "by-hand"
    out.mkdir()
    subprocess.run(f"zstd -dc '{archive}' | tar -x -C '{out}'", shell=True, check=True)
    listed = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert listed == {f["path"] for f in manifest["nodes"][0]["files"]}
    check = subprocess.run(
        ["redis-check-rdb", str(out / "dump.rdb")], capture_output=True, text=True
    )
    assert check.returncode == 0 and "RDB looks OK" in check.stdout, check.stdout


def test_replication_streams_diskless_in_parts_that_gnu_tar_joins_back_into_the_rdb(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    src = redis_factory()
    rnd = random.Random(3)
    words = [rnd.randbytes(6).hex() for _ in range(3000)]
    with src.client() as c:  # ~26 MiB of text-like values: 3+ parts of 8 MiB
        pipe = c.pipeline(transaction=False)
        for i in range(25_000):
            pipe.set(f"doc:{i}", " ".join(rnd.choices(words, k=60)) + rnd.randbytes(150).hex())
        pipe.execute()
        assert c.config_get("rdbcompression")["rdbcompression"] == "yes"
    store = tmp_path / "store"
    store.mkdir()
    runs = {}
    for pause in (True, False):  # --pause-rdbcompression is opt-in; the default keeps LZF
        args = ["run", "--redis", src.url, "--to", store, "--method", "replication", "--json"]
        runs[pause] = json.loads(cli(*args, *(["--pause-rdbcompression"] if pause else [])).stdout)
        jsonschema.validate(as_manifest(runs[pause]), SCHEMA)
        # the server's setting is back, whichever way the backup went
        assert src.client().config_get("rdbcompression")["rdbcompression"] == "yes"
    assert not (src.dir / "dump.rdb").exists()  # diskless: nothing written on the node
    # the old spelling is still accepted (it is the default now)
    cli("run", "--redis", src.url, "--to", store, "--method", "replication",
        "--keep-rdbcompression")  # fmt: skip

    raw, lzf = (runs[k]["nodes"][0]["files"][0] for k in (True, False))
    assert raw["parts"] >= 3 and lzf["parts"] >= 2
    # rdbcompression was off for the --pause-rdbcompression run's fork only: its
    # RDB has no LZF strings (bigger), and the archive zstd made of it is smaller.
    assert raw["size"] > lzf["size"]
    assert runs[True]["size"] < runs[False]["size"]

    m = runs[True]
    archive = store / m["target"] / m["id"] / m["nodes"][0]["archive"]["key"]
    out = tmp_path / "dump.rdb"
    subprocess.run(
        f"zstd -dc '{archive}' | tar -xO --wildcards 'dump.rdb.part-*' > '{out}'",
        shell=True,
        check=True,
    )
    assert hashlib.sha256(out.read_bytes()).hexdigest() == raw["sha256"]
    check = subprocess.run(["redis-check-rdb", str(out)], capture_output=True, text=True)
    assert check.returncode == 0 and "RDB looks OK" in check.stdout, check.stdout
    assert cli("verify", store, m["id"]).returncode == 0
    data = tmp_path / "restored"
    cli("restore", store, m["id"], "--to-dir", data, "--appendonly", "yes")
    assert redis_factory(appendonly=True, dir=data).digest() == src.digest()


def test_backup_killed_mid_upload_is_listed_only_as_incomplete_and_restore_latest_skips_it(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    src = redis_factory()
    populate(src.client(), 1_000)
    store = tmp_path / "store"
    store.mkdir()
    first = cli("run", "--redis", src.url, "--to", store, "--target", "t").stdout.strip()
    good_digest = src.digest()
    # ~250 MiB of incompressible-ish data so the upload takes long enough to be killed.
    with src.client() as c:
        c.execute_command("DEBUG", "POPULATE", 250, "big", 1024 * 1024)
    killed = False
    for _ in range(5):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "backupctl",
                "run",
                "--redis",
                src.url,
                "--to",
                str(store),
                "--target",
                "t",
                "--compression",
                "none",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if any(".part" in p.name for p in store.rglob("*")):
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.002)
        proc.wait(timeout=30)
        if killed:
            break
    assert killed, "the backup finished before it could be killed"

    listed = json.loads(cli("list", store, "--json").stdout)["backups"]
    assert [b["id"] for b in listed] == [first]
    everything = json.loads(cli("list", store, "--all", "--json").stdout)["backups"]
    incomplete = [b for b in everything if not b["complete"]]
    assert len(incomplete) == 1 and incomplete[0]["id"] != first
    assert "INCOMPLETE" in cli("list", store, "--all").stdout

    data = tmp_path / "restored"
    result = json.loads(cli("restore", store, "latest", "--to-dir", data, "--json").stdout)
    assert result["id"] == first
    restored = redis_factory(dir=data)
    assert restored.digest() == good_digest


def test_wrong_password_gives_one_clear_error(redis_factory: RedisFactory, tmp_path: Path) -> None:
    src = redis_factory(password="right-password")
    proc = cli(
        "run",
        "--redis",
        f"redis://:wrong-password@127.0.0.1:{src.port}",
        "--to",
        tmp_path,
        check=False,
    )
    assert_one_clear_error(proc, "password")
    assert "wrong-password" not in proc.stderr and "right-password" not in proc.stderr


def test_unreachable_redis_gives_one_clear_error(tmp_path: Path) -> None:
    from support.redis_servers import free_port

    proc = cli("run", "--redis", f"redis://127.0.0.1:{free_port()}", "--to", tmp_path, check=False)
    assert_one_clear_error(proc, "connect")


@pytest.mark.parametrize("url", ["s4://bucket/x", "s3://", "az://", "gs://UPPER_case"])
def test_malformed_store_url_gives_one_clear_error(url: str, tmp_path: Path) -> None:
    proc = cli("list", url, check=False)
    assert_one_clear_error(proc)


def test_missing_local_store_directory_gives_one_clear_error(tmp_path: Path) -> None:
    assert_one_clear_error(cli("list", tmp_path / "nope", check=False), "does not exist")


def test_unknown_s3_bucket_gives_one_clear_error(
    s3_server: Any, redis_factory: RedisFactory
) -> None:
    src = redis_factory()
    proc = cli(
        "run", "--redis", src.url, "--to", "s3://no-such-bucket/x", env=s3_server.env, check=False
    )
    assert_one_clear_error(proc, "no-such-bucket")


def test_bad_azure_credentials_give_one_clear_error(azurite_server: Any, azure_store: Any) -> None:
    wrong_key = base64.b64encode(b"not the account key" * 3).decode()
    env = {"AZURE_STORAGE_CONNECTION_STRING": azurite_server.connection_string_with(wrong_key)}
    proc = cli("list", azure_store.url, env=env, check=False)
    assert_one_clear_error(proc)
    assert wrong_key not in proc.stderr


@pytest.mark.parametrize("command", ["verify", "restore"])
def test_corrupted_archive_is_refused_and_restore_dir_is_untouched(
    command: str, redis_factory: RedisFactory, tmp_path: Path
) -> None:
    src = redis_factory()
    populate(src.client(), 50_000)
    store = tmp_path / "store"
    store.mkdir()
    cli("run", "--redis", src.url, "--to", store, "--compression", "none")
    archive = next(store.rglob("*.tar"))
    raw = bytearray(archive.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    archive.write_bytes(bytes(raw))

    data = tmp_path / "live"
    data.mkdir()
    (data / "dump.rdb").write_bytes(b"the live data")
    before = sorted((p.name, p.read_bytes()) for p in data.iterdir())
    if command == "verify":
        proc = cli("verify", store, "latest", check=False)
    else:
        proc = cli("restore", store, "latest", "--to-dir", data, check=False)
    assert_one_clear_error(proc, "corrupt")
    assert sorted((p.name, p.read_bytes()) for p in data.iterdir()) == before
