"""Training: actor-grouped folds, determinism, metrics layout, clear data errors, CLI, predict.

One synthetic corpus (5 actors x 4 emotions, real ingest + feature code) is committed for the
module; tests that train work in a rolled-back ``db_session`` on top of it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from db.engine import session_scope
from db.models import ModelMetric, ModelVersion
from etl.features.voice.params import EMBEDDING_DIM
from etl.training.config import CALL_SPEAKER_PRIOR_ROWS, DEFAULT_OPERATING_POINT_CALLS, TrainConfig
from etl.training.cv_calibration import FoldScorers, calibration_record
from etl.training.dataset import Dataset, TrainingDataError, choose_label_scheme, load_dataset
from etl.training.fitting import CVResult, cross_validate, prepare_features
from etl.training.folds import folds_hash, make_folds
from etl.training.loading import load_model
from etl.training.normalise import SpeakerPopulation, normalise_per_speaker, speaker_population
from etl.training.train import train_model
from tests.conftest import truncate_all
from tests.utils.train_data import TrainData, populate

# Fast settings: logistic regression, no search, no permutation importance unless a test needs it.
FAST = TrainConfig(algorithm="logreg", n_folds=5, search=False, feature_importance=False)


@pytest.fixture(scope="module")
def train_data(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainData]:
    truncate_all(engine)
    with session_scope(engine) as session:
        data = populate(session, tmp_path_factory.mktemp("corpus"),
                        feature_sets=(("rich", "studio"), ("rich", "telephony")))
    yield data
    truncate_all(engine)


# ------------------------------------------------------------------------------------------------
# pure pieces
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_grouped_folds_never_share_actors(seed: int) -> None:
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, 12, 400)
    y = rng.integers(0, 5, 400)
    folds = make_folds(y, groups, n_folds=5, seed=seed)
    assert set(folds) == set(range(5))
    for k in range(5):
        assert not set(groups[folds == k]) & set(groups[folds != k])
    np.testing.assert_array_equal(folds, make_folds(y, groups, n_folds=5, seed=seed))


def test_folds_hash_changes_with_assignment() -> None:
    ids = np.arange(10)
    folds = np.array([0, 1] * 5)
    assert folds_hash(ids, folds) == folds_hash(ids[::-1], folds[::-1])  # order-free
    assert folds_hash(ids, folds) != folds_hash(ids, folds[::-1])


def test_normalise_per_speaker_uses_each_speakers_own_statistics() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(100, 5, (20, 3))
    b = rng.normal(-50, 0.5, (10, 3))
    Z = normalise_per_speaker(np.vstack([a, b]), ["a"] * 20 + ["b"] * 10)
    np.testing.assert_allclose(Z[:20].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(Z[20:].std(0), 1, atol=1e-4)
    constant = normalise_per_speaker(np.ones((4, 2)), [1, 1, 2, 2])
    assert np.isfinite(constant).all() and not constant.any()
    with pytest.raises(ValueError, match="speakers has 3 entries"):
        normalise_per_speaker(np.ones((4, 2)), [1, 2, 3])
    # With stored training-speaker statistics: groups of 8+ rows still use only their own,
    # a lone row is no longer erased to zeros, and the statistics survive their JSON form.
    c = rng.normal(0, 1, (20, 3))
    pop = SpeakerPopulation.from_json(
        speaker_population(np.vstack([a, b, c]), ["a"] * 20 + ["b"] * 10 + ["c"] * 20).to_json())
    assert pop is not None and pop.n_speakers == 3
    np.testing.assert_allclose(normalise_per_speaker(a, [0] * 20, population=pop),
                               normalise_per_speaker(a, [0] * 20), atol=1e-5)
    lone = normalise_per_speaker(a[:1], ["x"], population=pop)
    assert np.isfinite(lone).all() and np.abs(lone).max() > 0.1
    with pytest.raises(ValueError, match="speaker statistics have 3 features"):
        normalise_per_speaker(np.ones((2, 4)), [1, 2], population=pop)


# ------------------------------------------------------------------------------------------------
# training on the database
# ------------------------------------------------------------------------------------------------


def test_default_scheme_is_largest_fully_covered(train_data: TrainData,
                                                 db_session: Session) -> None:
    # neutral/happy/sad/angry: emotion8 and emotion6 lack classes, callcentre4 (4) beats posneg.
    assert choose_label_scheme(db_session) == "callcentre4"


def test_training_registers_metrics_and_is_deterministic(
    train_data: TrainData, db_session: Session,
) -> None:
    config = TrainConfig(algorithm="logreg", feature_importance=True)
    first = train_model(db_session, config)
    second = train_model(db_session, config)
    assert (first.name, first.version, second.version) == ("ser-callcentre4-rich-studio", 1, 2)
    assert first.folds_sha256 == second.folds_sha256
    assert first.cv_uar == second.cv_uar and first.cv_uar > 0.6  # learnable synthetic corpus

    def rows(mv_id: int) -> list[tuple[object, ...]]:
        return [tuple(r) for r in db_session.execute(
            select(ModelMetric.fold, ModelMetric.metric, ModelMetric.class_label,
                   ModelMetric.group_name, ModelMetric.group_value, ModelMetric.value)
            .where(ModelMetric.model_version_id == mv_id).order_by(ModelMetric.id)).all()]

    a, b = rows(first.model_version_id), rows(second.model_version_id)
    assert a == b

    metrics = {(r[0], r[1], r[2], r[3]) for r in a}
    for fold in (*range(5), None):
        assert (fold, "uar", None, None) in metrics
        assert (fold, "confusion", None, None) in metrics
    for label in first.classes:
        assert (None, "precision", label, None) in metrics
        assert (None, "recall", label, None) in metrics
        assert (None, "roc_auc", label, None) in metrics
    assert (None, "uar", None, "sex") in metrics  # RAVDESS names imply sex
    n_features = len(db_session.execute(
        text("SELECT feature_names FROM feature_sets WHERE id = :id"),
        {"id": first.feature_set_id}).scalar_one())
    assert sum(1 for r in a if r[1] == "feature_importance" and r[3] == "feature") == n_features

    curve = db_session.execute(select(ModelMetric.extra).where(
        ModelMetric.model_version_id == first.model_version_id, ModelMetric.metric == "roc_auc",
        ModelMetric.fold.is_(None))).scalars().first()
    assert curve is not None and len(curve["fpr"]) == len(curve["tpr"]) >= 2

    mv = db_session.get(ModelVersion, first.model_version_id)
    assert mv is not None and mv.speaker_normalisation and mv.code_version
    assert sorted(mv.training_clip_ids) == mv.training_clip_ids and len(mv.training_clip_ids) == 70


def test_fold_actors_are_disjoint_in_stored_metrics(train_data: TrainData,
                                                    db_session: Session) -> None:
    result = train_model(db_session, FAST)
    extras = db_session.execute(select(ModelMetric.fold, ModelMetric.extra).where(
        ModelMetric.model_version_id == result.model_version_id, ModelMetric.metric == "uar",
        ModelMetric.fold.is_not(None))).all()
    actors = [set(extra["actor_ids"]) for _, extra in extras]
    assert len(actors) == 5 and len(set().union(*actors)) == 5
    assert all(not (x & y) for i, x in enumerate(actors) for y in actors[i + 1:])


def test_telephony_model_with_speaker_normalisation(train_data: TrainData,
                                                    db_session: Session) -> None:
    config = TrainConfig(algorithm="logreg", channel="telephony", search=False,
                         feature_importance=False, augment=False, operating_point_calls=0)
    result = train_model(db_session, config)
    model = load_model(db_session, str(result.model_version_id))
    assert model.feature_spec.channel == "telephony" and model.speaker_normalisation
    assert result.name == "ser-callcentre4-rich-telephony"
    # the call default: every call role shrunk toward the training population (docs/features.md)
    population = model.speaker_population
    assert population is not None and population.prior_rows == CALL_SPEAKER_PRIOR_ROWS
    assert np.isinf(population.min_rows_own)
    point = result.params["calibration"]["operating_point"]
    assert point is None or point["pseudo_call_normalisation"].startswith("per pseudo-call")
    ids, X = db_session.execute(text(
        "SELECT array_agg(f.clip_id ORDER BY f.clip_id), array_agg(c.actor_id ORDER BY f.clip_id) "
        "FROM clip_features f JOIN clips c ON c.id = f.clip_id WHERE f.feature_set_id = :fs"),
        {"fs": result.feature_set_id}).one()
    from etl.features.store import load_feature_matrix

    _, feats = load_feature_matrix(db_session, feature_set_id=result.feature_set_id)
    proba = model.predict_proba(feats, speakers=X)
    assert proba.shape == (len(ids), 4)
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-6)


def test_phone_robust_training_uses_copies_and_stores_calibration(
        train_data: TrainData, db_session: Session) -> None:
    """The `ser train` default: telephony clips plus their phone-line copies (computed here when
    missing), copies in their clip's fold, phone metrics, calibration stored and loaded."""
    from etl.features.specs import feature_spec
    from etl.features.store import ensure_feature_set, load_variant_matrix

    config = TrainConfig(algorithm="logreg", channel="telephony", search=False,
                         feature_importance=False, augment=True, operating_point_calls=0)
    result = train_model(db_session, config)
    assert result.name == "ser-callcentre4-rich+phone-telephony"
    aug_fs = ensure_feature_set(db_session, feature_spec("rich+phone", "telephony"))
    ids, variant, _ = load_variant_matrix(db_session, feature_set_id=aug_fs)
    assert set(variant.tolist()) == {1, 2} and len(ids) == 2 * result.n_clips
    params = result.params
    assert params["augment"]["feature_set_id"] == aug_fs
    assert params["augment"]["n_rows"] == 2 * result.n_clips
    assert params["calibration"]["fitted_on"] == "phone copies"
    assert "method" in params["calibration"]
    assert 0.0 <= result.pooled["uar_phone"] <= 1.0
    phone_folds = db_session.execute(select(ModelMetric.fold).where(
        ModelMetric.model_version_id == result.model_version_id,
        ModelMetric.metric == "uar_phone", ModelMetric.fold.is_not(None))).scalars().all()
    assert sorted(phone_folds) == list(range(config.n_folds))
    plain = train_model(db_session, TrainConfig(algorithm="logreg", channel="telephony",
                                                search=False, feature_importance=False,
                                                augment=False, operating_point_calls=0))
    # the same clips make the same folds: the studio-era headline stays comparable
    assert plain.folds_sha256 == result.folds_sha256
    assert "uar_phone" not in plain.pooled
    model = load_model(db_session, str(result.model_version_id))
    assert model.calibration == params["calibration"] and model.channel == "telephony"
    with pytest.raises(TrainingDataError, match="telephony"):
        train_model(db_session, TrainConfig(algorithm="logreg", channel="studio", search=False,
                                            feature_importance=False, augment=True))


