"""The model families `ser train --model NAME` can fit, each with a small search grid.

Every family is a scikit-learn estimator (XGBoost through its scikit-learn wrapper) fitted on
integer class codes ``0..K-1`` (the sorted class labels of the label scheme), so probabilities of
all families line up column by column and soft voting is a plain weighted mean.

Grids are deliberately small: the search runs inside every training fold (nested), on 2 shared
cores, and per-speaker normalisation matters far more on unseen actors than fine tuning does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier, VotingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.class_weight import compute_sample_weight

# Threads per XGBoost fit: the machine is shared; results do not depend on it (hist is exact
# per thread count for a fixed seed, and we keep it fixed so reruns are bit-identical).
XGB_THREADS = 2


@dataclass(frozen=True, slots=True)
class Algorithm:
    """One model family.

    ``build(seed, balance)`` returns an unfitted estimator; ``grid`` is a GridSearchCV grid over
    its parameters (empty = no search); ``sample_weight_param`` names the fit parameter that takes
    per-row weights when class balancing cannot be expressed as ``class_weight``.
    """

    name: str
    description: str
    build: Callable[[int, bool], BaseEstimator]
    grid: dict[str, list[Any]] = field(default_factory=dict)
    sample_weight_param: str | None = None
    supports_balance: bool = True

    def fit_params(self, y: np.ndarray, *, balance: bool) -> dict[str, np.ndarray]:
        """Extra ``fit`` keyword arguments (balanced per-row weights) for labels ``y`` (n,)."""
        if balance and self.sample_weight_param:
            return {self.sample_weight_param: compute_sample_weight("balanced", y)}
        return {}


def _scaled(clf: BaseEstimator) -> Pipeline:
    return Pipeline([("scale", StandardScaler()), ("clf", clf)])


def _svm(seed: int, balance: bool) -> BaseEstimator:
    # Probabilities via one sigmoid calibration on internal CV (SVC(probability=True) is deprecated).
    svc = SVC(kernel="rbf", C=10.0, gamma="scale", class_weight="balanced" if balance else None,
              random_state=seed)
    return _scaled(CalibratedClassifierCV(svc, method="sigmoid", cv=3, ensemble=False))


def _logreg(seed: int, balance: bool) -> BaseEstimator:
    return _scaled(LogisticRegression(C=0.1, max_iter=3000, random_state=seed,
                                      class_weight="balanced" if balance else None))


# Weight of the voice encoder's block in `VoicePooledLogisticRegression`: chosen on held-out
# calls of *training* speakers (bench/calls_accuracy.py --calls field --train-actors 1-12
# --call-actors 13-16); clips alone would choose more, since the embedding moves with lines,
# rooms and noise that clips do not have (docs/features.md).
VOICE_WEIGHT = 0.3
# Columns of the voice encoder's embedding: the last ones of a voice feature set
# (etl.features.voice.params.EMBEDDING_DIM).
VOICE_BLOCK = 256


class VoicePooledLogisticRegression(ClassifierMixin, BaseEstimator):
    """Two logistic regressions, one on the acoustic columns and one on the voice
    embedding (the last ``voice_columns``), pooled log-linearly with ``voice_weight``.

    One regression over both blocks lets the 256 embedding columns outvote the acoustic ones
    on calls, where lines and rooms move the embedding as much as emotion does; fitting the
    blocks apart and pooling ``(1 - w) * log p_rich + w * log p_voice`` keeps the embedding's
    evidence at a weight chosen on calls. The pooled model is itself a logistic regression
    (coefficients ``(1 - w) W_rich | w W_voice``), so `pooled_` is a plain
    :class:`~sklearn.linear_model.LogisticRegression` and the stored bundle holds nothing else
    (`etl.training.artifacts.from_estimator`).
    """

    def __init__(self, *, C: float = 0.1, voice_weight: float = VOICE_WEIGHT,
                 voice_columns: int = VOICE_BLOCK, class_weight: str | None = "balanced",
                 max_iter: int = 3000, random_state: int = 0) -> None:
        self.C = C
        self.voice_weight = voice_weight
        self.voice_columns = voice_columns
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray) -> VoicePooledLogisticRegression:
        X = np.asarray(X)
        k, w = int(self.voice_columns), float(self.voice_weight)
        if not 0 < k < X.shape[1]:
            raise ValueError(f"{type(self).__name__} needs more than {k} columns (the voice "
                             f"block and at least one other); got {X.shape[1]}")
        if not 0.0 <= w <= 1.0:
            raise ValueError(f"voice_weight must lie in [0, 1], not {w}")
        parts = [LogisticRegression(C=self.C, max_iter=self.max_iter,
                                    random_state=self.random_state,
                                    class_weight=self.class_weight).fit(block, y)
                 for block in (X[:, :-k], X[:, -k:])]
        pooled = LogisticRegression(C=self.C, max_iter=self.max_iter,
                                    random_state=self.random_state, class_weight=self.class_weight)
        pooled.coef_ = np.hstack([(1.0 - w) * parts[0].coef_, w * parts[1].coef_])
        pooled.intercept_ = (1.0 - w) * parts[0].intercept_ + w * parts[1].intercept_
        pooled.classes_ = parts[0].classes_
        pooled.n_features_in_ = X.shape[1]
        pooled.n_iter_ = np.maximum(parts[0].n_iter_, parts[1].n_iter_)
        self.pooled_ = pooled
        self.classes_ = pooled.classes_
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.pooled_.predict_proba(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.pooled_.predict(X)


def _voice_pooled(seed: int, balance: bool) -> BaseEstimator:
    return _scaled(VoicePooledLogisticRegression(
        random_state=seed, class_weight="balanced" if balance else None))


def _xgboost(seed: int, balance: bool) -> BaseEstimator:
    from xgboost import XGBClassifier

    return XGBClassifier(n_estimators=200, learning_rate=0.08, max_depth=4, subsample=0.8,
                         colsample_bytree=0.5, min_child_weight=1.0, tree_method="hist",
                         n_jobs=XGB_THREADS, random_state=seed, eval_metric="mlogloss")


def _forest(seed: int, balance: bool) -> BaseEstimator:
    return RandomForestClassifier(n_estimators=300, min_samples_leaf=1, max_features="sqrt",
                                  class_weight="balanced_subsample" if balance else None,
                                  n_jobs=XGB_THREADS, random_state=seed)


def _mlp(seed: int, balance: bool) -> BaseEstimator:
    return _scaled(MLPClassifier(hidden_layer_sizes=(256,), alpha=1e-2, learning_rate_init=1e-3,
                                 max_iter=400, early_stopping=False, random_state=seed))


def _knn(seed: int, balance: bool) -> BaseEstimator:
    return _scaled(KNeighborsClassifier(n_neighbors=15, weights="distance"))


def _voting(seed: int, balance: bool) -> BaseEstimator:
    # Members keep fixed parameters (searching a product grid would multiply the cost);
    # XGBoost cannot take class weights through VotingClassifier, the others use class_weight.
    return VotingClassifier(
        [("svm", _svm(seed, balance)), ("logreg", _logreg(seed, balance)),
         ("xgboost", _xgboost(seed, balance))],
        voting="soft",
    )


ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm("svm", "RBF support-vector machine, sigmoid-calibrated probabilities", _svm,
                  {"clf__estimator__C": [1.0, 10.0]}),
        Algorithm("logreg", "multinomial logistic regression (L2)", _logreg,
                  {"clf__C": [0.01, 0.1, 1.0]}),
        Algorithm("logreg-voice", "logistic regressions on the acoustic and the voice-encoder "
                  "columns, pooled (voice feature sets)", _voice_pooled,
                  {"clf__C": [0.01, 0.1, 1.0]}),
        Algorithm("xgboost", "gradient-boosted trees (XGBoost, hist)", _xgboost,
                  {"max_depth": [3, 5]}, sample_weight_param="sample_weight"),
        Algorithm("rf", "random forest (300 trees)", _forest, {"max_features": ["sqrt", 0.2]}),
        Algorithm("mlp", "multi-layer perceptron, one hidden layer of 256", _mlp,
                  {"clf__alpha": [1e-3, 1e-1]}, sample_weight_param="clf__sample_weight"),
        Algorithm("knn", "k nearest neighbours (distance-weighted)", _knn,
                  {"clf__n_neighbors": [5, 15]}, supports_balance=False),
        Algorithm("voting", "soft vote of SVM + logistic regression + XGBoost", _voting),
    )
}

# The family `ser train` uses when --model is not given. bench/accuracy.py on RAVDESS (emotion8,
# rich, per-speaker normalisation, identical actor-grouped folds): voting 0.647 +- 0.041,
# logreg 0.641 +- 0.026, xgboost 0.631, mlp 0.626, svm 0.614. Voting vs logreg per fold is 2 wins,
# 2 losses, 1 tie: no real difference, and logistic regression is far cheaper to fit and to
# score (nightly; docs/bench figures), so it is the default; `--model voting` remains available.
DEFAULT_ALGORITHM = "logreg"
# The family for feature sets with the voice encoder's columns (docs/features.md, `richvoice`).
VOICE_ALGORITHM = "logreg-voice"


def default_algorithm(feature_set: str) -> str:
    """The family `ser train` fits on ``feature_set`` when none is named."""
    from etl.features.specs import VOICE_SET, split_set_name

    return VOICE_ALGORITHM if split_set_name(feature_set)[0] == VOICE_SET else DEFAULT_ALGORITHM


def get_algorithm(name: str) -> Algorithm:
    """The family called ``name``; ValueError listing the choices otherwise."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValueError(
            f"unknown model family {name!r}; choose one of {', '.join(ALGORITHMS)}"
        ) from None
