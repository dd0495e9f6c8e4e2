"""Voice-activity detection: accuracy on generated calls, streaming equivalence, edge cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from etl.audio import bandlimit, resample, to_telephony
from etl.callgen import ClipBank, generate_calls
from etl.synth import Voice, synthesize
from etl.vad import (
    FrameAnalyser,
    VadConfig,
    clean_regions,
    detect_speech,
    is_narrowband,
    windows,
)

RES = 0.01  # 10 ms grid for precision/recall


def _mask(regions: list[tuple[float, float]], n: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    for start, end in regions:
        mask[int(start / RES):int(end / RES)] = True
    return mask


@pytest.fixture(scope="module")
def calls(tmp_path_factory: pytest.TempPathFactory) -> list:
    bank = ClipBank.synthetic(actors=range(1, 5), per_emotion=1)
    return generate_calls(tmp_path_factory.mktemp("vadcalls"), n_calls=2, minutes=0.75,
                          bank=bank, seed=11)


def test_vad_finds_speech_in_generated_calls(calls: list) -> None:
    for call in calls:
        y, sr = sf.read(str(call.path), dtype="float32")
        n = int(len(y) / sr / RES) + 1
        for channel, role in enumerate(("agent", "customer")):
            truth = _mask([(e.start_s, e.end_s) for e in call.timeline if e.role == role], n)
            found = _mask(detect_speech(y[:, channel], sr), n)
            precision = (truth & found).sum() / found.sum()
            recall = (truth & found).sum() / truth.sum()
            # hangover and bridged in-turn pauses cost some precision by design
            assert precision > 0.85, (call.call_id, role, precision)
            assert recall > 0.93, (call.call_id, role, recall)


def test_block_streaming_equals_one_pass(calls: list) -> None:
    y, sr = sf.read(str(calls[0].path), dtype="float32")
    channel = y[:, 1]
    whole = FrameAnalyser(sr)
    whole.feed(channel)
    blocks = FrameAnalyser(sr)
    for start in range(0, len(channel), 12_345):  # odd block size: frames straddle blocks
        blocks.feed(channel[start:start + 12_345])
    np.testing.assert_allclose(blocks.energy_db, whole.energy_db, atol=1e-4)
    np.testing.assert_allclose(blocks.flatness, whole.flatness, atol=1e-5)
    assert blocks.regions() == whole.regions()


def test_silence_and_noise_are_not_speech() -> None:
    sr = 8000
    assert detect_speech(np.zeros(sr * 5, dtype=np.float32), sr) == []
    rng = np.random.default_rng(0)
    hiss = (0.01 * rng.standard_normal(sr * 5)).astype(np.float32)
    assert detect_speech(hiss, sr) == []
    # one utterance in line noise is found, at the right place
    speech = synthesize("neutral", voice=Voice.for_actor(2), seed=1, duration_s=2.0, sr=sr)
    signal = (0.001 * rng.standard_normal(sr * 6)).astype(np.float32)
    signal[2 * sr:4 * sr] += speech
    regions = detect_speech(signal, sr)
    assert len(regions) == 1
    start, end = regions[0]
    assert 1.9 < start < 2.3 and 3.7 < end < 4.2


def test_windows_are_bounded() -> None:
    regions = [(0.0, 0.5), (1.0, 2.5), (3.0, 12.0), (13.0, 17.0)]
    out = windows(regions, min_s=1.0, max_s=4.0)
    assert out[0] == (1.0, 2.5)  # the 0.5 s burst is not scored
    assert all(1.0 <= e - s <= 4.0 + 1e-9 for s, e in out)
    assert [w for w in out if 3.0 <= w[0] < 12.0] == [(3.0, 6.0), (6.0, 9.0), (9.0, 12.0)]
    assert out[-1] == (13.0, 17.0)
    with pytest.raises(ValueError):
        windows(regions, min_s=2.0, max_s=1.0)


def test_clean_regions_bridges_gaps_and_drops_bursts() -> None:
    regions = [(0.0, 1.0), (1.1, 2.0), (3.0, 3.05), (5.0, 6.0)]
    assert clean_regions(regions, min_speech_s=0.2, min_silence_s=0.25) == [(0.0, 2.0), (5.0, 6.0)]


def test_narrowband_detection() -> None:
    sr = 16000
    wide = synthesize("angry", voice=Voice.for_actor(2), seed=3, duration_s=2.0, sr=sr)
    # fricative-like energy above 4 kHz, ~25 dB down, as real wideband speech has
    hiss = np.random.default_rng(0).standard_normal(len(wide)).astype(np.float32)
    wide = wide + 0.03 * bandlimit(hiss, sr, low_hz=4500.0, high_hz=7500.0)
    phone, _ = to_telephony(wide, sr)
    analyser = FrameAnalyser(sr, VadConfig())
    analyser.feed(wide)
    assert not is_narrowband(sr, analyser.high_band_share)
    upsampled = FrameAnalyser(sr, VadConfig())  # phone audio stored at 16 kHz is still narrow
    upsampled.feed(resample(phone, 8000, sr))
    assert is_narrowband(sr, upsampled.high_band_share)
    assert is_narrowband(8000, 0.5)


def test_config_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        VadConfig(frame_s=0.01, hop_s=0.02)
