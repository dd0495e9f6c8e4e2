"""Precision and recall of an escalation decision, estimated from reviewed calls drawn with known
probabilities (:mod:`etl.reviews.queue`).

Each reviewed call stands for ``1 / probability`` calls of its stratum, scaled up by
``drawn / reviewed`` within its queue and stratum for the calls drawn but not judged yet
(treated as missing at random). Precision and recall are ratios of such weighted sums; their
intervals are Wilson score intervals on the Kish effective sample size of the ratio's
denominator, which stay inside [0, 1] and do not collapse at 0 or 1 on a few dozen reviews.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from etl.scoring.escalation import METRICS, EscalationRule

LEVEL = 0.9


@dataclass(frozen=True, slots=True)
class Estimate:
    """A proportion with its interval at ``level``; ``n`` is the effective sample size."""

    value: float
    low: float
    high: float
    n: float
    level: float = LEVEL


@dataclass(frozen=True, slots=True)
class PointEstimate:
    """What the reviews say about one operating point."""

    precision: Estimate | None  # None: it flags none of the reviewed calls
    recall: Estimate | None  # None: no reviewed call should escalate
    n_reviews: int
    n_should_escalate: int  # reviewed calls whose verdict says they should escalate
    n_flagged: int  # reviewed calls the point flags

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def wilson_interval(p: float, n: float, *, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` seen on ``n`` (effective) trials."""
    if n <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + level / 2)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0))
    return max(0.0, centre - half), min(1.0, centre + half)


def _ratio(num: np.ndarray, den: np.ndarray, w: np.ndarray, level: float) -> Estimate | None:
    """Weighted share of ``num`` among ``den`` (boolean masks) with its interval."""
    wd = w[den]
    total = float(wd.sum())
    if total <= 0:
        return None
    p = float(w[den & num].sum()) / total
    n_eff = total * total / float((wd * wd).sum())
    low, high = wilson_interval(p, n_eff, level=level)
    return Estimate(value=p, low=low, high=high, n=n_eff, level=level)


def estimate_point(flagged: np.ndarray, truth: np.ndarray, weights: np.ndarray, *,
                   level: float = LEVEL) -> PointEstimate:
    """Weighted precision and recall of ``flagged`` against the reviewers' ``truth``.

    Parameters
    ----------
    flagged, truth
        (n,) booleans per reviewed call: the point escalates it / the verdict says it should.
    weights
        (n,) inverse inclusion probabilities (see the module docstring).
    """
    flagged, truth = np.asarray(flagged, bool), np.asarray(truth, bool)
    w = np.asarray(weights, float)
    return PointEstimate(precision=_ratio(truth, flagged, w, level),
                         recall=_ratio(flagged, truth, w, level),
                         n_reviews=len(w), n_should_escalate=int(truth.sum()),
                         n_flagged=int(flagged.sum()))


@dataclass(frozen=True, slots=True)
class ReviewedCalls:
    """The queue calls of one model version that have a verdict, with weights and metrics."""

    review_ids: list[int]
    call_ids: np.ndarray  # (n,)
    stratum: np.ndarray  # (n,) "escalated" / "not_escalated"
    weights: np.ndarray  # (n,)
    truth: np.ndarray  # (n,) the verdict says: should escalate
    escalated: np.ndarray  # (n,) the decision the call was scored with
    values: list[dict[str, float | None]]  # per call, every rule metric

    def __len__(self) -> int:
        return len(self.review_ids)

    def metric(self, name: str) -> np.ndarray:
        """(n,) float values of ``name`` (NaN where None)."""
        return np.array([np.nan if v[name] is None else float(v[name])  # type: ignore[arg-type]
                         for v in self.values], dtype=float)

    def flags(self, rules: Sequence[EscalationRule]) -> np.ndarray:
        """(n,) whether ``rules`` escalate each call (as :func:`etl.scoring.escalation.evaluate`)."""
        return np.array([any(r.fires(v) for r in rules) for v in self.values], dtype=bool)


_METRICS = sorted(METRICS)

# The latest verdict on each drawn call's recording (by its hash, else the call itself), and
# the drawn / reviewed counts per queue and stratum behind the non-response adjustment.
_REVIEWED = f"""
WITH q AS (
    SELECT qc.queue_id, qc.call_id, qc.stratum, qc.probability, c.sha256
    FROM review_queue_calls qc
    JOIN review_queues rq ON rq.id = qc.queue_id
    JOIN calls c ON c.id = qc.call_id
    WHERE rq.model_version_id = :m
), v AS (
    SELECT DISTINCT ON (q.queue_id, q.call_id) q.queue_id, q.call_id, r.review_id,
           r.should_escalate
    FROM q JOIN analytics.reviews r
         ON r.is_latest AND (r.call_id = q.call_id OR r.call_sha256 = q.sha256)
    ORDER BY q.queue_id, q.call_id, r.review_id DESC
), counts AS (
    SELECT q.queue_id, q.stratum, count(*) AS drawn, count(v.review_id) AS reviewed
    FROM q LEFT JOIN v USING (queue_id, call_id)
    GROUP BY q.queue_id, q.stratum
)
SELECT v.review_id, q.call_id, q.stratum,
       (1.0 / q.probability) * counts.drawn / counts.reviewed AS weight,
       v.should_escalate, s.escalated, {", ".join(f"s.{m}" for m in _METRICS)}
FROM q
JOIN v USING (queue_id, call_id)
JOIN counts USING (queue_id, stratum)
JOIN call_summaries s ON s.call_id = q.call_id AND s.model_version_id = :m
ORDER BY q.call_id
"""


def reviewed_calls(session: Session, *, model_version_id: int) -> ReviewedCalls:
    """Every call drawn into a review queue of ``model_version_id`` whose recording has a
    verdict, weighted for estimation. Reviews outside a queue carry no known probability and
    are left out."""
    rows = session.execute(text(_REVIEWED), {"m": model_version_id}).mappings().all()
    return ReviewedCalls(
        review_ids=[int(r["review_id"]) for r in rows],
        call_ids=np.array([int(r["call_id"]) for r in rows], dtype=np.int64),
        stratum=np.array([str(r["stratum"]) for r in rows], dtype=object),
        weights=np.array([float(r["weight"]) for r in rows], dtype=float),
        truth=np.array([bool(r["should_escalate"]) for r in rows], dtype=bool),
        escalated=np.array([bool(r["escalated"]) for r in rows], dtype=bool),
        values=[{m: (None if r[m] is None else float(r[m])) for m in _METRICS} for r in rows])