def test_operating_point_is_chosen_on_generated_calls_of_unheard_speakers(
        train_data: TrainData, db_session: Session) -> None:
    """`ser train` for calls: the escalation point comes from generated phone calls of the
    training speakers, each scored by the fold model that never heard its customer."""
    from etl.training.loading import feature_spec_for
    from etl.training.operating_point.generated_calls import generated_call_sides

    config = TrainConfig(algorithm="logreg", channel="telephony", search=False,
                         feature_importance=False, augment=False, operating_point_calls=10,
                         operating_point_call_minutes=0.3)
    result = train_model(db_session, config)
    calibration = result.params["calibration"]
    point = calibration["operating_point"]
    assert point["chosen_on"] == "generated calls" and point["n_calls"] == 10
    assert "generated" in point["protocol"] and point["n_speakers"] == 5
    # one procedure: no pseudo-call point is chosen beside it
    assert "operating_point_pseudo_calls" not in calibration
    assert all(r["metric"] != "overtalk_share" for r in point["rules"])
    # scoring reads it like any operating point
    model = load_model(db_session, str(result.model_version_id))
    from etl.scoring.config import ScoringConfig

    assert ScoringConfig().operating_point(model).source == "model"

    dataset = load_dataset(db_session, label_scheme=result.label_scheme,
                           feature_set_id=result.feature_set_id, corpus=None, n_folds=5)
    folds = make_folds(dataset.y, dataset.groups, n_folds=5, seed=0)
    cv = cross_validate(dataset, config, folds)
    scorers = FoldScorers(dataset, cv, config, "none", cv.proba, dataset.y, folds,
                          feature_spec_for(db_session, dataset.feature_set_id))
    sides = generated_call_sides(
        db_session, actors_by_fold=[np.unique(dataset.groups[folds == k]) for k in range(5)],
        fold_model=scorers.model, n_calls=5, minutes=0.3, seed=0, corpus=None)
    assert len(sides) == 5 and {s.fold for s in sides} == set(range(5))
    for side in sides:
        # every clip of the customer is held out of the fold model that scored the call
        assert set(folds[dataset.groups == side.speaker]) == {side.fold}
        assert len(side.start) == len(side.negative) == len(side.confidence) > 0
    # without the clips' audio the point is chosen on pseudo-calls
    for path in train_data.files:
        path.rename(path.with_suffix(".gone"))
    try:
        plain = train_model(db_session, config)
    finally:
        for path in train_data.files:
            path.with_suffix(".gone").rename(path)
    kept = plain.params["calibration"]["operating_point"]
    assert kept["protocol"].startswith("30 pseudo-calls") and "chosen_on" not in kept


