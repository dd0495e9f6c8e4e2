"""Evaluation rows (``model_metrics``) of a cross-validated model: per fold and pooled scores,
per-class precision/recall, confusion matrix, ROC, scores per demographic group, scores on the
phone-line copies and permutation feature importance on the held-out folds."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from etl.training.config import TrainConfig
from etl.training.dataset import Dataset
from etl.training.fitting import CVResult, prepare_features

# Permutation importance: rows scored per outer fold and repeats (cost grows with both).
IMPORTANCE_ROWS_PER_FOLD = 160
IMPORTANCE_REPEATS = 2
ROC_POINTS = 40


def _scores(y: np.ndarray, proba: np.ndarray, n_classes: int) -> dict[str, float]:
    """UAR (= balanced accuracy = macro recall over classes present), accuracy, macro-F1."""
    pred = proba.argmax(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a demographic slice may lack some classes
        uar = float(balanced_accuracy_score(y, pred))
    return {"uar": uar, "accuracy": float(accuracy_score(y, pred)),
            "macro_f1": float(f1_score(y, pred, labels=list(range(n_classes)), average="macro",
                                       zero_division=0))}


def metric_rows_for(
    y: np.ndarray, proba: np.ndarray, classes: list[str], *, fold: int | None,
    curves: bool,
) -> list[dict[str, Any]]:
    """Metric rows for one evaluation slice (a fold, or pooled when ``fold`` is None)."""
    K = len(classes)
    labels = list(range(K))
    pred = proba.argmax(axis=1)
    rows: list[dict[str, Any]] = []
    for name, value in _scores(y, proba, K).items():
        rows.append({"fold": fold, "metric": name, "value": value,
                     "extra": {"n": len(y)} if name == "uar" else None})
    precision, recall, f1, support = precision_recall_fscore_support(
        y, pred, labels=labels, zero_division=0)
    for k, label in enumerate(classes):
        for name, values in (("precision", precision), ("recall", recall), ("f1", f1),
                             ("support", support)):
            rows.append({"fold": fold, "metric": name, "class_label": label,
                         "value": float(values[k])})
    matrix = confusion_matrix(y, pred, labels=labels)
    rows.append({"fold": fold, "metric": "confusion", "value": float(matrix.trace()),
                 "extra": {"labels": classes, "matrix": matrix.tolist(),
                           "rows": "true", "columns": "predicted"}})
    aucs = []
    for k, label in enumerate(classes):
        positives = y == k
        if positives.all() or not positives.any():
            continue  # AUC undefined when the slice has only one side
        auc = float(roc_auc_score(positives, proba[:, k]))
        aucs.append(auc)
        extra = None
        if curves:
            fpr, tpr, _ = roc_curve(positives, proba[:, k])
            keep = np.unique(np.linspace(0, len(fpr) - 1, min(ROC_POINTS, len(fpr))).astype(int))
            extra = {"fpr": np.round(fpr[keep], 4).tolist(), "tpr": np.round(tpr[keep], 4).tolist()}
        rows.append({"fold": fold, "metric": "roc_auc", "class_label": label, "value": auc,
                     "extra": extra})
    if aucs:
        rows.append({"fold": fold, "metric": "roc_auc_macro", "value": float(np.mean(aucs))})
    return rows


def evaluation_metrics(dataset: Dataset, cv: CVResult) -> list[dict[str, Any]]:
    """All metric rows: per fold, pooled, fold mean/std, and pooled per demographic group."""
    rows: list[dict[str, Any]] = []
    n_folds = int(cv.folds.max()) + 1
    fold_uars = []
    for k in range(n_folds):
        test = cv.folds == k
        fold_rows = metric_rows_for(dataset.y[test], cv.proba[test], dataset.classes, fold=k,
                                    curves=False)
        fold_uars.extend(r["value"] for r in fold_rows if r["metric"] == "uar")
        actors = sorted(int(a) for a in np.unique(dataset.groups[test]))
        for r in fold_rows:
            if r["metric"] == "uar":
                r["extra"] = {"n": int(test.sum()), "actor_ids": actors}
        rows.extend(fold_rows)
    rows.extend(metric_rows_for(dataset.y, cv.proba, dataset.classes, fold=None, curves=True))
    rows.append({"fold": None, "metric": "uar_mean", "value": float(np.mean(fold_uars)),
                 "extra": {"per_fold": fold_uars}})
    rows.append({"fold": None, "metric": "uar_std", "value": float(np.std(fold_uars))})
    K = len(dataset.classes)
    for group_name, values in dataset.demographics.items():
        if all(v is None for v in values):
            continue  # the corpus documents nothing for this dimension
        values_arr = np.array([str(v) if v is not None else "unknown" for v in values], dtype=object)
        for value in sorted(set(values_arr)):
            mask = values_arr == value
            for name, score in _scores(dataset.y[mask], cv.proba[mask], K).items():
                rows.append({"fold": None, "metric": name, "group_name": group_name,
                             "group_value": value, "value": score,
                             "extra": {"n": int(mask.sum())} if name == "uar" else None})
    return rows


def _fast_uar(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Balanced accuracy without sklearn's validation overhead (called thousands of times)."""
    present = np.bincount(y, minlength=n_classes)
    hits = np.bincount(y[pred == y], minlength=n_classes)
    mask = present > 0
    return float(np.mean(hits[mask] / present[mask]))


