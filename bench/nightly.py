"""Nightly scoring benchmark: speed, memory and segment accuracy on held-out speakers. Prints JSON.

1. A scratch embedded PostgreSQL in a temporary SER_HOME (stopped and deleted afterwards).
2. Train through the project's own code: ingest RAVDESS actors 01-16 (``etl.corpora.ingest``), telephony
   ``rich`` features (``etl.runs.features.run_features``), a speaker-independent model
   (``etl.training.train.train_model``, label scheme callcentre4), promoted to ``production``.
3. Generate >= 2 hours of stereo 8 kHz calls (``etl.synthetic.calls``) from the clips of the held-out
   actors 17-20 only, with pauses, overtalk and a simulated phone line.
4. Score them end to end into PostgreSQL in a fresh process (``etl.runs.batch.score_batch``: 2
   worker processes, no Prefect) and report the real-time factor (call seconds per wall second;
   a stereo call's two channels count once), peak memory of that process and its children
   (summed RSS and summed PSS, sampled by bench/memory.py; the PostgreSQL server is
   not included), and segment-level UAR against the
   ground-truth timeline (each scored segment takes the emotion of the timeline utterance of its
   role it overlaps most; utterances whose emotion the scheme excludes are not counted).
5. An hour-long call (12 generated calls joined) scored alone, for memory on long recordings.
6. Prefect's fixed cost, measured apart: the same (no-op) rerun in a fresh process, once as a
   plain function call and once as ``score_batch_flow``.
7. With ``--dask`` (LocalClusters of 1 and 2 worker processes) or ``--dask-address``: the same
   calls scored on Dask, real-time factor per worker count, scaling and per-call overhead
   against the local pool (bench/nightly_dask.py).

Usage: python bench/nightly.py [--ravdess PATH] [--hours 2] [--call-minutes 5] [--workers 2]
       [--dask | --dask-address tcp://host:8786]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.memory import MIB, TreeMonitor
from bench.scratch import scratch_database

DEFAULT_RAVDESS = ROOT.parent / "shared" / "datasets" / "ravdess"
TRAIN_ACTORS = range(1, 17)
HELD_OUT = range(17, 21)
SCHEME = "callcentre4"
DAY = dt.date(2024, 1, 15)

# Scoring runs in a fresh process, as `ser score` would: its memory is the scorer's alone.
SCORE = r"""
import json, sys, time, datetime as dt
from pathlib import Path
t0 = time.perf_counter()
from db.engine import cached_engine
from flows.database import database_url
from etl.runs.batch import score_batch
engine = cached_engine(database_url())
t1 = time.perf_counter()
report = score_batch(engine, Path(sys.argv[1]), batch_date=dt.date(2024, 1, 15),
                     workers=int(sys.argv[2]), model_ref=sys.argv[3])
import resource
cpu = sum(getattr(resource.getrusage(who), f) for who in
          (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) for f in ("ru_utime", "ru_stime"))
print(json.dumps({**report.as_dict(), "startup_seconds": t1 - t0, "cpu_seconds": cpu}))
"""


def run_scoring(folder: Path, workers: int, env: dict[str, str],
                model_ref: str = "production") -> tuple[dict[str, Any], float, float, float]:
    """Score ``folder`` in a fresh process: (report, process wall, peak RSS MiB, peak PSS MiB).

    RSS sums every process of the tree (pages shared after fork count once per process); PSS
    splits shared pages among the processes sharing them (the physical total).
    """
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", SCORE, str(folder), str(workers), model_ref],
                            env=env,
                            cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    with TreeMonitor(proc.pid, pss=True) as memory:
        out, err = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"scoring failed: {err[-2000:]}")
    return (json.loads(out.strip().splitlines()[-1]), wall,
            memory.peak_rss / MIB, memory.peak_pss / MIB)


def stage_seconds(engine: Any, batch_id: int) -> dict[str, float]:
    """Where the workers' time went (per-call timings stored in calls.extra)."""
    from sqlalchemy import text

    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT key, sum(value::float) FROM calls, jsonb_each_text(extra -> 'seconds') "
            "WHERE batch_id = :b GROUP BY key"), {"b": batch_id}).all()
    return {k: round(v, 2) for k, v in sorted(rows)}


