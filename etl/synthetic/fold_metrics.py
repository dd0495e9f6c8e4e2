"""Simulated cross-validation of a model version: out-of-fold predictions of a given skill on
speaker folds, and the ``model_metrics`` rows scored from them with scikit-learn (per fold and
pooled, per class, ROC curves, the confusion matrix), in the training part's layout. Pure:
``etl.synthetic.history`` inserts the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    recall_score,
    roc_auc_score,
    roc_curve,
)


@dataclass(frozen=True, slots=True)
class _SimulatedFolds:
    """Simulated out-of-fold predictions: true class ``y``, speaker fold, probabilities
    ``(n, n_classes)`` and predicted class of each clip."""

    y: np.ndarray
    folds: np.ndarray
    proba: np.ndarray
    pred: np.ndarray


def _simulate_folds(rows: Sequence[Any], classes: Sequence[str], *, skill: float, n_folds: int,
                    rng: np.random.Generator) -> _SimulatedFolds:
    # Map emotions onto classes like callcentre4 does (neutral -> calm); unknown -> first class.
    to_class = {c: i for i, c in enumerate(classes)}
    y = np.array([to_class.get(r.emotion, to_class.get("calm", 0)) for r in rows])
    speakers = sorted({r.actor_code for r in rows})
    fold_of_speaker = {s: i % n_folds for i, s in enumerate(speakers)}
    folds = np.array([fold_of_speaker[r.actor_code] for r in rows])
    # Scores: the true class gets a boost proportional to skill; softmax to probabilities.
    logits = rng.normal(0, 1, (len(y), len(classes)))
    logits[np.arange(len(y)), y] += 3.0 * skill
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return _SimulatedFolds(y=y, folds=folds, proba=proba, pred=proba.argmax(axis=1))


class _MetricRows:
    """``model_metrics`` rows of one model version, as they are added."""

    def __init__(self, model_version_id: int) -> None:
        self.model_version_id = model_version_id
        self.rows: list[dict[str, object]] = []

    def add(self, metric: str, value: float, *, fold: int | None = None,
            class_label: str | None = None, group: tuple[str, str] | None = None,
            extra: dict[str, object] | None = None) -> None:
        self.rows.append({"model_version_id": self.model_version_id, "metric": metric,
                          "value": float(value), "fold": fold, "class_label": class_label,
                          "group_name": group[0] if group else None,
                          "group_value": group[1] if group else None, "extra": extra})


def _score_rows(out: _MetricRows, sim: _SimulatedFolds, classes: Sequence[str], *,
                n_folds: int) -> float:
    """Per-fold and pooled scores, per-class rows, ROC and confusion; returns the pooled UAR."""
    y, pred, proba = sim.y, sim.pred, sim.proba
    labels = list(range(len(classes)))
    for f in range(n_folds):
        m = sim.folds == f
        if not m.any():
            continue
        out.add("uar", recall_score(y[m], pred[m], average="macro", labels=labels,
                                    zero_division=0), fold=f, extra={"n": int(m.sum())})
        out.add("accuracy", accuracy_score(y[m], pred[m]), fold=f)
        out.add("macro_f1", f1_score(y[m], pred[m], average="macro", labels=labels,
                                     zero_division=0), fold=f)
    uar = float(recall_score(y, pred, average="macro", labels=labels, zero_division=0))
    out.add("uar", uar, extra={"n": len(y)})
    out.add("accuracy", accuracy_score(y, pred))
    out.add("macro_f1", f1_score(y, pred, average="macro", labels=labels, zero_division=0))
    p, r, f1, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    for i, cls in enumerate(classes):
        out.add("precision", p[i], class_label=cls)
        out.add("recall", r[i], class_label=cls)
        out.add("f1", f1[i], class_label=cls, extra={"support": int(support[i])})
        fpr, tpr, _ = roc_curve(y == i, proba[:, i])
        auc = roc_auc_score(y == i, proba[:, i]) if 0 < (y == i).sum() < len(y) else 0.5
        out.add("roc_auc", auc, class_label=cls,
                extra={"fpr": [round(float(v), 4) for v in fpr],
                       "tpr": [round(float(v), 4) for v in tpr]})
    cm = confusion_matrix(y, pred, labels=labels)
    out.add("confusion", float(cm.trace()),
            extra={"labels": list(classes), "matrix": cm.tolist()})
    return uar
