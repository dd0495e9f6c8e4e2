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

Phone-robust training (``TrainConfig.augment``, the ``ser train`` default): every clip also
brings its phone-line copies (feature set ``rich+phone``, `etl.training.augment`; computed here when
missing). Folds are made on the clips, and a copy always sits in its clip's fold, so no copy
of a held-out speaker is ever trained on; metrics are reported on the held-out clips as recorded
(``uar``, comparable with studio models on the same folds) and on their phone copies
(``uar_phone``). Speaker normalisation groups rows by (actor, variant): the copies of a speaker
are normalised together, as one call channel is at scoring time.

Nothing here commits; nothing here imports Prefect.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)
from sklearn.model_selection import GridSearchCV, GroupKFold, StratifiedGroupKFold, StratifiedKFold
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from db.models import FeatureSet, LabelScheme, LabelSchemeClass
from etl.training.artifacts import FittedModel, dump_bundle, from_estimator
from etl.training.models import DEFAULT_ALGORITHM, Algorithm, get_algorithm
from etl.training.normalise import SpeakerPopulation, normalise_per_speaker, speaker_population

log = logging.getLogger(__name__)

DEFAULT_SEED = 0
DEFAULT_FOLDS = 5
INNER_FOLDS = 3
# Permutation importance: rows scored per outer fold and repeats (cost grows with both).
IMPORTANCE_ROWS_PER_FOLD = 160
IMPORTANCE_REPEATS = 2
ROC_POINTS = 40
# Call (telephony) models: speaker-normalised, and every role of a call is shrunk toward the
# nearest training speakers with this many prior rows (a 2-minute call's customer has ~20-40
# segments, so own statistics weigh 17-29 %). Its own statistics alone absorb the call's
# emotion (a calm customer z-scored against a calm call reads half negative). Chosen on calls
# of training speakers only: bench/calls_accuracy.py selection mode, docs/features.md
# "Training for calls".
CALL_SPEAKER_PRIOR_ROWS = 100.0


class TrainingDataError(ValueError):
    """The data in the database cannot support the requested training; nothing is registered."""


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """What to train. Defaults are the project's best speaker-independent setup."""

    algorithm: str = DEFAULT_ALGORITHM
    label_scheme: str | None = None  # None = largest scheme the data fully covers
    feature_set: str = "rich"
    channel: str = "studio"
    corpus: str | None = None  # None = every corpus (joined through canonical emotions)
    speaker_normalisation: bool = True
    class_balance: bool = True
    n_folds: int = DEFAULT_FOLDS
    seed: int = DEFAULT_SEED
    search: bool = True  # nested grid search inside the training folds
    feature_importance: bool = True
    diagnostic_random_split: bool = False
    augment: bool = False  # also train on the phone-line copies (rich+phone); telephony only
    # Speaker-normalised models, at prediction: None = a group (a call's role) with at least
    # etl.training.normalise.MIN_ROWS_OWN_STATS rows uses its own statistics; a number = every group is
    # shrunk toward the nearest training speakers with this many prior rows (SpeakerPopulation);
    # "auto" = CALL_SPEAKER_PRIOR_ROWS for telephony, None for studio.
    speaker_prior_rows: float | str | None = "auto"
    # > 0: choose the escalation operating point on this many generated phone calls of the
    # training speakers, each scored by the fold model that never heard them
    # (etl.training.operating_point; `ser train` does for telephony); 0: on pseudo-calls of clips only.
    operating_point_calls: int = 0
    operating_point_call_minutes: float = 2.0

    def __post_init__(self) -> None:
        prior = self.speaker_prior_rows
        if prior == "auto":
            prior = CALL_SPEAKER_PRIOR_ROWS if self.channel == "telephony" else None
        elif isinstance(prior, str):
            raise ValueError(f"speaker_prior_rows must be a number, None or 'auto', not {prior!r}")
        object.__setattr__(self, "speaker_prior_rows", None if prior is None else float(prior))

    def population_shrinkage(self) -> dict[str, float]:
        """``speaker_population`` keyword arguments for this config's prediction-time shrinkage."""
        if self.speaker_prior_rows is None:
            return {}
        if float(self.speaker_prior_rows) < 0:
            raise ValueError(f"speaker_prior_rows must be >= 0, not {self.speaker_prior_rows}")
        return {"prior_rows": float(self.speaker_prior_rows), "min_rows_own": float("inf")}


@dataclass
class Dataset:
    """Rows for training, ordered by clip id.

    Attributes
    ----------
    clip_ids : int64 (n,)
    X : float32 (n, n_features)
    y : int64 (n,) codes into ``classes``
    groups : int64 (n,) actor ids (the speaker-independence unit)
    """

    clip_ids: np.ndarray
    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    classes: list[str]
    feature_names: list[str]
    feature_set_id: int
    label_scheme: str
    clip_sha256: list[str]
    demographics: dict[str, list[str | None]] = field(default_factory=dict)
    excluded_feature_errors: int = 0
    augmented: AugmentedRows | None = None

    @property
    def n_actors(self) -> int:
        return int(np.unique(self.groups).size)


