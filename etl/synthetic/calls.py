"""Synthetic stereo call-centre recordings with a ground-truth timeline.

A call alternates turns between an *agent* (left channel) and a *customer* (right channel). Each
turn is one to three labelled clips of the same emotion (an :class:`etl.synthetic.clips.ClipBank`
of RAVDESS-named files from a folder, or of :mod:`etl.synthetic.speech` voices generated on the
fly), separated by pauses, with occasional overtalk (the next speaker starts before the previous
one stopped). The customer's emotions follow a scenario (calm, escalating, upset, recovering), so
some calls should be escalated and others not.

Calls also carry the non-speech that real calls carry (``CallGenConfig.nonspeech``; 0 turns it
off and gives the speech-only calls of earlier versions, bit for bit): ring-back, IVR prompts
answered by key presses, hold music, a typed account number and background babble, from
:mod:`etl.synthetic.nonspeech`, placed here on the channel where a stereo call-centre recording
has them.

The mix then goes through a telephone line (:func:`etl.synthetic.line.telephone_line`: 8 kHz,
300-3400 Hz band limit, a little line noise and 8-bit mu-law companding). Every utterance and
non-speech event is written to the call's timeline (:mod:`etl.synthetic.timeline`), so VAD and
scoring can be measured against it.

Outputs of :func:`generate_calls` (in ``out_dir``)::

    call_0001.wav            stereo PCM-16, channel 0 = agent, channel 1 = customer
    call_0001.timeline.csv   role,start_s,end_s,emotion,actor,clip,kind
    calls.csv                call_id,file,agent_id,queue,started_at,customer_channel,scenario
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from etl.synthetic.clips import ClipBank
from etl.synthetic.line import telephone_line
from etl.synthetic.nonspeech import (
    DTMF_KEYS,
    RINGBACK_STYLES,
    babble,
    dtmf_sequence,
    hold_music,
    ivr_prompt,
    ringback_tone,
)
from etl.synthetic.speech import hash_seed
from etl.synthetic.timeline import TimelineEvent, write_timeline

ROLES: tuple[str, str] = ("agent", "customer")

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
