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
    unique, speaker_index = np.unique([s.speaker for s in sides], return_inverse=True)
    if len(unique) < 3 or not any(len(s.start) for s in sides):
        return None
    truth = np.array([s.truth for s in sides])
    conf = np.concatenate([s.confidence for s in sides])
    floors = sorted({round(float(np.quantile(conf, q)), 3) if q > 0 else 0.0
                     for q in FLOOR_QUANTILES})
    grid = [(s, k, t) for s in SHARE_GRID for k in STREAK_GRID for t in TREND_GRID]
    n_rules = np.tile([1 + (k is not None) + (t is not None) for _, k, t in grid], len(floors))
    # decisions per (floor, grid point) and call: any of the point's rules fires; limits
    # (n_grid, 3) are their thresholds, a rule left out (None) never fires
    limits = np.array([[np.inf if v is None else v for v in point] for point in grid])
    fired = np.concatenate([(np.array([_metrics(s, f) for s in sides])[None] >= limits[:, None])
                            .any(axis=2) for f in floors])

    def best_on(mask: np.ndarray) -> int:
        tp = (fired[:, mask] & truth[mask]).sum(axis=1)
        return _best(tp, fired[:, mask].sum(axis=1), int(truth[mask].sum()), n_rules=n_rules)

    best = best_on(np.ones(len(sides), dtype=bool))
    tp, npred, npos = int((fired[best] & truth).sum()), int(fired[best].sum()), int(truth.sum())
    # every speaker's calls in one fold, speakers shuffled
    order = np.random.default_rng(seed + 1).permutation(len(unique))
    folds = (np.argsort(order) % min(4, len(unique)))[speaker_index]
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
        "n_speakers": len(unique), "protocol": protocol,
    }


def rules_for(share: float, streak: float | None, trend: float | None) -> list[dict[str, Any]]:
    """A grid point's rules as :func:`etl.scoring.escalation.rules_from_data` reads them."""
    rules = (
        ("customer_negative_share", "negative_share_customer", share,
         f"customer negative for {share:.0%} of their confident speech"),
        ("customer_negative_streak", "longest_negative_streak_s", streak,
         f"customer negative for {streak:g} s in a row" if streak is not None else ""),
        ("customer_worsening", "customer_trend", trend,
         "customer much more negative at the end than at the start"))
    return [{"name": name, "metric": metric, "op": ">=", "threshold": float(threshold),
             "description": description}
            for name, metric, threshold, description in rules if threshold is not None]


def _metrics(side: CustomerSide, floor: float) -> tuple[float, ...]:
    """(negative share, longest negative streak s, trend) of one customer side as scoring
    summarises it, segments below ``floor`` abstained; -inf (never fires) where scoring gives
    None. Speech regions and emotions only feed other numbers, so neither is passed."""
    segs = [ScoredSegment(role="customer", start_s=float(s), end_s=float(e), emotion="",
                          confidence=float(c), is_negative=bool(n), abstained=not keep)
            for s, e, n, c, keep in zip(side.start, side.end, side.negative, side.confidence,
                                        side.confidence >= floor, strict=True)]
    stats = summarise_call(segs, speech={}, duration_s=side.duration_s,
                           streak_gap_s=STREAK_GAP_S)
    return tuple(-np.inf if v is None else float(v) for v in (
        stats.negative_share_customer, stats.longest_negative_streak_s, stats.customer_trend))


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
        return int(min(np.flatnonzero(ok), key=lambda i: (-recall[i], -precision[i], npred[i],
                                                            n_rules[i])))
    f_half = 1.25 * precision * recall / np.maximum(0.25 * precision + recall, 1e-12)
    return min(range(len(tp)), key=lambda i: (-round(float(f_half[i]), 9), -precision[i],
                                              n_rules[i]))
