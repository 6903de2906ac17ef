"""prune: the side-effecting half of retention. A wrong delete is data loss,
so every test checks what is left in the store, not only what prune says.

Fake backups (tiny archives + a valid manifest, no Redis) are written with
``tests/support/fake_backups.py``. Most tests use a directory store; the last ones
run the CLI against the S3, Azure and GCS emulators (``store_url``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import typer
from typer.testing import CliRunner

from backupctl.cli.app import app
from backupctl.store import catalog
from backupctl.store import prune as prune_mod
from backupctl.store.backends import open_store
from backupctl.store.backends.base import (
    Backend,
    ObjectInfo,
    ObjectWriter,
    PendingUpload,
    put_bytes,
)
from backupctl.store.backends.local import LocalBackend
from backupctl.store.prune import DELETING_MARKER, PruneError, prune
from backupctl.store.retention import Decision, Policy, PolicyError, Verdict

from support import object_stores
from support.fake_backups import add_backup, check_only_intact_backups_are_listed, keys
from support.object_stores import StoreURL, store_env

# The emulator fixtures (tests/support/object_stores.py is a plugin module, not a conftest).
s3_server = object_stores.s3_server
azurite_server = object_stores.azurite_server
gcs_server = object_stores.gcs_server
file_store = object_stores.file_store
s3_store = object_stores.s3_store
azure_store = object_stores.azure_store
gcs_store = object_stores.gcs_store
store_url = object_stores.store_url

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)


def _now(days: float = 0) -> datetime:
    """Real time (the objects' mtimes are real), shifted to age them."""
    return datetime.now(UTC) + timedelta(days=days)


@pytest.fixture
def store(tmp_path: Path) -> LocalBackend:
    (tmp_path / "store").mkdir()
    return LocalBackend(tmp_path / "store")


def _daily(store: Backend, target: str, n: int, start: datetime = T0) -> list[str]:
    """n complete backups one day apart; ids oldest first."""
    return [add_backup(store, target, start + timedelta(days=i)) for i in range(n)]


def _complete_ids(store: Backend, target: str | None = None) -> set[str]:
    return {e.id for e in catalog.scan(store, target) if e.complete}


def _folders(store: Backend) -> set[str]:
    return {e.id for e in catalog.scan(store)}


# --- decisions and deletes ---------------------------------------------------------


def test_dry_run_deletes_nothing_and_reports_every_backup_with_reasons(store: Backend) -> None:
    ids = _daily(store, "redis/cache", 10)
    before = keys(store)

    result = prune(store, Policy(daily=3), now=_now(), dry_run=True)

    assert keys(store) == before
    assert [r.id for r in result.keep] == ids[:-4:-1]
    assert result.keep[0].reasons == ("daily snapshot 2024-03-10",)
    assert sorted(r.id for r in result.remove) == sorted(ids[:7])
    assert all(r.reasons == () for r in result.remove)
    out = result.to_json()
    assert out["dry_run"] is True
    assert set(out) >= {"keep", "remove", "incomplete", "aborted_uploads"}
    assert out["keep"][0] == {
        "target": "redis/cache",
        "id": ids[-1],
        "created": "2024-03-10T10:00:00Z",
        "reasons": ["daily snapshot 2024-03-10"],
    }


def test_prune_deletes_exactly_the_removed_backups_and_leaves_no_marker(store: Backend) -> None:
    ids = _daily(store, "redis/cache", 10)
    result = prune(store, Policy(last=2, weekly=2), now=_now())
    kept = {r.id for r in result.keep}
    assert _complete_ids(store) == kept == _folders(store)
    assert {r.id for r in result.remove} == set(ids) - kept
    assert not any(k.endswith(DELETING_MARKER) for k in keys(store))
    assert check_only_intact_backups_are_listed(store)


class Recording:
    """A backend wrapper that records puts and deletes in order."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.url = inner.url
        self.log: list[tuple[str, str]] = []

    def check(self) -> None:
        self.inner.check()

    def writer(self, key: str) -> ObjectWriter:
        self.log.append(("put", key))
        return self.inner.writer(key)

    def open(self, key: str) -> BinaryIO:
        return self.inner.open(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def stat(self, key: str) -> ObjectInfo:
        return self.inner.stat(key)

    def delete(self, key: str) -> None:
        self.log.append(("delete", key))
        self.inner.delete(key)

    def pending_uploads(self, prefix: str = "") -> Iterator[PendingUpload]:
        return self.inner.pending_uploads(prefix)

    def abort_upload(self, upload: PendingUpload) -> None:
        self.log.append(("abort", upload.key))
        self.inner.abort_upload(upload)


def test_each_backup_is_deleted_marker_then_manifest_then_archives(store: Backend) -> None:
    ids = [add_backup(store, "r", T0 + timedelta(days=i), nodes=("a", "b", "c")) for i in range(3)]
    rec = Recording(store)
    prune(rec, Policy(last=1), now=_now())  # type: ignore[arg-type]
    for bid in ids[:2]:
        ops = [(op, k.rsplit("/", 1)[1]) for op, k in rec.log if f"/{bid}/" in k]
        assert ops[:2] == [("put", DELETING_MARKER), ("delete", "manifest.json")]
        assert sorted(ops[2:5]) == [("delete", f"{n}.tar.zst") for n in "abc"]
        assert ops[5:] == [("delete", DELETING_MARKER)]
    assert not any(f"/{ids[2]}/" in k for _, k in rec.log)


def test_newest_complete_backup_is_never_removed_even_if_the_decision_says_so(
    store: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _daily(store, "r", 4)

    def remove_all(items: Any, policy: Policy, **_: Any) -> Decision[Any]:
        ordered = sorted(items, key=lambda b: b.created, reverse=True)
        return Decision(tuple(Verdict(b, False, ()) for b in ordered))

    monkeypatch.setattr(prune_mod, "apply_policy", remove_all)
    result = prune(store, Policy(last=1), now=_now())
    assert [r.id for r in result.keep] == [ids[-1]]
    assert result.keep[0].reasons == ("newest complete backup (never removed)",)
    assert _complete_ids(store) == {ids[-1]}


def test_newest_complete_is_kept_when_newer_folders_are_incomplete(store: Backend) -> None:
    ids = _daily(store, "r", 3)
    add_backup(store, "r", T0 + timedelta(days=10), complete=False)
    result = prune(store, Policy(last=1), now=_now(days=2))
    assert _complete_ids(store) == {ids[-1]} == {r.id for r in result.keep}
    assert _folders(store) == {ids[-1]}  # the stale incomplete one was swept


def test_a_backup_being_written_blocks_its_target_only(store: Backend) -> None:
    a = _daily(store, "ns/a", 5)
    b = _daily(store, "ns/b", 5)
    running = add_backup(store, "ns/a", T0 + timedelta(days=9), complete=False)

    result = prune(store, Policy(last=1), now=_now())

    assert _complete_ids(store, "ns/a") == set(a)
    assert running in _folders(store)
    assert _complete_ids(store, "ns/b") == {b[-1]}
    (skipped,) = result.skipped
    assert skipped.target == "ns/a"
    assert f"backup {running} is being written" in skipped.reason
    assert {r.id for r in result.remove} == set(b[:-1])
    (inc,) = result.incomplete
    assert (inc.id, inc.action) == (running, "leave")
    assert inc.reasons[0].startswith("in progress: no manifest")


def test_stale_incomplete_backups_are_swept_and_reported(store: Backend) -> None:
    ids = _daily(store, "r", 3)
    stale = add_backup(store, "r", T0 + timedelta(days=1, hours=5), complete=False)
    result = prune(store, Policy(last=3), now=_now(days=1.5))
    assert _folders(store) == set(ids)
    (inc,) = result.incomplete
    assert (inc.id, inc.action) == (stale, "remove")
    assert "older than 24h" in inc.reasons[0]


def test_incomplete_grace_is_respected(store: Backend) -> None:
    _daily(store, "r", 2)
    young = add_backup(store, "r", T0 + timedelta(days=5), complete=False)
    result = prune(store, Policy(last=1), now=_now(days=0.5), incomplete_grace=timedelta(days=1))
    assert young in _folders(store) and result.skipped
    result = prune(store, Policy(last=1), now=_now(days=0.5), incomplete_grace=timedelta(hours=6))
    assert young not in _folders(store) and not result.skipped


def _temp_upload(store: LocalBackend, key: str, age: timedelta) -> Path:
    """An unfinished local upload (the backend's temp-file convention)."""
    folder, name = key.rsplit("/", 1)
    path = store.root / folder / f".{name}.part-0123456789ab"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"partial")
    t = time.time() - age.total_seconds()
    os.utime(path, (t, t))
    return path


def test_unfinished_uploads_block_when_young_and_are_aborted_when_stale(
    store: LocalBackend,
) -> None:
    ids = _daily(store, "r", 3)
    bid = catalog.new_backup_id(T0 + timedelta(days=20))
    young = _temp_upload(store, f"r/{bid}/redis-0.tar.zst", timedelta(minutes=5))
    if not list(store.pending_uploads("")):
        pytest.skip("the local backend does not report temp files as pending uploads")
    result = prune(store, Policy(last=1), now=_now())
    assert young.exists() and _complete_ids(store) == set(ids)
    assert "is unfinished" in result.skipped[0].reason

    young.unlink()
    stale = _temp_upload(store, f"r/{bid}/redis-0.tar.zst", timedelta(days=3))
    result = prune(store, Policy(last=1), now=_now())
    assert not stale.exists()
    assert [u.key for u in result.aborted_uploads] == [f"r/{bid}/redis-0.tar.zst"]
    assert _complete_ids(store) == {ids[-1]}


def test_unreadable_manifest_blocks_the_target_and_is_never_deleted(store: Backend) -> None:
    ids = _daily(store, "r", 4)
    bad = catalog.new_backup_id(T0 - timedelta(days=30))
    put_bytes(store, f"r/{bad}/redis-0.tar.zst", b"data")
    put_bytes(store, f"r/{bad}/manifest.json", b'{"format": "backupctl.dev/manifest/v9"}')

    result = prune(store, Policy(last=1), now=_now(days=10))

    assert _complete_ids(store) == set(ids)
    assert f"r/{bad}/manifest.json" in keys(store)
    assert "cannot be read" in result.skipped[0].reason
    assert not result.remove


def test_half_deleted_folder_is_finished_at_once_and_a_kept_marker_is_cleared(
    store: Backend,
) -> None:
    ids = _daily(store, "r", 4)
    # A prune killed after deleting ids[0]'s manifest, and one killed right
    # after writing ids[3]'s marker (then the policy changed to keep it).
    put_bytes(store, f"r/{ids[0]}/{DELETING_MARKER}", b"")
    store.delete(f"r/{ids[0]}/manifest.json")
    put_bytes(store, f"r/{ids[3]}/{DELETING_MARKER}", b"")

    result = prune(store, Policy(last=3), now=_now())  # everything is young

    assert not result.skipped
    assert _folders(store) == _complete_ids(store) == set(ids[1:])
    assert not any(k.endswith(DELETING_MARKER) for k in keys(store))
    assert [(i.id, i.action) for i in result.incomplete] == [(ids[0], "remove")]


def test_empty_policy_is_refused_for_deleting_but_allowed_for_dry_run(store: Backend) -> None:
    _daily(store, "r", 3)
    add_backup(store, "r", T0 - timedelta(days=9), complete=False)
    before = keys(store)
    with pytest.raises(PruneError, match="refusing to prune with an empty policy"):
        prune(store, Policy(), now=_now(days=5))
    assert keys(store) == before
    result = prune(store, Policy(), now=_now(days=5), dry_run=True)
    assert keys(store) == before
    assert {r.reasons for r in result.keep} == {("no policy",)}


def test_target_option_limits_prune_to_that_target(store: Backend) -> None:
    a = _daily(store, "a", 3)
    b = _daily(store, "a/b", 3)
    prune(store, Policy(last=1), now=_now(), target="a")
    assert _complete_ids(store, "a") == {a[-1]}
    assert _complete_ids(store, "a/b") == set(b)


def test_invalid_policy_deletes_nothing(store: Backend) -> None:
    _daily(store, "r", 3)
    before = keys(store)
    with pytest.raises(PolicyError):
        prune(store, Policy(daily=-3), now=_now())
    with pytest.raises(PolicyError):
        prune(store, Policy(daily=1, tz="Mars/Olympus"), now=_now())
    assert keys(store) == before


# --- interrupted prunes --------------------------------------------------------------


def _cli_env(env: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, **(env or {}), "PYTHONPATH": str(REPO)}


PRUNE = [sys.executable, "-m", "backupctl", "prune"]
#: prune with a pause of that many seconds after each delete (reported on stderr)
PRUNE_WITH_PAUSE = [sys.executable, str(REPO / "tests" / "support" / "prune_with_pause.py")]


@pytest.mark.parametrize("seed", range(6))
def test_sigkill_at_any_point_leaves_only_intact_backups_and_a_rerun_finishes(
    store: LocalBackend, seed: int
) -> None:
    rng = random.Random(seed)
    for target in ("x/a", "x/b"):
        for i in range(8):
            add_backup(store, target, T0 + timedelta(days=i), nodes=("n0", "n1"))
    # stale leftovers to sweep: an incomplete folder (made old below) and a half-deleted one
    old = add_backup(store, "x/a", T0 - timedelta(days=40), complete=False)
    for p in (store.root / "x/a" / old).iterdir():
        os.utime(p, (time.time() - 5 * 86400,) * 2)
    args = [store.url, "--keep-last", "2", "--keep-weekly", "1"]
    expected = {r.id for r in prune(store, Policy(last=2, weekly=1), now=_now(), dry_run=True).keep}
    deletes_total = 2 * 6 * 4 + 1  # 6 removed per target x (2 archives, manifest, marker) + sweep

    kill_after = rng.randrange(1, deletes_total)
    proc = subprocess.Popen(
        [*PRUNE_WITH_PAUSE, "0.02", *args],
        env=_cli_env(),
        stderr=subprocess.PIPE,
        text=True,
        stdout=subprocess.DEVNULL,
    )
    with proc:  # closes the stderr pipe
        try:
            assert proc.stderr is not None
            seen, deadline = 0, time.monotonic() + 30
            while seen < kill_after and time.monotonic() < deadline:
                line = proc.stderr.readline()
                if not line:
                    break
                seen += line.startswith("deleted ")
            time.sleep(rng.uniform(0, 0.02))  # sometimes mid-operation
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"prune ended before the kill ({seen} deletes)"

    listed = set(check_only_intact_backups_are_listed(store))
    assert expected <= listed, "a backup the policy keeps was touched"

    rerun = subprocess.run(
        [*PRUNE, *args, "--json"],
        env=_cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert _folders(store) == _complete_ids(store) == expected
    assert set(check_only_intact_backups_are_listed(store)) == expected
    assert not any(k.endswith(DELETING_MARKER) for k in keys(store))


# --- the CLI ---------------------------------------------------------------------------


def _app() -> typer.Typer:
    return app


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--keep-daily", "-2"], "keep-daily must be 0 or more, or -1 for unlimited"),
        (["--keep-within", "3w"], "unknown unit 'w'"),
        (["--keep-within", "30"], "no unit after 30"),
        (["--keep-daily", "7", "--timezone", "Europe/Pariss"], "unknown time zone"),
        ([], "refusing to prune with an empty policy"),
        (["--keep-last", "0", "--keep-daily", "0"], "refusing to prune with an empty policy"),
        (["--keep-last", "1", "--incomplete-grace", "1x"], "unknown unit 'x'"),
        (["--keep-last", "1", "--target", "../etc"], "target '../etc' is not valid"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_deletes_nothing(
    store: Backend, args: list[str], message: str
) -> None:
    _daily(store, "r", 3)
    add_backup(store, "r", T0 - timedelta(days=9), complete=False)
    before = keys(store)
    result = CliRunner().invoke(_app(), ["prune", store.url, *args])
    assert result.exit_code == 2, result.output  # usage
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert "Traceback" not in result.output
    assert keys(store) == before


def test_cli_usage_errors_exit_2(store: Backend) -> None:
    result = CliRunner().invoke(_app(), ["prune", store.url, "--keep-daily", "many"])
    assert result.exit_code == 2
    assert "not a whole number" in result.stderr


def test_cli_unknown_store_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(_app(), ["prune", "s4://bucket", "--keep-last", "1"])
    assert result.exit_code == 2  # usage: a URL that cannot be a store
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


def test_cli_dry_run_json_and_plain_table(store: Backend) -> None:
    ids = _daily(store, "r", 5)
    before = keys(store)
    runner = CliRunner()
    res = runner.invoke(_app(), ["prune", store.url, "--keep-last", "2", "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [k["id"] for k in data["keep"]] == ids[:-3:-1]
    assert data["keep"][0]["reasons"] == ["last snapshot"] and data["keep"][0]["target"] == "r"
    assert [r["id"] for r in data["remove"]] == ids[-3::-1]
    assert data["incomplete"] == [] and data["abortedUploads"] == []

    res = runner.invoke(_app(), ["prune", store.url, "--keep-last", "2", "--dry-run"])
    assert res.exit_code == 0
    lines = res.stdout.splitlines()
    assert lines[1].split() == ["ACTION", "TARGET", "ID", "CREATED", "REASONS"]
    assert lines[2].split()[:3] == ["keep", "r", ids[-1]] and "last snapshot" in lines[2]
    assert "dry run: nothing was deleted" in lines[-1]
    assert keys(store) == before

    res = runner.invoke(_app(), ["prune", store.url, "--keep-daily", "unlimited", "--json"])
    assert res.exit_code == 0 and len(json.loads(res.stdout)["keep"]) == 5


def test_cli_termination_log_has_the_outcome_or_the_error(store: Backend, tmp_path: Path) -> None:
    _daily(store, "r", 4)
    log = tmp_path / "termination-log"
    res = CliRunner().invoke(
        _app(), ["prune", store.url, "--keep-last", "1", "--termination-log", str(log)]
    )
    assert res.exit_code == 0, res.output
    outcome = json.loads(log.read_text())
    assert outcome.pop("freed") > 0  # bytes the 3 removed backups held
    assert outcome == {
        "ok": True,
        "dryRun": False,
        "kept": 1,
        "removed": 3,
        "swept": 0,
        "aborted": 0,
    }
    res = CliRunner().invoke(_app(), ["prune", store.url, "--termination-log", str(log)])
    assert res.exit_code == 2  # usage: an empty policy
    out = json.loads(log.read_text())
    assert out["ok"] is False and "empty policy" in out["error"]


# --- every backend (emulators), through the CLI in a subprocess -------------------------


def test_prune_on_every_store_kind(store_url: StoreURL) -> None:
    url, env = store_url
    with store_env(env):
        backend = open_store(url)
        ids = [add_backup(backend, "ns/redis", T0 + timedelta(hours=7 * i)) for i in range(12)]
        add_backup(backend, "ns/redis", T0 - timedelta(days=50), complete=False)
        before = keys(backend)

    def cli(*extra: str) -> subprocess.CompletedProcess[str]:
        args = [*PRUNE, url, "--keep-last", "2", "--keep-daily", "2", "--json", *extra]
        return subprocess.run(
            args, env=_cli_env(env), capture_output=True, text=True, timeout=120, check=False
        )

    # The incomplete folder was just written: a backup in progress, so the
    # whole target is left alone.
    dry = cli("--dry-run")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert [s["target"] for s in plan["skippedTargets"]] == ["ns/redis"]
    assert not plan["remove"] and len(plan["keep"]) == 12
    assert "warning: target ns/redis skipped" in dry.stderr

    # With no grace it is stale: 12 backups 7 h apart from 03-01 10:00 keep
    # the newest two (03-04 15:00, 08:00) and the newest of 03-03 (18:00).
    dry = cli("--dry-run", "--incomplete-grace", "0h")
    plan = json.loads(dry.stdout)
    assert [k["id"] for k in plan["keep"]] == [ids[11], ids[10], ids[8]]
    assert plan["keep"][0]["reasons"] == ["last snapshot", "daily snapshot 2024-03-04"]
    assert plan["keep"][2]["reasons"] == ["daily snapshot 2024-03-03"]
    assert len(plan["remove"]) == 9 and plan["incomplete"][0]["action"] == "remove"
    with store_env(env):
        assert keys(open_store(url)) == before

    real = cli("--incomplete-grace", "0h")
    assert real.returncode == 0, real.stderr
    assert json.loads(real.stdout)["remove"] == plan["remove"]
    with store_env(env):
        backend = open_store(url)
        assert _folders(backend) == _complete_ids(backend) == {ids[11], ids[10], ids[8]}
        assert check_only_intact_backups_are_listed(backend)
        assert not any(k.endswith(DELETING_MARKER) for k in keys(backend))


def test_stale_s3_multipart_upload_is_aborted(s3_store: StoreURL, s3_server: Any) -> None:
    """moto reports every upload as initiated in 2010, so it is always stale
    here (young uploads blocking a target is tested on the file store)."""
    url, env = s3_store
    bucket = url.removeprefix("s3://")
    client = s3_server.client()
    with store_env(env):
        backend = open_store(url)
        ids = _daily(backend, "r", 3)
        bid = catalog.new_backup_id(T0 + timedelta(days=9))
        up = client.create_multipart_upload(Bucket=bucket, Key=f"r/{bid}/redis-0.tar.zst")

        dry = prune(backend, Policy(last=1), now=_now(), dry_run=True)
        assert [u.upload_id for u in dry.aborted_uploads] == [up["UploadId"]]
        assert len(client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 1

        result = prune(backend, Policy(last=1), now=_now())
        assert [u.upload_id for u in result.aborted_uploads] == [up["UploadId"]]
        assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
        assert _complete_ids(backend) == {ids[-1]}


def test_azure_uncommitted_blocks_block_when_young_and_are_aborted_when_stale(
    azure_store: StoreURL, azurite_server: Any
) -> None:
    url, env = azure_store
    container = url.removeprefix("az://")
    with store_env(env):
        backend = open_store(url)
        ids = _daily(backend, "r", 3)
        bid = catalog.new_backup_id(T0 + timedelta(days=9))
        key = f"r/{bid}/redis-0.tar.zst"
        blob = azurite_server.service().get_blob_client(container, key)
        blob.stage_block("YmxvY2stMDAwMQ==", b"partial archive")

        young = prune(backend, Policy(last=1), now=_now())
        assert "is unfinished" in young.skipped[0].reason
        assert _complete_ids(backend) == set(ids)

        stale = prune(backend, Policy(last=1), now=_now(days=2))
        assert [u.key for u in stale.aborted_uploads] == [key]
        assert list(backend.pending_uploads("")) == []
        assert _complete_ids(backend) == {ids[-1]}
