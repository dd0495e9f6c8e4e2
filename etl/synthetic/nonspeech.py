"""Non-speech sounds real calls carry, each on the channel a call-centre recording has it.

=========  ========  =================================================================
kind       channel   what
=========  ========  =================================================================
ringback   agent     ring-back tone before the call is answered (US 440+480 Hz, 2 s on /
                     4 s off, or UK 400+450 Hz double ring), at the call's start
ivr        agent     prompts of a recorded/TTS voice (not the agent) after the ring, at a
                     level 6-12 dB above or below the agent's speech
dtmf       customer  key presses (two-tone DTMF digits) answering the IVR, and an account
                     number typed in mid-call
hold       agent     hold music (chords, bass, melody; a few with a hi-hat) while the agent
                     is away; the customer is silent
babble     either    background talkers (5-8 other voices mixed, 12-22 dB below the speaker)
                     over a stretch of the call, in the customer's room or the call centre
=========  ========  =================================================================

Each source returns float32 ``(n,)`` at ``sr``, scaled to an RMS level in dBFS; where and how
often a call gets them is the generator's (:mod:`etl.synthetic.calls`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from etl.audio.decode import resample, trim_silence
from etl.synthetic.clips import ClipBank
from etl.synthetic.speech import Voice, synthesize

DTMF_ROWS_HZ = (697.0, 770.0, 852.0, 941.0)
DTMF_COLS_HZ = (1209.0, 1336.0, 1477.0)
DTMF_KEYS = "123456789*0#"
# (tone pair, cadence as (on_s, off_s) pairs) per national ring-back
RINGBACK_STYLES: dict[str, tuple[tuple[float, float], tuple[tuple[float, float], ...]]] = {
    "us": ((440.0, 480.0), ((2.0, 4.0),)),
    "uk": ((400.0, 450.0), ((0.4, 0.2), (0.4, 2.0))),
}
IVR_VOICE = Voice(base_f0=165.0, tract_scale=1.1)


def _at_level(signal: np.ndarray, dbfs: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(signal), dtype=np.float64))) if signal.size else 0.0
    if rms <= 0:
        return signal.astype(np.float32)
    return (signal * (10 ** (dbfs / 20.0) / rms)).astype(np.float32)


def _ramp(n: int, sr: int, ramp_s: float = 0.005) -> np.ndarray:
    """A flat-top envelope with short raised-cosine edges (no clicks)."""
    env = np.ones(n)
    k = min(int(ramp_s * sr), n // 2)
    if k > 0:
        edge = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, k))
        env[:k], env[n - k:] = edge, edge[::-1]
    return env


def ringback_tone(sr: int, *, style: str = "us", cycles: int = 2,
                  level_dbfs: float = -22.0) -> np.ndarray:
    """Ring-back: a tone pair switched by the national cadence, ``cycles`` repeats, ending on
    the last ring (the call is answered in the following silence)."""
    (f1, f2), cadence = RINGBACK_STYLES[style]
    parts: list[np.ndarray] = []
    for cycle in range(cycles):
        for k, (on_s, off_s) in enumerate(cadence):
            n = round(on_s * sr)
            t = np.arange(n) / sr
            parts.append((np.sin(2 * np.pi * f1 * t) + np.sin(2 * np.pi * f2 * t)) * _ramp(n, sr))
            last = cycle == cycles - 1 and k == len(cadence) - 1
            if not last:
                parts.append(np.zeros(round(off_s * sr)))
    tone = np.concatenate(parts)
    level = 10 ** (level_dbfs / 20.0) / np.sqrt(np.mean(np.square(parts[0])))
    return (tone * level).astype(np.float32)  # level of the tone while on, not of the cadence


def dtmf_sequence(digits: str, sr: int, *, rng: np.random.Generator,
                  level_dbfs: float = -16.0) -> np.ndarray:
    """Key presses as a person types them: 80-200 ms tones, 100-400 ms apart."""
    parts: list[np.ndarray] = []
    for i, key in enumerate(digits):
        index = DTMF_KEYS.index(key)
        low, high = DTMF_ROWS_HZ[index // 3], DTMF_COLS_HZ[index % 3]
        n = round(float(rng.uniform(0.08, 0.2)) * sr)
        t = np.arange(n) / sr
        # the high tone is sent ~2 dB louder than the low one ("twist"), as keypads do
        tone = np.sin(2 * np.pi * low * t) + 1.25 * np.sin(2 * np.pi * high * t)
        parts.append(_at_level(tone * _ramp(n, sr), level_dbfs))
        if i < len(digits) - 1:
            parts.append(np.zeros(round(float(rng.uniform(0.1, 0.4)) * sr), np.float32))
    return np.concatenate(parts).astype(np.float32)


def _note(freq: float, n: int, sr: int, *, harmonics: int, decay_s: float | None,
          rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sr
    vibrato = 1 + 0.002 * np.sin(2 * np.pi * float(rng.uniform(4.5, 6.0)) * t)
    phase = 2 * np.pi * freq * np.cumsum(vibrato) / sr
    wave = np.zeros(n)
    for k in range(1, harmonics + 1):
        if k * freq < sr / 2 - 200:
            wave += np.sin(k * phase + float(rng.uniform(0, 2 * np.pi))) / k ** 1.3
    env = np.exp(-t / decay_s) if decay_s else np.ones(n)
    attack = min(int(0.02 * sr), n)
    env[:attack] *= np.linspace(0, 1, attack)
    release = min(int(0.05 * sr), n)
    env[n - release:] *= np.linspace(1, 0, release)
    return wave * env


def hold_music(duration_s: float, sr: int, *, rng: np.random.Generator,
               level_dbfs: float = -26.0) -> np.ndarray:
    """Hold music: a I-V-vi-IV chord pad, a plucked bass, a pentatonic melody and (sometimes) a
    hi-hat, in a random key and tempo."""
    n = round(duration_s * sr)
    out = np.zeros(n)
    root = 2 ** ((int(rng.integers(48, 60)) - 69) / 12) * 440.0  # C3..B3
    beat = 60.0 / float(rng.uniform(70, 120))
    chords = ((0, 4, 7), (7, 11, 14), (9, 12, 16), (5, 9, 12))
    pentatonic = (0, 2, 4, 7, 9, 12, 14, 16)
    bar = 4 * beat
    start, c = 0.0, 0
    while start < duration_s:
        chord = chords[c % len(chords)]
        i0, i1 = round(start * sr), min(round((start + bar) * sr), n)
        for semitone in chord:
            out[i0:i1] += 0.25 * _note(root * 2 ** (semitone / 12), i1 - i0, sr, harmonics=6,
                                       decay_s=None, rng=rng)
        bass = root / 2 * 2 ** (chord[0] / 12)
        for b in range(2):
            j0 = round((start + b * 2 * beat) * sr)
            j1 = min(j0 + round(2 * beat * sr), n)
            if j0 < j1:
                out[j0:j1] += 0.5 * _note(bass, j1 - j0, sr, harmonics=8, decay_s=0.5, rng=rng)
        start += bar
        c += 1
    t = 0.0
    while t < duration_s:
        length = beat * float(rng.choice([0.5, 1.0, 1.0, 2.0]))
        j0, j1 = round(t * sr), min(round((t + length) * sr), n)
        if j0 < j1 and rng.random() < 0.85:
            freq = root * 2 * 2 ** (int(rng.choice(pentatonic)) / 12)
            out[j0:j1] += 0.45 * _note(freq, j1 - j0, sr, harmonics=5, decay_s=0.4, rng=rng)
        t += length
    if rng.random() < 0.4:
        hat = round(0.03 * sr)
        env = np.exp(-np.arange(hat) / (0.008 * sr))
        for k in range(int(duration_s / (beat / 2))):
            j0 = round(k * beat / 2 * sr)
            j1 = min(j0 + hat, n)
            out[j0:j1] += 0.08 * rng.standard_normal(j1 - j0) * env[: j1 - j0]
    return _at_level(out, level_dbfs)


def babble(bank: ClipBank, duration_s: float, *, rng: np.random.Generator, talkers: int,
           exclude_actors: Sequence[int] = (), level_dbfs: float = -40.0) -> np.ndarray:
    """Background talkers: ``talkers`` streams of other actors' clips, each with its own pauses,
    mixed at random gains (+-3 dB), scaled to ``level_dbfs`` RMS."""
    n = round(duration_s * bank.sr)
    out = np.zeros(n)
    pool = [c for c in bank.clips if c.actor not in set(exclude_actors)] or bank.clips
    for _ in range(talkers):
        pos = round(float(rng.uniform(0.0, 1.0)) * bank.sr)
        gain = 10 ** (float(rng.uniform(-3.0, 3.0)) / 20.0)
        while pos < n:
            clip = pool[int(rng.integers(len(pool)))].signal
            stop = min(pos + len(clip), n)
            out[pos:stop] += gain * clip[: stop - pos]
            pos = stop + round(float(rng.uniform(0.05, 0.5)) * bank.sr)
    return _at_level(out, level_dbfs)


def ivr_prompt(bank: ClipBank, *, rng: np.random.Generator, exclude_actors: Sequence[int],
               level_dbfs: float) -> np.ndarray:
    """One recorded prompt: a neutral clip of an actor who is not in the call (or, when the bank
    has none, the synthetic IVR voice)."""
    pool = [c for c in bank.clips if c.emotion == "neutral" and c.actor not in exclude_actors]
    if pool:
        signal = pool[int(rng.integers(len(pool)))].signal
    else:
        signal = synthesize("neutral", voice=IVR_VOICE, seed=int(rng.integers(1 << 30)),
                            duration_s=float(rng.uniform(1.8, 3.0)), sr=16000)
        signal = trim_silence(resample(signal, 16000, bank.sr), bank.sr, top_db=30.0)
    return _at_level(signal, level_dbfs)
