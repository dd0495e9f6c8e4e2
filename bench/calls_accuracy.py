"""Phone-call accuracy on unseen speakers, measured as a new user would. Prints JSON.

Protocol
1. A scratch ``SER_HOME`` with the embedded PostgreSQL (stopped and deleted afterwards).
2. ``ser ingest ravdess`` on a folder of symlinks to RAVDESS actors 01-16 only (training speakers).
3. Per variant, ``ser features`` and ``ser train --labels SCHEME`` through the CLI:
   ``default`` = no further options (what the README tells a user), ``studio`` = ``--channel
   studio`` (the studio default before phone-robust training), ``telephony`` = ``--channel
   telephony``. Everything a model chooses (calibration, operating point) is chosen on actors
   01-16 inside ``ser train``.
4. ``ser calls generate`` >= 60 stereo 8 kHz phone calls from actors 17-20 only (held out: never
   seen in training or in any choice), with pauses, overtalk, line noise and whatever non-speech
   the generator adds; turn-level truth in ``*.timeline.csv``.
5. ``ser score`` per model version (one batch each), then per (variant, scheme):

   - customer-turn UAR: a turn is a run of consecutive customer utterances of one emotion with no
     agent utterance starting in between; its prediction is the duration-weighted majority of the
     customer segments overlapping it (abstained segments excluded); turns whose emotion the
     scheme excludes are not counted; balanced accuracy over the turns that got a prediction,
     with a 90 % interval from resampling the calls (``customer_turn_uar_ci90``).
   - turn coverage: share of all customer turns overlapped by >= 1 scored segment (and by >= 1
     non-abstained segment).
   - escalation rate, precision and recall: a call is truly escalated when its customer is mostly
     negative (> 50 % of the customer's timeline speech is angry/sad/fearful/disgust); predicted
     = ``call_summaries.escalated``. Also the escalation rate per generator scenario.
   - VAD false accepts: scored segments that overlap no utterance of their own role, by the
     ``kind`` of the non-speech event on that channel they overlap most (hold, dtmf, ringback,
     babble, ivr; ``no_event`` = line noise or a pause), with how many events of that kind got
     at least one scored segment (``nonspeech_events`` counts the events).

   - agents' turns read as negative: agent turns (grouped like customer turns; agents speak
     neutral, calm or happy) whose duration-weighted majority of non-abstained agent segments is
     a negative class of the scheme (angry/sad/fearful/disgust; posneg's ``negative``), overall
     and per true emotion; turn coverage is also given per true customer emotion.

Field calls (``--calls field``, issue 24): step 4 builds the calls with ``bench/field_calls.py``
instead of ``ser calls generate``, which shares no level or line code with the project: each
emotion at its natural loudness (calm/neutral/sad 10-15 dB under angry), each party's level per
call drawn over 22 dB, line noise floors -66..-50 dBFS, and one of six line types per call
(``--lines``: g711, wideband (16 kHz), packet_loss, echo, reverb, agc; ``--calls-per-line``
each; the k-th call of every line has the same scenario and actors). Every figure of step 5 is
reported over all calls and per line type (``per_line``), with a ``summary`` of the key figures
per line; ``scored_bandwidth`` says how ``ser score`` classed each line's calls. Every call,
8 and 16 kHz alike, is scored with ``--model ID`` (the telephony model just trained): the
figures measure that model, not the alias routing of ``ser score`` without ``--model``, which
sends a batch whose first recordings are 16 kHz to ``production-studio`` when one is set
(``etl.runs.batch.batch_bandwidth``). The default stays ``--calls generated`` so the
figures in docs/features.md can be reproduced.

Selection mode (choosing a default without touching actors 17-20):
``--train-actors 1-12 --call-actors 13-16`` trains on actors 01-12 and generates and scores the
calls from actors 13-16 (both sets must lie inside 01-16 and be disjoint); the held-out report is
the default ``--train-actors 1-16 --call-actors 17-20``. Variants ``speaker_norm`` and
``no_speaker_norm`` pin ``ser train``'s speaker normalisation either way (``default`` follows
whatever ``ser train`` does with no options).

Usage: python bench/calls_accuracy.py [--schemes emotion8,callcentre4,posneg]
       [--variants default,studio] [--n-calls 60] [--minutes 2] [--workers 2]
       [--train-actors 1-16] [--call-actors 17-20]
       [--calls field [--calls-per-line 10] [--lines g711,wideband,...] [--paired]]
Run an older checkout's copy of this file (its own ``bench/``) to measure that code.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.nightly import link_actors
from bench.scratch import scratch_home, ser

DEFAULT_RAVDESS = ROOT.parent / "shared" / "datasets" / "ravdess"
HELD_OUT = range(17, 21)
SCHEMES = ("emotion8", "callcentre4", "posneg")
# per variant: options of ``ser features`` and extra options of ``ser train``
VARIANT_OPTIONS: dict[str, list[str]] = {
    "default": [], "studio": ["--channel", "studio"], "telephony": ["--channel", "telephony"],
    "speaker_norm": [], "no_speaker_norm": [], "population_prior": ["--channel", "telephony"],
    # the feature sets side by side (issue 24): without and with the voice encoder
    "rich": ["--set", "rich", "--channel", "telephony"],
    "richvoice": ["--set", "richvoice", "--channel", "telephony"]}
VARIANT_TRAIN_OPTIONS: dict[str, list[str]] = {
    "speaker_norm": ["--speaker-norm"], "no_speaker_norm": ["--no-speaker-norm"]}
# Variants trained in this process with etl.training.train.train_model (the code ``ser train`` runs)
# because the CLI has no option for them yet: ``population_prior`` (every call role shrunk with
# 100 prior rows, the call default) and ``population_prior_N`` (N prior rows).
POPULATION_PRIOR_ROWS = 100.0
IN_PROCESS_TRAIN: dict[str, dict[str, Any]] = {
    "population_prior": {"speaker_normalisation": True,
                         "speaker_prior_rows": POPULATION_PRIOR_ROWS}}


def variant_known(variant: str) -> bool:
    return variant in VARIANT_OPTIONS or in_process_options(variant) is not None


def in_process_options(variant: str) -> dict[str, Any] | None:
    if variant in IN_PROCESS_TRAIN:
        return IN_PROCESS_TRAIN[variant]
    head, _, rows = variant.rpartition("_")
    if head == "population_prior" and rows.isdigit():
        return {"speaker_normalisation": True, "speaker_prior_rows": float(rows)}
    return None
BATCH_DATE = "2024-01-15"
CALL_SOURCES = ("generated", "field")
FIELD_LINES = ("g711", "wideband", "packet_loss", "echo", "reverb", "agc")
TURN_DEFINITION = (
    "customer turn = consecutive customer utterances of one emotion with no agent utterance "
    "starting in between; predicted by the duration-weighted majority of the non-abstained "
    "customer segments overlapping it; emotions the scheme excludes are not counted; UAR = "
    "balanced accuracy over the turns that got a prediction (agent turns grouped the same way)")
TARGETS = {"customer_turn_uar": {"emotion8": 0.50, "callcentre4": 0.70},
           "turn_coverage": 0.95, "escalation_precision": 0.8, "escalation_recall": 0.6}


def _json_tail(out: str) -> dict[str, Any]:
    """The JSON object a ``--json`` command printed (after any log lines)."""
    start = out.find("{")
    return json.loads(out[start:])


def parse_actors(spec: str) -> list[int]:
    """Actor numbers from ``"1-12"`` or ``"1,3,5-7"`` (sorted, unique)."""
    out: set[int] = set()
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise ValueError(f"actor list {spec!r}: use numbers and ranges like 1-12,14") from None
        if not 1 <= first <= last <= 24:
            raise ValueError(f"actor range {part!r} must lie within 1-24, low to high")
        out.update(range(first, last + 1))
    if not out:
        raise ValueError(f"actor list {spec!r} is empty")
    return sorted(out)


def actor_span(actors: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"01-03,07"``."""
    parts: list[str] = []
    start = prev = actors[0]
    for a in [*actors[1:], None]:
        if a is not None and a == prev + 1:
            prev = a
            continue
        parts.append(f"{start:02d}" if start == prev else f"{start:02d}-{prev:02d}")
        if a is not None:
            start = prev = a
    return ",".join(parts)