@dataclass
class AugmentedRows:
    """Augmented copies of a dataset's rows (phone-line copies, variants 1..n).

    Attributes
    ----------
    feature_set_id : the augmented set (e.g. ``rich+phone``)
    row : int64 (m,) index of the dataset row each copy was made from
    variant : int64 (m,) copy number (1..n)
    X : float32 (m, n_features)
    """

    feature_set_id: int
    row: np.ndarray
    variant: np.ndarray
    X: np.ndarray


@dataclass(frozen=True, slots=True)
class Stacked:
    """Dataset rows then their augmented copies, as training and evaluation see them.

    ``source`` (N,) is the dataset row of each row (itself for the first ``n`` rows), ``keys``
    (N,) the speaker-normalisation group: the actor for recorded rows, (actor, variant) for
    copies."""

    X: np.ndarray
    y: np.ndarray
    actors: np.ndarray
    keys: np.ndarray
    source: np.ndarray
    n: int


def stack_rows(dataset: Dataset) -> Stacked:
    n = len(dataset.y)
    if dataset.augmented is None or len(dataset.augmented.row) == 0:
        return Stacked(dataset.X, dataset.y, dataset.groups, dataset.groups,
                       np.arange(n), n)
    aug = dataset.augmented
    actors = np.concatenate([dataset.groups, dataset.groups[aug.row]])
    variant = np.concatenate([np.zeros(n, np.int64), aug.variant])
    return Stacked(X=np.concatenate([dataset.X, aug.X]),
                   y=np.concatenate([dataset.y, dataset.y[aug.row]]), actors=actors,
                   keys=actors * 1000 + variant, source=np.concatenate([np.arange(n), aug.row]),
                   n=n)


@dataclass
class CVResult:
    folds: np.ndarray  # int (n,) outer fold of each row
    proba: np.ndarray  # float (n, K) out-of-fold probabilities
    fold_params: list[dict[str, Any]]
    fold_models: list[FittedModel]
    aug_proba: np.ndarray | None = None  # float (m, K) of the augmented copies, if any


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


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------


def scheme_mapping(session: Session, scheme: str) -> dict[str, str]:
    """{canonical emotion: class label} of ``scheme`` from the database (label_scheme_classes)."""
    rows = session.execute(
        select(LabelSchemeClass.emotion, LabelSchemeClass.class_label).where(
            LabelSchemeClass.scheme == scheme)
    ).all()
    if not rows:
        known = session.scalars(select(LabelScheme.name).order_by(LabelScheme.name)).all()
        raise TrainingDataError(f"unknown label scheme {scheme!r}; known: {', '.join(known)}")
    return {emotion: label for emotion, label in rows}


def _current_clips(session: Session, corpus: str | None) -> list[Any]:
    return session.execute(
        text("""
            SELECT c.id, c.corpus, c.clip_name, c.emotion, c.sha256, c.actor_id,
                   a.actor_code, a.sex, a.age, a.race
            FROM clips c LEFT JOIN actors a ON a.id = c.actor_id
            WHERE c.is_current AND (CAST(:corpus AS text) IS NULL OR c.corpus = :corpus)
            ORDER BY c.id
        """),
        {"corpus": corpus},
    ).all()


def choose_label_scheme(session: Session, *, corpus: str | None = None) -> str:
    """The scheme with most classes that the ingested clips fully cover (every class has clips).

    Ties go to the scheme that keeps more clips, then by name. Raises TrainingDataError when no
    clip is ingested or no scheme is covered.
    """
    counts = dict(session.execute(
        text("SELECT emotion, count(*) FROM clips WHERE is_current "
             "AND (CAST(:corpus AS text) IS NULL OR corpus = :corpus) GROUP BY emotion"),
        {"corpus": corpus},
    ).all())
    if not counts:
        raise TrainingDataError("no clips are ingested" + (f" for corpus {corpus!r}" if corpus else "")
                                + "; run `ser ingest CORPUS PATH` first")
    candidates: list[tuple[int, int, str]] = []
    for scheme in session.scalars(select(LabelScheme.name)).all():
        mapping = scheme_mapping(session, scheme)
        per_class: dict[str, int] = {c: 0 for c in set(mapping.values())}
        for emotion, label in mapping.items():
            per_class[label] += counts.get(emotion, 0)
        if all(per_class.values()):
            candidates.append((len(per_class), sum(per_class.values()), scheme))
    if not candidates:
        raise TrainingDataError(
            f"no label scheme is fully covered by the ingested emotions ({', '.join(sorted(counts))})")
    candidates.sort(key=lambda c: (-c[0], -c[1], c[2]))
    return candidates[0][2]


def resolve_feature_set(session: Session, *, name: str, channel: str) -> int:
    """feature_sets.id of the current parameters of feature set ``name`` on ``channel``."""
    from etl.features.extraction import feature_spec
    from etl.features.store import ensure_feature_set

    try:
        spec = feature_spec(name, channel)
    except ValueError as exc:
        raise TrainingDataError(str(exc)) from exc
    return ensure_feature_set(session, spec)