# ------------------------------------------------------------------------------------------------
# clear errors, nothing registered
# ------------------------------------------------------------------------------------------------


def _n_versions(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(ModelVersion)) or 0)


def test_one_actor_is_a_clear_error(train_data: TrainData, db_session: Session) -> None:
    db_session.execute(text(
        "UPDATE clips SET is_current = false WHERE actor_id <> (SELECT min(actor_id) FROM clips)"))
    with pytest.raises(TrainingDataError, match=r"too few speakers: 1 actor\(s\) for 5"):
        train_model(db_session, FAST)
    assert _n_versions(db_session) == 0


def test_missing_features_are_named(train_data: TrainData, db_session: Session) -> None:
    fs = train_data.feature_set_ids[("rich", "studio")]
    names = db_session.execute(text(
        "DELETE FROM clip_features f USING clips c WHERE c.id = f.clip_id AND f.feature_set_id = :fs "
        "AND c.id IN (SELECT id FROM clips ORDER BY id LIMIT 2) RETURNING c.clip_name"),
        {"fs": fs}).scalars().all()
    with pytest.raises(TrainingDataError, match="missing for 2 of 70") as info:
        train_model(db_session, FAST)
    assert all(name in str(info.value) for name in names)
    assert "ser features --set rich --channel studio" in str(info.value)
    assert _n_versions(db_session) == 0


