"""Which escalation point a site's reviews support: the rule ``ser calibrate`` decides by.

A site has a few dozen reviewed calls and the sweep tries dozens of thresholds. Taking the best
recall among those whose *estimated* precision reaches the target favours thresholds whose
estimate was lucky (the winner's curse: on simulated sites, ``bench/site_calibration.py
--study``, the chosen point's estimate overstated its precision by 0.02-0.05, by 0.18 where
the truth hardly allows the target), and an estimate on some 25 flagged calls is give or take
0.08 anyway: a third to a half of the points so chosen fell short of the target. So the rule
asks the reviews for evidence at :data:`CONFIDENCE`, a conventional one-sided 90 % (set by
convention, not tuned), both ways:

- a new threshold qualifies only where the reviews show that its precision reaches the target:
  the one-sided lower bound (:func:`bounds`) is at least the target, and it flags at least
  :data:`MIN_SHOULD_ESCALATE` reviewed calls that should escalate;
- the point in use qualifies unless the reviews show that it misses the target (its one-sided
  upper bound is below it): changing the point needs evidence, keeping it does not, so a point
  that may well be right is not traded for less recall;
- among the qualifying points the best recall wins (ties: the point in use, then higher
  precision, keeping the other rules, nearer the old threshold): a point that is not shown to
  miss is left for more recall only, not for precision beyond the target. None qualifies:
  :class:`CalibrationError`, and the point in use stays.

The bounds are the ends of a Wilson interval at ``2 * confidence - 1`` on the Kish effective
size of the flagged calls (:mod:`etl.reviews.estimates`), which treats the reviewed nights as a
sample of the nights to come. ``confidence=0.5`` decides on the estimates alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from etl.reviews.estimates import ReviewedCalls, wilson_interval
from etl.scoring.escalation import COMPARISONS, EscalationRule, rules_as_data

CONFIDENCE = 0.9
MIN_SHOULD_ESCALATE = 5


class CalibrationError(ValueError):
    """Too few reviews, no point the reviews support, or no site point to revert: the point in
    use stays."""


@dataclass(frozen=True, slots=True)
class Bounds:
    """A point's weighted precision and recall on the reviews, with one-sided bounds of the
    precision at ``confidence``."""

    precision: float | None  # None: it flags none of the reviewed calls
    low: float  # with ``confidence``, the precision is at least this
    high: float  # with ``confidence``, at most this
    recall: float
    n_right: int  # reviewed calls it flags that should escalate
    confidence: float


def bounds(flagged: np.ndarray, truth: np.ndarray, weights: np.ndarray, *,
           confidence: float = CONFIDENCE) -> Bounds:
    """Precision bounds and recall of ``flagged`` ((n,) booleans) against ``truth`` ((n,)
    booleans), weighted by ``weights`` ((n,) inverse inclusion probabilities)."""
    if not 0.5 <= confidence < 1:
        raise ValueError(f"confidence must be at least 0.5 and below 1, not {confidence}")
    right = flagged & truth
    should = float(weights[truth].sum())
    recall = float(weights[right].sum()) / should if should > 0 else 0.0
    wf = weights[flagged]
    total = float(wf.sum())
    if total <= 0:
        return Bounds(precision=None, low=0.0, high=1.0, recall=recall, n_right=0,
                      confidence=confidence)
    p = float(weights[right].sum()) / total
    low, high = wilson_interval(p, total * total / float((wf * wf).sum()),
                                level=2 * confidence - 1)
    return Bounds(precision=p, low=low, high=high, recall=recall, n_right=int(right.sum()),
                  confidence=confidence)


@dataclass(frozen=True, slots=True)
class SiteChoice:
    """The point the reviews support, and why."""

    rules: list[EscalationRule]
    flagged: np.ndarray  # (n,) the reviewed calls ``rules`` flag
    kept: bool  # the point in use stays
    before: Bounds  # the point in use
    after: Bounds  # the chosen point
    n_candidates: int
    reason: str  # one sentence a user can read


def _midpoint(values: np.ndarray, t: float, op: str) -> float:
    """A threshold between ``t`` and the next reviewed value on the not-flagged side."""
    if op in (">=", ">"):
        below = values[values < t]
        return float((below.max() + t) / 2) if below.size and op == ">=" else float(t)
    above = values[values > t]
    return float((above.min() + t) / 2) if above.size and op == "<=" else float(t)


def _pct(confidence: float) -> str:
    return f"{confidence:.0%}"


def _before(b: Bounds, target: float) -> str:
    c = _pct(b.confidence)
    if b.precision is None:
        return (f"the point in use flags none of the reviewed calls, so they cannot show that "
                f"it misses precision {target:g}")
    if b.high < target:
        return (f"the reviews show that the point in use misses precision {target:g} "
                f"({b.precision:.2f}; at most {b.high:.2f} with {c} confidence)")
    if b.low >= target:
        return (f"the reviews show that the point in use reaches precision {target:g} "
                f"({b.precision:.2f}; at least {b.low:.2f} with {c} confidence)")
    return (f"the reviews show neither that the point in use reaches precision {target:g} nor "
            f"that it misses it ({b.precision:.2f}; between {b.low:.2f} and {b.high:.2f} with "
            f"{c} confidence each way)")


def choose_point(calls: ReviewedCalls, rules: Sequence[EscalationRule], *,
                 target_precision: float, confidence: float = CONFIDENCE) -> SiteChoice:
    """The point the reviewed ``calls`` support for the point in use ``rules`` (the module
    docstring has the rule).

    For each flat rule of ``rules``, every threshold that splits the reviewed calls
    differently is a candidate, with the other rules kept and with that rule alone; the
    threshold sits midway between the reviewed values it separates, so it flags the reviewed
    calls exactly as evaluated without hugging one of them.

    Raises
    ------
    CalibrationError
        The point in use misses the target and no candidate reaches it, both as the reviews
        show at ``confidence``.
    """
    rules = list(rules)
    w, truth = calls.weights, calls.truth
    fires = np.array([calls.flags([r]) for r in rules]).reshape(len(rules), len(calls))
    current_flags = fires.any(axis=0)
    current = bounds(current_flags, truth, w, confidence=confidence)
    # (recall, is the point in use, precision, keeps the other rules, -distance) ranks the
    # qualifying points
    best: tuple[tuple[float, int, float, int, float], list[EscalationRule], np.ndarray,
                Bounds] | None = None
    if current.precision is None or current.high >= target_precision:
        best = ((current.recall, 1, current.precision or 0.0, 1, 0.0), rules, current_flags,
                current)
    n_candidates = 0
    strongest: tuple[float, str] | None = None  # the best lower bound any candidate reaches
    # only the point's own rules: every other metric swept is one more chance for a threshold
    # that fits the reviews by luck
    for i, rule in [(i, r) for i, r in enumerate(rules) if r.when is None]:
        x = calls.metric(rule.metric)
        known = ~np.isnan(x)
        others = np.delete(fires, i, axis=0).any(axis=0) if len(rules) > 1 \
            else np.zeros(len(calls), bool)
        for t in np.unique(x[known]):
            hit = known & COMPARISONS[rule.op](np.where(known, x, 0.0), t)
            threshold = _midpoint(x[known], float(t), rule.op)
            for keep in (True, False):
                flagged = hit | others if keep else hit
                n_candidates += 1
                b = bounds(flagged, truth, w, confidence=confidence)
                if b.precision is None or b.n_right < MIN_SHOULD_ESCALATE:
                    continue
                new = replace(rule, threshold=threshold)
                chosen = [new if j == i else other for j, other in enumerate(rules)] \
                    if keep else [new]
                if strongest is None or b.low > strongest[0]:
                    strongest = (b.low, "; ".join(str(r) for r in chosen))
                key = (b.recall, 0, b.precision, int(keep), -abs(threshold - rule.threshold))
                if b.low >= target_precision and (best is None or key > best[0]):
                    best = (key, chosen, flagged, b)
    said = _before(current, target_precision)
    c = _pct(confidence)
    if best is None:
        most = "" if strongest is None else (
            f"; the best any shows with {c} confidence is precision {strongest[0]:.2f}, "
            f"at {strongest[1]}")
        raise CalibrationError(
            f"{said}, and no threshold reaches it with {c} confidence on {len(calls)} reviewed "
            f"calls ({n_candidates} tried{most}); the point in use stays: review the calls of "
            "more nights (`ser review queue`) or lower --target-precision")
    _, chosen, flagged, after = best
    kept = rules_as_data(chosen) == rules_as_data(rules)
    if kept:
        reason = f"{said}, and no threshold with more recall reaches it with {c} confidence"
    else:
        reason = (f"{said}; the new point reaches it with {c} confidence ({after.precision:.2f}; "
                  f"at least {after.low:.2f}) with the best recall of those that do")
    return SiteChoice(rules=chosen, flagged=flagged, kept=kept, before=current, after=after,
                      n_candidates=n_candidates, reason=reason)