def load_dataset(
    session: Session,
    *,
    label_scheme: str,
    feature_set_id: int,
    corpus: str | None = None,
    n_folds: int = DEFAULT_FOLDS,
) -> Dataset:
    """Rows of every current clip the scheme maps, with features of ``feature_set_id``.

    Raises
    ------
    TrainingDataError
        no mapped clips; a scheme class without clips; clips without features (and no recorded
        feature error); clips without an actor; fewer actors than folds; a class spoken by a
        single actor (it would be missing from that actor's training folds).
    """
    from etl.features.store import load_feature_matrix

    feature_set = session.get(FeatureSet, feature_set_id)
    if feature_set is None:
        raise TrainingDataError(f"feature set id {feature_set_id} does not exist")
    set_label = f"{feature_set.name}/{feature_set.channel} v{feature_set.version}"
    mapping = scheme_mapping(session, label_scheme)
    classes = sorted(set(mapping.values()))
    clips = [c for c in _current_clips(session, corpus) if c.emotion in mapping]
    where = f" in corpus {corpus!r}" if corpus else ""
    if not clips:
        raise TrainingDataError(f"no ingested clips{where} carry an emotion of label scheme "
                                f"{label_scheme!r} ({', '.join(sorted(mapping))}); ingest a corpus "
                                f"first (`ser ingest`)")
    per_class = {c: 0 for c in classes}
    for clip in clips:
        per_class[mapping[clip.emotion]] += 1
    empty = [c for c, n in per_class.items() if n == 0]
    if empty:
        raise TrainingDataError(
            f"label scheme {label_scheme!r} has class(es) with no clips{where}: {', '.join(empty)} "
            f"(emotions {', '.join(sorted(e for e, c in mapping.items() if c in empty))}); choose "
            f"another scheme with --labels or ingest a corpus that has them")
    no_actor = [c.clip_name for c in clips if c.actor_id is None]
    if no_actor:
        raise TrainingDataError(
            f"{len(no_actor)} clip(s) have no actor (e.g. {', '.join(no_actor[:3])}); speaker-"
            f"independent folds need one per clip")

    failed = set(session.scalars(
        text("SELECT clip_id FROM feature_errors WHERE feature_set_id = :fs"),
        {"fs": feature_set_id}).all())
    wanted = [c for c in clips if c.id not in failed]
    ids, X = load_feature_matrix(session, feature_set_id=feature_set_id,
                                 clip_ids=[c.id for c in wanted])
    have = {int(i) for i in ids}
    missing = [c for c in wanted if c.id not in have]
    if missing:
        raise TrainingDataError(
            f"features {set_label} are missing for {len(missing)} of {len(wanted)} clip(s) (e.g. "
            f"{', '.join(c.clip_name for c in missing[:3])}); run `ser features --set "
            f"{feature_set.name} --channel {feature_set.channel}` first")
    if failed & {c.id for c in clips}:
        log.warning("excluding %d clip(s) whose feature extraction failed (see feature_errors)",
                    len(failed & {c.id for c in clips}))
    order = np.argsort(ids)
    ids, X = np.asarray(ids, dtype=np.int64)[order], np.asarray(X, dtype=np.float32)[order]
    by_id = {c.id: c for c in wanted}
    rows = [by_id[int(i)] for i in ids]
    dataset = Dataset(
        clip_ids=ids, X=X,
        y=np.array([classes.index(mapping[r.emotion]) for r in rows], dtype=np.int64),
        groups=np.array([r.actor_id for r in rows], dtype=np.int64),
        classes=classes, feature_names=list(feature_set.feature_names),
        feature_set_id=feature_set_id, label_scheme=label_scheme,
        clip_sha256=[r.sha256 for r in rows],
        demographics={"sex": [r.sex for r in rows], "age_band": [age_band(r.age) for r in rows],
                      "race": [r.race for r in rows]},
        excluded_feature_errors=len(failed & {c.id for c in clips}),
    )
    check_dataset(dataset, n_folds=n_folds)
    return dataset


def augmented_feature_set(session: Session, config: TrainConfig) -> int:
    """feature_sets.id of the phone-augmented companion of ``config``'s feature set."""
    from etl.features.specs import augmented_set_name

    if config.feature_set != "rich" or config.channel != "telephony":
        raise TrainingDataError(
            f"phone-line augmentation trains telephony models on rich features; got "
            f"{config.feature_set}/{config.channel} (use --channel telephony, or --no-augment)")
    return resolve_feature_set(session, name=augmented_set_name(config.feature_set),
                               channel=config.channel)


def compute_missing_augmented(session: Session, *, clip_ids: np.ndarray, feature_set_id: int,
                              progress: bool = False, chunk_size: int = 32) -> int:
    """Extract and store the augmented copies of ``clip_ids`` that have neither copies nor a
    recorded error in ``feature_set_id`` (in this process). Returns clips computed.

    ``ser features`` computes them (in parallel) already; this makes ``ser train`` work
    after a ``ser features`` run that skipped them.
    """
    from etl.features.extraction import extract_files
    from etl.features.store import store_results
    from etl.training.registry import feature_spec_for

    todo = session.execute(text(
        "SELECT c.id, c.path FROM clips c WHERE c.id = ANY(:ids) "
        "AND NOT EXISTS (SELECT 1 FROM clip_features f WHERE f.clip_id = c.id "
        "  AND f.feature_set_id = :fs AND f.variant > 0) "
        "AND NOT EXISTS (SELECT 1 FROM feature_errors e WHERE e.clip_id = c.id "
        "  AND e.feature_set_id = :fs) ORDER BY c.id"),
        {"ids": [int(c) for c in clip_ids], "fs": feature_set_id}).all()
    if not todo:
        return 0
    spec = feature_spec_for(session, feature_set_id)
    items = [(int(r[0]), str(r[1])) for r in todo]
    from tqdm import tqdm

    bar = tqdm(total=len(items), unit="clip", desc=f"features {spec.name}/{spec.channel}",
               disable=not progress, leave=False)
    for start in range(0, len(items), chunk_size):
        chunk = items[start: start + chunk_size]
        store_results(session, feature_set_id=feature_set_id, results=extract_files(chunk, spec))
        bar.update(len(chunk))
    bar.close()
    return len(items)


