"""`ser score --recompute-summaries`: summaries, conversation metrics, events and escalations of
an already-scored batch come back from the stored segments and a voice-activity pass alone."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from db.engine import session_scope
from etl.scoring.call_metrics import CallMetrics
from etl.scoring.config import ScoringConfig
from etl.scoring.recompute import config_from_options, plan_recompute, run_recompute
from etl.synthetic.calls import CallGenConfig, generate_calls
from etl.synthetic.clips import ClipBank
from tests.conftest import truncate_all
from tests.test_agent_rollup import PER_DAY_FROM_CALLS, PER_DAY_FROM_ROLLUP
from tests.utils.nightly import train_tiny_model

DAY = dt.date(2024, 6, 3)
METRIC_COLUMNS = [f.name for f in dataclasses.fields(CallMetrics)]
SUMMARY_SQL = """
    SELECT s.* FROM call_summaries s JOIN calls c ON c.id = s.call_id
    JOIN batches b ON b.id = c.batch_id WHERE b.batch_date = :d ORDER BY s.call_id"""


@pytest.fixture(scope="module")
def batch(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Two generated calls (with pauses long enough for long silences) scored on DAY."""
    from etl.runs.batch import score_batch

    truncate_all(engine)
    with session_scope(engine) as session:
        train_tiny_model(session)
    root = tmp_path_factory.mktemp("recompute-batch")
    generate_calls(root, n_calls=2, minutes=0.5,
                   bank=ClipBank.synthetic(actors=range(1, 5), per_emotion=1), seed=23,
                   config=CallGenConfig(nonspeech=0.0, turn_gap_s=(0.3, 3.5)))
    report = score_batch(engine, root, batch_date=DAY, workers=1,
                         config=ScoringConfig(max_duration_s=90.0))
    assert report.n_scored == 2
    yield root
    truncate_all(engine)


def _rows(engine: Engine, sql: str, **params: object) -> list[dict[str, object]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(text(sql), params).mappings()]


def _events(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT call_id, model_version_id, role, kind, start_s, end_s, value "
            "FROM call_events ORDER BY call_id, start_s, kind, role"))]


def _segment_ids(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT id, call_id, start_s, emotion FROM call_segments ORDER BY id"))]


def _forget(engine: Engine) -> None:
    """What a call scored before the conversation metrics looks like: NULL columns, no events,
    and (to see it recomputed) no summary numbers or escalation either."""
    nulls = ", ".join(f"{c} = NULL" for c in METRIC_COLUMNS)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE call_summaries SET {nulls}, negative_share_customer = NULL, "
                          "customer_trend = NULL, talk_agent_s = 0, escalated = false, "
                          "escalation_rule = NULL, escalation_reason = NULL"))
        conn.execute(text("DELETE FROM call_events"))


