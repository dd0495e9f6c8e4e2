"""Supervisors' reviews: verdicts on calls (``store``), the review queue that samples what to
listen to with known probabilities (``queue``), precision and recall estimated from the
verdicts (``estimates``) and the site operating point chosen on them (``site_point``).

Reviews are data users own: they are never updated or deleted here, copy what they need of the
call, and match the same recording scored again by its hash (docs/reviews.md).
"""

from etl.reviews.estimates import Estimate, PointEstimate, estimate_point, wilson_interval
from etl.reviews.queue import QueueDraw, draw_queue
from etl.reviews.site_point import (
    CalibrationError,
    CalibrationResult,
    calibrate,
    site_point_record,
    site_summary,
)
from etl.reviews.store import Verdict, record_reviews

__all__ = ["CalibrationError", "CalibrationResult", "Estimate", "PointEstimate", "QueueDraw",
           "Verdict", "calibrate", "draw_queue", "estimate_point", "record_reviews",
           "site_point_record", "site_summary", "wilson_interval"]
