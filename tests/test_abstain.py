"""Abstained segments, coverage/confidence columns and the model's operating point at scoring."""

from __future__ import annotations

import dataclasses
import datetime as dt
import pickle
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Engine, text

from db.engine import session_scope
from etl.runs.inbox_entry import CallEntry
from etl.runs.registration import register_batch
from etl.runs.results import write_result
from etl.scoring.config import ScoringConfig
from etl.scoring.escalation import (
    DEFAULT_RULES,
    EscalationRule,
    load_rules,
    resolve_operating_point,
)
from etl.scoring.recording import score_recording
from etl.scoring.summaries import ScoredSegment, summarise_call
from etl.synthetic.calls import generate_calls
from etl.synthetic.clips import ClipBank
from etl.training.loading import load_model
from tests.conftest import truncate_all
from tests.utils.nightly import train_tiny_model

CONFIG = ScoringConfig(max_duration_s=45.0)


def _seg(start: float, end: float, emotion: str, negative: bool, confidence: float,
         abstained: bool = False) -> ScoredSegment:
    return ScoredSegment("customer", start, end, emotion, confidence, negative and not abstained,
                         {emotion: confidence}, abstained=abstained)


def test_abstained_segments_are_not_negative_and_coverage_is_measured() -> None:
    speech = {"customer": [(0.0, 10.0), (20.0, 30.0)]}
    segments = [_seg(0.0, 4.0, "calm", False, 0.9),
                _seg(4.0, 8.0, "angry", True, 0.3, abstained=True),  # below the floor
                _seg(20.0, 24.0, "angry", True, 0.8),
                _seg(24.0, 28.0, "angry", True, 0.2, abstained=True)]
    s = summarise_call(segments, speech=speech, duration_s=30.0)
    # only the two confident segments count: 4 s calm, 4 s angry
    assert s.negative_share_customer == pytest.approx(0.5)
    assert s.longest_negative_streak_s == pytest.approx(4.0)
    assert s.emotion_mix["customer"] == {"angry": 0.5, "calm": 0.5}
    assert s.customer_scored_share == pytest.approx(16 / 20)
    assert s.customer_confidence_mean == pytest.approx((0.9 + 0.3 + 0.8 + 0.2) / 4)
    assert s.customer_abstained_share == pytest.approx(0.5)
    # every customer segment abstained: nothing negative, no negative share, no escalation
    all_abstained = [dataclasses.replace(x, abstained=True, is_negative=False) for x in segments]
    t = summarise_call(all_abstained, speech=speech, duration_s=30.0)
    assert t.negative_share_customer is None and t.longest_negative_streak_s == 0.0
    assert t.customer_abstained_share == 1.0 and t.customer_scored_share == pytest.approx(0.8)
    none = summarise_call([], speech={"agent": [(0.0, 1.0)]}, duration_s=5.0)
    assert none.customer_scored_share is None and none.customer_confidence_mean is None


def test_configured_rules_win_and_old_models_use_the_defaults() -> None:
    point = {"operating_point": {"confidence_floor": 0.55, "rules": [
        {"name": "customer_negative_share", "metric": "negative_share_customer", "op": ">=",
         "threshold": 0.7}]}}
    assert resolve_operating_point(None, None).source == "defaults"
    assert resolve_operating_point(None, None).confidence_floor == 0.0
    # what ser score passes when no --rules is given
    assert load_rules(None) is None
    from_model = resolve_operating_point(load_rules(None), point)
    assert from_model.source == "model" and from_model.confidence_floor == 0.55
    assert from_model.rules[0].threshold == 0.7
    # a user's file with the very same numbers is a configured choice
    same_numbers = tuple(EscalationRule(r.name, r.metric, r.threshold, r.op) for r in DEFAULT_RULES)
    mine = resolve_operating_point(same_numbers, point)
    assert mine.source == "configured" and mine.rules == same_numbers
    assert mine.confidence_floor == 0.55
    assert resolve_operating_point(None, point, confidence_floor=0.0).confidence_floor == 0.0
    assert resolve_operating_point(None, {"method": "none"}).source == "defaults"
    # worker processes get the config pickled: "nothing configured" must survive that
    pickled = pickle.loads(pickle.dumps(ScoringConfig(rules=load_rules(None))))
    assert pickled.operating_point(SimpleNamespace(calibration=point)).source == "model"