def link_actors(src: Path, dst: Path, actors: range | list[int]) -> int:
    """A RAVDESS-shaped folder of symlinks to the chosen actors' clips."""
    n = 0
    for actor in actors:
        folder = dst / f"Actor_{actor:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for clip in sorted((src / f"Actor_{actor:02d}").glob("*")):
            (folder / clip.name).symlink_to(clip.resolve())
            n += 1
    return n


def train_unnormalised(engine: Any) -> str:
    """The same model without per-speaker normalisation (registered, not promoted)."""
    from db.engine import session_scope
    from etl.training.config import TrainConfig
    from etl.training.train import train_model

    with session_scope(engine) as session:
        result = train_model(session, TrainConfig(
            channel="telephony", label_scheme=SCHEME, corpus="ravdess", feature_importance=False,
            search=False, speaker_normalisation=False, augment=False, operating_point_calls=0),
            name="bench-no-speaker-normalisation")
    return str(result.model_version_id)


def train(engine: Any, ravdess: Path, tmp: Path, workers: int,
          feature_set: str | None = None) -> dict[str, Any]:
    from db.engine import session_scope
    from etl.corpora.ingest import finish_run, ingest_folder, start_run
    from etl.features.specs import DEFAULT_SET

    feature_set = feature_set or DEFAULT_SET
    from etl.runs.features import FeatureRunConfig, run_features
    from etl.training.config import TrainConfig
    from etl.training.registry import set_alias
    from etl.training.train import train_model

    out: dict[str, Any] = {}
    corpus = tmp / "ravdess-train"
    out["train_clips"] = link_actors(ravdess, corpus, TRAIN_ACTORS)
    start = time.perf_counter()
    with session_scope(engine) as session:
        run_id = start_run(session, corpus="ravdess", path=str(corpus))
        counts = ingest_folder(session, corpus="ravdess", root=corpus, run_id=run_id)
        finish_run(session, run_id=run_id, counts=counts)
    out["ingest_seconds"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    report = run_features(engine, FeatureRunConfig(set_name=feature_set, channel="telephony",
                                                   corpus="ravdess", workers=workers),
                          progress=False)
    out["features_seconds"] = round(time.perf_counter() - start, 1)
    out["feature_errors"] = report.errors
    start = time.perf_counter()
    with session_scope(engine) as session:
        result = train_model(session, TrainConfig(feature_set=feature_set, channel="telephony",
                                                  label_scheme=SCHEME,
                                                  corpus="ravdess", feature_importance=False,
                                                  search=False, augment=False,
                                                  operating_point_calls=0))
        set_alias(session, result.model_version_id, reason="bench/nightly")
    out["train_seconds"] = round(time.perf_counter() - start, 1)
    out.update({"model": f"{result.name}:{result.version}", "algorithm": result.algorithm,
                "label_scheme": result.label_scheme, "classes": result.classes,
                "train_actors": f"{TRAIN_ACTORS.start:02d}-{TRAIN_ACTORS.stop - 1:02d}",
                "cv_uar_train_actors": round(result.cv_uar, 3)})
    return out


def generate(ravdess: Path, out_dir: Path, *, hours: float, call_minutes: float) -> dict[str, Any]:
    from etl.synthetic.calls import generate_calls
    from etl.synthetic.clips import ClipBank

    start = time.perf_counter()
    bank = ClipBank.from_folder(ravdess, actors=HELD_OUT)
    n_calls = max(1, round(hours * 60 / call_minutes))
    calls = generate_calls(out_dir, n_calls=n_calls, minutes=call_minutes, bank=bank, seed=2024)
    total = sum(c.duration_s for c in calls)
    while total < hours * 3600:  # jitter may leave it short: top up with one more call each
        extra = generate_calls(out_dir / f"extra{len(calls)}", n_calls=1, minutes=call_minutes,
                               bank=bank, seed=len(calls))
        calls += extra
        total += extra[0].duration_s
    return {"calls": len(calls), "audio_hours": round(total / 3600, 3),
            "sample_rate": 8000, "channels": 2,
            "held_out_actors": f"{HELD_OUT.start}-{HELD_OUT.stop - 1}",
            "generate_seconds": round(time.perf_counter() - start, 1),
            "timelines": {c.call_id if c.path.parent == out_dir else
                          f"{c.path.parent.name}/{c.call_id}": str(c.timeline_path)
                          for c in calls}}


def segment_uar(engine: Any, batch_id: int, timelines: dict[str, str]) -> dict[str, Any]:
    from sqlalchemy import text

    from etl.corpora.labels import map_emotion
    from etl.synthetic.timeline import read_timeline, speech_events

    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT c.call_key, s.role, s.start_s, s.end_s, s.emotion FROM call_segments s "
            "JOIN calls c ON c.id = s.call_id WHERE c.batch_id = :b"), {"b": batch_id}).all()
    truth_cache: dict[str, list[Any]] = {}
    hits: dict[str, list[int]] = defaultdict(list)
    for key, role, start, end, predicted in rows:
        if key not in truth_cache:
            truth_cache[key] = read_timeline(Path(timelines[key]))
        events = speech_events(truth_cache[key], role=role)
        best = max(events, key=lambda e: min(end, e.end_s) - max(start, e.start_s), default=None)
        if best is None or min(end, best.end_s) - max(start, best.start_s) <= 0:
            continue  # a VAD false alarm: no utterance under it
        label = map_emotion(SCHEME, best.emotion)
        if label is not None:
            hits[label].append(int(label == predicted))
    recalls = {k: round(sum(v) / len(v), 3) for k, v in sorted(hits.items())}
    n = sum(len(v) for v in hits.values())
    return {"segment_uar": round(sum(recalls.values()) / len(recalls), 3) if recalls else None,
            "segment_accuracy": round(sum(sum(v) for v in hits.values()) / n, 3) if n else None,
            "segments_evaluated": n, "segments_scored": len(rows),
            "recall_per_class": recalls, "chance_uar": round(1 / len(recalls), 3)}


