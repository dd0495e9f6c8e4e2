"""Model registry (MLflow-like, in PostgreSQL): registered models, versions, metrics, aliases.

- ``register_model_version`` stores a trained model with its provenance (algorithm, params,
  feature set version, label scheme, exact training clip ids + hash, folds hash, code version
  (``etl.training.provenance``), artifact bytes + sha256) and its metric rows.
- ``resolve_version(session, ref)`` finds the version an alias (``production``), a
  model_versions.id (``"12"``) or ``"name:version"`` names. Loading it to score with is
  ``etl.training.loading``; choosing it by the audio's channel is
  ``etl.training.channel_selection``.
- ``set_alias`` / ``promote_if_better`` move aliases and record every move in alias_history.
- ``list_versions`` / ``describe_version`` show what is registered.

Functions take a Session and never commit: callers own the transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
from etl.training.artifacts import ARTIFACT_FORMAT, sha256_bytes
from etl.training.normalise import SpeakerPopulation
from etl.training.provenance import code_version

DEFAULT_ALIAS = "production"


class ModelNotFoundError(ValueError):
    """A model reference (alias, version id, name:version) matches no model version."""


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
# resolving a reference
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
