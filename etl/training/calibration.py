"""Probability calibration and the escalation operating point of a model version.

Both are fitted at training time on out-of-fold (speaker-grouped) predictions, stored as one
JSON-ready record in ``model_versions.params["calibration"]`` and applied at scoring time.

Calibration
    Candidates are ``none``, ``temperature`` (one temperature on the log-probabilities) and
    ``vector`` (a weight and a bias per class, lightly regularised toward the identity). Each is
    cross-fitted over speaker groups (fit on some speakers' out-of-fold probabilities, applied to
    the others'); of those whose cross-fitted ECE is not worse than uncalibrated, the one with
    the lowest cross-fitted log-loss is refitted on all speakers.
    ``ece_before``/``ece_after`` are the top-label expected calibration error (15 equal-width
    bins) of the raw and of the cross-fitted calibrated probabilities, so "after" is measured on
    speakers the calibrator did not see.

Operating point
    Escalation rules and a confidence floor chosen on *pseudo-calls* composed from the
    cross-fitted calibrated out-of-fold predictions: each pseudo-call is one training speaker as
    the customer, whose turns follow one of the call generator's scenarios (calm, escalating,
    upset, recovering; :mod:`etl.synthetic.calls`), each turn 1-3 of that speaker's clips of one
    polarity. A pseudo-call is truly escalated when more than half of its customer speech is
    negative. The grid covers the customer negative-share, negative-streak and trend thresholds
    and a confidence floor (segments below it are abstained: neither negative nor counted);
    the choice is the highest recall at precision >= ``target_precision`` where the recall
    target is reachable too, else the highest F0.5. ``cv_precision`` and ``cv_recall`` come from
    choosing on the calls of some speakers and counting on the others' (speaker-grouped folds),
    an honest estimate for unseen speakers of the same corpus. The rules are on the customer's
    emotion only (the overtalk rule stays a built-in default, never part of a model's point).

    ``ser train`` for phone calls goes one step further (:mod:`etl.training.operating_point`): the same
    selection runs on *generated phone calls* of the training speakers, each scored by the fold
    model that never heard them; pseudo-calls remain the fallback (and are kept beside it as
    ``operating_point_pseudo_calls``).

    A speaker-normalised model's out-of-fold clip predictions were normalised over each
    speaker's whole balanced set of clips, but scoring normalises each call's customer over that
    call's own segments, whose emotions are not balanced (a calm call's mean *is* calm). Taken
    from the clip predictions, pseudo-calls would therefore be optimistic. Training passes a
    ``rescore`` function instead: it normalises each pseudo-call's clips together, as scoring
    normalises a call's role (same shrinkage toward the fold's training population), and
    predicts them with the fold model that never saw the speaker; the calibration map, cross-
    fitted so it never saw the speaker either, is applied on top.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import log_softmax, softmax

from etl.corpora.labels import ESCALATED_SHARE, NEGATIVE_EMOTIONS, is_negative_class
from etl.scoring.summaries import ScoredSegment, summarise_call
from etl.synthetic.calls import SCENARIO_WEIGHTS, SCENARIOS

EPS = 1e-6
N_BINS = 15
METHODS = ("none", "temperature", "vector")
VECTOR_L2 = 1e-2
TARGET_PRECISION = 0.8
TARGET_RECALL = 0.6
# Customer-emotion rule grid (the operating point escalates on the customer's emotion only).
SHARE_GRID = tuple(np.round(np.arange(0.30, 0.851, 0.05), 2))
STREAK_GRID = (None, 10.0, 15.0, 20.0, 30.0, 45.0)
TREND_GRID = (None, 0.3, 0.5)
FLOOR_QUANTILES = (0.0, 0.1, 0.2, 0.3)  # abstain at most ~30 % of segments
PSEUDO_CALLS_PER_SPEAKER = 30
STREAK_GAP_S = 2.0

# ``rescore(rows, call)``: raw (uncalibrated) probabilities, shape (n, n_classes), of the clips
# ``rows`` (n,) (indices into the out-of-fold arrays) when each pseudo-call's clips (``call``
# (n,), the pseudo-call of each row) are normalised together as one speaker, as scoring does.
Rescore = Callable[[np.ndarray, np.ndarray], np.ndarray]


# --------------------------------------------------------------------------------------------
# Calibration maps
# --------------------------------------------------------------------------------------------


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


def _apply(method: str, params: Mapping[str, Any], proba: np.ndarray) -> np.ndarray:
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


def _group_folds(groups: np.ndarray, *, n_folds: int, seed: int) -> np.ndarray:
    """Fold index per row; every speaker in one fold (speakers shuffled with ``seed``)."""
    speakers = np.unique(groups)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(speakers))
    fold_of = {speakers[i]: k % n_folds for k, i in enumerate(order)}
    return np.array([fold_of[g] for g in groups])


def cross_fit(method: str, proba: np.ndarray, y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Calibrated probabilities, each fold's rows mapped by a calibrator fitted on the others."""
    out = np.empty_like(proba, dtype=np.float64)
    for k in np.unique(folds):
        test = folds == k
        params = fit_map(method, proba[~test], y[~test])
        out[test] = _apply(method, params, proba[test])
    return out