def test_empty_class_is_named(train_data: TrainData, db_session: Session) -> None:
    with pytest.raises(TrainingDataError, match="no clips.*calm, disgust, fearful, surprised"):
        train_model(db_session, TrainConfig(algorithm="logreg", label_scheme="emotion8"))
    assert _n_versions(db_session) == 0


def test_class_from_a_single_actor_is_refused(train_data: TrainData,
                                              db_session: Session) -> None:
    db_session.execute(text(
        "UPDATE clips SET is_current = false WHERE emotion = 'sad' "
        "AND actor_id <> (SELECT min(actor_id) FROM clips)"))
    fs = train_data.feature_set_ids[("rich", "studio")]
    with pytest.raises(TrainingDataError, match="'sad' is spoken by only 1 actor"):
        load_dataset(db_session, label_scheme="callcentre4", feature_set_id=fs)


# ------------------------------------------------------------------------------------------------
# CLI (train under a Prefect test harness; models and predict without Prefect)
# ------------------------------------------------------------------------------------------------


@pytest.fixture()
def cli(train_data: TrainData, db_cli: CliRunner) -> CliRunner:
    """CLI against the module's committed corpus (cli_env would truncate it)."""
    return db_cli


def test_cli_error_exits_2_before_prefect(cli: CliRunner) -> None:
    from ser.cli import app

    result = cli.invoke(app, ["train", "--labels", "emotion8", "--model", "logreg"])
    assert result.exit_code == 2
    assert "no clips" in result.output and "calm" in result.output
    result = cli.invoke(app, ["train", "--model", "nope"])
    assert result.exit_code == 2 and "unknown model family" in result.output


@pytest.fixture()
def clean_registry(engine: Engine) -> Iterator[None]:
    """Drop what a committed test registered; the module's corpus stays."""
    yield
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE model_versions, model_metrics, model_aliases, alias_history, "
                          "registered_models RESTART IDENTITY CASCADE"))


