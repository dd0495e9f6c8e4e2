"""Calibration and the escalation operating point of a cross-validated model, fitted on its
out-of-fold predictions.

One fold scheme throughout, the outer cross-validation folds: whatever fold ``k``'s speakers say
(their out-of-fold clips, pseudo-calls of their clips, calls generated from their clips) is
predicted by fold ``k``'s model, normalised toward fold ``k``'s training speakers and calibrated
by a map fitted on the other folds' out-of-fold predictions, so nothing that scores a speaker
ever saw it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from etl.corpora.labels import is_negative_class
from etl.features.specs import FeatureSpec, feature_spec
from etl.training.calibration import cross_fit, fit_calibration, fit_map
from etl.training.config import TrainConfig
from etl.training.dataset import Dataset, stack_rows
from etl.training.fitting import CVResult, fold_population
from etl.training.loading import LoadedModel, feature_spec_for
from etl.training.operating_point.generated_calls import generated_call_sides
from etl.training.operating_point.pseudo_calls import PER_SPEAKER, pseudo_call_sides
from etl.training.operating_point.selection import TARGET_PRECISION, choose_point

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)  # hashed by identity: model() caches per instance
class FoldScorers:
    """What scores fold ``k``'s speakers (:meth:`model`): fold ``k``'s model reading ``spec``
    features, its training speakers' population (speaker-normalised models) and a calibration
    map fitted on the other folds' rows of the calibration arrays ``proba``, ``y``, ``folds``."""

    dataset: Dataset
    cv: CVResult
    config: TrainConfig
    method: str
    proba: np.ndarray
    y: np.ndarray
    folds: np.ndarray
    spec: FeatureSpec

    @cache  # noqa: B019 - one FoldScorers per training run
    def model(self, k: int) -> LoadedModel:
        """Fold ``k``'s model as scoring loads a registered one."""
        d, config, keep = self.dataset, self.config, self.folds != k
        calibration = None if self.method == "none" else {
            "method": self.method, "params": fit_map(self.method, self.proba[keep], self.y[keep])}
        population = None if not config.speaker_normalisation else fold_population(
            stack_rows(d), self.cv, k, shrinkage=config.population_shrinkage())
        return LoadedModel(
            model_version_id=0, name=f"fold-{k}", version=0, classes=list(d.classes),
            label_scheme=d.label_scheme, feature_set_id=d.feature_set_id, feature_spec=self.spec,
            speaker_normalisation=config.speaker_normalisation, algorithm=config.algorithm,
            cv_uar=None, model=self.cv.fold_models[k], channel=self.spec.channel,
            speaker_population=population, calibration=calibration)

    def per_pseudo_call(self, index: np.ndarray, call: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of calibration rows ``index``, each pseudo-call's rows
        (``call``) normalised together as scoring normalises a call's role."""
        stacked = stack_rows(self.dataset)  # the copies follow the recorded clips
        offset = stacked.n if len(self.proba) != len(self.dataset.y) else 0
        out = np.empty((len(index), len(self.dataset.classes)))
        for k in np.unique(self.folds[index]):
            mask = self.folds[index] == k
            out[mask] = self.model(int(k)).predict_proba(stacked.X[index[mask] + offset],
                                                         speakers=call[mask])
        return out


def calibration_record(dataset: Dataset, cv: CVResult, config: TrainConfig, *,
                       session: Session | None = None, progress: bool = False) -> dict[str, Any]:
    """:func:`etl.training.calibration.fit_calibration` on the out-of-fold probabilities of the
    audio the model is for, with the escalation operating point (``operating_point``) chosen on
    ``config.operating_point_calls`` generated calls of the training speakers (needs ``session``:
    the clips' audio), or on pseudo-calls of their clips when there are none."""
    # the phone copies when the model trained on them, else the recorded clips
    if dataset.augmented is not None and cv.aug_proba is not None:
        proba, rows, audio = cv.aug_proba, dataset.augmented.row, "phone copies"
    else:
        proba, rows, audio = cv.proba, np.arange(len(dataset.y)), "recorded clips"
    y, groups, folds = dataset.y[rows], dataset.groups[rows], cv.folds[rows]
    try:
        record = fit_calibration(proba, y, classes=dataset.classes, groups=groups, folds=folds)
    except ValueError as exc:  # too little data to fit one: the model scores uncalibrated
        log.warning("no calibration: %s", exc)
        return {"method": "none", "reason": str(exc)[:300], "fitted_on": audio}
    if "reason" in record or len({is_negative_class(c) for c in dataset.classes}) < 2:
        return {**record, "operating_point": None, "fitted_on": audio}
    spec = (feature_spec_for(session, dataset.feature_set_id) if session is not None
            else feature_spec(config.feature_set, config.channel))
    scorers = FoldScorers(dataset, cv, config, record["method"], proba, y, folds, spec)
    choice = (f"truth = customer > 50 % negative; highest recall at precision >= "
              f"{TARGET_PRECISION:g} (else highest F0.5); cv_* chosen on other ")
    point = None
    if session is not None and config.operating_point_calls > 0:
        sides = generated_call_sides(
            session, actors_by_fold=[np.unique(dataset.groups[cv.folds == k])
                                     for k in range(int(cv.folds.max()) + 1)],
            fold_model=scorers.model, n_calls=config.operating_point_calls,
            minutes=config.operating_point_call_minutes, seed=config.seed, corpus=config.corpus,
            progress=progress)
        point = choose_point(sides, seed=config.seed, protocol=(
            f"{len(sides)} generated {config.operating_point_call_minutes:g}-minute phone calls "
            "(etl.synthetic.calls, seed-determined) from the training speakers, each scored by "
            "the fold model that never heard its speakers (cross-fitted calibration map, fold "
            f"population); {choice}customers' calls"))
        if point is None:
            log.warning("escalation operating point on pseudo-calls: no generated call was scored")
        else:
            point["chosen_on"] = "generated calls"
    if point is None:
        calibrated = cross_fit(record["method"], proba, y, folds)
        sides = pseudo_call_sides(
            y, classes=dataset.classes, groups=groups, folds=folds, seed=config.seed,
            predict=scorers.per_pseudo_call if config.speaker_normalisation
            else lambda rows, _call: calibrated[rows])
        point = choose_point(sides, seed=config.seed, protocol=(
            f"{PER_SPEAKER} pseudo-calls per training speaker from cross-fitted calibrated "
            f"out-of-fold clip predictions (generator scenarios and weights); {choice}speakers' "
            "pseudo-calls (speaker-grouped folds)"))
        if point is not None:
            point["pseudo_call_normalisation"] = (
                "per pseudo-call, as scoring normalises a call's role"
                if config.speaker_normalisation else "none (clip predictions as they are)")
    return {**record, "operating_point": point, "fitted_on": audio}
