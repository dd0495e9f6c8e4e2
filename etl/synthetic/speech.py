"""Deterministic synthetic emotional speech (source-filter), for tests, the demo and fixtures.

Each emotion has a prosody profile (pitch level and range, contour slope, tempo, loudness,
breathiness, jitter/shimmer, spectral tilt); each actor has a base pitch and vocal-tract length.
A glottal pulse train with that pitch contour is shaped by per-syllable vowel formants and a
syllable envelope. It is not speech anyone would mistake for a person, but the acoustic cues
that separate emotions in real corpora are present, so a model can learn them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter

from etl.corpora.parsers import RAVDESS_EMOTIONS


@dataclass(frozen=True, slots=True)
class Prosody:
    pitch_factor: float  # x the actor's base f0
    pitch_range: float  # relative f0 excursion
    slope: float  # relative f0 change over the utterance (+ rising)
    syllables_per_s: float
    loudness: float  # linear peak amplitude
    breathiness: float  # noise share of the source
    jitter: float  # relative period perturbation
    shimmer: float  # relative amplitude perturbation
    tilt: float  # one-pole low-pass coefficient of the source (higher = darker)


PROSODY: dict[str, Prosody] = {
    "neutral": Prosody(1.00, 0.10, -0.05, 4.0, 0.30, 0.06, 0.004, 0.04, 0.80),
    "calm": Prosody(0.93, 0.06, -0.08, 3.2, 0.22, 0.12, 0.003, 0.03, 0.88),
    "happy": Prosody(1.30, 0.35, 0.05, 4.9, 0.50, 0.05, 0.006, 0.05, 0.65),
    "sad": Prosody(0.85, 0.05, -0.20, 2.7, 0.16, 0.22, 0.008, 0.08, 0.92),
    "angry": Prosody(1.35, 0.28, -0.10, 5.3, 0.85, 0.03, 0.010, 0.10, 0.40),
    "fearful": Prosody(1.50, 0.22, 0.10, 5.8, 0.35, 0.18, 0.025, 0.15, 0.75),
    "disgust": Prosody(0.90, 0.20, -0.15, 3.0, 0.40, 0.10, 0.015, 0.12, 0.70),
    "surprised": Prosody(1.40, 0.45, 0.35, 4.4, 0.55, 0.08, 0.006, 0.06, 0.62),
    "boredom": Prosody(0.88, 0.03, -0.05, 2.9, 0.20, 0.10, 0.004, 0.04, 0.90),
    "pleasant_surprise": Prosody(1.45, 0.40, 0.30, 4.6, 0.50, 0.07, 0.006, 0.06, 0.63),
}

# (F1, F2, F3) in Hz for an adult male vocal tract; scaled per actor.
VOWELS = np.array([[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240],
                   [530, 1840, 2480], [570, 840, 2410], [660, 1720, 2410]], dtype=np.float64)

# RAVDESS emotion codes, used by the corpus writer so fixtures follow the real naming.
RAVDESS_CODES = {emotion: code for code, emotion in RAVDESS_EMOTIONS.items()}


@dataclass(frozen=True, slots=True)
class Voice:
    base_f0: float
    tract_scale: float  # formant multiplier (women/children ~1.15-1.2)

    @staticmethod
    def for_actor(actor: int, *, female: bool | None = None) -> Voice:
        rng = np.random.default_rng(10_000 + actor)
        female = (actor % 2 == 0) if female is None else female
        base = (205.0 if female else 115.0) * float(rng.uniform(0.85, 1.15))
        scale = (1.16 if female else 1.0) * float(rng.uniform(0.95, 1.05))
        return Voice(base, scale)


def _resonator(freq: float, bandwidth: float, sr: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.exp(-np.pi * bandwidth / sr)
    theta = 2 * np.pi * freq / sr
    a = np.array([1.0, -2 * r * np.cos(theta), r * r])
    b = np.array([1.0 - r])
    return b, a


def synthesize(
    emotion: str,
    *,
    voice: Voice,
    seed: int,
    duration_s: float = 2.5,
    sr: int = 16000,
    intensity: float = 1.0,
) -> np.ndarray:
    """One utterance of ``emotion`` as float32 mono at ``sr``, shape ``(round(duration_s*sr),)``.

    ``intensity`` > 1 exaggerates the emotion's departure from neutral (RAVDESS "strong").
    Deterministic for a given (emotion, voice, seed, duration, sr, intensity).
    """
    if emotion not in PROSODY:
        raise ValueError(f"no prosody profile for emotion {emotion!r}; known: {sorted(PROSODY)}")
    p, base = PROSODY[emotion], PROSODY["neutral"]

    def push(value: float, neutral: float) -> float:
        return neutral + (value - neutral) * intensity

    rng = np.random.default_rng(seed)
    n = round(duration_s * sr)
    t = np.arange(n) / sr
    pad = 0.12  # leading/trailing silence, as in studio recordings
    speech = (t > pad) & (t < duration_s - pad)

    # Pitch contour: level, declination/rise, syllable-rate wiggle, slow random drift, jitter.
    f0_level = voice.base_f0 * push(p.pitch_factor, base.pitch_factor)
    progress = np.clip((t - pad) / max(duration_s - 2 * pad, 1e-3), 0, 1)
    rate = push(p.syllables_per_s, base.syllables_per_s) * float(rng.uniform(0.92, 1.08))
    wiggle = np.sin(2 * np.pi * rate * 0.5 * t + rng.uniform(0, 2 * np.pi))
    drift = np.interp(t, np.linspace(0, duration_s, 8), rng.normal(0, 0.3, 8))
    f0 = f0_level * (1 + push(p.slope, base.slope) * (progress - 0.5)
                     + push(p.pitch_range, base.pitch_range) * (0.6 * wiggle + 0.4 * drift))
    f0 = np.clip(f0 * (1 + push(p.jitter, base.jitter) * rng.standard_normal(n)), 50, 600)

    # Glottal source: pulses at phase wraps, darkened by a one-pole tilt filter, plus breath noise.
    phase = np.cumsum(f0 / sr)
    pulses = np.diff(np.floor(phase), prepend=0.0)
    pulses *= 1 + push(p.shimmer, base.shimmer) * rng.standard_normal(n)
    tilt = float(np.clip(push(p.tilt, base.tilt), 0.0, 0.97))
    voiced = lfilter([1 - tilt], [1, -tilt], pulses)
    breath = push(p.breathiness, base.breathiness)
    source = (1 - breath) * voiced / (np.std(voiced) + 1e-9) + breath * rng.standard_normal(n)

    # Syllables: each gets a vowel; formants filter the source per syllable.
    syllable_len = max(int(sr / rate), 1)
    out = np.zeros(n)
    for start in range(0, n, syllable_len):
        stop = min(start + syllable_len, n)
        vowel = VOWELS[rng.integers(len(VOWELS))] * voice.tract_scale
        chunk = source[start:stop]
        for formant, bandwidth in zip(vowel, (80.0, 110.0, 160.0), strict=True):
            if formant < sr / 2 - 200:
                b, a = _resonator(float(formant), bandwidth, sr)
                chunk = lfilter(b, a, chunk)
        envelope = np.sin(np.linspace(0, np.pi, stop - start)) ** 0.6
        out[start:stop] = chunk * envelope

    out *= speech
    peak = float(np.max(np.abs(out))) or 1.0
    loudness = float(np.clip(push(p.loudness, base.loudness), 0.05, 0.95))
    out = out / peak * loudness
    out += 1e-4 * rng.standard_normal(n)  # room noise floor
    return out.astype(np.float32)


def write_ravdess_corpus(
    root: Path,
    *,
    actors: range | list[int] = range(1, 5),
    emotions: tuple[str, ...] = tuple(RAVDESS_CODES),
    statements: tuple[int, ...] = (1, 2),
    repetitions: tuple[int, ...] = (1,),
    sr: int = 16000,
    duration_s: float = 2.0,
    subtype: str = "PCM_16",
    extension: str = ".wav",
) -> list[Path]:
    """Write a synthetic corpus with RAVDESS's real layout (``Actor_NN/03-01-EE-II-SS-RR-AA``).

    Intensity 02 (strong) is not written for neutral, as in RAVDESS.
    """
    written: list[Path] = []
    for actor in actors:
        voice = Voice.for_actor(actor)
        folder = root / f"Actor_{actor:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for emotion in emotions:
            for intensity in ((1,) if emotion == "neutral" else (1, 2)):
                for statement in statements:
                    for repetition in repetitions:
                        name = (f"03-01-{RAVDESS_CODES[emotion]}-{intensity:02d}-{statement:02d}"
                                f"-{repetition:02d}-{actor:02d}{extension}")
                        seed = hash_seed(actor, emotion, intensity, statement, repetition)
                        signal = synthesize(emotion, voice=voice, seed=seed, sr=sr,
                                            duration_s=duration_s,
                                            intensity=1.0 if intensity == 1 else 1.5)
                        path = folder / name
                        sf.write(str(path), signal, sr, subtype=subtype)
                        written.append(path)
    return written


def hash_seed(*parts: object) -> int:
    """A stable seed from parts (Python's hash() is salted per process)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF
