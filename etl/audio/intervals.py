"""Time intervals (regions of speech, segments, turns) as ``(start_s, end_s)`` pairs.

The one home for interval arithmetic: union, intersection, overlap and total length. VAD,
per-call summaries and conversation metrics all measure time with these.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

Region = tuple[float, float]


def overlap(a: Region, b: Region) -> float:
    """Seconds ``a`` and ``b`` share (0 when they are disjoint)."""
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def total_length(regions: Iterable[Region]) -> float:
    """Sum of the regions' lengths, seconds (overlaps count twice: take a union first)."""
    return float(sum(end - start for start, end in regions))


def union_regions(regions: Iterable[Region], *, bridge_s: float = 0.0) -> list[Region]:
    """Sorted, merged union of possibly overlapping regions; empty regions are dropped.

    Regions that touch or overlap merge; with ``bridge_s`` > 0, so do regions separated by a
    gap shorter than ``bridge_s``.
    """
    merged: list[list[float]] = []
    for start, end in sorted(regions):
        if end <= start:
            continue
        if merged and (start <= merged[-1][1] or start - merged[-1][1] < bridge_s):
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


def intersect_regions(a: Sequence[Region], b: Sequence[Region]) -> list[Region]:
    """Intersection of two sorted, non-overlapping region lists (two-pointer sweep)."""
    out: list[Region] = []
    i = j = 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if end > start:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out
