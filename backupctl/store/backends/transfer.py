"""How large uploads are cut and how many parts go at once (``--part-size``,
``--concurrency``), checked against what each store accepts (pure).

Why a module of its own: the limits differ per store (S3 parts of 5 MiB to
5 GiB, at most 10,000 of them; Azure blocks up to 4000 MiB; GCS resumable
chunks in multiples of 256 KiB, sent in order), and one table keeps the
checks, the defaults and the messages together, beside no SDK. The backends
read a :class:`Transfer` when they cut an upload; bandwidth limits are a
wrapper of their own (:mod:`backupctl.store.backends.throttle`).
"""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: The most parts in flight a command may ask for (memory: (N + 1) parts).
MAX_CONCURRENCY = 32


@dataclass(frozen=True)
class Limits:
    """What one store accepts and what backupctl uses when not told."""

    min_part: int
    max_part: int
    multiple: int  # a part size must be a multiple of this
    default_part: int
    default_concurrency: int
    ordered: bool  # parts go one at a time, in order (concurrency does not apply)


LIMITS = {
    "s3": Limits(5 * MiB, 5 * GiB, 1, 5 * MiB, 2, ordered=False),
    "az": Limits(64 * KiB, 4000 * MiB, 1, 8 * MiB, 3, ordered=False),
    "gs": Limits(256 * KiB, 5 * GiB, 256 * KiB, 8 * MiB, 1, ordered=True),
}
_STORE = {"s3": "S3", "az": "Azure Blob", "gs": "GCS"}


class TransferError(ValueError):
    """A part size or concurrency a store does not take; ``str()`` is one line."""


@dataclass(frozen=True)
class Transfer:
    """Upload settings; None: the store's default (:data:`LIMITS`)."""

    part_size: int | None = None  # bytes
    concurrency: int | None = None  # parts in flight

    def part(self, scheme: str) -> int:
        return self.part_size or LIMITS[scheme].default_part

    def workers(self, scheme: str) -> int:
        limits = LIMITS[scheme]
        if limits.ordered:
            return 1
        return self.concurrency or limits.default_concurrency


def _size(n: int) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n} bytes"


def check_transfer(scheme: str, t: Transfer) -> None:
    """:class:`TransferError` when ``t`` does not suit stores of ``scheme``
    (``s3``, ``az``, ``gs``; other schemes upload no parts and take anything)."""
    if t.concurrency is not None and not 1 <= t.concurrency <= MAX_CONCURRENCY:
        raise TransferError(
            f"--concurrency {t.concurrency} is out of range: give 1 to {MAX_CONCURRENCY} "
            "(each part in flight holds one part size of memory)"
        )
    limits = LIMITS.get(scheme)
    if limits is None or t.part_size is None:
        return
    name = _STORE[scheme]
    if not limits.min_part <= t.part_size <= limits.max_part:
        raise TransferError(
            f"--part-size {_size(t.part_size)} is out of range for {name}: give "
            f"{_size(limits.min_part)} to {_size(limits.max_part)}, e.g. 16MiB"
        )
    if t.part_size % limits.multiple:
        raise TransferError(
            f"--part-size {_size(t.part_size)} does not suit {name}: it must be a multiple of "
            f"{_size(limits.multiple)}, e.g. 16MiB"
        )


__all__ = ["LIMITS", "MAX_CONCURRENCY", "Limits", "Transfer", "TransferError", "check_transfer"]
