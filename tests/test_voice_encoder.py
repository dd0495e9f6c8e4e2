"""The numpy voice encoder (etl.features.voice) against resemblyzer's torch model, and its weights.

The reference embeddings in tests/data/voice_reference.npz were computed once by resemblyzer
0.1.4 with torch (tests/data/make_voice_reference.py); the signals are regenerated here.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from etl.features.voice import weights as voice
from etl.features.voice.encoder import VoiceEncoder
from etl.features.voice.frontend import mel_spectrogram, partial_starts
from etl.features.voice.params import (
    EMBEDDING_DIM,
    ENCODER_RATE,
    VoiceEncoderError,
    encoder_params,
)
from etl.features.voice.weights import install_weights, load_encoder, read_state_dict
from tests.data.make_voice_reference import reference_signals

REFERENCE = Path(__file__).parent / "data" / "voice_reference.npz"


@pytest.fixture(scope="session")
def weights() -> Path:
    """The weights in the virtualenv, downloaded once from the package index if missing."""
    return install_weights()


@pytest.fixture(scope="session")
def encoder(weights: Path) -> VoiceEncoder:
    return load_encoder(weights)


def test_params_describe_the_reference_setup() -> None:
    params = encoder_params()
    ref = np.load(REFERENCE)
    assert json.loads(json.dumps(params)) == params
    assert params["partial_step_frames"] == int(ref["partial_step_frames"])
    assert params["level_norm"]["target_dbfs"] == float(ref["target_dbfs"])
    assert params["min_coverage"] == float(ref["min_coverage"])


def test_mel_spectrogram_is_librosas() -> None:
    librosa = pytest.importorskip("librosa")
    for y in reference_signals().values():
        expected = librosa.feature.melspectrogram(y=y, sr=ENCODER_RATE, n_fft=400,
                                                  hop_length=160, n_mels=40).T
        np.testing.assert_allclose(mel_spectrogram(y), expected, rtol=1e-5,
                                   atol=1e-6 * float(expected.max()))


def test_embeddings_match_resemblyzer_torch(encoder: VoiceEncoder) -> None:
    ref = np.load(REFERENCE)
    signals = reference_signals()
    for name, expected in zip(ref["names"], ref["embeddings"], strict=True):
        got = encoder.embed(signals[str(name)], max_partials=None, pad_short=True)  # as torch
        assert got.dtype == np.float32 and got.shape == (EMBEDDING_DIM,)
        assert np.abs(got - expected).max() < 1e-4, name
        assert float(got @ expected) > 0.9999, name


def test_embed_segments_equals_embed_per_segment(encoder: VoiceEncoder) -> None:
    signals = reference_signals()
    gap = np.zeros(ENCODER_RATE // 2, dtype=np.float32)
    parts = [signals["vowel_i"], gap, signals["glide_syllables"], gap, signals["noise_bursts"]]
    y = np.concatenate(parts)
    bounds = np.cumsum([0] + [p.size for p in parts]) / ENCODER_RATE
    segments = [(bounds[0], bounds[1]), (bounds[2], bounds[3]), (bounds[4], bounds[5]),
                (bounds[2] + 0.3, bounds[2] + 0.8),  # shorter than one partial
                (bounds[1], bounds[2]),  # all zeros
                (2.0, 2.0)]  # no samples
    got = encoder.embed_segments(y, segments)
    assert got.shape == (len(segments), EMBEDDING_DIM) and got.dtype == np.float32
    for row, (start, end) in enumerate(segments[:4]):
        alone = encoder.embed(y[round(start * ENCODER_RATE):round(end * ENCODER_RATE)])
        np.testing.assert_allclose(got[row], alone, atol=1e-5)
        assert abs(float(np.linalg.norm(got[row])) - 1) < 1e-5
    assert not got[4:].any()
    assert encoder.embed_segments(y, []).shape == (0, EMBEDDING_DIM)


def test_level_does_not_matter(encoder: VoiceEncoder) -> None:
    sig = reference_signals()["vowel_a"]
    soft, loud = encoder.embed(sig * 0.01), encoder.embed(sig * 30)
    np.testing.assert_allclose(soft, loud, atol=1e-5)


def test_bad_segments_are_refused(encoder: VoiceEncoder) -> None:
    with pytest.raises(ValueError, match="ends"):
        encoder.embed_segments(np.zeros(16000, np.float32), [(1.0, 0.5)])
    with pytest.raises(ValueError, match="mono"):
        encoder.embed(np.zeros((2, 16000), np.float32))


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def _legacy_file(main: bytes) -> bytes:
    """A legacy torch file around ``main`` (no storages)."""
    head = b"".join(pickle.dumps(obj, protocol=2) for obj in (
        voice._TORCH_MAGIC, voice._TORCH_LEGACY_PROTOCOL, {"little_endian": True}))
    return head + main + pickle.dumps([], protocol=2)


def test_unpickler_refuses_any_other_global(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    evil = pickle.dumps(_Exploit(marker), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system"):
        voice._RestrictedUnpickler(io.BytesIO(evil)).load()
    with pytest.raises(VoiceEncoderError, match="not allowed"):
        read_state_dict(_legacy_file(evil))
    builtin = pickle.dumps({"model_state": {"x": eval}}, protocol=2)  # builtins.eval
    with pytest.raises(VoiceEncoderError, match=r"builtin__\.eval is not allowed"):
        read_state_dict(_legacy_file(builtin))
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "altered"])
def test_damaged_weights_are_refused(weights: Path, tmp_path: Path, damage: str) -> None:
    data = bytearray(weights.read_bytes())
    if damage == "truncated":
        data = data[:len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "bad.pt"
    bad.write_bytes(bytes(data))
    with pytest.raises(VoiceEncoderError, match="ser encoder install") as info:
        load_encoder(bad)
    assert str(bad) in str(info.value) and "sha256" in str(info.value)


def test_missing_weights_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(VoiceEncoderError, match="ser encoder install") as info:
        load_encoder(tmp_path / "absent.pt")
    assert "absent.pt" in str(info.value)


def test_install_skips_pip_when_present(weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pip(*args: object, **kwargs: object) -> None:
        raise AssertionError("pip ran although the weights are installed")

    monkeypatch.setattr(subprocess, "run", no_pip)
    assert install_weights(dest=weights) == weights


def test_failed_download_says_what_pip_said(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_pip(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        assert "--no-deps" in cmd and "resemblyzer==0.1.4" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found "
                                                       "for resemblyzer==0.1.4\n")

    monkeypatch.setattr(subprocess, "run", failing_pip)
    with pytest.raises(VoiceEncoderError, match="No matching distribution") as info:
        install_weights(dest=tmp_path / "w.pt", force=True)
    assert str(voice.weights_path()) in str(info.value)
    assert not (tmp_path / "w.pt").exists()


def test_cli_show(weights: Path) -> None:
    from ser.cli import app

    result = CliRunner().invoke(app, ["encoder", "show", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["sha256_ok"] and shown["path"] == str(weights)


def test_max_partials_keeps_the_middle_or_spreads_them() -> None:
    four_s = 4 * ENCODER_RATE  # 401 frames: partials could start at 0..241
    assert partial_starts(four_s).tolist() == [0, 80, 160, 240]
    assert partial_starts(four_s, max_partials=1).tolist() == [120]
    assert partial_starts(four_s, max_partials=2).tolist() == [0, 241]
    assert partial_starts(ENCODER_RATE, max_partials=1).tolist() == [0]  # shorter than one


def test_a_short_segment_is_embedded_from_its_own_frames(encoder: VoiceEncoder) -> None:
    """A 0.7 s segment runs the network over its 71 frames only: no second of padding after
    it, in a batch of its own or beside a longer one."""
    short = reference_signals()["vowel_i"][: int(0.7 * ENCODER_RATE)]
    level = 10 ** (-30 / 20) / np.sqrt(np.mean(np.square(short, dtype=np.float64)))
    mel = mel_spectrogram((short * level).astype(np.float32))
    alone = encoder.embed_partials(mel[None])  # exactly its frames, nothing after
    got = encoder.embed(short)
    np.testing.assert_allclose(got, alone[0], atol=1e-5)
    padded = encoder.embed(short, pad_short=True)
    assert float(padded @ got) < 0.999  # the padding does move the embedding
    long = reference_signals()["glide_syllables"]
    both = encoder.embed_segments(np.concatenate([short, long]),
                                  [(0.0, 0.7), (0.7, 0.7 + long.size / ENCODER_RATE)])
    np.testing.assert_allclose(both[0], got, atol=1e-5)


def test_call_segments_reach_the_encoder_through_the_phone_band(weights: Path) -> None:
    """A 16 kHz VoIP channel with rumble under 300 Hz embeds like its G.711-band copy: training
    clips reach the encoder through the phone band, so call segments must too."""
    from etl.audio.decode import to_telephony
    from etl.features.extraction import extract_segments
    from etl.features.specs import feature_spec, voice_columns
    from etl.synthetic.speech import Voice, synthesize

    sr = 16000
    speech = np.concatenate([synthesize(e, voice=Voice.for_actor(3), seed=k, duration_s=2.0,
                                        sr=sr) for k, e in enumerate(("angry", "calm", "sad"))])
    t = np.arange(speech.size) / sr
    rumble = 0.3 * np.sin(2 * np.pi * 90.0 * t) + 0.2 * np.sin(2 * np.pi * 170.0 * t)
    wideband = (speech + rumble * np.abs(speech).max()).astype(np.float32)
    narrow, narrow_sr = to_telephony(wideband, sr)
    spec = feature_spec("richvoice", "telephony")
    segments = [(0.1, 1.9), (2.1, 3.9), (4.1, 5.9)]
    wide_x, wide_ok = extract_segments(wideband, sr, spec, segments)
    narrow_x, narrow_ok = extract_segments(narrow, narrow_sr, spec, segments)
    assert wide_ok.all() and narrow_ok.all()
    cols = voice_columns(spec)
    cosine = np.sum(wide_x[:, cols] * narrow_x[:, cols], axis=1)  # unit vectors
    assert cosine.min() > 0.98, cosine
