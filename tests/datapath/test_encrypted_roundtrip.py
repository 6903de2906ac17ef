"""Encrypted backups end to end, as a user runs them: the real CLI, a real
server, every store over its protocol; the stored bytes never show a value
written into Redis; a wrong or missing key is refused before anything is
touched; and Debian's ``age`` + ``zstd`` + ``tar`` restore a backup by hand."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pyrage
import pytest

from backupctl.store.backends import open_store

from support.cli_runner import assert_one_clear_error, cli
from support.object_stores import StoreURL, store_env
from support.redis_servers import RedisFactory, RedisServer, populate

MARKER = "MARKER-7d3f-session-token-do-not-leak"
N_KEYS = 20_000


def _keys(tmp_path: Path, name: str) -> tuple[Path, str]:
    key = pyrage.x25519.Identity.generate()
    path = tmp_path / f"{name}.txt"
    path.write_text(f"# {name}\n{key}\n")
    path.chmod(0o400)
    return path, str(key.to_public())


def _stored_objects(url: str, env: dict[str, str]) -> dict[str, bytes]:
    """Every object in the store, raw, as the bucket's owner would read it."""
    with store_env(env):
        backend = open_store(url)
        out = {}
        for info in backend.list(""):
            with backend.open(info.key) as f:
                out[info.key] = f.read()
        return out


def _seed(redis_factory: RedisFactory, server: str | None = None) -> tuple[RedisServer, str]:
    src = redis_factory(appendonly=True, server=server)
    client = src.client()
    populate(client, N_KEYS)
    client.set("session:42", MARKER)
    client.hset("user:7", mapping={"token": MARKER})
    return src, src.digest()


def test_encrypted_backup_on_every_store_hides_the_marker_and_restores_equal(
    store_url: StoreURL, redis_factory: RedisFactory, tmp_path: Path
) -> None:
    url, env = store_url
    src, digest = _seed(redis_factory)
    ops_key, ops_pub = _keys(tmp_path, "ops")
    dr_key, dr_pub = _keys(tmp_path, "dr")
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(f"# offline disaster recovery key\n{dr_pub}\n")

    out = cli("run", "--redis", src.url, "--to", url, "--target", "ns/app", "--encrypt-to",
              ops_pub, "--encrypt-to-file", recipients, "--json", env=env)  # fmt: skip
    manifest = json.loads(out.stdout)
    archive = manifest["nodes"][0]["archive"]
    assert archive["key"].endswith(".tar.zst.age")
    assert archive["encryption"]["format"] == "age"
    assert len(archive["encryption"]["recipients"]) == 2

    stored = _stored_objects(url, env)
    assert any(k.endswith(".tar.zst.age") for k in stored)
    for key, raw in stored.items():
        assert MARKER.encode() not in raw, key
        assert ops_pub.encode() not in raw and dr_pub.encode() not in raw, key  # fingerprints only

    assert cli("verify", url, "latest", "--identity", dr_key, env=env).returncode == 0
    data = tmp_path / "restored"
    cli("restore", url, "latest", "--to-dir", data, "--identity", ops_key, env=env)
    restored = redis_factory(appendonly=True, dir=data)
    assert restored.digest() == digest
    assert restored.client().get("session:42") == MARKER


def test_missing_or_wrong_identity_is_one_clear_error_and_nothing_is_touched(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    src, _ = _seed(redis_factory)
    _, pub = _keys(tmp_path, "ops")
    other, _ = _keys(tmp_path, "other")
    store = tmp_path / "store"
    store.mkdir()
    cli("run", "--redis", src.url, "--to", store, "--target", "t", "--encrypt-to", pub)
    data = tmp_path / "data"
    data.mkdir()
    (data / "dump.rdb").write_bytes(b"the data in place")

    missing = cli("restore", store, "latest", "--to-dir", data, check=False)
    assert_one_clear_error(missing, "encrypted", "--identity", "nothing was touched")
    wrong = cli("restore", store, "latest", "--to-dir", data, "--identity", other, check=False)
    line = assert_one_clear_error(wrong, "none of them can decrypt", "nothing was touched")
    assert "AGE-SECRET-KEY" not in line
    assert sorted(p.name for p in data.iterdir()) == ["dump.rdb"]  # no staging folder either
    assert (data / "dump.rdb").read_bytes() == b"the data in place"
    assert_one_clear_error(cli("verify", store, "latest", check=False), "--identity")


def test_a_flipped_byte_in_an_encrypted_archive_fails_verify(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    src, _ = _seed(redis_factory)
    key, pub = _keys(tmp_path, "ops")
    store = tmp_path / "store"
    store.mkdir()
    cli("run", "--redis", src.url, "--to", store, "--target", "t", "--encrypt-to", pub)
    assert cli("verify", store, "latest", "--identity", key).returncode == 0
    (archive,) = store.rglob("*.tar.zst.age")
    raw = bytearray(archive.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    archive.write_bytes(bytes(raw))
    proc = cli("verify", store, "latest", "--identity", key, check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if not ln.startswith("progress:")]
    assert lines and lines[0].startswith("error: ")


@pytest.mark.skipif(
    shutil.which("age") is None or shutil.which("zstd") is None, reason="needs age and zstd"
)
def test_restore_by_hand_with_debian_age_zstd_and_tar_gives_the_same_digest(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    src, digest = _seed(redis_factory, server="valkey-8.1")
    key, pub = _keys(tmp_path, "ops")
    store = tmp_path / "store"
    store.mkdir()
    cli("run", "--redis", src.url, "--to", store, "--target", "t", "--encrypt-to", pub)
    (archive,) = store.rglob("*.tar.zst.age")
    data = tmp_path / "by-hand"
    data.mkdir()
    subprocess.run(
        f"age -d -i {key} {archive} | zstd -d | tar -x -C {data}",
        shell=True,
        check=True,
        timeout=120,
    )
    shutil.rmtree(data / "appendonlydir")  # load the RDB, as the docs' recipe does
    restored = redis_factory(dir=data, server="valkey-8.1")
    assert restored.digest() == digest
    assert restored.client().get("session:42") == MARKER


def test_an_encrypted_cluster_set_restores_in_place_with_the_identity_only(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    from support.redis_cluster import Supervisor, fill_cluster, make_cluster, shards

    def digests() -> dict[object, str]:
        return {slots: s[0].digest() for slots, s in shards(nodes).items()}

    nodes = make_cluster(redis_factory)
    fill_cluster(nodes, 3_000)
    key, pub = _keys(tmp_path, "ops")
    store = tmp_path / "store"
    store.mkdir()
    cli("run", "--redis", nodes[0].url, "--to", store, "--target", "prod/cache", "--cluster",
        "--encrypt-to", pub)  # fmt: skip
    before = digests()
    assert len(list(store.rglob("*.tar.zst.age"))) == len(before)
    fill_cluster(nodes, 1_000, prefix="after")
    changed = digests()

    missing = cli("restore", store, "latest", "--to-cluster", nodes[0].url, "--restart",
                  check=False)  # fmt: skip
    assert_one_clear_error(missing, "encrypted", "--identity", "nothing was touched")
    assert digests() == changed
    assert not [p for n in nodes for p in n.dir.iterdir() if p.name.startswith(".backupctl")]

    with Supervisor(nodes):
        cli("restore", store, "latest", "--to-cluster", nodes[1].url, "--restart",
            "--timeout", "60", "--identity", key, timeout=120)  # fmt: skip
    assert digests() == before
