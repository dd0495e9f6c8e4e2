"""Runs: the batch and feature runners (paging, worker processes or a Dask cluster, progress),
batch discovery and the database claims that keep every call scored exactly once, and the demo's
nights of generated calls (``demo_calls``).

``__all__`` lists the names callers outside ``etl.runs`` use; each is imported from its module on
first use (``etl.public``).
"""

from etl.public import Exports

_EXPORTS = Exports(__name__, {
    "etl.runs.batch": (
        "DatabaseLostError", "is_connection_error", "score_batch", "WorkerLostError",
    ),
    "etl.runs.cluster": ("ClusterError",),
    "etl.runs.cluster_scoring": ("score_claims_on_cluster",),
    "etl.runs.demo_calls": ("CallNight", "generate_nights"),
    "etl.runs.features": ("FeatureRunConfig", "run_feature_sets", "run_features"),
    "etl.runs.inbox_confinement": ("confined_inbox",),
    "etl.runs.outcomes": ("first_line",),
})
__all__ = _EXPORTS.names  # noqa: PLE0605 - the names above, listed once
__getattr__ = _EXPORTS.resolve
