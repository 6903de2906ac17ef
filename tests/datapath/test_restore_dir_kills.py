"""``restore --to-dir`` killed with SIGKILL just before each step of its swap
(the real CLI process, via ``support/restore_kill_at.py``), then run again:
the data directory holds either the complete old data or the complete new
data, the rerun says in one line what it did with the half-done swap, and
nothing is left behind. Also SIGTERM during the download."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from backupctl.core.datadir import (
    PREVIOUS_PREFIX,
    STAGING_PREFIX,
    SWAP_JOURNAL,
    SWAP_RECORD,
)

import support
from support.cli_runner import cli
from support.redis_servers import RedisFactory, populate

TARGET = "ns/app"
KILLER = Path(support.__file__).parent / "restore_kill_at.py"


def tree(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file Redis loads (hidden entries excluded)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.relative_to(folder).parts[0].startswith(".")
    }


def killed_run(kill_at: int, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(KILLER), str(kill_at), "restore", *map(str, args)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@dataclass(frozen=True)
class Scene:
    store: str
    id: str
    old: Path
    old_tree: dict[str, str]
    new_tree: dict[str, str]


@pytest.fixture
def scene(redis_factory: RedisFactory, tmp_path: Path) -> Scene:
    """A backup (new data), an old data directory (appendonly yes), and the
    trees a directory holds with the old and with the new data."""
    root = tmp_path / "scene"
    root.mkdir()
    store = root / "store"
    store.mkdir()
    src = redis_factory()
    populate(src.client(), 2_000)
    bid = json.loads(cli("run", "--redis", src.url, "--to", store.as_uri(), "--target", TARGET,
                         "--json").stdout)["id"]  # fmt: skip
    old = root / "old"
    server = redis_factory(appendonly=True, dir=old)
    populate(server.client(), 300, prefix="old:")
    server.client().save()
    server.stop()
    new = root / "new"
    new.mkdir()
    cli("restore", store.as_uri(), bid, "--target", TARGET, "--to-dir", new)
    return Scene(store.as_uri(), bid, old, tree(old), tree(new))


def fresh_copy(scene: Scene, dest: Path) -> Path:
    subprocess.run(["cp", "-a", str(scene.old), str(dest)], check=True)
    for junk in ("redis.pid", "redis.log"):
        (dest / junk).unlink(missing_ok=True)
    return dest


def steps(scene: Scene, tmp_path: Path, *args: object) -> list[str]:
    data = fresh_copy(scene, tmp_path / "steps")
    proc = killed_run(0, scene.store, scene.id, "--target", TARGET, "--to-dir", data, *args)
    assert proc.returncode == 0, proc.stderr
    names = [line.removeprefix("step: ") for line in proc.stderr.splitlines()
             if line.startswith("step: ")]  # fmt: skip
    assert names[0] == "journal" and names[-2:] == ["record", "cleanup"]
    assert any(n.startswith("replace dump.rdb") for n in names)
    assert any(n.startswith("replace appendonlydir") for n in names)
    return names


def assert_no_leftovers(data: Path) -> None:
    hidden = sorted(p.name for p in data.iterdir() if p.name.startswith("."))
    assert not any(n.startswith(STAGING_PREFIX) for n in hidden), hidden
    assert SWAP_JOURNAL not in hidden and not any(n.endswith(".tmp") for n in hidden), hidden
    assert set(hidden) <= {SWAP_RECORD} | {n for n in hidden if n.startswith(PREVIOUS_PREFIX)}


def test_a_whole_restore_killed_at_each_step_of_its_swap_is_rolled_back_and_redone_by_the_rerun(
    scene: Scene, tmp_path: Path
) -> None:
    names = steps(scene, tmp_path)
    for n, name in enumerate(names, start=1):
        data = fresh_copy(scene, tmp_path / f"kill-{n}")
        args = (scene.store, scene.id, "--target", TARGET, "--to-dir", data)
        proc = killed_run(n, *args)
        assert proc.returncode == -signal.SIGKILL, (name, proc.stderr)
        now = tree(data)
        # Never a moment with neither: each of dump.rdb and the AOF folder is old or new.
        for f in ("dump.rdb", "appendonlydir/appendonly.aof.manifest"):
            assert now[f] in (scene.old_tree.get(f), scene.new_tree.get(f)), (name, f)

        rerun = cli(*("restore", *args, "--json"))
        out = json.loads(rerun.stdout)
        assert tree(data) == scene.new_tree, name
        assert_no_leftovers(data)
        if name == "journal":
            assert out["recovered"] is None
        elif name == "cleanup":  # its record was written: that swap is done, then redone
            assert out["recovered"]["action"] == "finished", name
        else:
            assert out["recovered"]["action"] == "rolled back", name
            assert "rolled back the swap of" in out["recovered"]["message"]
        assert out["leftoversRemoved"] or name == "cleanup", name  # the killed run's staging
        previous = sorted(data.glob(PREVIOUS_PREFIX + "*"))
        assert scene.old_tree in [tree(p) for p in previous], name  # the old data, whole


def test_a_swap_killed_at_each_step_is_finished_by_the_rerun_which_says_so(
    scene: Scene, tmp_path: Path
) -> None:
    data0 = fresh_copy(scene, tmp_path / "probe")
    cli("restore", scene.store, scene.id, "--target", TARGET, "--to-dir", data0,
        "--stage-only")  # fmt: skip
    probe = killed_run(0, scene.store, scene.id, "--to-dir", data0, "--swap")
    swap_steps = [line for line in probe.stderr.splitlines() if line.startswith("step: ")]
    assert len(swap_steps) >= 5, probe.stderr
    for n in range(1, len(swap_steps) + 1):
        data = fresh_copy(scene, tmp_path / f"swap-{n}")
        cli("restore", scene.store, scene.id, "--target", TARGET, "--to-dir", data,
            "--stage-only")  # fmt: skip
        proc = killed_run(n, scene.store, scene.id, "--to-dir", data, "--swap")
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        rerun = cli("restore", scene.store, scene.id, "--to-dir", data, "--swap")
        first = rerun.stdout.splitlines()[0]
        if n == 1:  # killed before its journal: nothing had moved, the rerun simply swaps
            assert first.startswith("restored "), rerun.stdout
        else:
            assert first.startswith(f"finished the swap of {scene.id}"), rerun.stdout
        assert tree(data) == scene.new_tree, swap_steps[n - 1]
        assert_no_leftovers(data)
        (previous,) = data.glob(PREVIOUS_PREFIX + "*")
        assert tree(previous) == scene.old_tree


def test_sigterm_during_the_download_removes_the_staging_folder(
    scene: Scene, tmp_path: Path
) -> None:
    # A redis-check-rdb that hangs holds the restore inside its staging folder.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    started = tmp_path / "started"
    fake = bin_dir / "redis-check-rdb"
    fake.write_text(
        "#!/bin/sh\n"
        'case "$1" in --version) echo "redis-check-rdb 7.0.15"; exit 0;; esac\n'
        f"touch {started}\nexec sleep 60\n"
    )
    fake.chmod(0o755)
    data = fresh_copy(scene, tmp_path / "data")
    proc = subprocess.Popen(
        [sys.executable, "-m", "backupctl", "restore", str(scene.store), str(scene.id),
         "--target", TARGET, "--to-dir", str(data)],
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert started.exists(), proc.communicate(timeout=5)
        assert [p.name for p in data.glob(STAGING_PREFIX + "*")]  # it is staging now
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 143 and "interrupted" in err, err  # 128 + SIGTERM
    assert not list(data.glob(STAGING_PREFIX + "*"))
    assert tree(data) == scene.old_tree