def permutation_importance_cv(
    dataset: Dataset, config: TrainConfig, cv: CVResult,
) -> list[dict[str, Any]]:
    """Mean drop in UAR when one feature is shuffled, measured on the held-out folds.

    Held-out rows make this an importance *for unseen speakers*; a capped number of rows per fold
    keeps the cost modest (each feature costs ``IMPORTANCE_REPEATS`` predictions per fold).
    """
    rng = np.random.default_rng(config.seed)
    Xp = prepare_features(dataset.X, dataset.groups,
                          speaker_normalisation=config.speaker_normalisation,
                          raw_columns=config.raw_columns)
    n_features = Xp.shape[1]
    drops = np.zeros(n_features)
    weights = 0.0
    for k, model in enumerate(cv.fold_models):
        test = np.flatnonzero(cv.folds == k)
        if test.size > IMPORTANCE_ROWS_PER_FOLD:
            test = np.sort(rng.choice(test, IMPORTANCE_ROWS_PER_FOLD, replace=False))
        Xt, yt = Xp[test], dataset.y[test]
        K = len(dataset.classes)
        base = _fast_uar(yt, model.predict(Xt), K)
        # Stack all permuted copies of the slice and predict once: far fewer model calls.
        for _ in range(IMPORTANCE_REPEATS):
            stacked = np.repeat(Xt[None], n_features, axis=0)  # (F, m, F)
            for j in range(n_features):
                stacked[j, :, j] = Xt[rng.permutation(len(yt)), j]
            preds = model.predict(stacked.reshape(-1, n_features)).reshape(n_features, -1)
            for j in range(n_features):
                drops[j] += (base - _fast_uar(yt, preds[j], K)) * len(yt)
        weights += len(yt) * IMPORTANCE_REPEATS
    drops /= max(weights, 1.0)
    return [{"fold": None, "metric": "feature_importance", "class_label": None,
             "group_name": "feature", "group_value": name[:64], "value": float(drops[j]),
             "extra": {"method": "permutation_uar_drop_heldout", "rank": int(rank),
                       "feature": name}}
            for rank, (j, name) in enumerate(
                sorted(enumerate(dataset.feature_names), key=lambda t: -drops[t[0]]), start=1)]


def phone_metric_rows(dataset: Dataset, cv: CVResult) -> list[dict[str, Any]]:
    """UAR, accuracy and macro-F1 on the phone-line copies of held-out clips, per fold and
    pooled (``uar_phone``, ``accuracy_phone``, ``macro_f1_phone``, ``uar_phone_mean``)."""
    aug = dataset.augmented
    if aug is None or cv.aug_proba is None:
        return []
    y, folds, K = dataset.y[aug.row], cv.folds[aug.row], len(dataset.classes)
    rows: list[dict[str, Any]] = []
    fold_uars = []
    for k in range(int(cv.folds.max()) + 1):
        test = folds == k
        if not test.any():
            continue
        uar = _scores(y[test], cv.aug_proba[test], K)["uar"]
        fold_uars.append(uar)
        rows.append({"fold": k, "metric": "uar_phone", "value": uar,
                     "extra": {"n": int(test.sum())}})
    for name, value in _scores(y, cv.aug_proba, K).items():
        rows.append({"fold": None, "metric": f"{name}_phone", "value": value,
                     "extra": {"n": len(y), "copies_per_clip": int(aug.variant.max())}
                     if name == "uar" else None})
    rows.append({"fold": None, "metric": "uar_phone_mean", "value": float(np.mean(fold_uars)),
                 "extra": {"per_fold": fold_uars}})
    return rows
