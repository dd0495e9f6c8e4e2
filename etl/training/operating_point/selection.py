"""Choosing escalation rules and a confidence floor on the customer sides of scored calls.

Whatever made the calls (:mod:`.generated_calls`, :mod:`.pseudo_calls`), the choice is the same:
every (confidence floor, customer negative share, negative streak, trend) point of a grid is
counted against the calls' truth (customer more than half negative); the highest recall at
precision >= :data:`TARGET_PRECISION` wins where recall >= :data:`TARGET_RECALL` is reachable
there too, else the highest F0.5. The rules escalate on the customer's emotion only: overtalk
(a fixed built-in threshold) fired on calm customers and stays a built-in default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from etl.scoring.summaries import ScoredSegment, summarise_call

TARGET_PRECISION = 0.8
TARGET_RECALL = 0.6
SHARE_GRID = tuple(np.round(np.arange(0.30, 0.851, 0.05), 2))
STREAK_GRID = (None, 10.0, 15.0, 20.0, 30.0, 45.0)
TREND_GRID = (None, 0.3, 0.5)
FLOOR_QUANTILES = (0.0, 0.1, 0.2, 0.3)  # abstain at most ~30 % of segments
STREAK_GAP_S = 2.0
Grid = list[tuple[float, float | None, float | None]]


@dataclass(frozen=True, slots=True)
class CustomerSide:
    """One call's customer: segment times (n,) s, whether each segment's predicted class is
    negative and its confidence (no floor applied yet), and the truth the rules are chosen
    against (more than half of the customer's speech negative)."""

    speaker: int
    scenario: str
    truth: bool
    duration_s: float
    start: np.ndarray
    end: np.ndarray
    negative: np.ndarray
    confidence: np.ndarray
    fold: int  # the outer cross-validation fold of the customer's speaker


def choose_point(sides: Sequence[CustomerSide], *, seed: int,
                 protocol: str) -> dict[str, Any] | None:
    """The best grid point on ``sides`` (see the module docstring), as a JSON-ready record.

    ``cv_precision``/``cv_recall``: chosen on some speakers' calls, counted on the others'
    (speakers shuffled into up to 4 folds with ``seed + 1``), an honest estimate for unseen
    speakers. None with calls of fewer than 3 speakers or without segments.
    """
    speakers = np.array([s.speaker for s in sides])
    if len(np.unique(speakers)) < 3 or not any(len(s.start) for s in sides):
        return None
    truth = np.array([s.truth for s in sides])
    conf = np.concatenate([s.confidence for s in sides])
    floors = sorted({round(float(np.quantile(conf, q)), 3) if q > 0 else 0.0
                     for q in FLOOR_QUANTILES})
    grid = [(s, k, t) for s in SHARE_GRID for k in STREAK_GRID for t in TREND_GRID]
    n_rules = np.tile([1 + (k is not None) + (t is not None) for _, k, t in grid], len(floors))
    # decisions per (floor, grid point) and call
    fired = np.concatenate([_fired(np.array([_metrics(s, f) for s in sides]), grid)
                            for f in floors])

    def best_on(mask: np.ndarray) -> int:
        tp = (fired[:, mask] & truth[mask]).sum(axis=1)
        return _best(tp, fired[:, mask].sum(axis=1), int(truth[mask].sum()), n_rules=n_rules)

    best = best_on(np.ones(len(sides), dtype=bool))
    tp, npred, npos = int((fired[best] & truth).sum()), int(fired[best].sum()), int(truth.sum())
    folds = _speaker_folds(speakers, n_folds=min(4, len(np.unique(speakers))), seed=seed + 1)
    cv_tp = cv_pred = 0
    for k in np.unique(folds):
        j, test = best_on(folds != k), folds == k
        cv_tp += int((fired[j, test] & truth[test]).sum())
        cv_pred += int(fired[j, test].sum())
    share, streak, trend = grid[best % len(grid)]
    calm = np.array([s.scenario == "calm" for s in sides])
    return {
        "rules": rules_for(share, streak, trend),
        "confidence_floor": float(floors[best // len(grid)]),
        "escalation_rate": round(npred / len(sides), 4),
        "precision": round(tp / npred, 4) if npred else None,
        "recall": round(tp / max(npos, 1), 4),
        "calm_escalation_rate": round(float(fired[best, calm].mean()), 4) if calm.any() else None,
        "cv_precision": round(cv_tp / cv_pred, 4) if cv_pred else None,
        "cv_recall": round(cv_tp / max(npos, 1), 4),
        "target_precision": TARGET_PRECISION, "target_recall": TARGET_RECALL,
        "meets_target": bool(npred and tp / npred >= TARGET_PRECISION
                             and tp / max(npos, 1) >= TARGET_RECALL),
        "n_calls": len(sides), "n_truly_escalated": npos,
        "n_speakers": len(np.unique(speakers)), "protocol": protocol,
    }


def rules_for(share: float, streak: float | None, trend: float | None) -> list[dict[str, Any]]:
    """A grid point's rules as :func:`etl.scoring.escalation.rules_from_data` reads them."""
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


def _metrics(side: CustomerSide, floor: float) -> tuple[float, float, float]:
    """(negative share, longest negative streak s, trend) of one customer side as scoring
    summarises it, segments below ``floor`` abstained; NaN where scoring gives None."""
    keep = side.confidence >= floor
    segs = [ScoredSegment(role="customer", start_s=float(s), end_s=float(e),
                          emotion="negative" if n else "other", confidence=float(c),
                          is_negative=bool(n) and bool(k), abstained=not bool(k))
            for s, e, n, c, k in zip(side.start, side.end, side.negative, side.confidence, keep,
                                     strict=True)]
    stats = summarise_call(segs, speech={"customer": list(zip(side.start, side.end,
                                                               strict=True))},
                           duration_s=side.duration_s, streak_gap_s=STREAK_GAP_S)
    share, trend = stats.negative_share_customer, stats.customer_trend
    return (np.nan if share is None else float(share), float(stats.longest_negative_streak_s),
            np.nan if trend is None else float(trend))


def _fired(metrics: np.ndarray, grid: Grid) -> np.ndarray:
    """(n_grid, n_calls) escalation decisions; ``metrics`` (n_calls, 3). NaN never fires."""
    share, streak, trend = (np.nan_to_num(metrics[:, i], nan=-np.inf) for i in range(3))
    out = np.zeros((len(grid), len(metrics)), dtype=bool)
    for g, (s, k, t) in enumerate(grid):
        out[g] = (share >= s) | (streak >= k if k is not None else False) | (
            trend >= t if t is not None else False)
    return out


def _best(tp: np.ndarray, npred: np.ndarray, npos: int, *, n_rules: np.ndarray,
          target_precision: float = TARGET_PRECISION) -> int:
    """Index of the best grid point: where precision >= ``target_precision`` at recall >=
    :data:`TARGET_RECALL` is reachable, the highest recall at that precision (ties: higher
    precision, fewer escalations, fewer rules); else the highest F0.5, because a point that only
    reaches the precision by flagging a handful of calls is noise on other speakers."""
    precision = np.where(npred > 0, tp / np.maximum(npred, 1), 0.0)
    recall = tp / max(npos, 1)
    ok = precision >= target_precision
    if (ok & (recall >= TARGET_RECALL)).any():
        candidates = np.flatnonzero(ok)
        return int(min(candidates, key=lambda i: (-recall[i], -precision[i], npred[i],
                                                   n_rules[i])))
    f_half = 1.25 * precision * recall / np.maximum(0.25 * precision + recall, 1e-12)
    return min(range(len(tp)), key=lambda i: (-round(float(f_half[i]), 9), -precision[i],
                                              n_rules[i]))


def _speaker_folds(speakers: np.ndarray, *, n_folds: int, seed: int) -> np.ndarray:
    """Fold index per call; every speaker in one fold (speakers shuffled with ``seed``)."""
    unique = np.unique(speakers)
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of = {unique[i]: k % n_folds for k, i in enumerate(order)}
    return np.array([fold_of[s] for s in speakers])
