"""glibc's malloc tuned for a streaming data path.

Why a module of its own: the backup pipeline and its RDB reader process move
hundreds of MiB through buffers of 1-5 MiB. glibc's defaults hand such
buffers back to the kernel as soon as they are freed (``munmap``, or
trimming the heap top), so every next buffer is faulted in afresh, page by
page: measured at a third of the RDB reader's CPU time (0.31 of 0.96 CPU-s
on a 304 MiB RDB). Both processes set their thresholds here once, at start.
``restore`` and ``verify`` do the same (:func:`tune_for_bulk_reading`) once
their options are read, undoing the CLI's default of mmapping every chunk of
256 KiB or more (kept for ``run``'s upload memory, see
``backupctl.cli.app``): on a 1 GiB restore that default cost 2.9 million
page faults and 9 s of kernel time, half the CLI's CPU; with the bulk
thresholds, 16,000 faults and 1.5 s, for 74 MiB of peak RSS.
A no-op where glibc is not the C library.
"""

from __future__ import annotations

__all__ = [
    "BULK_MMAP_THRESHOLD",
    "BULK_TRIM_THRESHOLD",
    "M_MMAP_THRESHOLD",
    "M_TRIM_THRESHOLD",
    "trim_malloc",
    "tune_for_bulk_reading",
    "tune_malloc",
]

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: For a process that reads an archive end to end (restore, verify): chunks of
#: up to this size come from the heap and stay there for the next one.
BULK_MMAP_THRESHOLD = 32 * 1024 * 1024
BULK_TRIM_THRESHOLD = 64 * 1024 * 1024


def tune_malloc(*, mmap_threshold: int | None = None, trim_threshold: int | None = None) -> bool:
    """Set glibc's mmap and trim thresholds (bytes); False where that is not possible."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        for param, value in (
            (M_MMAP_THRESHOLD, mmap_threshold),
            (M_TRIM_THRESHOLD, trim_threshold),
        ):
            if value is not None and not libc.mallopt(param, value):
                return False
    except (OSError, AttributeError):
        return False
    return True


def tune_for_bulk_reading() -> bool:
    """The thresholds for a process that reads an archive end to end (``restore``,
    ``verify``): :data:`BULK_MMAP_THRESHOLD` and :data:`BULK_TRIM_THRESHOLD`."""
    return tune_malloc(mmap_threshold=BULK_MMAP_THRESHOLD, trim_threshold=BULK_TRIM_THRESHOLD)


def trim_malloc() -> bool:
    """Hand the heap's free pages back to the kernel (glibc's ``malloc_trim``); False
    where that is not possible."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True
