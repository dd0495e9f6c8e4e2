"""The voice feature sets' model family: two logistic regressions pooled log-linearly, stored as
one plain logistic regression."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from etl.features.voice.params import EMBEDDING_DIM
from etl.training.artifacts import dump_bundle, from_estimator, load_bundle, sha256_bytes
from etl.training.config import TrainConfig
from etl.training.models import (
    VOICE_BLOCK,
    VOICE_WEIGHT,
    VoicePooledLogisticRegression,
    get_algorithm,
)


def _rows(n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    y = rng.integers(0, n_classes, 400)
    X = rng.standard_normal((400, 40 + VOICE_BLOCK))
    X[:, 0] += y  # evidence in the acoustic block
    X[:, -1] -= 0.7 * y  # and in the voice block
    return X, y


@pytest.mark.parametrize("n_classes", [2, 5])
def test_pooled_probabilities_are_the_weighted_geometric_mean(n_classes: int) -> None:
    X, y = _rows(n_classes)
    model = VoicePooledLogisticRegression().fit(X, y)
    parts = [LogisticRegression(C=0.1, max_iter=3000, random_state=0,
                                class_weight="balanced").fit(block, y)
             for block in (X[:, :-VOICE_BLOCK], X[:, -VOICE_BLOCK:])]
    log_p = ((1 - VOICE_WEIGHT) * np.log(parts[0].predict_proba(X[:, :-VOICE_BLOCK]))
             + VOICE_WEIGHT * np.log(parts[1].predict_proba(X[:, -VOICE_BLOCK:])))
    expected = np.exp(log_p) / np.exp(log_p).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict_proba(X), expected, atol=1e-6)
    # the voice block weighs less than in one regression over both blocks
    assert 0 < VOICE_WEIGHT < 0.5
    assert VOICE_BLOCK == EMBEDDING_DIM


def test_the_bundle_holds_a_plain_logistic_regression() -> None:
    X, y = _rows(4)
    estimator = get_algorithm("logreg-voice").build(0, True).fit(X, y)
    bundle = dump_bundle(from_estimator(estimator, classes=list("abcd"),
                                        n_features=X.shape[1]))
    loaded = load_bundle(bundle, expected_sha256=sha256_bytes(bundle))
    assert type(loaded.members[0].steps[-1][1]) is LogisticRegression
    np.testing.assert_allclose(loaded.predict_proba(X), estimator.predict_proba(X), atol=1e-6)


def test_voice_sets_default_to_the_pooled_family_unless_one_is_named() -> None:
    assert TrainConfig(feature_set="rich").algorithm == "logreg"
    assert TrainConfig(feature_set="richvoice", channel="telephony").algorithm == "logreg-voice"
    assert TrainConfig(feature_set="richvoice", algorithm="logreg").algorithm == "logreg"
    with pytest.raises(ValueError, match="--set richvoice"):
        TrainConfig(feature_set="rich", algorithm="logreg-voice")


def test_bad_pooling_is_refused() -> None:
    X, y = _rows(3)
    with pytest.raises(ValueError, match="voice_weight"):
        VoicePooledLogisticRegression(voice_weight=1.5).fit(X, y)
    with pytest.raises(ValueError, match="columns"):
        VoicePooledLogisticRegression().fit(X[:, :VOICE_BLOCK], y)
