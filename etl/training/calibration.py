"""Probability calibration of a model version, fitted on its out-of-fold predictions.

Candidates are ``none``, ``temperature`` (one temperature on the log-probabilities) and
``vector`` (a weight and a bias per class, lightly regularised toward the identity). Each is
cross-fitted over the outer cross-validation folds (fold ``k``'s rows mapped by a calibrator fitted
on the other folds, so neither the model nor the map saw their speakers); of those whose
cross-fitted ECE is not worse than uncalibrated, the one with the lowest cross-fitted log-loss is
refitted on all rows. ``ece_before``/``ece_after`` are the top-label expected calibration error
(15 equal-width bins) of the raw and of the cross-fitted calibrated probabilities. The record is
stored in ``model_versions.params["calibration"]`` (with the escalation operating point,
:mod:`etl.training.operating_point`) and applied at scoring time by :func:`apply_calibration`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import log_softmax, softmax

EPS = 1e-6
N_BINS = 15
METHODS = ("none", "temperature", "vector")
VECTOR_L2 = 1e-2


def _log(proba: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(proba, dtype=np.float64), EPS, 1.0))


def log_loss(proba: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes, ``proba`` (n, k), ``y`` (n,)."""
    p = np.clip(proba[np.arange(len(y)), y], EPS, 1.0)
    return float(-np.mean(np.log(p)))


def expected_calibration_error(proba: np.ndarray, y: np.ndarray, *, n_bins: int = N_BINS) -> float:
    """Top-label ECE: confidence-vs-accuracy gap averaged over equal-width confidence bins.

    Parameters
    ----------
    proba : ndarray, shape (n, n_classes)
    y : ndarray, shape (n,)
        Class index per row.
    """
    proba = np.asarray(proba, dtype=np.float64)
    conf = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y).astype(np.float64)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        mask = bins == b
        total += mask.sum() * abs(conf[mask].mean() - correct[mask].mean())
    return float(total / max(len(y), 1))