def vad_quality(timelines: dict[str, str], folder: Path, limit: int = 6) -> dict[str, float]:
    """Frame-level VAD precision/recall against the timelines (first ``limit`` calls)."""
    import numpy as np
    import soundfile as sf

    from etl.audio.vad import detect_speech
    from etl.synthetic.timeline import read_timeline, speech_events

    tp = fp = fn = 0
    for key, timeline_path in list(timelines.items())[:limit]:
        y, sr = sf.read(str(folder / f"{key}.wav"), dtype="float32")
        n = len(y) * 100 // sr + 1
        for ch, role in enumerate(("agent", "customer")):
            truth = np.zeros(n, bool)
            found = np.zeros(n, bool)
            for e in speech_events(read_timeline(Path(timeline_path)), role=role):
                truth[int(e.start_s * 100):int(e.end_s * 100)] = True
            for s, e in detect_speech(y[:, ch], sr):
                found[int(s * 100):int(e * 100)] = True
            tp += int((truth & found).sum())
            fp += int((~truth & found).sum())
            fn += int((truth & ~found).sum())
    return {"vad_precision": round(tp / (tp + fp), 3), "vad_recall": round(tp / (tp + fn), 3)}


def hour_long_call(calls_dir: Path, out: Path) -> float:
    """Join 12 generated calls into one ~hour-long stereo file, block by block."""
    import soundfile as sf

    parts = sorted(calls_dir.glob("call_*.wav"))[:12]
    with sf.SoundFile(str(out), "w", samplerate=8000, channels=2, subtype="PCM_16") as sink:
        for part in parts:
            with sf.SoundFile(str(part)) as src:
                for block in src.blocks(blocksize=1 << 18, dtype="float32", always_2d=True):
                    sink.write(block)
    return sf.info(str(out)).duration


