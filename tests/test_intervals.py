"""Interval arithmetic (etl/audio/intervals.py): the one home for union, intersection, overlap
and length of ``(start_s, end_s)`` regions, and the modules that measure time with it."""

from __future__ import annotations

import pytest

from etl.audio import intervals
from etl.audio.intervals import intersect_regions, overlap, total_length, union_regions


def test_union_merges_overlapping_and_touching_and_drops_empty() -> None:
    assert union_regions([(3.0, 4.0), (0.0, 1.0), (0.5, 2.0), (2.0, 2.5), (5.0, 5.0)]) == [
        (0.0, 2.5), (3.0, 4.0)]
    assert union_regions([]) == []


def test_union_bridges_short_gaps_only() -> None:
    regions = [(0.0, 1.0), (1.2, 2.0), (2.5, 3.0)]
    assert union_regions(regions, bridge_s=0.3) == [(0.0, 2.0), (2.5, 3.0)]
    assert union_regions(regions, bridge_s=0.5) == [(0.0, 2.0), (2.5, 3.0)]  # gap 0.5 is not < 0.5
    assert union_regions(regions, bridge_s=0.51) == [(0.0, 3.0)]


def test_intersection_of_sorted_lists() -> None:
    a = [(0.0, 2.0), (3.0, 6.0)]
    b = [(1.0, 4.0), (5.0, 5.5), (7.0, 8.0)]
    assert intersect_regions(a, b) == [(1.0, 2.0), (3.0, 4.0), (5.0, 5.5)]
    assert intersect_regions(b, a) == intersect_regions(a, b)
    assert intersect_regions(a, []) == []
    assert intersect_regions([(0.0, 1.0)], [(1.0, 2.0)]) == []  # touching shares no time


@pytest.mark.parametrize(("a", "b", "seconds"), [
    ((0.0, 2.0), (1.0, 3.0), 1.0), ((0.0, 2.0), (2.0, 3.0), 0.0), ((0.0, 1.0), (2.0, 3.0), 0.0),
    ((0.0, 5.0), (1.0, 2.0), 1.0), ((1.0, 2.0), (0.0, float("inf")), 1.0)])
def test_overlap(a: tuple[float, float], b: tuple[float, float], seconds: float) -> None:
    assert overlap(a, b) == seconds == overlap(b, a)


def test_total_length() -> None:
    assert total_length([(0.0, 1.5), (2.0, 3.0)]) == 2.5
    assert total_length([]) == 0.0


def test_users_read_intervals_from_one_home() -> None:
    from etl.audio import vad, vad_decision
    from etl.scoring import call_metrics, recompute, summaries

    assert vad.Region is intervals.Region
    assert summaries.union_regions is intervals.union_regions
    assert summaries.intersect_regions is intervals.intersect_regions
    assert call_metrics.union_regions is intervals.union_regions
    assert recompute.Region is intervals.Region
    assert not hasattr(vad, "total_duration")
    assert vad_decision.clean_regions([(0.0, 1.0), (1.1, 2.0), (5.0, 5.1)], min_speech_s=0.2,
                                      min_silence_s=0.25) == [(0.0, 2.0)]
