"""The review queue: every escalated call of a span of nights plus a seeded simple random
sample of the calls not escalated, each stored with the probability it had of being drawn.
Within a review budget (:func:`split_budget`) the escalated calls are a seeded simple random
sample too when they alone would take more than half of it.

Those probabilities are what make the verdicts an unbiased sample of the site's calls
(:mod:`etl.reviews.estimates` weights each verdict by their inverse). A call already drawn into a
queue of the same model version is not drawn again, so queues cover disjoint sets of calls and
their weighted sums add up.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.types import Float, Integer, Text

ESCALATED = "escalated"
NOT_ESCALATED = "not_escalated"
# Within a budget the calls not escalated get at least this share of it: recall is estimated
# from them, and a handful of them beside many escalations leaves it unknown.
NOT_ESCALATED_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class QueueCall:
    call_id: int
    call_key: str
    batch_date: dt.date
    stratum: str
    probability: float
    escalation_rule: str | None
    reviewed: bool = False


@dataclass(frozen=True, slots=True)
class QueueDraw:
    queue_id: int | None  # None: nothing to draw
    model_version_id: int
    first_date: dt.date
    last_date: dt.date
    seed: int
    sample_size: int  # calls not escalated drawn
    n_escalated: int  # calls in the span (not drawn before) per stratum
    n_not_escalated: int
    calls: list[QueueCall] = field(default_factory=list)
    budget: int | None = None  # at most this many calls drawn in all; None: every escalation
    escalated_size: int | None = None  # escalated calls drawn (all of them without a budget)


# Scored calls of the model's batches in the span, with the decision they were scored with.
_POPULATION = text("""
    SELECT c.id, s.escalated
    FROM calls c
    JOIN batches b ON b.id = c.batch_id
    JOIN call_summaries s ON s.call_id = c.id AND s.model_version_id = b.model_version_id
    WHERE b.model_version_id = :m AND b.batch_date BETWEEN :first AND :last
      AND c.status = 'scored'
      AND NOT EXISTS (SELECT 1 FROM review_queue_calls qc
                      JOIN review_queues q ON q.id = qc.queue_id
                      WHERE qc.call_id = c.id AND q.model_version_id = :m)
    ORDER BY c.id""")

_INSERT_CALLS = text("""
    INSERT INTO review_queue_calls (queue_id, call_id, stratum, probability)
    SELECT :q, x.call_id, x.stratum, x.p FROM unnest(:ids, :strata, :ps) AS x(call_id, stratum, p)
