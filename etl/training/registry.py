"""Model registry (MLflow-like, in PostgreSQL): registered models, versions, metrics, aliases.

- ``register_model_version`` stores a trained model with its provenance (algorithm, params,
  feature set version, label scheme, exact training clip ids + hash, folds hash, code version,
  artifact bytes + sha256) and its metric rows.
- ``load_model(session, ref)`` resolves an alias (``production``), a model_versions.id (``"12"``)
  or ``"name:version"`` and returns a :class:`LoadedModel` whose artifact was sha256-verified and
  rebuilt from skops / XGBoost UBJ (never unpickled).
- ``set_alias`` / ``promote_if_better`` move aliases and record every move in alias_history.
- ``resolve_scoring_model(session, ref, bandwidth=...)`` picks the model for the audio's
  channel: ``<alias>-telephony`` (then ``<alias>`` if it is a telephony model) for narrowband
  audio, ``<alias>-studio`` / ``<alias>`` / ``<alias>-telephony`` for wideband. A studio model
  is never applied to narrowband audio unless asked for (:class:`ModelChannelError`).

Functions take a Session and never commit: callers own the transaction.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from db.models import (
    AliasHistory,
    FeatureSet,
    ModelAlias,
    ModelMetric,
    ModelVersion,
    RegisteredModel,
)
from etl.features.specs import FeatureSpec, feature_spec
from etl.scoring.point_in_use import site_point_record, with_site_point
from etl.training.artifacts import ARTIFACT_FORMAT, FittedModel, load_bundle, sha256_bytes
from etl.training.normalise import SpeakerPopulation, normalise_per_speaker

DEFAULT_ALIAS = "production"


class ModelNotFoundError(ValueError):
    """A model reference (alias, version id, name:version) matches no model version."""


class ModelChannelError(ModelNotFoundError):
    """The model a reference names was trained for another channel than the audio's."""


BANDWIDTHS = ("narrowband", "wideband")
CHANNEL_OF_BANDWIDTH = {"narrowband": "telephony", "wideband": "studio"}


def channel_alias(alias: str, channel: str) -> str:
    """The per-channel alias of ``alias``: ``production`` -> ``production-telephony``."""
    return f"{alias}-{channel}"


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


# ------------------------------------------------------------------------------------------------
# provenance helpers
# ------------------------------------------------------------------------------------------------


