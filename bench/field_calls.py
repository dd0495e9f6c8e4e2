"""Held-out stereo call recordings built outside the project's call generator (issue 24).

``ser calls generate`` (etl/synthetic/calls.py) puts every talker within a few dB of one level
on one G.711 line, and the same generator chooses the model's operating point, so a bench on its
calls flatters the product. This builder shares none of its level or line code: it reads the
clips (``etl.synthetic.clips.ClipBank``) and writes timelines in the generator's format
(``role,start_s,end_s,emotion,actor,clip,kind``, so ``bench/calls_accuracy.py`` reads the truth
the same way), and everything in between is its own.

Levels (all "active level" = mean power of the 20 ms frames within 25 dB of an utterance's
loudest frame, dBFS):

- every clip is first brought to one active level, so RAVDESS's per-recording gains are gone,
  then set **per utterance** relative to its speaker's angry level by emotion, as people speak:
  angry 0 dB, fearful/happy -7..-3, surprised -6..-2, disgust -8..-4, neutral -14..-10,
  calm -15..-11, sad -15..-10 (uniform draws), RAVDESS strong intensity +1.5 dB, normal -1.5 dB;
- each party's angry level is drawn **per call** from -34..-12 dBFS (22 dB), independently for
  the agent and the customer, so a soft customer may sit 20 dB under a loud agent;
- each channel gets its own line noise, in the line's band, at a floor drawn from -66..-50 dBFS
  RMS (brownish/white mix plus a little mains hum before the band filter).

Lines (``--lines``; each call goes through exactly one):

==============  =====================================================================
``g711``        8 kHz, 300-3400 Hz handset/exchange band (6th-order Butterworth, causal),
                segmented G.711 mu-law (ITU-T G.711 quantiser, 14-bit linear range)
``wideband``    16 kHz VoIP: 50-7000 Hz band, light coding noise (per 20 ms frame,
                30-38 dB under the frame), written as a 16 kHz WAV
``packet_loss`` 8 kHz G.711 or 16 kHz wideband (even odds), then 20 ms frames lost in bursts
                (Gilbert-Elliott chain, 3-10 % loss, mean burst 1.5-4 frames) per direction;
                concealment repeats the last good frame at -3 dB a frame and mutes after 60 ms
``echo``        g711 line whose agent channel leaks into the customer's (hybrid echo,
                band-passed, -30..-20 dB, 30-120 ms late) and vice versa (own gain, delay)
``reverb``      g711 line, customer in a reverberant room: convolved with a synthetic
                exponentially decaying impulse response (RT60 0.3-0.8 s, a few early
                reflections, direct-to-reverberant ratio -3..+6 dB, unit energy)
``agc``         g711 line with automatic gain control on each channel after the noise:
                the level (dB, one-pole, attack 0.2-0.6 s, release 0.4-1 s) is pulled to a
                -22..-16 dBFS target with at most +18..+30 dB of gain, so soft speech and
                the noise between words are boosted
==============  =====================================================================

Stereo PCM-16: channel 0 agent, channel 1 customer. Conversations are this module's own turn
taking: the agent greets; turns alternate (10 % the same speaker again), 1-3 utterances of one
emotion each, 0.2-1.5 s gaps, 15 % overtalk of 0.2-0.8 s. Agents speak neutral, calm or happy
(friendly); customers follow a scenario: ``calm`` (neutral, calm, happy, surprised),
``escalating`` (neutral/calm for the first 20-35 % of the call, then angry, disgust, sad,
fearful), ``upset`` (negative throughout), ``recovering`` (negative for the first 40-60 %, then
friendly). The scenarios of a line's calls are a quota, not a draw: shares 0.45/0.25/0.15/0.15
of the calls per line (largest remainders, ties in that order; 10 calls = 5 calm, 3 escalating,
1 upset, 1 recovering), in a seeded order, so a small run cannot end up mostly escalated.

Calls are stratified over lines: the k-th call of every line has the same scenario and the same
agent and customer actors (so every line gets the same mix of escalated and calm calls), with its
own clips, timing and levels; ``--paired`` makes the k-th conversation identical on every line
(only the line differs).

Outputs (in OUT)::

    field_<line>_<k>.wav            stereo PCM-16 at the line's rate (8 or 16 kHz)
    field_<line>_<k>.timeline.csv   role,start_s,end_s,emotion,actor,clip,kind (kind = speech)
    calls.csv                       call_id,file,agent_id,queue,started_at,customer_channel,
                                    scenario,line,sample_rate (what ``ser score`` reads)
    field_calls.json                every drawn parameter per call (levels, noise, line)

Seeded and deterministic: the same (source clips, actors, lines, calls per line, minutes, seed,
paired) writes the same bytes.

Usage: python bench/field_calls.py OUT [--source RAVDESS] [--actors 17-20]
       [--calls-per-line 10] [--minutes 2] [--lines g711,wideband,...] [--seed 2024] [--paired]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from scipy import signal as sps

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from etl.synthetic.clips import ClipBank, LabelledClip
from etl.synthetic.timeline import TimelineEvent, write_timeline

LINES: tuple[str, ...] = ("g711", "wideband", "packet_loss", "echo", "reverb", "agc")
MIX_SR = 16000
FRAME_S = 0.020

# Level of each emotion relative to the speaker's angry level (dB, uniform per utterance).
EMOTION_LEVEL_DB: dict[str, tuple[float, float]] = {
    "angry": (0.0, 0.0), "fearful": (-7.0, -3.0), "happy": (-7.0, -3.0),
    "surprised": (-6.0, -2.0), "disgust": (-8.0, -4.0),
    "neutral": (-14.0, -10.0), "calm": (-15.0, -11.0), "sad": (-15.0, -10.0)}
INTENSITY_DB = {"01": -1.5, "02": 1.5}  # RAVDESS normal / strong intensity
PARTY_ANGRY_DBFS = (-34.0, -12.0)  # a party's angry active level per call
NOISE_DBFS = (-66.0, -50.0)  # line noise floor per channel (in-band RMS)

AGENT_EMOTIONS: tuple[str, ...] = ("neutral", "neutral", "calm", "happy", "happy")
FRIENDLY: tuple[str, ...] = ("neutral", "neutral", "calm", "calm", "happy", "surprised")
NEGATIVE: tuple[str, ...] = ("angry", "angry", "disgust", "sad", "fearful")
# scenario -> ((end of phase as a share of the call, (low, high) jitter), emotion pool) per phase
SCENARIOS: dict[str, tuple[tuple[tuple[float, float], tuple[str, ...]], ...]] = {
    "calm": (((1.0, 1.0), FRIENDLY),),
    "escalating": (((0.20, 0.35), ("neutral", "calm")), ((1.0, 1.0), NEGATIVE)),
    "upset": (((1.0, 1.0), NEGATIVE),),
    "recovering": (((0.40, 0.60), NEGATIVE), ((1.0, 1.0), FRIENDLY)),
}
SCENARIO_WEIGHTS: dict[str, float] = {"calm": 0.45, "escalating": 0.25, "upset": 0.15,
                                      "recovering": 0.15}
QUEUES: tuple[str, ...] = ("billing", "support", "sales", "claims")
AGENT_IDS: tuple[str, ...] = tuple(f"F{200 + i}" for i in range(6))


def _rng(seed: int, *parts: int | str) -> np.random.Generator:
    """An independent generator for one named purpose (strings hashed with crc32)."""
    words = [int(p) if isinstance(p, int) else zlib.crc32(p.encode()) for p in parts]
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *words])


def _db(x: float) -> float:
    return 10 ** (x / 20.0)


# --------------------------------------------------------------------------------------------
# Levels
# --------------------------------------------------------------------------------------------


def active_level_db(x: np.ndarray, sr: int, *, gate_db: float = 25.0) -> float:
    """Mean power (dBFS) of the 20 ms frames within ``gate_db`` of the loudest frame."""
    n = max(1, int(FRAME_S * sr))
    k = len(x) // n
    if k == 0:
        return float(10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-20))
    power = np.mean(np.square(x[: k * n].reshape(k, n), dtype=np.float64), axis=1)
    loud = power[power >= power.max() * 10 ** (-gate_db / 10)]
    return float(10 * np.log10(np.mean(loud) + 1e-20))


def _intensity(clip: LabelledClip) -> str:
    parts = clip.name.split("-")
    return parts[3] if len(parts) == 7 else "01"


def utterance_gain(clip: LabelledClip, sr: int, *, party_angry_dbfs: float,
                   rng: np.random.Generator) -> tuple[float, float]:
    """``(linear gain, target active level dBFS)`` that puts ``clip`` at its speaker's level
    for its emotion and intensity."""
    low, high = EMOTION_LEVEL_DB.get(clip.emotion, (-8.0, -4.0))
    target = (party_angry_dbfs + float(rng.uniform(low, high))
              + INTENSITY_DB.get(_intensity(clip), 0.0))
    return _db(target - active_level_db(clip.signal, sr)), target


# --------------------------------------------------------------------------------------------
# Conversation
# --------------------------------------------------------------------------------------------


@dataclass
class Conversation:
    """One call before the line: float64 ``(2, n)`` at :data:`MIX_SR`, and its truth."""

    scenario: str
    agent_actor: int
    customer_actor: int
    party_angry_dbfs: dict[str, float]
    mix: np.ndarray
    timeline: list[TimelineEvent] = field(default_factory=list)
    utterance_levels: list[float] = field(default_factory=list)


def _customer_emotion(rng: np.random.Generator, phases: Sequence[tuple[float, tuple[str, ...]]],
                      progress: float) -> str:
    for end, pool in phases:
        if progress < end:
            return str(pool[int(rng.integers(len(pool)))])
    return str(phases[-1][1][int(rng.integers(len(phases[-1][1])))])


def converse(bank: ClipBank, *, duration_s: float, scenario: str, agent_actor: int,
             customer_actor: int, rng: np.random.Generator) -> Conversation:
    """Turn taking of one call at the drawn party levels (see the module docstring)."""
    if bank.sr != MIX_SR:
        raise ValueError(f"the clip bank must be at {MIX_SR} Hz, not {bank.sr}")
    phases = [(float(rng.uniform(*span)), pool) for span, pool in SCENARIOS[scenario]]
    levels = {role: float(rng.uniform(*PARTY_ANGRY_DBFS)) for role in ("agent", "customer")}
    actor = {"agent": agent_actor, "customer": customer_actor}
    n_total = round(duration_s * MIX_SR)
    mix = np.zeros((2, n_total))
    conv = Conversation(scenario, agent_actor, customer_actor, levels, mix)
    role, t = "agent", float(rng.uniform(0.5, 2.0))
    while True:
        emotion = (str(AGENT_EMOTIONS[int(rng.integers(len(AGENT_EMOTIONS)))]) if role == "agent"
                   else _customer_emotion(rng, phases, t / duration_s))
        end = None
        for k in range(int(rng.integers(1, 4))):
            clip = bank.pick(rng, actor=actor[role], emotion=emotion)
            start = round(t * MIX_SR)
            if start + len(clip.signal) > n_total:
                return conv
            gain, level = utterance_gain(clip, MIX_SR, party_angry_dbfs=levels[role], rng=rng)
            mix[0 if role == "agent" else 1, start:start + len(clip.signal)] += gain * clip.signal
            end = (start + len(clip.signal)) / MIX_SR
            conv.timeline.append(TimelineEvent(role, round(start / MIX_SR, 3), round(end, 3),
                                               clip.emotion, clip.actor, clip.name))
            conv.utterance_levels.append(round(level, 2))
            t = end + float(rng.uniform(0.15, 0.6))
        assert end is not None
        if rng.random() < 0.15:
            t = max(end - float(rng.uniform(0.2, 0.8)), 0.0)
        else:
            t = end + float(rng.uniform(0.2, 1.5))
        if rng.random() >= 0.10:
            role = "customer" if role == "agent" else "agent"


# --------------------------------------------------------------------------------------------
# Lines
# --------------------------------------------------------------------------------------------


def band_filter(x: np.ndarray, sr: int, low_hz: float, high_hz: float,
                order: int = 6) -> np.ndarray:
    """Causal Butterworth band-pass (as a handset or gateway filter is), along the last axis."""
    sos = sps.butter(order, [low_hz, min(high_hz, 0.45 * sr)], btype="bandpass", fs=sr,
                     output="sos")
    return sps.sosfilt(sos, x, axis=-1)


def to_rate(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return x
    g = np.gcd(sr_in, sr_out)
    return sps.resample_poly(x, sr_out // g, sr_in // g, axis=-1)


def line_noise(n: int, sr: int, *, floor_dbfs: float, band: tuple[float, float],
               rng: np.random.Generator) -> np.ndarray:
    """Line noise: a white/brown mix with a little mains hum, band-filtered, at ``floor_dbfs``
    RMS in the band."""
    white = rng.standard_normal(n + sr)
    brown = sps.lfilter([1.0], [1.0, -0.98], rng.standard_normal(n + sr))
    brown /= np.std(brown) + 1e-12
    mix_w = float(rng.uniform(0.3, 1.0))
    noise = mix_w * white + (1 - mix_w) * brown
    mains = 50.0 if rng.random() < 0.5 else 60.0
    t = np.arange(n + sr) / sr
    hum = sum(np.sin(2 * np.pi * mains * h * t + rng.uniform(0, 2 * np.pi)) / h
              for h in (1, 3, 5, 7))
    noise = noise + 0.3 * hum
    noise = band_filter(noise, sr, *band)[sr:]  # drop the filter's start-up
    return noise * (_db(floor_dbfs) / (np.sqrt(np.mean(np.square(noise))) + 1e-20))


def g711_mulaw(x: np.ndarray) -> np.ndarray:
    """ITU-T G.711 mu-law encode and decode (segmented quantiser on the 14-bit range)."""
    pcm = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int64)
    sign = pcm < 0
    mag = np.minimum(np.abs(pcm), 32635) + 0x84
    exponent = np.clip(np.floor(np.log2(mag)).astype(np.int64) - 7, 0, 7)
    mantissa = (mag >> (exponent + 3)) & 0x0F
    decoded = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign, -decoded, decoded) / 32768.0


def coding_noise(x: np.ndarray, sr: int, *, snr_db: float, band: tuple[float, float],
                 rng: np.random.Generator) -> np.ndarray:
    """Light wideband codec noise: per 20 ms frame, band noise ``snr_db`` under the frame."""
    n = int(FRAME_S * sr)
    k = int(np.ceil(x.shape[-1] / n))
    pad = np.zeros(k * n)
    pad[: x.shape[-1]] = x
    frames = pad.reshape(k, n)
    rms = np.sqrt(np.mean(np.square(frames), axis=1, keepdims=True))
    noise = band_filter(rng.standard_normal(k * n + sr), sr, *band)[sr:].reshape(k, n)
    noise /= np.sqrt(np.mean(np.square(noise))) + 1e-20
    return x + (noise * rms * _db(-snr_db)).reshape(-1)[: x.shape[-1]]


def gilbert_elliott_losses(n_frames: int, *, loss_rate: float, mean_burst: float,
                           rng: np.random.Generator) -> np.ndarray:
    """Bool per frame (True = lost): a two-state chain whose stationary loss is ``loss_rate``
    with bursts of ``mean_burst`` frames on average."""
    p_exit = 1.0 / mean_burst  # bad -> good
    p_enter = loss_rate * p_exit / (1.0 - loss_rate)  # good -> bad
    lost = np.zeros(n_frames, dtype=bool)
    bad = rng.random() < loss_rate
    draws = rng.random(n_frames)
    for i in range(n_frames):
        bad = (draws[i] >= p_exit) if bad else (draws[i] < p_enter)
        lost[i] = bad
    return lost


def conceal_losses(x: np.ndarray, sr: int, lost: np.ndarray) -> np.ndarray:
    """Replace lost 20 ms frames: the last good frame again, 3 dB quieter per lost frame, and
    silence after 60 ms of loss (simple packet-loss concealment)."""
    n = int(FRAME_S * sr)
    y = x.copy()
    last = np.zeros(n)
    run = 0
    for i, is_lost in enumerate(lost):
        seg = slice(i * n, min((i + 1) * n, len(y)))
        width = seg.stop - seg.start
        if width <= 0:
            break
        if is_lost:
            run += 1
            y[seg] = last[:width] * _db(-3.0 * run) if run <= 3 else 0.0
        else:
            run = 0
            last = np.zeros(n)
            last[:width] = y[seg]
    return y


def agc(x: np.ndarray, sr: int, *, target_dbfs: float, attack_s: float, release_s: float,
        max_gain_db: float, min_gain_db: float = -12.0) -> np.ndarray:
    """Automatic gain control: a dB level tracker (one-pole, ``attack_s`` when the level rises,
    ``release_s`` when it falls, 10 ms frames) and the gain that pulls it to ``target_dbfs``,
    interpolated per sample."""
    hop = int(0.010 * sr)
    k = int(np.ceil(len(x) / hop))
    pad = np.zeros(k * hop)
    pad[: len(x)] = x
    frame_db = 10 * np.log10(np.mean(np.square(pad.reshape(k, hop)), axis=1) + 1e-12)
    a_att, a_rel = np.exp(-0.010 / attack_s), np.exp(-0.010 / release_s)
    level = np.empty(k)
    state = target_dbfs
    for i, v in enumerate(frame_db):
        a = a_att if v > state else a_rel
        state = a * state + (1 - a) * v
        level[i] = state
    gain_db = np.clip(target_dbfs - level, min_gain_db, max_gain_db)
    centres = (np.arange(k) + 0.5) * hop
    g = np.interp(np.arange(len(x)), centres, gain_db)
    return x * 10 ** (g / 20.0)


def room_impulse_response(sr: int, *, rt60_s: float, drr_db: float,
                          rng: np.random.Generator) -> np.ndarray:
    """A synthetic room: the direct path, 3-6 early reflections within 5-40 ms and a noise
    tail decaying 60 dB in ``rt60_s`` (a little darker as it decays), at ``drr_db`` direct
    to reverberant energy; unit energy."""
    n = int(1.2 * rt60_s * sr)
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.908 * t / rt60_s)
    tail = 0.6 * tail + 0.4 * sps.lfilter([0.5], [1.0, -0.5], tail)  # air absorbs the highs
    onset = int(float(rng.uniform(0.003, 0.008)) * sr)
    tail[:onset] = 0.0
    for _ in range(int(rng.integers(3, 7))):
        i = int(float(rng.uniform(0.005, 0.040)) * sr)
        tail[i] += float(rng.uniform(-1, 1)) * np.exp(-6.908 * t[i] / rt60_s) * 3.0
    tail *= np.sqrt(_db(-drr_db) ** 2 / (np.sum(np.square(tail)) + 1e-20))
    ir = tail
    ir[0] += 1.0
    return ir / np.sqrt(np.sum(np.square(ir)))


def _echo_path(x: np.ndarray, sr: int, *, gain_db: float, delay_s: float) -> np.ndarray:
    """What a hybrid returns of ``x``: band-passed, a little smeared, late and attenuated."""
    y = band_filter(x, sr, 300.0, 3400.0, order=2)
    y = sps.lfilter([0.6, 0.3, 0.1], [1.0], y)
    d = round(delay_s * sr)
    out = np.zeros_like(y)
    out[d:] = y[: len(y) - d]
    return out * _db(gain_db)


def draw_line(line: str, rng: np.random.Generator) -> dict[str, Any]:
    """Every parameter of one call's line (recorded in field_calls.json)."""
    p: dict[str, Any] = {"line": line,
                         "noise_dbfs": [round(float(rng.uniform(*NOISE_DBFS)), 2)
                                        for _ in range(2)]}
    narrow = line in ("g711", "echo", "reverb", "agc")
    if line == "packet_loss":
        narrow = bool(rng.random() < 0.5)
        p["loss_rate"] = [round(float(rng.uniform(0.03, 0.10)), 4) for _ in range(2)]
        p["mean_burst_frames"] = [round(float(rng.uniform(1.5, 4.0)), 2) for _ in range(2)]
    p["sample_rate"] = 8000 if narrow else 16000
    p["band_hz"] = [300.0, 3400.0] if narrow else [50.0, 7000.0]
    if not narrow:
        p["coding_snr_db"] = round(float(rng.uniform(30.0, 38.0)), 2)
    if line == "echo":
        p["echo_gain_db"] = [round(float(rng.uniform(-30.0, -20.0)), 2) for _ in range(2)]
        p["echo_delay_s"] = [round(float(rng.uniform(0.030, 0.120)), 4) for _ in range(2)]
    if line == "reverb":
        p["rt60_s"] = round(float(rng.uniform(0.3, 0.8)), 3)
        p["drr_db"] = round(float(rng.uniform(-3.0, 6.0)), 2)
    if line == "agc":
        p["agc_target_dbfs"] = round(float(rng.uniform(-22.0, -16.0)), 2)
        p["agc_attack_s"] = round(float(rng.uniform(0.2, 0.6)), 3)
        p["agc_release_s"] = round(float(rng.uniform(0.4, 1.0)), 3)
        p["agc_max_gain_db"] = round(float(rng.uniform(18.0, 30.0)), 2)
    return p


