"""The escalation operating point chosen on generated phone calls of the training speakers.

Pseudo-calls (:mod:`etl.training.calibration`) stitch whole-clip predictions together. Real calls are cut
by the VAD into windows that straddle utterances and pauses, pass a phone line, carry non-speech
and overtalk; on calls of unseen speakers they escalated more often than pseudo-calls predicted.
Here every outer cross-validation fold gets calls made by the call generator (:mod:`etl.synthetic.calls`,
the phone line and non-speech of ``ser calls generate``) from the clips of that fold's held-out
speakers only, scored exactly as nightly scoring scores a call (:func:`etl.scoring.recording.score_recording`)
by that fold's model, which never heard those speakers: its speaker population for the call-
role normalisation and a calibration map fitted on the other folds' out-of-fold predictions.
The rules and confidence floor are then chosen on those calls
(:func:`etl.training.calibration.select_operating_point`).

Pure compute plus one read of the clips table; nothing here commits.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session
from tqdm import tqdm

from etl.corpora.labels import is_negative_class
from etl.features.specs import FeatureSpec
from etl.scoring.recording import ScoringConfig, score_recording
from etl.synthetic.calls import CallGenConfig, GeneratedCall, generate_calls
from etl.synthetic.clips import ClipBank
from etl.synthetic.speech import hash_seed
from etl.synthetic.timeline import truly_escalated
from etl.training.calibration import TARGET_PRECISION, fit_map, select_operating_point
from etl.training.dataset import Dataset, Stacked, stack_rows
from etl.training.fitting import CVResult, fold_population
from etl.training.registry import LoadedModel

log = logging.getLogger(__name__)

CALL_SR = 8000


@dataclass(frozen=True, slots=True)
class TrainingCallsPlan:
    """How many calls to generate (spread over the folds), how long, and the seed."""

    n_calls: int = 100
    minutes: float = 2.0
    seed: int = 0


@dataclass(frozen=True, slots=True)
class FoldCalibration:
    """The out-of-fold probabilities the model's calibration map was fitted on, and its method:
    fold ``k``'s map is refitted on the rows of the other folds only."""

    method: str
    proba: np.ndarray  # (n, n_classes)
    y: np.ndarray  # (n,)
    folds: np.ndarray  # (n,) outer fold of each row

    def record_without(self, k: int) -> dict[str, Any]:
        keep = self.folds != k
        return {"method": self.method, "params": fit_map(self.method, self.proba[keep],
                                                         self.y[keep])}


def fold_model(dataset: Dataset, cv: CVResult, k: int, *, rows: Stacked, spec: FeatureSpec,
               speaker_normalisation: bool, shrinkage: Mapping[str, float],
               calibration: FoldCalibration | None, algorithm: str) -> LoadedModel:
    """Fold ``k``'s model as scoring loads a registered one: same features, its own training
    speakers' population (``rows``: the dataset as trained on, :func:`etl.training.dataset.stack_rows`),
    a calibration map that never saw fold ``k``."""
    population = (fold_population(rows, cv, k, shrinkage=shrinkage)
                  if speaker_normalisation else None)
    return LoadedModel(
        model_version_id=0, name=f"fold-{k}", version=0, classes=list(dataset.classes),
        label_scheme=dataset.label_scheme, feature_set_id=dataset.feature_set_id,
        feature_spec=spec, speaker_normalisation=speaker_normalisation, algorithm=algorithm,
        cv_uar=None, model=cv.fold_models[k], speaker_population=population,
        calibration=calibration.record_without(k) if calibration is not None else None,
        channel=spec.channel)


def fold_clip_sources(session: Session, actors: Iterable[int], *,
                      corpus: str | None) -> list[tuple[str, int, str, Path]]:
    """``(name, actor, canonical emotion, path)`` of every current clip of ``actors``: all their
    emotions, also those the label scheme leaves out (an upset customer may sound fearful)."""
    rows = session.execute(text(
        "SELECT c.clip_name, c.actor_id, c.emotion, c.path FROM clips c "
        "WHERE c.is_current AND c.actor_id = ANY(:actors) "
        "AND (CAST(:corpus AS text) IS NULL OR c.corpus = :corpus) ORDER BY c.id"),
        {"actors": [int(a) for a in actors], "corpus": corpus}).all()
    return [(str(r[0]), int(r[1]), str(r[2]), Path(r[3])) for r in rows]


