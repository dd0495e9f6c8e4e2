"""Speaker-independent training and evaluation on features stored in the database.

Pipeline (``train_model``):

1. ``load_dataset``: current clips whose canonical emotion the label scheme maps (scheme rows
   come from ``label_scheme_classes``), their actors (the grouping and the demographics) and their
   whole-clip feature rows of one feature set version. Missing features, empty classes and too
   few actors are :class:`TrainingDataError` with a message naming what is missing.
2. ``make_folds``: StratifiedGroupKFold by actor with a fixed seed; the assignment is hashed
   (``folds_sha256``) so versions evaluated on identical folds can be compared.
3. ``cross_validate``: per outer fold, optional per-speaker normalisation (each speaker with its
   own statistics; label-free, so legitimate for held-out actors), a small grid search on inner
   *actor-grouped* folds of the training part only (nested), then out-of-fold probabilities.
4. ``evaluation_metrics``: UAR (headline), accuracy, macro-F1, per-class precision/recall,
   confusion matrix, one-vs-rest ROC AUC with curve points, per fold and pooled, and pooled by
   sex / age band / race where the actors table has them; permutation feature importance on the
   held-out folds.
5. The final model is searched and fitted on all rows, serialised (etl/training/artifacts.py) and
   registered with everything above (etl/training/registry.py), with a probability calibration fitted
   on the out-of-fold probabilities (etl/training/calibration.py) in ``params["calibration"]``.

The steps live in modules by concern: ``config`` (:class:`TrainConfig`), ``dataset`` (1, the
phone-line copies), ``folds`` (2), ``fitting`` (3 and the final fit), ``evaluation`` (4),
``cv_calibration`` (calibration and the escalation operating point on out-of-fold
probabilities). This module runs them in order and registers the result; callers import each
step's names from its own module (or from ``etl.training``).

Phone-robust training (``TrainConfig.augment``, the ``ser train`` default): every clip also
brings its phone-line copies (feature set ``rich+phone``, `etl.audio.phone_line`; computed here when
missing). Folds are made on the clips, and a copy always sits in its clip's fold, so no copy
of a held-out speaker is ever trained on; metrics are reported on the held-out clips as recorded
(``uar``, comparable with studio models on the same folds) and on their phone copies
(``uar_phone``). Speaker normalisation groups rows by (actor, variant): the copies of a speaker
are normalised together, as one call channel is at scoring time.

Nothing here commits; nothing here imports Prefect.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sqlalchemy.orm import Session

from etl.training.artifacts import dump_bundle, from_estimator
from etl.training.config import TrainConfig
from etl.training.cv_calibration import calibration_record
from etl.training.dataset import (
    Dataset,
    Stacked,
    attach_augmented,
    augmented_feature_set,
    choose_label_scheme,
    compute_missing_augmented,
    load_dataset,
    resolve_feature_set,
    stack_rows,
    training_set_hash,
)
from etl.training.evaluation import evaluation_metrics, permutation_importance_cv, phone_metric_rows
from etl.training.fitting import (
    INNER_FOLDS,
    CVResult,
    cross_validate,
    fit_estimator,
    jsonable,
    prepare_features,
    random_split_diagnostic,
    shallow_params,
    single_threaded_blas,
)
from etl.training.folds import folds_hash, make_folds
from etl.training.models import Algorithm, get_algorithm
from etl.training.normalise import speaker_population
from etl.training.registry import register_model_version

__all__ = ["Preflight", "TrainResult", "default_model_name", "preflight", "train_model"]

log = logging.getLogger(__name__)

DEFAULT_CONFIG = TrainConfig()  # frozen: safe as a default argument

# The pooled (all folds, no class, no group) metrics a TrainResult reports.
POOLED_METRICS = ("uar", "accuracy", "macro_f1", "roc_auc_macro", "diagnostic_random_split_uar",
                  "uar_phone", "accuracy_phone", "macro_f1_phone", "uar_phone_mean")


@dataclass
class TrainResult:
    model_version_id: int
    name: str
    version: int
    algorithm: str
    label_scheme: str
    feature_set_id: int
    classes: list[str]
    n_clips: int
    n_actors: int
    cv_uar: float
    cv_uar_std: float
    pooled: dict[str, float]
    folds_sha256: str
    params: dict[str, Any]
    channel: str = "studio"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_model_name(label_scheme: str, feature_set: str, channel: str,
                       augment: bool = False) -> str:
    return f"ser-{label_scheme}-{feature_set}{'+phone' if augment else ''}-{channel}"


@dataclass(frozen=True, slots=True)
class Preflight:
    label_scheme: str
    feature_set_id: int
    n_clips: int
    n_actors: int
    classes: list[str]


def preflight(session: Session, config: TrainConfig) -> Preflight:
    """Every data check of :func:`train_model` without fitting anything (cheap; for the CLI).

    Raises TrainingDataError exactly when ``train_model`` would for lack of data. May create the
    feature_sets row of the current parameters: run it in a transaction you roll back.
    """
    get_algorithm(config.algorithm)
    scheme = config.label_scheme or choose_label_scheme(session, corpus=config.corpus)
    if config.augment:
        augmented_feature_set(session, config)  # the combination is valid (copies: computed later)
    fs_id = resolve_feature_set(session, name=config.feature_set, channel=config.channel)
    dataset = load_dataset(session, label_scheme=scheme, feature_set_id=fs_id,
                           corpus=config.corpus, n_folds=config.n_folds)
    return Preflight(scheme, fs_id, len(dataset.y), dataset.n_actors, dataset.classes)


def train_model(
    session: Session,
    config: TrainConfig = DEFAULT_CONFIG,
    *,
    name: str | None = None,
    feature_set_id: int | None = None,
    progress: bool = False,
) -> TrainResult:
    """Evaluate ``config`` speaker-independently, fit the final model on all rows and register it.

    Parameters
    ----------
    session : Session
        Open session; the caller commits (a TrainingDataError leaves nothing to commit).
    config : TrainConfig
    name : str, optional
        Registered model name; default ``ser-<scheme>-<feature set>-<channel>``.
    feature_set_id : int, optional
        Train on this feature_sets row instead of the current version of ``config.feature_set``.

    Raises
    ------
    TrainingDataError
        The data cannot support training (see :func:`load_dataset`); nothing is registered.
    """
    with single_threaded_blas():
        return _train_model(session, config, name=name, feature_set_id=feature_set_id,
                            progress=progress)


@dataclass(frozen=True, slots=True)
class FinalFit:
    """The model fitted on every row (with the grid parameters its search chose)."""

    estimator: BaseEstimator
    chosen: dict[str, Any]
    rows: Stacked
    n_features: int


def _train_model(
    session: Session, config: TrainConfig, *, name: str | None, feature_set_id: int | None,
    progress: bool,
) -> TrainResult:
    algorithm = get_algorithm(config.algorithm)
    if config.class_balance and not algorithm.supports_balance:
        log.info("%s has no class weights; training without class balancing", algorithm.name)
    scheme = config.label_scheme or choose_label_scheme(session, corpus=config.corpus)
    if feature_set_id is None:
        feature_set_id = resolve_feature_set(session, name=config.feature_set,
                                             channel=config.channel)
    dataset = _training_dataset(session, config, scheme=scheme, feature_set_id=feature_set_id,
                                progress=progress)
    folds = make_folds(dataset.y, dataset.groups, n_folds=config.n_folds, seed=config.seed)
    cv = cross_validate(dataset, config, folds, progress=progress)
    metrics = evaluation_metrics(dataset, cv)
    metrics.extend(phone_metric_rows(dataset, cv))
    if config.feature_importance:
        metrics.extend(permutation_importance_cv(dataset, config, cv))
    calibration = calibration_record(dataset, cv, config, session=session, progress=progress)
    final = _fit_final(dataset, config, algorithm)
    if config.diagnostic_random_split:
        metrics.append(random_split_diagnostic(dataset, config, final.chosen))
    params = _model_params(dataset, config, algorithm, cv=cv, final=final,
                           calibration=calibration)
    fsha = folds_hash(dataset.clip_ids, folds)
    model_name = name or default_model_name(scheme, config.feature_set, config.channel,
                                            augment=dataset.augmented is not None)
    fold_uars = [m["value"] for m in metrics if m["metric"] == "uar" and m.get("fold") is not None
                 and m.get("group_name") is None]
    cv_uar = float(np.mean(fold_uars))
    mv = register_model_version(
        session, name=model_name, algorithm=algorithm.name, params=params,
        feature_set_id=feature_set_id, label_scheme=scheme, classes=dataset.classes,
        speaker_normalisation=config.speaker_normalisation,
        training_clip_ids=dataset.clip_ids.tolist(),
        training_set_sha256=training_set_hash(dataset), folds_sha256=fsha, seed=config.seed,
        cv_uar=cv_uar,
        artifact=dump_bundle(from_estimator(final.estimator, classes=dataset.classes,
                                            n_features=final.n_features)),
        metrics=metrics,
    )
    return TrainResult(
        model_version_id=mv.id, name=model_name, version=mv.version, algorithm=algorithm.name,
        label_scheme=scheme, feature_set_id=feature_set_id, classes=dataset.classes,
        n_clips=len(dataset.y), n_actors=dataset.n_actors, cv_uar=cv_uar,
        cv_uar_std=float(np.std(fold_uars)), pooled=_pooled(metrics), folds_sha256=fsha,
        params=params, channel=config.channel,
    )


def _training_dataset(session: Session, config: TrainConfig, *, scheme: str,
                      feature_set_id: int, progress: bool) -> Dataset:
    """The dataset to train on, with its phone-line copies (computed if missing) when
    ``config.augment``."""
    dataset = load_dataset(session, label_scheme=scheme, feature_set_id=feature_set_id,
                           corpus=config.corpus, n_folds=config.n_folds)
    if config.augment:
        aug_fs = augmented_feature_set(session, config)
        compute_missing_augmented(session, clip_ids=dataset.clip_ids, feature_set_id=aug_fs,
                                  progress=progress)
        attach_augmented(session, dataset, feature_set_id=aug_fs)
    return dataset


def _fit_final(dataset: Dataset, config: TrainConfig, algorithm: Algorithm) -> FinalFit:
    """Search and fit the final model on every row (and every phone-line copy)."""
    rows = stack_rows(dataset)
    Xp = prepare_features(rows.X, rows.keys, speaker_normalisation=config.speaker_normalisation,
                          raw_columns=config.raw_columns)
    estimator, chosen = fit_estimator(algorithm, Xp, rows.y, rows.actors, seed=config.seed,
                                      balance=config.class_balance, search=config.search)
    return FinalFit(estimator=estimator, chosen=chosen, rows=rows, n_features=Xp.shape[1])


def _model_params(dataset: Dataset, config: TrainConfig, algorithm: Algorithm, *,
                  cv: CVResult, final: FinalFit, calibration: dict[str, Any]) -> dict[str, Any]:
    """``model_versions.params``: how the model was trained, searched, evaluated and calibrated."""
    params: dict[str, Any] = {
        "algorithm": algorithm.name,
        "estimator": jsonable(shallow_params(final.estimator)),
        "search_grid": jsonable(algorithm.grid) if config.search else {},
        "best_params": jsonable(final.chosen),
        "fold_best_params": cv.fold_params,
        "speaker_normalisation": config.speaker_normalisation,
        "class_balance": config.class_balance and algorithm.supports_balance,
        "n_folds": config.n_folds, "inner_folds": INNER_FOLDS, "seed": config.seed,
        "fold_splitter": "StratifiedGroupKFold(shuffle=True) by actor",
        "corpus": config.corpus, "n_actors": dataset.n_actors,
        "excluded_feature_errors": dataset.excluded_feature_errors,
        "channel": config.channel,
        "calibration": jsonable(calibration),
    }
    if dataset.augmented is not None:
        aug = dataset.augmented
        params["augment"] = {
            "feature_set_id": aug.feature_set_id, "n_rows": len(aug.row),
            "copies_per_clip": int(aug.variant.max()),
            "normalisation_groups": "(actor, variant)",
            "folds": "copies follow their clip's actor-grouped fold"}
    if config.speaker_normalisation:
        # Lets prediction normalise speakers with too few clips of their own (``ser predict
        # clip.wav``) against similar training actors: see etl.training.normalise.MIN_ROWS_OWN_STATS.
        params["speaker_population"] = speaker_population(
            final.rows.X, final.rows.keys, **config.population_shrinkage()).to_json()
    return params


def _pooled(metrics: list[dict[str, Any]]) -> dict[str, float]:
    """The :data:`POOLED_METRICS` among ``metrics`` (rows of no fold, class or group)."""
    return {m["metric"]: float(m["value"]) for m in metrics
            if m.get("fold") is None and m.get("group_name") is None
            and m.get("class_label") is None and m["metric"] in POOLED_METRICS}
