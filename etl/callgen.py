"""Synthetic stereo call-centre recordings with a ground-truth timeline.

A call alternates turns between an *agent* (left channel) and a *customer* (right channel). Each
turn is one to three labelled clips of the same emotion (RAVDESS-named files from a folder, or
:mod:`etl.synth` voices generated on the fly), separated by pauses, with occasional overtalk (the
next speaker starts before the previous one stopped). The customer's emotions follow a scenario
(calm, escalating, upset, recovering), so some calls should be escalated and others not.

The mix then goes through a telephone line: 8 kHz, 300-3400 Hz band limit, 8-bit mu-law
companding and a little line noise. Every utterance is written to the timeline with its role,
start, end and emotion, so VAD and scoring can be measured against it.

Outputs of :func:`generate_calls` (in ``out_dir``)::

    call_0001.wav            stereo PCM-16, channel 0 = agent, channel 1 = customer
    call_0001.timeline.csv   role,start_s,end_s,emotion,actor,clip
    calls.csv                call_id,file,agent_id,queue,started_at,customer_channel,scenario
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

from etl.audio import (
    TELEPHONY_BAND_HZ,
    AudioError,
    bandlimit,
    is_audio_path,
    load_audio,
    resample,
    trim_silence,
)
from etl.synth import RAVDESS_CODES, Voice, hash_seed, synthesize

ROLES: tuple[str, str] = ("agent", "customer")
RAVDESS_EMOTIONS = {code: emotion for emotion, code in RAVDESS_CODES.items()}
_RAVDESS_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")

# Emotion pools per phase of a scenario: (customer early, customer late).
AGENT_EMOTIONS: tuple[str, ...] = ("neutral", "calm", "happy")
_POSITIVE: tuple[str, ...] = ("neutral", "calm", "happy")
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


@dataclass(frozen=True, slots=True)
class LabelledClip:
    """One labelled utterance, already at the generator rate and trimmed to its speech."""

    name: str
    actor: int
    emotion: str
    signal: np.ndarray  # float32 (n,)


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    """Ground truth for one utterance in a call."""

    role: str
    start_s: float
    end_s: float
    emotion: str
    actor: int
    clip: str


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
        """A random clip of ``emotion`` by ``actor`` (any actor's if this one has none)."""
        pool = self._by_key.get((actor, emotion)) or self._by_emotion.get(emotion)
        if not pool:
            raise ValueError(f"no clip of emotion {emotion!r}; the source has {self.emotions}")
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
        clips: list[LabelledClip] = []
        for path in sorted(p for p in root.rglob("*") if p.is_file() and is_audio_path(p)):
            match = _RAVDESS_NAME.match(path.stem)
            if not match or match.group(3) not in RAVDESS_EMOTIONS:
                continue
            actor, emotion = int(match.group(7)), RAVDESS_EMOTIONS[match.group(3)]
            if (wanted_actors is not None and actor not in wanted_actors) or (
                    wanted_emotions is not None and emotion not in wanted_emotions):
                continue
            try:
                signal, _ = load_audio(path, sr=sr, mono=True)
            except AudioError:
                continue  # one unreadable clip must not stop the generator
            signal = trim_silence(signal, sr, top_db=top_db)
            if len(signal) < int(0.3 * sr):
                continue
            clips.append(LabelledClip(path.stem, actor, emotion, signal))
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
        """Clips from :func:`etl.synth.synthesize` (deterministic), ``per_emotion`` per actor."""
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
    line_noise_dbfs: float = -66.0
    duration_jitter: float = 0.2


def _scenario_emotion(rng: np.random.Generator, scenario: str, progress: float) -> str:
    early, late = SCENARIOS[scenario]
    # A soft switch around the middle of the call so the change is not at one exact turn.
    pool = early if rng.random() > np.clip((progress - 0.3) / 0.4, 0.0, 1.0) else late
    return str(pool[int(rng.integers(len(pool)))])


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
        signal float32 ``(2, n)`` at ``bank.sr`` (row 0 agent, row 1 customer), before the line.
    """
    rng = np.random.default_rng(seed)
    sr = bank.sr
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
    speaker_actor = {"agent": agent_actor, "customer": customer_actor}

    n_total = round(duration_s * sr)
    out = np.zeros((2, n_total), dtype=np.float32)
    timeline: list[TimelineEvent] = []
    t = float(rng.uniform(0.3, 1.0))
    role = "agent"  # the agent greets
    last_end = 0.0
    while True:
        emotion = (str(rng.choice(AGENT_EMOTIONS)) if role == "agent"
                   else _scenario_emotion(rng, scenario, t / duration_s))
        n_utt = int(rng.integers(config.utterances_per_turn[0], config.utterances_per_turn[1] + 1))
        stop = False
        for k in range(n_utt):
            clip = bank.pick(rng, actor=speaker_actor[role], emotion=emotion)
            start = round(t * sr)
            if start + len(clip.signal) > n_total:
                stop = True
                break
            gain = 10 ** (float(rng.uniform(*config.gain_db)) / 20.0)
            channel = ROLES.index(role)
            out[channel, start:start + len(clip.signal)] += gain * clip.signal
            end_t = (start + len(clip.signal)) / sr
            timeline.append(TimelineEvent(role, round(start / sr, 3), round(end_t, 3), emotion,
                                          clip.actor, clip.name))
            last_end = end_t
            t = end_t + (float(rng.uniform(*config.in_turn_gap_s)) if k < n_utt - 1 else 0.0)
        if stop:
            break
        if rng.random() < config.overlap_probability:
            t = max(last_end - float(rng.uniform(*config.overlap_s)), 0.0)
        else:
            t = last_end + float(rng.uniform(*config.turn_gap_s))
        if rng.random() >= config.same_speaker_probability:
            role = "customer" if role == "agent" else "agent"
    timeline.sort(key=lambda e: (e.start_s, e.role))
    return out, timeline, scenario, agent_actor, customer_actor


def telephone_line(signal: np.ndarray, sr: int, *, seed: int,
                   noise_dbfs: float = -66.0) -> np.ndarray:
    """Simulate a narrowband phone line on a ``(channels, n)`` or ``(n,)`` signal at 8 kHz.

    Band limit to 300-3400 Hz, add line noise (white + faint 50 Hz hum), then 8-bit mu-law
    companding (what G.711 does to the samples). Shape preserved, float32.
    """
    rng = np.random.default_rng(seed)
    low, high = TELEPHONY_BAND_HZ
    y = bandlimit(signal, sr, low_hz=low, high_hz=high)
    n = y.shape[-1]
    noise_amp = 10 ** (noise_dbfs / 20.0)
    y = y + noise_amp * rng.standard_normal(y.shape).astype(np.float32)
    y = y + 0.5 * noise_amp * np.sin(2 * np.pi * 50.0 * np.arange(n) / sr).astype(np.float32)
    return mulaw_roundtrip(np.clip(y, -1.0, 1.0)).astype(np.float32)


def mulaw_roundtrip(y: np.ndarray, *, mu: int = 255) -> np.ndarray:
    """Encode to 8-bit mu-law and decode again (quantisation noise included)."""
    compressed = np.sign(y) * np.log1p(mu * np.abs(y)) / np.log1p(mu)
    codes = np.round((compressed + 1.0) / 2.0 * mu)
    expanded = codes / mu * 2.0 - 1.0
    return np.sign(expanded) * ((1.0 + mu) ** np.abs(expanded) - 1.0) / mu


def write_timeline(path: Path, timeline: Sequence[TimelineEvent]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["role", "start_s", "end_s", "emotion", "actor", "clip"])
        for e in timeline:
            writer.writerow([e.role, f"{e.start_s:.3f}", f"{e.end_s:.3f}", e.emotion, e.actor,
                             e.clip])


def read_timeline(path: Path) -> list[TimelineEvent]:
    """Inverse of :func:`write_timeline`."""
    with Path(path).open(newline="") as handle:
        return [TimelineEvent(r["role"], float(r["start_s"]), float(r["end_s"]), r["emotion"],
                              int(r["actor"]), r["clip"]) for r in csv.DictReader(handle)]


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
        from tqdm import tqdm

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
        if config.telephony:
            signal = telephone_line(signal, config.sr, seed=call_seed,
                                    noise_dbfs=config.line_noise_dbfs)
        peak = float(np.max(np.abs(signal))) if signal.size else 0.0
        if peak > 0.99:  # overtalk can sum above full scale; keep the mix inside PCM range
            signal = signal * (0.99 / peak)
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
