"""Analytics at scale: stored call_date, the daily emotion rollup, segment pruning, migration."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from db.engine import session_scope
from db.migrate import downgrade, head_revision, upgrade
from db.migrations.earlier import revision_module
from etl.runs.results import finalise_batch
from etl.scoring.rollup import prune_segments
from etl.synthetic.history import make_batch, make_feature_set, make_model_version

VIEWS = ("calls", "segments", "call_events", "daily_trends", "escalations")
DAY = dt.date(2024, 3, 4)


_migration = revision_module


def _select_of(ddl: str) -> str:
    """The SELECT of a CREATE [OR REPLACE] VIEW statement."""
    return ddl.split(" AS\n", 1)[1]


# The daily_trends definition before the rollup: every segment aggregated at query time.
RAW_TRENDS = _select_of(_migration("9d2f6b1c4e81").DAILY_TRENDS)
TREND_KEY = ("day", "queue", "agent_id", "role", "emotion", "model_version_id")


def _trends(session: Session | Connection, sql: str) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    rows = session.execute(text(sql)).mappings().all()
    def rounded(x: float | None, digits: int) -> float | None:
        return None if x is None else round(x, digits)  # sums may differ in the last bits

    return {tuple(r[k] for k in TREND_KEY): (r["calls"], r["segments"],
                                             rounded(r["speech_s"], 6), rounded(r["share"], 9),
                                             rounded(r["abstained_s"], 6))
            for r in rows}


def _assert_rollup_matches_raw(session: Session | Connection) -> int:
    view = _trends(session, "SELECT * FROM analytics.daily_trends")
    raw = _trends(session, RAW_TRENDS)
    assert view == raw
    return len(view)


def test_call_date_is_stored_in_utc_whatever_the_session_time_zone(
        db_session: Session, model_version: int) -> None:
    s = db_session
    batch = s.execute(text("INSERT INTO batches (batch_date, source_path, model_version_id) "
                           "VALUES (:d, '/inbox', :mv) RETURNING id"),
                      {"d": DAY, "mv": model_version}).scalar_one()
    # 23:30 UTC is already the next day east of Greenwich and still this day west of it
    s.execute(text("SET LOCAL TimeZone = 'Pacific/Kiritimati'"))
    for key, started in (("late", "2024-03-03 23:30:00+00"), ("local", "2024-03-04 01:00:00+02"),
                         ("none", None)):
        s.execute(text("INSERT INTO calls (batch_id, call_key, path, started_at) VALUES "
                       "(:b, :k, '/x', CAST(:t AS timestamptz))"),
                  {"b": batch, "k": key, "t": started})
    expected = {"late": dt.date(2024, 3, 3), "local": dt.date(2024, 3, 3), "none": DAY}
    for zone in ("Pacific/Kiritimati", "America/Los_Angeles", "UTC"):
        s.execute(text(f"SET LOCAL TimeZone = '{zone}'"))
        stored = dict(s.execute(text("SELECT call_key, call_date FROM calls WHERE batch_id = :b"),
                                {"b": batch}).all())
        seen = dict(s.execute(text("SELECT call_key, call_date FROM analytics.calls "
                                   "WHERE batch_id = :b"), {"b": batch}).all())
        assert stored == expected and seen == expected, zone
    # a corrected started_at (a rejected calls.csv row replaced) moves the call to its day
    s.execute(text("UPDATE calls SET started_at = '2024-02-29 12:00+00' "
                   "WHERE batch_id = :b AND call_key = 'none'"), {"b": batch})
    moved = s.execute(text("SELECT call_date FROM calls WHERE batch_id = :b AND "
                           "call_key = 'none'"), {"b": batch}).scalar_one()
    assert moved == dt.date(2024, 2, 29)
    assert s.execute(text("SELECT call_date FROM analytics.calls WHERE batch_id = :b AND "
                          "call_key = 'none'"), {"b": batch}).scalar_one() == moved
    # a date filter on the views is answered from a call_date index; on a handful of rows the
    # planner may as well walk any index, so give calls and segments older history first
    s.execute(text("INSERT INTO calls (batch_id, call_key, path, started_at) "
                   "SELECT :b, 'old-' || g, '/x', TIMESTAMPTZ '2023-01-01 00:00+00' + g * "
                   "INTERVAL '1 hour' FROM generate_series(1, 5000) AS g"), {"b": batch})
    s.execute(text("INSERT INTO call_segments (call_id, model_version_id, role, start_s, end_s, "
                   "emotion, confidence, is_negative, probabilities) SELECT c.id, b.model_version_id, "
                   "'customer', g, g + 1, 'neutral', 0.9, false, '{}' FROM calls c JOIN batches b "
                   "ON b.id = c.batch_id, generate_series(0, 3) AS g WHERE c.batch_id = :b"),
              {"b": batch})
    s.execute(text("ANALYZE calls, call_segments"))
    s.execute(text("SET LOCAL enable_seqscan = off"))
    for view, index in (("calls", "ix_call_facts_call_date"),
                        ("escalations", "ix_call_facts_call_date"),
                        ("segments", "ix_calls_call_date")):
        plan = "\n".join(s.execute(text(
            f"EXPLAIN SELECT * FROM analytics.{view} WHERE call_date >= DATE '2024-03-01'"
        )).scalars())
        assert index in plan, (view, plan)


def test_rollup_equals_raw_aggregation_after_scoring_and_rescoring(
        db_session: Session, model_version: int) -> None:
    s = db_session
    first = make_batch(s, model_version_id=model_version, batch_date=DAY, n_calls=12, seed=1)
    second = make_batch(s, model_version_id=model_version, batch_date=DAY + dt.timedelta(days=1),
                        n_calls=9, seed=2)
    assert s.execute(text("SELECT count(*) FROM daily_emotion_rollup")).scalar_one() == 0
    finalise_batch(s, batch_id=first.batch_id)
    finalise_batch(s, batch_id=second.batch_id)
    assert _assert_rollup_matches_raw(s) > 10
    # a rescore with the same model replaces a call's segments (as write_result does), and the
    # batch is finalised again: the rollup follows
    call = first.call_ids[0]
    before = _trends(s, "SELECT * FROM analytics.daily_trends")
    s.execute(text("UPDATE call_segments SET emotion = 'angry', abstained = true "
                   "WHERE call_id = :c"), {"c": call})
    s.execute(text("DELETE FROM call_segments WHERE call_id = :c AND role = 'agent'"),
              {"c": call})
    assert _trends(s, "SELECT * FROM analytics.daily_trends") == before  # not yet finalised
    finalise_batch(s, batch_id=first.batch_id)
    assert _trends(s, "SELECT * FROM analytics.daily_trends") != before
    _assert_rollup_matches_raw(s)
    # a second model version on the same night: its own rows, the first's unchanged
    other = make_model_version(s, clip_ids=[], feature_set_id=make_feature_set(s),
                               name="second", with_metrics=False)
    rescored = make_batch(s, model_version_id=other, batch_date=DAY, n_calls=12, seed=3)
    finalise_batch(s, batch_id=rescored.batch_id)
    versions = s.execute(text("SELECT DISTINCT model_version_id FROM analytics.daily_trends "
                              "ORDER BY 1")).scalars().all()
    assert versions == sorted([model_version, other])
    _assert_rollup_matches_raw(s)


def test_daily_trends_keeps_its_columns_types_and_grants(db_session: Session) -> None:
    columns = db_session.execute(text(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'analytics' AND table_name = 'daily_trends' "
        "ORDER BY ordinal_position")).all()
    assert columns == [
        ("day", "date"), ("queue", "character varying"), ("agent_id", "character varying"),
        ("role", "character varying"), ("emotion", "character varying"),
        ("model_version_id", "integer"), ("calls", "bigint"), ("segments", "bigint"),
        ("speech_s", "double precision"), ("share", "double precision"),
        ("abstained_s", "double precision")]
    for view in VIEWS:
        assert db_session.execute(text(
            "SELECT has_table_privilege('ser_analyst', :v, 'SELECT')"),
            {"v": f"analytics.{view}"}).scalar_one(), view
    # the rollup table itself is not part of the analyst contract
    assert not db_session.execute(text(
        "SELECT has_table_privilege('ser_analyst', 'public.daily_emotion_rollup', 'SELECT')"
    )).scalar_one()


def _counts(session: Session) -> dict[str, int]:
    return {t: session.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("calls", "call_summaries", "call_segments", "daily_emotion_rollup")}


def test_prune_drops_old_segments_and_keeps_calls_summaries_and_rollup(
        db_session: Session, model_version: int) -> None:
    s = db_session
    old = make_batch(s, model_version_id=model_version, batch_date=DAY, n_calls=8, seed=4)
    new = make_batch(s, model_version_id=model_version, batch_date=DAY + dt.timedelta(days=5),
                     n_calls=8, seed=5)
    for batch in (old, new):
        finalise_batch(s, batch_id=batch.batch_id)
    trends = _trends(s, "SELECT * FROM analytics.daily_trends")
    counts = _counts(s)
    cutoff = DAY + dt.timedelta(days=2)
    old_segments = s.execute(text("SELECT count(*) FROM call_segments s JOIN calls c ON "
                                  "c.id = s.call_id WHERE c.call_date < :d"),
                             {"d": cutoff}).scalar_one()
    assert old_segments > 0
    report = prune_segments(s, before=cutoff)
    assert report.segments == old_segments and report.frozen_rollup_rows > 0
    after = _counts(s)
    assert after == {**counts, "call_segments": counts["call_segments"] - old_segments}
    assert s.execute(text("SELECT count(*) FROM analytics.segments WHERE call_date >= :d"),
                     {"d": cutoff}).scalar_one() == counts["call_segments"] - old_segments
    assert _trends(s, "SELECT * FROM analytics.daily_trends") == trends
    # finalising the old batch again (a rerun) must not recompute its days from nothing
    finalise_batch(s, batch_id=old.batch_id)
    finalise_batch(s, batch_id=new.batch_id)
    assert _trends(s, "SELECT * FROM analytics.daily_trends") == trends


def test_prune_command(cli_env: dict[str, str], engine: Engine) -> None:
    from ser.cli import app

    with session_scope(engine) as session:
        fs = make_feature_set(session)
        mv = make_model_version(session, clip_ids=[], feature_set_id=fs, with_metrics=False)
        batch = make_batch(session, model_version_id=mv, batch_date=DAY, n_calls=4, seed=6)
        finalise_batch(session, batch_id=batch.batch_id)
    runner = CliRunner()
    bad = runner.invoke(app, ["db", "prune", "--segments-before", "yesterday"])
    assert bad.exit_code == 2 and "not a date" in bad.output
    declined = runner.invoke(app, ["db", "prune", "--segments-before", "2024-12-31"], input="n\n")
    assert declined.exit_code != 0
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM call_segments")).scalar_one() > 0
    done = runner.invoke(app, ["db", "prune", "--segments-before", "2024-12-31", "--yes"])
    assert done.exit_code == 0, done.output
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM call_segments")).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM calls")).scalar_one() == 4
        assert conn.execute(text("SELECT count(*) FROM analytics.daily_trends")).scalar_one() > 0



def _view_definitions(conn: Connection) -> dict[str, str]:
    return dict(conn.execute(text(
        "SELECT viewname, definition FROM pg_views WHERE schemaname = 'analytics'")).all())


def test_migration_fills_call_date_and_rollup_and_downgrades(scratch_engine: Engine) -> None:
    upgrade(scratch_engine, "aad6ca938054")
    with scratch_engine.begin() as conn:
        session = Session(bind=conn)
        fs = make_feature_set(session)
        mv = make_model_version(session, clip_ids=[], feature_set_id=fs, with_metrics=False)
        batch = make_batch(session, model_version_id=mv, batch_date=DAY, n_calls=10, seed=7)
        conn.execute(text("UPDATE calls SET started_at = NULL WHERE id = :c"),
                     {"c": batch.call_ids[0]})
        session.close()
    with scratch_engine.connect() as conn:
        views_before = _view_definitions(conn)
        raw = _trends(conn, "SELECT * FROM analytics.daily_trends")
        n_segments = conn.execute(text("SELECT count(*) FROM call_segments")).scalar_one()
    assert raw and set(views_before) == set(VIEWS)

    upgrade(scratch_engine, "819c813532a8")
    with scratch_engine.connect() as conn:
        dates = dict(conn.execute(text("SELECT id, call_date FROM calls")).all())
        assert dates[batch.call_ids[0]] == DAY  # no started_at: the batch date
        assert set(dates.values()) == {DAY, DAY - dt.timedelta(days=1)}
        assert _trends(conn, "SELECT * FROM analytics.daily_trends") == raw
        assert conn.execute(text("SELECT count(*) FROM daily_emotion_rollup")).scalar_one() > 0
        for view in VIEWS:
            assert conn.execute(text("SELECT has_table_privilege('ser_analyst', :v, 'SELECT')"),
                                {"v": f"analytics.{view}"}).scalar_one(), view

    downgrade(scratch_engine, "aad6ca938054")
    with scratch_engine.connect() as conn:
        assert _view_definitions(conn) == views_before
        assert _trends(conn, "SELECT * FROM analytics.daily_trends") == raw
        assert conn.execute(text("SELECT count(*) FROM call_segments")).scalar_one() == n_segments
        for view in VIEWS:
            assert conn.execute(text("SELECT has_table_privilege('ser_analyst', :v, 'SELECT')"),
                                {"v": f"analytics.{view}"}).scalar_one(), view
    inspector = inspect(scratch_engine)
    assert "call_date" not in {c["name"] for c in inspector.get_columns("calls")}
    assert "daily_emotion_rollup" not in inspector.get_table_names()
    upgrade(scratch_engine)
    with scratch_engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() \
            == head_revision()
        assert _trends(conn, "SELECT * FROM analytics.daily_trends") == raw