@pytest.fixture(scope="module")
def model_id(engine: Engine) -> Iterator[int]:
    truncate_all(engine)
    with session_scope(engine) as session:
        version_id = train_tiny_model(session, name="tiny-abstain")
    yield version_id
    truncate_all(engine)


@pytest.fixture(scope="module")
def call_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("abstain")
    bank = ClipBank.synthetic(actors=range(1, 5), per_emotion=1)
    return generate_calls(root, n_calls=1, minutes=0.4, bank=bank, seed=11)[0].path


def _with_record(engine: Engine, model_id: int, record: dict[str, Any] | None) -> Any:
    with session_scope(engine) as session:
        model = load_model(session, str(model_id))
    # the calibration record the model version stores in params["calibration"]
    model.calibration = record
    return model


def _write(engine: Engine, model_id: int, path: Path, result: Any, key: str) -> int:
    with session_scope(engine) as session:
        batch_id = register_batch(session, source_path=f"/test/{key}", batch_date=dt.date(2024, 5, 1),
                                  model_version_id=model_id, entries=[CallEntry(key, path)])
        call_id = int(session.execute(text(
            "UPDATE calls SET status = 'claimed', claimed_by = 'w' WHERE batch_id = :b "
            "RETURNING id"), {"b": batch_id}).scalar_one())
    with session_scope(engine) as session:
        assert write_result(session, call_id=call_id, worker="w", model_version_id=model_id,
                            result=result)
    return call_id


def test_floor_abstains_segments_and_columns_are_filled(engine: Engine, model_id: int,
                                                        call_path: Path) -> None:
    # a model version without a record scores as before: defaults, nothing abstained
    old = score_recording(call_path, model=_with_record(engine, model_id, None), config=CONFIG)
    plain = score_recording(call_path, model=_with_record(engine, model_id, None),
                            config=dataclasses.replace(CONFIG, rules=DEFAULT_RULES))
    assert old.rules_source == "defaults" and old.confidence_floor == 0.0
    assert [s.emotion for s in old.segments] == [s.emotion for s in plain.segments]
    assert not any(s.abstained for s in old.segments)
    assert old.summary.customer_scored_share is not None
    assert 0.5 < old.summary.customer_scored_share <= 1.0
    confs = sorted(s.confidence for s in old.segments if s.role == "customer")
    median = confs[len(confs) // 2]

    record = {"method": "none", "operating_point": {
        "confidence_floor": median, "rules": [
            {"name": "customer_any_negative", "metric": "negative_share_customer", "op": ">=",
             "threshold": 0.0}]}}
    new = score_recording(call_path, model=_with_record(engine, model_id, record), config=CONFIG)
    assert new.rules_source == "model" and new.confidence_floor == median
    abstained = [s for s in new.segments if s.abstained]
    assert abstained and all(s.confidence < median for s in abstained)
    assert not any(s.is_negative for s in abstained)
    assert all(not s.abstained for s in new.segments if s.confidence >= median)
    assert new.escalation is not None and new.escalation.rule == "customer_any_negative"
    assert new.summary.customer_abstained_share is not None
    assert 0.0 < new.summary.customer_abstained_share < 1.0

    call_id = _write(engine, model_id, call_path, new, "abstain")
    with engine.connect() as conn:
        segs = conn.execute(text("SELECT abstained, is_negative, confidence FROM call_segments "
                                 "WHERE call_id = :c"), {"c": call_id}).all()
        row = conn.execute(text("SELECT * FROM analytics.calls WHERE call_id = :c"),
                           {"c": call_id}).mappings().one()
        view_abstained = conn.execute(text(
            "SELECT count(*) FROM analytics.segments WHERE call_id = :c AND abstained"),
            {"c": call_id}).scalar_one()
    assert sum(s.abstained for s in segs) == len(abstained) == view_abstained
    assert not any(s.abstained and s.is_negative for s in segs)
    assert row["customer_scored_share"] == pytest.approx(new.summary.customer_scored_share)
    assert row["customer_confidence_mean"] == pytest.approx(new.summary.customer_confidence_mean)
    assert row["customer_abstained_share"] == pytest.approx(new.summary.customer_abstained_share)
    assert row["confidence_floor"] == pytest.approx(median)
    assert row["escalation_rules_source"] == "model" and row["escalated"]
