"""The daily agent rollup: analytics.agent_daily answers the agent questions exactly as
analytics.calls does, follows rescoring, and its migration fills it from the rows present."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.orm import Session

from db.migrate import downgrade, upgrade
from etl.runs.results import finalise_batch
from etl.synthetic.history import make_batch, make_feature_set, make_model_version

DAY = dt.date(2024, 3, 4)

# The docs' question over the raw calls ...
FROM_CALLS = """
SELECT agent_id, count(*) AS calls,
       round(avg(negative_share_customer)::numeric, 6) AS avg_customer_negative,
       round(avg(escalated::int)::numeric, 6) AS escalation_rate
FROM analytics.calls
WHERE status = 'scored' AND negative_share_customer IS NOT NULL AND call_date >= :since
GROUP BY agent_id
"""
# ... and over the rollup (docs/analytics.md)
FROM_ROLLUP = """
SELECT agent_id, sum(customer_calls) AS calls,
       round((sum(customer_negative_sum) / sum(customer_calls))::numeric, 6)
           AS avg_customer_negative,
       round((sum(escalated_customer_calls)::float / sum(customer_calls))::numeric, 6)
           AS escalation_rate
FROM analytics.agent_daily
WHERE day >= :since
GROUP BY agent_id
HAVING sum(customer_calls) > 0
"""
PER_DAY_FROM_CALLS = """
SELECT call_date, queue, agent_id, model_version_id, count(*), count(*) FILTER (WHERE escalated),
       round(sum(duration_s)::numeric, 6)
FROM analytics.calls WHERE status = 'scored'
GROUP BY 1, 2, 3, 4
"""
PER_DAY_FROM_ROLLUP = """
SELECT day, queue, agent_id, model_version_id, calls, escalated_calls,
       round(duration_s::numeric, 6)
FROM analytics.agent_daily
"""


def _answer(conn: Session | Connection, sql: str, since: dt.date) -> dict[Any, tuple[Any, ...]]:
    return {r[0]: tuple(r[1:]) for r in conn.execute(text(sql), {"since": since}).all()}


def _per_day(conn: Session | Connection, sql: str) -> set[tuple[Any, ...]]:
    return set(map(tuple, conn.execute(text(sql)).all()))


def _assert_same(conn: Session | Connection) -> int:
    for since in (DAY - dt.timedelta(days=30), DAY + dt.timedelta(days=1)):
        rollup = _answer(conn, FROM_ROLLUP, since)
        assert rollup == _answer(conn, FROM_CALLS, since), since
    per_day = _per_day(conn, PER_DAY_FROM_ROLLUP)
    assert per_day == _per_day(conn, PER_DAY_FROM_CALLS)
    return len(per_day)


def test_agent_daily_answers_as_the_calls_view_after_scoring_and_rescoring(
        db_session: Session, model_version: int) -> None:
    s = db_session
    first = make_batch(s, model_version_id=model_version, batch_date=DAY, n_calls=30, seed=11)
    second = make_batch(s, model_version_id=model_version, batch_date=DAY + dt.timedelta(days=1),
                        n_calls=25, seed=12)
    assert s.execute(text("SELECT count(*) FROM analytics.agent_daily")).scalar_one() == 0
    for batch in (first, second):
        finalise_batch(s, batch_id=batch.batch_id)
    assert _assert_same(s) > 5
    assert _answer(s, FROM_ROLLUP, DAY)  # the comparison is not of two empty answers
    # a rescore changes a call's summary; finalising the batch again follows it, no duplicates
    call = first.call_ids[0]
    s.execute(text("UPDATE call_summaries SET negative_share_customer = 0.99, escalated = true "
                   "WHERE call_id = :c"), {"c": call})
    finalise_batch(s, batch_id=first.batch_id)
    _assert_same(s)
    # a second model version on the same night: the calls view shows each batch's own summaries
    other = make_model_version(s, clip_ids=[], feature_set_id=make_feature_set(s),
                               name="second", with_metrics=False)
    rescored = make_batch(s, model_version_id=other, batch_date=DAY, n_calls=10, seed=13)
    finalise_batch(s, batch_id=rescored.batch_id)
    _assert_same(s)
    versions = s.execute(text("SELECT DISTINCT model_version_id FROM analytics.agent_daily "
                              "ORDER BY 1")).scalars().all()
    assert versions == sorted([model_version, other])


def test_agent_daily_is_granted_to_analysts_and_reads_by_day(db_session: Session) -> None:
    assert db_session.execute(text(
        "SELECT has_table_privilege('ser_analyst', 'analytics.agent_daily', 'SELECT')"
    )).scalar_one()
    db_session.execute(text("SET LOCAL enable_seqscan = off"))
    plan = "\n".join(db_session.execute(text(
        "EXPLAIN SELECT * FROM analytics.agent_daily WHERE day >= DATE '2024-03-01'")).scalars())
    assert "ix_daily_agent_rollup_call_date" in plan


def test_migration_fills_the_agent_rollup_and_downgrades(scratch_engine: Engine) -> None:
    upgrade(scratch_engine, "819c813532a8")
    with scratch_engine.begin() as conn:
        session = Session(bind=conn)
        fs = make_feature_set(session)
        mv = make_model_version(session, clip_ids=[], feature_set_id=fs, with_metrics=False)
        make_batch(session, model_version_id=mv, batch_date=DAY, n_calls=20, seed=14)
        session.close()
    upgrade(scratch_engine, "0c7c9ff93104")
    with scratch_engine.connect() as conn:
        assert _assert_same(conn) > 0
    downgrade(scratch_engine, "819c813532a8")
    inspector = inspect(scratch_engine)
    assert "daily_agent_rollup" not in inspector.get_table_names()
    assert "agent_daily" not in inspector.get_view_names(schema="analytics")
    upgrade(scratch_engine)
    with scratch_engine.connect() as conn:
        assert _assert_same(conn) > 0
