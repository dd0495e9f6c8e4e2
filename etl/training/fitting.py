"""Fitting: per-speaker normalisation of the inputs, nested grid search, actor-grouped
cross-validation and the speaker population a fold model was trained on."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import GridSearchCV, GroupKFold, StratifiedKFold
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from etl.training.artifacts import FittedModel, from_estimator
from etl.training.config import TrainConfig
from etl.training.dataset import Dataset, Stacked, stack_rows
from etl.training.models import Algorithm, get_algorithm
from etl.training.normalise import SpeakerPopulation, normalise_per_speaker, speaker_population

INNER_FOLDS = 3


@dataclass
class CVResult:
    folds: np.ndarray  # int (n,) outer fold of each row
    proba: np.ndarray  # float (n, K) out-of-fold probabilities
    fold_params: list[dict[str, Any]]
    fold_models: list[FittedModel]
    aug_proba: np.ndarray | None = None  # float (m, K) of the augmented copies, if any


def prepare_features(X: np.ndarray, groups: np.ndarray, *, speaker_normalisation: bool,
                     raw_columns: int = 0) -> np.ndarray:
    """The model's input rows: per-speaker z-scored when asked (each speaker on its own stats;
    the last ``raw_columns`` features as they are)."""
    if not speaker_normalisation:
        return np.asarray(X, np.float32)
    return normalise_per_speaker(X, groups, raw_columns=raw_columns)


def fit_estimator(
    algorithm: Algorithm, X: np.ndarray, y: np.ndarray, groups: np.ndarray, *,
    seed: int, balance: bool, search: bool,
) -> tuple[BaseEstimator, dict[str, Any]]:
    """Fit one family on (X, y); with ``search``, a grid search on actor-grouped inner folds.

    Returns the fitted estimator and the chosen grid parameters (empty without a search).
    """
    estimator = algorithm.build(seed, balance)
    fit_params = algorithm.fit_params(y, balance=balance)
    n_inner = min(INNER_FOLDS, int(np.unique(groups).size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter from small folds
        if search and algorithm.grid and n_inner >= 2:
            grid = GridSearchCV(estimator, algorithm.grid, cv=GroupKFold(n_splits=n_inner),
                                scoring="balanced_accuracy", refit=True, n_jobs=1,
                                error_score="raise")
            grid.fit(X, y, groups=groups, **fit_params)
            return grid.best_estimator_, dict(grid.best_params_)
        estimator.fit(X, y, **fit_params)
        return estimator, {}


def cross_validate(
    dataset: Dataset, config: TrainConfig, folds: np.ndarray, *, progress: bool = False,
) -> CVResult:
    """Out-of-fold probabilities from nested, actor-grouped cross-validation.

    Augmented copies (``dataset.augmented``) follow their clip's fold: trained on with it,
    held out with it (``CVResult.aug_proba``).
    """
    algorithm = get_algorithm(config.algorithm)
    rows = stack_rows(dataset)
    Xp = prepare_features(rows.X, rows.keys, speaker_normalisation=config.speaker_normalisation,
                          raw_columns=config.raw_columns)
    row_folds = folds[rows.source]
    n_classes = len(dataset.classes)
    proba = np.zeros((len(rows.y), n_classes))
    fold_params: list[dict[str, Any]] = []
    fold_models: list[FittedModel] = []
    n_folds = int(folds.max()) + 1
    iterator: Any = range(n_folds)
    if progress:
        iterator = tqdm(iterator, desc=f"cv {config.algorithm}", unit="fold", leave=False)
    for k in iterator:
        train, test = row_folds != k, row_folds == k
        if set(rows.actors[train]) & set(rows.actors[test]):  # by construction never
            raise AssertionError("an actor is in both training and test folds")
        estimator, chosen = fit_estimator(
            algorithm, Xp[train], rows.y[train], rows.actors[train], seed=config.seed,
            balance=config.class_balance, search=config.search)
        model = from_estimator(estimator, classes=dataset.classes, n_features=Xp.shape[1])
        proba[test] = model.predict_proba(Xp[test])
        fold_params.append(jsonable(chosen))
        fold_models.append(model)
    return CVResult(folds=folds, proba=proba[: rows.n], fold_params=fold_params,
                    fold_models=fold_models,
                    aug_proba=proba[rows.n:] if len(rows.y) > rows.n else None)


def fold_population(rows: Stacked, cv: CVResult, k: int, *,
                    shrinkage: Mapping[str, float] | None = None) -> SpeakerPopulation:
    """The speakers fold model ``k`` was trained on, as a population to shrink a call's roles
    toward (``shrinkage``: :meth:`TrainConfig.population_shrinkage`)."""
    train = cv.folds[rows.source] != k
    return speaker_population(rows.X[train], rows.keys[train], **(shrinkage or {}))


def random_split_diagnostic(
    dataset: Dataset, config: TrainConfig, params: dict[str, Any],
) -> dict[str, Any]:
    """UAR on random (speaker-leaking) stratified folds: a labelled diagnostic, never a headline."""
    algorithm = get_algorithm(config.algorithm)
    Xp = prepare_features(dataset.X, dataset.groups,
                          speaker_normalisation=config.speaker_normalisation,
                          raw_columns=config.raw_columns)
    splitter = StratifiedKFold(n_splits=config.n_folds, shuffle=True, random_state=config.seed)
    pred = np.zeros(len(dataset.y), dtype=np.int64)
    for train, test in splitter.split(Xp, dataset.y):
        estimator = algorithm.build(config.seed, config.class_balance)
        if params:
            estimator.set_params(**params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            estimator.fit(Xp[train], dataset.y[train],
                          **algorithm.fit_params(dataset.y[train], balance=config.class_balance))
        model = from_estimator(estimator, classes=dataset.classes, n_features=Xp.shape[1])
        pred[test] = model.predict(Xp[test])
    return {"fold": None, "metric": "diagnostic_random_split_uar",
            "value": float(balanced_accuracy_score(dataset.y, pred)),
            "extra": {"note": "random stratified folds share speakers between train and test; "
                              "inflated, for comparison with published random-split scores only"}}


def single_threaded_blas() -> Any:
    """Limit BLAS to one thread: on small matrices and shared cores, BLAS threads oversubscribe
    the cores and slow the fits down (docs/bench figures); results are unchanged."""
    return threadpool_limits(limits=1, user_api="blas")


def shallow_params(estimator: BaseEstimator) -> dict[str, Any]:
    """Scalar parameters of an estimator and its nested steps (estimator objects left out)."""
    scalar = (str, int, float, bool, type(None))

    def keep(v: Any) -> bool:
        return isinstance(v, scalar) or (isinstance(v, (list, tuple))
                                         and all(isinstance(x, scalar) for x in v))

    return {k: v for k, v in estimator.get_params(deep=True).items() if keep(v)}


def jsonable(value: Any) -> Any:
    """Turn numpy scalars/tuples into JSON-friendly values (for the params JSONB column)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