def attach_augmented(session: Session, dataset: Dataset, *, feature_set_id: int) -> Dataset:
    """``dataset`` with the stored augmented copies of its clips (clips without copies, e.g.
    whose augmentation failed, train on as recorded only)."""
    from etl.features.store import load_variant_matrix

    ids, variant, X = load_variant_matrix(session, feature_set_id=feature_set_id,
                                          clip_ids=dataset.clip_ids.tolist(),
                                          variants="augmented")
    row = np.searchsorted(dataset.clip_ids, ids)
    keep = (row < len(dataset.clip_ids)) & (dataset.clip_ids[np.minimum(
        row, len(dataset.clip_ids) - 1)] == ids)
    if not keep.any():
        raise TrainingDataError(f"no augmented copies are stored in feature set id "
                                f"{feature_set_id}; run `ser features` first")
    missing = len(dataset.clip_ids) - np.unique(ids[keep]).size
    if missing:
        log.warning("%d clip(s) have no phone-line copies (see feature_errors); they train as "
                    "recorded only", missing)
    dataset.augmented = AugmentedRows(feature_set_id=feature_set_id, row=row[keep],
                                      variant=variant[keep], X=X[keep])
    return dataset


def check_dataset(dataset: Dataset, *, n_folds: int) -> None:
    """Enough actors for ``n_folds`` grouped folds, every class present and spoken by >= 2 actors."""
    if n_folds < 2:
        raise TrainingDataError(f"--folds must be at least 2 (got {n_folds})")
    if dataset.n_actors < n_folds:
        raise TrainingDataError(
            f"too few speakers: {dataset.n_actors} actor(s) for {n_folds} speaker-independent "
            f"folds (each fold holds out different actors); ingest more actors or use --folds "
            f"{max(dataset.n_actors, 2)}" + ("" if dataset.n_actors >= 2 else
                                             " (at least 2 actors are needed)"))
    for k, label in enumerate(dataset.classes):
        actors = np.unique(dataset.groups[dataset.y == k])
        if actors.size == 0:
            raise TrainingDataError(f"class {label!r} has no clips with features")
        if actors.size < 2:
            raise TrainingDataError(
                f"class {label!r} is spoken by only 1 actor; speaker-independent training needs "
                f"it from at least 2 actors")


def age_band(age: int | None) -> str | None:
    """Age bands of the demographic breakdown (the same bands the reports use)."""
    if age is None:
        return None
    if age < 30:
        return "18-29" if age >= 18 else "<18"
    if age < 45:
        return "30-44"
    if age < 60:
        return "45-59"
    return "60+"


# ------------------------------------------------------------------------------------------------
# folds
# ------------------------------------------------------------------------------------------------


def make_folds(y: np.ndarray, groups: np.ndarray, *, n_folds: int, seed: int) -> np.ndarray:
    """Outer fold (0..n_folds-1) per row: actor-grouped, class-stratified, deterministic.

    Rows must be in a canonical order (``load_dataset`` sorts by clip id) so that the same data
    and seed always give the same folds.
    """
    n_actors = np.unique(groups).size
    if n_actors < n_folds:
        raise TrainingDataError(f"too few speakers: {n_actors} actor(s) for {n_folds} folds")
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = np.full(len(y), -1, dtype=np.int64)
    with warnings.catch_warnings():
        # "least populated class has fewer members than n_splits" is expected on tiny data.
        warnings.simplefilter("ignore", UserWarning)
        for k, (_, test) in enumerate(splitter.split(np.zeros(len(y)), y, groups)):
            folds[test] = k
    return folds


def folds_hash(clip_ids: np.ndarray, folds: np.ndarray) -> str:
    """sha256 of the (clip id, fold) assignment; equal hashes = identical evaluation folds."""
    pairs = sorted(zip((int(c) for c in clip_ids), (int(f) for f in folds), strict=True))
    return hashlib.sha256(json.dumps(pairs, separators=(",", ":")).encode()).hexdigest()


def training_set_hash(dataset: Dataset) -> str:
    """sha256 over (clip id, content sha256, class) of every training row plus the feature set."""
    payload = {"feature_set_id": dataset.feature_set_id, "scheme": dataset.label_scheme,
               "rows": [[int(c), s, dataset.classes[int(y)]] for c, s, y in
                        zip(dataset.clip_ids, dataset.clip_sha256, dataset.y, strict=True)]}
    if dataset.augmented is not None:  # the copies are training rows too
        payload["augmented"] = {"feature_set_id": dataset.augmented.feature_set_id,
                                "rows": [[int(r), int(v)] for r, v in zip(
                                    dataset.augmented.row, dataset.augmented.variant,
                                    strict=True)]}
    return hashlib.sha256(json.dumps(payload, separators=(",", ":")).encode()).hexdigest()