# --------------------------------------------------------------------------------------------
# Truth from the generator's timelines
# --------------------------------------------------------------------------------------------


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def customer_turns(events: list[dict[str, Any]], *, role: str = "customer"
                   ) -> list[dict[str, Any]]:
    """Consecutive utterances of ``role`` (the customer) of one emotion, no utterance of the
    other role starting between."""
    turns: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for e in sorted(events, key=lambda r: r["start_s"]):
        if e["role"] not in (role, "agent", "customer"):
            continue
        if e["role"] != role:
            current = None
        else:
            if current is not None and current["emotion"] == e["emotion"]:
                current["end_s"] = max(current["end_s"], e["end_s"])
                current["speech_s"] += e["end_s"] - e["start_s"]
            else:
                current = {"start_s": e["start_s"], "end_s": e["end_s"],
                           "emotion": e["emotion"], "speech_s": e["end_s"] - e["start_s"]}
                turns.append(current)
    return turns


def load_truth(calls_dir: Path) -> dict[str, dict[str, Any]]:
    from etl.corpora.labels import CANONICAL_EMOTIONS, ESCALATED_SHARE
    from etl.synthetic.timeline import customer_negative_share, read_timeline

    meta = {r["call_id"]: r for r in read_rows(calls_dir / "calls.csv")}
    truth: dict[str, dict[str, Any]] = {}
    for call_id, row in meta.items():
        events = []
        for r in read_rows(calls_dir / f"{call_id}.timeline.csv"):
            events.append({**r, "start_s": float(r["start_s"]), "end_s": float(r["end_s"])})
        speech = [e for e in events if e["role"] in ("agent", "customer")
                  and e["emotion"] in CANONICAL_EMOTIONS
                  and (e.get("kind") or "speech") == "speech"]
        other = [e for e in events if e not in speech]
        share = customer_negative_share(read_timeline(calls_dir / f"{call_id}.timeline.csv"))
        truth[call_id] = {"scenario": row.get("scenario", ""), "line": row.get("line", ""),
                          "speech": speech, "nonspeech": other,
                          "turns": customer_turns(speech),
                          "agent_turns": customer_turns(speech, role="agent"),
                          "customer_negative_share": share,
                          "escalated": share > ESCALATED_SHARE}
    return truth