# --------------------------------------------------------------------------------------------
# Public API (called by training and by LoadedModel.predict_proba)
# --------------------------------------------------------------------------------------------


def fit_calibration(oof_proba: np.ndarray, y: np.ndarray, *, classes: Sequence[str],
                    groups: np.ndarray, seed: int = 0,
                    rescore: Rescore | None = None) -> dict[str, Any]:
    """Fit calibration (and the operating point) on out-of-fold probabilities.

    Parameters
    ----------
    oof_proba : ndarray, shape (n_clips, n_classes)
        Each clip's probabilities from the fold model that did not see its speaker.
    y : ndarray, shape (n_clips,)
        Class index per clip.
    classes
        Class names in column order.
    groups : ndarray, shape (n_clips,)
        Speaker (actor) per clip.
    rescore : callable, optional
        For speaker-normalised models: predicts pseudo-call clips normalised per pseudo-call
        (see :data:`Rescore`); the operating point is then chosen on those predictions, mapped
        by the calibrator cross-fitted without the speaker. None: the out-of-fold clip
        predictions as they are (right for models without speaker normalisation).

    Returns
    -------
    dict
        JSON-ready record: ``method``, ``params``, ``classes``, ``log_loss_*``, ``ece_*``,
        ``cv_log_loss`` per candidate, ``protocol`` and ``operating_point`` (see
        :func:`choose_operating_point`; None when it cannot be chosen). ``{"method": "none",
        ...}`` with a ``reason`` when there are too few speakers to calibrate on held-out ones.
    """
    proba, y, groups, classes = _checked_inputs(oof_proba, y, groups=groups, classes=classes)
    n_speakers = len(np.unique(groups))
    base: dict[str, Any] = {"classes": classes, "n_clips": len(y), "n_speakers": n_speakers,
                            "log_loss_before": round(log_loss(proba, y), 4),
                            "ece_before": round(expected_calibration_error(proba, y), 4)}
    if n_speakers < 3:
        return {**base, "method": "none", "params": {}, "operating_point": None,
                "reason": f"{n_speakers} speaker(s): calibration needs >= 3 to fit on held-out "
                          "speakers"}
    folds = _group_folds(groups, n_folds=min(5, n_speakers), seed=seed)
    choice = _choose_method(proba, y, folds)
    record = {
        **base, "method": choice.method, "params": fit_map(choice.method, proba, y),
        "cv_log_loss": choice.cv_loss, "cv_ece": choice.cv_ece,
        "log_loss_after": choice.cv_loss[choice.method],
        "ece_after": round(expected_calibration_error(choice.calibrated, y), 4),
        "protocol": f"chosen by speaker-grouped {int(folds.max()) + 1}-fold cross-fitted "
                    "log-loss on out-of-fold probabilities; *_after measured cross-fitted "
                    "(calibrator never saw the speaker)",
    }
    record["operating_point"] = _operating_point(choice, proba, y, classes=classes,
                                                 groups=groups, folds=folds, seed=seed,
                                                 rescore=rescore)
    return record


