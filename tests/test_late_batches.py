"""A batch arriving late for a day whose segments were already pruned still reaches
``analytics.daily_trends`` (issue 25): the pruned day's frozen rows stay, and the late calls'
rows are added beside them (and rewritten, not added again, by a rerun)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from etl.runs.results import finalise_batch
from etl.scoring.rollup import prune_segments
from etl.synthetic.history import make_batch
from tests.test_analytics_scale import RAW_TRENDS, TREND_KEY

DAY = dt.date(2024, 3, 4)


def _totals(session: Session, sql: str) -> dict[tuple[Any, ...], tuple[int, int, float]]:
    """``{trend key: (calls, segments, speech_s)}`` summed over the rows of ``sql``."""
    calls: Counter[tuple[Any, ...]] = Counter()
    segments: Counter[tuple[Any, ...]] = Counter()
    speech: Counter[tuple[Any, ...]] = Counter()
    for r in session.execute(text(sql)).mappings():
        key = tuple(r[k] for k in TREND_KEY)
        calls[key] += r["calls"]
        segments[key] += r["segments"]
        speech[key] += r["speech_s"]
    return {k: (calls[k], segments[k], round(speech[k], 6)) for k in calls}


def test_a_late_batch_for_a_pruned_day_reaches_daily_trends(
        db_session: Session, model_version: int) -> None:
    s = db_session
    for offset in (0, 1):
        early = make_batch(s, model_version_id=model_version,
                           batch_date=DAY + dt.timedelta(days=offset), n_calls=8, seed=11 + offset)
        finalise_batch(s, batch_id=early.batch_id)
        s.execute(text("UPDATE batches SET source_path = source_path || '-early' WHERE id = :b"),
                  {"b": early.batch_id})
    before = _totals(s, "SELECT * FROM analytics.daily_trends")
    prune_segments(s, before=DAY + dt.timedelta(days=2))
    assert s.execute(text("SELECT count(*) FROM call_segments")).scalar_one() == 0

    late = make_batch(s, model_version_id=model_version, batch_date=DAY, n_calls=6, seed=13)
    late_days = set(s.execute(text("SELECT DISTINCT call_date FROM calls WHERE batch_id = :b"),
                              {"b": late.batch_id}).scalars())
    assert late_days <= {day for day, *_rest in before}  # days already pruned
    late_only = _totals(s, RAW_TRENDS)  # the only segments left are the late batch's
    assert late_only
    expected = {k: tuple(round(a + b, 6) if isinstance(a, float) else a + b
                         for a, b in zip(before.get(k, (0, 0, 0.0)), late_only.get(k, (0, 0, 0.0)),
                                         strict=True))
                for k in before.keys() | late_only.keys()}
    for _run in range(2):  # a rerun of the late batch finalises it again: nothing added twice
        finalise_batch(s, batch_id=late.batch_id)
        assert _totals(s, "SELECT * FROM analytics.daily_trends") == expected
    # the pruned day's own rows are still the frozen ones
    assert s.execute(text("SELECT count(*) FROM daily_emotion_rollup WHERE segments_pruned")
                     ).scalar_one() == sum(1 for _k in before)
