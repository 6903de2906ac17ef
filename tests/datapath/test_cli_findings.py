"""Issue 17's findings under "Wrong hints and loose input" and "Output", one
test each, against a real ``redis-server`` on 127.0.0.1 and the CLI as a
subprocess; hints are followed to show they work.

Before this change: a wrong password suggested ``--password`` (no such
option); ``file:/x`` suggested ``file://x`` (rejected next); ``--level 99``
and ``--timeout -1`` were accepted; ``restore --to-dir`` created a mistyped
path; ``run`` printed only the id; ``verify`` said "1 files" and
"archive(s)"; ``prune`` did not say what it freed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from support.cli_runner import assert_one_clear_error, cli
from support.redis_servers import RedisFactory, RedisServer

SCHEMAS = Path(__file__).parents[2] / "docs" / "schemas"


def _schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / f"{name}.json").read_text())
    return loaded


@pytest.fixture
def server(redis_factory: RedisFactory) -> RedisServer:
    s = redis_factory(password="s3cret-pw")
    with s.client() as c:
        for i in range(50):
            c.set(f"k{i}", "v" * 100)
    return s


def _url(server: RedisServer, password: str | None = None) -> str:
    auth = f":{password}@" if password else ""
    return f"redis://{auth}127.0.0.1:{server.port}"


def test_a_wrong_password_hint_names_what_exists_and_following_it_works(
    server: RedisServer, tmp_path: Path
) -> None:
    proc = cli("run", "--redis", _url(server, "wrong"), "--to", tmp_path, check=False)
    line = assert_one_clear_error(proc, "rejected the password", "redis://[user]:PASSWORD@")
    assert proc.returncode == 3  # Redis
    assert "--password " not in line and "--password /" not in line
    # the hint: the password in the URL, or --password-file
    assert cli("run", "--redis", _url(server, "s3cret-pw"), "--to", tmp_path).returncode == 0
    (tmp_path / "pw").write_text("s3cret-pw")
    ok = cli("run", "--redis", _url(server), "--password-file", tmp_path / "pw", "--to", tmp_path)
    assert ok.returncode == 0


def test_a_file_url_without_slashes_suggests_one_that_works(
    server: RedisServer, tmp_path: Path
) -> None:
    proc = cli("list", f"file:{tmp_path}", check=False)
    line = assert_one_clear_error(proc, "did you mean")
    assert proc.returncode == 2
    suggested = re.search(r"did you mean (\S+)\?", line)
    assert suggested is not None and suggested.group(1) == f"file://{tmp_path}"
    assert cli("list", suggested.group(1)).returncode == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--level", "99"], "--level 99 is out of range for --compression zstd: use 1-22"),
        (["--compression", "gzip", "--level", "10"], "use 1-9"),
        (["--timeout", "-1"], "--timeout"),
        (["--timeout", "0"], "--timeout"),
    ],
)
def test_out_of_range_values_are_usage_errors(
    server: RedisServer, tmp_path: Path, args: list[str], needle: str
) -> None:
    proc = cli("run", "--redis", _url(server, "s3cret-pw"), "--to", tmp_path, *args, check=False)
    assert_one_clear_error(proc, needle)
    assert proc.returncode == 2
    assert not list(tmp_path.iterdir())  # nothing was backed up


def test_restore_to_a_mistyped_dir_is_refused_and_creates_nothing(
    server: RedisServer, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    cli("run", "--redis", _url(server, "s3cret-pw"), "--to", store)
    typo = tmp_path / "vra" / "lib" / "redis"
    proc = cli("restore", store, "latest", "--to-dir", typo, check=False)
    assert_one_clear_error(proc, f"{typo.parent} does not exist", f"mkdir -p {typo}")
    assert proc.returncode == 5 and not (tmp_path / "vra").exists()
    # the hint followed
    typo.mkdir(parents=True)
    assert cli("restore", store, "latest", "--to-dir", typo).returncode == 0
    assert (typo / "dump.rdb").exists()


def test_run_says_what_it_stored_in_one_unit_system(server: RedisServer, tmp_path: Path) -> None:
    proc = cli("run", "--redis", _url(server, "s3cret-pw"), "--to", tmp_path, "--target", "t")
    backup_id = proc.stdout.strip()
    assert re.fullmatch(r"backup-\d{8}-\d{6}", backup_id)  # stdout: the id alone, for scripts
    (summary,) = [x for x in proc.stderr.splitlines() if not x.startswith("progress: ")]
    assert re.fullmatch(
        rf"stored {backup_id} of t in file://{tmp_path}: [\d.]+ (B|KiB|MiB), 50 keys, 1 node, "
        r"[\d.]+ s",
        summary,
    ), summary
    assert not re.search(r"\d (MB|KB|GB)\b", proc.stderr)


def test_run_verify_check_redis_json_match_their_schemas(
    server: RedisServer, tmp_path: Path
) -> None:
    url = _url(server, "s3cret-pw")
    ran = json.loads(cli("run", "--redis", url, "--to", tmp_path, "--json").stdout)
    jsonschema.validate(ran, _schema("run"))
    assert ran["keys"] == 50 and ran["store"] == f"file://{tmp_path}"
    verified = json.loads(cli("verify", tmp_path, ran["id"], "--json").stdout)
    jsonschema.validate(verified, _schema("verify"))
    assert verified["nodes"] == [{"name": ran["nodes"][0]["name"]}]
    assert verified["size"] == ran["size"]
    checked = json.loads(cli("check-redis", "--redis", url, "--json").stdout)
    jsonschema.validate(checked, _schema("check-redis"))
    dry = json.loads(cli("restore", tmp_path, ran["id"], "--dry-run", "--json").stdout)
    assert (dry["created"], dry["size"], dry["keys"]) == (ran["created"], ran["size"], 50)


def test_verify_counts_in_words_and_prune_says_what_it_frees(
    server: RedisServer, tmp_path: Path
) -> None:
    url = _url(server, "s3cret-pw")
    first = cli("run", "--redis", url, "--to", tmp_path).stdout.strip()
    cli("run", "--redis", url, "--to", tmp_path, "--id", first.replace("-", "-", 1) + "-1")
    line = cli("verify", tmp_path, first).stdout.strip()
    assert re.fullmatch(rf"{first}: OK \(1 file in 1 archive, [\d.]+ (B|KiB) checked\)", line)
    pruned = cli("prune", tmp_path, "--keep-last", "1").stdout
    assert re.search(r"1 kept, removed 1 backup and 0 incomplete \([\d.]+ (B|KiB) freed\)", pruned)
