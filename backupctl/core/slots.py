"""Redis Cluster slot ranges (pure): the one definition of "the same slots",
shared by the CLI's ``--to-cluster`` restore and the RedisRestore controller."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

CLUSTER_SLOTS = 16384

Ranges = tuple[tuple[int, int], ...]


def normalize_slots(ranges: Iterable[Sequence[int]]) -> Ranges:
    """Sorted, with overlapping and adjacent ranges merged: ``[[5,9],[0,4]]``
    and ``[[0,9]]`` are the same slots."""
    merged: list[list[int]] = []
    for a, b in sorted((int(r[0]), int(r[1])) for r in ranges):
        if merged and a <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return tuple((a, b) for a, b in merged)


def format_slots(ranges: Ranges) -> str:
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in ranges) or "no slots"


def slot_count(ranges: Iterable[Sequence[int]]) -> int:
    """Slots in ``ranges`` (inclusive pairs), overlaps counted twice."""
    return sum(int(r[1]) - int(r[0]) + 1 for r in ranges)


__all__ = ["CLUSTER_SLOTS", "Ranges", "format_slots", "normalize_slots", "slot_count"]