# ------------------------------------------------------------------------------------------------
# fitting
# ------------------------------------------------------------------------------------------------


def prepare_features(X: np.ndarray, groups: np.ndarray, *, speaker_normalisation: bool) -> np.ndarray:
    """The model's input rows: per-speaker z-scored when asked (each speaker on its own stats)."""
    return normalise_per_speaker(X, groups) if speaker_normalisation else np.asarray(X, np.float32)


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
    Xp = prepare_features(rows.X, rows.keys, speaker_normalisation=config.speaker_normalisation)
    row_folds = folds[rows.source]
    n_classes = len(dataset.classes)
    proba = np.zeros((len(rows.y), n_classes))
    fold_params: list[dict[str, Any]] = []
    fold_models: list[FittedModel] = []
    n_folds = int(folds.max()) + 1
    iterator: Any = range(n_folds)
    if progress:
        from tqdm import tqdm

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
        fold_params.append(_jsonable(chosen))
        fold_models.append(model)
    return CVResult(folds=folds, proba=proba[: rows.n], fold_params=fold_params,
                    fold_models=fold_models,
                    aug_proba=proba[rows.n:] if len(rows.y) > rows.n else None)


def phone_metric_rows(dataset: Dataset, cv: CVResult) -> list[dict[str, Any]]:
    """UAR, accuracy and macro-F1 on the phone-line copies of held-out clips, per fold and
    pooled (``uar_phone``, ``accuracy_phone``, ``macro_f1_phone``, ``uar_phone_mean``)."""
    aug = dataset.augmented
    if aug is None or cv.aug_proba is None:
        return []
    y, folds, K = dataset.y[aug.row], cv.folds[aug.row], len(dataset.classes)
    rows: list[dict[str, Any]] = []
    fold_uars = []
    for k in range(int(cv.folds.max()) + 1):
        test = folds == k
        if not test.any():
            continue
        uar = _scores(y[test], cv.aug_proba[test], K)["uar"]
        fold_uars.append(uar)
        rows.append({"fold": k, "metric": "uar_phone", "value": uar,
                     "extra": {"n": int(test.sum())}})
    for name, value in _scores(y, cv.aug_proba, K).items():
        rows.append({"fold": None, "metric": f"{name}_phone", "value": value,
                     "extra": {"n": len(y), "copies_per_clip": int(aug.variant.max())}
                     if name == "uar" else None})
    rows.append({"fold": None, "metric": "uar_phone_mean", "value": float(np.mean(fold_uars)),
                 "extra": {"per_fold": fold_uars}})
    return rows


def fold_population(rows: Stacked, cv: CVResult, k: int, *,
                    shrinkage: Mapping[str, float] | None = None) -> SpeakerPopulation:
    """The speakers fold model ``k`` was trained on, as a population to shrink a call's roles
    toward (``shrinkage``: :meth:`TrainConfig.population_shrinkage`)."""
    train = cv.folds[rows.source] != k
    return speaker_population(rows.X[train], rows.keys[train], **(shrinkage or {}))


def calibration_rows(dataset: Dataset, cv: CVResult) -> tuple[np.ndarray, np.ndarray, str]:
    """``(out-of-fold probabilities, dataset row of each, audio)`` the calibration is fitted on:
    the phone copies when the model trained on them, else the recorded clips."""
    if dataset.augmented is not None and cv.aug_proba is not None:
        return cv.aug_proba, dataset.augmented.row, "phone copies"
    return cv.proba, np.arange(len(dataset.y)), "recorded clips"


def pseudo_call_rescorer(dataset: Dataset, cv: CVResult, *,
                         shrinkage: dict[str, float] | None = None,
                         ) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """`etl.training.calibration.Rescore` for a speaker-normalised model: pseudo-call clips normalised
    together per pseudo-call, as scoring normalises one role of a call (with the same shrinkage
    toward the fold's training population), then predicted by the fold model that never saw
    their speaker. ``shrinkage``: :meth:`TrainConfig.population_shrinkage`.

    Row indices are those of the calibration arrays (:func:`calibration_record`): the phone
    copies when the model trained on them, else the recorded clips.
    """
    rows = stack_rows(dataset)
    row_folds = cv.folds[rows.source]
    offset = rows.n if dataset.augmented is not None and cv.aug_proba is not None else 0
    populations: dict[int, SpeakerPopulation] = {}

    def population(k: int) -> SpeakerPopulation:
        if k not in populations:
            populations[k] = fold_population(rows, cv, k, shrinkage=shrinkage)
        return populations[k]

    def rescore(index: np.ndarray, call: np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64) + offset
        call = np.asarray(call)
        out = np.empty((len(index), len(dataset.classes)))
        fold = row_folds[index]
        for k in np.unique(fold):
            mask = fold == k
            Xn = normalise_per_speaker(rows.X[index[mask]], call[mask],
                                       population=population(int(k)))
            out[mask] = cv.fold_models[int(k)].predict_proba(Xn)
        return out

    return rescore


