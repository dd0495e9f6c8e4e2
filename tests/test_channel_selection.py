"""The right model for the audio: channel aliases, no studio model on narrowband audio, level
robustness, copies that never leak across folds, calibration applied by the loaded model."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from db.models import ModelVersion
from etl.features.extraction import FeatureSpec, extract, feature_spec
from etl.synthetic.clips import ClipBank
from etl.synthetic.history import make_corpus, make_feature_set, make_model_version
from etl.training.calibration import apply_calibration, fit_calibration
from etl.training.channel_selection import ModelChannelError, resolve_scoring_model
from etl.training.config import TrainConfig
from etl.training.dataset import AugmentedRows, Dataset
from etl.training.fitting import cross_validate
from etl.training.folds import make_folds
from etl.training.loading import load_model
from etl.training.registry import ModelNotFoundError, set_alias
from tests.utils.nightly import train_tiny_model


@pytest.fixture()
def two_models(db_session: Session) -> dict[str, int]:
    clips = make_corpus(db_session, n_actors=2, clips_per_emotion=1)
    studio = make_model_version(db_session, clip_ids=clips, name="studio-model",
                                feature_set_id=make_feature_set(db_session, channel="studio"),
                                with_metrics=False)
    phone = make_model_version(db_session, clip_ids=clips, name="phone-model",
                               feature_set_id=make_feature_set(db_session, channel="telephony"),
                               with_metrics=False)
    return {"studio": studio, "telephony": phone}


def test_narrowband_audio_never_gets_a_studio_model(db_session: Session,
                                                    two_models: dict[str, int]) -> None:
    set_alias(db_session, two_models["studio"], alias="production")
    with pytest.raises(ModelChannelError, match="studio-trained model studio-model v1"):
        resolve_scoring_model(db_session, "production", bandwidth="narrowband")
    with pytest.raises(ModelChannelError, match="narrowband"):
        resolve_scoring_model(db_session, str(two_models["studio"]), bandwidth="narrowband")
    # asked for explicitly, the caller gets it (and must warn)
    assert resolve_scoring_model(db_session, "production", bandwidth="narrowband",
                                 allow_channel_mismatch=True).id == two_models["studio"]
    assert resolve_scoring_model(db_session, "production",
                                 bandwidth="wideband").id == two_models["studio"]
    # a telephony model, once there is one, serves calls of every bandwidth: wideband VoIP
    # calls and a batch mixing lines (bench/calls_accuracy.py --calls field)
    set_alias(db_session, two_models["telephony"], alias="production-telephony")
    assert resolve_scoring_model(db_session, "production",
                                 bandwidth="narrowband").id == two_models["telephony"]
    assert resolve_scoring_model(db_session, "production",
                                 bandwidth="wideband").id == two_models["telephony"]
    # ... a studio alias included (calls are phone calls, however wide the line)
    set_alias(db_session, two_models["studio"], alias="production-studio")
    assert resolve_scoring_model(db_session, "production",
                                 bandwidth="wideband").id == two_models["telephony"]


def test_telephony_models_serve_both_bandwidths(db_session: Session,
                                                two_models: dict[str, int]) -> None:
    set_alias(db_session, two_models["telephony"], alias="production-telephony")
    for bandwidth in ("narrowband", "wideband"):
        assert resolve_scoring_model(db_session, "production",
                                     bandwidth=bandwidth).id == two_models["telephony"]
    set_alias(db_session, two_models["telephony"], alias="production")
    assert resolve_scoring_model(db_session, "production",
                                 bandwidth="narrowband").id == two_models["telephony"]
    assert resolve_scoring_model(db_session, "phone-model:1",
                                 bandwidth="narrowband").id == two_models["telephony"]
    with pytest.raises(ModelNotFoundError, match="no model version matches 'nightly'"):
        resolve_scoring_model(db_session, "nightly", bandwidth="narrowband")
    with pytest.raises(ValueError, match="bandwidth"):
        resolve_scoring_model(db_session, "production", bandwidth="8k")


def test_a_louder_calm_clip_is_not_scored_angrier(db_session: Session) -> None:
    """Loudness alone must not move the scores; the same model on features without level
    normalisation (the version before it) does move, so this test can fail."""
    bank = ClipBank.synthetic(actors=range(1, 5), per_emotion=2,
                              emotions=("neutral", "calm", "happy", "sad", "angry"))
    model = load_model(db_session, str(train_tiny_model(db_session, bank=bank, alias=None,
                                                        speaker_normalisation=False)))
    spec = feature_spec("rich", "telephony")
    assert model.feature_spec.params_hash == spec.params_hash and spec.params["level_norm"]
    angry, calm = model.classes.index("angry"), model.classes.index("calm")
    for clip in [c for c in bank.clips if c.emotion == "calm"][:3]:
        base = model.predict_proba(extract(clip.signal, bank.sr, spec)[None])[0]
        louder = model.predict_proba(extract(clip.signal * 4.0, bank.sr, spec)[None])[0]
        quieter = model.predict_proba(extract(clip.signal * 0.25, bank.sr, spec)[None])[0]
        assert louder[angry] <= base[angry] + 1e-3
        assert quieter[calm] <= base[calm] + 1e-3
        np.testing.assert_allclose(louder, base, atol=1e-3)
        np.testing.assert_allclose(quieter, base, atol=1e-3)

    # control: without level normalisation the same recipe's scores follow the level
    old = FeatureSpec(spec.name, spec.channel, spec.sample_rate,
                      {k: v for k, v in spec.params.items() if k != "level_norm"},
                      spec.feature_names, "before-level-norm")
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from etl.corpora.labels import map_emotion

    labelled = [(c, map_emotion("callcentre4", c.emotion)) for c in bank.clips]
    X = np.vstack([extract(c.signal, bank.sr, old) for c, _ in labelled])
    y = [model.classes.index(str(label)) for _, label in labelled]
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, C=0.5)).fit(X, y)
    clip = next(c for c in bank.clips if c.emotion == "calm")
    shift = np.abs(clf.predict_proba(extract(clip.signal * 0.25, bank.sr, old)[None])
                   - clf.predict_proba(extract(clip.signal, bank.sr, old)[None])).max()
    assert shift > 0.02


def test_augmented_copies_never_leak_across_folds() -> None:
    """Features carry no signal; each copy equals its clip. A copy of a held-out clip in the
    training part would let 1-NN recall the clip's label (UAR ~1); kept in its clip's fold,
    held-out UAR stays near chance."""
    rng = np.random.default_rng(0)
    n_actors, per_actor, n_features = 8, 24, 6
    groups = np.repeat(np.arange(n_actors), per_actor)
    y = np.tile(np.arange(4), n_actors * per_actor // 4)
    X = rng.normal(size=(len(y), n_features)).astype(np.float32)
    dataset = Dataset(clip_ids=np.arange(len(y)), X=X, y=y, groups=groups,
                      classes=["a", "b", "c", "d"], feature_names=[f"f{i}" for i in range(6)],
                      feature_set_id=0, label_scheme="x", clip_sha256=["0"] * len(y))
    rows = np.repeat(np.arange(len(y)), 2)
    dataset.augmented = AugmentedRows(feature_set_id=1, row=rows,
                                      variant=np.tile([1, 2], len(y)), X=X[rows])
    config = TrainConfig(algorithm="knn", search=False, speaker_normalisation=False,
                         feature_importance=False)
    folds = make_folds(y, groups, n_folds=4, seed=0)
    cv = cross_validate(dataset, config, folds)
    assert cv.aug_proba is not None and cv.aug_proba.shape == (len(rows), 4)
    uar = np.mean([(cv.proba.argmax(1)[y == k] == k).mean() for k in range(4)])
    assert uar < 0.5
    # the leak this guards against, for contrast: copies of every clip in every fold
    leaky = cv.proba.copy()
    from sklearn.neighbors import KNeighborsClassifier

    for k in range(4):
        test = folds == k
        train_x = np.concatenate([X[~test], X[rows][folds[rows] == k]])
        train_y = np.concatenate([y[~test], y[rows][folds[rows] == k]])
        leaky[test] = KNeighborsClassifier(1).fit(train_x, train_y).predict_proba(X[test])
    assert np.mean([(leaky.argmax(1)[y == k] == k).mean() for k in range(4)]) > 0.95


def test_loaded_model_applies_its_calibration(db_session: Session) -> None:
    mv_id = train_tiny_model(db_session, alias=None)
    before = load_model(db_session, str(mv_id))
    assert before.calibration is None  # models registered without one score as before
    rng = np.random.default_rng(1)
    X = rng.normal(size=(6, before.feature_spec.n_features)).astype(np.float32)
    raw = before.predict_proba(X)
    # a record fitted by etl.training.calibration on (over-confident) out-of-fold probabilities
    n, k = 240, len(before.classes)
    y = np.arange(n) % k
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    logits[np.arange(n), rng.integers(0, k, n)] += 1.0  # confident mistakes
    oof = np.exp(4 * logits) / np.exp(4 * logits).sum(axis=1, keepdims=True)
    record = fit_calibration(oof, y, classes=before.classes, groups=np.arange(n) % 8,
                             folds=np.arange(n) % 4)
    db_session.execute(update(ModelVersion).where(ModelVersion.id == mv_id).values(
        params={"C": 0.5, "calibration": record}))
    after = load_model(db_session, str(mv_id))
    assert after.calibration == record
    calibrated = after.predict_proba(X)
    np.testing.assert_allclose(calibrated, apply_calibration(record, raw), rtol=1e-6)
    assert record["method"] == "temperature"  # over-confident inputs need softening
    assert not np.allclose(calibrated, raw)
