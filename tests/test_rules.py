"""Compound escalation rules (all/any of conditions on summary and conversation metrics), their
validation, `ser rules check` and `ser rules preview` on a scored batch."""

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
from etl.scoring.escalation import (
    DEFAULT_RULES,
    METRICS,
    Condition,
    EscalationRule,
    Group,
    evaluate,
    load_rules,
    metric_values,
    read_rules,
    resolve_operating_point,
    rules_as_data,
    rules_from_data,
)
from etl.scoring.rules_preview import preview_rules
from etl.scoring.summaries import SummaryStats
from etl.synthetic.calls import generate_calls
from etl.synthetic.clips import ClipBank
from tests.conftest import truncate_all
from tests.utils.nightly import train_tiny_model

DAY = dt.date(2024, 5, 2)

COMPOUND_TOML = """
[[rules]]
name = "angry_end_interrupted"
description = "customer negative at the end and talked over"
all = [
  { metric = "negative_share_customer_q4", op = ">=", threshold = 0.5 },
  { metric = "interruptions_by_agent", op = ">=", threshold = 3 },
]

[[rules]]
name = "dead_air_rising"
all = [
  { metric = "long_silence_s", op = ">=", threshold = 30 },
  { any = [
      { metric = "customer_trend", op = ">", threshold = 0 },
      { metric = "loudness_change_customer_db", op = ">=", threshold = 6 },
  ] },
]

[[rules]]
name = "overtalk"
metric = "overtalk_share"
op = ">="
threshold = 0.2
"""


def _values(**overrides: float | None) -> dict[str, float | None]:
    values: dict[str, float | None] = dict.fromkeys(METRICS, None)
    values.update(overrides)
    return values


# --------------------------------------------------------------------------------------------
# Evaluation and validation (no database)
# --------------------------------------------------------------------------------------------


def test_nested_all_any_evaluation_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(COMPOUND_TOML)
    rules = read_rules(path)
    assert [r.name for r in rules] == ["angry_end_interrupted", "dead_air_rising", "overtalk"]
    assert rules[1].when == Group("all", (
        Condition("long_silence_s", ">=", 30.0),
        Group("any", (Condition("customer_trend", ">", 0.0),
                      Condition("loudness_change_customer_db", ">=", 6.0)))))
    # all: both conditions must hold
    assert evaluate(_values(negative_share_customer_q4=0.6, interruptions_by_agent=2),
                    rules) is None
    fired = evaluate(_values(negative_share_customer_q4=0.6, interruptions_by_agent=3), rules)
    assert fired is not None and fired.rule == "angry_end_interrupted"
    assert fired.reason == ("negative_share_customer_q4 = 0.6 >= 0.5 and interruptions_by_agent "
                            "= 3 >= 3 (customer negative at the end and talked over)")
    # nested any: either branch; the reason lists only the conditions that held
    rising = _values(long_silence_s=31.0, customer_trend=0.2, loudness_change_customer_db=1.0)
    fired = evaluate(rising, rules)
    assert fired is not None and fired.rule == "dead_air_rising"
    assert fired.reason == "long_silence_s = 31 >= 30 and customer_trend = 0.2 > 0"
    louder = _values(long_silence_s=31.0, customer_trend=None, loudness_change_customer_db=7.0)
    assert evaluate(louder, rules).reason.endswith("loudness_change_customer_db = 7 >= 6")  # type: ignore[union-attr]
    # None never holds: a missing metric does not satisfy an any, nor an all
    assert evaluate(_values(long_silence_s=31.0), rules) is None
    assert evaluate(_values(long_silence_s=None, customer_trend=0.9), rules) is None
    # first rule wins; the reason names every rule that fired
    both = {**rising, "overtalk_share": 0.3}
    fired = evaluate(both, rules)
    assert fired is not None and fired.rule == "dead_air_rising"
    assert "; overtalk_share = 0.3 >= 0.2" in fired.reason


def test_rules_read_summary_and_conversation_metrics_together() -> None:
    assert {f.name for f in dataclasses.fields(CallMetrics)} <= METRICS
    assert "negative_share_customer_q4" in METRICS and "emotion_mix" not in METRICS
    summary = SummaryStats(60.0, 10.0, 20.0, 0.4, 0.05, 0.1, 0.7, 25.0, 0.2, 0.9, 0.7, {})
    metrics = CallMetrics(**{f.name: 1 for f in dataclasses.fields(CallMetrics)})  # type: ignore[arg-type]
    rule = EscalationRule("combo", when=Group("all", (
        Condition("negative_share_customer", ">=", 0.5), Condition("turns_agent", ">=", 1))))
    assert evaluate(metric_values(summary, metrics), [rule]) is not None
    # without the conversation metrics (a call scored before them) the condition cannot hold
    assert evaluate(metric_values(summary), [rule]) is None
    assert evaluate(summary, [rule]) is None
    assert evaluate(summary).rule == "customer_negative_share"  # type: ignore[union-attr]