def calibration_record(dataset: Dataset, cv: CVResult, *, seed: int,
                       speaker_normalisation: bool = False,
                       shrinkage: dict[str, float] | None = None) -> dict[str, Any]:
    """`etl.training.calibration.fit_calibration` on the out-of-fold probabilities of the audio the
    model is for: the phone copies when trained with them, else the recorded clips. With
    ``speaker_normalisation`` the operating point's pseudo-calls are normalised per pseudo-call
    (:func:`pseudo_call_rescorer`), as scoring normalises a call."""
    from etl.training.calibration import fit_calibration

    proba, rows, audio = calibration_rows(dataset, cv)
    y, groups = dataset.y[rows], dataset.groups[rows]
    rescore = (pseudo_call_rescorer(dataset, cv, shrinkage=shrinkage)
               if speaker_normalisation else None)
    try:
        record = fit_calibration(proba, y, classes=dataset.classes, groups=groups, seed=seed,
                                 rescore=rescore)
    except ValueError as exc:  # too little data to fit one: the model scores uncalibrated
        log.warning("no calibration: %s", exc)
        return {"method": "none", "reason": str(exc)[:300], "fitted_on": audio}
    return {**record, "fitted_on": audio}


def calls_operating_point(session: Session, dataset: Dataset, cv: CVResult,
                          config: TrainConfig, calibration: dict[str, Any], *,
                          progress: bool = False) -> dict[str, Any] | None:
    """The operating point chosen on ``config.operating_point_calls`` generated phone calls of
    the training speakers (:mod:`etl.training.operating_point`); None when they cannot be made (audio
    gone, too few speakers): the pseudo-call point then stays."""
    from etl.training.operating_point import (
        FoldCalibration,
        TrainingCallsPlan,
        operating_point_on_calls,
        score_training_calls,
    )
    from etl.training.registry import feature_spec_for

    proba, rows, _audio = calibration_rows(dataset, cv)
    method = str(calibration.get("method") or "none")
    fold_calibration = (FoldCalibration(method, proba, dataset.y[rows], cv.folds[rows])
                        if method != "none" else None)
    plan = TrainingCallsPlan(n_calls=config.operating_point_calls,
                             minutes=config.operating_point_call_minutes, seed=config.seed)
    try:
        calls = score_training_calls(
            session, dataset, cv, spec=feature_spec_for(session, dataset.feature_set_id),
            speaker_normalisation=config.speaker_normalisation,
            shrinkage=config.population_shrinkage(), calibration=fold_calibration,
            algorithm=config.algorithm, corpus=config.corpus, plan=plan, progress=progress)
    except ValueError as exc:
        log.warning("escalation operating point stays on pseudo-calls: %s", exc)
        return None
    return operating_point_on_calls(calls, seed=config.seed, plan=plan)


# ------------------------------------------------------------------------------------------------
# metrics
# ------------------------------------------------------------------------------------------------


