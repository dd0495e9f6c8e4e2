"""Calibration on held-out speakers and the escalation operating point (pure, synthetic data)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from etl.scoring.escalation import rules_from_data
from etl.training.calibration import (
    apply_calibration,
    expected_calibration_error,
    fit_calibration,
    log_loss,
)
from etl.training.operating_point.pseudo_calls import Predict, pseudo_call_sides
from etl.training.operating_point.selection import _best, choose_point

CLASSES = ["angry", "calm", "happy", "sad"]  # callcentre4: angry and sad are negative


def _data(*, n_speakers: int = 12, per_speaker: int = 48, signal: float = 1.5,
          sharpen: float = 3.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Out-of-fold-like probabilities: informative logits, made over-confident by ``sharpen``."""
    rng = np.random.default_rng(seed)
    n = n_speakers * per_speaker
    y = np.tile(np.arange(len(CLASSES)), n // len(CLASSES))
    groups = np.repeat(np.arange(100, 100 + n_speakers), per_speaker)
    logits = rng.normal(size=(n, len(CLASSES)))
    logits[np.arange(n), y] += signal
    p = np.exp(sharpen * logits)
    return p / p.sum(axis=1, keepdims=True), y, groups


def _point(proba: np.ndarray, y: np.ndarray, groups: np.ndarray, *,
           predict: Predict | None = None, classes: list[str] = CLASSES) -> dict | None:
    """The operating point on pseudo-calls of these clip predictions (or of ``predict``'s)."""
    sides = pseudo_call_sides(y, classes=classes, groups=groups, folds=groups % 5, seed=0,
                              predict=predict or (lambda rows, _call: proba[rows]))
    return choose_point(sides, seed=0, protocol="test")


def test_calibration_lowers_ece_on_overconfident_probabilities() -> None:
    proba, y, groups = _data(per_speaker=100)
    record = fit_calibration(proba, y, classes=CLASSES, groups=groups, folds=groups % 5)
    json.dumps(record)  # stored as-is in model_versions.params
    assert record["method"] in ("temperature", "vector")
    assert record["ece_after"] < 0.5 * record["ece_before"]
    assert record["cv_ece"][record["method"]] <= record["cv_ece"]["none"]
    assert record["log_loss_after"] < record["log_loss_before"]
    assert record["cv_log_loss"]["none"] == pytest.approx(record["log_loss_before"], abs=1e-3)
    # applied at scoring time: rows still sum to 1, the ranking of a row's classes is kept for a
    # temperature, and new data from the same source is better calibrated
    fresh, y2, _ = _data(per_speaker=100, seed=1)
    calibrated = apply_calibration(record, fresh)
    assert calibrated.shape == fresh.shape
    np.testing.assert_allclose(calibrated.sum(axis=1), 1.0, atol=1e-9)
    assert expected_calibration_error(calibrated, y2) < expected_calibration_error(fresh, y2)
    assert log_loss(calibrated, y2) < log_loss(fresh, y2)
    if record["method"] == "temperature":
        assert record["params"]["temperature"] > 1.5  # over-confident -> soften
        np.testing.assert_array_equal(calibrated.argmax(axis=1), fresh.argmax(axis=1))


def test_no_record_or_none_leaves_probabilities_unchanged() -> None:
    proba, y, groups = _data(n_speakers=2)
    assert apply_calibration(None, proba) is proba
    record = fit_calibration(proba, y, classes=CLASSES, groups=groups, folds=groups % 5)
    assert record["method"] == "none" and "speaker" in record["reason"]
    np.testing.assert_array_equal(apply_calibration(record, proba), proba)
    with pytest.raises(ValueError, match="classes"):
        apply_calibration({"method": "vector", "params": {"weights": [1.0, 1.0],
                                                          "bias": [0.0, 0.0]}}, proba)
    with pytest.raises(ValueError, match="oof_proba"):
        fit_calibration(proba[:, :3], y, classes=CLASSES, groups=groups, folds=groups % 5)


def test_operating_point_meets_precision_target_and_is_usable_rules() -> None:
    proba, y, groups = _data(signal=2.5, sharpen=1.0)
    point = _point(proba, y, groups)
    assert point is not None and point["meets_target"]
    assert point["precision"] >= 0.8 and point["recall"] >= 0.6
    assert point["cv_precision"] is not None and point["cv_recall"] is not None
    assert point["calm_escalation_rate"] <= 0.1
    assert 0.0 <= point["confidence_floor"] < 1.0
    rules = rules_from_data(point["rules"])
    assert rules[0].metric == "negative_share_customer"
    # the model's point escalates on the customer's emotion, never on overtalk
    assert all(r.metric != "overtalk_share" for r in rules)


def test_operating_point_uses_only_the_training_speakers() -> None:
    proba, y, groups = _data()
    calls = pseudo_call_sides(y, classes=CLASSES, groups=groups, folds=groups % 5, seed=0,
                              predict=lambda rows, _call: proba[rows], per_speaker=5)
    assert {c.speaker for c in calls} == set(groups)
    rows_by_speaker = {g: set(np.flatnonzero(groups == g)) for g in set(groups)}
    # each pseudo-call's customer is one speaker: its confidences come from that speaker's clips
    conf = proba.max(axis=1)
    for call in calls[:20]:
        own = {round(float(conf[i]), 12) for i in rows_by_speaker[call.speaker]}
        assert {round(float(c), 12) for c in call.confidence} <= own
        assert call.fold == call.speaker % 5
    # the choice depends on these rows only: same inputs, same point; other speakers' rows change it
    a = _point(proba, y, groups)
    b = _point(proba, y, groups)
    assert a == b
    keep = groups < 106
    c = _point(proba[keep], y[keep], groups[keep])
    assert c is not None and c["n_speakers"] == 6 and a is not None and a["n_speakers"] == 12


def test_uninformative_predictions_do_not_claim_the_target() -> None:
    rng = np.random.default_rng(3)
    y = np.tile(np.arange(4), 120)
    groups = np.repeat(np.arange(10), 48)
    proba = rng.dirichlet(np.ones(4), size=len(y))
    point = _point(proba, y, groups)
    assert point is not None
    assert point["cv_precision"] is None or point["cv_precision"] < 0.8
    # speakers without clips of both polarities make no pseudo-call, so no point
    assert _point(proba, y, groups, classes=["a", "b", "c", "d"]) is None


def test_pseudo_calls_take_their_predictions_per_pseudo_call() -> None:
    """A speaker-normalised model's pseudo-calls are predicted per pseudo-call (``predict``):
    the operating point is chosen on those predictions, not on the clip predictions."""
    proba, y, groups = _data(signal=2.5, sharpen=1.0)
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    def honest(rows: np.ndarray, call: np.ndarray) -> np.ndarray:
        seen.append((rows, call))
        return proba[rows]  # the same predictions: the same decisions as the clips'

    assert _point(proba, y, groups, predict=honest) == _point(proba, y, groups)
    rows, call = seen[0]
    assert rows.shape == call.shape and rows.dtype.kind == "i"
    for c in np.unique(call):  # every pseudo-call is one speaker's clips
        assert len(set(groups[rows[call == c]])) == 1

    def calm_reads_negative(rows: np.ndarray, call: np.ndarray) -> np.ndarray:
        # what per-call normalisation does to a calm call: everything leans negative
        out = np.full((len(rows), len(CLASSES)), 0.1)
        out[:, CLASSES.index("angry")] = 0.7
        return out

    point = _point(proba, y, groups, predict=calm_reads_negative)
    assert point is not None and not point["meets_target"]
    assert point["calm_escalation_rate"] > 0.5 or point["escalation_rate"] == 0.0
    with pytest.raises(ValueError, match="predict gave shape"):
        _point(proba, y, groups, predict=lambda rows, call: proba[rows][:, :2])


def test_a_precision_reached_only_by_a_handful_of_calls_gives_way_to_f_half() -> None:
    npos = 40
    # grid points: (true positives, escalations)
    tp = np.array([4, 20, 30, 40])
    npred = np.array([5, 28, 50, 100])  # precision 0.8 at recall 0.1; 0.71 at 0.5; ...
    n_rules = np.ones(4, dtype=int)
    assert _best(tp, npred, npos, target_precision=0.8, n_rules=n_rules) == 1
    # where the precision target is met at the recall target, the highest such recall wins
    tp2, npred2 = np.array([4, 26, 30]), np.array([5, 32, 50])  # 0.81 at 0.65
    assert _best(tp2, npred2, npos, target_precision=0.8, n_rules=np.ones(3, int)) == 1