def test_recompute_restores_what_scoring_stored(batch: Path, engine: Engine,
                                                db_cli: CliRunner) -> None:
    from ser.cli import app

    fresh, events, segments = _rows(engine, SUMMARY_SQL, d=DAY), _events(engine), \
        _segment_ids(engine)
    assert fresh and events and segments
    assert any(e[3] == "silence" for e in events) and all(r["turns_agent"] for r in fresh)
    _forget(engine)
    assert all(r["turns_agent"] is None for r in _rows(engine, SUMMARY_SQL, d=DAY))
    result = db_cli.invoke(app, ["score", str(batch), "--batch-date", DAY.isoformat()])
    assert "recomputed" not in result.output  # without the flag it is a normal (no-op) rerun
    result = db_cli.invoke(app, ["score", str(batch), "--batch-date", DAY.isoformat(),
                              "--recompute-summaries"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("recomputed 2 of 2 scored calls (batch ")
    again = _rows(engine, SUMMARY_SQL, d=DAY)
    skip = {"created_at"}
    assert [{k: v for k, v in r.items() if k not in skip} for r in again] == [
        {k: v for k, v in r.items() if k not in skip} for r in fresh]
    assert _events(engine) == events
    assert _segment_ids(engine) == segments  # segments untouched: same rows, same ids
    with engine.connect() as conn:
        n_escalations = conn.execute(text("SELECT n_escalations FROM batches WHERE batch_date "
                                          "= :d"), {"d": DAY}).scalar_one()
    assert n_escalations == sum(r["escalated"] for r in fresh)


def test_recompute_applies_current_rules_and_reports_missing_audio(
        batch: Path, engine: Engine, db_cli: CliRunner, tmp_path: Path) -> None:
    from ser.cli import app

    rules = tmp_path / "rules.toml"
    rules.write_text('[[rules]]\nname = "talked_and_paused"\nall = [\n'
                     '  { metric = "turns_agent", op = ">=", threshold = 1 },\n'
                     '  { metric = "long_silence_count", op = ">=", threshold = 1 },\n]\n')
    result = db_cli.invoke(app, ["score", str(batch), "--batch-date", DAY.isoformat(),
                              "--recompute-summaries", "--rules", str(rules), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    rows = _rows(engine, SUMMARY_SQL, d=DAY)
    expected = [r for r in rows if r["long_silence_count"] >= 1]
    assert expected and report["n_escalations"] == len(expected)
    assert all(r["escalation_rule"] == "talked_and_paused" for r in expected)
    assert all(r["escalation_reason"].startswith("turns_agent = ") for r in expected)
    with engine.connect() as conn:
        options = conn.execute(text("SELECT options FROM batches WHERE batch_date = :d"),
                               {"d": DAY}).scalar_one()
        extra = conn.execute(text("SELECT extra FROM calls WHERE status = 'scored' LIMIT 1"
                                  )).scalar_one()
    assert options["rules"][0]["name"] == "talked_and_paused" and "all" in options["rules"][0]
    assert extra["escalation_rules"] == "configured"
    with engine.connect() as conn:  # the agent rollup counts the new escalations
        rollup = {tuple(r) for r in conn.execute(text(PER_DAY_FROM_ROLLUP)).all()}
        assert rollup == {tuple(r) for r in conn.execute(text(PER_DAY_FROM_CALLS)).all()}
        assert sum(r[5] for r in rollup) == len(expected)

    # a recording that is gone is listed with its reason; its row is left as it was
    with session_scope(engine) as session:
        targets = plan_recompute(session, batch_date=DAY, source_path=str(batch.resolve()))
    assert len(targets) == 2 and targets[0].config.vad == ScoringConfig().vad
    moved = Path(targets[0].path).rename(tmp_path / "moved.wav")
    try:
        before = _rows(engine, SUMMARY_SQL, d=DAY)
        result = db_cli.invoke(app, ["score", str(batch), "--batch-date", DAY.isoformat(),
                                  "--recompute-summaries"])
        assert result.exit_code == 1, result.output
        assert f"failed {targets[0].call_key}: recording not found" in result.output
        after = _rows(engine, SUMMARY_SQL, d=DAY)
        first = next(r for r in after if r["call_id"] == targets[0].call_id)
        assert first == next(r for r in before if r["call_id"] == targets[0].call_id)
    finally:
        moved.rename(targets[0].path)
    # back to the model's rules (the tiny model has no operating point: the defaults)
    report = run_recompute(lambda: session_scope(engine), batch_date=DAY, rules=None)
    assert report.n_recomputed == 2 and not report.failures
    assert all(r["escalation_rule"] != "talked_and_paused"
               for r in _rows(engine, SUMMARY_SQL, d=DAY))
    result = db_cli.invoke(app, ["score", str(batch), "--batch-date", "2001-01-01",
                              "--recompute-summaries"])
    assert result.exit_code == 2 and "no scored calls" in result.output


def test_recompute_uses_the_site_point_until_it_is_reverted(batch: Path, engine: Engine,
                                                             db_cli: CliRunner) -> None:
    """With no rules configured, recompute flags by the site point `ser calibrate` stored for
    the batch's model version, as nightly scoring does; `ser calibrate --revert` takes it back."""
    from ser.cli import app

    before = _rows(engine, SUMMARY_SQL, d=DAY)
    assert not any(r["escalation_rule"] == "site_any_call" for r in before)
    mv = int(before[0]["model_version_id"])  # type: ignore[call-overload]
    rules = [{"name": "site_any_call", "metric": "silence_share", "op": ">=", "threshold": 0.0}]
    with session_scope(engine) as session:  # the row `ser calibrate` stores
        session.execute(text("""
            INSERT INTO site_operating_points (model_version_id, rules, confidence_floor,
                target_precision, review_ids, before, after, created_by)
            VALUES (:m, CAST(:r AS jsonb), 0, 0.8, '{}', '{}', '{}', 't')"""),
            {"m": mv, "r": json.dumps(rules)})
    result = db_cli.invoke(app, ["score", str(batch), "--batch-date", DAY.isoformat(),
                              "--recompute-summaries", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    rows = _rows(engine, SUMMARY_SQL, d=DAY)
    assert len(before) == 2 and [r["escalation_rule"] for r in rows] == ["site_any_call"] * 2
    assert report["n_changed"] == 2 and report["n_escalations"] == 2
    sources = [r["source"] for r in _rows(
        engine, "SELECT extra ->> 'escalation_rules' AS source FROM calls WHERE status = "
        "'scored'")]
    assert sources == ["site", "site"]

    result = db_cli.invoke(app, ["calibrate", "--revert", "--model", str(mv), "--by", "t"])
    assert result.exit_code == 0, result.output
    report = json.loads(db_cli.invoke(app, [
        "score", str(batch), "--batch-date", DAY.isoformat(), "--recompute-summaries",
        "--json"]).output)
    assert report["n_changed"] == 2
    key = ("call_id", "escalated", "escalation_rule")
    assert [{k: r[k] for k in key} for r in _rows(engine, SUMMARY_SQL, d=DAY)] == [
        {k: r[k] for k in key} for r in before]


def test_config_from_options_keeps_the_batch_settings() -> None:
    stored = ScoringConfig(streak_gap_s=3.0).options()
    stored["vad"]["hangover_s"] = 0.2
    stored["metrics"]["min_silence_s"] = 5.0
    config = config_from_options(json.loads(json.dumps(stored)))
    assert config.vad.hangover_s == 0.2 and config.vad.band_hz == (300.0, 3400.0)
    assert config.metrics.min_silence_s == 5.0 and config.streak_gap_s == 3.0
    old = config_from_options({"rules": "model", "vad": {"hangover_s": 0.12, "gone": 1}})
    assert old.metrics == ScoringConfig().metrics  # a batch from before the metrics existed
