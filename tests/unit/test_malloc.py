"""glibc malloc tuning of the data path (backupctl.core.malloc)."""

from __future__ import annotations

import platform

import pytest

from backupctl.core.malloc import tune_malloc
from backupctl.redis import rdb_worker

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")


@glibc
def test_the_readers_thresholds_are_ones_glibc_accepts() -> None:
    # A value glibc refuses is ignored: the reader would then fault its
    # buffers in afresh on every refill.
    assert tune_malloc(
        mmap_threshold=rdb_worker.READER_MMAP_THRESHOLD,
        trim_threshold=rdb_worker.READER_TRIM_THRESHOLD,
    )
