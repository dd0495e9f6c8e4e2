"""The daily rollups behind ``analytics.daily_trends`` and ``analytics.agent_daily``, and
segment retention.

``daily_emotion_rollup`` holds, per day (``calls.call_date``), queue, agent, role, emotion and
model version, the calls, segments and seconds of scored speech. :func:`refresh_rollup`
recomputes every day a batch touches from the raw segments (all batches and model versions of
those days, so a day fed by two batches or rescored with a second model stays exact); the
nightly flow calls it from ``etl.runs.results.finalise_batch``, in the transaction that counts the
batch. ``daily_agent_rollup`` holds, per day, queue, agent and model version, the scored
calls and the sums behind the agent averages, from the calls' summaries; the same refresh
rewrites it. :func:`prune_segments` deletes old segments and freezes their days' rollup rows, which a
later refresh then leaves alone (their raw segments are gone); a batch scored for such a day
later (a late delivery) adds unfrozen rows beside them, so ``analytics.daily_trends`` may show
two rows for one key on a pruned day, whose sums are the day's.

Nothing here commits: the caller owns the transaction.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

# The time zone of calls.call_date (trigger calls_call_date, migration 819c813532a8).
CALL_DATE_TIME_ZONE = "UTC"

# Refreshes of overlapping days must not interleave (each deletes, then re-inserts, the days'
# rows): this lock mode conflicts with itself but not with readers.
_LOCK = text("LOCK TABLE daily_emotion_rollup, daily_agent_rollup IN SHARE ROW EXCLUSIVE MODE")

# A day whose segments were pruned keeps its rows as they were frozen (segments_pruned): only
# the rows beside them are rewritten, from the segments written since, i.e. the calls of
# batches that arrived (or were rescored) after the prune. The view shows both kinds of rows;
# their sums are the day's.
_DAYS = text("SELECT DISTINCT call_date FROM calls WHERE batch_id = :b ORDER BY call_date")

_DELETE = text("DELETE FROM daily_emotion_rollup WHERE call_date = ANY(:days) "
               "AND NOT segments_pruned")

_INSERT = text("""
INSERT INTO daily_emotion_rollup (call_date, queue, agent_id, role, emotion, model_version_id,
                                  calls, segments, speech_s, abstained_s)
SELECT c.call_date, c.queue, c.agent_id, s.role, s.emotion, s.model_version_id,
       count(DISTINCT s.call_id), count(*), sum(s.end_s - s.start_s),
       COALESCE(sum(s.end_s - s.start_s) FILTER (WHERE s.abstained), 0)
FROM calls c
JOIN call_segments s ON s.call_id = c.id
WHERE c.call_date = ANY(:days)
GROUP BY c.call_date, c.queue, c.agent_id, s.role, s.emotion, s.model_version_id
""")


# Summaries are never pruned, so each day's rows are recomputed whole. The summary is the one of
# the batch's model version, as analytics.calls shows it.
_AGENT_DELETE = text("DELETE FROM daily_agent_rollup WHERE call_date = ANY(:days)")

_AGENT_INSERT = text("""
INSERT INTO daily_agent_rollup (call_date, queue, agent_id, model_version_id, calls,
                                escalated_calls, customer_calls, escalated_customer_calls,
                                customer_negative_sum, duration_s)
SELECT c.call_date, c.queue, c.agent_id, s.model_version_id, count(*),
       count(*) FILTER (WHERE s.escalated),
       count(s.negative_share_customer),
       count(s.negative_share_customer) FILTER (WHERE s.escalated),
       COALESCE(sum(s.negative_share_customer), 0), sum(s.duration_s)
FROM calls c
JOIN batches b         ON b.id = c.batch_id
JOIN call_summaries s  ON s.call_id = c.id AND s.model_version_id = b.model_version_id
WHERE c.call_date = ANY(:days) AND c.status = 'scored'
GROUP BY c.call_date, c.queue, c.agent_id, s.model_version_id
""")


def refresh_rollup(session: Session, *, batch_id: int) -> int:
    """Recompute both rollups' rows of every day the batch's calls belong to; return the
    emotion rollup rows written.

    Days whose segments were pruned keep their frozen emotion rollup rows (see
    :func:`prune_segments`); a batch of such a day scored after the prune (a late delivery)
    gets rows of its own beside them, from its segments.
    """
    session.execute(_LOCK)
    days = list(session.execute(_DAYS, {"b": batch_id}).scalars())
    if not days:
        return 0
    session.execute(_AGENT_DELETE, {"days": days})
    session.execute(_AGENT_INSERT, {"days": days})
    session.execute(_DELETE, {"days": days})
    result = session.execute(_INSERT, {"days": days})
    return int(result.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class PruneReport:
    before: dt.date
    segments: int
    frozen_rollup_rows: int


def count_prunable(session: Session, *, before: dt.date) -> int:
    """Segments :func:`prune_segments` would delete."""
    return int(session.execute(text(
        "SELECT count(*) FROM call_segments s JOIN calls c ON c.id = s.call_id "
        "WHERE c.call_date < :d"), {"d": before}).scalar_one())


def prune_segments(session: Session, *, before: dt.date) -> PruneReport:
    """Delete the segments of calls whose ``call_date`` is before ``before``.

    Calls, summaries, events and the rollup stay: the pruned days' rollup rows are marked
    ``segments_pruned`` so a later refresh (a rerun of an old batch) does not recompute them
    from the segments that are left. The days are frozen first, under the rollup lock, so no
    refresh can run in between.
    """
    session.execute(_LOCK)
    frozen = session.execute(text(
        "UPDATE daily_emotion_rollup SET segments_pruned = true "
        "WHERE call_date < :d AND NOT segments_pruned"), {"d": before})
    deleted = session.execute(text(
        "DELETE FROM call_segments s USING calls c "
        "WHERE s.call_id = c.id AND c.call_date < :d"), {"d": before})
    return PruneReport(before, int(deleted.rowcount),  # type: ignore[attr-defined]
                       int(frozen.rowcount))  # type: ignore[attr-defined]