""").bindparams(bindparam("ids", type_=ARRAY(Integer)), bindparam("strata", type_=ARRAY(Text)),
                bindparam("ps", type_=ARRAY(Float)))


def split_budget(budget: int, *, n_escalated: int, n_not_escalated: int) -> tuple[int, int]:
    """How many escalated and not escalated calls a queue of at most ``budget`` calls draws.

    Every escalation when they leave the calls not escalated at least
    ``NOT_ESCALATED_SHARE`` of the budget (or all of them); otherwise that share goes to the
    calls not escalated and the rest to a sample of the escalated. A stratum with fewer calls
    than its share leaves the rest to the other.
    """
    if budget < 0:
        raise ValueError(f"review budget must be 0 or more, not {budget}")
    floor = math.ceil(budget * NOT_ESCALATED_SHARE)
    n_other = min(n_not_escalated, max(budget - n_escalated, floor))
    return min(n_escalated, budget - n_other), n_other


def _sample(rng: np.random.Generator, ids: list[int], size: int) -> list[int]:
    if size >= len(ids):
        return list(ids)
    return [int(i) for i in np.sort(rng.choice(np.array(ids, dtype=np.int64), size=size,
                                               replace=False))]


def draw_queue(session: Session, *, model_version_id: int, first_date: dt.date,
               last_date: dt.date, sample_size: int, seed: int, created_by: str,
               budget: int | None = None) -> QueueDraw:
    """Draw and store a review queue over the batches of ``first_date``..``last_date`` scored
    with ``model_version_id``: all escalated calls (probability 1) and ``sample_size`` of the
    others drawn at random with ``seed`` (probability ``sample_size / N``, or all when fewer).

    With ``budget``, ``sample_size`` is not used: at most ``budget`` calls are drawn, split
    between the strata by :func:`split_budget`, each stratum a simple random sample whose
    calls have probability ``drawn / N`` of their stratum.
    """
    if sample_size < 0:
        raise ValueError(f"sample size must be 0 or more, not {sample_size}")
    rows = session.execute(_POPULATION, {"m": model_version_id, "first": first_date,
                                         "last": last_date}).all()
    escalated = [int(r.id) for r in rows if r.escalated]
    others = [int(r.id) for r in rows if not r.escalated]
    if budget is None:
        n_esc, n_pick = len(escalated), min(sample_size, len(others))
    else:
        n_esc, n_pick = split_budget(budget, n_escalated=len(escalated),
                                     n_not_escalated=len(others))
    rng = np.random.default_rng(seed)
    # the calls not escalated first, so a draw without a budget is the one it always was
    picked = _sample(rng, others, n_pick)
    esc_picked = _sample(rng, escalated, n_esc)
    p_esc = n_esc / len(escalated) if escalated else 1.0
    p_other = n_pick / len(others) if others else 1.0
    draw = QueueDraw(queue_id=None, model_version_id=model_version_id, first_date=first_date,
                     last_date=last_date, seed=seed, sample_size=n_pick if budget is not None
                     else sample_size, n_escalated=len(escalated), n_not_escalated=len(others),
                     budget=budget, escalated_size=n_esc)
    if not n_esc and not n_pick:
        return draw
    queue_id = int(session.execute(text("""
        INSERT INTO review_queues (model_version_id, first_date, last_date, seed, sample_size,
                                   n_escalated, n_not_escalated, created_by)
        VALUES (:m, :first, :last, :seed, :n, :ne, :nn, :by) RETURNING id"""), {
        "m": model_version_id, "first": first_date, "last": last_date, "seed": seed,
        "n": draw.sample_size, "ne": len(escalated), "nn": len(others),
        "by": created_by}).scalar_one())
    session.execute(_INSERT_CALLS, {
        "q": queue_id, "ids": esc_picked + picked,
        "strata": [ESCALATED] * n_esc + [NOT_ESCALATED] * n_pick,
        "ps": [p_esc] * n_esc + [p_other] * n_pick})
    return QueueDraw(**{**_fields(draw), "queue_id": queue_id,
                        "calls": queue_calls(session, queue_id=queue_id)})


def _fields(draw: QueueDraw) -> dict[str, object]:
    return {name: getattr(draw, name) for name in QueueDraw.__dataclass_fields__}


def queue_calls(session: Session, *, queue_id: int | None = None,
                model_version_id: int | None = None,
                pending_only: bool = False) -> list[QueueCall]:
    """The calls of one queue (or of every queue of a model version), escalated first; with
    ``pending_only`` those without a verdict on their recording yet."""
    rows = session.execute(text("""
        SELECT qc.call_id, c.call_key, b.batch_date, qc.stratum, qc.probability,
               s.escalation_rule,
               EXISTS (SELECT 1 FROM call_reviews r
                       WHERE r.call_id = c.id OR r.call_sha256 = c.sha256) AS reviewed
        FROM review_queue_calls qc
        JOIN review_queues q ON q.id = qc.queue_id
        JOIN calls c ON c.id = qc.call_id
        JOIN batches b ON b.id = c.batch_id
        LEFT JOIN call_summaries s ON s.call_id = c.id AND s.model_version_id = q.model_version_id
        WHERE (CAST(:q AS integer) IS NULL OR q.id = :q)
          AND (CAST(:m AS integer) IS NULL OR q.model_version_id = :m)
        ORDER BY qc.stratum, b.batch_date, c.call_key"""),
        {"q": queue_id, "m": model_version_id}).all()
    calls = [QueueCall(call_id=int(r.call_id), call_key=str(r.call_key), batch_date=r.batch_date,
                       stratum=str(r.stratum), probability=float(r.probability),
                       escalation_rule=r.escalation_rule, reviewed=bool(r.reviewed))
             for r in rows]
    return [c for c in calls if not c.reviewed] if pending_only else calls


def scored_nights(session: Session, *, model_version_id: int, nights: int) -> list[dt.date]:
    """The last ``nights`` batch dates with calls scored by ``model_version_id``, oldest first."""
    days = session.execute(text("""
        SELECT DISTINCT b.batch_date FROM batches b
        WHERE b.model_version_id = :m
          AND EXISTS (SELECT 1 FROM calls c WHERE c.batch_id = b.id AND c.status = 'scored')
        ORDER BY b.batch_date DESC LIMIT :n"""), {"m": model_version_id, "n": nights}).scalars()
    return sorted(days)


def latest_scoring_model(session: Session) -> int | None:
    """The model version of the most recent batch with scored calls (what nightly uses now)."""
    return session.execute(text("""
        SELECT b.model_version_id FROM batches b
        WHERE EXISTS (SELECT 1 FROM calls c WHERE c.batch_id = b.id AND c.status = 'scored')
        ORDER BY b.batch_date DESC, b.id DESC LIMIT 1""")).scalar_one_or_none()