def _fit_temperature(logp: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    def nll(log_t: float) -> float:
        z = log_softmax(logp / np.exp(log_t), axis=1)
        return float(-z[np.arange(len(y)), y].mean())

    res = minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded")
    return {"temperature": float(np.exp(res.x))}


def _fit_vector(logp: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    n, k = logp.shape
    onehot = np.eye(k)[y]

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:k], theta[k:]
        z = logp * w + b
        lsm = log_softmax(z, axis=1)
        loss = -float((lsm * onehot).sum()) / n + VECTOR_L2 * float(
            np.sum((w - 1.0) ** 2) + np.sum(b ** 2))
        dz = (np.exp(lsm) - onehot) / n
        grad = np.concatenate([(dz * logp).sum(axis=0) + 2 * VECTOR_L2 * (w - 1.0),
                               dz.sum(axis=0) + 2 * VECTOR_L2 * b])
        return loss, grad

    theta0 = np.concatenate([np.ones(k), np.zeros(k)])
    res = minimize(objective, theta0, jac=True, method="L-BFGS-B")
    return {"weights": [float(v) for v in res.x[:k]], "bias": [float(v) for v in res.x[k:]]}


def fit_map(method: str, proba: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    if method == "none":
        return {}
    if method == "temperature":
        return _fit_temperature(_log(proba), y)
    if method == "vector":
        return _fit_vector(_log(proba), y)
    raise ValueError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")


def apply_map(method: str, params: Mapping[str, Any], proba: np.ndarray) -> np.ndarray:
    if method == "none":
        return np.asarray(proba, dtype=np.float64)
    logp = _log(proba)
    if method == "temperature":
        return softmax(logp / float(params["temperature"]), axis=1)
    if method == "vector":
        w = np.asarray(params["weights"], dtype=np.float64)
        b = np.asarray(params["bias"], dtype=np.float64)
        if w.shape != (logp.shape[1],):
            raise ValueError(f"calibration record has {len(w)} classes but the model gives "
                             f"{logp.shape[1]} probabilities per row; retrain the model")
        return softmax(logp * w + b, axis=1)
    raise ValueError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")


def cross_fit(method: str, proba: np.ndarray, y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Calibrated probabilities, each fold's rows mapped by a calibrator fitted on the others."""
    out = np.empty_like(proba, dtype=np.float64)
    for k in np.unique(folds):
        test = folds == k
        out[test] = apply_map(method, fit_map(method, proba[~test], y[~test]), proba[test])
    return out


def fit_calibration(oof_proba: np.ndarray, y: np.ndarray, *, classes: Sequence[str],
                    groups: np.ndarray, folds: np.ndarray) -> dict[str, Any]:
    """The calibration record of out-of-fold probabilities.

    Parameters
    ----------
    oof_proba : ndarray, shape (n, n_classes)
        Each row's probabilities from the fold model that did not see its speaker.
    y, groups, folds : ndarray, shape (n,)
        Class index, speaker and outer fold of each row.

    Returns
    -------
    dict
        JSON-ready: ``method``, ``params``, ``classes``, ``log_loss_*``, ``ece_*``, ``cv_log_loss``
        and ``cv_ece`` per candidate, ``protocol``; ``{"method": "none", ...}`` with a ``reason``
        when fewer than 3 speakers leave nothing to calibrate on held-out ones.
    """
    proba = np.asarray(oof_proba, dtype=np.float64)
    y, groups, folds = np.asarray(y, dtype=int), np.asarray(groups), np.asarray(folds)
    names = [str(c) for c in classes]
    if proba.ndim != 2 or proba.shape != (len(y), len(names)) or not (
            len(groups) == len(folds) == len(y)):
        raise ValueError(f"oof_proba must be (n_clips, {len(names)}) with one label, speaker and "
                         f"fold per row; got {proba.shape}, {len(y)} labels, {len(groups)} "
                         f"speakers, {len(folds)} folds")
    n_speakers = len(np.unique(groups))
    base: dict[str, Any] = {"classes": names, "n_clips": len(y), "n_speakers": n_speakers,
                            "log_loss_before": round(log_loss(proba, y), 4),
                            "ece_before": round(expected_calibration_error(proba, y), 4)}
    if n_speakers < 3:
        return {**base, "method": "none", "params": {},
                "reason": f"{n_speakers} speaker(s): calibration needs >= 3 to fit on held-out "
                          "speakers"}
    # a log-loss gain can come from reshuffling the non-top classes while the confidences the
    # floor and the reports use get worse: only maps that keep the held-out ECE compete
    crossed = {m: cross_fit(m, proba, y, folds) for m in METHODS}
    cv_loss = {m: round(log_loss(p, y), 4) for m, p in crossed.items()}
    cv_ece = {m: round(expected_calibration_error(p, y), 4) for m, p in crossed.items()}
    allowed = [m for m in METHODS if cv_ece[m] <= cv_ece["none"]]
    method = min(allowed, key=lambda m: (cv_loss[m], METHODS.index(m)))
    return {**base, "method": method, "params": fit_map(method, proba, y),
            "cv_log_loss": cv_loss, "cv_ece": cv_ece, "log_loss_after": cv_loss[method],
            "ece_after": cv_ece[method],
            "protocol": f"chosen by {len(np.unique(folds))}-fold (the outer, speaker-grouped "
                        "folds) cross-fitted log-loss on out-of-fold probabilities; *_after "
                        "measured cross-fitted (calibrator never saw the speaker)"}


def apply_calibration(record: Mapping[str, Any] | None, proba: np.ndarray) -> np.ndarray:
    """Calibrated probabilities, shape (n, n_classes); unchanged when ``record`` is None/none."""
    if not record or record.get("method", "none") == "none":
        return proba
    return apply_map(str(record["method"]), record.get("params") or {}, np.asarray(proba))
