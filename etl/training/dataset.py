"""Training rows from the database: clips the label scheme maps, their actors and features.

``load_dataset`` checks that the data can support speaker-independent training (every class
present and spoken by at least two actors, enough actors for the folds, features computed) and
says what is missing when it cannot: :class:`TrainingDataError`. Phone-line copies of the clips
(feature set ``rich+phone``) attach to a dataset as :class:`AugmentedRows`; :func:`stack_rows`
gives the rows as training and evaluation see them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select, text
from sqlalchemy.orm import Session
from tqdm import tqdm

from db.models import FeatureSet, LabelScheme, LabelSchemeClass
from etl.corpora.demographics import age_band
from etl.features.extraction import extract_files
from etl.features.specs import augmented_set_name, feature_spec, has_phone_copies
from etl.features.store import (
    ensure_feature_set,
    load_feature_matrix,
    load_variant_matrix,
    store_results,
)
from etl.training.config import DEFAULT_FOLDS, TrainConfig
from etl.training.loading import feature_spec_for

log = logging.getLogger(__name__)


class TrainingDataError(ValueError):
    """The data in the database cannot support the requested training; nothing is registered."""


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
    feature_set = session.get(FeatureSet, feature_set_id)
    if feature_set is None:
        raise TrainingDataError(f"feature set id {feature_set_id} does not exist")
    mapping = scheme_mapping(session, label_scheme)
    classes = sorted(set(mapping.values()))
    clips = _mapped_clips(session, mapping, label_scheme=label_scheme, corpus=corpus)
    features = _clip_features(session, feature_set, clips)
    by_id = {c.id: c for c in clips}
    rows = [by_id[int(i)] for i in features.clip_ids]
    dataset = Dataset(
        clip_ids=features.clip_ids, X=features.X,
        y=np.array([classes.index(mapping[r.emotion]) for r in rows], dtype=np.int64),
        groups=np.array([r.actor_id for r in rows], dtype=np.int64),
        classes=classes, feature_names=list(feature_set.feature_names),
        feature_set_id=feature_set_id, label_scheme=label_scheme,
        clip_sha256=[r.sha256 for r in rows],
        demographics={"sex": [r.sex for r in rows], "age_band": [age_band(r.age) for r in rows],
                      "race": [r.race for r in rows]},
        excluded_feature_errors=features.excluded,
    )
    check_dataset(dataset, n_folds=n_folds)
    return dataset


def _mapped_clips(session: Session, mapping: dict[str, str], *, label_scheme: str,
                  corpus: str | None) -> list[Any]:
    """Current clips whose emotion ``mapping`` keeps; every class must have clips and every
    clip an actor (TrainingDataError saying which are missing otherwise)."""
    clips = [c for c in _current_clips(session, corpus) if c.emotion in mapping]
    where = f" in corpus {corpus!r}" if corpus else ""
    if not clips:
        raise TrainingDataError(f"no ingested clips{where} carry an emotion of label scheme "
                                f"{label_scheme!r} ({', '.join(sorted(mapping))}); ingest a corpus "
                                f"first (`ser ingest`)")
    per_class = {c: 0 for c in set(mapping.values())}
    for clip in clips:
        per_class[mapping[clip.emotion]] += 1
    empty = sorted(c for c, n in per_class.items() if n == 0)
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
    return clips


@dataclass(frozen=True, slots=True)
class ClipFeatures:
    """Feature rows of the clips a dataset keeps, ordered by clip id.

    ``clip_ids`` int64 ``(n,)``; ``X`` float32 ``(n, n_features)``; ``excluded``: clips left out
    because their feature extraction failed (a row in ``feature_errors``).
    """

    clip_ids: np.ndarray
    X: np.ndarray
    excluded: int


def _clip_features(session: Session, feature_set: FeatureSet, clips: list[Any]) -> ClipFeatures:
    """Stored features of ``clips`` in ``feature_set``, minus the clips whose extraction failed;
    TrainingDataError when any other clip has none."""
    failed = set(session.scalars(
        text("SELECT clip_id FROM feature_errors WHERE feature_set_id = :fs"),
        {"fs": feature_set.id}).all())
    wanted = [c for c in clips if c.id not in failed]
    ids, X = load_feature_matrix(session, feature_set_id=feature_set.id,
                                 clip_ids=[c.id for c in wanted])
    have = {int(i) for i in ids}
    missing = [c for c in wanted if c.id not in have]
    if missing:
        raise TrainingDataError(
            f"features {feature_set.name}/{feature_set.channel} v{feature_set.version} are "
            f"missing for {len(missing)} of {len(wanted)} clip(s) (e.g. "
            f"{', '.join(c.clip_name for c in missing[:3])}); run `ser features --set "
            f"{feature_set.name} --channel {feature_set.channel}` first")
    excluded = len(failed & {c.id for c in clips})
    if excluded:
        log.warning("excluding %d clip(s) whose feature extraction failed (see feature_errors)",
                    excluded)
    order = np.argsort(ids)
    return ClipFeatures(clip_ids=np.asarray(ids, dtype=np.int64)[order],
                        X=np.asarray(X, dtype=np.float32)[order], excluded=excluded)


def augmented_feature_set(session: Session, config: TrainConfig) -> int:
    """feature_sets.id of the phone-augmented companion of ``config``'s feature set."""
    if not has_phone_copies(config.feature_set, config.channel):
        raise TrainingDataError(
            f"phone-line augmentation trains telephony models on rich or richvoice features; got "
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
