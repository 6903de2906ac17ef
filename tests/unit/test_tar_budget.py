"""TarBudget as tarfile's forward-only seekable stream (``r:`` mode)."""

from __future__ import annotations

import io
import tarfile

import pytest

from backupctl.store.archive import iter_members
from backupctl.store.archive_guard import HEADER_SLACK, ArchiveError, TarBudget


def _tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_seek_moves_ahead_by_reading_and_never_back() -> None:
    budget = TarBudget(io.BytesIO(bytes(range(256)) * 4))
    assert budget.seek(10) == 10 and budget.tell() == 10
    assert budget.read(2) == bytes([10, 11])
    with pytest.raises(io.UnsupportedOperation):
        budget.seek(5)
    with pytest.raises(io.UnsupportedOperation):
        budget.seek(0, io.SEEK_END)


def test_seek_is_bound_by_the_budget_as_reads_are() -> None:
    budget = TarBudget(io.BytesIO(bytes(3 * HEADER_SLACK)))
    with pytest.raises(ArchiveError, match="more data between its files"):
        budget.seek(HEADER_SLACK + 2)  # skipping is reading: no way around the budget


def test_members_read_whole_in_order_through_the_budget() -> None:
    files = {"dump.rdb": b"R" * 3_000_000, "appendonlydir/a.aof": b"A" * 700, "empty": b""}
    budget = TarBudget(io.BytesIO(_tar(files)))
    got = {}
    for info, reader in iter_members(budget):  # type: ignore[arg-type]
        budget.allow(info.size)
        got[info.name] = reader.read()
    assert got == files


def test_a_member_cut_short_is_one_clear_error() -> None:
    data = _tar({"dump.rdb": b"R" * 100_000})[:60_000]
    budget = TarBudget(io.BytesIO(data))
    with pytest.raises((ArchiveError, tarfile.ReadError)):
        for info, reader in iter_members(budget):  # type: ignore[arg-type]
            budget.allow(info.size)
            reader.read()