@pytest.mark.slow
def test_cli_train_runs_the_flow(cli: CliRunner, clean_registry: None, engine: Engine) -> None:
    from prefect.testing.utilities import prefect_test_harness

    from ser.cli import app

    with session_scope(engine) as session:  # no phone-line copies yet: `ser train` makes them
        session.execute(text("DELETE FROM clip_features f USING feature_sets s WHERE "
                             "s.id = f.feature_set_id AND s.name = 'rich+phone'"))

    with prefect_test_harness(server_startup_timeout=120):
        # the rich set keeps this about the flow, not the voice encoder (tests/test_voice_*)
        result = cli.invoke(app, ["train", "--set", "rich", "--model", "logreg", "--no-search",
                                  "--no-importance", "--promote-if-better",
                                  "--operating-point-calls", "5"])
        studio = cli.invoke(app, ["train", "--set", "rich", "--model", "logreg", "--no-search",
                                  "--no-importance", "--channel", "studio"])
    assert result.exit_code == 0, result.output
    # the defaults train for phone audio: telephony features plus their phone-line copies
    assert re.search(r"features rich\+phone/telephony: \d+ clips computed, 0 errors",
                     result.output)
    assert "features rich/telephony + phone-line copies" in result.output
    assert "registered ser-callcentre4-rich+phone-telephony v1" in result.output
    assert "on phone-line copies of the held-out actors' clips: UAR" in result.output
    # the escalation point, chosen on generated calls of the training speakers
    assert re.search(r"escalation: negative_share_customer >= [\d.]+.*on 5 generated calls of "
                     r"the training speakers", result.output), result.output
    assert re.search(r"promoted version \d+ to 'production'", result.output)
    assert re.search(r"production-telephony -> version \d+ \(first telephony model", result.output)
    assert studio.exit_code == 0, studio.output
    assert "registered ser-callcentre4-rich-studio v1" in studio.output
    assert "phone-line" not in studio.output
    # production already set: only the studio channel's alias is new
    assert re.search(r"^production-studio -> version \d+ \(first studio model", studio.output,
                     re.MULTILINE)


def test_cli_models_and_predict(cli: CliRunner, train_data: TrainData, engine: Engine,
                                clean_registry: None) -> None:
    import json

    from ser.cli import app

    with session_scope(engine) as session:
        trained = train_model(session, TrainConfig(algorithm="logreg", search=False,
                                                   feature_importance=False))
    version_id = trained.model_version_id
    promoted = cli.invoke(app, ["models", "promote", str(version_id)])
    assert promoted.exit_code == 0 and f"production -> version {version_id}" in promoted.output
    listed = cli.invoke(app, ["models", "list"])
    assert listed.exit_code == 0 and "production" in listed.output
    shown = cli.invoke(app, ["models", "show", "production"])
    assert shown.exit_code == 0 and "folds_sha256" in shown.output
    shown_json = json.loads(cli.invoke(app, ["models", "show", "production", "--json"]).output)
    assert shown_json["params"]["speaker_population"] == "5 training speakers x 242 features"
    missing = cli.invoke(app, ["models", "show", "999"])
    assert missing.exit_code == 2 and "no model version matches '999'" in missing.output

    actor_dir = train_data.root / "Actor_01"
    predicted = cli.invoke(app, ["predict", str(actor_dir), "--format", "json"])
    assert predicted.exit_code == 0, predicted.output
    rows = json.loads(predicted.output)["predictions"]
    assert len(rows) == 14
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-3 for r in rows)
    # A training actor, so mostly right: file -> features -> normalisation -> class is consistent.
    truth = {"01": "calm", "03": "happy", "04": "sad", "05": "angry"}
    hits = [truth[Path(r["path"]).name.split("-")[2]] == r["emotion"] for r in rows]
    assert np.mean(hits) > 0.7

    one = cli.invoke(app, ["predict", str(min(actor_dir.iterdir())), "--format", "csv"])
    assert one.exit_code == 0 and "path,emotion,confidence,p_angry" in one.output
    # One file cannot be normalised against itself: it is normalised toward similar speakers.
    assert "fewer than 8 files: normalised toward the most similar training" in one.output
    absent = cli.invoke(app, ["predict", "/no/such.wav"])
    assert absent.exit_code == 2 and "no such file" in absent.output


