"""``restore --to-redis`` of an encrypted (age) backup, as a user runs it: the
real CLI into running Redis 8.0 and Valkey 8.1 servers, through the unpacked
route and ``--no-tmp`` (the archive streamed twice), equal DEBUG DIGEST; a
missing or wrong identity is one error line with the integrity exit code, and
the target keeps what it held, even with ``--flush``."""

from __future__ import annotations

import json
from pathlib import Path

import pyrage
import pytest

from backupctl.cli.exit_codes import ExitCode

from support.cli_runner import assert_one_clear_error, cli
from support.redis_servers import RedisFactory, populate

MARKER = "MARKER-41c9-to-redis-session"
N_KEYS = 5_000


def _key(tmp_path: Path, name: str) -> tuple[Path, str]:
    key = pyrage.x25519.Identity.generate()
    path = tmp_path / f"{name}.txt"
    path.write_text(f"# {name}\n{key}\n")
    path.chmod(0o400)
    return path, str(key.to_public())


def _encrypted_backup(
    redis_factory: RedisFactory, tmp_path: Path, server: str
) -> tuple[Path, Path, str, int]:
    """(store folder, identity file, source digest, keys) of one encrypted backup."""
    src = redis_factory(server=server)
    client = src.client()
    populate(client, N_KEYS)
    client.set("session:42", MARKER)
    key, pub = _key(tmp_path, "ops")
    store = tmp_path / "store"
    store.mkdir()
    out = cli("run", "--redis", src.url, "--to", store, "--target", "t", "--encrypt-to", pub,
              "--json")  # fmt: skip
    assert json.loads(out.stdout)["nodes"][0]["archive"]["key"].endswith(".tar.zst.age")
    return store, key, src.digest(), client.dbsize()


@pytest.mark.parametrize("server", ["redis-8.0", "valkey-8.1"])
def test_an_encrypted_backup_loads_into_a_running_server_equal_with_and_without_tmp(
    server: str, redis_factory: RedisFactory, tmp_path: Path
) -> None:
    store, key, digest, keys = _encrypted_backup(redis_factory, tmp_path, server)
    target = redis_factory(server=server)

    out = cli("restore", store, "latest", "--to-redis", target.url, "--identity", key,
              "--json", timeout=300)  # fmt: skip
    assert json.loads(out.stdout)["keys"] == keys
    assert target.digest() == digest
    assert target.client().get("session:42") == MARKER

    target.client().set("session:42", "changed")  # --no-tmp must bring the backup's value back
    out = cli("restore", store, "latest", "--to-redis", target.url, "--identity", key,
              "--no-tmp", "--flush", "--json", timeout=300)  # fmt: skip
    assert json.loads(out.stdout)["flushed"] is True
    assert target.digest() == digest
    assert target.client().get("session:42") == MARKER


def test_a_missing_or_wrong_identity_is_one_error_and_the_target_is_untouched(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    store, key, digest, _ = _encrypted_backup(redis_factory, tmp_path, "redis-8.0")
    other, _ = _key(tmp_path, "other")
    target = redis_factory(server="redis-8.0")
    target.client().set("marker", "still here")

    for extra, needles in (
        ((), ("encrypted", "--identity", "nothing was touched")),
        (("--identity", str(other)), ("none of them can decrypt", "nothing was touched")),
        (("--identity", str(other), "--no-tmp"), ("none of them can decrypt",)),
    ):
        proc = cli("restore", store, "latest", "--to-redis", target.url, "--flush", *extra,
                   check=False)  # fmt: skip
        line = assert_one_clear_error(proc, *needles)
        assert proc.returncode == ExitCode.INTEGRITY, (extra, proc.stderr)
        assert "AGE-SECRET-KEY" not in line
        assert target.client().dbsize() == 1, extra  # no FLUSHALL, nothing loaded
        assert target.client().get("marker") == "still here"

    # The same command with the right key does load (so the refusals above were about the key).
    cli("restore", store, "latest", "--to-redis", target.url, "--flush", "--identity", key)
    assert target.digest() == digest


def test_a_flipped_byte_in_the_encrypted_archive_stops_both_routes_before_anything_is_written(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    store, key, _, _ = _encrypted_backup(redis_factory, tmp_path, "valkey-8.1")
    (archive,) = store.rglob("*.tar.zst.age")
    raw = bytearray(archive.read_bytes())
    raw[-100] ^= 0x01  # in the last age chunk, after the tar: the sha256 and age both see it
    archive.write_bytes(bytes(raw))
    target = redis_factory(server="valkey-8.1")
    target.client().set("marker", "still here")
    for extra in ((), ("--no-tmp",)):
        proc = cli("restore", store, "latest", "--to-redis", target.url, "--flush",
                   "--identity", key, *extra, check=False)  # fmt: skip
        assert_one_clear_error(proc)
        assert proc.returncode == ExitCode.INTEGRITY, (extra, proc.stderr)
        assert target.client().dbsize() == 1, extra  # no FLUSHALL, nothing loaded
        assert target.client().get("marker") == "still here"