def code_version() -> str:
    """``git describe --always --dirty`` of the source tree, else the installed package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"], cwd=root, capture_output=True,
            text=True, timeout=5, check=True,
        )
        described = out.stdout.strip()
        if described:
            return f"git:{described}"[:64]
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return f"ser-analytics=={version('ser-analytics')}"
    except PackageNotFoundError:
        return "unknown"


# ------------------------------------------------------------------------------------------------
# registering
# ------------------------------------------------------------------------------------------------


def get_or_create_registered_model(
    session: Session, name: str, *, description: str | None = None
) -> RegisteredModel:
    """The registered model ``name``, created if new; row-locked so version numbers never clash."""
    model = session.scalars(
        select(RegisteredModel).where(RegisteredModel.name == name).with_for_update()
    ).one_or_none()
    if model is None:
        model = RegisteredModel(name=name, description=description)
        session.add(model)
        session.flush()
    return model


def register_model_version(
    session: Session,
    *,
    name: str,
    algorithm: str,
    params: dict[str, Any],
    feature_set_id: int,
    label_scheme: str,
    classes: list[str],
    speaker_normalisation: bool,
    training_clip_ids: Sequence[int],
    training_set_sha256: str,
    folds_sha256: str | None,
    seed: int,
    cv_uar: float | None,
    artifact: bytes,
    metrics: Sequence[dict[str, Any]] = (),
    description: str | None = None,
) -> ModelVersion:
    """Store one trained model version (next version number of ``name``) and its metric rows.

    ``metrics`` are dicts with keys of model_metrics (fold, metric, class_label, group_name,
    group_value, value, extra); they are bulk-inserted.
    """
    registered = get_or_create_registered_model(session, name, description=description)
    latest = session.scalar(
        select(func.max(ModelVersion.version)).where(
            ModelVersion.registered_model_id == registered.id)
    )
    version = ModelVersion(
        registered_model_id=registered.id,
        version=(latest or 0) + 1,
        algorithm=algorithm,
        params=params,
        feature_set_id=feature_set_id,
        label_scheme=label_scheme,
        classes=list(classes),
        speaker_normalisation=speaker_normalisation,
        training_clip_ids=[int(c) for c in training_clip_ids],
        training_set_sha256=training_set_sha256,
        folds_sha256=folds_sha256,
        seed=seed,
        code_version=code_version(),
        cv_uar=cv_uar,
        artifact_format=ARTIFACT_FORMAT,
        artifact=artifact,
        artifact_sha256=sha256_bytes(artifact),
    )
    session.add(version)
    session.flush()
    rows = [
        {"model_version_id": version.id, "fold": m.get("fold"), "metric": m["metric"],
         "class_label": m.get("class_label"), "group_name": m.get("group_name"),
         "group_value": m.get("group_value"), "value": float(m["value"]), "extra": m.get("extra")}
        for m in metrics
    ]
    if rows:
        session.execute(insert(ModelMetric), rows)
    return version


# ------------------------------------------------------------------------------------------------
# resolving and loading
# ------------------------------------------------------------------------------------------------


def resolve_version(session: Session, ref: str = DEFAULT_ALIAS) -> ModelVersion:
    """The model version ``ref`` names: an alias, a model_versions.id, or ``name:version``.

    Raises
    ------
    ModelNotFoundError
        Nothing matches; the message lists what exists.
    """
    ref = ref.strip()
    found: ModelVersion | None = None
    if ref.isdigit():
        found = session.get(ModelVersion, int(ref))
    elif ":" in ref:
        name, _, number = ref.rpartition(":")
        if number.isdigit():
            found = session.scalars(
                select(ModelVersion).join(RegisteredModel).where(
                    RegisteredModel.name == name, ModelVersion.version == int(number))
            ).one_or_none()
    else:
        alias = session.get(ModelAlias, ref)
        if alias is not None:
            found = session.get(ModelVersion, alias.model_version_id)
    if found is None:
        n_versions = session.scalar(select(func.count()).select_from(ModelVersion)) or 0
        aliases = session.scalars(select(ModelAlias.alias).order_by(ModelAlias.alias)).all()
        if n_versions == 0:
            hint = "no model is registered yet; train one with `ser train`"
        else:
            hint = (f"{n_versions} version(s) registered, aliases: {', '.join(aliases) or 'none'}; "
                    "see `ser models list`")
        raise ModelNotFoundError(f"no model version matches {ref!r} (alias, version id or "
                                 f"name:version): {hint}")
    return found


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
    """`load_model` of a resolved version (e.g. from :func:`resolve_scoring_model`)."""
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


def model_channel(session: Session, mv: ModelVersion) -> str:
    """The feature channel (``studio``/``telephony``) model version ``mv`` was trained on."""
    row = session.get(FeatureSet, mv.feature_set_id)
    if row is None:
        raise ModelNotFoundError(f"feature set id {mv.feature_set_id} does not exist")
    return str(row.channel)


def resolve_scoring_model(
    session: Session, ref: str = DEFAULT_ALIAS, *, bandwidth: str,
    allow_channel_mismatch: bool = False,
) -> ModelVersion:
    """The model version to score audio of ``bandwidth`` with, given the user's ``ref``.

    ``ref`` an alias (``production``): narrowband audio takes ``production-telephony``, else
    ``production`` if that is a telephony model; wideband audio (16 kHz VoIP calls) takes
    ``production-telephony`` too when it is set (a telephony model hears wideband audio
    band-limited, as it was trained, and a batch that mixes lines gets one model that serves
    all of them), else ``production-studio``, else ``production``. ``ref`` a version id or ``name:version``: that version,
    checked against the audio.

    Parameters
    ----------
    bandwidth : "narrowband" (phone audio: 8 kHz or nothing above ~3.4 kHz) or "wideband"
    allow_channel_mismatch : score narrowband audio with a studio model anyway (the caller
        should record a warning); default refuses

    Raises
    ------
    ModelChannelError
        Only a studio model is available for narrowband audio (the message says what to do).
    ModelNotFoundError
        ``ref`` matches nothing.
    """
    if bandwidth not in BANDWIDTHS:
        raise ValueError(f"bandwidth must be one of {', '.join(BANDWIDTHS)}, not {bandwidth!r}")
    ref = ref.strip()
    narrow = bandwidth == "narrowband"
    is_alias = not ref.isdigit() and ":" not in ref
    if is_alias:
        order = ([channel_alias(ref, "telephony"), ref] if narrow else
                 [channel_alias(ref, "telephony"), channel_alias(ref, "studio"), ref])
        for name in order:
            mv = alias_target(session, name)
            if mv is not None and (not narrow or model_channel(session, mv) == "telephony"):
                return mv
    mv = resolve_version(session, ref)  # raises ModelNotFoundError when nothing matches
    if narrow and model_channel(session, mv) != "telephony" and not allow_channel_mismatch:
        registered = session.get(RegisteredModel, mv.registered_model_id)
        label = f"{registered.name if registered else '?'} v{mv.version} (id {mv.id})"
        where = (f"alias {ref!r} points at a studio-trained model {label} and no "
                 f"{channel_alias(ref, 'telephony')!r} alias is set" if is_alias
                 else f"{ref!r} is a studio-trained model {label}")
        raise ModelChannelError(
            f"narrowband (phone) audio: {where}; its scores on phone audio are not trustworthy. Train a telephony model (`ser "
            f"features` then `ser train`, whose defaults train for phone audio; the first one "
            f"becomes {channel_alias(DEFAULT_ALIAS, 'telephony')!r}) or point an alias at one "
            f"(`ser models promote ID --alias {channel_alias(DEFAULT_ALIAS, 'telephony')}`)")
    return mv


# ------------------------------------------------------------------------------------------------
# aliases
# ------------------------------------------------------------------------------------------------


def alias_target(session: Session, alias: str = DEFAULT_ALIAS) -> ModelVersion | None:
    row = session.get(ModelAlias, alias)
    return None if row is None else session.get(ModelVersion, row.model_version_id)


def set_alias(
    session: Session, model_version_id: int, *, alias: str = DEFAULT_ALIAS,
    reason: str | None = None,
) -> int | None:
    """Point ``alias`` at ``model_version_id``, recording the move; returns the previous target."""
    if session.get(ModelVersion, model_version_id) is None:
        raise ModelNotFoundError(f"model version {model_version_id} does not exist")
    row = session.get(ModelAlias, alias, with_for_update=True)
    previous = None if row is None else row.model_version_id
    if row is None:
        session.add(ModelAlias(alias=alias, model_version_id=model_version_id))
    else:
        row.model_version_id = model_version_id
        row.updated_at = dt.datetime.now(dt.UTC)
    session.add(AliasHistory(alias=alias, model_version_id=model_version_id,
                             previous_model_version_id=previous, reason=reason))
    session.flush()
    return previous


@dataclass(frozen=True, slots=True)
class PromotionDecision:
    promoted: bool
    message: str
    previous_model_version_id: int | None = None


def promote_if_better(
    session: Session, model_version_id: int, *, alias: str = DEFAULT_ALIAS
) -> PromotionDecision:
    """Move ``alias`` to the candidate only if its CV UAR beats the current target's on the same folds.

    Rules: no current target -> promote. Different folds hash (other clips, seed or fold count)
    -> the scores are not comparable -> keep the current model. Otherwise promote iff the
    candidate's UAR is strictly higher.
    """
    candidate = session.get(ModelVersion, model_version_id)
    if candidate is None:
        raise ModelNotFoundError(f"model version {model_version_id} does not exist")
    current = alias_target(session, alias)
    if current is None:
        set_alias(session, candidate.id, alias=alias,
                  reason=f"first {alias} model (UAR {_fmt(candidate.cv_uar)})")
        return PromotionDecision(True, f"promoted version {candidate.id} to {alias!r}: "
                                       f"no {alias} model before")
    if current.id == candidate.id:
        return PromotionDecision(False, f"version {candidate.id} already is {alias!r}", current.id)
    if not candidate.folds_sha256 or candidate.folds_sha256 != current.folds_sha256:
        return PromotionDecision(
            False, f"not promoted: version {candidate.id} was evaluated on different folds than "
                   f"{alias} version {current.id} (folds hash {str(candidate.folds_sha256)[:10]} vs "
                   f"{str(current.folds_sha256)[:10]}), so their UARs are not comparable; promote "
                   f"explicitly with `ser models promote {candidate.id}` if intended", current.id)
    if candidate.cv_uar is not None and (current.cv_uar is None
                                         or candidate.cv_uar > current.cv_uar):
        set_alias(session, candidate.id, alias=alias,
                  reason=f"UAR {_fmt(candidate.cv_uar)} > {_fmt(current.cv_uar)} on the same folds")
        return PromotionDecision(True, f"promoted version {candidate.id} to {alias!r}: UAR "
                                       f"{_fmt(candidate.cv_uar)} > {_fmt(current.cv_uar)} "
                                       f"(version {current.id})", current.id)
    return PromotionDecision(False, f"not promoted: UAR {_fmt(candidate.cv_uar)} does not beat "
                                    f"{alias} version {current.id} ({_fmt(current.cv_uar)})",
                             current.id)


def _summarised_params(params: dict[str, Any] | None) -> dict[str, Any]:
    """``params`` with the (large) stored training-speaker statistics reduced to their size."""
    out = dict(params or {})
    population = SpeakerPopulation.from_json(out.get("speaker_population"))
    if population is not None:
        out["speaker_population"] = (f"{population.n_speakers} training speakers x "
                                     f"{population.means.shape[1]} features")
    return out


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


# ------------------------------------------------------------------------------------------------
# listing
# ------------------------------------------------------------------------------------------------


def list_versions(session: Session) -> list[dict[str, Any]]:
    """One dict per model version (newest first) with its aliases; no artifact bytes."""
    aliases: dict[int, list[str]] = {}
    for alias in session.scalars(select(ModelAlias)):
        aliases.setdefault(alias.model_version_id, []).append(alias.alias)
    rows = session.execute(
        select(ModelVersion.id, RegisteredModel.name, ModelVersion.version, ModelVersion.algorithm,
               ModelVersion.label_scheme, FeatureSet.name.label("feature_set"),
               FeatureSet.channel, FeatureSet.version.label("feature_set_version"),
               ModelVersion.speaker_normalisation, ModelVersion.cv_uar,
               func.cardinality(ModelVersion.training_clip_ids).label("n_clips"),
               ModelVersion.created_at)
        .join(RegisteredModel, RegisteredModel.id == ModelVersion.registered_model_id)
        .join(FeatureSet, FeatureSet.id == ModelVersion.feature_set_id)
        .order_by(ModelVersion.id.desc())
    ).mappings().all()
    return [dict(r) | {"aliases": sorted(aliases.get(r["id"], []))} for r in rows]


def describe_version(session: Session, ref: str) -> dict[str, Any]:
    """Everything about one version except artifact bytes: provenance, headline metrics, aliases."""
    mv = resolve_version(session, ref)
    registered = session.get(RegisteredModel, mv.registered_model_id)
    feature_set = session.get(FeatureSet, mv.feature_set_id)
    assert registered is not None and feature_set is not None
    pooled = session.execute(
        select(ModelMetric.metric, ModelMetric.class_label, ModelMetric.value).where(
            ModelMetric.model_version_id == mv.id, ModelMetric.fold.is_(None),
            ModelMetric.group_name.is_(None))
    ).all()
    headline = {m: v for m, c, v in pooled if c is None and m != "confusion"}
    per_class: dict[str, dict[str, float]] = {}
    for m, c, v in pooled:
        if c is not None and m in ("precision", "recall", "roc_auc"):
            per_class.setdefault(c, {})[m] = v
    folds = session.execute(
        select(ModelMetric.fold, ModelMetric.value).where(
            ModelMetric.model_version_id == mv.id, ModelMetric.metric == "uar",
            ModelMetric.fold.is_not(None), ModelMetric.group_name.is_(None))
        .order_by(ModelMetric.fold)
    ).all()
    groups = session.execute(
        select(ModelMetric.group_name, ModelMetric.group_value, ModelMetric.value).where(
            ModelMetric.model_version_id == mv.id, ModelMetric.metric == "uar",
            ModelMetric.group_name.is_not(None), ModelMetric.group_name != "feature")
        .order_by(ModelMetric.group_name, ModelMetric.group_value)
    ).all()
    importances = session.execute(
        select(ModelMetric.group_value, ModelMetric.value).where(
            ModelMetric.model_version_id == mv.id, ModelMetric.metric == "feature_importance")
        .order_by(ModelMetric.value.desc()).limit(10)
    ).all()
    aliases = session.scalars(
        select(ModelAlias.alias).where(ModelAlias.model_version_id == mv.id)).all()
    return {
        "id": mv.id, "name": registered.name, "version": mv.version, "aliases": sorted(aliases),
        "algorithm": mv.algorithm, "label_scheme": mv.label_scheme, "classes": list(mv.classes),
        "feature_set": f"{feature_set.name}/{feature_set.channel} v{feature_set.version} "
                       f"(id {feature_set.id}, {len(feature_set.feature_names)} features)",
        "speaker_normalisation": mv.speaker_normalisation, "seed": mv.seed,
        "n_training_clips": len(mv.training_clip_ids),
        "training_set_sha256": mv.training_set_sha256, "folds_sha256": mv.folds_sha256,
        "code_version": mv.code_version, "created_at": mv.created_at.isoformat(),
        "artifact": f"{mv.artifact_format}, {len(mv.artifact)} bytes, sha256 {mv.artifact_sha256}",
        "params": _summarised_params(mv.params), "cv_uar": mv.cv_uar, "pooled_metrics": headline,
        "per_class": per_class, "fold_uar": {int(f): v for f, v in folds},
        "group_uar": {f"{g}={v}": x for g, v, x in groups},
        "top_features": {f: v for f, v in importances},
    }
