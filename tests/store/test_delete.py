"""``backupctl delete``: named backups removed, crash-safe like prune.

A wrong delete is data loss, so every test checks what is left in the store.
The crash test stops the delete before each of its store writes in turn (the
state a ``kill -9`` at that moment leaves), checks that nothing incomplete is
listed as complete, then reruns the same delete and checks it finishes; one
test does the same with real SIGKILLs of the CLI process.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backupctl.store import catalog
from backupctl.store.backends import open_store
from backupctl.store.backends.base import Backend, ObjectWriter
from backupctl.store.backends.wrappers import ForwardingBackend
from backupctl.store.delete import DeleteError, delete_backups, plan_delete

from support.cli_runner import assert_one_clear_error, cli
from support.fake_backups import add_backup, check_only_intact_backups_are_listed, keys

T0 = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path: Path) -> Backend:
    root = tmp_path / "store"
    root.mkdir()
    return open_store(str(root))


def _three(store: Backend, target: str = "ns/a") -> list[str]:
    return [add_backup(store, target, T0 + timedelta(days=i), nodes=("r0", "r1")) for i in range(3)]


def test_deletes_the_named_backups_and_nothing_else(store: Backend) -> None:
    a = _three(store)
    b = _three(store, "ns/b")
    result = delete_backups(store, [a[0], a[1]], target="ns/a")
    assert [d.id for d in result.deleted] == [a[0], a[1]]
    assert result.bytes > 0
    assert check_only_intact_backups_are_listed(store) == [b[2], a[2], b[1], b[0]]
    assert not any(k.startswith(f"ns/a/{a[0]}") for k in keys(store))


@pytest.mark.parametrize(
    ("ids", "target", "force", "message"),
    [
        (["backup-20240303-100000"], None, False, "newest complete backup of ns/a"),
        (["backup-20240309-100000"], None, False, "not found"),
        (["backup-20240301-100000"], None, False, "several targets"),
        (["latest"], None, False, "not a backup id"),
        ([], None, False, "no backup id"),
    ],
)
def test_refuses_before_deleting_anything(
    store: Backend, ids: list[str], target: str | None, force: bool, message: str
) -> None:
    _three(store)
    add_backup(store, "ns/b", T0)
    before = keys(store)
    with pytest.raises(Exception, match=message):
        delete_backups(store, ids, target=target, force=force)
    assert keys(store) == before


def test_force_deletes_the_newest_and_an_incomplete_folder(store: Backend) -> None:
    ids = _three(store)
    running = add_backup(store, "ns/a", T0 + timedelta(days=5), complete=False)
    entries = catalog.scan(store)
    with pytest.raises(DeleteError, match="may be being written"):
        plan_delete(entries, [running], target=None, force=False)
    delete_backups(store, [ids[2], running], force=True)
    assert check_only_intact_backups_are_listed(store) == [ids[1], ids[0]]
    assert not any(running in k or ids[2] in k for k in keys(store))


class _Crash(BaseException):
    """A kill -9 at this point: nothing after it runs, not even cleanup."""


class _CrashAt(ForwardingBackend):
    """Stops before the ``n``-th write or delete (0-based)."""

    def __init__(self, inner: Backend, n: int) -> None:
        super().__init__(inner)
        self.n = n
        self.steps = 0

    def _step(self) -> None:
        if self.steps == self.n:
            raise _Crash
        self.steps += 1

    def writer(self, key: str) -> ObjectWriter:
        self._step()
        return self.inner.writer(key)

    def delete(self, key: str) -> None:
        self._step()
        self.inner.delete(key)


def test_killed_at_every_step_lists_nothing_incomplete_and_a_rerun_finishes(
    tmp_path: Path,
) -> None:
    n = 0
    while True:
        root = tmp_path / f"s{n}"
        root.mkdir()
        store = open_store(str(root))
        ids = _three(store)
        crashing = _CrashAt(store, n)
        try:
            delete_backups(crashing, [ids[0], ids[1]])
        except _Crash:
            pass
        else:
            break  # n is past the last step: every step was crashed at
        listed = check_only_intact_backups_are_listed(store)
        assert set(listed) <= set(ids) and ids[2] in listed
        # The rerun names the same ids and finishes the job.
        delete_backups(store, [i for i in (ids[0], ids[1]) if any(i in k for k in keys(store))])
        assert check_only_intact_backups_are_listed(store) == [ids[2]]
        assert not any(ids[0] in k or ids[1] in k for k in keys(store))
        n += 1
    # marker + manifest + 2 archives + marker, per backup
    assert n == 10


def test_cli_refuses_newest_and_reports_what_it_freed(tmp_path: Path, store: Backend) -> None:
    ids = _three(store)
    url = store.url
    proc = cli("delete", url, ids[2], check=False)
    assert_one_clear_error(proc, "newest complete backup", "--force")
    assert proc.returncode == 7  # refused as unsafe (docs/cli-output.md)
    missing = cli("delete", url, "backup-20000101-000000", "--json", check=False)
    assert_one_clear_error(missing, "backup-20000101-000000", "not found")
    assert missing.returncode == 5 and json.loads(missing.stdout)["error"]["code"] == "not_found"
    out = json.loads(cli("delete", url, ids[0], "--json").stdout)
    assert out["ok"] and [d["id"] for d in out["deleted"]] == [ids[0]] and out["bytes"] > 0
    text = cli("delete", ids[1], env={"BACKUPCTL_STORE": url}).stdout
    assert "deleted 1 backup," in text and "freed" in text
    assert check_only_intact_backups_are_listed(store) == [ids[2]]


@pytest.mark.slow
def test_cli_sigkilled_after_every_delete_then_rerun(tmp_path: Path) -> None:
    """The real CLI, SIGKILLed after its 1st, 2nd, ... delete (a fresh store
    each time): only intact backups are listed, and a rerun finishes."""
    script = REPO / "tests" / "support" / "delete_with_pause.py"
    for step in range(1, 20):
        root = tmp_path / f"s{step}"
        root.mkdir()
        store = open_store(str(root))
        ids = _three(store)
        proc = subprocess.Popen(
            [sys.executable, str(script), str(step), str(root), ids[0], ids[1]],
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        with proc.stderr:
            paused = "paused\n" in iter(proc.stderr.readline, "")  # ends at exit or the pause
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        if not paused:  # it finished before this step: every step was killed at
            break
        listed = check_only_intact_backups_are_listed(store)
        assert ids[2] in listed and set(listed) <= set(ids)
        left = [i for i in ids[:2] if any(i in k for k in keys(store))]
        if left:  # after the very last delete nothing is left to rerun for
            cli("delete", root, *left, "--force")
        assert check_only_intact_backups_are_listed(store) == [ids[2]]
        assert not any(ids[0] in k or ids[1] in k for k in keys(store))
    assert step == 9  # 8 deletes (manifest, 2 archives, marker; twice), then a clean run
