"""Feature sets: extraction validity, seed180 equivalence with librosa, telephony, versioning,
idempotent storage in PostgreSQL, segment pooling, the flow and the CLI (on a Dask cluster:
tests/test_dask_features.py)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from sqlalchemy import Engine, insert, select, text
from sqlalchemy.orm import Session

from db.models import Clip, FeatureError, FeatureSet
from etl.features.extraction import (
    ClipResult,
    FeatureExtractionError,
    extract,
    extract_segments,
    feature_spec,
)
from etl.features.store import ensure_feature_set, load_feature_matrix, store_results
from etl.synthetic.speech import Voice, synthesize

SETS = [(name, channel) for name in ("rich", "seed180") for channel in ("studio", "telephony")]


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """2.5 s of synthetic angry speech at 48 kHz (RAVDESS's rate), with 0.12 s silent pads."""
    return synthesize("angry", voice=Voice.for_actor(3), seed=7, sr=48000, duration_s=2.5)


@pytest.mark.parametrize(("name", "channel"), SETS)
def test_names_match_values_and_all_finite(speech: np.ndarray, name: str, channel: str) -> None:
    spec = feature_spec(name, channel)
    values = extract(speech, 48000, spec)
    assert values.dtype == np.float32
    assert values.shape == (len(spec.feature_names),)
    assert len(set(spec.feature_names)) == len(spec.feature_names)
    assert np.isfinite(values).all()
    assert np.count_nonzero(values) > 0.8 * len(values)


def test_rich_has_enough_features_and_sane_prosody(speech: np.ndarray) -> None:
    spec = feature_spec("rich")
    assert spec.n_features >= 150
    v = dict(zip(spec.feature_names, extract(speech, 48000, spec), strict=True))
    voice = Voice.for_actor(3)
    # synth's angry F0 level is 1.35 x the actor's base; YIN must land near it, not an octave off
    assert 0.8 * 1.35 * voice.base_f0 < v["f0_mean_hz"] < 1.25 * 1.35 * voice.base_f0
    assert v["f0_voiced_fraction"] > 0.6
    assert 2.0 < v["duration_s"] < 2.4  # trimmed: the 0.12 s pads are gone
    assert 0.0 < v["hnr_mean_db"] < 30.0


def test_mono_mixdown_and_rate_independence(speech: np.ndarray) -> None:
    spec = feature_spec("rich")
    mono = extract(speech, 48000, spec)
    stereo = extract(np.stack([speech, speech]), 48000, spec)
    np.testing.assert_allclose(stereo, mono, rtol=1e-4, atol=1e-4)
    from etl.audio.decode import resample

    at_16k = extract(resample(speech, 48000, 16000), 16000, spec)
    assert np.corrcoef(at_16k, mono)[0, 1] > 0.999


@pytest.mark.parametrize(("name", "channel"), SETS)
def test_silence_and_too_short_raise_with_reason(name: str, channel: str) -> None:
    spec = feature_spec(name, channel)
    with pytest.raises(FeatureExtractionError, match="silent"):
        extract(np.zeros(16000, np.float32), 16000, spec)
    with pytest.raises(FeatureExtractionError, match="silent"):
        extract(1e-5 * np.random.default_rng(0).standard_normal(16000), 16000, spec)
    blip = np.zeros(16000, np.float32)
    blip[8000:8400] = 0.5 * np.sin(np.arange(400) * 0.3)  # 25 ms of sound in silence
    if spec.params["trim_top_db"] is not None:
        with pytest.raises(FeatureExtractionError, match="too short"):
            extract(blip, 16000, spec)
    with pytest.raises(FeatureExtractionError, match="too short"):
        extract(blip[8000:8400], 16000, spec)
    with pytest.raises(FeatureExtractionError, match="non-finite"):
        extract(np.full(16000, np.nan, np.float32), 16000, spec)


def test_telephony_variant(speech: np.ndarray) -> None:
    studio, phone = feature_spec("rich", "studio"), feature_spec("rich", "telephony")
    assert phone.sample_rate == 8000 and phone.params["mel_fmax"] <= 3400
    assert phone.params_hash != studio.params_hash
    assert phone.feature_names == studio.feature_names  # same columns, different channel
    v_phone = dict(zip(phone.feature_names, extract(speech, 48000, phone), strict=True))
    v_studio = dict(zip(studio.feature_names, extract(speech, 48000, studio), strict=True))
    # nothing above 3.4 kHz survives a phone line; the F0 is still recovered from harmonics
    assert v_phone["rolloff_hz_p90"] <= 3400
    assert 300 < v_phone["centroid_hz_mean"] < 3400
    assert abs(v_phone["f0_p50_st"] - v_studio["f0_p50_st"]) < 1.0
    # already-8 kHz input (a real phone recording) goes through the same path
    from etl.audio.decode import to_telephony

    narrow, sr = to_telephony(speech, 48000)
    again = extract(narrow, sr, phone)
    assert np.corrcoef(again, extract(speech, 48000, phone))[0, 1] > 0.999
    seed_phone = feature_spec("seed180", "telephony")
    assert np.isfinite(extract(speech, 48000, seed_phone)).all()


def test_seed180_matches_librosa_reference(speech: np.ndarray) -> None:
    """The seed blog code, verbatim in spirit: librosa.load at 22,050 Hz (soxr_hq), three
    separately computed spectrograms. Ours: etl.audio.decode.resample (soxr HQ), one STFT."""
    import librosa

    x = librosa.resample(speech, orig_sr=48000, target_sr=22050)  # what librosa.load does
    stft = np.abs(librosa.stft(x))
    ref = np.hstack([
        np.mean(librosa.feature.mfcc(y=x, sr=22050, n_mfcc=40).T, axis=0),
        np.mean(librosa.feature.chroma_stft(S=stft, sr=22050).T, axis=0),
        np.mean(librosa.feature.melspectrogram(y=x, sr=22050).T, axis=0),
    ])
    ours = extract(speech, 48000, feature_spec("seed180"))
    assert np.max(np.abs(ours[:40] - ref[:40])) < 0.01  # MFCC, dB-scaled units
    assert np.max(np.abs(ours[40:52] - ref[40:52])) < 1e-4  # chroma in [0, 1]
    mel_ref = ref[52:]
    big = mel_ref > 1e-6 * mel_ref.max()
    assert np.max(np.abs(ours[52:][big] - mel_ref[big]) / mel_ref[big]) < 1e-2
    assert np.corrcoef(ours, ref)[0, 1] > 0.999999


@pytest.mark.filterwarnings("ignore:Trying to estimate tuning from empty frequency set")
def test_fast_tuning_equals_librosa_exactly() -> None:
    """dsp.estimate_tuning replaces librosa.estimate_tuning in seed180: equal to the last bit
    (tuning is an argmax over 0.01-semitone bins, so near-equal is not good enough)."""
    import librosa

    from etl.audio import dsp

    tunings = set()
    cases = [(emotion, actor, sr) for emotion, actor in (("angry", 3), ("sad", 8), ("happy", 11))
             for sr in (22050, 8000)]
    for emotion, actor, sr in cases:
        y = synthesize(emotion, voice=Voice.for_actor(actor), seed=actor, sr=sr, duration_s=1.5)
        n_fft = 2048 if sr == 22050 else 1024
        for mag in (dsp.librosa_stft_magnitude(y, n_fft=n_fft, hop=n_fft // 4),  # float32
                    np.abs(librosa.stft(y.astype(np.float64), n_fft=n_fft))):  # float64
            ref = librosa.estimate_tuning(S=mag, sr=sr, bins_per_octave=12)
            assert dsp.estimate_tuning(mag, sr=sr, bins_per_octave=12) == ref, (emotion, sr, mag.dtype)
            tunings.add(float(ref))
    assert len(tunings) >= 3  # the cases really differ
    # a tone 23 cents sharp
    t = np.arange(22050, dtype=np.float32) / 22050
    tone = (np.sin(2 * np.pi * 440 * 2 ** (0.23 / 12) * t)
            + 0.5 * np.sin(2 * np.pi * 660 * t)).astype(np.float32)
    tone_mag = dsp.librosa_stft_magnitude(tone, n_fft=2048, hop=512)
    assert dsp.estimate_tuning(tone_mag, sr=22050) == librosa.estimate_tuning(S=tone_mag, sr=22050) != 0.0
    # the peaks themselves against librosa.piptrack; noise has thousands of peaks, enough to
    # catch a float32-vs-float64 slip in the interpolation (the tuning alone may not move)
    noise = np.abs(np.random.default_rng(0).standard_normal((1025, 60))).astype(np.float32)
    for mag in (tone_mag, noise):
        pitches, mags = librosa.piptrack(S=mag, sr=22050)
        bins, frames, pitch, peak_mags = dsp.piptrack_peaks(mag, sr=22050)
        assert np.array_equal(np.nonzero(pitches), (bins, frames))
        assert np.array_equal(pitches[bins, frames], pitch)
        assert np.array_equal(mags[bins, frames], peak_mags)
    # nothing above fmin: both give 0.0
    silent = np.zeros((1025, 20), np.float32)
    assert dsp.estimate_tuning(silent, sr=22050) == librosa.estimate_tuning(S=silent, sr=22050) == 0.0


def test_extract_segments_shapes_validity_and_agreement(speech: np.ndarray) -> None:
    spec = feature_spec("rich", "telephony")
    call = np.concatenate([speech, np.zeros(48000, np.float32), speech])  # 6 s
    segments = [(0.2, 2.3), (3.7, 5.8), (1.0, 1.1), (10.0, 12.0), (5.9, 5.95), (0.0, 6.0)]
    X, valid = extract_segments(call, 48000, spec, segments)
    assert X.shape == (6, spec.n_features) and X.dtype == np.float32
    assert valid.tolist() == [True, True, False, False, False, True]
    assert np.isfinite(X).all()
    assert not X[~valid].any()
    # the same speech twice gives (nearly) the same pooled vector
    assert np.corrcoef(X[0], X[1])[0, 1] > 0.999
    # and pooling a segment agrees with extracting that stretch as a clip
    clip = extract(speech[int(0.2 * 48000): int(2.3 * 48000)], 48000, spec)
    assert np.corrcoef(X[0], clip)[0, 1] > 0.99
    empty_X, empty_valid = extract_segments(call, 48000, spec, [])
    assert empty_X.shape == (0, spec.n_features) and empty_valid.shape == (0,)


def test_extract_segments_analyses_each_needed_frame_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The cost follows the segments, not the call: each frame is analysed at most once, and
    frames far from every segment not at all (bench/features.py measures the speed)."""
    from etl.audio import dsp

    analysed: list[int] = []
    real = dsp.iter_stft_blocks

    def counting(*args: object, **kwargs: object) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        for first, raw, spectrum in real(*args, **kwargs):  # type: ignore[arg-type]
            analysed.extend(range(first, first + len(spectrum)))
            yield first, raw, spectrum

    monkeypatch.setattr(dsp, "iter_stft_blocks", counting)
    spec = feature_spec("rich", "telephony")
    fps = spec.sample_rate / spec.params["hop"]
    rng = np.random.default_rng(1)
    call = (0.1 * rng.standard_normal(8000 * 60)).astype(np.float32)
    # touching and overlapping segments over the whole call: no frame twice
    segments = [(s, s + 2.5) for s in np.arange(0.0, 57.0, 2.0)]
    X, valid = extract_segments(call, 8000, spec, segments)
    assert valid.all() and np.isfinite(X).all()
    assert len(analysed) == len(set(analysed)) <= dsp.frame_count(len(call), spec.params["hop"])
    # segments in the first 10 s of the minute: the other 50 s are never analysed
    analysed.clear()
    X, valid = extract_segments(call, 8000, spec, [(0.5, 4.0), (6.0, 10.0)])
    assert valid.all() and max(analysed) < 11.0 * fps


# --------------------------------------------------------------------------------------------
# Database
# --------------------------------------------------------------------------------------------


def test_versioning_new_params_new_version(db_session: Session) -> None:
    spec = feature_spec("rich", "studio")
    first = ensure_feature_set(db_session, spec)
    assert ensure_feature_set(db_session, spec) == first
    changed_params = {**spec.params, "yin_threshold": 0.2}
    changed = dataclasses.replace(spec, params=changed_params,
                                  params_hash=hashlib.sha256(b"other").hexdigest())
    second = ensure_feature_set(db_session, changed)
    rows = {r.id: r for r in db_session.scalars(select(FeatureSet).where(
        FeatureSet.name == "rich", FeatureSet.channel == "studio"))}
    assert second != first
    assert (rows[first].version, rows[second].version) == (1, 2)
    assert rows[second].params["yin_threshold"] == 0.2
    assert rows[first].params["yin_threshold"] == spec.params["yin_threshold"]  # old row intact
    assert rows[first].feature_names == spec.feature_names
    other_channel = ensure_feature_set(db_session, feature_spec("rich", "telephony"))
    assert db_session.get(FeatureSet, other_channel).version == 1  # type: ignore[union-attr]


def _add_clips(session: Session, paths: list[Path], corpus: str = "ravdess") -> list[int]:
    rows = []
    for path in paths:
        try:
            info = sf.info(str(path))
            header = (info.samplerate, info.channels, info.frames, info.duration)
        except sf.LibsndfileError:  # the undecodable fixture
            header = (16000, 1, 1, 1 / 16000)
        rows.append({"corpus": corpus, "path": str(path), "clip_name": path.stem,
                     "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                     "emotion": "angry", "emotion_code": "05", "label_source": "test",
                     "sample_rate": header[0], "channels": header[1], "frames": header[2],
                     "duration_s": header[3], "size_bytes": path.stat().st_size})
    result = session.execute(insert(Clip).returning(Clip.id), rows)
    return [int(r[0]) for r in result]


def _write_clips(root: Path, n_speech: int = 4) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, emotion in enumerate(["angry", "sad", "happy", "neutral", "calm", "fearful"][:n_speech]):
        path = root / f"clip_{i}_{emotion}.wav"
        sf.write(str(path), synthesize(emotion, voice=Voice.for_actor(i + 1), seed=i, sr=16000,
                                       duration_s=1.5), 16000, subtype="PCM_16")
        paths.append(path)
    silent = root / "silent.wav"
    sf.write(str(silent), np.zeros(16000, np.float32), 16000)
    short = root / "short.wav"
    tone = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(int(0.15 * 16000)) / 16000)
    sf.write(str(short), tone.astype(np.float32), 16000)  # 0.15 s: under min_duration_s
    broken = root / "broken.wav"
    broken.write_bytes(b"RIFF not really a wave file")
    return [*paths, silent, short, broken]


def test_store_results_bulk_idempotent_and_refuses_nan(db_session: Session, tmp_path: Path) -> None:
    spec = feature_spec("seed180", "telephony")
    fs = ensure_feature_set(db_session, spec)
    ids = _add_clips(db_session, _write_clips(tmp_path, n_speech=2)[:3])
    good = [ClipResult(ids[0], np.arange(spec.n_features, dtype=np.float32) / 7),
            ClipResult(ids[1], np.ones(spec.n_features, np.float32))]
    bad = [ClipResult(ids[2], None, "silent: test")]
    assert store_results(db_session, feature_set_id=fs, results=good + bad) == (2, 1, 0)
    assert store_results(db_session, feature_set_id=fs, results=good + bad) == (0, 0, 0)
    got_ids, X = load_feature_matrix(db_session, feature_set_id=fs)
    assert got_ids.tolist() == ids[:2]
    np.testing.assert_array_equal(X[0], good[0].values)  # float32 round trip is exact
    nan = np.ones(spec.n_features, np.float32)
    nan[3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        store_results(db_session, feature_set_id=fs, results=[ClipResult(ids[2], nan)])
    with pytest.raises(ValueError, match="values"):
        store_results(db_session, feature_set_id=fs, results=[ClipResult(ids[2], np.ones(5, np.float32))])
    # analysts can unnest values by name
    rows = db_session.execute(text(
        "SELECT n.name, n.value FROM clip_features f JOIN feature_sets s ON s.id = f.feature_set_id "
        "CROSS JOIN LATERAL unnest(s.feature_names, f.values) AS n(name, value) "
        "WHERE f.clip_id = :c AND s.id = :fs AND n.name = 'mfcc_02_mean'"),
        {"c": ids[0], "fs": fs}).all()
    assert rows == [("mfcc_02_mean", pytest.approx(1 / 7, rel=1e-6))]


@pytest.fixture()
def clip_db(cli_env: dict[str, str], engine: Engine, tmp_path: Path) -> Iterator[list[int]]:
    """Committed clip rows (4 speech, silent, too short, undecodable) for code that commits."""
    with Session(engine) as session, session.begin():
        ids = _add_clips(session, _write_clips(tmp_path / "clips"))
    yield ids


def test_run_features_records_errors_is_idempotent_and_resumes(clip_db: list[int], engine: Engine) -> None:
    from etl.runs.features import FeatureRunConfig, run_features

    run = FeatureRunConfig(set_name="rich", channel="telephony", workers=1)
    first = run_features(engine, dataclasses.replace(run, chunk_size=3), progress=False)
    assert (first.pending, first.stored, first.errors) == (7, 4, 3)
    with Session(engine) as session:
        reasons = dict(session.execute(select(FeatureError.clip_id, FeatureError.reason)).all())
        assert reasons[clip_db[4]].startswith("silent")
        assert reasons[clip_db[5]].startswith("too short")
        assert reasons[clip_db[6]].startswith("decode")
        ids, X = load_feature_matrix(session, feature_set_id=first.feature_set_id)
        assert ids.tolist() == clip_db[:4] and X.shape == (4, first.n_features)
        assert np.isfinite(X).all()
    again = run_features(engine, run, progress=False)
    assert (again.pending, again.stored, again.errors) == (0, 0, 0)
    # an interrupted run: two vectors never got written; the next run does exactly those
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM clip_features WHERE clip_id = ANY(:ids)"),
                     {"ids": clip_db[1:3]})
    resumed = run_features(engine, dataclasses.replace(run, workers=2, chunk_size=1),
                           progress=False)
    assert (resumed.pending, resumed.stored, resumed.errors) == (2, 2, 0)
    with Session(engine) as session:
        _, X2 = load_feature_matrix(session, feature_set_id=first.feature_set_id)
        np.testing.assert_allclose(X2, X, rtol=1e-5, atol=1e-5)  # workers give the same numbers
        n_rows = session.scalar(text("SELECT count(*) FROM clip_features"))
        assert n_rows == 4
    retried = run_features(engine, dataclasses.replace(run, retry_errors=True), progress=False)
    assert (retried.pending, retried.stored, retried.errors) == (3, 0, 3)


def test_cli_features_and_flow(clip_db: list[int]) -> None:
    from typer.testing import CliRunner

    from ser.cli import app

    runner = CliRunner()
    bad = runner.invoke(app, ["features", "--set", "nope"])
    assert bad.exit_code == 2 and "unknown feature set" in bad.output
    done = runner.invoke(app, ["features", "--set", "seed180", "--no-prefect", "--json",
                               "--workers", "1"])
    assert done.exit_code == 0, done.output
    # seed180 does not trim (like the seed code) and accepts 0.1 s: the 0.15 s tone is stored
    assert '"stored": 5' in done.output and '"errors": 2' in done.output
    assert '"augmented"' not in done.output  # phone copies only for rich/telephony
    listed = runner.invoke(app, ["features", "--list"])
    assert "seed180" in listed.output and listed.exit_code == 0
    # telephony computes what `ser train`'s defaults need: the default set (richvoice, the
    # voice encoder's embedding beside rich) on telephony, and its phone-line copies
    import json

    from etl.features.specs import DEFAULT_SET, VOICE_SET

    assert DEFAULT_SET == VOICE_SET
    default = runner.invoke(app, ["features", "--channel", "telephony", "--no-prefect",
                                  "--json", "--workers", "1"])
    assert default.exit_code == 0, default.output
    report = json.loads(default.output)
    assert (report["feature_set"], report["channel"]) == ("richvoice", "telephony")
    assert report["augmented"]["feature_set"] == "richvoice+phone"
    assert report["augmented"]["stored"] == report["stored"] > 0
    listed = runner.invoke(app, ["features", "--list"]).output
    phone_row = next(line for line in listed.splitlines() if "richvoice+phone" in line)
    assert f" {report['stored']} " in phone_row  # clips, not copies

    from prefect.testing.utilities import prefect_test_harness

    from etl.runs.features import FeatureRunConfig
    from flows.features import features_flow

    run = FeatureRunConfig(set_name="seed180", channel="telephony", workers=1)
    with prefect_test_harness(server_startup_timeout=120):
        report = features_flow(run, progress=False)
        assert (report["stored"], report["errors"]) == (5, 2)
        assert features_flow(run, progress=False)["pending"] == 0


def test_feeder_failure_reaches_the_writer(clip_db: list[int], engine: Engine) -> None:
    from etl.runs.features import FeatureRunConfig, run_features

    def broken_submit(chunk: list[tuple[int, str]]) -> object:
        raise RuntimeError("cluster went away")

    with pytest.raises(RuntimeError, match="cluster went away"):
        run_features(engine, FeatureRunConfig(set_name="rich", channel="studio"),
                     progress=False, submit=broken_submit)


def test_cli_process_exits_cleanly_and_prints_json(clip_db: list[int], cli_env: dict[str, str]) -> None:
    """`ser` as a process (worker pool and all) ends with exit code 0 and its whole output."""
    import json
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "ser", "features", "--set", "seed180",
                           "--channel", "telephony", "--no-prefect", "--json", "--workers", "2"],
                          env={**os.environ, **cli_env}, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert (report["stored"], report["errors"]) == (5, 2)
    bad = subprocess.run([sys.executable, "-m", "ser.cli", "features", "--set", "nope"],
                         env={**os.environ, **cli_env}, capture_output=True, text=True,
                         timeout=120, check=False)
    assert bad.returncode == 2 and "unknown feature set" in bad.stderr


def test_the_writing_process_never_imports_the_extraction_stack() -> None:
    """`ser features` registers sets, feeds workers and unpickles their results without
    scipy or the decoders (their imports would compete with the workers for the CPU)."""
    import subprocess
    import sys

    code = ("import sys, pickle, numpy as np\n"
            "import ser.commands.features, etl.runs.features, etl.features.store\n"
            "from etl.features.specs import ClipResult, feature_spec\n"
            "feature_spec('rich'); feature_spec('seed180', 'telephony')\n"
            "pickle.loads(pickle.dumps(ClipResult(1, np.zeros(3, np.float32))))\n"
            "print(sorted(m for m in ('scipy', 'soundfile', 'soxr', 'miniaudio', 'librosa',\n"
            "                         'etl.features.extraction', 'etl.audio.decode') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)
    assert result.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------------
# Long recordings: bounded-memory decode and seed180, speech segments stored per clip
# --------------------------------------------------------------------------------------------


def _long_speech(sr: int, *, utterances: int, pause_s: float = 1.5) -> np.ndarray:
    """Synthetic utterances (2.5 s each, several emotions) separated by silent pauses."""
    parts = []
    for i in range(utterances):
        emotion = ("angry", "sad", "happy", "neutral")[i % 4]
        parts += [synthesize(emotion, voice=Voice.for_actor(i % 3 + 1), seed=i, sr=sr,
                             duration_s=2.5), np.zeros(int(pause_s * sr), np.float32)]
    return np.concatenate(parts).astype(np.float32)


def test_blockwise_librosa_stft_equals_one_pass(speech: np.ndarray) -> None:
    from etl.audio import dsp

    y = np.tile(speech, 3)
    whole = dsp.librosa_stft_magnitude(y, n_fft=2048, hop=512)
    blocks = list(dsp.iter_librosa_stft_magnitude(y, n_fft=2048, hop=512, block_frames=37))
    assert len(blocks) > 3
    np.testing.assert_array_equal(np.concatenate(blocks, axis=1), whole)


def test_seed180_of_a_long_signal_in_blocks_matches_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    from etl.features import seed

    y = _long_speech(22050, utterances=6)
    spec = feature_spec("seed180")
    one_pass = seed.seed_vector(y, spec)
    monkeypatch.setattr(seed, "SEED_BLOCK_FRAMES", 100)  # ~6 blocks, two passes
    blocked = seed.seed_vector(y, spec)
    # mel and MFCC: same per-frame numbers, only the float32 mean's summation order differs;
    # chroma: the tuning from the blocks' peaks is the same, so the chroma filters are too
    np.testing.assert_allclose(blocked[:40], one_pass[:40], atol=1e-4)
    np.testing.assert_allclose(blocked[40:52], one_pass[40:52], atol=1e-5)
    np.testing.assert_allclose(blocked[52:], one_pass[52:], rtol=1e-5)


@pytest.mark.parametrize(("subtype", "channels", "suffix"),
                         [("PCM_16", 2, ".wav"), ("PCM_16", 1, ".flac"), ("FLOAT", 1, ".wav")])
def test_long_files_decode_in_blocks_to_the_same_samples(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, subtype: str, channels: int,
        suffix: str) -> None:
    from etl.audio import decode as audio

    rng = np.random.default_rng(1)
    x = (0.1 * rng.standard_normal((48000 * 25 + 77, channels))).astype(np.float32)
    path = tmp_path / f"long{suffix}"
    sf.write(str(path), x, 48000, subtype=subtype)
    in_memory, _ = audio.load_audio(path, sr=16000)
    monkeypatch.setattr(audio, "STREAM_DECODE_S", 2.0)  # 10 s blocks, and a last partial one
    streamed, rate = audio.load_audio(path, sr=16000)
    assert rate == 16000
    np.testing.assert_array_equal(streamed, in_memory)
    # a header claiming more than the preallocation cap: the buffer grows as samples arrive
    monkeypatch.setattr(audio, "STREAM_PREALLOCATE_MAX", 1000)
    grown, _ = audio.load_audio(path, sr=16000)
    np.testing.assert_array_equal(grown, in_memory)


@pytest.mark.parametrize(("subtype", "channels"), [("PCM_16", 1), ("PCM_16", 2), ("PCM_24", 1)])
def test_flac_fast_decoder_gives_libsndfiles_samples(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, subtype: str, channels: int) -> None:
    """Whole 16-bit FLAC files decode through dr_flac (miniaudio), to libsndfile's samples
    exactly; other bit depths, windows and a file dr_flac rejects go through soundfile."""
    from etl.audio import decode as audio

    rng = np.random.default_rng(2)
    x = np.clip(0.3 * rng.standard_normal((48000 + 123, channels)), -1, 1).astype(np.float32)
    path = tmp_path / "clip.flac"
    sf.write(str(path), x, 48000, subtype=subtype)
    reference = sf.read(str(path), dtype="float32", always_2d=True)[0]
    fast = audio._read_flac16(path)
    if subtype == "PCM_16":
        assert fast is not None and fast[1] == 48000
        np.testing.assert_array_equal(fast[0], reference)
    else:
        assert fast is None  # 24-bit: libsndfile's own scaling, not int16
    decoded, rate = audio.load_audio(path, sr=None, mono=False)
    np.testing.assert_array_equal(decoded, reference.T)  # (channels, n)
    assert rate == 48000
    window, _ = audio.load_audio(path, sr=None, mono=False, start_s=0.5, duration_s=0.25)
    np.testing.assert_array_equal(window, reference[24000:36000].T)

    def broken(_path: str) -> None:
        raise audio.miniaudio.DecodeError("bad frame")

    monkeypatch.setattr(audio.miniaudio, "flac_read_file_s16", broken)
    fallback, _ = audio.load_audio(path, sr=None, mono=False)
    np.testing.assert_array_equal(fallback, decoded)
    with pytest.raises(audio.AudioError, match="cannot decode"):  # worded as for any file
        audio.load_audio(tmp_path / "missing.flac", sr=None)


def test_long_clips_store_speech_segments_once(engine: Engine, tmp_path: Path,
                                               cli_env: dict[str, str]) -> None:
    from etl.features.extraction import LONG_CLIP_S, extract_files
    from etl.runs.features import FeatureRunConfig, run_features

    long_path = tmp_path / "long_call_like.wav"
    y = _long_speech(16000, utterances=9)  # 36 s: over LONG_CLIP_S
    assert len(y) / 16000 > LONG_CLIP_S
    sf.write(str(long_path), y, 16000, subtype="PCM_16")
    short_path = _write_clips(tmp_path / "short", n_speech=1)[0]
    spec = feature_spec("rich", "telephony")
    (long_result,) = extract_files([(1, str(long_path))], spec)
    assert long_result.segments is not None and long_result.segment_values is not None
    bounds = long_result.segments
    # roughly one segment per utterance (2.5 s of speech, 1.5 s pauses), 0.5-4 s long, in order
    assert 7 <= len(bounds) <= 12
    assert np.all(np.diff(bounds[:, 0]) > 0)
    assert np.all((bounds[:, 1] - bounds[:, 0] >= 0.5 - 1e-6) & (bounds[:, 1] - bounds[:, 0] <= 4.0 + 1e-6))
    assert long_result.segment_values.shape == (len(bounds), spec.n_features)
    assert np.isfinite(long_result.segment_values).all()
    with Session(engine) as session, session.begin():
        ids = _add_clips(session, [long_path, short_path])

    run = FeatureRunConfig(set_name="rich", channel="telephony", workers=1)
    first = run_features(engine, run, progress=False)
    assert (first.pending, first.stored, first.errors, first.segments) == (2, 2, 0, len(bounds))
    again = run_features(engine, run, progress=False)
    assert (again.pending, again.stored, again.segments) == (0, 0, 0)
    with Session(engine) as session:
        rows = session.execute(text(
            "SELECT clip_id, seg_start_s, seg_end_s, values FROM clip_features "
            "WHERE feature_set_id = :fs AND seg_end_s >= 0 ORDER BY seg_start_s"),
            {"fs": first.feature_set_id}).all()
        assert {r[0] for r in rows} == {ids[0]}  # the short clip has only its whole-clip row
        np.testing.assert_allclose([(r[1], r[2]) for r in rows], bounds)
        np.testing.assert_array_equal(np.array([r[3] for r in rows], np.float32),
                                      long_result.segment_values)
        # training reads whole-clip rows only
        got_ids, X = load_feature_matrix(session, feature_set_id=first.feature_set_id)
        assert got_ids.tolist() == ids and X.shape == (2, spec.n_features)


def test_long_bandlimit_pads_to_a_fast_length_with_the_same_band(monkeypatch: pytest.MonkeyPatch) -> None:
    from etl.audio import decode as audio

    rng = np.random.default_rng(3)
    y = (0.1 * rng.standard_normal(30011)).astype(np.float32)  # a prime length: Bluestein
    exact = audio.bandlimit(y, 8000, low_hz=300.0, high_hz=3400.0)
    monkeypatch.setattr(audio, "EXACT_BANDLIMIT_MAX", 1000)
    padded = audio.bandlimit(y, 8000, low_hz=300.0, high_hz=3400.0)
    assert padded.shape == exact.shape and padded.dtype == np.float32
    # only the edges see the padding (the exact filter wraps the end onto the start)
    inner = slice(800, -800)
    np.testing.assert_allclose(padded[inner], exact[inner], atol=2e-3 * float(np.abs(exact).max()))
    spectrum = np.abs(np.fft.rfft(padded)) ** 2
    freqs = np.fft.rfftfreq(len(padded), 1 / 8000)
    assert spectrum[(freqs < 200) | (freqs > 3500)].sum() < 1e-3 * spectrum.sum()
