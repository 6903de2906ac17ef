"""``backupctl verify`` counts the keys of each RDB with backupctl's reader and holds
them against the manifest (what a restore drill relies on): the real CLI, a real
``redis-server``, a directory store."""

from __future__ import annotations

import json
from pathlib import Path

from support.cli_runner import assert_one_clear_error, cli
from support.redis_servers import RedisFactory, populate


def test_verify_reports_keys_by_type_and_refuses_a_manifest_that_miscounts(
    redis_factory: RedisFactory, tmp_path: Path
) -> None:
    src = redis_factory()
    client = src.client()
    populate(client, 500)
    client.hset("h", mapping={"a": "1"})
    client.rpush("l", "x")
    keys = src.dbsize()
    store = tmp_path / "store"
    store.mkdir()
    out = cli("run", "--redis", src.url, "--to", store, "--target", "ns/app", "--json")
    manifest = json.loads(out.stdout)
    assert manifest["keys"] == keys

    verified = json.loads(cli("verify", store, manifest["id"], "--json").stdout)
    assert verified["keys"] == keys
    assert verified["types"]["hash"] >= 1 and verified["types"]["list"] >= 1
    assert sum(verified["types"].values()) == keys

    # The manifest says one key more than the RDB holds: verify fails and says so.
    path = store / "ns/app" / manifest["id"] / "manifest.json"
    doc = json.loads(path.read_text())
    doc["nodes"][0]["keys"] += 1
    path.write_text(json.dumps(doc))
    proc = cli("verify", store, manifest["id"], check=False)
    assert_one_clear_error(proc, f"holds {keys} keys", f"says {keys + 1}")
