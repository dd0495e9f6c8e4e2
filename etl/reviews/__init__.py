"""Supervisors' reviews: verdicts on calls (``store``), the review queue that samples what to
listen to with known probabilities (``queue``), precision and recall estimated from the
verdicts (``estimates``), the rule that decides which point they support (``point_choice``)
and the site operating point stored on it (``site_point``; which point a model version uses
is ``etl.scoring.point_in_use``'s rule).

Reviews are data users own: they are never updated or deleted here, copy what they need of the
call, and match the same recording scored again by its hash (docs/reviews.md).

``__all__`` lists the names callers outside ``etl.reviews`` use; each is imported from its module
on first use (``etl.public``).
"""

from etl.public import Exports

_EXPORTS = Exports(__name__, {
    "etl.reviews.estimates": (
        "Estimate", "PointEstimate", "ReviewedCalls", "estimate_point", "reviewed_calls",
        "wilson_interval",
    ),
    "etl.reviews.point_choice": (
        "CONFIDENCE", "CalibrationError", "SiteChoice", "choose_point",
    ),
    "etl.reviews.queue": (
        "QueueDraw", "draw_queue", "latest_scoring_model", "queue_calls", "scored_nights",
        "split_budget",
    ),
    "etl.reviews.site_point": (
        "CalibrationResult", "calibrate", "revert", "RevertResult", "site_summary",
    ),
    "etl.reviews.store": ("Verdict", "record_reviews"),
})
__all__ = _EXPORTS.names  # noqa: PLE0605 - the names above, listed once
__getattr__ = _EXPORTS.resolve
