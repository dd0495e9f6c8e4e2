"""call_facts, what analytics.calls reads, stays equal to the join it stores after every kind
of write, and its migration fills it from the rows present and downgrades to the join view."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.orm import Session

from db.migrate import downgrade, upgrade
from db.migrations.earlier import revision_module
from etl.runs.results import finalise_batch
from etl.synthetic.history import make_batch, make_feature_set, make_model_version

DAY = dt.date(2024, 3, 4)


_migration = revision_module


FACTS = _migration("5d1e8b7c2a90")
# analytics.calls as it was computed before the fact table: the join, at query time
JOINED = FACTS._revision("819c813532a8")._stored_date(FACTS._revision("aad6ca938054").CALLS)
JOINED_SELECT = JOINED.split(" AS\n", 1)[1]


def _rows(conn: Session | Connection, sql: str) -> dict[int, tuple[Any, ...]]:
    return {r[0]: tuple(r) for r in conn.execute(text(f"{sql} ORDER BY 1")).all()}


def _assert_facts_equal_join(conn: Session | Connection) -> int:
    stored = _rows(conn, "SELECT * FROM analytics.calls")
    assert stored == _rows(conn, JOINED_SELECT)
    return len(stored)


def test_facts_follow_every_write_to_calls_summaries_and_batches(
        db_session: Session, model_version: int) -> None:
    s = db_session
    first = make_batch(s, model_version_id=model_version, batch_date=DAY, n_calls=30, seed=21,
                       failure_rate=0.2)
    second = make_batch(s, model_version_id=model_version, batch_date=DAY + dt.timedelta(days=1),
                        n_calls=12, seed=22)
    finalise_batch(s, batch_id=first.batch_id)
    assert _assert_facts_equal_join(s) == 42
    assert s.execute(text("SELECT count(*) FROM analytics.calls WHERE status = 'failed'")
                     ).scalar_one() > 0
    one, two = first.call_ids[:2]
    # a claim, a status change with its error, a corrected start time (another day)
    s.execute(text("UPDATE calls SET status = 'claimed', claimed_by = 'host:1' WHERE id = :c"),
              {"c": one})
    s.execute(text("UPDATE calls SET status = 'failed', error = 'gone' WHERE id = :c"), {"c": two})
    s.execute(text("UPDATE calls SET started_at = '2024-02-29 23:30+00' WHERE id = :c"),
              {"c": one})
    _assert_facts_equal_join(s)
    assert s.execute(text("SELECT call_date FROM analytics.calls WHERE call_id = :c"),
                     {"c": one}).scalar_one() == dt.date(2024, 2, 29)
    # a summary rewritten, then removed (a rescore deletes before it writes)
    s.execute(text("UPDATE call_summaries SET negative_share_customer = 0.99, escalated = true, "
                   "escalation_rule = 'manual' WHERE call_id = :c"), {"c": one})
    _assert_facts_equal_join(s)
    assert s.execute(text("SELECT escalation_rule FROM analytics.escalations WHERE call_id = :c"),
                     {"c": one}).scalar_one() == "manual"
    s.execute(text("DELETE FROM call_summaries WHERE call_id = :c"), {"c": one})
    _assert_facts_equal_join(s)
    # a second model version: its own batch, and a batch moved to it and to another date
    other = make_model_version(s, clip_ids=[], feature_set_id=make_feature_set(s),
                               name="second", with_metrics=False)
    make_batch(s, model_version_id=other, batch_date=DAY, n_calls=10, seed=23)
    s.execute(text("UPDATE batches SET model_version_id = :m, batch_date = :d WHERE id = :b"),
              {"m": other, "d": DAY + dt.timedelta(days=9), "b": second.batch_id})
    _assert_facts_equal_join(s)
    # deleting a batch takes its calls and their facts with it
    s.execute(text("DELETE FROM batches WHERE id = :b"), {"b": first.batch_id})
    assert _assert_facts_equal_join(s) == 22
    assert s.execute(text("SELECT count(*) FROM call_facts")).scalar_one() == 22


def test_calls_view_reads_its_window_from_the_fact_index(db_session: Session) -> None:
    s = db_session
    assert s.execute(text(
        "SELECT has_table_privilege('ser_analyst', 'analytics.calls', 'SELECT')")).scalar_one()
    s.execute(text("SET LOCAL enable_seqscan = off"))
    plan = "\n".join(s.execute(text(
        "EXPLAIN SELECT agent_id, avg(negative_share_customer) FROM analytics.calls "
        "WHERE call_date >= DATE '2024-03-01' GROUP BY agent_id")).scalars())
    assert "ix_call_facts_call_date" in plan
    assert "call_summaries" not in plan and "calls c" not in plan


def test_migration_fills_facts_and_downgrades_to_the_join(scratch_engine: Engine) -> None:
    upgrade(scratch_engine, "0c7c9ff93104")
    with scratch_engine.begin() as conn:
        session = Session(bind=conn)
        fs = make_feature_set(session)
        mv = make_model_version(session, clip_ids=[], feature_set_id=fs, with_metrics=False)
        make_batch(session, model_version_id=mv, batch_date=DAY, n_calls=20, seed=24,
                   failure_rate=0.2)
        session.close()
    with scratch_engine.connect() as conn:
        before = _rows(conn, "SELECT * FROM analytics.calls")
    upgrade(scratch_engine, "5d1e8b7c2a90")
    with scratch_engine.connect() as conn:
        assert _assert_facts_equal_join(conn) == 20
        assert _rows(conn, "SELECT * FROM analytics.calls") == before
    downgrade(scratch_engine, "0c7c9ff93104")
    inspector = inspect(scratch_engine)
    assert "call_facts" not in inspector.get_table_names()
    with scratch_engine.connect() as conn:
        assert _rows(conn, "SELECT * FROM analytics.calls") == before
        assert conn.execute(text(
            "SELECT count(*) FROM pg_proc WHERE proname LIKE 'ser_%call_facts%'")).scalar_one() == 0
    upgrade(scratch_engine)
    with scratch_engine.connect() as conn:
        assert _assert_facts_equal_join(conn) == 20