def customer_side(result: Any, timeline: Iterable[Any], *, speaker: int, scenario: str,
                  fold: int) -> dict[str, Any]:
    """A scored call's customer segments as :func:`etl.training.calibration.select_operating_point`
    reads them (floor not applied yet: ``negative`` is the predicted class's polarity)."""
    segs = [s for s in result.segments if s.role == "customer"]
    return {
        "speaker": speaker, "scenario": scenario, "fold": fold,
        "truth": truly_escalated(timeline),
        "duration_s": float(result.duration_s),
        "start": np.array([s.start_s for s in segs], dtype=np.float64),
        "end": np.array([s.end_s for s in segs], dtype=np.float64),
        "negative": np.array([is_negative_class(s.emotion) for s in segs], dtype=bool),
        "confidence": np.array([s.confidence for s in segs], dtype=np.float64),
    }


def score_training_calls(
    session: Session,
    dataset: Dataset,
    cv: CVResult,
    *,
    spec: FeatureSpec,
    speaker_normalisation: bool,
    shrinkage: Mapping[str, float],
    calibration: FoldCalibration | None,
    algorithm: str,
    corpus: str | None = None,
    plan: TrainingCallsPlan = TrainingCallsPlan(),
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Customer sides of ``plan.n_calls`` generated calls, each scored by the fold model that
    never heard its speakers (see the module docstring).

    Raises
    ------
    ValueError
        No fold has clips of at least two emotions to build calls from (e.g. the audio files
        are gone): the caller keeps the pseudo-call operating point.
    """
    rows = stack_rows(dataset)
    per_fold = calls_per_fold(plan.n_calls, n_folds=int(cv.folds.max()) + 1)
    # the floor is chosen afterwards on the raw confidences: abstain nothing while scoring
    scoring = ScoringConfig(confidence_floor=0.0)
    calls: list[dict[str, Any]] = []
    bar = tqdm(total=sum(per_fold), desc="operating-point calls", unit="call",
               disable=not progress, leave=False)
    with tempfile.TemporaryDirectory(prefix="ser-train-calls-") as tmp:
        for k, n_calls in enumerate(per_fold):
            if n_calls == 0:
                continue
            generated = fold_calls(session, dataset, cv, k, n_calls=n_calls, plan=plan,
                                   corpus=corpus, folder=Path(tmp) / f"fold{k}")
            if not generated:
                bar.update(n_calls)
                continue
            model = fold_model(dataset, cv, k, rows=rows, spec=spec,
                               speaker_normalisation=speaker_normalisation,
                               shrinkage=shrinkage, calibration=calibration, algorithm=algorithm)
            for call in generated:
                result = score_recording(call.path, model=model, config=scoring)
                calls.append(customer_side(result, call.timeline, speaker=call.customer_actor,
                                           scenario=call.scenario, fold=k))
                bar.update(1)
    bar.close()
    if not calls:
        raise ValueError("no training calls could be generated")
    return calls


def calls_per_fold(n_calls: int, *, n_folds: int) -> list[int]:
    """``n_calls`` spread over ``n_folds`` folds as evenly as possible, the first folds first."""
    return [n_calls // n_folds + (1 if k < n_calls % n_folds else 0) for k in range(n_folds)]


def fold_calls(session: Session, dataset: Dataset, cv: CVResult, k: int, *, n_calls: int,
               plan: TrainingCallsPlan, corpus: str | None, folder: Path) -> list[GeneratedCall]:
    """``n_calls`` calls generated into ``folder`` from the clips of fold ``k``'s held-out
    speakers; none (logged) when their clips cannot make a call."""
    actors = np.unique(dataset.groups[cv.folds == k])
    try:
        bank = ClipBank.from_paths(fold_clip_sources(session, actors, corpus=corpus), sr=CALL_SR)
        return generate_calls(folder, n_calls=n_calls, minutes=plan.minutes, bank=bank,
                              seed=hash_seed("operating-point", plan.seed, k),
                              config=CallGenConfig(sr=CALL_SR))
    except ValueError as exc:
        log.warning("operating-point calls: fold %d has no calls (%s)", k, exc)
        return []


def operating_point_on_calls(calls: list[dict[str, Any]], *, seed: int,
                             plan: TrainingCallsPlan) -> dict[str, Any] | None:
    """:func:`etl.training.calibration.select_operating_point` on scored training calls."""
    confidences = np.concatenate([c["confidence"] for c in calls]) if calls else np.zeros(0)
    if confidences.size == 0:
        return None
    point = select_operating_point(
        calls, confidences=confidences, seed=seed,
        protocol=f"{len(calls)} generated {plan.minutes:g}-minute phone calls (etl.synthetic.calls, "
                 "seed-determined) from the training speakers, each scored by the fold model "
                 "that never heard its speakers (cross-fitted calibration map, fold population); "
                 "truth = customer > 50 % negative; highest recall at precision >= "
                 f"{TARGET_PRECISION:g} (else highest F0.5); cv_* chosen on other customers' "
                 "calls")
    if point is not None:
        point["chosen_on"] = "generated calls"
    return point