def prefect_overhead(env: dict[str, str], calls_dir: Path) -> dict[str, float]:
    """Wall time of the same no-op rerun in a fresh process: plain call vs Prefect flow run."""
    plain = (
        "import time; t = time.perf_counter()\n"
        "import datetime as dt; from pathlib import Path\n"
        "from db.engine import cached_engine; from etl.runs.batch import score_batch\n"
        "from flows.database import database_url\n"
        f"score_batch(cached_engine(database_url()), Path({str(calls_dir)!r}),\n"
        "            batch_date=dt.date(2024, 1, 15))\n"
        "print(time.perf_counter() - t)\n")
    flow = (
        "import time; t = time.perf_counter()\n"
        "import datetime as dt\n"
        "from ser.runtime import quiet_prefect; quiet_prefect()\n"
        "from flows.nightly import score_batch_flow\n"
        f"score_batch_flow({str(calls_dir)!r}, batch_date=dt.date(2024, 1, 15))\n"
        "print(time.perf_counter() - t)\n")
    results = {}
    # The first flow run starts the background Prefect server (cold); the second reuses it (warm).
    for name, code in (("plain_rerun_seconds", plain), ("prefect_cold_rerun_seconds", flow),
                       ("prefect_rerun_seconds", flow)):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=str(ROOT), check=False,
                              capture_output=True, text=True, timeout=600)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{name} failed: {proc.stderr[-2000:]}")
        results[name] = round(wall, 2)
    results["prefect_overhead_seconds"] = round(results["prefect_rerun_seconds"]
                                                - results["plain_rerun_seconds"], 2)
    results["prefect_cold_overhead_seconds"] = round(results["prefect_cold_rerun_seconds"]
                                                     - results["plain_rerun_seconds"], 2)
    from ser.prefect_server import stop_server

    stop_server(Path(env["SER_HOME"]) / "prefect")
    return results


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ravdess", type=Path, default=DEFAULT_RAVDESS)
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--call-minutes", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--feature-set", default=None,
                        help="the model's feature set (default: the product's, e.g. richvoice "
                        "to time the voice encoder)")
    parser.add_argument("--skip-hour-call", action="store_true")
    parser.add_argument("--compare-normalisation", action="store_true",
                        help="also score the calls with a model trained without per-speaker "
                             "normalisation (a second batch: the rescoring path)")
    parser.add_argument("--dask", action="store_true",
                        help="also score on Dask: LocalClusters of 1 and 2 worker processes "
                             "(bench/nightly_dask.py)")
    parser.add_argument("--dask-address", default=None,
                        help="also score on the Dask cluster at this scheduler address")
    return parser.parse_args()


def scoring_figures(engine: Any, report: dict[str, Any], *, process_wall: float, rss: float,
                    pss: float) -> dict[str, Any]:
    """Speed, cost and memory of the scoring process, and where its time went."""
    wall, audio = report["wall_seconds"], report["audio_seconds"]
    stages = stage_seconds(engine, report["batch_id"])
    return {
        "audio_seconds": round(audio, 1),
        "wall_seconds": round(wall, 2),
        "real_time_factor": round(audio / wall, 1),
        "process_wall_seconds": round(process_wall, 2),
        "real_time_factor_incl_python_startup": round(audio / process_wall, 1),
        "target_real_time_factor": 300,
        # CPU time of the scoring process and its workers (imports included): what the
        # run costs on 2 otherwise idle cores, whatever else the machine was doing
        "cpu_seconds": round(report["cpu_seconds"], 1),
        "real_time_factor_if_2_idle_cores": round(audio / (report["cpu_seconds"] / 2), 1),
        "seconds_per_hour_of_audio": round(3600 * wall / audio, 2),
        "peak_rss_sum_mib": round(rss, 1),
        "peak_pss_sum_mib": round(pss, 1),
        "scored": report["n_scored"], "failed": report["n_failed"],
        "escalations": report["n_escalations"],
        "stage_seconds_summed_over_calls": stages,
        # conversation metrics (turns, interruptions, silences, loudness, rate): issue 16
        # allows them <= 10 % of the scoring time
        "conversation_metrics_share": round(
            stages.get("metrics", 0.0) / max(sum(v for k, v in stages.items()
                                                 if k != "metrics"), 1e-9), 4),
    }