def through_line(mix: np.ndarray, params: dict[str, Any], rng: np.random.Generator
                 ) -> np.ndarray:
    """The recorded call: ``mix`` (2, n) at :data:`MIX_SR` through the line ``params``
    describe; float64 (2, m) at ``params["sample_rate"]`` inside [-1, 1]."""
    line, sr = params["line"], int(params["sample_rate"])
    band = (float(params["band_hz"][0]), float(params["band_hz"][1]))
    x = mix.copy()
    if line == "reverb":
        ir = room_impulse_response(MIX_SR, rt60_s=params["rt60_s"], drr_db=params["drr_db"],
                                   rng=rng)
        x[1] = sps.fftconvolve(x[1], ir)[: x.shape[1]]
    if line == "echo":
        a, c = x[0].copy(), x[1].copy()
        x[1] = c + _echo_path(a, MIX_SR, gain_db=params["echo_gain_db"][0],
                              delay_s=params["echo_delay_s"][0])
        x[0] = a + _echo_path(c, MIX_SR, gain_db=params["echo_gain_db"][1],
                              delay_s=params["echo_delay_s"][1])
    x = band_filter(x, MIX_SR, *band)
    x = to_rate(x, MIX_SR, sr)
    for ch in range(2):
        x[ch] = x[ch] + line_noise(x.shape[1], sr, floor_dbfs=params["noise_dbfs"][ch],
                                   band=band, rng=rng)
    if line == "agc":
        for ch in range(2):
            x[ch] = agc(x[ch], sr, target_dbfs=params["agc_target_dbfs"],
                        attack_s=params["agc_attack_s"], release_s=params["agc_release_s"],
                        max_gain_db=params["agc_max_gain_db"])
    x = np.clip(x, -1.0, 1.0)  # the handset and the codec saturate
    if sr == 8000:
        x = g711_mulaw(x)
    else:
        for ch in range(2):
            x[ch] = coding_noise(x[ch], sr, snr_db=params["coding_snr_db"], band=band, rng=rng)
    if line == "packet_loss":
        n_frames = int(np.ceil(x.shape[1] / (FRAME_S * sr)))
        for ch in range(2):
            lost = gilbert_elliott_losses(n_frames, loss_rate=params["loss_rate"][ch],
                                          mean_burst=params["mean_burst_frames"][ch], rng=rng)
            params.setdefault("lost_share", []).append(round(float(lost.mean()), 4))
            x[ch] = conceal_losses(x[ch], sr, lost)
    return np.clip(x, -1.0, 1.0)


