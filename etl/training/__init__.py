"""Training: model families (``models``), speaker normalisation (``normalise``); the training
pipeline by step: ``config``, ``dataset``, ``folds``, ``fitting``, ``evaluation``,
``cv_calibration``, run in order by ``train``; calibration maps (``calibration``), the escalation
operating point (the ``operating_point`` subpackage), safe artifacts (``artifacts``), the model registry
(``registry``, with ``provenance``), loading a registered model (``loading``), choosing the model
for the audio's channel (``channel_selection``) and prediction on files (``predict``).

``__all__`` lists the names callers outside ``etl.training`` use; each is imported from its
module on first use (``etl.public``), so importing one step does not load them all.
"""

from etl.public import Exports

_EXPORTS = Exports(__name__, {
    "etl.training.artifacts": ("ArtifactError", "load_bundle"),
    "etl.training.channel_selection": ("channel_alias", "resolve_scoring_model"),
    "etl.training.config": (
        "CALL_SPEAKER_PRIOR_ROWS", "DEFAULT_FOLDS", "DEFAULT_SEED", "TrainConfig",
    ),
    "etl.training.dataset": (
        "attach_augmented", "augmented_feature_set", "choose_label_scheme",
        "compute_missing_augmented", "load_dataset", "resolve_feature_set", "training_set_hash",
        "TrainingDataError",
    ),
    "etl.training.fitting": (
        "cross_validate", "fit_estimator", "prepare_features", "single_threaded_blas",
    ),
    "etl.training.folds": ("folds_hash", "make_folds"),
    "etl.training.loading": ("feature_spec_for", "load_model", "load_version", "LoadedModel"),
    "etl.training.models": ("DEFAULT_ALGORITHM", "default_algorithm", "get_algorithm"),
    "etl.training.normalise": ("normalise_per_speaker", "speaker_population"),
    "etl.training.predict": ("SPEAKER_BY", "expand_paths", "predict_files"),
    "etl.training.registry": (
        "DEFAULT_ALIAS", "alias_target", "describe_version", "list_versions",
        "ModelNotFoundError", "promote_if_better", "resolve_version", "set_alias",
    ),
    "etl.training.train": (
        "default_model_name", "Preflight", "preflight", "train_model", "TrainResult",
    ),
})
__all__ = _EXPORTS.names  # noqa: PLE0605 - the names above, listed once
__getattr__ = _EXPORTS.resolve
