"""Analytics views and the read-only ser_analyst role: contents, permissions, documented queries."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from db.migrations.earlier import revision_module
from etl.scoring.rollup import refresh_rollup
from etl.synthetic.history import make_feature_set, make_model_version

ROOT = Path(__file__).resolve().parent.parent
VIEWS = ("calls", "segments", "daily_trends", "escalations")


def _migration() -> ModuleType:
    return revision_module("5e7a0c1d2b3f")


def _doc_queries() -> list[str]:
    doc = (ROOT / "docs" / "analytics.md").read_text()
    return re.findall(r"```sql\n(.*?)```", doc, flags=re.DOTALL)


@pytest.fixture()
def scored(db_session: Session) -> Iterator[dict[str, int]]:
    """One scored, escalated call (known segments) and one failed call, started today."""
    fs = make_feature_set(db_session)
    mv = make_model_version(db_session, clip_ids=[], feature_set_id=fs, with_metrics=False)
    s = db_session
    batch = s.execute(text(
        "INSERT INTO batches (batch_date, source_path, model_version_id) VALUES "
        "(current_date, '/inbox', :mv) RETURNING id"), {"mv": mv}).scalar_one()
    ids = {}
    for key, status, error in (("c1", "scored", None), ("c2", "failed", "empty file (0 bytes)")):
        ids[key] = s.execute(text(
            "INSERT INTO calls (batch_id, call_key, path, agent_id, queue, started_at, status, "
            "error, duration_s) VALUES (:b, :k, '/secret/path/' || :k, 'A1', 'billing', now(), "
            ":st, :err, 60) RETURNING id"), {"b": batch, "k": key, "st": status, "err": error}
        ).scalar_one()
    segments = [("agent", 0.0, 4.0, "calm", False), ("customer", 5.0, 9.0, "angry", True),
                ("customer", 10.0, 12.0, "calm", False), ("customer", 40.0, 44.0, "sad", True)]
    for role, start, end, emotion, negative in segments:
        s.execute(text(
            "INSERT INTO call_segments (call_id, model_version_id, role, start_s, end_s, emotion, "
            "confidence, is_negative, probabilities) VALUES (:c, :mv, :r, :s, :e, :em, 0.8, :n, "
            "CAST(:p AS jsonb))"), {"c": ids["c1"], "mv": mv, "r": role, "s": start, "e": end,
                                    "em": emotion, "n": negative,
                                    "p": json.dumps({emotion: 0.8})})
    s.execute(text(
        "INSERT INTO call_summaries (call_id, model_version_id, duration_s, talk_agent_s, "
        "talk_customer_s, silence_share, overtalk_share, negative_share_customer, "
        "longest_negative_streak_s, customer_trend, escalated, escalation_rule, "
        "escalation_reason) VALUES (:c, :mv, 60, 4, 10, 0.7, 0, 0.8, 4, 0.5, true, "
        "'customer_negative_share', 'negative_share_customer = 0.8 >= 0.5')"),
        {"c": ids["c1"], "mv": mv})
    refresh_rollup(s, batch_id=batch)  # as etl.runs.results.finalise_batch does at the end of a batch
    yield {"model_version_id": mv, "batch_id": batch, **ids}


def _as_analyst(session: Session, sql: str) -> list:
    """Run ``sql`` as ser_analyst inside a savepoint (rolled back, role reset with it)."""
    with session.begin_nested() as savepoint:
        session.execute(text("SET LOCAL ROLE ser_analyst"))
        rows = session.execute(text(sql)).all()
        savepoint.rollback()
    return rows


def _denied(session: Session, sql: str, *, codes: frozenset[str] = frozenset({"42501"})) -> bool:
    """True if ``sql`` run as ser_analyst fails with one of ``codes`` (42501: no privilege)."""
    with session.begin_nested() as savepoint:
        session.execute(text("SET LOCAL ROLE ser_analyst"))
        try:
            session.execute(text(sql))
        except DBAPIError as exc:
            savepoint.rollback()
            return getattr(exc.orig, "pgcode", None) in codes
        savepoint.rollback()
        return False


def test_views_present_scored_results(db_session: Session, scored: dict[str, int]) -> None:
    calls = {r.call_key: r for r in db_session.execute(text(
        "SELECT * FROM analytics.calls WHERE batch_id = :b"), {"b": scored["batch_id"]})}
    assert calls["c1"].status == "scored" and calls["c1"].escalated
    assert calls["c1"].model_version_id == scored["model_version_id"]
    assert calls["c2"].status == "failed" and not calls["c2"].escalated
    assert calls["c2"].error.startswith("empty")
    assert calls["c1"].call_date == dt.date.today()
    assert "path" not in calls["c1"]._fields  # file paths stay out of the analyst contract
    escalations = db_session.execute(text("SELECT call_key, escalation_rule FROM "
                                          "analytics.escalations")).all()
    assert escalations == [("c1", "customer_negative_share")]
    segs = db_session.execute(text("SELECT role, duration_s FROM analytics.segments WHERE "
                                   "call_id = :c ORDER BY start_s"), {"c": scored["c1"]}).all()
    assert [r.duration_s for r in segs] == [4.0, 4.0, 2.0, 4.0]
    trends = {(r.role, r.emotion): r for r in db_session.execute(text(
        "SELECT * FROM analytics.daily_trends WHERE model_version_id = :mv"),
        {"mv": scored["model_version_id"]})}
    assert trends[("customer", "angry")].speech_s == 4.0
    assert trends[("customer", "sad")].share == pytest.approx(0.4)
    assert trends[("customer", "calm")].share == pytest.approx(0.2)
    assert trends[("agent", "calm")].share == pytest.approx(1.0)
    assert trends[("customer", "angry")].calls == 1


def test_analyst_reads_views_and_nothing_else(db_session: Session,
                                              scored: dict[str, int]) -> None:
    for view in VIEWS:
        rows = _as_analyst(db_session, f"SELECT * FROM analytics.{view}")
        assert rows, view
    for table in ("actors", "clips", "calls", "call_segments", "call_summaries",
                  "model_versions", "batches"):
        assert _denied(db_session, f"SELECT * FROM public.{table} LIMIT 1"), table
    assert _denied(db_session, "INSERT INTO public.calls (batch_id, call_key, path) VALUES "
                               f"({scored['batch_id']}, 'x', 'x')")
    # the join views are not updatable at all (55000 / 0A000); the role lacks the rights anyway
    refused = frozenset({"42501", "55000", "0A000"})
    assert _denied(db_session, "DELETE FROM analytics.segments", codes=refused)
    assert _denied(db_session, "UPDATE analytics.calls SET queue = 'x'", codes=refused)
    rights = db_session.execute(text(
        "SELECT bool_or(has_table_privilege('ser_analyst', 'analytics.' || v, p)) FROM "
        "unnest(ARRAY['calls', 'segments', 'daily_trends', 'escalations']) v, "
        "unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) p")).scalar_one()
    assert rights is False
    assert _denied(db_session, "CREATE TABLE analytics.mine (x int)")
    # the superuser running the tests can still do all of that: the refusals are the role's
    db_session.execute(text("SELECT count(*) FROM public.actors"))


def test_documented_queries_run_as_analyst(db_session: Session, scored: dict[str, int]) -> None:
    queries = _doc_queries()
    assert len(queries) >= 5
    results = [_as_analyst(db_session, sql) for sql in queries]
    assert results[0] == [("billing", "customer_negative_share", 1)]
    assert sum(1 for r in results if r) >= 5


def test_role_setup_is_idempotent_and_downgrade_only_revokes(db_session: Session,
                                                             scored: dict[str, int]) -> None:
    migration = _migration()
    db_session.execute(text(migration.CREATE_ROLE))  # role exists already: no error
    db_session.execute(text(migration.CREATE_ROLE))
    assert _as_analyst(db_session, "SELECT count(*) FROM analytics.calls")[0][0] == 2
    db_session.execute(text(migration.REVOKE_ROLE))
    assert _denied(db_session, "SELECT * FROM analytics.calls")
    still = db_session.execute(text("SELECT count(*) FROM pg_roles WHERE rolname = "
                                    "'ser_analyst'")).scalar_one()
    assert still == 1  # downgrade never drops the cluster-wide role