def rerun(engine: Any, calls_dir: Path, *, workers: int, batch_id: int) -> dict[str, Any]:
    """The same batch again in this process: nothing left to score, the same batch id."""
    from etl.runs.batch import score_batch

    start = time.perf_counter()
    again = score_batch(engine, calls_dir, batch_date=DAY, workers=workers)
    return {"seconds": round(time.perf_counter() - start, 2),
            "same_batch": again.batch_id == batch_id, "scored": again.n_scored}


def without_normalisation(engine: Any, calls_dir: Path, env: dict[str, str], *, workers: int,
                          batch_id: int, timelines: dict[str, str]) -> dict[str, Any]:
    """The calls rescored by a model trained without per-speaker normalisation."""
    ref = train_unnormalised(engine)
    other, _, _, _ = run_scoring(calls_dir, workers, env, model_ref=ref)
    return {"batch_id": other["batch_id"], "separate_batch": other["batch_id"] != batch_id,
            **segment_uar(engine, other["batch_id"], timelines)}


def hour_long_figures(tmp: Path, calls_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    """An hour-long call scored alone by one worker, for memory on long recordings."""
    hour_dir = tmp / "hour"
    hour_dir.mkdir()
    seconds = hour_long_call(calls_dir, hour_dir / "hour_call.wav")
    hour, _process_wall, rss, pss = run_scoring(hour_dir, 1, env)
    return {"audio_seconds": round(seconds, 1),
            "wall_seconds": round(hour["wall_seconds"], 2),
            "real_time_factor_one_worker": round(seconds / hour["wall_seconds"], 1),
            "peak_rss_sum_mib": round(rss, 1), "peak_pss_sum_mib": round(pss, 1),
            "scored": hour["n_scored"]}


def run_bench(engine: Any, args: argparse.Namespace, tmp: Path, result: dict[str, Any]) -> None:
    """Steps 2-7 of the module docstring, each adding its figures to ``result`` in order."""
    result["training"] = train(engine, args.ravdess, tmp, args.workers, args.feature_set)
    calls_dir = tmp / "calls"
    generated = generate(args.ravdess, calls_dir, hours=args.hours,
                         call_minutes=args.call_minutes)
    timelines = generated.pop("timelines")
    result["calls"] = generated
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    report, process_wall, rss, pss = run_scoring(calls_dir, args.workers, env)
    result["scoring"] = scoring_figures(engine, report, process_wall=process_wall, rss=rss,
                                        pss=pss)
    result["accuracy"] = {**segment_uar(engine, report["batch_id"], timelines),
                          **vad_quality(timelines, calls_dir)}
    result["rerun"] = rerun(engine, calls_dir, workers=args.workers, batch_id=report["batch_id"])
    if args.compare_normalisation:
        result["without_speaker_normalisation"] = without_normalisation(
            engine, calls_dir, env, workers=args.workers, batch_id=report["batch_id"],
            timelines=timelines)
    if not args.skip_hour_call:
        result["hour_long_call"] = hour_long_figures(tmp, calls_dir, env)
    result["prefect"] = prefect_overhead(env, calls_dir)
    if args.dask or args.dask_address:
        from bench.nightly_dask import dask_figures

        result["dask"] = dask_figures(engine, calls_dir, address=args.dask_address,
                                      local_workers=args.workers)


def main() -> None:
    args = parse_args()
    if not args.ravdess.is_dir():
        sys.exit(f"RAVDESS folder not found: {args.ravdess}")

    result: dict[str, Any] = {"cpus": os.cpu_count(), "workers": args.workers}
    with scratch_database(None, prefix="ser-bench-nightly-") as (tmp, _env, engine):
        run_bench(engine, args, tmp, result)
    print(json.dumps(result, indent=2))

if __name__ == "__main__":
    main()
