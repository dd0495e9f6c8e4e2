"""Loading a registered model version to score with: :class:`LoadedModel` and the functions
that build it.

- ``load_model(session, ref)`` resolves an alias (``production``), a model_versions.id (``"12"``)
  or ``"name:version"`` and returns a :class:`LoadedModel` whose artifact was sha256-verified and
  rebuilt from skops / XGBoost UBJ (never unpickled); ``load_version`` does the same for a
  version already resolved (e.g. by ``etl.training.channel_selection.resolve_scoring_model``).
- ``feature_spec_for`` rebuilds the FeatureSpec a model's features were computed with.

Functions take a Session and never commit: callers own the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from db.models import FeatureSet, ModelVersion, RegisteredModel
from etl.features.specs import FeatureSpec, feature_spec
from etl.scoring.point_in_use import site_point_record, with_site_point
from etl.training.artifacts import FittedModel, load_bundle
from etl.training.normalise import SpeakerPopulation, normalise_per_speaker
from etl.training.registry import DEFAULT_ALIAS, ModelNotFoundError, resolve_version


@dataclass
class LoadedModel:
    """A registered model version ready to score feature rows.

    ``predict_proba`` expects rows of ``feature_spec`` features. When ``speaker_normalisation`` is
    true the model was trained on per-speaker z-scored rows: either pass rows already normalised
    with :func:`etl.training.normalise.normalise_per_speaker`, or pass ``speakers=`` and it is done here.
    ``speaker_population`` (stored at training time in ``params["speaker_population"]``; None
    for models registered before it) lets speakers with only a few rows be normalised too.
    ``calibration`` (``params["calibration"]``, `etl.training.calibration`; None for models registered
    before it) is applied by ``predict_proba``. ``channel`` is the feature channel the model
    was trained on (``studio`` or ``telephony``).
    """

    model_version_id: int
    name: str
    version: int
    classes: list[str]
    label_scheme: str
    feature_set_id: int
    feature_spec: FeatureSpec
    speaker_normalisation: bool
    algorithm: str
    cv_uar: float | None
    model: FittedModel
    speaker_population: SpeakerPopulation | None = None
    calibration: dict[str, Any] | None = None
    channel: str = "studio"

    def predict_proba(
        self, X: np.ndarray, *, speakers: Sequence[object] | None = None
    ) -> np.ndarray:
        """Probabilities, shape (n, len(classes)); column k is ``classes[k]``.

        Parameters
        ----------
        X : ndarray, shape (n, n_features)
        speakers : sequence of length n, optional
            Speaker key per row; if given and the model uses speaker normalisation, rows are
            normalised per speaker first (small groups shrunk toward ``speaker_population``).
            Ignored for models without speaker normalisation.
        """
        X = np.asarray(X, dtype=np.float32)
        if self.speaker_normalisation and speakers is not None:
            X = normalise_per_speaker(X, speakers, population=self.speaker_population)
        proba = self.model.predict_proba(X)
        if self.calibration is None:
            return proba
        # scipy.optimize (calibration fitting) stays off the `ser models` path until a
        # calibrated model predicts
        from etl.training.calibration import apply_calibration

        return apply_calibration(self.calibration, proba)

    def predict(self, X: np.ndarray, *, speakers: Sequence[object] | None = None) -> list[str]:
        """Predicted class label per row."""
        proba = self.predict_proba(X, speakers=speakers)
        return [self.classes[k] for k in proba.argmax(axis=1)]

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


def feature_spec_for(session: Session, feature_set_id: int) -> FeatureSpec:
    """The FeatureSpec a feature_sets row was computed with (its stored params, not today's)."""
    row = session.get(FeatureSet, feature_set_id)
    if row is None:
        raise ModelNotFoundError(f"feature set id {feature_set_id} does not exist")
    current = feature_spec(row.name, row.channel)
    if current.params_hash == row.params_hash:
        return current
    # The code's defaults moved on since this model was trained: rebuild the old spec from the
    # stored params so features are extracted exactly as at training time.
    return FeatureSpec(name=row.name, channel=row.channel,
                       sample_rate=int(row.params.get("sample_rate", current.sample_rate)),
                       params={k: v for k, v in row.params.items() if k != "sample_rate"},
                       feature_names=list(row.feature_names),
                       params_hash=row.params_hash)


def load_model(session: Session, ref: str = DEFAULT_ALIAS) -> LoadedModel:
    """Resolve ``ref``, verify the artifact's sha256 and rebuild the model (no unpickling).

    Raises
    ------
    ModelNotFoundError
        ``ref`` matches nothing.
    etl.training.artifacts.ArtifactError
        The stored bytes do not match their sha256, or contain untrusted types.
    """
    return load_version(session, resolve_version(session, ref))


def load_version(session: Session, mv: ModelVersion) -> LoadedModel:
    """`load_model` of a resolved version (e.g. from
    :func:`etl.training.channel_selection.resolve_scoring_model`)."""
    registered = session.get(RegisteredModel, mv.registered_model_id)
    assert registered is not None
    model = load_bundle(bytes(mv.artifact), expected_sha256=mv.artifact_sha256)
    spec = feature_spec_for(session, mv.feature_set_id)
    calibration = (mv.params or {}).get("calibration")
    # once a site has calibrated on its own reviews, that point replaces the model's
    calibration = with_site_point(calibration if isinstance(calibration, dict) else None,
                                  site_point_record(session, mv.id))
    return LoadedModel(
        model_version_id=mv.id, name=registered.name, version=mv.version,
        classes=list(mv.classes), label_scheme=mv.label_scheme, feature_set_id=mv.feature_set_id,
        feature_spec=spec,
        speaker_normalisation=mv.speaker_normalisation, algorithm=mv.algorithm,
        cv_uar=mv.cv_uar, model=model,
        speaker_population=SpeakerPopulation.from_json((mv.params or {}).get("speaker_population")),
        calibration=dict(calibration) if isinstance(calibration, dict) else None,
        channel=spec.channel,
    )