# --------------------------------------------------------------------------------------------
# Metrics of one scored batch
# --------------------------------------------------------------------------------------------


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def balanced_accuracy(pairs: list[tuple[str, str]]) -> tuple[float | None, dict[str, float]]:
    hits: dict[str, list[int]] = defaultdict(list)
    for true, pred in pairs:
        hits[true].append(int(true == pred))
    recalls = {k: round(sum(v) / len(v), 3) for k, v in sorted(hits.items())}
    return (round(sum(recalls.values()) / len(recalls), 3) if recalls else None), recalls


def batch_metrics(engine: Any, batch_id: int, scheme: str,
                  truth: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every metric of one scored batch (module docstring, step 5) against the timelines."""
    segs, summaries = _batch_rows(engine, batch_id)
    return rows_metrics(segs, summaries, scheme, truth)


def rows_metrics(segs: list[Any], summaries: list[dict[str, Any]], scheme: str,
                 truth: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The metrics of the calls in ``truth`` (a batch's rows of other calls are ignored, so a
    subset of the calls, e.g. one line type, is measured on its own)."""
    by_call: dict[str, list[Any]] = defaultdict(list)
    for row in segs:
        if row.call_key in truth:
            by_call[row.call_key].append(row)
    summaries = [r for r in summaries if r["call_key"] in truth]
    segs = [s for rows in by_call.values() for s in rows]
    scored = [r for r in summaries if r["status"] == "scored"]
    false_accepts, nonspeech_events = _vad_false_accepts(truth, by_call)
    out: dict[str, Any] = {
        "calls": len(truth),
        **_turn_metrics(truth, by_call, scheme),
        **_agent_metrics(truth, by_call),
        "calls_scored": len(scored), "calls_failed": len(summaries) - len(scored),
        **_escalation_metrics(scored, truth),
        "segments_scored": len(segs),
        "segments_abstained": sum(1 for s in segs if s[6]),
        "vad_false_accepts": false_accepts,
        "nonspeech_events": nonspeech_events,
    }
    for col in ("customer_scored_share", "customer_confidence_mean", "customer_abstained_share"):
        values = [r[col] for r in scored if r.get(col) is not None]
        if values:
            out[f"mean_{col}"] = round(sum(values) / len(values), 3)
    return out


def _batch_rows(engine: Any, batch_id: int) -> tuple[list[Any], list[dict[str, Any]]]:
    """``(segments, call summaries)`` of a batch; a segment's column 6 is ``abstained`` (false
    on a schema without it), a call without a summary has only its key and status."""
    from sqlalchemy import text

    with engine.connect() as conn:
        seg_cols = set(conn.execute(text(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'call_segments'")).scalars())
        abst = "s.abstained" if "abstained" in seg_cols else "false"
        segs = conn.execute(text(
            f"SELECT c.call_key, s.role, s.start_s, s.end_s, s.emotion, s.confidence, {abst} "
            "FROM call_segments s JOIN calls c ON c.id = s.call_id "
            "JOIN batches b ON b.id = c.batch_id AND b.model_version_id = s.model_version_id "
            "WHERE c.batch_id = :b"), {"b": batch_id}).all()
        summaries = [dict(r._mapping) for r in conn.execute(text(
            "SELECT c.call_key, c.status, c.sample_rate AS call_sample_rate, "
            "c.extra->>'bandwidth' AS bandwidth, s.* "
            "FROM calls c JOIN batches b ON b.id = c.batch_id "
            "LEFT JOIN call_summaries s ON s.call_id = c.id "
            "AND s.model_version_id = b.model_version_id WHERE c.batch_id = :b"),
            {"b": batch_id})]
    return list(segs), summaries


def _turn_metrics(truth: dict[str, dict[str, Any]], by_call: dict[str, list[Any]],
                  scheme: str) -> dict[str, Any]:
    """Customer-turn UAR and turn coverage: each turn predicted by the duration-weighted
    majority of the non-abstained customer segments overlapping it."""
    from etl.corpora.labels import map_emotion

    pairs: list[tuple[str, str]] = []
    pairs_by_call: list[list[tuple[str, str]]] = []
    n_turns = covered = covered_confident = 0
    per_emotion: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for key, t in truth.items():
        pairs_by_call.append([])
        cust = [s for s in by_call.get(key, []) if s.role == "customer"]
        for turn in t["turns"]:
            n_turns += 1
            any_seg, votes = _turn_votes(cust, turn)
            covered += any_seg
            covered_confident += bool(votes)
            counts = per_emotion[turn["emotion"]]
            counts[0] += 1
            counts[1] += any_seg
            counts[2] += bool(votes)
            label = map_emotion(scheme, turn["emotion"])
            if label is not None and votes:
                pairs.append((label, max(votes, key=votes.__getitem__)))
                pairs_by_call[-1].append(pairs[-1])
    uar, recalls = balanced_accuracy(pairs)
    return {
        "customer_turn_uar": uar, "customer_turn_uar_ci90": _uar_interval(pairs_by_call),
        "customer_turns_evaluated": len(pairs),
        "recall_per_class": recalls,
        "chance_uar": round(1 / len(recalls), 3) if recalls else None,
        "customer_turns": n_turns,
        "turn_coverage": round(covered / n_turns, 3) if n_turns else None,
        "turn_coverage_confident": round(covered_confident / n_turns, 3) if n_turns else None,
        "turn_coverage_per_emotion": {
            e: {"turns": n, "coverage": round(c / n, 3), "coverage_confident": round(cc / n, 3)}
            for e, (n, c, cc) in sorted(per_emotion.items())},
    }


def _uar_interval(pairs_by_call: list[list[tuple[str, str]]], *, reps: int = 1000,
                 seed: int = 0) -> list[float] | None:
    """90 % interval of the customer-turn UAR over calls resampled with replacement (the
    calls, not the turns, are the independent units); None for fewer than 5 calls."""
    import numpy as np

    if len(pairs_by_call) < 5:
        return None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(reps):
        pick = rng.integers(len(pairs_by_call), size=len(pairs_by_call))
        uar, _ = balanced_accuracy([p for i in pick for p in pairs_by_call[i]])
        if uar is not None:
            values.append(uar)
    return [round(float(np.percentile(values, 5)), 3), round(float(np.percentile(values, 95)), 3)]


def _turn_votes(segments: list[Any], turn: dict[str, Any]) -> tuple[bool, dict[str, float]]:
    """``(any segment overlaps the turn, seconds of overlap per predicted label of the
    non-abstained ones)``."""
    votes: dict[str, float] = defaultdict(float)
    any_seg = False
    for s in segments:
        ov = _overlap(s.start_s, s.end_s, turn["start_s"], turn["end_s"])
        if ov > 0:
            any_seg = True
            if not s[6]:
                votes[s.emotion] += ov
    return any_seg, votes


def _agent_metrics(truth: dict[str, dict[str, Any]],
                   by_call: dict[str, list[Any]]) -> dict[str, Any]:
    """Agents' turns (neutral/calm/happy: friendly) read as negative: each agent turn (grouped
    as customer turns are) predicted by the duration-weighted majority of the non-abstained
    agent segments overlapping it; negative = one of the scheme's negative classes
    (angry/sad/fearful/disgust, posneg's "negative"). Also the share of the agents' scored
    seconds in negative segments."""
    from etl.corpora.labels import is_negative_class

    per_emotion: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    predicted: dict[str, int] = defaultdict(int)
    neg_s = all_s = 0.0
    for key, t in truth.items():
        agent = [s for s in by_call.get(key, []) if s.role == "agent"]
        for s in agent:
            if not s[6]:
                all_s += s.end_s - s.start_s
                neg_s += (s.end_s - s.start_s) * is_negative_class(s.emotion)
        for turn in t.get("agent_turns", []):
            _, votes = _turn_votes(agent, turn)
            if not votes:
                continue
            label = max(votes, key=votes.__getitem__)
            predicted[label] += 1
            counts = per_emotion[turn["emotion"]]
            counts[0] += 1
            counts[1] += is_negative_class(label)
    n = sum(c[0] for c in per_emotion.values())
    neg = sum(c[1] for c in per_emotion.values())
    return {
        "agent_turns_evaluated": n,
        "agent_turns_read_negative": round(neg / n, 3) if n else None,
        "agent_turns_read_negative_per_emotion": {
            e: {"turns": k, "read_negative": round(m / k, 3)}
            for e, (k, m) in sorted(per_emotion.items())},
        "agent_turn_predictions": dict(sorted(predicted.items())),
        "agent_scored_seconds_negative_share": round(neg_s / all_s, 3) if all_s else None,
    }


def _vad_false_accepts(truth: dict[str, dict[str, Any]], by_call: dict[str, list[Any]]
                       ) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """``(false accepts by kind, non-speech events by kind)``: scored segments on no speech of
    their own role, blamed on the non-speech event of that channel they overlap most."""
    fa: dict[str, dict[str, float]] = defaultdict(
        lambda: {"segments": 0, "seconds": 0.0, "events_with_false_accept": 0})
    nonspeech_events: dict[str, int] = defaultdict(int)
    for key, t in truth.items():
        hit_events: set[int] = set()
        for e in t["nonspeech"]:
            nonspeech_events[e.get("kind") or "unknown"] += 1
        for s in by_call.get(key, []):
            own = [e for e in t["speech"] if e["role"] == s.role]
            if any(_overlap(s.start_s, s.end_s, e["start_s"], e["end_s"]) > 0 for e in own):
                continue
            on_channel = [e for e in t["nonspeech"] if e["role"] == s.role]
            best = max(on_channel, default=None,
                       key=lambda e: _overlap(s.start_s, s.end_s, e["start_s"], e["end_s"]))
            if best is None or _overlap(s.start_s, s.end_s, best["start_s"], best["end_s"]) <= 0:
                kind = "no_event"
            else:
                kind = best.get("kind") or "unknown"
                if id(best) not in hit_events:
                    hit_events.add(id(best))
                    fa[kind]["events_with_false_accept"] += 1
            fa[kind]["segments"] += 1
            fa[kind]["seconds"] = round(fa[kind]["seconds"] + s.end_s - s.start_s, 2)
    return ({k: dict(v) for k, v in sorted(fa.items())},
            dict(sorted(nonspeech_events.items())))


def _escalation_metrics(scored: list[dict[str, Any]],
                        truth: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Escalation rate, precision and recall of the scored calls, per scenario and by rule."""
    tp = sum(1 for r in scored if r["escalated"] and truth[r["call_key"]]["escalated"])
    n_pred = sum(1 for r in scored if r["escalated"])
    n_true = sum(1 for r in scored if truth[r["call_key"]]["escalated"])
    per_scenario: dict[str, list[int]] = defaultdict(list)
    rules: dict[str, int] = defaultdict(int)
    for r in scored:
        per_scenario[truth[r["call_key"]]["scenario"]].append(int(bool(r["escalated"])))
        if r["escalated"]:
            rules[r["escalation_rule"]] += 1
    return {
        "truly_escalated": n_true, "escalated": n_pred,
        "escalation_rate": round(n_pred / len(scored), 3) if scored else None,
        "escalation_precision": round(tp / n_pred, 3) if n_pred else None,
        "escalation_recall": round(tp / n_true, 3) if n_true else None,
        "escalation_rate_per_scenario": {k: round(sum(v) / len(v), 3)
                                         for k, v in sorted(per_scenario.items())},
        "calm_calls_escalated": sum(per_scenario.get("calm", [])),
        "escalations_by_rule": dict(sorted(rules.items())),
    }


def train_in_process(engine: Any, scheme: str, options: dict[str, Any]) -> int:
    """Train a telephony model on the default set with phone-line copies (``ser train``'s
    defaults) plus ``options`` through etl.training.train; its model version id."""
    from sqlalchemy.orm import Session

    from etl.features.specs import DEFAULT_SET
    from etl.training.config import TrainConfig
    from etl.training.train import train_model

    with Session(engine) as session, session.begin():
        result = train_model(session, TrainConfig(label_scheme=scheme, channel="telephony",
                                                  feature_set=DEFAULT_SET, augment=True,
                                                  **options))
        return result.model_version_id


def model_info(engine: Any, model_version_id: int) -> dict[str, Any]:
    from sqlalchemy import text

    with engine.connect() as conn:
        row = conn.execute(text(
            "SELECT v.id, v.cv_uar, v.params, s.name AS feature_set, s.channel "
            "FROM model_versions v JOIN feature_sets s ON s.id = v.feature_set_id "
            "WHERE v.id = :m"), {"m": model_version_id}).one()
    info: dict[str, Any] = {"model_version_id": row.id, "feature_set": row.feature_set,
                            "channel": row.channel,
                            "cv_uar_train_actors": round(float(row.cv_uar), 3),
                            "speaker_normalisation": (row.params or {}).get(
                                "speaker_normalisation"),
                            "speaker_prior_rows": ((row.params or {}).get("speaker_population")
                                                   or {}).get("prior_rows")}
    calib = (row.params or {}).get("calibration")
    if calib:
        info["calibration"] = {k: calib.get(k) for k in ("method", "ece_before", "ece_after",
                                                         "log_loss_before", "log_loss_after")}
        op = calib.get("operating_point")
        if op:
            info["operating_point"] = {k: op.get(k) for k in (
                "rules", "confidence_floor", "escalation_rate", "precision", "recall",
                "cv_precision", "cv_recall", "pseudo_call_normalisation")}
    return info


@dataclass(frozen=True)
class _Plan:
    """What to measure, from the command line, checked."""

    schemes: list[str]
    variants: list[str]
    calls: str  # "generated" or "field"
    lines: list[str]
    train_actors: list[int]
    call_actors: list[int]
    selection: bool  # choosing a default: actors 17-20 untouched

    @property
    def train_span(self) -> str:
        return actor_span(self.train_actors)

    @property
    def call_span(self) -> str:
        return actor_span(self.call_actors)


def main() -> None:
    args = _parse_args()
    plan = _plan(args)
    started = time.perf_counter()
    result: dict[str, Any] = {
        "protocol": _protocol(plan, args),
        "mode": "selection" if plan.selection else "held_out",
        "calls_source": plan.calls,
        "turn_definition": TURN_DEFINITION,
        "code_root": str(ROOT), "code_commit": _git_commit(), "cpus": os.cpu_count(),
        "targets": TARGETS,
        "options": {"schemes": plan.schemes, "variants": plan.variants, "calls": plan.calls,
                    **({"calls_per_line": args.calls_per_line, "lines": plan.lines,
                        "paired": args.paired} if plan.calls == "field"
                       else {"n_calls": args.n_calls}),
                    "minutes": args.minutes, "seed": args.seed,
                    "train_actors": plan.train_span, "call_actors": plan.call_span}}
    seconds: dict[str, float] = {}
    with scratch_home(args.keep, prefix="ser-bench-calls-",
                      extra_env={"SER_WORKERS": str(args.workers)}) as (tmp, env):
        from db.engine import cached_engine
        from flows.database import database_url

        engine = None
        try:
            calls_dir, truth = _prepare(args, plan, tmp, env, result=result, seconds=seconds)
            engine = cached_engine(database_url())
            results: dict[str, dict[str, Any]] = {}
            for variant in plan.variants:
                entries = _measure_variant(engine, env, variant, plan.schemes,
                                           calls_dir=calls_dir, truth=truth, seconds=seconds,
                                           lines=plan.lines if plan.calls == "field" else None)
                if entries:
                    results[variant] = entries
            result["results"] = results
        finally:
            if engine is not None:
                engine.dispose()
    seconds["total"] = round(time.perf_counter() - started, 1)
    result["seconds"] = seconds
    print(json.dumps(result, indent=2))


def _protocol(plan: _Plan, args: argparse.Namespace) -> str:
    held = ("(selection: training speakers only, actors 17-20 untouched)" if plan.selection
            else "(held out: speaker-independent)")
    train = f"train: RAVDESS actors {plan.train_span} via the ser CLI"
    if plan.calls == "generated":
        return (f"{train}; test: ser calls generate ({args.n_calls} calls) from actors "
                f"{plan.call_span} {held}, scored with ser score")
    return (f"{train}; test: field calls (bench/field_calls.py, levels and lines independent "
            f"of the project's generator) from actors {plan.call_span} {held}, "
            f"{args.calls_per_line} calls of ~{args.minutes:g} min per line type "
            f"({', '.join(plan.lines)}; each call one line), all scored with ser score in one "
            "batch per model; every figure per line type (per_line) and over all calls; "
            "customer turns as turn_definition says")


def _git_commit() -> str | None:
    """The commit of the measured code (with ``+dirty`` when tracked files differ); for a tree
    exported without ``.git`` (``git archive``), what ``SER_CODE_COMMIT`` says."""
    import subprocess

    if os.environ.get("SER_CODE_COMMIT"):
        return os.environ["SER_CODE_COMMIT"]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--short", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ravdess", type=Path, default=DEFAULT_RAVDESS)
    parser.add_argument("--schemes", default=",".join(SCHEMES))
    parser.add_argument("--variants", default="default,studio",
                        help=f"comma list of {', '.join(VARIANT_OPTIONS)}, population_prior_N")
    parser.add_argument("--calls", choices=CALL_SOURCES, default="generated",
                        help="generated: ser calls generate (the project's own generator); "
                        "field: bench/field_calls.py (levels and lines of its own, per line type)")
    parser.add_argument("--n-calls", type=int, default=60, help="calls of --calls generated")
    parser.add_argument("--calls-per-line", type=int, default=10,
                        help="calls per line type of --calls field")
    parser.add_argument("--lines", default=",".join(FIELD_LINES),
                        help="line types of --calls field")
    parser.add_argument("--paired", action="store_true",
                        help="--calls field: the same conversation on every line")
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--train-actors", default="1-16",
                        help="actors to train on (e.g. 1-12 for selection)")
    parser.add_argument("--call-actors", default="17-20",
                        help="actors the calls are generated from (e.g. 13-16 for selection)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="use this folder as the scratch space and keep it")
    return parser.parse_args()


def _plan(args: argparse.Namespace) -> _Plan:
    """The checked options; exits with a message when they cannot give an honest figure."""
    schemes = [s for s in args.schemes.split(",") if s]
    variants = [v for v in args.variants.split(",") if v]
    if not args.ravdess.is_dir():
        sys.exit(f"RAVDESS folder not found: {args.ravdess}")
    if unknown := {v for v in variants if not variant_known(v)}:
        sys.exit(f"unknown variants {sorted(unknown)}")
    try:
        train_actors, call_actors = parse_actors(args.train_actors), parse_actors(args.call_actors)
    except ValueError as exc:
        sys.exit(str(exc))
    if overlap := set(train_actors) & set(call_actors):
        sys.exit(f"actors {sorted(overlap)} are both trained on and in the calls")
    held_out = set(HELD_OUT)
    selection = not (set(train_actors) | set(call_actors)) & held_out
    if not selection and set(call_actors) != held_out:
        sys.exit("the calls of a held-out report come from actors 17-20 exactly; for selection "
                 "keep both actor sets within 1-16")
    lines = [s for s in args.lines.split(",") if s]
    if unknown_lines := [s for s in lines if s not in FIELD_LINES]:
        sys.exit(f"unknown line types {unknown_lines}; choose from {', '.join(FIELD_LINES)}")
    return _Plan(schemes, variants, args.calls, lines, train_actors, call_actors, selection)


def _prepare(args: argparse.Namespace, plan: _Plan, tmp: Path, env: dict[str, str], *,
             result: dict[str, Any], seconds: dict[str, float]
             ) -> tuple[Path, dict[str, dict[str, Any]]]:
    """Ingest the training actors' clips and generate the calls from the call actors';
    ``(calls folder, truth per call)``. Records ``train_clips`` and ``calls`` in ``result``."""
    t = time.perf_counter()
    train_dir, test_dir = tmp / "ravdess-train", tmp / "ravdess-calls"
    result["train_clips"] = link_actors(args.ravdess, train_dir, plan.train_actors)
    link_actors(args.ravdess, test_dir, plan.call_actors)
    ser(["ingest", "ravdess", str(train_dir)], env)
    seconds["ingest"] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    calls_dir = tmp / "calls"
    if plan.calls == "field":
        from bench.field_calls import build_calls, load_bank

        build_calls(calls_dir, bank=load_bank(test_dir, plan.call_actors),
                    calls_per_line=args.calls_per_line, minutes=args.minutes,
                    lines=plan.lines, seed=args.seed, paired=args.paired)
    else:
        ser(["calls", "generate", str(calls_dir), "--n-calls", str(args.n_calls),
             "--minutes", str(args.minutes), "--source", str(test_dir),
             "--seed", str(args.seed)], env)
    truth = load_truth(calls_dir)
    seconds["generate"] = round(time.perf_counter() - t, 1)
    result["calls"] = {"n_calls": len(truth), "call_actors": plan.call_span,
                       **_calls_summary(truth)}
    if plan.calls == "field":
        result["calls"]["per_line"] = {line: _calls_summary(sub)
                                       for line, sub in _by_line(truth, plan.lines).items()}
    return calls_dir, truth


def _calls_summary(truth: dict[str, dict[str, Any]]) -> dict[str, Any]:
    scen: dict[str, int] = defaultdict(int)
    for t_ in truth.values():
        scen[t_["scenario"]] += 1
    return {"scenarios": dict(sorted(scen.items())),
            "truly_escalated": sum(t_["escalated"] for t_ in truth.values()),
            "customer_turns": sum(len(t_["turns"]) for t_ in truth.values()),
            "agent_turns": sum(len(t_["agent_turns"]) for t_ in truth.values())}


def _by_line(truth: dict[str, dict[str, Any]], lines: list[str]
             ) -> dict[str, dict[str, dict[str, Any]]]:
    """The truth split by the calls' line type, in ``lines`` order."""
    return {line: {k: t for k, t in truth.items() if t["line"] == line} for line in lines
            if any(t["line"] == line for t in truth.values())}


def _measure_variant(engine: Any, env: dict[str, str], variant: str, schemes: list[str], *,
                     calls_dir: Path, truth: dict[str, dict[str, Any]],
                     seconds: dict[str, float], lines: list[str] | None = None
                     ) -> dict[str, dict[str, Any]]:
    """Features, then per scheme a model trained and the calls scored with it:
    ``{scheme: model info and batch metrics}`` (or the scoring error); with ``lines`` (field
    calls) also every metric per line type (``per_line``) and a ``summary`` of the key ones."""
    t = time.perf_counter()
    channel = VARIANT_OPTIONS.get(variant, VARIANT_OPTIONS["population_prior"])
    ser(["features", *channel], env)
    seconds[f"features_{variant}"] = round(time.perf_counter() - t, 1)
    entries: dict[str, dict[str, Any]] = {}
    for scheme in schemes:
        t = time.perf_counter()
        if (options := in_process_options(variant)) is not None:
            mv = train_in_process(engine, scheme, options)
        else:
            trained = _json_tail(ser(["train", "--labels", scheme, *channel,
                                      *VARIANT_TRAIN_OPTIONS.get(variant, []), "--json"], env))
            mv = int(trained.get("model_version_id") or trained["id"])
        seconds[f"train_{variant}_{scheme}"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        try:
            report = _json_tail(ser(["score", str(calls_dir), "--model", str(mv),
                                     "--batch-date", BATCH_DATE, "--json"], env))
        except RuntimeError as exc:  # e.g. a studio model refused on phone audio
            entries[scheme] = {**model_info(engine, mv),
                               "score_error": str(exc).strip().splitlines()[-1][:300]}
            continue
        seconds[f"score_{variant}_{scheme}"] = round(time.perf_counter() - t, 1)
        segs, summaries = _batch_rows(engine, int(report["batch_id"]))
        entry = entries[scheme] = {
            **model_info(engine, mv),
            **rows_metrics(segs, summaries, scheme, truth),
            "scoring_real_time_factor": round(
                report["audio_seconds"] / max(report["wall_seconds"], 1e-9), 1)}
        if lines is not None:
            entry["per_line"] = {line: {**rows_metrics(segs, summaries, scheme, sub),
                                        **_bandwidth_seen(summaries, sub)}
                                 for line, sub in _by_line(truth, lines).items()}
            entry["summary"] = {name: _key_figures(m) for name, m in
                                [*entry["per_line"].items(), ("overall", entry)]}
            for name, row in entry["summary"].items():
                print(f"  {variant}/{scheme} {name:>12}: {row}", file=sys.stderr, flush=True)
        print(f"{variant}/{scheme}: uar {entry['customer_turn_uar']} coverage "
              f"{entry['turn_coverage']} escalated {entry['escalated']}/"
              f"{entry['calls_scored']} precision {entry['escalation_precision']} "
              f"recall {entry['escalation_recall']}", file=sys.stderr, flush=True)
    return entries


def _key_figures(m: dict[str, Any]) -> dict[str, Any]:
    """The figures issue 24 asks for, of one line type (or all calls), in one small row."""
    return {"calls": m.get("calls"), "customer_turn_uar": m.get("customer_turn_uar"),
            "customer_turn_uar_ci90": m.get("customer_turn_uar_ci90"),
            "turns_evaluated": m.get("customer_turns_evaluated"),
            "turn_coverage": m.get("turn_coverage"),
            "turn_coverage_confident": m.get("turn_coverage_confident"),
            "agent_turns_read_negative": m.get("agent_turns_read_negative"),
            "truly_escalated": m.get("truly_escalated"), "escalated": m.get("escalated"),
            "escalation_precision": m.get("escalation_precision"),
            "escalation_recall": m.get("escalation_recall"),
            "calm_calls_escalated": m.get("calm_calls_escalated")}


def _bandwidth_seen(summaries: list[dict[str, Any]],
                    truth: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """How ``ser score`` classed the calls' bandwidth (``calls.extra.bandwidth``), if stored."""
    seen: dict[str, int] = defaultdict(int)
    for r in summaries:
        if r["call_key"] in truth:
            seen[f"{r.get('bandwidth') or 'unknown'}@{r.get('call_sample_rate') or '?'}"] += 1
    return {"scored_bandwidth": dict(sorted(seen.items()))}


if __name__ == "__main__":
    main()