# --------------------------------------------------------------------------------------------
# Building a folder of calls
# --------------------------------------------------------------------------------------------


def scenario_quota(n: int, weights: dict[str, float] = SCENARIO_WEIGHTS) -> list[str]:
    """``n`` scenarios in the shares of ``weights`` (largest remainders; ties in the order of
    ``weights``), grouped by scenario."""
    total = sum(weights.values())
    exact = {k: w / total * n for k, w in weights.items()}
    counts = {k: int(np.floor(v)) for k, v in exact.items()}
    order = sorted(weights, key=lambda k: -(exact[k] - counts[k]))  # stable: ties keep order
    for k in order[: n - sum(counts.values())]:
        counts[k] += 1
    return [k for k in weights for _ in range(counts[k])]


def build_calls(out_dir: Path, *, bank: ClipBank, calls_per_line: int, minutes: float,
                lines: Sequence[str] = LINES, seed: int = 2024, paired: bool = False,
                start_date: dt.date = dt.date(2024, 1, 15)) -> list[dict[str, Any]]:
    """Write the calls, their timelines, ``calls.csv`` and ``field_calls.json`` into
    ``out_dir``; the per-call records (as in the JSON)."""
    if unknown := [line for line in lines if line not in LINES]:
        raise ValueError(f"unknown line types {unknown}; choose from {', '.join(LINES)}")
    if calls_per_line < 1 or minutes <= 0:
        raise ValueError("calls_per_line must be >= 1 and minutes > 0")
    actors = bank.actors
    if len(actors) < 2:
        raise ValueError("the clip bank needs at least two actors (agent and customer)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cast_rng = _rng(seed, "cast")
    scenarios = scenario_quota(calls_per_line)
    scenarios = [scenarios[i] for i in cast_rng.permutation(len(scenarios))]
    casts = []
    for scenario in scenarios:
        agent = int(actors[int(cast_rng.integers(len(actors)))])
        others = [a for a in actors if a != agent]
        customer = int(others[int(cast_rng.integers(len(others)))])
        casts.append((scenario, agent, customer))
    rows: list[dict[str, str]] = []
    records: list[dict[str, Any]] = []
    index = 0
    for line in lines:
        for k, (scenario, agent, customer) in enumerate(casts):
            conv_rng = _rng(seed, "conversation", k) if paired else _rng(seed, "call", line, k)
            duration = max(minutes * 60.0 * float(conv_rng.uniform(0.85, 1.15)), 10.0)
            conv = converse(bank, duration_s=duration, scenario=scenario, agent_actor=agent,
                            customer_actor=customer, rng=conv_rng)
            line_rng = _rng(seed, "line", line, k)
            params = draw_line(line, line_rng)
            audio = through_line(conv.mix, params, line_rng)
            call_id = f"field_{line}_{k + 1:03d}"
            path = out_dir / f"{call_id}.wav"
            sf.write(str(path), audio.T.astype(np.float32), int(params["sample_rate"]),
                     subtype="PCM_16")
            write_timeline(out_dir / f"{call_id}.timeline.csv", conv.timeline)
            started = (dt.datetime.combine(start_date, dt.time(8, 0), tzinfo=dt.UTC)
                       + dt.timedelta(minutes=5 * index))
            rows.append({"call_id": call_id, "file": path.name,
                         "agent_id": AGENT_IDS[index % len(AGENT_IDS)],
                         "queue": QUEUES[k % len(QUEUES)], "started_at": started.isoformat(),
                         "customer_channel": "right", "scenario": scenario, "line": line,
                         "sample_rate": str(params["sample_rate"])})
            records.append({"call_id": call_id, "scenario": scenario, "agent_actor": agent,
                            "customer_actor": customer,
                            "duration_s": round(audio.shape[1] / params["sample_rate"], 3),
                            "party_angry_dbfs": {r: round(v, 2)
                                                 for r, v in conv.party_angry_dbfs.items()},
                            "utterances": len(conv.timeline), **params})
            index += 1
    with (out_dir / "calls.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / "field_calls.json").write_text(json.dumps({
        "builder": "bench/field_calls.py", "seed": seed, "paired": paired,
        "calls_per_line": calls_per_line, "minutes": minutes, "lines": list(lines),
        "actors": actors, "emotion_level_db": EMOTION_LEVEL_DB,
        "party_angry_dbfs": PARTY_ANGRY_DBFS, "noise_dbfs": NOISE_DBFS,
        "calls": records}, indent=1))
    return records