@pytest.mark.parametrize(("rules", "message"), [
    ([{"name": "r", "all": [{"metric": "mood", "threshold": 1}]}],
     r"escalation rule 'r', all\[1\]: unknown metric 'mood'; choose one of .*interruptions_by_agent"),
    ([{"name": "r", "any": [{"metric": "turns_agent", "op": "=>", "threshold": 1}]}],
     r"escalation rule 'r', any\[1\]: op '=>' is not one of >=, >, <=, <"),
    ([{"name": "r", "all": [{"metric": "turns_agent", "treshold": 1}]}],
     r"unknown key\(s\) \['treshold'\]"),
    ([{"name": "r", "metric": "turns_agent", "threshold": 1, "when": "always"}],
     r"escalation rule 'r': unknown key\(s\) \['when'\]; allowed: name, description"),
    ([{"name": "r", "all": [{"any": [{"metric": "nope", "threshold": 1}]}]}],
     r"'r', all\[1\], any\[1\]: unknown metric 'nope'"),
    ([{"name": "r", "all": []}], "non-empty list"),
    ([{"name": "r", "all": [{"metric": "turns_agent", "threshold": 1}], "metric": "x"}],
     "use one of metric/op/threshold, all"),
    ([{"name": "r", "metric": "turns_agent", "threshold": "many"}], "is not a number"),
    ([{"name": "r", "metric": "turns_agent", "threshold": True}], "is not a number"),
    ([{"name": "r", "all": [{"metric": "turns_agent"}]}], "is missing threshold"),
    ([{"metric": "turns_agent", "threshold": 1}], "needs a name"),
    ([{"name": "r", "metric": "turns_agent", "threshold": 1}] * 2, "repeated: r"),
])
def test_validation_names_the_rule_and_the_problem(rules: list[dict[str, object]],
                                                   message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rules_from_data(rules)


def test_flat_format_and_stored_operating_point_still_load(tmp_path: Path) -> None:
    toml = tmp_path / "flat.toml"
    toml.write_text('[[rules]]\nname = "long_silence"\nmetric = "silence_share"\n'
                    'op = ">"\nthreshold = 0.8\n')
    assert load_rules(toml) == (EscalationRule("long_silence", "silence_share", 0.8, ">"),)
    as_json = tmp_path / "rules.json"
    as_json.write_text(json.dumps({"rules": rules_as_data(DEFAULT_RULES)}))
    loaded = load_rules(as_json)
    assert loaded is not None
    assert [(r.name, str(r)) for r in loaded] == [(r.name, str(r)) for r in DEFAULT_RULES]
    assert load_rules("") is None and load_rules("  ") is None  # nothing configured
    # the stored form of a compound rule loads back to the same rule
    compound = load_rules(json.dumps([{"name": "c", "any": [
        {"metric": "long_silence_s", "op": ">=", "threshold": 30},
        {"all": [{"metric": "interruptions_by_customer", "op": ">", "threshold": 2}]}]}]))
    assert compound is not None and tuple(rules_from_data(rules_as_data(compound))) == compound
    assert rules_as_data(DEFAULT_RULES)[0] == {"name": "customer_negative_share", "metric":
                                               "negative_share_customer", "op": ">=",
                                               "threshold": 0.5}
    # a model's operating point (flat rules with descriptions) is used when nothing is set
    stored = {"operating_point": {"confidence_floor": 0.4, "rules": [
        {"name": "customer_negative_share", "metric": "negative_share_customer", "op": ">=",
         "threshold": 0.35, "description": "customer negative for 35% of their speech"}]}}
    point = resolve_operating_point(load_rules(""), stored)
    assert point.source == "model" and point.rules[0].threshold == 0.35
    # a user's file with the same numbers as the built-in rules is configured
    assert resolve_operating_point(loaded, stored).source == "configured"
    assert resolve_operating_point(compound, stored).rules == tuple(compound)
    with pytest.raises(ValueError, match="not valid TOML"):
        bad = tmp_path / "bad.toml"
        bad.write_text("[[rules]\n")
        load_rules(bad)


# --------------------------------------------------------------------------------------------
# `ser rules check` / `ser rules preview` on a scored batch
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scored(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A tiny production model and three generated calls scored on DAY with the defaults."""
    from etl.runs.batch import score_batch

    truncate_all(engine)
    with session_scope(engine) as session:
        train_tiny_model(session)
    root = tmp_path_factory.mktemp("rules-batch")
    generate_calls(root, n_calls=3, minutes=0.4,
                   bank=ClipBank.synthetic(actors=range(1, 5), per_emotion=1), seed=11)
    report = score_batch(engine, root, batch_date=DAY, workers=1,
                         config=ScoringConfig(max_duration_s=60.0))
    assert report.n_scored == 3
    yield root
    truncate_all(engine)


def test_cli_rules_check(db_cli: CliRunner, tmp_path: Path) -> None:
    from ser.cli import app

    good = tmp_path / "rules.toml"
    good.write_text(COMPOUND_TOML)
    result = db_cli.invoke(app, ["rules", "check", str(good)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("angry_end_interrupted  all(negative_share_customer_q4 >= 0.5, "
                               "interruptions_by_agent >= 3)")
    assert "any(customer_trend > 0, loudness_change_customer_db >= 6)" in lines[1]
    assert lines[2].split() == ["overtalk", "overtalk_share", ">=", "0.2"]
    assert lines[-1] == f"3 rules OK in {good}"
    bad = tmp_path / "bad.toml"
    bad.write_text(COMPOUND_TOML.replace("interruptions_by_agent", "interrupts"))
    result = db_cli.invoke(app, ["rules", "check", str(bad)])
    assert result.exit_code == 2
    assert "escalation rule 'angry_end_interrupted', all[2]: unknown metric 'interrupts'" in (
        result.output)
    result = db_cli.invoke(app, ["rules", "check", str(tmp_path / "missing.toml")])
    assert result.exit_code == 2 and "does not exist" in result.output


def _stored(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(text(
            "SELECT * FROM analytics.calls WHERE batch_date = :d AND status = 'scored' "
            "ORDER BY call_key"), {"d": DAY}).mappings()]


def test_preview_with_the_scoring_rules_reproduces_the_stored_escalations(
        scored: Path, engine: Engine, db_cli: CliRunner, tmp_path: Path) -> None:
    from ser.cli import app

    rules_file = tmp_path / "defaults.json"
    rules_file.write_text(json.dumps(rules_as_data(DEFAULT_RULES)))
    result = db_cli.invoke(app, ["rules", "preview", str(rules_file), "--batch-date",
                              DAY.isoformat(), "--json"])
    assert result.exit_code == 0, result.output
    preview = json.loads(result.output)
    rows = _stored(engine)
    assert preview["n_scored"] == len(rows) == 3
    stored = {r["call_key"]: r["escalation_rule"] for r in rows if r["escalated"]}
    assert {c["call_key"]: c["escalation_rule"] for c in preview["calls"]} == stored
    assert preview["n_stored_escalations"] == len(stored)
    assert all(c["stored_rule"] == c["escalation_rule"] for c in preview["calls"])


def test_preview_compound_rule_on_conversation_metrics(scored: Path, engine: Engine,
                                                       db_cli: CliRunner, tmp_path: Path) -> None:
    from ser.cli import app

    rows = _stored(engine)
    # thresholds taken from the batch itself, so the rule fires on some calls and not others
    turns = sorted(int(r["turns_agent"]) for r in rows)
    rule_data = [{"name": "chatty_agent", "all": [
        {"metric": "turns_agent", "op": ">=", "threshold": turns[-1]},
        {"any": [{"metric": "long_silence_count", "op": ">=", "threshold": 0},
                 {"metric": "negative_share_customer_q4", "op": ">", "threshold": 2}]}]},
        {"name": "never", "metric": "interruption_overlap_s", "op": "<", "threshold": -1}]
    expected = sorted(r["call_key"] for r in rows if r["turns_agent"] >= turns[-1])
    assert 0 < len(expected) < len(rows)
    rules = rules_from_data(rule_data)
    with session_scope(engine) as session:
        preview = preview_rules(session, rules, batch_date=DAY)
        again = preview_rules(session, rules, batch_date=DAY + dt.timedelta(days=1))
    assert sorted(c.call_key for c in preview.calls) == expected
    assert preview.by_rule == {"chatty_agent": expected, "never": []}
    for call in preview.calls:
        row = next(r for r in rows if r["call_key"] == call.call_key)
        assert call.reason.startswith(f"turns_agent = {row['turns_agent']} >= {turns[-1]} and "
                                      "long_silence_count = ")
        assert (call.agent_id, call.queue) == (row["agent_id"], row["queue"])
    assert again.calls == [] and again.batch_ids == []

    rules_file = tmp_path / "rules.json"
    rules_file.write_text(json.dumps(rule_data))
    result = db_cli.invoke(app, ["rules", "preview", str(rules_file), "--batch-date",
                              DAY.isoformat(), "--model", "production"])
    assert result.exit_code == 0, result.output
    assert f"chatty_agent: {len(expected)} call" in result.output
    assert "never: 0 calls" in result.output
    assert all(f"    {key}  agent " in result.output for key in expected)
    assert f"{len(expected)} of 3 calls would escalate" in result.output
    result = db_cli.invoke(app, ["rules", "preview", str(rules_file), "--batch-date", "2001-01-01"])
    assert result.exit_code == 2 and "no scored calls on 2001-01-01" in result.output
    result = db_cli.invoke(app, ["rules", "preview", str(rules_file), "--batch-date",
                              DAY.isoformat(), "--model", "nope"])
    assert result.exit_code == 2 and "no model version matches 'nope'" in result.output
