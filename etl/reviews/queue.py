"""The review queue: every escalated call of a span of nights plus a seeded simple random
sample of the calls not escalated, each stored with the probability it had of being drawn.

Those probabilities are what make the verdicts an unbiased sample of the site's calls
(:mod:`etl.reviews.estimates` weights each verdict by their inverse). A call already drawn into a
queue of the same model version is not drawn again, so queues cover disjoint sets of calls and
their weighted sums add up.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.types import Float, Integer, Text

ESCALATED = "escalated"
NOT_ESCALATED = "not_escalated"


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
    sample_size: int
    n_escalated: int  # calls in the span (not drawn before) per stratum
    n_not_escalated: int
    calls: list[QueueCall] = field(default_factory=list)


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


def draw_queue(session: Session, *, model_version_id: int, first_date: dt.date,
               last_date: dt.date, sample_size: int, seed: int, created_by: str) -> QueueDraw:
    """Draw and store a review queue over the batches of ``first_date``..``last_date`` scored
    with ``model_version_id``: all escalated calls (probability 1) and ``sample_size`` of the
    others drawn at random with ``seed`` (probability ``sample_size / N``, or all when fewer).
    """
    if sample_size < 0:
        raise ValueError(f"sample size must be 0 or more, not {sample_size}")
    rows = session.execute(_POPULATION, {"m": model_version_id, "first": first_date,
                                         "last": last_date}).all()
    escalated = [int(r.id) for r in rows if r.escalated]
    others = np.array([int(r.id) for r in rows if not r.escalated], dtype=np.int64)
    n_pick = min(sample_size, len(others))
    picked = np.sort(np.random.default_rng(seed).choice(others, size=n_pick, replace=False)) \
        if n_pick else np.array([], dtype=np.int64)
    p_other = n_pick / len(others) if len(others) else 1.0
    draw = QueueDraw(queue_id=None, model_version_id=model_version_id, first_date=first_date,
                     last_date=last_date, seed=seed, sample_size=sample_size,
                     n_escalated=len(escalated), n_not_escalated=len(others))
    if not escalated and not n_pick:
        return draw
    queue_id = int(session.execute(text("""
        INSERT INTO review_queues (model_version_id, first_date, last_date, seed, sample_size,
                                   n_escalated, n_not_escalated, created_by)
        VALUES (:m, :first, :last, :seed, :n, :ne, :nn, :by) RETURNING id"""), {
        "m": model_version_id, "first": first_date, "last": last_date, "seed": seed,
        "n": sample_size, "ne": len(escalated), "nn": len(others), "by": created_by}).scalar_one())
    ids = escalated + [int(i) for i in picked]
    session.execute(_INSERT_CALLS, {
        "q": queue_id, "ids": ids,
        "strata": [ESCALATED] * len(escalated) + [NOT_ESCALATED] * n_pick,
        "ps": [1.0] * len(escalated) + [p_other] * n_pick})
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
