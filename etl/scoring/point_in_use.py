"""Which operating point a model version uses when no rules are configured: the latest site
point (chosen on a site's reviewed calls by ``ser calibrate``, :mod:`etl.reviews.site_point`)
once there is one, else the model's own (its training calibration record).

Nightly scoring (through ``etl.training.loading.load_version``), recompute
(:mod:`etl.scoring.recompute`) and the reviews all read the rule here. The rows of
``site_operating_points`` are history: the latest one of a model version decides, and a row with
no rules (``ser calibrate --revert``) sends it back to the model's own point.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from etl.scoring.escalation import OperatingPoint, resolve_operating_point

SITE = "site"


def site_point_record(session: Session, model_version_id: int) -> dict[str, Any] | None:
    """The site point a model version uses, in the form of a calibration record's
    ``operating_point`` (``source`` "site"); None when it has none or its latest row reverts
    to the model's own point."""
    row = session.execute(text("""
        SELECT id, rules, confidence_floor FROM site_operating_points
        WHERE model_version_id = :m ORDER BY id DESC LIMIT 1"""), {"m": model_version_id}).first()
    if row is None or not row.rules:
        return None
    return {"rules": list(row.rules), "confidence_floor": float(row.confidence_floor),
            "source": SITE, "site_point_id": int(row.id)}


def with_site_point(calibration: Mapping[str, Any] | None,
                    site: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A model's calibration record with its operating point replaced by the site's."""
    if site is None:
        return dict(calibration) if calibration is not None else None
    return {**(calibration or {}), "operating_point": dict(site)}


def stored_calibration(session: Session, model_version_id: int) -> dict[str, Any] | None:
    """The model version's own calibration record (``params["calibration"]``; None for models
    trained without one)."""
    record = session.execute(text(
        "SELECT params -> 'calibration' FROM model_versions WHERE id = :m"),
        {"m": model_version_id}).scalar_one_or_none()
    return dict(record) if isinstance(record, Mapping) else None


def calibration_in_use(session: Session, model_version_id: int) -> dict[str, Any] | None:
    """The model version's calibration record with the site point in it, if it has one: what
    :func:`etl.scoring.escalation.resolve_operating_point` takes for this version."""
    return with_site_point(stored_calibration(session, model_version_id),
                           site_point_record(session, model_version_id))


def point_in_use(session: Session, model_version_id: int) -> OperatingPoint:
    """The rules and floor scoring uses for a model version when no rules are configured: the
    site point once there is one, else the model's own."""
    return resolve_operating_point(None, calibration_in_use(session, model_version_id))
