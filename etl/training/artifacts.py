"""Model artifacts in a safe, inspectable format: a zip "bundle", never pickle.

A bundle is a ZIP archive holding ``manifest.json`` and one file per ensemble member:

- ``memberN.skops``: a fitted scikit-learn estimator/pipeline in skops format, loaded with an
  explicit allowlist of trusted types (anything else in the file is refused);
- ``memberN.ubj``: a fitted XGBoost model in XGBoost's own UBJSON format.

``predict_proba`` is the weighted mean of the members' class probabilities (a single model is a
bundle with one member). The bytes are identified by sha256; ``load_bundle`` verifies it before
parsing anything, so a tampered artifact is refused instead of executed or silently used.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

ARTIFACT_FORMAT = "ser-bundle-v1"

# Types skops does not trust by default but that the families in etl/training/models.py need.
# Listing them explicitly (instead of trusting whatever a file declares) is the point of skops.
TRUSTED_SKOPS_TYPES: frozenset[str] = frozenset({
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "sklearn.tree._tree.Tree",
})


class ArtifactError(ValueError):
    """An artifact is corrupt, tampered with, or contains types we do not trust."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class FittedModel:
    """A fitted classifier over integer class codes ``0..len(classes)-1``.

    Attributes
    ----------
    classes : list[str]
        Class labels; column ``k`` of ``predict_proba`` is ``classes[k]``.
    members : list
        Fitted estimators, each with ``predict_proba(X) -> (n, len(classes))``.
    weights : list[float]
        Soft-voting weight per member.
    n_features : int
        Width of the feature rows the members were fitted on.
    """

    classes: list[str]
    members: list[Any]
    weights: list[float] = field(default_factory=list)
    n_features: int = 0

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (n, len(classes)), rows summing to 1."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or (self.n_features and X.shape[1] != self.n_features):
            raise ValueError(f"expected feature rows of width {self.n_features}; got {X.shape}")
        weights = self.weights or [1.0] * len(self.members)
        total = np.zeros((X.shape[0], len(self.classes)), dtype=np.float64)
        for weight, member in zip(weights, self.members, strict=True):
            total += weight * _member_proba(member, X, len(self.classes))
        total /= float(sum(weights))
        return total

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Integer class codes, shape (n,)."""
        return self.predict_proba(X).argmax(axis=1)


def _member_proba(member: Any, X: np.ndarray, n_classes: int) -> np.ndarray:
    proba = np.asarray(member.predict_proba(X), dtype=np.float64)
    if proba.shape[1] != n_classes:
        # A member that never saw a class has no column for it: place columns by its classes_.
        full = np.zeros((X.shape[0], n_classes))
        full[:, np.asarray(member.classes_, dtype=int)] = proba
        proba = full
    return proba


def from_estimator(estimator: Any, *, classes: list[str], n_features: int) -> FittedModel:
    """Wrap a fitted estimator (a VotingClassifier becomes one member per voter; a pipeline
    ending in an estimator that exposes a plain equivalent as ``pooled_``, such as
    `etl.training.models.VoicePooledLogisticRegression`, ends in that equivalent, so bundles
    hold library types only)."""
    from sklearn.ensemble import VotingClassifier
    from sklearn.pipeline import Pipeline

    if isinstance(estimator, Pipeline) and hasattr(estimator.steps[-1][1], "pooled_"):
        estimator = Pipeline([*estimator.steps[:-1],
                              (estimator.steps[-1][0], estimator.steps[-1][1].pooled_)])

    if isinstance(estimator, VotingClassifier):
        members = list(estimator.estimators_)
        weights = list(estimator.weights) if estimator.weights is not None else [1.0] * len(members)
        return FittedModel(classes, members, [float(w) for w in weights], n_features)
    return FittedModel(classes, [estimator], [1.0], n_features)


# The libraries whose numbers a bundle depends on: the estimators' own code (scikit-learn,
# XGBoost), their arrays (NumPy) and the features fed to them (librosa's filter banks).
VERSIONED_LIBRARIES = ("numpy", "scikit-learn", "xgboost", "librosa")


def library_versions() -> dict[str, str]:
    """Installed versions of :data:`VERSIONED_LIBRARIES` (recorded in every new bundle)."""
    out: dict[str, str] = {}
    for dist in VERSIONED_LIBRARIES:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out


def version_changes(trained: dict[str, str]) -> list[str]:
    """One line per library whose major version differs from the one a bundle was trained
    with (bundles from before versions were recorded have none to compare)."""
    now = library_versions()
    return [f"{dist} {then} at training, {now[dist]} now" for dist, then in sorted(trained.items())
            if dist in now and then.split(".")[0] != now[dist].split(".")[0]]


def _is_xgboost(member: Any) -> bool:
    return type(member).__module__.startswith("xgboost")


def dump_bundle(model: FittedModel) -> bytes:
    """Serialise ``model`` to bundle bytes (deterministic: fixed zip timestamps and order)."""
    import skops.io as sio

    buffer = io.BytesIO()
    manifest: dict[str, Any] = {"format": ARTIFACT_FORMAT, "classes": model.classes,
                                "n_features": model.n_features, "members": [],
                                "versions": library_versions()}
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for index, (weight, member) in enumerate(zip(model.weights, model.members, strict=True)):
            if _is_xgboost(member):
                name, kind = f"member{index}.ubj", "xgboost"
                data = bytes(member.get_booster().save_raw("ubj"))
            else:
                name, kind = f"member{index}.skops", "skops"
                data = sio.dumps(member)
            manifest["members"].append({"file": name, "kind": kind, "weight": weight,
                                        "type": f"{type(member).__module__}.{type(member).__name__}"})
            _write(archive, name, data)
        _write(archive, "manifest.json", json.dumps(manifest, indent=1, sort_keys=True).encode())
    return buffer.getvalue()


def _write(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=(2000, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data)


def load_bundle(data: bytes, *, expected_sha256: str) -> FittedModel:
    """Verify ``data`` against ``expected_sha256``, then rebuild the model without unpickling.

    Raises
    ------
    ArtifactError
        sha256 mismatch, a malformed bundle, or a skops file declaring an untrusted type.
    """
    actual = sha256_bytes(data)
    if actual != expected_sha256:
        raise ArtifactError(
            f"artifact sha256 mismatch: stored {expected_sha256[:12]}..., bytes hash to "
            f"{actual[:12]}...; the artifact was modified or corrupted, refusing to load it"
        )
    import skops.io as sio

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            manifest = json.loads(archive.read("manifest.json"))
            if manifest.get("format") != ARTIFACT_FORMAT:
                raise ArtifactError(f"unknown artifact format {manifest.get('format')!r}")
            changes = version_changes(manifest.get("versions") or {})
            if changes:
                log.warning("model bundle trained with other major library versions (%s): its "
                            "scores may differ from those measured at training; retrain to be "
                            "sure", "; ".join(changes))
            members: list[Any] = []
            weights: list[float] = []
            for entry in manifest["members"]:
                blob = archive.read(entry["file"])
                if entry["kind"] == "xgboost":
                    from xgboost import XGBClassifier

                    member = XGBClassifier()
                    member.load_model(bytearray(blob))
                elif entry["kind"] == "skops":
                    untrusted = set(sio.get_untrusted_types(data=blob))
                    refused = sorted(untrusted - TRUSTED_SKOPS_TYPES)
                    if refused:
                        raise ArtifactError(f"artifact contains untrusted types: {refused}")
                    member = sio.loads(blob, trusted=sorted(untrusted))
                else:
                    raise ArtifactError(f"unknown member kind {entry['kind']!r}")
                members.append(member)
                weights.append(float(entry["weight"]))
    except ArtifactError:
        raise
    except Exception as exc:
        # whatever a library raises on bytes it cannot read (zip, JSON, an XGBoost model of
        # random bytes: UnicodeDecodeError, XGBoostError, ...)
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise ArtifactError(f"malformed model artifact: {type(exc).__name__}"
                            f"{': ' + detail if detail else ''}") from exc
    return FittedModel(list(manifest["classes"]), members, weights, int(manifest["n_features"]))
