"""Scoring one call: segmentation, per-segment scores, per-call summaries, conversation metrics,
escalation rules and the operating point a model version uses, recomputation from stored
segments and the daily rollup.

``__all__`` lists the names callers outside ``etl.scoring`` use; each is imported from its module
on first use (``etl.public``).
"""

from etl.public import Exports

_EXPORTS = Exports(__name__, {
    "etl.scoring.audio_passes": ("CallError",),
    "etl.scoring.config": ("ScoringConfig",),
    "etl.scoring.escalation": (
        "COMPARISONS", "DEFAULT_RULES", "METRICS", "EscalationRule", "load_rules",
        "OperatingPoint",
        "read_rules", "resolve_operating_point", "rules_as_data", "rules_from_data",
    ),
    "etl.scoring.point_in_use": (
        "calibration_in_use", "point_in_use", "site_point_record", "stored_calibration",
        "with_site_point",
    ),
    "etl.scoring.recompute": ("copy_rows", "replace_events", "run_recompute", "write_summary"),
    "etl.scoring.recording": ("CallResult", "score_recording"),
    "etl.scoring.role_prior": ("agent_prior_setting",),
    "etl.scoring.rollup": ("count_prunable", "prune_segments", "refresh_rollup"),
    "etl.scoring.rules_preview": ("preview_rules",),
    "etl.scoring.summaries": ("ScoredSegment", "summarise_call"),
})
__all__ = _EXPORTS.names  # noqa: PLE0605 - the names above, listed once
__getattr__ = _EXPORTS.resolve
