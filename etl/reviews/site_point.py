"""The site operating point: the escalation threshold (and rule) chosen on a site's reviewed
calls, stored per model version with what it was chosen on, and used by nightly scoring and
recompute (which point a model version uses is decided in :mod:`etl.scoring.point_in_use`).

:func:`calibrate` checks there are enough reviews, lets
:func:`etl.reviews.point_choice.choose_point` decide (a new threshold only where the reviews
show with 90 % confidence that it reaches the target precision; the point in use unless they
show with 90 % confidence that it misses it; the best recall among those), and stores the
result with the reviews it used, the estimates before and after and the reason.

Confidence floors are never changed: the stored summaries the sweep reads were computed with
the current floor.

:func:`revert` goes back to the model's own point by storing one more row, with no rules: the
rows are the audit trail, so none is ever updated or deleted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from etl.reviews.estimates import PointEstimate, ReviewedCalls, estimate_point, reviewed_calls
from etl.reviews.point_choice import (
    CONFIDENCE,
    MIN_SHOULD_ESCALATE,
    CalibrationError,
    choose_point,
)
from etl.reviews.queue import NOT_ESCALATED
from etl.scoring.escalation import resolve_operating_point, rules_as_data
from etl.scoring.point_in_use import point_in_use, site_point_record, stored_calibration

TARGET_PRECISION = 0.8
MIN_REVIEWS = 20
MIN_NOT_ESCALATED = 5


@dataclass(frozen=True, slots=True)
class CalibrationResult:
    model_version_id: int
    target_precision: float
    rules_before: list[dict[str, object]]
    rules_after: list[dict[str, object]]
    before: PointEstimate
    after: PointEstimate
    review_ids: list[int]
    n_candidates: int
    site_point_id: int | None = None  # None: not stored (dry run)
    changed: bool = field(default=True)
    confidence: float = CONFIDENCE  # one-sided, of the bounds the choice was made on
    reason: str = ""  # why this point (etl.reviews.point_choice)


@dataclass(frozen=True, slots=True)
class RevertResult:
    model_version_id: int
    retired_site_point_id: int
    rules_before: list[dict[str, object]]
    rules_after: list[dict[str, object]]  # the model's own point (or the built-in defaults)
    source_after: str  # "model" or "defaults"
    site_point_id: int  # the revert's own row


def _check_enough(calls: ReviewedCalls) -> None:
    n_pos = int(calls.truth.sum())
    n_not = int((calls.stratum == NOT_ESCALATED).sum())
    if len(calls) < MIN_REVIEWS or n_pos < MIN_SHOULD_ESCALATE or n_not < MIN_NOT_ESCALATED:
        raise CalibrationError(
            f"too few reviews to decide: {len(calls)} reviewed queue calls, {n_pos} that should "
            f"escalate, {n_not} from the not-escalated sample (need {MIN_REVIEWS}, "
            f"{MIN_SHOULD_ESCALATE} and {MIN_NOT_ESCALATED}); draw calls with `ser review "
            "queue` and judge them with `ser review add`")


def calibrate(session: Session, *, model_version_id: int,
              target_precision: float = TARGET_PRECISION, created_by: str,
              dry_run: bool = False, confidence: float = CONFIDENCE) -> CalibrationResult:
    """Choose (and, unless ``dry_run``, store) the site point of ``model_version_id``.

    Raises
    ------
    CalibrationError
        Too few reviews, or the reviews support no point (nothing is stored).
    """
    if not 0 < target_precision < 1:
        raise ValueError(f"target precision must be between 0 and 1, not {target_precision}")
    calls = reviewed_calls(session, model_version_id=model_version_id)
    _check_enough(calls)
    current = point_in_use(session, model_version_id)
    rules = list(current.rules)
    choice = choose_point(calls, rules, target_precision=target_precision,
                          confidence=confidence)
    w, truth = calls.weights, calls.truth
    before = estimate_point(calls.flags(rules), truth, w)
    after = estimate_point(choice.flagged, truth, w)
    result = CalibrationResult(
        model_version_id=model_version_id, target_precision=target_precision,
        rules_before=rules_as_data(rules), rules_after=rules_as_data(choice.rules),
        before=before, after=after, review_ids=sorted(calls.review_ids),
        n_candidates=choice.n_candidates, changed=not choice.kept, confidence=confidence,
        reason=choice.reason)
    if dry_run:
        return result
    point_id = session.execute(text("""
        INSERT INTO site_operating_points (model_version_id, rules, confidence_floor,
                                           target_precision, review_ids, before, after,
                                           created_by)
        VALUES (:m, CAST(:rules AS jsonb), :floor, :target, :ids, CAST(:before AS jsonb),
                CAST(:after AS jsonb), :by) RETURNING id"""), {
        "m": model_version_id, "rules": _json(result.rules_after),
        "floor": current.confidence_floor, "target": target_precision,
        "ids": result.review_ids,
        "before": _json({"source": current.source, "rules": result.rules_before,
                         **before.as_dict()}),
        "after": _json({**after.as_dict(), "decision": {
            "confidence": confidence, "kept": choice.kept, "reason": choice.reason}}),
        "by": created_by}).scalar_one()
    return replace(result, site_point_id=int(point_id))


def revert(session: Session, *, model_version_id: int, created_by: str) -> RevertResult:
    """Send ``model_version_id`` back to the model's own operating point from the next batch.

    Stores a ``site_operating_points`` row with no rules (what
    :func:`etl.scoring.point_in_use.site_point_record` reads as "no site point"), the model's
    floor, the retired point's target, and the rules before and after; earlier rows stay, so a
    later ``calibrate`` starts from the model's point and the history shows both steps.

    Raises
    ------
    CalibrationError
        The model version uses no site point (never calibrated, or reverted already).
    """
    site = site_point_record(session, model_version_id)
    if site is None:
        raise CalibrationError(f"model version {model_version_id} uses no site point: it already "
                               "scores with the model's own operating point")
    retired = int(site["site_point_id"])
    own = resolve_operating_point(None, stored_calibration(session, model_version_id))
    before, after = list(site["rules"]), rules_as_data(own.rules)
    point_id = session.execute(text("""
        INSERT INTO site_operating_points (model_version_id, rules, confidence_floor,
                                           target_precision, review_ids, before, after,
                                           created_by)
        SELECT model_version_id, '[]'::jsonb, :floor, target_precision, '{}',
               CAST(:before AS jsonb), CAST(:after AS jsonb), :by
        FROM site_operating_points WHERE id = :retired RETURNING id"""), {
        "floor": own.confidence_floor, "retired": retired, "by": created_by,
        "before": _json({"source": site["source"], "site_point_id": retired, "rules": before}),
        "after": _json({"source": own.source, "reverted": True, "rules": after})}).scalar_one()
    return RevertResult(model_version_id=model_version_id, retired_site_point_id=retired,
                        rules_before=before, rules_after=after, source_after=own.source,
                        site_point_id=int(point_id))


def _json(value: object) -> str:
    return json.dumps(value)


def _training_estimate(session: Session, model_version_id: int) -> dict[str, Any] | None:
    """Precision and recall the model's own point was chosen with at training time (on generated
    calls of its training speakers; the cross-validated figures where stored)."""
    point = session.execute(text(
        "SELECT params -> 'calibration' -> 'operating_point' FROM model_versions WHERE id = :m"),
        {"m": model_version_id}).scalar_one_or_none()
    if not isinstance(point, Mapping) or point.get("recall") is None:
        return None
    cv = point.get("cv_recall") is not None
    return {"precision": point.get("cv_precision" if cv else "precision"),
            "recall": point.get("cv_recall" if cv else "recall"),
            "n_calls": point.get("n_calls"), "cross_validated": cv}


def site_summary(session: Session, model_version_id: int) -> dict[str, Any]:
    """What the reviews say about the point in use, for ``ser models show`` and the reports:
    its source, the site-measured precision and recall with intervals, and review counts."""
    point = point_in_use(session, model_version_id)
    calls = reviewed_calls(session, model_version_id=model_version_id)
    site = site_point_record(session, model_version_id)
    latest = None if site is None else session.execute(text("""
        SELECT id, target_precision, created_by, created_at, cardinality(review_ids) AS n
        FROM site_operating_points WHERE id = :i"""),
        {"i": site["site_point_id"]}).mappings().first()
    n_all = int(session.execute(text(
        "SELECT count(*) FROM call_reviews WHERE model_version_id = :m"),
        {"m": model_version_id}).scalar_one())
    estimate = estimate_point(calls.flags(point.rules), calls.truth, calls.weights) \
        if len(calls) else None
    enough = True
    try:
        _check_enough(calls)
    except CalibrationError:
        enough = False
    return {"source": point.source, "rules": rules_as_data(point.rules),
            "training": _training_estimate(session, model_version_id),
            "n_reviews": n_all, "n_queue_reviews": len(calls),
            "enough_reviews": enough,
            "estimate": estimate.as_dict() if estimate is not None else None,
            "site_point": dict(latest) if latest is not None else None}
