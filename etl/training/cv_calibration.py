"""Calibration and the escalation operating point of a cross-validated model, fitted on its
out-of-fold probabilities (the model itself never saw those rows' speakers)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from etl.training.calibration import fit_calibration
from etl.training.config import TrainConfig
from etl.training.dataset import Dataset, stack_rows
from etl.training.fitting import CVResult, fold_population
from etl.training.normalise import SpeakerPopulation, normalise_per_speaker
from etl.training.operating_point import (
    FoldCalibration,
    TrainingCallsPlan,
    operating_point_on_calls,
    score_training_calls,
)
from etl.training.registry import feature_spec_for

log = logging.getLogger(__name__)


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