def test_single_files_of_unseen_speakers_use_training_speaker_statistics(
    train_data: TrainData, db_session: Session, tmp_path: Path,
) -> None:
    """``ser predict clip.wav`` on a speaker-normalised model: each file alone (its own speaker
    group) is normalised toward the stored statistics of the most similar training speakers and
    is nearly as accurate as scoring the speaker's whole folder; without them (models registered
    before) a lone file is z-scored to all zeros and every file gets the same class."""
    from etl.synthetic.speech import write_ravdess_corpus
    from etl.training.predict import predict_files

    result = train_model(db_session, FAST)  # actors 1-5
    model = load_model(db_session, str(result.model_version_id))
    assert model.speaker_population is not None and model.speaker_population.n_speakers == 5
    unseen = write_ravdess_corpus(tmp_path, actors=(6, 7, 8),
                                  emotions=("neutral", "happy", "sad", "angry"), duration_s=1.5)
    truth = {"01": "calm", "03": "happy", "04": "sad", "05": "angry"}

    def accuracy(speaker_by: str) -> float:
        predictions, _ = predict_files(model, unseen, speaker_by=speaker_by)
        return float(np.mean([truth[Path(p.path).name.split("-")[2]] == p.emotion
                              for p in predictions]))

    by_folder, by_file = accuracy("folder"), accuracy("file")
    model.speaker_population = None  # a model registered before speaker statistics
    old_by_file = accuracy("file")
    # Chance is 0.25; the majority class is 4/14 of the files.
    assert by_folder > 0.6
    assert by_file > 0.5 and by_file >= by_folder - 0.15, (by_folder, by_file)
    assert old_by_file < 0.35, old_by_file


# ------------------------------------------------------------------------------------------------
# the operating point's pseudo-calls are normalised as scoring normalises a call
# ------------------------------------------------------------------------------------------------


def _synthetic_dataset(*, n_speakers: int = 8, per_class: int = 10,
                       seed: int = 0) -> Dataset:
    """Speakers with their own offsets; emotion moves 3 features from the speaker's baseline."""
    rng = np.random.default_rng(seed)
    classes = ["angry", "calm", "happy", "sad"]
    y = np.tile(np.repeat(np.arange(4), per_class), n_speakers)
    groups = np.repeat(np.arange(1, n_speakers + 1), 4 * per_class)
    offsets = rng.normal(0, 4, (n_speakers, 6))
    effect = np.zeros((4, 6))
    effect[0, :3], effect[2, :3], effect[3, :3] = (2, 2, 2), (1, -1, 1), (-2, -2, -1)
    X = offsets[groups - 1] + effect[y] + rng.normal(0, 0.6, (len(y), 6))
    return Dataset(clip_ids=np.arange(len(y)), X=X.astype(np.float32), y=y, groups=groups,
                   classes=classes, feature_names=[f"f{i}" for i in range(6)],
                   feature_set_id=0, label_scheme="callcentre4",
                   clip_sha256=["0" * 64] * len(y))


def _cv(dataset: Dataset, config: TrainConfig) -> CVResult:
    folds = make_folds(dataset.y, dataset.groups, n_folds=4, seed=0)
    return cross_validate(dataset, config, folds)


def _per_pseudo_call(dataset: Dataset, cv: CVResult, config: TrainConfig):  # type: ignore[no-untyped-def]
    """The uncalibrated per-pseudo-call predictions of a speaker-normalised model's folds."""
    from etl.features.specs import feature_spec

    return FoldScorers(dataset, cv, config, "none", cv.proba, dataset.y, cv.folds,
                       feature_spec(config.feature_set, config.channel)).per_pseudo_call


