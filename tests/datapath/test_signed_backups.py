"""Signed manifests end to end, as a user runs them: ``run`` signs with a key
made by openssl (from $BACKUPCTL_SIGNING_KEY_FILE), a backup planted by
someone who can write the bucket but has no key is never ``latest`` and never
counted when signatures are required, and a signed manifest edited afterwards
is refused by verify with the reason."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from support.cli_runner import assert_one_clear_error, cli
from support.redis_servers import RedisFactory, populate

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def _openssl_key(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "signing.pem", tmp_path / "signing.pub.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", private],
                   check=True, timeout=30)  # fmt: skip
    subprocess.run(["openssl", "pkey", "-in", private, "-pubout", "-out", public],
                   check=True, timeout=30)  # fmt: skip
    return private, public


def test_a_planted_unsigned_backup_is_not_latest_and_an_edited_one_fails_verify(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    private, public = _openssl_key(tmp_path)
    src = redis_factory()
    client = src.client()
    populate(client, 2_000)
    genuine_digest = src.digest()
    store = tmp_path / "store"
    store.mkdir()
    run = ("run", "--redis", src.url, "--to", store, "--target", "ns/app", "--json")
    genuine = json.loads(cli(*run, env={"BACKUPCTL_SIGNING_KEY_FILE": str(private)}).stdout)
    client.set("planted", "by someone with write access to the bucket")
    planted = json.loads(cli(*run).stdout)  # no signing key
    assert planted["id"] != genuine["id"]
    trust = ("--verify-key", public, "--require-signatures")

    rows = {r["id"]: r for r in json.loads(cli("list", store, "--json", *trust).stdout)["backups"]}
    assert rows[genuine["id"]]["status"] == "complete" and rows[genuine["id"]]["signed"]
    assert rows[planted["id"]]["status"] == "invalid"
    assert "not signed" in rows[planted["id"]]["problem"]

    data = tmp_path / "data"
    cli("restore", store, "latest", "--to-dir", data, *trust)
    restored = redis_factory(dir=data)
    assert restored.digest() == genuine_digest
    assert restored.client().get("planted") is None

    refused = cli("verify", store, planted["id"], *trust, check=False)
    assert_one_clear_error(refused, planted["id"], "not signed")
    kept = cli("prune", store, "--keep-last", "1", "--json", *trust).stdout
    assert [r["id"] for r in json.loads(kept)["keep"]] == [genuine["id"]]
    assert (store / "ns/app" / planted["id"]).is_dir()  # not counted, not deleted

    manifest = store / "ns/app" / genuine["id"] / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["keys"] = doc["keys"] + 1
    manifest.write_text(json.dumps(doc, indent=2) + "\n")
    edited = cli("verify", store, genuine["id"], *trust, check=False)
    assert_one_clear_error(edited, "changed after it was signed")
