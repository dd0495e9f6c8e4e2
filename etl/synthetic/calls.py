"""Synthetic stereo call-centre recordings with a ground-truth timeline.

A call alternates turns between an *agent* (left channel) and a *customer* (right channel). Each
turn is one to three labelled clips of the same emotion (RAVDESS-named files from a folder, or
:mod:`etl.synthetic.speech` voices generated on the fly), separated by pauses, with occasional overtalk (the
next speaker starts before the previous one stopped). The customer's emotions follow a scenario
(calm, escalating, upset, recovering), so some calls should be escalated and others not.

Calls also carry the non-speech that real calls carry (``CallGenConfig.nonspeech``; 0 turns it
off and gives the speech-only calls of earlier versions, bit for bit). All of it sits on the
channel where a stereo call-centre recording has it:

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

Line noise (white noise plus mains hum, with a per-call level) is added on both channels by
:func:`telephone_line`; it is everywhere, so it has no timeline row.

**How the truth treats IVR prompts.** A prompt is speech to the ear, but it is neither the agent
nor the customer, so it is *not a turn*: a scored segment on it is a false accept of kind ``ivr``.
It is reported apart from the other kinds because an acoustic VAD cannot be expected to reject
it (it is speech); it is rejected, if at all, by its level or position, not by speech-ness.

The mix then goes through a telephone line: 8 kHz, 300-3400 Hz band limit, 8-bit mu-law
companding and a little line noise. Every utterance is written to the timeline with its role,
start, end and emotion (``kind = speech``), and every non-speech event with the role of the
channel it is on, an empty emotion and its ``kind``, so VAD and scoring can be measured against
it.

Outputs of :func:`generate_calls` (in ``out_dir``)::

    call_0001.wav            stereo PCM-16, channel 0 = agent, channel 1 = customer
    call_0001.timeline.csv   role,start_s,end_s,emotion,actor,clip,kind
    calls.csv                call_id,file,agent_id,queue,started_at,customer_channel,scenario

Timelines written before ``kind`` existed (six columns) read as all speech.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from etl.audio.decode import (
    TELEPHONY_BAND_HZ,
    AudioError,
    bandlimit,
    is_audio_path,
    load_audio,
    resample,
    trim_silence,
)
from etl.audio.phone_line import g711_roundtrip
from etl.corpora.labels import ESCALATED_SHARE, NEGATIVE_EMOTIONS
from etl.corpora.parsers import RAVDESS_EMOTIONS
from etl.synthetic.speech import RAVDESS_CODES, Voice, hash_seed, synthesize

ROLES: tuple[str, str] = ("agent", "customer")
_RAVDESS_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")

# Emotion pools per phase of a scenario: (customer early, customer late).
AGENT_EMOTIONS: tuple[str, ...] = ("neutral", "calm", "happy")
_POSITIVE: tuple[str, ...] = ("neutral", "calm", "happy")
# NEGATIVE_EMOTIONS in the order upset customers draw them: the order is part of what a seed
# generates, so it is written out (tests/test_labels.py checks it is that set).
_NEGATIVE: tuple[str, ...] = ("angry", "sad", "disgust", "fearful")
SCENARIOS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "calm": (_POSITIVE, _POSITIVE),
    "escalating": (("neutral", "calm"), ("angry", "angry", "disgust", "sad")),
    "upset": (_NEGATIVE, _NEGATIVE),
    "recovering": (("angry", "sad", "fearful"), ("neutral", "calm", "happy")),
}
SCENARIO_WEIGHTS: dict[str, float] = {"calm": 0.45, "escalating": 0.25, "upset": 0.15,
                                      "recovering": 0.15}
QUEUES: tuple[str, ...] = ("billing", "support", "sales")

SPEECH = "speech"
NONSPEECH_KINDS: tuple[str, ...] = ("ringback", "ivr", "dtmf", "hold", "babble")
KINDS: tuple[str, ...] = (SPEECH, *NONSPEECH_KINDS)
TIMELINE_COLUMNS: tuple[str, ...] = ("role", "start_s", "end_s", "emotion", "actor", "clip", "kind")


@dataclass(frozen=True, slots=True)
class LabelledClip:
    """One labelled utterance, already at the generator rate and trimmed to its speech."""

    name: str
    actor: int
    emotion: str
    signal: np.ndarray  # float32 (n,)


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    """Ground truth for one utterance (``kind = "speech"``) or non-speech event in a call.

    ``role`` is the speaker for speech and the channel's role for non-speech (whose ``emotion``
    is empty and ``actor`` 0); ``clip`` names the clip or describes the event.
    """

    role: str
    start_s: float
    end_s: float
    emotion: str
    actor: int
    clip: str
    kind: str = SPEECH

    @property
    def is_speech(self) -> bool:
        return self.kind == SPEECH


@dataclass(slots=True)
class GeneratedCall:
    call_id: str
    path: Path
    timeline_path: Path
    duration_s: float
    scenario: str
    agent_actor: int
    customer_actor: int
    timeline: list[TimelineEvent] = field(default_factory=list)


class ClipBank:
    """Labelled clips indexed by actor and emotion.

    Build it with :meth:`from_folder` (RAVDESS file names) or :meth:`synthetic`.
    """

    def __init__(self, clips: Sequence[LabelledClip], *, sr: int) -> None:
        if not clips:
            raise ValueError("no labelled clips: the source folder has no RAVDESS-named audio")
        self.sr = sr
        self.clips = list(clips)
        self._by_key: dict[tuple[int, str], list[LabelledClip]] = {}
        self._by_emotion: dict[str, list[LabelledClip]] = {}
        for clip in self.clips:
            self._by_key.setdefault((clip.actor, clip.emotion), []).append(clip)
            self._by_emotion.setdefault(clip.emotion, []).append(clip)

    @property
    def actors(self) -> list[int]:
        return sorted({clip.actor for clip in self.clips})

    @property
    def emotions(self) -> list[str]:
        return sorted(self._by_emotion)

    def pick(self, rng: np.random.Generator, *, actor: int, emotion: str) -> LabelledClip:
        """A random clip of ``emotion`` by ``actor`` (any actor's if this one has none). A
        source without that emotion at all (CREMA-D has no calm) gives a clip of the same
        polarity (negative or not), this actor's if possible; the timeline names the clip's
        own emotion."""
        pool = self._by_key.get((actor, emotion)) or self._by_emotion.get(emotion)
        if not pool:
            negative = emotion in NEGATIVE_EMOTIONS
            alike = [c for c in self.clips if (c.emotion in NEGATIVE_EMOTIONS) == negative]
            pool = [c for c in alike if c.actor == actor] or alike
        if not pool:
            raise ValueError(f"no clip of emotion {emotion!r} or of its polarity; the source "
                             f"has {self.emotions}")
        return pool[int(rng.integers(len(pool)))]

    @classmethod
    def from_folder(
        cls,
        root: Path,
        *,
        actors: Iterable[int] | None = None,
        emotions: Iterable[str] | None = None,
        sr: int = 8000,
        top_db: float = 30.0,
    ) -> ClipBank:
        """Load RAVDESS-named clips (``MM-VC-EE-II-SS-RR-AA.ext``) under ``root``, recursively.

        Clips are resampled to ``sr`` and trimmed to their speech (``top_db`` below the peak) so
        that the timeline marks speech, not the studio silence around it.
        """
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f"clip source {root} is not a folder")
        wanted_actors = set(actors) if actors is not None else None
        wanted_emotions = set(emotions) if emotions is not None else None
        sources: list[tuple[str, int, str, Path]] = []
        for path in sorted(p for p in root.rglob("*") if p.is_file() and is_audio_path(p)):
            match = _RAVDESS_NAME.match(path.stem)
            if not match or match.group(3) not in RAVDESS_EMOTIONS:
                continue
            actor, emotion = int(match.group(7)), RAVDESS_EMOTIONS[match.group(3)]
            if (wanted_actors is not None and actor not in wanted_actors) or (
                    wanted_emotions is not None and emotion not in wanted_emotions):
                continue
            sources.append((path.stem, actor, emotion, path))
        return cls.from_paths(sources, sr=sr, top_db=top_db)

    @classmethod
    def from_paths(
        cls,
        sources: Iterable[tuple[str, int, str, Path]],
        *,
        sr: int = 8000,
        top_db: float = 30.0,
    ) -> ClipBank:
        """Load ``(name, actor, canonical emotion, path)`` clips, resampled to ``sr`` and trimmed
        to their speech (``top_db`` below the peak) so that the timeline marks speech, not the
        studio silence around it; each actor levelled (:func:`level_actors`)."""
        clips: list[LabelledClip] = []
        for name, actor, emotion, path in sources:
            try:
                signal, _ = load_audio(Path(path), sr=sr, mono=True)
            except AudioError:
                continue  # one unreadable clip must not stop the generator
            signal = trim_silence(signal, sr, top_db=top_db)
            if len(signal) < int(0.3 * sr):
                continue
            clips.append(LabelledClip(name, int(actor), emotion, signal))
        return cls(level_actors(clips), sr=sr)

    @classmethod
    def synthetic(
        cls,
        *,
        actors: Iterable[int] = range(1, 9),
        emotions: Iterable[str] = tuple(RAVDESS_CODES),
        per_emotion: int = 3,
        sr: int = 8000,
    ) -> ClipBank:
        """Clips from :func:`etl.synthetic.speech.synthesize` (deterministic), ``per_emotion`` per actor."""
        clips: list[LabelledClip] = []
        for actor in actors:
            voice = Voice.for_actor(actor)
            for emotion in emotions:
                for k in range(per_emotion):
                    seed = hash_seed("callgen", actor, emotion, k)
                    duration = 1.6 + (seed % 1000) / 1000.0  # 1.6-2.6 s
                    # synthesise at 16 kHz (formants above 4 kHz matter for the studio variant)
                    signal = synthesize(emotion, voice=voice, seed=seed, duration_s=duration,
                                        sr=16000)
                    signal = resample(signal, 16000, sr) if sr != 16000 else signal
                    signal = trim_silence(signal, sr, top_db=30.0)
                    clips.append(LabelledClip(f"synth-{actor:02d}-{emotion}-{k}", actor,
                                              emotion, signal))
        return cls(level_actors(clips), sr=sr)


def level_actors(clips: Sequence[LabelledClip], *,
                 target_dbfs: float = -24.0) -> list[LabelledClip]:
    """One gain per actor so that actor's median clip RMS sits at ``target_dbfs``.

    Studio corpora are recorded at very different levels per actor (some RAVDESS calm clips sit
    near -60 dBFS); a phone line's AGC evens that out. One gain per actor keeps the loudness
    differences between that actor's emotions, which are part of what a model learns.
    """
    rms_db: dict[int, list[float]] = {}
    for clip in clips:
        rms = float(np.sqrt(np.mean(np.square(clip.signal), dtype=np.float64)))
        rms_db.setdefault(clip.actor, []).append(20 * np.log10(rms + 1e-9))
    gains = {a: 10 ** ((target_dbfs - float(np.median(v))) / 20.0) for a, v in rms_db.items()}
    out = []
    for clip in clips:
        scaled = clip.signal * np.float32(gains[clip.actor])
        out.append(LabelledClip(clip.name, clip.actor, clip.emotion,
                                np.clip(scaled, -1.0, 1.0).astype(np.float32)))
    return out


@dataclass(frozen=True, slots=True)
class CallGenConfig:
    """Shape of a synthetic call. Times are seconds."""

    sr: int = 8000
    telephony: bool = True
    turn_gap_s: tuple[float, float] = (0.25, 1.2)
    in_turn_gap_s: tuple[float, float] = (0.2, 0.6)
    overlap_probability: float = 0.15
    overlap_s: tuple[float, float] = (0.3, 0.9)
    utterances_per_turn: tuple[int, int] = (1, 3)
    same_speaker_probability: float = 0.1
    gain_db: tuple[float, float] = (-4.0, 2.0)
    # Each party's level for a whole call, drawn per call and role: headsets, handsets and
    # speakerphones put talkers 20 dB apart on real lines, and a model chosen on calls whose
    # parties all sit at one level is chosen for calls that do not exist.
    party_level_db: tuple[float, float] = (-10.0, 10.0)
    line_noise_dbfs: float = -58.0
    duration_jitter: float = 0.2
    # How much non-speech a call gets: 0 none (speech-only calls as before), 1 a realistic mix
    # (the probabilities below), up to 2 (each probability doubled, capped at 1).
    nonspeech: float = 1.0
    ringback_probability: float = 0.6
    ivr_probability: float = 0.5
    hold_probability: float = 0.4
    dtmf_midcall_probability: float = 0.3
    babble_probability: float = 0.4  # per channel
    hold_s: tuple[float, float] = (6.0, 20.0)
    hold_dbfs: tuple[float, float] = (-32.0, -20.0)
    ivr_level_db: tuple[float, float] = (6.0, 12.0)  # |offset| from the speech level, +/- at random
    babble_below_db: tuple[float, float] = (12.0, 22.0)
    line_noise_jitter_db: float = 8.0  # per-call line-noise level varies +/- this (with nonspeech)

    def __post_init__(self) -> None:
        if not 0.0 <= self.nonspeech <= 2.0:
            raise ValueError("CallGenConfig.nonspeech must be between 0 (none) and 2")


def _scenario_emotion(rng: np.random.Generator, scenario: str, progress: float) -> str:
    early, late = SCENARIOS[scenario]
    # A soft switch around the middle of the call so the change is not at one exact turn.
    pool = early if rng.random() > np.clip((progress - 0.3) / 0.4, 0.0, 1.0) else late
    return str(pool[int(rng.integers(len(pool)))])


# --------------------------------------------------------------------------------------------
# Non-speech sources. Each returns float32 (n,) at ``sr``, scaled to an RMS level in dBFS.
# --------------------------------------------------------------------------------------------

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


@dataclass
class _NonSpeechPlan:
    """What non-speech one call gets; drawn from its own generator so the speech stays the
    same whatever ``CallGenConfig.nonspeech`` is."""

    rng: np.random.Generator
    config: CallGenConfig
    duration_s: float

    def chance(self, probability: float) -> bool:
        return self.rng.random() < min(1.0, probability * self.config.nonspeech)


def _place(out: np.ndarray, channel: int, start_s: float, signal: np.ndarray, sr: int) -> float:
    """Add ``signal`` to one channel from ``start_s`` (cut at the end); returns its end time."""
    i0 = round(start_s * sr)
    i1 = min(i0 + len(signal), out.shape[1])
    if i1 > i0:
        out[channel, i0:i1] += signal[: i1 - i0]
    return max(i1, i0) / sr


def _nonspeech_event(role: str, start_s: float, end_s: float, kind: str,
                     what: str) -> TimelineEvent:
    return TimelineEvent(role, round(start_s, 3), round(end_s, 3), "", 0, what, kind)


def _intro(plan: _NonSpeechPlan, bank: ClipBank, out: np.ndarray, *,
           exclude: Sequence[int], events: list[TimelineEvent]) -> float:
    """Ring-back, then IVR prompts answered by key presses; returns when the agent may start."""
    rng, cfg, sr = plan.rng, plan.config, bank.sr
    t = 0.0
    if plan.duration_s < 20.0:
        return t
    if plan.chance(cfg.ringback_probability):
        style = str(rng.choice(list(RINGBACK_STYLES)))
        start = float(rng.uniform(0.1, 0.5))
        tone = ringback_tone(sr, style=style, cycles=int(rng.integers(1, 3)),
                             level_dbfs=float(rng.uniform(-26.0, -18.0)))
        end = _place(out, 0, start, tone, sr)
        events.append(_nonspeech_event("agent", start, end, "ringback", f"ringback:{style}"))
        t = end + float(rng.uniform(0.3, 1.0))
    if plan.chance(cfg.ivr_probability):
        offset = float(rng.uniform(*cfg.ivr_level_db)) * (1 if rng.random() < 0.5 else -1)
        for k in range(int(rng.integers(1, 3))):
            prompt = ivr_prompt(bank, rng=rng, exclude_actors=exclude,
                                level_dbfs=-24.0 + offset)
            start = t + float(rng.uniform(0.2, 0.6))
            end = _place(out, 0, start, prompt, sr)
            events.append(_nonspeech_event("agent", start, end, "ivr", f"ivr:{k + 1}:{offset:+.0f}dB"))
            t = end
            digits = "".join(rng.choice(list(DTMF_KEYS), size=int(rng.integers(1, 3))))
            start = t + float(rng.uniform(0.5, 1.5))
            end = _place(out, 1, start, dtmf_sequence(digits, sr, rng=rng,
                                                      level_dbfs=float(rng.uniform(-20, -12))), sr)
            events.append(_nonspeech_event("customer", start, end, "dtmf", f"dtmf:{digits}"))
            t = end
        t += float(rng.uniform(0.5, 1.2))
    return t


def _mid_call_inserts(plan: _NonSpeechPlan) -> list[tuple[float, str]]:
    """(earliest time, kind) of the hold and the typed account number, in time order."""
    inserts: list[tuple[float, str]] = []
    if plan.duration_s >= 60.0 and plan.chance(plan.config.hold_probability):
        inserts.append((plan.duration_s * float(plan.rng.uniform(0.3, 0.6)), "hold"))
    if plan.duration_s >= 30.0 and plan.chance(plan.config.dtmf_midcall_probability):
        inserts.append((plan.duration_s * float(plan.rng.uniform(0.15, 0.5)), "dtmf"))
    return sorted(inserts)


def _insert(kind: str, plan: _NonSpeechPlan, out: np.ndarray, start: float, sr: int,
            events: list[TimelineEvent]) -> float:
    """Play a hold or a typed number from ``start``; returns its end."""
    rng, cfg = plan.rng, plan.config
    if kind == "hold":
        music = hold_music(float(rng.uniform(*cfg.hold_s)), sr, rng=rng,
                           level_dbfs=float(rng.uniform(*cfg.hold_dbfs)))
        end = _place(out, 0, start, music, sr)
        events.append(_nonspeech_event("agent", start, end, "hold", "hold:music"))
        return end
    digits = "".join(rng.choice(list("0123456789"), size=int(rng.integers(6, 11))))
    signal = dtmf_sequence(digits, sr, rng=rng, level_dbfs=float(rng.uniform(-20.0, -12.0)))
    end = _place(out, 1, start, signal, sr)
    events.append(_nonspeech_event("customer", start, end, "dtmf", f"dtmf:{digits}"))
    return end


def _add_babble(plan: _NonSpeechPlan, bank: ClipBank, out: np.ndarray, *,
                exclude: Sequence[int], events: list[TimelineEvent]) -> None:
    rng, cfg, sr = plan.rng, plan.config, bank.sr
    if plan.duration_s < 10.0:
        return
    for channel, role in enumerate(ROLES):
        if not plan.chance(cfg.babble_probability):
            continue
        length = plan.duration_s * float(rng.uniform(0.25, 0.6))
        start = float(rng.uniform(0.0, plan.duration_s - length))
        talkers = int(rng.integers(5, 9))  # a crowd; one competing talker is speech
        below = float(rng.uniform(*cfg.babble_below_db))
        noise = babble(bank, length, rng=rng, talkers=talkers, exclude_actors=exclude,
                       level_dbfs=-24.0 - below)
        end = _place(out, channel, start, noise, sr)
        events.append(_nonspeech_event(role, start, end, "babble",
                                       f"babble:{talkers}:-{below:.0f}dB"))


def compose_call(
    bank: ClipBank,
    *,
    duration_s: float,
    seed: int,
    scenario: str | None = None,
    agent_actor: int | None = None,
    customer_actor: int | None = None,
    config: CallGenConfig = CallGenConfig(),
) -> tuple[np.ndarray, list[TimelineEvent], str, int, int]:
    """Build one stereo call in memory.

    Returns
    -------
    (signal, timeline, scenario, agent_actor, customer_actor)
        signal float32 ``(2, n)`` at ``bank.sr`` (row 0 agent, row 1 customer), before the line;
        timeline sorted by start, speech and (with ``config.nonspeech`` > 0) non-speech events.
    """
    rng = np.random.default_rng(seed)
    sr = bank.sr
    scenario, agent_actor, customer_actor = _cast(bank, rng, scenario=scenario,
                                                  agent_actor=agent_actor,
                                                  customer_actor=customer_actor)
    speaker_actor = {"agent": agent_actor, "customer": customer_actor}
    n_total = round(duration_s * sr)
    out = np.zeros((2, n_total), dtype=np.float32)
    timeline: list[TimelineEvent] = []
    plan = _NonSpeechPlan(np.random.default_rng(hash_seed("nonspeech", seed)), config, duration_s)
    exclude = (agent_actor, customer_actor)
    inserts: list[tuple[float, str]] = []
    offset = 0.0
    if config.nonspeech > 0:
        offset = _intro(plan, bank, out, exclude=exclude, events=timeline)
        inserts = _mid_call_inserts(plan)
    t = offset + float(rng.uniform(0.3, 1.0))
    levels = np.random.default_rng(hash_seed("party-level", seed))
    party_gain = {role: 10 ** (float(levels.uniform(*config.party_level_db)) / 20.0)
                  for role in ROLES}
    _converse(bank, rng, out, timeline, scenario=scenario, speaker_actor=speaker_actor, t=t,
              plan=plan, inserts=inserts, party_gain=party_gain, config=config)
    if config.nonspeech > 0:
        _add_babble(plan, bank, out, exclude=exclude, events=timeline)
    timeline.sort(key=lambda e: (e.start_s, e.role, e.kind))
    return out, timeline, scenario, agent_actor, customer_actor


def _converse(bank: ClipBank, rng: np.random.Generator, out: np.ndarray,
              timeline: list[TimelineEvent], *, scenario: str, speaker_actor: dict[str, int],
              t: float, plan: _NonSpeechPlan, inserts: list[tuple[float, str]],
              party_gain: dict[str, float], config: CallGenConfig) -> None:
    """Mix turns into ``out`` from ``t`` seconds, the agent first, until an utterance would run
    past the end of the call. Each of ``inserts`` (a hold, a typed number; consumed) is played
    after the first agent turn ending past its earliest time."""
    duration_s = plan.duration_s
    role = "agent"  # the agent greets
    last_end = 0.0
    while True:
        emotion = (str(rng.choice(AGENT_EMOTIONS)) if role == "agent"
                   else _scenario_emotion(rng, scenario, t / duration_s))
        turn_end = _speak_turn(bank, rng, out, timeline, role=role, actor=speaker_actor[role],
                               emotion=emotion, t=t, last_end=last_end,
                               party_gain=party_gain[role], config=config)
        if turn_end is None:
            return
        last_end = turn_end
        finished = role
        if rng.random() < config.overlap_probability:
            t = max(last_end - float(rng.uniform(*config.overlap_s)), 0.0)
        else:
            t = last_end + float(rng.uniform(*config.turn_gap_s))
        if rng.random() >= config.same_speaker_probability:
            role = "customer" if role == "agent" else "agent"
        if inserts and finished == "agent" and last_end >= inserts[0][0]:
            # the agent asked for it ("one moment", "please type your account number"); the
            # agent speaks next
            _, kind = inserts.pop(0)
            begin = last_end + float(plan.rng.uniform(0.3, 0.8))
            t = (_insert(kind, plan, out, begin, bank.sr, timeline)
                 + float(plan.rng.uniform(0.3, 0.8)))
            role = "agent"


def _cast(bank: ClipBank, rng: np.random.Generator, *, scenario: str | None,
          agent_actor: int | None, customer_actor: int | None) -> tuple[str, int, int]:
    """``(scenario, agent actor, customer actor)``: the given ones, the rest drawn (the
    scenario by :data:`SCENARIO_WEIGHTS`, the customer another actor than the agent)."""
    if scenario is None:
        names = list(SCENARIO_WEIGHTS)
        weights = np.array([SCENARIO_WEIGHTS[n] for n in names])
        scenario = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    actors = bank.actors
    if agent_actor is None:
        agent_actor = int(actors[int(rng.integers(len(actors)))])
    if customer_actor is None:
        others = [a for a in actors if a != agent_actor] or actors
        customer_actor = int(others[int(rng.integers(len(others)))])
    return scenario, agent_actor, customer_actor


def _speak_turn(bank: ClipBank, rng: np.random.Generator, out: np.ndarray,
                timeline: list[TimelineEvent], *, role: str, actor: int, emotion: str, t: float,
                last_end: float, party_gain: float, config: CallGenConfig) -> float | None:
    """Mix one turn of ``role`` (1-n utterances of ``emotion``) into ``out`` from ``t`` seconds
    and add it to ``timeline``. Returns the end of the last utterance so far (``last_end``
    when the turn placed none), seconds; None when an utterance would run past the end of the
    call (the call ends there)."""
    sr = bank.sr
    n_total = out.shape[1]
    n_utt = int(rng.integers(config.utterances_per_turn[0], config.utterances_per_turn[1] + 1))
    for k in range(n_utt):
        clip = bank.pick(rng, actor=actor, emotion=emotion)
        start = round(t * sr)
        if start + len(clip.signal) > n_total:
            return None
        gain = party_gain * 10 ** (float(rng.uniform(*config.gain_db)) / 20.0)
        out[ROLES.index(role), start:start + len(clip.signal)] += gain * clip.signal
        last_end = (start + len(clip.signal)) / sr
        timeline.append(TimelineEvent(role, round(start / sr, 3), round(last_end, 3),
                                      clip.emotion, clip.actor, clip.name))
        t = last_end + (float(rng.uniform(*config.in_turn_gap_s)) if k < n_utt - 1 else 0.0)
    return last_end


def customer_negative_share(timeline: Iterable[TimelineEvent]) -> float:
    """Share of the customer's speech time whose emotion is negative (0 without customer speech).

    A call is *truly escalated* when this exceeds 0.5 (:data:`ESCALATED_SHARE`): the truth the
    escalation operating point is chosen against and the calls benchmark counts against.
    """
    total = negative = 0.0
    for event in speech_events(timeline, role="customer"):
        length = event.end_s - event.start_s
        total += length
        negative += length if event.emotion in NEGATIVE_EMOTIONS else 0.0
    return negative / total if total > 0 else 0.0


def truly_escalated(timeline: Iterable[TimelineEvent]) -> bool:
    return customer_negative_share(timeline) > ESCALATED_SHARE


def speech_events(timeline: Iterable[TimelineEvent], *,
                  role: str | None = None) -> list[TimelineEvent]:
    """The utterances of a timeline (of one ``role`` if given), without non-speech events."""
    return [e for e in timeline if e.is_speech and (role is None or e.role == role)]


def telephone_line(signal: np.ndarray, sr: int, *, seed: int,
                   noise_dbfs: float = -66.0) -> np.ndarray:
    """Simulate a narrowband phone line on a ``(channels, n)`` or ``(n,)`` signal at 8 kHz.

    Band limit to 300-3400 Hz, add line noise (white + faint 50 Hz hum), then G.711 mu-law
    (`etl.audio.phone_line.g711_roundtrip`, the codec the training copies pass through too).
    Shape preserved, float32.
    """
    rng = np.random.default_rng(seed)
    low, high = TELEPHONY_BAND_HZ
    y = bandlimit(signal, sr, low_hz=low, high_hz=high)
    n = y.shape[-1]
    noise_amp = 10 ** (noise_dbfs / 20.0)
    y = y + noise_amp * rng.standard_normal(y.shape).astype(np.float32)
    y = y + 0.5 * noise_amp * np.sin(2 * np.pi * 50.0 * np.arange(n) / sr).astype(np.float32)
    return g711_roundtrip(np.clip(y, -1.0, 1.0), law="mu")


def write_timeline(path: Path, timeline: Sequence[TimelineEvent]) -> None:
    """One CSV row per event, columns :data:`TIMELINE_COLUMNS` (``kind`` last, so readers of
    the six-column format still find theirs)."""
    with Path(path).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(TIMELINE_COLUMNS)
        for e in timeline:
            writer.writerow([e.role, f"{e.start_s:.3f}", f"{e.end_s:.3f}", e.emotion, e.actor,
                             e.clip, e.kind])


def read_timeline(path: Path) -> list[TimelineEvent]:
    """Inverse of :func:`write_timeline`; a timeline without a ``kind`` column (written before
    non-speech existed) is all speech."""
    events: list[TimelineEvent] = []
    with Path(path).open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"role", "start_s", "end_s"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path} is not a call timeline: no {', '.join(sorted(missing))} "
                             f"column (expected {','.join(TIMELINE_COLUMNS)})")
        for line, r in enumerate(reader, start=2):
            kind = r.get("kind") or SPEECH
            if kind not in KINDS:
                raise ValueError(f"{path} line {line}: unknown kind {kind!r}; "
                                 f"known: {', '.join(KINDS)}")
            try:
                events.append(TimelineEvent(r["role"], float(r["start_s"]), float(r["end_s"]),
                                            r.get("emotion") or "", int(r.get("actor") or 0),
                                            r.get("clip") or "", kind))
            except ValueError as exc:
                raise ValueError(f"{path} line {line}: {exc}") from None
    return events


def generate_calls(
    out_dir: Path,
    *,
    n_calls: int,
    minutes: float,
    bank: ClipBank,
    seed: int = 0,
    config: CallGenConfig = CallGenConfig(),
    start_date: dt.date = dt.date(2024, 1, 15),
    progress: bool = False,
) -> list[GeneratedCall]:
    """Write ``n_calls`` stereo calls of about ``minutes`` each (+-``duration_jitter``).

    Writes the WAVs, one timeline CSV per call and ``calls.csv`` (see module docstring).
    Deterministic for a given (bank, n_calls, minutes, seed, config).
    """
    if n_calls < 1:
        raise ValueError("n_calls must be at least 1")
    if minutes <= 0:
        raise ValueError("minutes must be positive")
    if bank.sr != config.sr:
        raise ValueError(f"clip bank is at {bank.sr} Hz but the call config wants {config.sr} Hz")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    calls: list[GeneratedCall] = []
    iterator: Iterable[int] = range(n_calls)
    if progress:
        iterator = tqdm(iterator, desc="calls", unit="call")
    agents = [f"A{100 + i}" for i in range(5)]
    rows: list[dict[str, str]] = []
    for i in iterator:
        call_seed = hash_seed("call", seed, i)
        duration = minutes * 60.0 * float(1.0 + rng.uniform(-config.duration_jitter,
                                                            config.duration_jitter))
        duration = max(duration, 5.0)
        signal, timeline, scenario, agent_actor, customer_actor = compose_call(
            bank, duration_s=duration, seed=call_seed, config=config)
        signal = _through_line(signal, call_seed=call_seed, config=config)
        call_id = f"call_{i + 1:04d}"
        path = out_dir / f"{call_id}.wav"
        sf.write(str(path), signal.T, config.sr, subtype="PCM_16")
        timeline_path = out_dir / f"{call_id}.timeline.csv"
        write_timeline(timeline_path, timeline)
        started = dt.datetime.combine(start_date + dt.timedelta(days=i % 3),
                                      dt.time(9, 0), tzinfo=dt.UTC) + dt.timedelta(minutes=7 * i)
        rows.append({"call_id": call_id, "file": path.name,
                     "agent_id": agents[i % len(agents)], "queue": QUEUES[i % len(QUEUES)],
                     "started_at": started.isoformat(), "customer_channel": "right",
                     "scenario": scenario})
        calls.append(GeneratedCall(call_id, path, timeline_path, signal.shape[1] / config.sr,
                                   scenario, agent_actor, customer_actor, timeline))
    with (out_dir / "calls.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return calls


def _through_line(signal: np.ndarray, *, call_seed: int, config: CallGenConfig) -> np.ndarray:
    """The call as recorded: through the phone line when ``config.telephony`` (line noise
    jittered per call when non-speech is on), then scaled under full scale if it clips."""
    if config.telephony:
        noise_dbfs = config.line_noise_dbfs
        if config.nonspeech > 0:  # lines differ: some hiss more than others
            jitter = np.random.default_rng(hash_seed("line", call_seed))
            noise_dbfs += float(jitter.uniform(-1.0, 1.0)) * config.line_noise_jitter_db
        signal = telephone_line(signal, config.sr, seed=call_seed, noise_dbfs=noise_dbfs)
    peak = float(np.max(np.abs(signal))) if signal.size else 0.0
    if peak > 0.99:  # overtalk can sum above full scale; keep the mix inside PCM range
        signal = signal * (0.99 / peak)
    return signal


def bank_from_source(
    source: str | Path,
    *,
    sr: int = 8000,
    actors: Iterable[int] | None = None,
    emotions: Iterable[str] | None = None,
) -> ClipBank:
    """``"synth"`` for synthetic voices, else a folder of RAVDESS-named clips."""
    if str(source).lower() in {"synth", "synthetic"}:
        return ClipBank.synthetic(actors=actors if actors is not None else range(1, 9),
                                  emotions=tuple(emotions) if emotions else tuple(RAVDESS_CODES),
                                  sr=sr)
    return ClipBank.from_folder(Path(source), actors=actors, emotions=emotions, sr=sr)
