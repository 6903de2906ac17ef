"""Temp folders of verify and restore --to-redis (backupctl.ops.scratch):
a later run removes what a killed one left, never a live run's folder,
never through a link; a bad parent folder is one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backupctl.ops.scratch import LOCK_NAME, TempDirError, check_parent, scratch_dir, sweep

PREFIX = "backupctl-test-"

#: A child that makes a scratch folder, prints it, and waits to be killed.
HOLDER = f"""
import sys, time
from pathlib import Path
from backupctl.ops.scratch import scratch_dir
with scratch_dir(Path(sys.argv[1]), {PREFIX!r}) as folder:
    (folder / "data").write_bytes(b"x" * 1000)
    print(folder, flush=True)
    time.sleep(60)
"""


def _holder(parent: Path) -> tuple[subprocess.Popen[str], Path]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(parent)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    return proc, Path(proc.stdout.readline().strip())


def test_a_killed_runs_folder_is_removed_by_the_next_run_and_reported(tmp_path: Path) -> None:
    proc, folder = _holder(tmp_path)
    live, live_folder = _holder(tmp_path)
    try:
        assert (folder / "data").is_file() and (live_folder / LOCK_NAME).is_file()
        proc.kill()
        proc.communicate(timeout=10)
        assert folder.is_dir()  # SIGKILL: nothing cleaned up
        notes: list[str] = []
        with scratch_dir(tmp_path, PREFIX, note=notes.append) as mine:
            assert mine.is_dir()
            assert not folder.exists()
            assert live_folder.is_dir()  # its owner lives: kept
            assert notes == [f"removed 1 leftover temp folder of killed runs: {folder}"]
        assert not mine.exists()
    finally:
        live.kill()
        live.communicate(timeout=10)


def test_a_folder_without_lock_goes_only_when_its_pid_is_dead(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    gone = tmp_path / f"{PREFIX}{dead.stdout.strip()}-abc123"
    gone.mkdir()
    alive = tmp_path / f"{PREFIX}{os.getppid()}-abc123"
    alive.mkdir()
    assert sweep(tmp_path, PREFIX) == [str(gone)]
    assert alive.is_dir()


def test_links_and_other_names_are_never_followed_or_touched(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep")
    (tmp_path / f"{PREFIX}999999999-abc").symlink_to(victim)
    other = tmp_path / "backupctl-other-999999999-abc"
    other.mkdir()
    planted = tmp_path / f"{PREFIX}999999998-abc"
    planted.mkdir()
    (planted / LOCK_NAME).symlink_to(victim / "precious")
    assert sweep(tmp_path, PREFIX) == []
    assert (victim / "precious").read_text() == "keep" and other.is_dir() and planted.is_dir()


def test_the_folder_is_removed_when_the_block_raises(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), scratch_dir(tmp_path, PREFIX) as folder:
        (folder / "f").write_text("x")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("parent", "needle"),
    [
        ("missing", "does not exist: create it (mkdir -p"),
        ("file", "is not a folder"),
    ],
)
def test_a_bad_parent_is_one_clear_line(tmp_path: Path, parent: str, needle: str) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(TempDirError) as err:
        check_parent(tmp_path / parent)
    assert needle in str(err.value) and str(tmp_path / parent) in str(err.value)
    assert str(err.value).startswith("--tmp-dir ")


def test_too_little_room_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with (
        pytest.raises(TempDirError, match="free but this needs about"),
        scratch_dir(tmp_path, PREFIX, need=2**62),
    ):
        raise AssertionError("not reached")  # pragma: no cover
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_parent_is_one_clear_line(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(TempDirError, match="not writable"):
        check_parent(ro)
