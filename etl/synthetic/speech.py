"""Deterministic synthetic emotional speech (source-filter), for tests, the demo and fixtures.

Each emotion has a prosody profile (pitch level and range, contour slope, tempo, loudness,
breathiness, jitter/shimmer, spectral tilt); each actor has a base pitch and vocal-tract length.
A glottal pulse train with that pitch contour is shaped by per-syllable vowel formants and a
syllable envelope. It is not speech anyone would mistake for a person, but the acoustic cues
that separate emotions in real corpora are present, so a model can learn them.
"""

from __future__ import annotations

import hashlib
from dataclasses import astuple, dataclass
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


def _pushed(profile: Prosody, intensity: float) -> Prosody:
    """``profile`` with every cue's departure from neutral scaled by ``intensity``."""
    base = PROSODY["neutral"]
    return Prosody(*(neutral + (value - neutral) * intensity
                     for value, neutral in zip(astuple(profile), astuple(base), strict=True)))


_PAD_S = 0.12  # leading/trailing silence, as in studio recordings


def _pitch_contour(p: Prosody, *, voice: Voice, rng: np.random.Generator, t: np.ndarray,
                   duration_s: float) -> tuple[np.ndarray, float]:
    """``(f0, syllable rate)``: f0 in Hz per sample, shape ``t.shape``.

    Level, declination/rise, a syllable-rate wiggle, slow random drift and jitter.
    """
    f0_level = voice.base_f0 * p.pitch_factor
    progress = np.clip((t - _PAD_S) / max(duration_s - 2 * _PAD_S, 1e-3), 0, 1)
    rate = p.syllables_per_s * float(rng.uniform(0.92, 1.08))
    wiggle = np.sin(2 * np.pi * rate * 0.5 * t + rng.uniform(0, 2 * np.pi))
    drift = np.interp(t, np.linspace(0, duration_s, 8), rng.normal(0, 0.3, 8))
    f0 = f0_level * (1 + p.slope * (progress - 0.5)
                     + p.pitch_range * (0.6 * wiggle + 0.4 * drift))
    f0 = np.clip(f0 * (1 + p.jitter * rng.standard_normal(len(t))), 50, 600)
    return f0, rate


def _glottal_source(p: Prosody, *, f0: np.ndarray, rng: np.random.Generator,
                    sr: int) -> np.ndarray:
    """Pulses at phase wraps, darkened by a one-pole tilt filter, plus breath noise;
    shape ``f0.shape``."""
    n = len(f0)
    phase = np.cumsum(f0 / sr)
    pulses = np.diff(np.floor(phase), prepend=0.0)
    pulses *= 1 + p.shimmer * rng.standard_normal(n)
    tilt = float(np.clip(p.tilt, 0.0, 0.97))
    voiced = lfilter([1 - tilt], [1, -tilt], pulses)
    breath = p.breathiness
    return (1 - breath) * voiced / (np.std(voiced) + 1e-9) + breath * rng.standard_normal(n)


def _articulate(source: np.ndarray, *, voice: Voice, rng: np.random.Generator, rate: float,
                sr: int) -> np.ndarray:
    """Syllables: each gets a vowel whose formants filter its stretch of ``source``, under a
    syllable envelope; shape ``source.shape``."""
    n = len(source)
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
    return out


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
    Deterministic for a given (emotion, voice, seed, duration, sr, intensity): the steps draw
    from one generator in a fixed order (contour, source, syllables, noise floor).
    """
    if emotion not in PROSODY:
        raise ValueError(f"no prosody profile for emotion {emotion!r}; known: {sorted(PROSODY)}")
    p = _pushed(PROSODY[emotion], intensity)
    rng = np.random.default_rng(seed)
    n = round(duration_s * sr)
    t = np.arange(n) / sr
    f0, rate = _pitch_contour(p, voice=voice, rng=rng, t=t, duration_s=duration_s)
    source = _glottal_source(p, f0=f0, rng=rng, sr=sr)
    out = _articulate(source, voice=voice, rng=rng, rate=rate, sr=sr)
    out *= (t > _PAD_S) & (t < duration_s - _PAD_S)
    peak = float(np.max(np.abs(out))) or 1.0
    loudness = float(np.clip(p.loudness, 0.05, 0.95))
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