def test_pseudo_calls_are_normalised_per_call_like_scoring() -> None:
    """A calm-only call normalised over itself reads far less calm than its clips did when each
    speaker was normalised over its whole balanced set: the rescorer reproduces scoring."""
    dataset = _synthetic_dataset()
    config = TrainConfig(algorithm="logreg", search=False, feature_importance=False)
    cv = _cv(dataset, config)
    rescore = _per_pseudo_call(dataset, cv, config)
    calm = dataset.classes.index("calm")
    # one calm-only pseudo-call per speaker (10 clips: own statistics, as a call channel)
    rows = np.flatnonzero(dataset.y == calm)
    call = dataset.groups[rows]
    proba = rescore(rows, call)
    assert proba.shape == (len(rows), 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    # exactly what the fold model gives for the call normalised on its own
    first = rows[call == 1]
    k = int(cv.folds[first[0]])
    train = cv.folds != k
    expected = cv.fold_models[k].predict_proba(normalise_per_speaker(
        dataset.X[first], np.zeros(len(first)),
        population=speaker_population(dataset.X[train], dataset.groups[train])))
    np.testing.assert_allclose(proba[call == 1], expected, atol=1e-6)
    clip_calm = float(np.mean(cv.proba[rows].argmax(axis=1) == calm))
    call_calm = float(np.mean(proba.argmax(axis=1) == calm))
    assert clip_calm > 0.8 and call_calm < clip_calm - 0.3, (clip_calm, call_calm)
    # a model with a strong population prior: its pseudo-calls get the same shrinkage
    strong = TrainConfig(algorithm="logreg", search=False, feature_importance=False,
                         speaker_prior_rows=200.0)
    shrunk = _per_pseudo_call(dataset, cv, strong)
    expected = cv.fold_models[k].predict_proba(normalise_per_speaker(
        dataset.X[first], np.zeros(len(first)), population=speaker_population(
            dataset.X[train], dataset.groups[train], **strong.population_shrinkage())))
    np.testing.assert_allclose(shrunk(rows, call)[call == 1], expected, atol=1e-6)
    assert not np.allclose(expected, proba[call == 1], atol=1e-3)


def test_operating_point_of_a_speaker_normalised_model_uses_rescored_pseudo_calls() -> None:
    dataset = _synthetic_dataset(n_speakers=8, per_class=16)
    for norm in (True, False):
        config = TrainConfig(algorithm="logreg", search=False, feature_importance=False,
                             speaker_normalisation=norm)
        cv = _cv(dataset, config)
        record = calibration_record(dataset, cv, config)
        point = record["operating_point"]
        assert point is not None
        assert point["pseudo_call_normalisation"].startswith(
            "per pseudo-call" if norm else "none")


def test_population_prior_shrinks_every_group_and_round_trips() -> None:
    rng = np.random.default_rng(1)
    train = rng.normal(0, 1, (120, 3)) + np.repeat(rng.normal(0, 2, (6, 3)), 20, axis=0)
    speakers = np.repeat(np.arange(6), 20)
    default = speaker_population(train, speakers)
    assert "prior_rows" not in default.to_json()  # records of older models stay as they were
    strong = speaker_population(train, speakers, prior_rows=100.0, min_rows_own=np.inf)
    data = strong.to_json()
    assert data["prior_rows"] == 100.0 and data["min_rows_own"] is None
    back = SpeakerPopulation.from_json(data)
    assert back is not None and back.prior_rows == 100.0 and np.isinf(back.min_rows_own)
    old = SpeakerPopulation.from_json(default.to_json())
    assert old is not None and (old.prior_rows, old.min_rows_own) == (8, 8)
    # a call channel of 30 calm-ish rows shifted by +3: own statistics erase the shift, the
    # strong prior keeps most of it
    call = rng.normal(3, 0.3, (30, 3))
    own = normalise_per_speaker(call, ["c"] * 30, population=default)
    prior = normalise_per_speaker(call, ["c"] * 30, population=back)
    np.testing.assert_allclose(own.mean(axis=0), 0, atol=1e-5)
    assert (prior.mean(axis=0) > 0.5).all()
    with pytest.raises(ValueError, match="prior_rows"):
        TrainConfig(speaker_prior_rows=-1.0).population_shrinkage()


def test_call_models_default_to_population_shrinkage() -> None:
    """Chosen on calls of training speakers (docs/features.md): telephony models shrink every
    call role toward the training population; studio models keep per-speaker statistics."""
    assert TrainConfig(channel="telephony").speaker_prior_rows == CALL_SPEAKER_PRIOR_ROWS
    # the call-based operating point and the phone-line copies are telephony switches:
    # TrainConfig is their one home, with `ser train`'s defaults
    telephony, studio = TrainConfig(channel="telephony"), TrainConfig(channel="studio")
    assert telephony.operating_point_calls == DEFAULT_OPERATING_POINT_CALLS == 100
    assert telephony.augment is True and studio.augment is False
    assert studio.operating_point_calls == 0
    assert TrainConfig(channel="telephony", feature_set="seed180").augment is False
    assert TrainConfig(channel="studio", operating_point_calls=100).operating_point_calls == 0
    assert TrainConfig(channel="telephony", operating_point_calls=7).operating_point_calls == 7
    with pytest.raises(ValueError, match="operating_point_calls"):
        TrainConfig(channel="telephony", operating_point_calls=-1)
    assert TrainConfig(channel="telephony").population_shrinkage() == {
        "prior_rows": CALL_SPEAKER_PRIOR_ROWS, "min_rows_own": float("inf")}
    assert TrainConfig().speaker_prior_rows is None and TrainConfig().population_shrinkage() == {}
    assert TrainConfig(channel="telephony", speaker_prior_rows=None).population_shrinkage() == {}
    assert TrainConfig(speaker_prior_rows=20).speaker_prior_rows == 20.0
    with pytest.raises(ValueError, match="auto"):
        TrainConfig(speaker_prior_rows="strong")


def test_train_cli_leaves_the_telephony_defaults_to_train_config() -> None:
    """`ser train` without --augment/--operating-point-calls trains TrainConfig's defaults, and
    its --help names TrainConfig's number."""
    from ser.cli import app
    from ser.commands.train import _train_config

    def options(feature_set: str, channel: str, augment: bool | None,
                calls: int | None) -> TrainConfig:
        return _train_config(labels=None, model="logreg", feature_set=feature_set,
                             channel=channel, augment=augment, corpus=None, speaker_norm=True,
                             balance=True, folds=5, seed=0, search=True, importance=True,
                             random_split=False, operating_point_calls=calls)

    for channel in ("telephony", "studio"):
        assert options("rich", channel, None, None) == TrainConfig(
            algorithm="logreg", feature_set="rich", channel=channel)
    given = options("rich", "telephony", False, 7)
    assert given.augment is False and given.operating_point_calls == 7
    # --augment where the set has no phone-line copies trains without them
    assert options("seed180", "telephony", True, None).augment is False
    shown = CliRunner().invoke(app, ["train", "--help"])
    assert shown.exit_code == 0, shown.output
    assert f"Default: {DEFAULT_OPERATING_POINT_CALLS}." in " ".join(
        shown.output.replace("\u2502", " ").split())


def test_voice_columns_are_left_raw_by_speaker_normalisation_and_round_trip() -> None:
    """One logistic regression over richvoice (``--model logreg``) z-scores the rich columns per
    speaker and keeps the encoder's as they are (bench/voice_features.py), in training, in the
    stored population and at prediction; the pooled default z-scores both blocks."""
    config = TrainConfig(feature_set="richvoice", channel="telephony", algorithm="logreg")
    assert config.raw_columns == EMBEDDING_DIM and TrainConfig(channel="telephony").raw_columns == 0
    assert config.population_shrinkage()["raw_columns"] == EMBEDDING_DIM
    assert TrainConfig(feature_set="richvoice", algorithm="logreg").population_shrinkage() == {
        "raw_columns": EMBEDDING_DIM}
    assert TrainConfig(feature_set="richvoice", channel="telephony").raw_columns == 0
    rng = np.random.default_rng(2)
    X = rng.normal(5, 2, (40, 6))
    speakers = np.repeat([1, 2], 20)
    out = prepare_features(X, speakers, speaker_normalisation=True, raw_columns=2)
    np.testing.assert_allclose(out[:, -2:], X[:, -2:], rtol=1e-6)
    np.testing.assert_allclose(out[:20, :4].mean(axis=0), 0, atol=1e-5)
    population = SpeakerPopulation.from_json(
        speaker_population(X, speakers, raw_columns=2).to_json())
    assert population is not None and population.raw_columns == 2
    predicted = normalise_per_speaker(X[:5], ["call"] * 5, population=population)
    np.testing.assert_allclose(predicted[:, -2:], X[:5, -2:], rtol=1e-6)
    assert not np.allclose(predicted[:, :4], X[:5, :4])