def load_bank(source: Path, actors: Sequence[int]) -> ClipBank:
    """RAVDESS-named clips of ``actors`` under ``source`` at :data:`MIX_SR`."""
    return ClipBank.from_folder(Path(source), actors=actors, sr=MIX_SR)


def _parse_actors(spec: str) -> list[int]:
    out: set[int] = set()
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return sorted(out)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--source", type=Path,
                        default=ROOT.parent / "shared" / "datasets" / "ravdess")
    parser.add_argument("--actors", default="17-20")
    parser.add_argument("--calls-per-line", type=int, default=10)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--lines", default=",".join(LINES))
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--paired", action="store_true",
                        help="the same conversation on every line (only the line differs)")
    args = parser.parse_args(argv)
    bank = load_bank(args.source, _parse_actors(args.actors))
    records = build_calls(args.out, bank=bank, calls_per_line=args.calls_per_line,
                          minutes=args.minutes, lines=[s for s in args.lines.split(",") if s],
                          seed=args.seed, paired=args.paired)
    per_line: dict[str, int] = {}
    for r in records:
        per_line[r["line"]] = per_line.get(r["line"], 0) + 1
    print(json.dumps({"out": str(args.out), "calls": len(records), "per_line": per_line,
                      "actors": bank.actors}, indent=2))


if __name__ == "__main__":
    main()