def _checked_inputs(oof_proba: np.ndarray, y: np.ndarray, *, groups: np.ndarray,
                    classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """:func:`fit_calibration`'s inputs as arrays (float64 probabilities, int labels) and class
    names as strings; ValueError unless they have one row per clip."""
    proba = np.asarray(oof_proba, dtype=np.float64)
    y = np.asarray(y, dtype=int)
    groups = np.asarray(groups)
    names = [str(c) for c in classes]
    if proba.ndim != 2 or proba.shape != (len(y), len(names)) or len(groups) != len(y):
        raise ValueError(f"oof_proba must be (n_clips, {len(names)}) with one label and one "
                         f"speaker per row; got {proba.shape}, {len(y)} labels, "
                         f"{len(groups)} speakers")
    return proba, y, groups, names


def _operating_point(choice: MethodChoice, proba: np.ndarray, y: np.ndarray, *,
                     classes: list[str], groups: np.ndarray, folds: np.ndarray, seed: int,
                     rescore: Rescore | None) -> dict[str, Any] | None:
    """:func:`choose_operating_point` on the cross-fitted probabilities of ``choice``; with
    ``rescore``, on pseudo-call predictions mapped by the calibrator fitted without the
    speaker (:func:`_cross_fitted_rescore`). The record says which."""
    call_proba = (_cross_fitted_rescore(rescore, choice.method, proba, y, folds)
                  if rescore is not None else None)
    point = choose_operating_point(choice.calibrated, y, classes=classes, groups=groups,
                                   seed=seed, call_proba=call_proba)
    if point is not None:
        point["pseudo_call_normalisation"] = (
            "per pseudo-call, as scoring normalises a call's role" if rescore is not None
            else "none (clip predictions as they are)")
    return point


@dataclass(frozen=True, slots=True)
class MethodChoice:
    """The calibration method chosen, its cross-fitted probabilities ``(n, n_classes)`` and the
    cross-fitted log-loss and ECE of every candidate."""

    method: str
    calibrated: np.ndarray
    cv_loss: dict[str, float]
    cv_ece: dict[str, float]


def _choose_method(proba: np.ndarray, y: np.ndarray, folds: np.ndarray) -> MethodChoice:
    """Lowest cross-fitted log-loss among the maps that do not worsen the held-out ECE (a
    log-loss gain can come from reshuffling the non-top classes while the confidences that the
    floor and the reports use get worse); ties go to the simpler method."""
    crossed = {m: cross_fit(m, proba, y, folds) for m in METHODS}
    cv_loss = {m: round(log_loss(p, y), 4) for m, p in crossed.items()}
    cv_ece = {m: round(expected_calibration_error(p, y), 4) for m, p in crossed.items()}
    allowed = [m for m in METHODS if cv_ece[m] <= cv_ece["none"]]
    method = min(allowed, key=lambda m: (cv_loss[m], METHODS.index(m)))
    return MethodChoice(method, crossed[method], cv_loss, cv_ece)


def _cross_fitted_rescore(rescore: Rescore, method: str, proba: np.ndarray, y: np.ndarray,
                          folds: np.ndarray) -> Rescore:
    """``rescore`` followed by the calibration map of each row's speaker fold, fitted on the
    other speakers only."""
    n_classes = proba.shape[1]

    def call_proba(rows: np.ndarray, call: np.ndarray) -> np.ndarray:
        raw = np.asarray(rescore(rows, call), dtype=np.float64)
        if raw.shape != (len(rows), n_classes):
            raise ValueError(f"rescore gave shape {raw.shape} for {len(rows)} rows of "
                             f"{n_classes} classes")
        out = np.empty_like(raw)
        row_fold = folds[rows]
        for k in np.unique(row_fold):
            fit = ~(folds == k)
            mapping = fit_map(method, proba[fit], y[fit])
            out[row_fold == k] = _apply(method, mapping, raw[row_fold == k])
        return out

    return call_proba


def apply_calibration(record: Mapping[str, Any] | None, proba: np.ndarray) -> np.ndarray:
    """Calibrated probabilities, shape (n, n_classes); unchanged when ``record`` is None/none."""
    if not record or record.get("method", "none") == "none":
        return proba
    return _apply(str(record["method"]), record.get("params") or {}, np.asarray(proba))


# --------------------------------------------------------------------------------------------
# Escalation operating point on pseudo-calls
# --------------------------------------------------------------------------------------------


def _scenarios() -> tuple[dict[str, tuple[float, float]], dict[str, float]]:
    """Negative probability (early, late) per generator scenario, and the scenario weights."""
    def neg(pool: Sequence[str]) -> float:
        return sum(e in NEGATIVE_EMOTIONS for e in pool) / len(pool)

    return ({name: (neg(early), neg(late)) for name, (early, late) in SCENARIOS.items()},
            dict(SCENARIO_WEIGHTS))


def pseudo_calls(proba: np.ndarray, y: np.ndarray, *, classes: Sequence[str],
                 groups: np.ndarray, seed: int = 0,
                 per_speaker: int = PSEUDO_CALLS_PER_SPEAKER) -> list[dict[str, Any]]:
    """Customer sides of synthetic calls built from one speaker's clip predictions each.

    Returns
    -------
    list of dict
        ``speaker``, ``scenario``, ``truth`` (customer mostly negative), ``start``/``end``
        (n_segments,) seconds, ``rows`` (n,) the clip (row of ``proba``) of each segment,
        ``negative`` (n,) predicted negative, ``confidence`` (n,), ``duration_s``.
    """
    negative_class = np.array([is_negative_class(c) for c in classes])
    true_negative = negative_class[y]
    pred = proba.argmax(axis=1)
    conf = proba.max(axis=1)
    phases, weights = _scenarios()
    names = list(weights)
    p = np.array([weights[n] for n in names])
    p = p / p.sum()
    rng = np.random.default_rng(seed)
    calls = []
    for speaker in np.unique(groups):
        rows = np.flatnonzero(groups == speaker)
        pools = {True: rows[true_negative[rows]], False: rows[~true_negative[rows]]}
        if not len(pools[True]) or not len(pools[False]):
            continue
        for _ in range(per_speaker):
            scenario = names[int(rng.choice(len(names), p=p))]
            early, late = phases[scenario]
            duration = float(rng.uniform(96.0, 144.0))  # the generator's 2 min +- 20 %
            timeline = _pseudo_timeline(rng, duration=duration, early=early, late=late,
                                        pools=pools)
            if not timeline.rows:
                continue
            s, e = np.array(timeline.starts), np.array(timeline.ends)
            dur = e - s
            tn = np.array(timeline.truth_negative)
            picks = timeline.rows
            calls.append({
                "speaker": speaker, "scenario": scenario, "duration_s": duration,
                "truth": bool(dur[tn].sum() > ESCALATED_SHARE * dur.sum()), "start": s, "end": e,
                "rows": np.array(picks, dtype=np.int64),
                "negative": negative_class[pred[picks]], "confidence": conf[picks]})
    return calls


@dataclass(slots=True)
class _PseudoTimeline:
    """A pseudo-call's customer utterances: times, the clip row of each and its true polarity."""

    starts: list[float]
    ends: list[float]
    rows: list[int]
    truth_negative: list[bool]


def _pseudo_timeline(rng: np.random.Generator, *, duration: float, early: float, late: float,
                     pools: Mapping[bool, np.ndarray]) -> _PseudoTimeline:
    """Customer turns of 1-3 utterances between agent turns, as the call generator lays them
    out; ``early``/``late``: the chance an utterance is negative before/after the switch."""
    out = _PseudoTimeline([], [], [], [])
    t = float(rng.uniform(1.0, 6.0))
    while True:
        # the generator's soft switch from the early to the late pool mid-call
        late_phase = rng.random() < np.clip((t / duration - 0.3) / 0.4, 0.0, 1.0)
        is_neg = bool(rng.random() < (late if late_phase else early))
        n_utt = int(rng.integers(1, 4))
        for _k in range(n_utt):
            length = float(rng.uniform(1.2, 3.0))
            if t + length > duration:
                break
            out.starts.append(t)
            out.ends.append(t + length)
            out.rows.append(int(pools[is_neg][rng.integers(len(pools[is_neg]))]))
            out.truth_negative.append(is_neg)
            t += length + float(rng.uniform(0.2, 0.6))
        t += float(rng.uniform(2.0, 8.0))  # the agent's turn
        if t >= duration - 1.2:
            break
    return out


def _call_metrics(call: Mapping[str, Any], floor: float) -> tuple[float, float, float]:
    """(negative share, longest negative streak s, trend) of one pseudo-call; NaN when None."""
    keep = call["confidence"] >= floor
    segs = [ScoredSegment(role="customer", start_s=float(s), end_s=float(e),
                          emotion="negative" if n else "other", confidence=float(c),
                          is_negative=bool(n) and bool(k), abstained=not bool(k))
            for s, e, n, c, k in zip(call["start"], call["end"], call["negative"],
                                     call["confidence"], keep, strict=True)]
    stats = summarise_call(segs, speech={"customer": list(zip(call["start"], call["end"],
                                                               strict=True))},
                           duration_s=call["duration_s"], streak_gap_s=STREAK_GAP_S)

    def num(v: float | None) -> float:
        return np.nan if v is None else float(v)

    return (num(stats.negative_share_customer), float(stats.longest_negative_streak_s),
            num(stats.customer_trend))


def _counts(fired: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    """(true positives, predicted positives, actual positives); ``fired`` (..., n_calls)."""
    return ((fired & truth).sum(axis=-1), fired.sum(axis=-1), truth.sum())


def _grid() -> list[tuple[float, float | None, float | None]]:
    return [(s, k, t) for s in SHARE_GRID for k in STREAK_GRID for t in TREND_GRID]


def _fire(metrics: np.ndarray, grid: Sequence[tuple[float, float | None, float | None]]
          ) -> np.ndarray:
    """(n_grid, n_calls) escalation decisions; ``metrics`` (n_calls, 3). NaN never fires."""
    share, streak, trend = (np.nan_to_num(metrics[:, i], nan=-np.inf) for i in range(3))
    out = np.zeros((len(grid), len(metrics)), dtype=bool)
    for g, (s, k, t) in enumerate(grid):
        fired = share >= s
        if k is not None:
            fired |= streak >= k
        if t is not None:
            fired |= trend >= t
        out[g] = fired
    return out


def _select(tp: np.ndarray, npred: np.ndarray, npos: int, *, target_precision: float,
            n_rules: np.ndarray, target_recall: float = TARGET_RECALL) -> int:
    """Index of the best grid point.

    Where some point reaches precision >= ``target_precision`` at recall >= ``target_recall``:
    the highest recall at that precision (ties: higher precision, fewer escalations, fewer
    rules). Otherwise the highest F0.5 (precision weighted twice): a point that only reaches
    the precision by flagging a handful of calls is noise on speakers it was not chosen on.
    """
    precision = np.where(npred > 0, tp / np.maximum(npred, 1), 0.0)
    recall = tp / max(npos, 1)
    ok = precision >= target_precision
    if (ok & (recall >= target_recall)).any():
        keys = [(-recall[i], -precision[i], npred[i], n_rules[i]) for i in np.flatnonzero(ok)]
        return int(np.flatnonzero(ok)[min(range(len(keys)), key=keys.__getitem__)])
    f_half = 1.25 * precision * recall / np.maximum(0.25 * precision + recall, 1e-12)
    keys = [(-round(float(f_half[i]), 9), -precision[i], n_rules[i]) for i in range(len(tp))]
    return min(range(len(keys)), key=keys.__getitem__)


def rules_for(share: float, streak: float | None, trend: float | None) -> list[dict[str, Any]]:
    """The operating point's rules as :func:`etl.scoring.escalation.rules_from_data` data.

    Customer-emotion rules only: the truth they are chosen against is the customer's emotion,
    and overtalk (a fixed built-in threshold, never chosen) fired on calls whose customer was
    calm. Users who want it escalate on it with their own rules."""
    rules: list[dict[str, Any]] = [{
        "name": "customer_negative_share", "metric": "negative_share_customer", "op": ">=",
        "threshold": float(share),
        "description": f"customer negative for {share:.0%} of their confident speech"}]
    if streak is not None:
        rules.append({"name": "customer_negative_streak", "metric": "longest_negative_streak_s",
                      "op": ">=", "threshold": float(streak),
                      "description": f"customer negative for {streak:g} s in a row"})
    if trend is not None:
        rules.append({"name": "customer_worsening", "metric": "customer_trend", "op": ">=",
                      "threshold": float(trend),
                      "description": "customer much more negative at the end than at the start"})
    return rules


def choose_operating_point(proba: np.ndarray, y: np.ndarray, *, classes: Sequence[str],
                           groups: np.ndarray, seed: int = 0,
                           target_precision: float = TARGET_PRECISION,
                           per_speaker: int = PSEUDO_CALLS_PER_SPEAKER,
                           call_proba: Rescore | None = None) -> dict[str, Any] | None:
    """Escalation rules and confidence floor chosen on pseudo-calls of the training speakers.

    Parameters
    ----------
    proba : ndarray, shape (n_clips, n_classes)
        Calibrated out-of-fold probabilities (each speaker scored by a model that never saw it).
    y, groups : ndarray, shape (n_clips,)
        Class index and speaker per clip.
    call_proba : callable, optional
        ``call_proba(rows, call)`` -> calibrated probabilities (n, n_classes) of every pseudo-
        call segment, its clips normalised per pseudo-call (see :data:`Rescore`); replaces the
        clip predictions ``proba`` in the pseudo-calls (and in the confidence-floor grid).

    Returns
    -------
    dict or None
        ``rules``, ``confidence_floor``, ``escalation_rate``, ``precision``, ``recall`` (on all
        pseudo-calls), ``cv_precision``/``cv_recall`` (chosen on other speakers), counts and
        ``protocol``; None when the scheme has no negative class or too few speakers.
    """
    negative_class = np.array([is_negative_class(c) for c in classes])
    if not negative_class.any() or negative_class.all():
        return None
    calls = pseudo_calls(proba, y, classes=classes, groups=groups, seed=seed,
                         per_speaker=per_speaker)
    if len({c["speaker"] for c in calls}) < 3:
        return None
    if call_proba is not None and calls:
        rows = np.concatenate([c["rows"] for c in calls])
        call = np.concatenate([np.full(len(c["rows"]), i) for i, c in enumerate(calls)])
        rescored = np.asarray(call_proba(rows, call), dtype=np.float64)
        negative_pred = negative_class[rescored.argmax(axis=1)]
        conf = rescored.max(axis=1)
        for i, c in enumerate(calls):
            c["negative"], c["confidence"] = negative_pred[call == i], conf[call == i]
    else:
        conf = proba.max(axis=1)
    return select_operating_point(
        calls, confidences=conf, seed=seed, target_precision=target_precision,
        protocol=f"{per_speaker} pseudo-calls per training speaker from cross-fitted "
                 "calibrated out-of-fold clip predictions (generator scenarios and weights); "
                 "truth = customer > 50 % negative; highest recall at precision >= "
                 f"{target_precision:g} (else highest F0.5); cv_* chosen on other speakers' "
                 "pseudo-calls (speaker-grouped folds)")


def select_operating_point(calls: Sequence[Mapping[str, Any]], *, confidences: np.ndarray,
                           seed: int = 0, target_precision: float = TARGET_PRECISION,
                           protocol: str) -> dict[str, Any] | None:
    """Rules and confidence floor with the highest recall at precision >= ``target_precision``
    on ``calls`` (customer sides: ``speaker``, ``scenario``, ``truth``, ``start``/``end``
    seconds, ``negative`` and ``confidence`` per segment, ``duration_s``).

    ``confidences``: the segment confidences whose quantiles (:data:`FLOOR_QUANTILES`) are the
    candidate floors. ``cv_precision``/``cv_recall``: chosen on some speakers' calls, counted on
    the others' (speaker-grouped folds). None with calls of fewer than 3 speakers.
    """
    speakers = np.array([c["speaker"] for c in calls])
    if len(np.unique(speakers)) < 3:
        return None
    truth = np.array([bool(c["truth"]) for c in calls])
    conf = np.asarray(confidences, dtype=np.float64)
    floors = sorted({round(float(np.quantile(conf, q)), 3) if q > 0 else 0.0
                     for q in FLOOR_QUANTILES})
    grid = _grid()
    n_rules = np.array([1 + (k is not None) + (t is not None) for _, k, t in grid])
    # decisions per (floor, grid point, call)
    fired = np.stack([_fire(np.array([_call_metrics(c, f) for c in calls]), grid)
                      for f in floors])
    flat = fired.reshape(len(floors) * len(grid), len(calls))
    flat_rules = np.tile(n_rules, len(floors))

    def choose(mask: np.ndarray) -> int:
        tp, npred, npos = _counts(flat[:, mask], truth[mask])
        return _select(tp, npred, int(npos), target_precision=target_precision,
                       n_rules=flat_rules)

    best = choose(np.ones(len(calls), dtype=bool))
    tp, npred, npos = _counts(flat[best], truth)
    # honest estimate: choose on other speakers' calls, count on the held-out speakers'
    folds = _group_folds(speakers, n_folds=min(4, len(np.unique(speakers))), seed=seed + 1)
    cv_tp = cv_pred = 0
    for k in np.unique(folds):
        j = choose(folds != k)
        test = folds == k
        cv_tp += int((flat[j, test] & truth[test]).sum())
        cv_pred += int(flat[j, test].sum())
    floor = floors[best // len(grid)]
    share, streak, trend = grid[best % len(grid)]
    calm = np.array([c["scenario"] == "calm" for c in calls])
    return {
        "rules": rules_for(share, streak, trend),
        "confidence_floor": float(floor),
        "escalation_rate": round(float(npred) / len(calls), 4),
        "precision": round(float(tp) / max(int(npred), 1), 4) if npred else None,
        "recall": round(float(tp) / max(int(npos), 1), 4),
        "calm_escalation_rate": round(float(flat[best, calm].mean()), 4) if calm.any() else None,
        "cv_precision": round(cv_tp / cv_pred, 4) if cv_pred else None,
        "cv_recall": round(cv_tp / max(int(npos), 1), 4),
        "target_precision": target_precision, "target_recall": TARGET_RECALL,
        "meets_target": bool(npred and tp / npred >= target_precision
                             and tp / max(int(npos), 1) >= TARGET_RECALL),
        "n_calls": len(calls), "n_truly_escalated": int(npos),
        "n_speakers": len(np.unique(speakers)),
        "protocol": protocol,
    }
