"""Batch boundaries under load: overlapping and killed `ser score` runs of one batch. Prints JSON.

Protocol
1. A scratch ``SER_HOME`` with the embedded PostgreSQL (stopped afterwards; deleted unless
   ``--keep``, whose model and calls a later run reuses).
2. A telephony model through the CLI: ``ser ingest ravdess`` (actors 01-16), ``ser train
   --labels callcentre4`` (fast settings: logistic regression, no search, pseudo-call operating
   point; the model's quality is not what is measured here).
3. ``ser calls generate`` ``--calls`` stereo 8 kHz calls from actors 17-20.
4. Timed, each on its own batch date of the same folder, every process started by this script:
   - ``one_run``: one ``ser score --workers W``;
   - ``concurrent``: ``--runs`` processes of the same command started together; the wall time
     is until the last one exits; every exit code, and how many calls each scored;
   - ``killed``: one run ``kill -9``'d once about a third of the calls are scored, then the same
     command again with no flag; its exit code and wall time.
5. Per-call segment counts of every batch compared with ``one_run``'s; calls scored twice.

Target (issue 15): ``concurrent`` wall <= 1.5 x ``one_run`` wall, identical segment counts, and
the killed batch finished by the plain rerun with identical segment counts.

Usage: python bench/concurrent_runs.py [--ravdess PATH] [--calls 20] [--minutes 1]
       [--runs 3] [--workers 2] [--repeats 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.nightly import link_actors
from bench.scratch import scratch_home, ser

DEFAULT_RAVDESS = ROOT.parent / "shared" / "datasets" / "ravdess"
TRAIN_ACTORS = range(1, 17)
CALL_ACTORS = "17-20"


def start_score(calls: Path, day: str, workers: int, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ser", "score", str(calls), "--batch-date", day, "--workers",
         str(workers)], env=env, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)


def scored_by(output: str) -> int | None:
    """The "this run scored N calls" count of a ``ser score`` summary line."""
    marker = "this run scored "
    return int(output.split(marker)[1].split()[0]) if marker in output else None


def segment_counts(engine: Any, day: str) -> dict[str, int]:
    from sqlalchemy import text

    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT c.call_key, count(s.id) FROM calls c JOIN batches b ON b.id = c.batch_id "
            "LEFT JOIN call_segments s ON s.call_id = c.id AND s.model_version_id = "
            "b.model_version_id WHERE b.batch_date = :d AND c.status = 'scored' GROUP BY 1"),
            {"d": day}).all()
    return {str(k): int(n) for k, n in rows}


def n_scored(engine: Any, day: str) -> int:
    from sqlalchemy import text

    with engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM calls c JOIN batches b ON b.id = c.batch_id "
            "WHERE b.batch_date = :d AND c.status = 'scored'"), {"d": day}).scalar_one())


def fresh_days(engine: Any) -> Iterator[str]:
    """Batch dates no batch of this home has used yet (a kept home is measured again)."""
    import datetime as dt

    from sqlalchemy import text

    with engine.connect() as conn:
        last = conn.execute(text("SELECT max(batch_date) FROM batches")).scalar_one()
    day = max(last or dt.date(2030, 1, 1), dt.date(2030, 1, 1))
    while True:
        day += dt.timedelta(days=1)
        yield day.isoformat()


def timed_runs(calls: Path, day: str, runs: int, workers: int,
               env: dict[str, str]) -> dict[str, Any]:
    start = time.perf_counter()
    procs = [start_score(calls, day, workers, env) for _ in range(runs)]
    outputs = [p.communicate() for p in procs]
    wall = time.perf_counter() - start
    return {"wall_seconds": round(wall, 2), "exit_codes": [p.returncode for p in procs],
            "calls_scored_per_run": [scored_by(out) for out, _ in outputs],
            "errors": [err.strip().splitlines()[-1] for _, err in outputs
                       if err.strip() and "Traceback" in err]}


def killed_then_rerun(engine: Any, calls: Path, day: str, total: int, workers: int,
                      env: dict[str, str]) -> dict[str, Any]:
    proc = start_score(calls, day, workers, env)
    while proc.poll() is None and n_scored(engine, day) < max(1, total // 3):
        time.sleep(0.05)
    before = n_scored(engine, day)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)  # its pool workers die with it (PR_SET_PDEATHSIG)
    proc.communicate()
    rerun = timed_runs(calls, day, 1, workers, env)
    return {"scored_when_killed": before, "rerun": rerun, "scored_after_rerun":
            n_scored(engine, day)}


def main() -> None:
    args = _parse_args()
    if not args.ravdess.is_dir():
        sys.exit(f"RAVDESS folder not found: {args.ravdess}")

    result: dict[str, Any] = {
        "protocol": f"{args.calls} generated {args.minutes:g}-minute stereo 8 kHz calls "
                    f"(actors {CALL_ACTORS}); `ser score --workers {args.workers}` processes on "
                    "the embedded PostgreSQL; one run, then "
                    f"{args.runs} started together, then one kill -9'd and rerun",
        "cpus": os.cpu_count(), "target_ratio": 1.5}
    with scratch_home(args.keep, prefix="ser-bench-concurrent-") as (tmp, env):
        from db.engine import cached_engine
        from flows.database import database_url

        engine = None
        try:
            calls = _prepare(args, tmp, env)
            engine = cached_engine(database_url())
            days = fresh_days(engine)
            pairs, reference = _pairs(engine, calls, days, args, env)
            result["pairs"] = pairs
            result["ratio_median"] = sorted(p["ratio"] for p in pairs)[len(pairs) // 2]
            killed_day = next(days)
            killed = killed_then_rerun(engine, calls, killed_day, args.calls, args.workers, env)
            killed["identical_segment_counts"] = segment_counts(engine, killed_day) == reference
            result["killed"] = killed
            result["audio_minutes"] = round(args.calls * args.minutes, 1)
        finally:
            if engine is not None:
                engine.dispose()
    print(json.dumps(result, indent=2))


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ravdess", type=Path, default=DEFAULT_RAVDESS)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1,
                        help="repeat the one-run / concurrent pair (fresh batch dates)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="use this folder as the scratch space and keep it")
    return parser.parse_args()


def _prepare(args: argparse.Namespace, tmp: Path, env: dict[str, str]) -> Path:
    """A trained model and the generated calls' folder (each skipped when a kept scratch
    space already has it)."""
    corpus, calls = tmp / "ravdess-train", tmp / "calls"
    if not (tmp / "home").exists():
        link_actors(args.ravdess, corpus, TRAIN_ACTORS)
        ser(["ingest", "ravdess", str(corpus)], env)
        ser(["train", "--labels", "callcentre4", "--model", "logreg", "--no-search",
             "--no-importance", "--operating-point-calls", "0"], env)
    if not calls.exists():
        ser(["calls", "generate", str(calls), "--n-calls", str(args.calls), "--minutes",
             str(args.minutes), "--source", str(args.ravdess), "--actors", CALL_ACTORS,
             "--seed", "15"], env)
    return calls


def _pairs(engine: Any, calls: Path, days: Iterator[str], args: argparse.Namespace,
           env: dict[str, str]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """``args.repeats`` pairs of one run and ``args.runs`` concurrent runs, each on a fresh
    batch date; also the segment counts of the last single run (the reference)."""
    pairs = []
    reference: dict[str, int] = {}
    for _ in range(args.repeats):
        one_day, many_day = next(days), next(days)
        one = timed_runs(calls, one_day, 1, args.workers, env)
        many = timed_runs(calls, many_day, args.runs, args.workers, env)
        reference = segment_counts(engine, one_day)
        pairs.append({"one_run": one, "concurrent": many,
                      "ratio": round(many["wall_seconds"] / one["wall_seconds"], 3),
                      "identical_segment_counts": segment_counts(engine, many_day) == reference,
                      "calls_scored_once": sum(
                          n or 0 for n in many["calls_scored_per_run"]) == args.calls})
    return pairs, reference


if __name__ == "__main__":
    main()
