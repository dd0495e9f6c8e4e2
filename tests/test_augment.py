"""Phone-line augmentation: deterministic per (clip, copy, seed), a real phone line, stored as
versioned variants of the rich+phone feature set; level normalisation of the rich set."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from sqlalchemy import text
from sqlalchemy.orm import Session

from etl.audio.phone_line import augment, chain_spec, g711_roundtrip
from etl.features.extraction import extract, extract_files, extract_segments
from etl.features.specs import feature_spec
from etl.features.store import ensure_feature_set, load_variant_matrix, store_results
from etl.synthetic.history import make_corpus

SR = 8000


def _voice(seconds: float = 1.5, *, f0: float = 160.0, amp: float = 0.2, seed: int = 0,
           sr: int = SR) -> np.ndarray:
    """A voiced, syllable-modulated harmonic tone with a little noise, float32 (n,)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    pitch = f0 * (1 + 0.05 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / sr
    y = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 3.5 * t) ** 2
    y = y * envelope + 0.01 * rng.standard_normal(len(t))
    return (amp * y / np.abs(y).max()).astype(np.float32)


def test_same_clip_copy_and_seed_give_the_same_samples() -> None:
    x = _voice()
    first = augment(x, SR, clip_key=7, copy=1, seed=0)
    assert np.array_equal(first, augment(x, SR, clip_key=7, copy=1, seed=0))
    assert first.shape == x.shape and first.dtype == np.float32
    # any element of the triple changes the draw
    for other in (augment(x, SR, clip_key=8, copy=1, seed=0),
                  augment(x, SR, clip_key=7, copy=2, seed=0),
                  augment(x, SR, clip_key=7, copy=1, seed=1)):
        assert not np.allclose(first, other)


def test_augmentation_leaves_global_random_state_alone() -> None:
    random.seed(123)
    np.random.seed(123)
    expected = (random.random(), np.random.random())
    random.seed(123)
    np.random.seed(123)
    augment(_voice(), SR, clip_key=1, copy=1)
    assert (random.random(), np.random.random()) == expected


def test_copies_sound_like_a_phone_line() -> None:
    """Band limited to the phone band, levels spread over tens of dB, and never above full
    scale, over many draws."""
    x = _voice(2.0, amp=0.3)
    levels, low_share, high_share = [], [], []
    for clip in range(24):
        y = augment(x, SR, clip_key=clip, copy=1)
        assert np.abs(y).max() <= 1.0 and np.isfinite(y).all()
        spectrum = np.abs(np.fft.rfft(y)) ** 2
        freqs = np.fft.rfftfreq(len(y), 1 / SR)
        low_share.append(spectrum[freqs < 120].sum() / spectrum.sum())
        high_share.append(spectrum[freqs > 3700].sum() / spectrum.sum())
        levels.append(10 * np.log10(np.mean(y.astype(np.float64) ** 2)))
    assert np.median(low_share) < 0.02  # the 160 Hz fundamental is attenuated, hum-free band
    assert np.median(high_share) < 0.01
    assert np.ptp(levels) > 12.0  # gain and level changes


def test_g711_roundtrips_are_close_and_level_dependent() -> None:
    x = _voice(amp=0.5)
    for law in ("mu", "a"):
        y = g711_roundtrip(x, law=law)
        assert y.dtype == np.float32
        err = y - x
        snr = 10 * np.log10(np.sum(x.astype(np.float64) ** 2) / np.sum(err.astype(np.float64) ** 2))
        assert 25.0 < snr < 50.0  # 8-bit companding: ~35-40 dB, not lossless
        assert len(np.unique(y)) <= 256
    with pytest.raises(ValueError, match="law"):
        g711_roundtrip(x, law="gsm")