def _scores(y: np.ndarray, proba: np.ndarray, n_classes: int) -> dict[str, float]:
    """UAR (= balanced accuracy = macro recall over classes present), accuracy, macro-F1."""
    pred = proba.argmax(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a demographic slice may lack some classes
        uar = float(balanced_accuracy_score(y, pred))
    return {"uar": uar, "accuracy": float(accuracy_score(y, pred)),
            "macro_f1": float(f1_score(y, pred, labels=list(range(n_classes)), average="macro",
                                       zero_division=0))}


def metric_rows_for(
    y: np.ndarray, proba: np.ndarray, classes: list[str], *, fold: int | None,
    curves: bool,
) -> list[dict[str, Any]]:
    """Metric rows for one evaluation slice (a fold, or pooled when ``fold`` is None)."""
    K = len(classes)
    labels = list(range(K))
    pred = proba.argmax(axis=1)
    rows: list[dict[str, Any]] = []
    for name, value in _scores(y, proba, K).items():
        rows.append({"fold": fold, "metric": name, "value": value,
                     "extra": {"n": len(y)} if name == "uar" else None})
    precision, recall, f1, support = precision_recall_fscore_support(
        y, pred, labels=labels, zero_division=0)
    for k, label in enumerate(classes):
        for name, values in (("precision", precision), ("recall", recall), ("f1", f1),
                             ("support", support)):
            rows.append({"fold": fold, "metric": name, "class_label": label,
                         "value": float(values[k])})
    matrix = confusion_matrix(y, pred, labels=labels)
    rows.append({"fold": fold, "metric": "confusion", "value": float(matrix.trace()),
                 "extra": {"labels": classes, "matrix": matrix.tolist(),
                           "rows": "true", "columns": "predicted"}})
    aucs = []
    for k, label in enumerate(classes):
        positives = y == k
        if positives.all() or not positives.any():
            continue  # AUC undefined when the slice has only one side
        auc = float(roc_auc_score(positives, proba[:, k]))
        aucs.append(auc)
        extra = None
        if curves:
            fpr, tpr, _ = roc_curve(positives, proba[:, k])
            keep = np.unique(np.linspace(0, len(fpr) - 1, min(ROC_POINTS, len(fpr))).astype(int))
            extra = {"fpr": np.round(fpr[keep], 4).tolist(), "tpr": np.round(tpr[keep], 4).tolist()}
        rows.append({"fold": fold, "metric": "roc_auc", "class_label": label, "value": auc,
                     "extra": extra})
    if aucs:
        rows.append({"fold": fold, "metric": "roc_auc_macro", "value": float(np.mean(aucs))})
    return rows


def evaluation_metrics(dataset: Dataset, cv: CVResult) -> list[dict[str, Any]]:
    """All metric rows: per fold, pooled, fold mean/std, and pooled per demographic group."""
    rows: list[dict[str, Any]] = []
    n_folds = int(cv.folds.max()) + 1
    fold_uars = []
    for k in range(n_folds):
        test = cv.folds == k
        fold_rows = metric_rows_for(dataset.y[test], cv.proba[test], dataset.classes, fold=k,
                                    curves=False)
        fold_uars.extend(r["value"] for r in fold_rows if r["metric"] == "uar")
        actors = sorted(int(a) for a in np.unique(dataset.groups[test]))
        for r in fold_rows:
            if r["metric"] == "uar":
                r["extra"] = {"n": int(test.sum()), "actor_ids": actors}
        rows.extend(fold_rows)
    rows.extend(metric_rows_for(dataset.y, cv.proba, dataset.classes, fold=None, curves=True))
    rows.append({"fold": None, "metric": "uar_mean", "value": float(np.mean(fold_uars)),
                 "extra": {"per_fold": fold_uars}})
    rows.append({"fold": None, "metric": "uar_std", "value": float(np.std(fold_uars))})
    K = len(dataset.classes)
    for group_name, values in dataset.demographics.items():
        if all(v is None for v in values):
            continue  # the corpus documents nothing for this dimension
        values_arr = np.array([str(v) if v is not None else "unknown" for v in values], dtype=object)
        for value in sorted(set(values_arr)):
            mask = values_arr == value
            for name, score in _scores(dataset.y[mask], cv.proba[mask], K).items():
                rows.append({"fold": None, "metric": name, "group_name": group_name,
                             "group_value": value, "value": score,
                             "extra": {"n": int(mask.sum())} if name == "uar" else None})
    return rows


def _fast_uar(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Balanced accuracy without sklearn's validation overhead (called thousands of times)."""
    present = np.bincount(y, minlength=n_classes)
    hits = np.bincount(y[pred == y], minlength=n_classes)
    mask = present > 0
    return float(np.mean(hits[mask] / present[mask]))


def permutation_importance_cv(
    dataset: Dataset, config: TrainConfig, cv: CVResult,
) -> list[dict[str, Any]]:
    """Mean drop in UAR when one feature is shuffled, measured on the held-out folds.

    Held-out rows make this an importance *for unseen speakers*; a capped number of rows per fold
    keeps the cost modest (each feature costs ``IMPORTANCE_REPEATS`` predictions per fold).
    """
    rng = np.random.default_rng(config.seed)
    Xp = prepare_features(dataset.X, dataset.groups,
                          speaker_normalisation=config.speaker_normalisation)
    n_features = Xp.shape[1]
    drops = np.zeros(n_features)
    weights = 0.0
    for k, model in enumerate(cv.fold_models):
        test = np.flatnonzero(cv.folds == k)
        if test.size > IMPORTANCE_ROWS_PER_FOLD:
            test = np.sort(rng.choice(test, IMPORTANCE_ROWS_PER_FOLD, replace=False))
        Xt, yt = Xp[test], dataset.y[test]
        K = len(dataset.classes)
        base = _fast_uar(yt, model.predict(Xt), K)
        # Stack all permuted copies of the slice and predict once: far fewer model calls.
        for _ in range(IMPORTANCE_REPEATS):
            stacked = np.repeat(Xt[None], n_features, axis=0)  # (F, m, F)
            for j in range(n_features):
                stacked[j, :, j] = Xt[rng.permutation(len(yt)), j]
            preds = model.predict(stacked.reshape(-1, n_features)).reshape(n_features, -1)
            for j in range(n_features):
                drops[j] += (base - _fast_uar(yt, preds[j], K)) * len(yt)
        weights += len(yt) * IMPORTANCE_REPEATS
    drops /= max(weights, 1.0)
    return [{"fold": None, "metric": "feature_importance", "class_label": None,
             "group_name": "feature", "group_value": name[:64], "value": float(drops[j]),
             "extra": {"method": "permutation_uar_drop_heldout", "rank": int(rank),
                       "feature": name}}
            for rank, (j, name) in enumerate(
                sorted(enumerate(dataset.feature_names), key=lambda t: -drops[t[0]]), start=1)]


def random_split_diagnostic(
    dataset: Dataset, config: TrainConfig, params: dict[str, Any],
) -> dict[str, Any]:
    """UAR on random (speaker-leaking) stratified folds: a labelled diagnostic, never a headline."""
    algorithm = get_algorithm(config.algorithm)
    Xp = prepare_features(dataset.X, dataset.groups,
                          speaker_normalisation=config.speaker_normalisation)
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


# ------------------------------------------------------------------------------------------------
# the whole thing
# ------------------------------------------------------------------------------------------------


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


def single_threaded_blas() -> Any:
    """Limit BLAS to one thread: on small matrices and shared cores, BLAS threads oversubscribe
    (measured 40x slower logistic-regression fits under load); results are unchanged."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def train_model(
    session: Session,
    config: TrainConfig = TrainConfig(),
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


def _train_model(
    session: Session, config: TrainConfig, *, name: str | None, feature_set_id: int | None,
    progress: bool,
) -> TrainResult:
    from etl.training.registry import register_model_version

    algorithm = get_algorithm(config.algorithm)
    if config.class_balance and not algorithm.supports_balance:
        log.info("%s has no class weights; training without class balancing", algorithm.name)
    scheme = config.label_scheme or choose_label_scheme(session, corpus=config.corpus)
    if feature_set_id is None:
        feature_set_id = resolve_feature_set(session, name=config.feature_set,
                                             channel=config.channel)
    dataset = load_dataset(session, label_scheme=scheme, feature_set_id=feature_set_id,
                           corpus=config.corpus, n_folds=config.n_folds)
    if config.augment:
        aug_fs = augmented_feature_set(session, config)
        compute_missing_augmented(session, clip_ids=dataset.clip_ids, feature_set_id=aug_fs,
                                  progress=progress)
        attach_augmented(session, dataset, feature_set_id=aug_fs)
    folds = make_folds(dataset.y, dataset.groups, n_folds=config.n_folds, seed=config.seed)
    cv = cross_validate(dataset, config, folds, progress=progress)
    metrics = evaluation_metrics(dataset, cv)
    metrics.extend(phone_metric_rows(dataset, cv))
    if config.feature_importance:
        metrics.extend(permutation_importance_cv(dataset, config, cv))
    calibration = calibration_record(dataset, cv, seed=config.seed,
                                     speaker_normalisation=config.speaker_normalisation,
                                     shrinkage=config.population_shrinkage())
    if config.operating_point_calls > 0 and calibration.get("operating_point") is not None:
        point = calls_operating_point(session, dataset, cv, config, calibration,
                                      progress=progress)
        if point is not None:
            calibration["operating_point_pseudo_calls"] = calibration["operating_point"]
            calibration["operating_point"] = point

    rows = stack_rows(dataset)
    Xp = prepare_features(rows.X, rows.keys, speaker_normalisation=config.speaker_normalisation)
    estimator, chosen = fit_estimator(algorithm, Xp, rows.y, rows.actors, seed=config.seed,
                                      balance=config.class_balance, search=config.search)
    if config.diagnostic_random_split:
        metrics.append(random_split_diagnostic(dataset, config, chosen))
    final = from_estimator(estimator, classes=dataset.classes, n_features=Xp.shape[1])
    artifact = dump_bundle(final)

    fold_uars = [m["value"] for m in metrics if m["metric"] == "uar" and m.get("fold") is not None
                 and m.get("group_name") is None]
    pooled = {m["metric"]: float(m["value"]) for m in metrics
              if m.get("fold") is None and m.get("group_name") is None
              and m.get("class_label") is None and m["metric"] in
              ("uar", "accuracy", "macro_f1", "roc_auc_macro", "diagnostic_random_split_uar",
               "uar_phone", "accuracy_phone", "macro_f1_phone", "uar_phone_mean")}
    params = {
        "algorithm": algorithm.name,
        "estimator": _jsonable(_shallow_params(estimator)),
        "search_grid": _jsonable(algorithm.grid) if config.search else {},
        "best_params": _jsonable(chosen),
        "fold_best_params": cv.fold_params,
        "speaker_normalisation": config.speaker_normalisation,
        "class_balance": config.class_balance and algorithm.supports_balance,
        "n_folds": config.n_folds, "inner_folds": INNER_FOLDS, "seed": config.seed,
        "fold_splitter": "StratifiedGroupKFold(shuffle=True) by actor",
        "corpus": config.corpus, "n_actors": dataset.n_actors,
        "excluded_feature_errors": dataset.excluded_feature_errors,
        "channel": config.channel,
        "calibration": _jsonable(calibration),
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
            rows.X, rows.keys, **config.population_shrinkage()).to_json()
    fsha = folds_hash(dataset.clip_ids, folds)
    model_name = name or default_model_name(scheme, config.feature_set, config.channel,
                                            augment=dataset.augmented is not None)
    cv_uar = float(np.mean(fold_uars))
    mv = register_model_version(
        session, name=model_name, algorithm=algorithm.name, params=params,
        feature_set_id=feature_set_id, label_scheme=scheme, classes=dataset.classes,
        speaker_normalisation=config.speaker_normalisation,
        training_clip_ids=dataset.clip_ids.tolist(),
        training_set_sha256=training_set_hash(dataset), folds_sha256=fsha, seed=config.seed,
        cv_uar=cv_uar, artifact=artifact, metrics=metrics,
    )
    return TrainResult(
        model_version_id=mv.id, name=model_name, version=mv.version, algorithm=algorithm.name,
        label_scheme=scheme, feature_set_id=feature_set_id, classes=dataset.classes,
        n_clips=len(dataset.y), n_actors=dataset.n_actors, cv_uar=cv_uar,
        cv_uar_std=float(np.std(fold_uars)), pooled=pooled, folds_sha256=fsha, params=params,
        channel=config.channel,
    )


def _shallow_params(estimator: BaseEstimator) -> dict[str, Any]:
    """Scalar parameters of an estimator and its nested steps (estimator objects left out)."""
    scalar = (str, int, float, bool, type(None))

    def keep(v: Any) -> bool:
        return isinstance(v, scalar) or (isinstance(v, (list, tuple))
                                         and all(isinstance(x, scalar) for x in v))

    return {k: v for k, v in estimator.get_params(deep=True).items() if keep(v)}


def _jsonable(value: Any) -> Any:
    """Turn numpy scalars/tuples into JSON-friendly values (for the params JSONB column)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
