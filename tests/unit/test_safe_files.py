"""Files in a directory someone else may own: created exclusively, never
through a planted link, FIFO or device; atomic exchange; the DIR lock."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from backupctl.core.safe_files import SafeDir, UnsafePathError, exchange


@pytest.fixture
def d(tmp_path: Path) -> Iterator[SafeDir]:
    (tmp_path / "dir").mkdir()
    with SafeDir.open(tmp_path / "dir") as sd:
        yield sd


def test_write_atomic_refuses_a_symlink_planted_at_its_temp_name_and_leaves_the_target(
    d: SafeDir, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("root's file")
    (d.path / "rec.json.tmp").symlink_to(victim)
    with pytest.raises(UnsafePathError, match=r"symbolic link.*refused"):
        d.write_atomic("rec.json", b"{}")
    assert victim.read_text() == "root's file"
    assert not (d.path / "rec.json").exists()


def test_write_atomic_refuses_a_fifo_without_blocking(d: SafeDir) -> None:
    os.mkfifo(d.path / "rec.json.tmp")
    with pytest.raises(UnsafePathError, match="a FIFO"):
        d.write_atomic("rec.json", b"{}")


def test_write_atomic_replaces_its_own_leftover_temp_file(d: SafeDir) -> None:
    (d.path / "rec.json.tmp").write_text("half")
    d.write_atomic("rec.json", b'{"ok": 1}')
    assert (d.path / "rec.json").read_text() == '{"ok": 1}'
    assert not (d.path / "rec.json.tmp").exists()


def test_a_symlink_at_the_final_name_is_replaced_not_written_through(
    d: SafeDir, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("root's file")
    (d.path / "rec.json").symlink_to(victim)
    d.write_atomic("rec.json", b"{}")
    assert victim.read_text() == "root's file"
    assert not (d.path / "rec.json").is_symlink()
    assert d.read("rec.json") == b"{}"


def test_read_does_not_follow_a_link(d: SafeDir, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cr3t")
    (d.path / "rec.json").symlink_to(tmp_path / "secret")
    assert d.read("rec.json") is None


def test_a_folder_swapped_for_a_link_is_refused(d: SafeDir, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (d.path / "staging").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafePathError, match="symbolic link, not a folder"):
        d.owned_subdir("staging")


def test_exchange_swaps_a_file_and_a_folder_atomically(d: SafeDir) -> None:
    (d.path / "a").write_text("file")
    (d.path / "b").mkdir()
    exchange(d, "a", d, "b")
    assert (d.path / "a").is_dir() and (d.path / "b").read_text() == "file"


def test_fd_path_names_the_opened_folder_even_after_a_rename(d: SafeDir, tmp_path: Path) -> None:
    with d.mkdir("stage") as stage:
        (d.path / "stage").rename(d.path / "moved")
        (d.path / "stage").symlink_to(tmp_path)  # what an attacker would plant
        (stage.fd_path / "x").write_text("here")
    assert (d.path / "moved" / "x").read_text() == "here"
    assert not (tmp_path / "x").exists()


def test_the_lock_is_exclusive_between_two_openings(d: SafeDir) -> None:
    assert d.try_lock()
    with SafeDir.open(d.path) as other:
        assert not other.try_lock()
    d.close()
    with SafeDir.open(d.path) as other:
        assert other.try_lock()