def test_augmented_set_is_versioned_by_its_chain() -> None:
    clean, phone = feature_spec("rich", "telephony"), feature_spec("rich+phone", "telephony")
    assert phone.feature_names == clean.feature_names
    assert phone.params_hash != clean.params_hash
    assert phone.params["augment"]["chain"] == chain_spec("phone")
    assert {s["transform"] for s in chain_spec("phone")} >= {
        "Gain", "HighPassFilter", "LowPassFilter", "AddColorNoise", "OneOf", "TimeMask"}
    codecs = next(s for s in chain_spec("phone") if s["transform"] == "OneOf")
    assert {c["transform"] for c in codecs["params"]["transforms"]} == {"G711", "Mp3Compression"}
    with pytest.raises(ValueError, match="telephony only"):
        feature_spec("rich+phone", "studio")
    with pytest.raises(ValueError, match="unknown"):
        feature_spec("rich+radio", "telephony")


def test_augmented_copies_are_stored_as_variants(db_session: Session, tmp_path: Path) -> None:
    paths = []
    for i in range(3):
        path = tmp_path / f"clip{i}.wav"
        sf.write(path, _voice(seed=i, f0=140 + 20 * i), 16000 if i else SR)
        paths.append(path)
    clip_ids = make_corpus(db_session, n_actors=1, emotions=("calm",), clips_per_emotion=3)
    db_session.execute(text("UPDATE clips SET path = p FROM unnest(CAST(:ids AS int[]), "
                            "CAST(:paths AS text[])) AS t(i, p) WHERE id = i"),
                       {"ids": clip_ids, "paths": [str(p) for p in paths]})
    spec = feature_spec("rich+phone", "telephony")
    fs = ensure_feature_set(db_session, spec)
    results = extract_files(list(zip(clip_ids, map(str, paths), strict=True)), spec)
    copies = spec.params["augment"]["copies"]
    assert all(r.variants is not None and r.variants.shape == (copies, spec.n_features)
               for r in results)
    counts = store_results(db_session, feature_set_id=fs, results=results)
    assert counts.stored == 3  # clips, not rows
    ids, variant, X = load_variant_matrix(db_session, feature_set_id=fs)
    assert ids.tolist() == [c for c in clip_ids for _ in (1, 2)]
    assert variant.tolist() == [1, 2] * 3
    # deterministic: extracting again gives the same vectors, and storing again adds nothing
    again = extract_files([(clip_ids[1], str(paths[1]))], spec)[0]
    assert again.variants is not None
    np.testing.assert_array_equal(again.variants, X[2:4])
    assert store_results(db_session, feature_set_id=fs, results=results).stored == 0
    # copies differ from each other and from the recorded clip
    clean = extract_files([(clip_ids[1], str(paths[1]))], feature_spec("rich", "telephony"))[0].values
    assert not np.allclose(X[2], X[3]) and not np.allclose(X[2], clean)


@pytest.mark.parametrize("gain_db", [-18.0, 12.0])
def test_rich_features_do_not_follow_the_recording_level(gain_db: float) -> None:
    """The new rich version scales each clip to one speech level: a louder or quieter copy has
    the same features (up to float rounding)."""
    x = _voice(amp=0.05)
    scaled = (x * 10 ** (gain_db / 20)).astype(np.float32)
    for channel in ("studio", "telephony"):
        spec = feature_spec("rich", channel)
        a, b = extract(x, SR, spec), extract(scaled, SR, spec)
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)
    # a call channel too: one gain for the whole channel, segments keep their relative level
    spec = feature_spec("rich", "telephony")
    channel = np.concatenate([x, 0.25 * x, x])
    segs = [(0.0, 1.5), (1.5, 3.0), (3.0, 4.5)]
    A, _ = extract_segments(channel, SR, spec, segs)
    B, _ = extract_segments((channel * 10 ** (gain_db / 20)).astype(np.float32), SR, spec, segs)
    np.testing.assert_allclose(A, B, rtol=1e-3, atol=1e-3)
    rms_mean = spec.feature_names.index("rms_db_mean")
    assert A[0, rms_mean] - A[1, rms_mean] == pytest.approx(12.0, abs=1.0)
