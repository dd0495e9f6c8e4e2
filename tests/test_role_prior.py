"""The agents' prior: Bayes' rule on the negative classes, strong evidence still wins."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine

from db.engine import session_scope
from etl.scoring.config import ScoringConfig
from etl.scoring.recording import score_recording
from etl.scoring.role_prior import (
    AGENT_NEGATIVE_PRIOR,
    agent_prior_setting,
    apply_negative_prior,
    negative_odds_factor,
)
from etl.synthetic.calls import generate_calls
from etl.synthetic.clips import ClipBank
from etl.training.loading import load_model
from tests.conftest import truncate_all
from tests.utils.nightly import train_tiny_model

EMOTION8 = ["angry", "calm", "disgust", "fearful", "happy", "neutral", "sad", "surprised"]


def test_the_factor_is_the_ratio_of_prior_odds_to_training_odds() -> None:
    assert negative_odds_factor(EMOTION8, 0.5) == pytest.approx(1.0)
    assert negative_odds_factor(EMOTION8, 0.2) == pytest.approx(0.25)
    # posneg: one negative class of three, so the training odds are 1:2
    assert negative_odds_factor(["negative", "neutral", "positive"], 0.2) == pytest.approx(0.5)
    assert negative_odds_factor(["happy", "neutral"], 0.2) == 1.0
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        negative_odds_factor(EMOTION8, 1.0)


def test_only_the_chosen_rows_move_and_strong_evidence_still_reads_negative() -> None:
    even = np.full(8, 1 / 8)
    # a friendly segment the model half-confuses with angry, and a clearly angry one
    confused = np.array([0.30, 0.05, 0.05, 0.05, 0.25, 0.10, 0.10, 0.10])
    clear = np.array([0.85, 0.02, 0.02, 0.02, 0.03, 0.02, 0.02, 0.02])
    proba = np.vstack([confused, clear, confused, even])
    rows = np.array([True, True, False, True])
    out = apply_negative_prior(proba, EMOTION8, rows=rows, negative_share=0.2)
    assert np.allclose(out.sum(axis=1), 1.0)
    assert np.array_equal(out[2], confused)  # not an agent row
    assert EMOTION8[out[0].argmax()] == "happy"
    assert EMOTION8[out[1].argmax()] == "angry"
    negative = [0, 2, 3, 6]
    assert out[3, negative].sum() == pytest.approx(0.2)


def test_scoring_reads_the_agent_with_its_prior_and_the_customer_as_before(
        engine: Engine, bank: ClipBank, tmp_path: Path) -> None:
    truncate_all(engine)
    with session_scope(engine) as session:
        model = load_model(session, str(train_tiny_model(session)))
    generate_calls(tmp_path, n_calls=1, minutes=0.4, bank=bank, seed=5)
    path = next(tmp_path.glob("*.wav"))
    config = ScoringConfig(max_duration_s=45.0)
    assert config.agent_negative_prior == AGENT_NEGATIVE_PRIOR
    with_prior = score_recording(path, model=model, config=config)
    without = score_recording(path, model=model,
                              config=dataclasses.replace(config, agent_negative_prior=None))
    roles = {s.role for s in with_prior.segments}
    assert roles == {"agent", "customer"}
    for a, b in zip(with_prior.segments, without.segments, strict=True):
        p_with = np.array([a.probabilities[c] for c in model.classes])
        p_without = np.array([b.probabilities[c] for c in model.classes])
        if a.role == "customer":
            assert np.array_equal(p_with, p_without)
        else:
            expected = apply_negative_prior(p_without[None, :], model.classes, rows=np.array([True]),
                                            negative_share=AGENT_NEGATIVE_PRIOR)[0]
            assert np.allclose(p_with, expected, atol=2e-3)
    truncate_all(engine)


@pytest.mark.parametrize(("value", "expected"), [
    (None, AGENT_NEGATIVE_PRIOR), ("off", None), ("0.1", 0.1)])
def test_the_setting_reaches_the_nightly_flow_s_scoring(monkeypatch: pytest.MonkeyPatch,
                                                       value: str | None,
                                                       expected: float | None) -> None:
    from config import get_settings
    from flows.nightly import scoring_config

    if value is None:
        monkeypatch.delenv("SER_AGENT_NEGATIVE_PRIOR", raising=False)
    else:
        monkeypatch.setenv("SER_AGENT_NEGATIVE_PRIOR", value)
    get_settings.cache_clear()
    try:
        assert scoring_config(None).agent_negative_prior == expected
    finally:
        get_settings.cache_clear()


def test_a_share_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        agent_prior_setting(1.5)
