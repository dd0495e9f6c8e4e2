"""Helpers for nightly-scoring tests and the benchmark: a tiny registered telephony model.

The model is trained on telephony features of synthetic clips (:class:`etl.synthetic.clips.ClipBank`),
registered through :mod:`etl.training.registry` like any trained model and pointed at by an alias.
Callers own the transaction.
"""

from __future__ import annotations

import hashlib

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sqlalchemy.orm import Session

from etl.corpora.labels import map_emotion
from etl.features.extraction import extract, feature_spec
from etl.features.store import ensure_feature_set
from etl.synthetic.clips import ClipBank
from etl.training.artifacts import dump_bundle, from_estimator
from etl.training.normalise import normalise_per_speaker
from etl.training.registry import register_model_version, set_alias

SCHEME = "callcentre4"


def train_tiny_model(
    session: Session,
    *,
    bank: ClipBank | None = None,
    channel: str = "telephony",
    speaker_normalisation: bool = True,
    alias: str | None = "production",
    name: str = "tiny-calls",
    feature_set: str = "rich",
) -> int:
    """Register a logistic regression on ``bank``'s clips (features ``feature_set``/``channel``);
    returns model_versions.id."""
    bank = bank or ClipBank.synthetic(actors=range(1, 5), per_emotion=2,
                                      emotions=("neutral", "calm", "happy", "sad", "angry"))
    spec = feature_spec(feature_set, channel)
    rows, labels, speakers = [], [], []
    for clip in bank.clips:
        label = map_emotion(SCHEME, clip.emotion)
        if label is None:
            continue
        rows.append(extract(clip.signal, bank.sr, spec))
        labels.append(label)
        speakers.append(clip.actor)
    X = np.vstack(rows)
    if speaker_normalisation:
        X = normalise_per_speaker(X, speakers)
    classes = sorted(set(labels))
    y = np.array([classes.index(label) for label in labels])
    estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, C=0.5))
    estimator.fit(X, y)
    artifact = dump_bundle(from_estimator(estimator, classes=classes, n_features=X.shape[1]))
    version = register_model_version(
        session, name=name, algorithm="logreg", params={"C": 0.5},
        feature_set_id=ensure_feature_set(session, spec), label_scheme=SCHEME, classes=classes,
        speaker_normalisation=speaker_normalisation, training_clip_ids=[],
        training_set_sha256=hashlib.sha256(X.tobytes()).hexdigest(), folds_sha256=None,
        seed=0, cv_uar=None, artifact=artifact)
    if alias:
        set_alias(session, version.id, alias=alias, reason="test fixture")
    return version.id
